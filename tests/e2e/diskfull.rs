//! A full filesystem (a real, small tmpfs): every write refused with QMENOSPACE and a
//! sentence naming the filesystem, nothing changed, the same daemon writing again once there
//! is room, nothing acknowledged lost; initialization refused at creation when the disk is
//! too small; the disk a queue space takes stays within its bound; a clean stop leaves
//! nothing for the next start to repair.

use crate::app::App;
use crate::support::{Daemon, Env, wait_until};
use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl, Qos};
use qm_common::protocol::{QueueSpaceRequest, Request};
use qm_common::qspace::{MemorySize, QueueSpaceInfo, QueueSpaceParams};
use qm_common::{Diagnostic, QmError};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of a few MiB mounted on a directory of its own, unmounted (and the directory
/// removed) when dropped, also when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("qm-diskfull-").tempdir().expect("dir").keep();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs on {} failed (tests run as root)", dir.display());
        Tmpfs { dir }
    }

    /// A device directory on the filesystem.
    fn env(&self) -> Env {
        let dir = tempfile::Builder::new().prefix("qm-e2e-").tempdir_in(&self.dir).expect("dir");
        let device = dir.path().join("QUE");
        Env { dir, device }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it (a daemon the test could not stop): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes a ballast file of `mib` MiB, which the test removes to free space.
fn ballast(fs: &Tmpfs, mib: usize) -> PathBuf {
    let path = fs.path("ballast");
    std::fs::write(&path, vec![7u8; mib << 20]).expect("ballast");
    path
}

/// Bytes allocated to a file.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file").blocks() * 512
}

/// Bytes allocated to a redb file and its body segments (`FILE.bodies.N`).
fn allocated_with_segments(path: &Path) -> u64 {
    let prefix = format!("{}.bodies.", path.file_name().unwrap().to_string_lossy());
    let segments: u64 = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum();
    allocated(path) + segments
}

/// The sentence of a full filesystem, for the device `env`.
fn full_sentence(env: &Env) -> String {
    format!("the filesystem holding {} is full", env.dev())
}

/// A device and queue space QS far larger than the filesystem, so that the filesystem is
/// what fills up; queue Q.
fn big_space(env: &Env) {
    env.c(&format!(
        "crdl {} 0 100000; qspc -n 64B QS 40000 90000 8 4 16 100000 '' n 16; qopen QS; \
         qcreate Q fifo none 0 0 100% 0% ''",
        env.dev()
    ))
    .ok();
}

/// A body that says which message it is, of `len` bytes (at least its number).
fn body(n: usize, len: usize) -> Vec<u8> {
    let mut body = format!("message {n}:").into_bytes();
    body.resize(len.max(body.len()), b'.');
    body
}

/// Enqueues numbered messages of `len` bytes until one is refused; adds the acknowledged
/// ones to `acknowledged` (by msgid) and returns the refusal.
fn fill(app: &mut App, len: usize, acknowledged: &mut BTreeMap<String, Vec<u8>>) -> QmError {
    loop {
        let b = body(acknowledged.len(), len);
        match app.enqueue("Q", &b, &EnqueueCtl::default()) {
            Ok(id) => {
                acknowledged.insert(id.to_string(), b);
            }
            Err(e) => return e,
        }
    }
}

/// Fills the filesystem, checks that every client's write and an administrator's are
/// refused with the sentence and change nothing, frees space, and checks that the same
/// daemon writes again and that every acknowledged message is there exactly once, before
/// and after a restart. `vars` go into qmd's environment; `readable`: whether the device
/// is still read while the disk is full (it is, unless a commit failed inside redb).
fn fill_refuse_recover(vars: &[(&str, &str)], readable: bool) {
    let fs = Tmpfs::mount(24);
    let env = fs.env();
    let mut daemon = Daemon::start_with_env(&env.device, &[], vars);
    big_space(&env);
    let mut app = App::connect(&env);
    // A non-persistent message and an open transaction live through it all.
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    app.enqueue("Q", b"non-persistent", &np).expect("non-persistent enqueue");
    let mut txn_app = App::connect(&env);
    txn_app.begin(Some(600)).expect("begin");
    let in_txn = txn_app.enqueue("Q", b"in a transaction", &EnqueueCtl::default()).expect("txn");
    let mut admin = env.session();
    admin.run("qopen QS").ok();
    let room = ballast(&fs, 4);

    // Large messages until one is refused, then small ones until even they are.
    let mut acknowledged = BTreeMap::new();
    for len in [48 * 1024, 10] {
        let refusal = fill(&mut app, len, &mut acknowledged);
        assert_eq!(refusal.diagnostic, Diagnostic::NoSpace, "{}", refusal.message);
        assert!(refusal.message.contains(&full_sentence(&env)), "{}", refusal.message);
        assert!(refusal.message.contains("nothing was changed"), "{}", refusal.message);
    }
    assert!(acknowledged.len() > 100, "the filesystem, not the space, filled");

    // Every client is refused the same way, small writes too; nothing is stored.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let device = env.device.clone();
            std::thread::spawn(move || {
                let mut app = App::connect_to(&device);
                app.enqueue("Q", format!("client {i}").as_bytes(), &EnqueueCtl::default())
            })
        })
        .collect();
    for client in clients {
        let e = client.join().unwrap().expect_err("a write on a full disk");
        assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}", e.message);
        assert!(e.message.contains(&full_sentence(&env)), "{}", e.message);
    }
    // An administrator's write too (it is seen to leave nothing behind below).
    admin
        .run("qcreate Q2 fifo none 0 0 100% 0% ''")
        .failed()
        .stderr_has(&full_sentence(&env))
        .stderr_has("nothing was changed");
    admin.run("qspc QS2 40001 100 4 2 2 100 '' n 16").failed().stderr_has(&full_sentence(&env));
    if readable {
        let count = crate::app::count(&env, "Q");
        assert_eq!(count, acknowledged.len() as u64 + 1, "what qinfo counts while full");
    }

    // Room again: the same daemon writes and reads again, without a restart.
    std::fs::remove_file(&room).expect("remove the ballast");
    let mut after = None;
    let resumed = wait_until(Duration::from_secs(30), || {
        match app.enqueue("Q", &body(usize::MAX, 10), &EnqueueCtl::default()) {
            Ok(id) => {
                after = Some(id);
                true
            }
            Err(e) => {
                assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}", e.message);
                false
            }
        }
    });
    assert!(resumed, "qmd did not write again once there was room");
    assert!(daemon.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the same qmd");
    acknowledged.insert(after.unwrap().to_string(), body(usize::MAX, 10));
    env.c("qopen QS; qinfo Q2").failed().stderr_has("Queue Q2 does not exist");
    env.c("qspl QS2").failed().stderr_has("Queue space QS2 does not exist");
    drop(admin);
    txn_app.commit().expect("the transaction commits once there is room");
    acknowledged.insert(in_txn.to_string(), b"in a transaction".to_vec());
    let first = app.dequeue("Q", &DequeueCtl::default()).expect("a dequeue once there is room");
    let np_body = acknowledged.remove(&first.msgid.to_string());
    assert_eq!(np_body, None, "the non-persistent message comes first");
    assert_eq!(first.body, b"non-persistent", "the non-persistent message is still there");

    // Every acknowledged message exactly once, also after a restart.
    drop((app, txn_app));
    env.stop_daemon();
    daemon.wait().ok();
    let _daemon = Daemon::start(&env.device, &[]);
    let mut app = App::connect(&env);
    let mut found = BTreeMap::new();
    loop {
        match app.dequeue("Q", &DequeueCtl::default()) {
            Ok(m) => {
                let id = m.msgid.to_string();
                assert!(found.insert(id.clone(), m.body).is_none(), "{id} came twice");
            }
            Err(e) if e.diagnostic == Diagnostic::NoMsg => break,
            Err(e) => panic!("drain: {e}"),
        }
    }
    assert_eq!(found.len(), acknowledged.len(), "every acknowledged message, nothing else");
    assert!(found == acknowledged, "the same messages with the same bodies");
}

/// A commit that meets the full filesystem has the room qmd held for it; the next ones are
/// refused before they write anything, so the file stays open and is read meanwhile.
#[test]
fn full_disk_refuses_and_recovers() {
    fill_refuse_recover(&[], true);
}

/// The same with bodies kept in redb (`QM_BODY_LOG=0`) rather than in body segments, where
/// an append that finds the disk full takes room held for the file, or goes into redb.
#[test]
fn full_disk_refuses_and_recovers_with_bodies_in_redb() {
    fill_refuse_recover(&[("QM_BODY_LOG", "0")], true);
}

/// Without room held ahead, the commit that meets the full filesystem fails inside redb,
/// which then refuses the file until it is opened again: qmd opens it again once there is
/// room, and carries on from what was committed. A commit that failed leaves no bodies
/// behind in the body segments (undone, or cut off when the file is opened again), so the
/// room freed is there for the journal's replay.
#[test]
fn full_disk_inside_a_commit_reopens_the_file() {
    fill_refuse_recover(&[("QM_FAULT", "noroom")], false);
}

/// The same with bodies kept in redb (`QM_BODY_LOG=0`).
#[test]
fn full_disk_inside_a_commit_reopens_the_file_with_bodies_in_redb() {
    fill_refuse_recover(&[("QM_FAULT", "noroom"), ("QM_BODY_LOG", "0")], false);
}

/// Bytes free on the filesystem holding `path`.
fn free(path: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

/// Fills the rest of the filesystem at `fs` with a ballast file.
fn fill_filesystem(fs: &Tmpfs) {
    use std::io::Write;
    let mut file = std::fs::File::create(fs.path("ballast")).expect("ballast");
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [7u8; 512];
    while file.write_all(&small).is_ok() {}
}

/// `Initialize extents: y` takes the disk a queue space may need when it is created: a
/// filesystem too small refuses it then, saying how much it needs and has, and nothing of
/// it is left; an extent added to an initialized space likewise. A space that was
/// initialized takes its messages, up to its limit, even once the filesystem is full.
#[test]
fn initializing_takes_the_disk_at_creation() {
    let fs = Tmpfs::mount(32);
    let env = fs.env();
    let mut first = Daemon::start(&env.device, &[]);
    env.c(&format!("crdl {} 0 100000", env.dev())).ok();
    let before = free(&fs.dir);
    // 4,000 pages of 1 KiB may take 2.1 × 4,000 KiB + 2 × 4,000 KiB + 4 MiB: that fits.
    env.c("qspc QS 40000 4000 4 2 2 1000 '' y 16; qopen QS; qcreate Q fifo none 0 0 100% 0% ''")
        .ok();
    let taken = before - free(&fs.dir);
    // Less the room already held for the device's own commits.
    assert!(taken >= 18 << 20, "QS's disk is taken: {taken} bytes");
    let vtoc = env.c("livtoc").ok().stdout.clone();
    let free_now = free(&fs.dir);
    // 16,000 pages would need 45 MiB: refused when asked.
    env.c("qspc B 40001 16000 4 2 2 100 '' y 16")
        .failed()
        .stderr_has("Initializing queue space B needs")
        .stderr_has(&format!("MiB more on the filesystem holding {}, which has", env.dev()))
        .stderr_has("nothing was created");
    // Programs see QMENOSPACE.
    let params = QueueSpaceParams {
        name: "B".into(),
        ipc_key: 40001,
        pages: 16_000,
        queues: 4,
        transactions: 2,
        processes: 2,
        messages: 100,
        error_queue: String::new(),
        initialize: true,
        blocking: 16,
        nonpersistent: MemorySize::ZERO,
        actions: 0,
        overflow: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let e = rt
        .block_on(async {
            let mut client = Client::connect_device(&env.device, "e2e-admin").await?;
            client.call(Request::QueueSpace(QueueSpaceRequest::Create(params))).await
        })
        .expect_err("refused");
    assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}", e.message);
    env.c("qspl B").failed().stderr_has("Queue space B does not exist");
    env.c("qaddext QS 16000")
        .failed()
        .stderr_has("Initializing queue space QS needs")
        .stderr_has("no extent was added");
    assert_eq!(env.c("livtoc").ok().stdout, vtoc, "no extent is left of either");
    let left = free(&fs.dir);
    assert!(left + 256 * 1024 >= free_now, "nothing held for them is left: {free_now} -> {left}");

    // With the filesystem full, QS still takes messages up to its own limit.
    fill_filesystem(&fs);
    let mut app = App::connect_to(&env.device);
    let body = vec![b'm'; 17 * 1024 - 128];
    let mut stored = 0;
    let full = loop {
        match app.enqueue("Q", &body, &EnqueueCtl::default()) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(full.message.contains("Queue space QS is full"), "after {stored}: {}", full.message);
    assert_eq!(stored, 3995 / 17, "every message that fits in its pages was taken");

    // qmd holds the room while it runs: one that starts on a disk filled meanwhile says so.
    drop(app);
    env.stop_daemon();
    // Gone, and the room it held with it, before the rest of the disk is filled.
    first.wait().ok();
    let mut file = std::fs::OpenOptions::new().append(true).open(fs.path("ballast")).unwrap();
    while std::io::Write::write_all(&mut file, &[7u8; 512]).is_ok() {}
    let log = std::env::temp_dir().join(format!("qm-diskfull-{}.log", std::process::id()));
    let daemon = Daemon::start(&env.device, &["-g", log.to_str().unwrap()]);
    // The log is written by a thread of its own: the line may land just after the start.
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let warned = wait_until(Duration::from_secs(10), || said().contains("cannot be held"));
    let text = said();
    let _ = std::fs::remove_file(&log);
    assert!(warned, "no warning at start:\n{text}");
    drop(daemon);
}

/// The disk a queue space's file and its body segments take: filled to its limit, at most
/// 1.25 × its pages + 4 MiB; emptied and filled again, three times, within the bound
/// initialization reserves (2.1 × its pages + twice its largest body + 4 MiB). With the
/// message sizes that would each take the next power of two of redb's pages if stored
/// whole (5 and 17 pages, and the largest body), initialized or not.
#[test]
fn a_full_queue_space_stays_within_its_bound() {
    let pages = 10_000u64;
    let bytes = pages * 1024;
    let filled = bytes * 5 / 4 + 4 * 1024 * 1024;
    let bound = bytes * 21 / 10 + 2 * (4 << 20) + (4 << 20);
    let cases =
        [("n", 5 * 1024 - 128), ("n", 17 * 1024 - 128), ("y", 17 * 1024 - 128), ("y", 4 << 20)];
    for (init, size) in cases {
        let env = Env::new();
        let _daemon = Daemon::start(&env.device, &[]);
        env.c(&format!(
            "crdl {} 0 20000; qspc QS 40000 {pages} 4 2 16 100000 '' {init} 16; qopen QS; \
             qcreate Q fifo none 0 0 100% 0% ''",
            env.dev()
        ))
        .ok();
        let mut app = App::connect(&env);
        let mut fill = || {
            let mut stored = 0;
            let full = loop {
                match app.enqueue("Q", &vec![b'm'; size], &EnqueueCtl::default()) {
                    Ok(_) => stored += 1,
                    Err(e) => break e,
                }
            };
            assert_eq!(full.diagnostic, Diagnostic::NoSpace, "{}", full.message);
            assert!(full.message.contains("Queue space QS is full"), "{}", full.message);
            stored
        };
        let stored = fill();
        let taken = allocated_with_segments(&env.device);
        assert!(
            taken <= filled,
            "{stored} messages of {size} bytes (initialize {init}) take {taken} bytes, over \
             {filled}"
        );
        for round in 1..=3 {
            let mut app = App::connect(&env);
            while app.dequeue("Q", &DequeueCtl::default()).is_ok() {}
            drop(app);
            let again = fill();
            let taken = allocated_with_segments(&env.device);
            assert!(
                taken <= bound,
                "refilled ({round}) with {again} messages of {size} bytes (initialize {init}), \
                 the file takes {taken} bytes, over the bound of {bound}"
            );
        }
    }
}

/// A clean stop closes every file of the device, so the next start opens them without a
/// repair; after `kill -9` the next start repairs them, and says so in its log.
#[test]
fn a_clean_stop_leaves_nothing_to_repair() {
    let env = Env::new();
    let other = env.path("OTHER");
    let log = |n: u32| env.path(&format!("qmd{n}.log"));
    let start = |n: u32| {
        let log = log(n);
        Daemon::start(&env.device, &["-l", "3", "-g", log.to_str().expect("UTF-8")])
    };
    let repairs = |n: u32| {
        let text = std::fs::read_to_string(log(n)).unwrap_or_default();
        text.lines().filter(|l| l.contains("was not closed cleanly")).count()
    };
    let mut daemon = start(1);
    env.c(&format!(
        "crdl {} 0 300; crdl {} 0 2000; qspc A 40000 200 4 2 2 100 '' n 16; \
         qspc B 40001 200 4 2 2 100 '' n 16",
        env.dev(),
        other.display()
    ))
    .ok();
    let b: QueueSpaceInfo = env.json("qspl B");
    assert_eq!(b.file, other.display().to_string(), "B is on the other file");
    // Both files in use: the device (A) and the other file (B).
    env.c("qopen A; qcreate Q fifo none 0 0 100% 0% ''; qenqueue Q a").ok();
    env.c("qopen B; qcreate Q fifo none 0 0 100% 0% ''; qenqueue Q b").ok();
    env.stop_daemon();
    daemon.wait().ok();

    let mut daemon = start(2);
    env.c("qopen A; qinfo Q; qopen B; qinfo Q").ok();
    assert_eq!(repairs(2), 0, "a clean stop left files to repair");
    // Written to since they were opened, and killed: both need a repair.
    env.c("qopen A; qenqueue Q a2; qopen B; qenqueue Q b2").ok();
    daemon.signal("KILL");

    let _daemon = start(3);
    env.c("qopen A; qdequeue Q; qopen B; qdequeue Q").ok().stdout_has("a").stdout_has("b");
    let text = std::fs::read_to_string(log(3)).unwrap_or_default();
    // Either redb repairs the file (a checkpoint ran after the writes) or it is still at
    // its clean state and the journal brings the writes back.
    for file in [env.dev(), other.display().to_string()] {
        let repaired = format!("{file} was not closed cleanly");
        let replayed = format!("{file}: replayed");
        assert!(
            text.lines().any(|l| l.contains(&repaired) || l.contains(&replayed)),
            "neither a repair nor a replay of {file} said after kill -9:\n{text}"
        );
    }
}

/// A msgid is handed out only once its high-water mark is on disk: on a full disk, the
/// enqueue that needs the mark moved is refused, so no msgid it would have handed out comes
/// again after a restart (a non-persistent message's msgid leaves no other trace on disk).
#[test]
fn msgids_are_not_reused_after_a_full_disk() {
    let fs = Tmpfs::mount(16);
    let env = fs.env();
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    let mut daemon = Daemon::start(&env.device, &[]);
    big_space(&env);
    let mut handed_out = vec![App::connect(&env).put("Q", "persistent").to_string()];
    env.stop_daemon();
    daemon.wait().ok();

    // A restarted daemon moves the mark with its first msgid; the disk is full now.
    fill_filesystem(&fs);
    let mut daemon = Daemon::start(&env.device, &[]);
    let mut app = App::connect(&env);
    match app.enqueue("Q", b"non-persistent", &np) {
        Ok(id) => handed_out.push(id.to_string()),
        Err(e) => {
            assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}", e.message);
            assert!(e.message.contains(&full_sentence(&env)), "{}", e.message);
        }
    }
    drop(app);
    std::fs::remove_file(fs.path("ballast")).expect("remove the ballast");
    env.stop_daemon();
    daemon.wait().ok();

    let _daemon = Daemon::start(&env.device, &[]);
    let mut app = App::connect(&env);
    let id = app.enqueue("Q", b"after", &np).expect("enqueue with room again").to_string();
    assert!(!handed_out.contains(&id), "msgid {id} was handed out before the restart");
}
