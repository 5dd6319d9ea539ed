//! qbackup and qrestore: a backup taken under load holds every transaction whole or not
//! at all and restores to a device whose messages are those backed up, property for
//! property; a daemon killed during a backup leaves one that is refused as incomplete; a
//! restore never overwrites and never takes a damaged backup; Tuxedo's offline way (stop,
//! copy, `chdl`) keeps working.

use crate::app::{App, admin_on as admin, all, varied};
use crate::faults::stop_and_wait;
use crate::support::{Daemon, Env, wait_until};
use qm_common::backup::{BackupReport, MANIFEST, Manifest};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A device of two files: the device file holds only the VTOC and the UDL, so queue space
/// QS lives in the second file, `OTHER`.
fn two_files(env: &Env) -> PathBuf {
    let other = env.path("OTHER");
    env.c(&format!(
        "crdl {} 0 40; crdl {} 0 30000; qspc QS 40000 29000 12 100 100 100000 '' n 16; qopen QS; \
         qcreate P priority,fifo none 0 0 100% 0% ''; qcreate Q fifo none 0 0 100% 0% ''; \
         qcreate T fifo none 0 0 100% 0% ''",
        env.dev(),
        other.display()
    ))
    .ok();
    other
}

#[test]
fn a_backup_under_load_restores_every_message_and_transaction_whole() {
    let env = Env::new();
    let other = two_files(&env);
    let mut app = App::connect(&env);
    varied(&mut app, 300, None);
    let stop = AtomicBool::new(false);
    let committed = AtomicU64::new(0);
    let backup = env.path("backup");
    let report: BackupReport = std::thread::scope(|s| {
        // 64 clients, as the issue asks: the backup is taken while they run.
        for _ in 0..64 {
            s.spawn(|| {
                let mut app = App::connect(&env);
                while !stop.load(Ordering::Relaxed) {
                    app.put("T", "traffic");
                    app.take("T");
                }
            });
        }
        // Transactions of two enqueues each: a backup holds both or neither.
        s.spawn(|| {
            let mut app = App::connect(&env);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                app.begin(None).unwrap();
                app.put("Q", &format!("a{i}"));
                app.put("Q", &format!("b{i}"));
                app.commit().unwrap();
                committed.store(i + 1, Ordering::Relaxed);
                i += 1;
            }
        });
        assert!(wait_until(Duration::from_secs(30), || committed.load(Ordering::Relaxed) > 20));
        let run = env.c(&format!("qbackup -y --json {}", backup.display()));
        stop.store(true, Ordering::Relaxed);
        run.ok().json()
    });
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(backup.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(report.manifest, manifest);
    assert_eq!(manifest.files.len(), 2, "{manifest:?}");
    // Writers made groups durable throughout: the longest of their pauses is measured.
    assert!(manifest.longest_writer_pause_us > 0, "{manifest:?}");
    assert_eq!(manifest.files[1].original, other.display().to_string());

    let restored = env.path("restored/QUE");
    std::fs::create_dir(env.path("restored")).unwrap();
    let moved = env.path("restored/OTHER-2");
    admin(
        &env.device,
        &format!(
            "qrestore {} {} -m {}={}",
            backup.display(),
            restored.display(),
            other.display(),
            moved.display()
        ),
    )
    .ok()
    .stdout_has("restored and checked");
    assert!(moved.exists() && !env.path("restored/OTHER").exists());
    let _daemon = Daemon::start(&restored, &[]);
    admin(&restored, "lidl").ok().stdout_has(&moved.display().to_string());
    let mut copy = App::connect_to(&restored);
    assert_eq!(all(&mut copy, "P"), all(&mut app, "P"), "every message, every property");
    let pairs = all(&mut copy, "Q");
    let bodies: Vec<String> =
        pairs.iter().map(|m| String::from_utf8(m.body.clone()).unwrap()).collect();
    assert!(bodies.len().is_multiple_of(2), "a transaction cut in two: {bodies:?}");
    for pair in bodies.chunks(2) {
        assert_eq!(pair[0].replace('a', ""), pair[1].replace('b', ""), "{bodies:?}");
    }
    let counted = manifest.qspaces.iter().find(|q| q.name == "QS").unwrap().messages;
    let traffic = all(&mut copy, "T").len();
    assert!(traffic <= 64, "at most one message per client of T: {traffic}");
    let held = (301 + bodies.len() + traffic) as u64;
    assert_eq!(counted, held, "the manifest counts what was restored");
    // The restored device is another device: the original's files are not its own.
    drop((app, copy));
    stop_and_wait(&env);
    admin(&restored, "ipcrm -y QS").ok();
    admin(&restored, &format!("chdl 1 {}; qopen QS", other.display()))
        .failed()
        .stderr_has("belongs to another qm device");
}

#[test]
fn a_daemon_killed_during_a_backup_leaves_it_incomplete_and_the_device_whole() {
    let env = Env::new();
    two_files(&env);
    let mut app = App::connect(&env);
    let body = "x".repeat(8000);
    for _ in 0..3000 {
        app.put("Q", &body);
    }
    drop(app);
    stop_and_wait(&env);
    let mut daemon = Daemon::start(&env.device, &[]);
    let backup = env.path("backup");
    let mut cmd = env.qmadmin_cmd();
    cmd.arg("-c").arg(format!("qbackup -y {}", backup.display()));
    let running = cmd.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::metadata(backup.join("file-1.qm")).is_ok_and(|m| m.len() > 0)
    }));
    daemon.signal("KILL");
    let _ = crate::support::wait_with_timeout(running, "qbackup", Duration::from_secs(30));
    assert!(!backup.join(MANIFEST).exists(), "a backup cut short has no manifest");
    let restored = env.path("restored");
    env.c(&format!("qrestore {} {}", backup.display(), restored.display()))
        .failed()
        .stderr_has("holds no manifest.json");
    assert!(!restored.exists());
    env.c("qverify").ok();
    env.c("qopen QS; qinfo Q").ok().stdout_has("3000");
}

#[test]
fn a_restore_never_overwrites_nor_takes_a_damaged_backup() {
    let env = Env::new();
    let other = two_files(&env);
    let mut app = App::connect(&env);
    app.put("Q", "kept");
    drop(app);
    let backup = env.path("backup");
    env.c(&format!("qbackup -y {}", backup.display())).ok();
    // Not into a directory that is not empty.
    env.c(&format!("qbackup -y {}", backup.display())).failed().stderr_has("is not empty");
    // Not over the device itself, nor over a file of the new device's.
    env.c(&format!("qrestore {} {}", backup.display(), env.dev()))
        .failed()
        .stderr_has("is the device this daemon serves");
    let target = env.path("NEW");
    std::fs::write(env.path("OTHER-NEW"), b"precious").unwrap();
    env.c(&format!(
        "qrestore {} {} -m {}={}",
        backup.display(),
        target.display(),
        other.display(),
        env.path("OTHER-NEW").display()
    ))
    .failed()
    .stderr_has("never overwrites");
    assert_eq!(std::fs::read(env.path("OTHER-NEW")).unwrap(), b"precious");
    assert!(!target.exists());
    // Not from a directory others may change (a copy could be swapped after its check).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o777)).unwrap();
    env.c(&format!("qrestore {} {}", backup.display(), target.display()))
        .failed()
        .stderr_has("may be written by other users");
    std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(!target.exists());
    // A copy changed since the backup.
    let copy = backup.join("file-1.qm");
    let mut bytes = std::fs::read(&copy).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    env.c(&format!("qrestore {} {}", backup.display(), target.display()))
        .failed()
        .stderr_has("is damaged");
    assert!(!target.exists());
}

#[test]
fn a_backup_restores_onto_the_path_a_new_daemon_serves() {
    let env = Env::new();
    two_files(&env);
    let mut app = App::connect(&env);
    app.put("Q", "carried over");
    drop(app);
    let backup = env.path("backup");
    env.c(&format!("qbackup -y {}", backup.display())).ok();
    let fresh = env.path("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let device = fresh.join("QUE");
    admin(
        &device,
        &format!("qrestore {} {}; qopen QS; qinfo Q", backup.display(), device.display()),
    )
    .ok()
    .stdout_has("restored and checked");
    let mut copy = App::connect_to(&device);
    assert_eq!(copy.take_body("Q"), "carried over");
    admin(&device, "daemon stop").ok();
}

/// Tuxedo's way, which qm keeps: stop the daemon, copy the device and its files, point
/// the copy's entries at the copied files with chdl.
#[test]
fn the_offline_way_stop_copy_and_chdl_works() {
    let env = Env::new();
    let other = two_files(&env);
    let mut app = App::connect(&env);
    let ids: Vec<_> = (0..20).map(|i| app.put("Q", &format!("m{i}"))).collect();
    drop(app);
    stop_and_wait(&env);
    let dir = env.path("copy");
    std::fs::create_dir(&dir).unwrap();
    let (device, moved) = (dir.join("QUE"), dir.join("OTHER"));
    std::fs::copy(&env.device, &device).unwrap();
    std::fs::copy(&other, &moved).unwrap();
    // Body segments (`FILE.bodies.N`) go with their file, under its new name.
    for (from, to) in [(&env.device, &device), (&other, &moved)] {
        for n in 1..100 {
            let segment = |p: &Path| PathBuf::from(format!("{}.bodies.{n}", p.display()));
            if segment(from).exists() {
                std::fs::copy(segment(from), segment(to)).unwrap();
            }
        }
    }
    admin(&device, &format!("chdl 1 {}; qopen QS; qinfo Q", moved.display())).ok().stdout_has("20");
    let mut copy = App::connect_to(&device);
    let first = copy.take("Q");
    assert_eq!((first.msgid, first.body), (ids[0].clone(), b"m0".to_vec()));
    admin(&device, "qverify").ok();
    admin(&device, "daemon stop").ok();
}

/// Bodies kept in redb, not in body segments, for the tests of a long hold: a backup holds
/// a file while it copies the file itself, and bodies in segments are copied after (the
/// tests of `bodies.rs` back those up).
const BODIES_IN_REDB: (&str, &str) = ("QM_BODY_LOG", "0");

/// The largest a journal grows while no backup holds its file (its two regions), with the
/// smallest checkpoint size, which these tests run with ([`SMALL_JOURNAL`]).
const JOURNAL_MAX: u64 = 16 << 20;
const SMALL_JOURNAL: [&str; 2] = ["--checkpoint-mib", "4"];

/// The length of the journal at `path` (0 while there is none).
fn journal_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Each file is copied as bytes while it is held: writers go on meanwhile (into the
/// journal, which grows past its usual 16 MiB and is cut back after), and the copy is the
/// moment of the snapshot, not a file changing under it. With
/// `QM_FAULT=slowcopy+checkpoints` the copy takes a while and every group of the writers
/// would be a redb commit but for the hold. The restored queue holds exactly the first
/// messages acknowledged, in order, every one acknowledged before `qbackup` began among
/// them. After the hold the writer applies what it deferred in steps (16 writes at a time
/// here); `kill -9` as it does loses nothing acknowledged, and the start after it cuts the
/// journal back.
#[test]
fn a_backup_copies_each_file_unchanged_while_writers_go_on() {
    let env = Env::new();
    let mut daemon = Daemon::start_with_env(
        &env.device,
        &SMALL_JOURNAL,
        &[("QM_FAULT", "slowcopy+checkpoints"), BODIES_IN_REDB],
    );
    let other = env.path("OTHER");
    env.c(&format!(
        "crdl {} 0 40; crdl {} 0 100000; qspc QS 40000 99000 4 10 10 10000 '' n 16; qopen QS; \
         qcreate Q fifo none 0 0 100% 0% ''; qcreate T fifo none 0 0 100% 0% ''",
        env.dev(),
        other.display()
    ))
    .ok();
    let journal = PathBuf::from(format!("{}.journal", other.display()));
    let pad = "x".repeat(200 << 10);
    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let backup = env.path("backup");
    let (before, during, longest) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut app = App::connect(&env);
            let mut i = 0;
            // At most 300 (60 MB): the queue space holds them all.
            while !stop.load(Ordering::Relaxed) && i < 300 {
                app.put("Q", &format!("w{i} {pad}"));
                i += 1;
                acked.store(i, Ordering::Relaxed);
            }
        });
        // Pairs on T: their enqueues and removals cancel out while deferred, or not.
        s.spawn(|| {
            let mut app = App::connect(&env);
            while !stop.load(Ordering::Relaxed) {
                app.put("T", "pair");
                app.take("T");
            }
        });
        let longest = s.spawn(|| {
            let mut longest = 0;
            while !stop.load(Ordering::Relaxed) {
                longest = longest.max(journal_len(&journal));
                std::thread::sleep(Duration::from_millis(5));
            }
            longest
        });
        assert!(wait_until(Duration::from_secs(10), || acked.load(Ordering::Relaxed) >= 20));
        let before = acked.load(Ordering::Relaxed);
        env.c(&format!("qbackup -y {}", backup.display())).ok();
        let during = acked.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        (before, during, longest.join().unwrap())
    });
    assert!(during >= 20, "writers made only {during} enqueues while the backup ran");
    assert!(longest > JOURNAL_MAX, "the journal never grew past 16 MiB ({longest} bytes)");
    // Killed while it catches up on what it deferred (or just after): the steps already
    // durable and the journal's later records make up everything acknowledged.
    let total = acked.load(Ordering::Relaxed);
    daemon.signal("KILL");
    let _again = Daemon::start(&env.device, &SMALL_JOURNAL);
    let mut app = App::connect(&env);
    let live: Vec<String> = all(&mut app, "Q")
        .into_iter()
        .map(|m| String::from_utf8(m.body).unwrap().split(' ').next().unwrap().to_string())
        .collect();
    let sent: Vec<String> = (0..total).map(|i| format!("w{i}")).collect();
    assert_eq!(live, sent, "what the device holds after kill -9 is not what was acknowledged");
    assert!(all(&mut app, "T").is_empty(), "a message dequeued came back");
    // OTHER was opened again with its queue space, and its journal started again.
    assert!(
        journal_len(&journal) <= JOURNAL_MAX,
        "the journal kept {} bytes",
        journal_len(&journal)
    );
    std::fs::create_dir(env.path("r")).unwrap();
    let restored = env.path("r/QUE");
    env.c(&format!("qrestore {} {}", backup.display(), restored.display())).ok();
    let _copy_daemon = Daemon::start(&restored, &[]);
    let mut copy = App::connect_to(&restored);
    let bodies: Vec<String> = all(&mut copy, "Q")
        .into_iter()
        .map(|m| String::from_utf8(m.body).unwrap().split(' ').next().unwrap().to_string())
        .collect();
    let first: Vec<String> = (0..bodies.len()).map(|i| format!("w{i}")).collect();
    assert_eq!(bodies, first, "the backup holds other than the first messages acknowledged");
    assert!(
        bodies.len() as u64 >= before,
        "{} restored, {before} acknowledged before",
        bodies.len()
    );
}

/// Writes acknowledged but not yet in redb (`QM_FAULT=defer` keeps them in the journal)
/// are in the backup: it takes the journal's records past what redb holds.
#[test]
fn a_backup_holds_writes_still_in_the_journal() {
    let env = Env::new();
    let _daemon = Daemon::start_with_env(&env.device, &[], &[("QM_FAULT", "defer")]);
    two_files(&env);
    let mut app = App::connect(&env);
    let sent: Vec<String> = (0..50).map(|i| format!("journaled {i}")).collect();
    for body in &sent {
        app.put("Q", body);
    }
    app.take("Q");
    let backup = env.path("backup");
    let report: BackupReport =
        env.c(&format!("qbackup -y --json {}", backup.display())).ok().json();
    assert!(report.manifest.files[1].journal_groups > 0, "{report:?}");
    std::fs::create_dir(env.path("r")).unwrap();
    let restored = env.path("r/QUE");
    env.c(&format!("qrestore {} {}", backup.display(), restored.display())).ok();
    let _copy_daemon = Daemon::start(&restored, &[]);
    let mut copy = App::connect_to(&restored);
    let bodies: Vec<String> =
        all(&mut copy, "Q").into_iter().map(|m| String::from_utf8(m.body).unwrap()).collect();
    assert_eq!(bodies, sent[1..]);
}

/// `qspacemove` to another file and back: the same messages, every property, in the same
/// order; the VTOC names the new entry; refused while another session is attached, to an
/// entry that does not exist or has no room.
#[test]
fn qspacemove_takes_a_queue_space_to_another_file_and_back() {
    let env = Env::new();
    let other = env.path("OTHER");
    env.c(&format!(
        "crdl {} 0 3000; crdl {} 0 3000; crdl {} 0 100; qspc QS 40000 1000 12 20 20 5000 '' n 16; \
         qopen QS; qcreate P priority,fifo none 0 0 100% 0% ''; qcreate Q fifo none 0 0 100% 0% ''",
        env.dev(),
        other.display(),
        env.path("SMALL").display()
    ))
    .ok();
    let mut app = App::connect(&env);
    varied(&mut app, 120, None);
    let before = env.c("qopen QS; qinfo P; qset P; qlist").ok().stdout.clone();
    // Not while an application is attached.
    env.c("qspacemove QS 1").failed().stderr_has("is active");
    drop(app);
    env.c("qspacemove QS 9").failed().stderr_has("Device list index 9 does not exist");
    env.c("qspacemove QS 2").failed().stderr_has("on device list entry 2");
    env.c("qspacemove QS 1").ok().stdout_has("moved to device list entry 1");
    let vtoc: Vec<qm_common::device::VtocEntry> = env.json("livtoc");
    let extents: Vec<_> = vtoc.iter().filter(|t| t.name == "QS").collect();
    assert_eq!(extents.len(), 1);
    assert_eq!((extents[0].device, extents[0].pages), (1, 1000));
    env.c("qverify").ok();
    assert_eq!(env.c("qopen QS; qinfo P; qset P; qlist").ok().stdout, before);
    env.c("qspacemove QS 0").ok();
    env.c("qverify").ok();
    assert_eq!(env.c("qopen QS; qinfo P; qset P; qlist").ok().stdout, before);
    let mut app = App::connect(&env);
    let messages = all(&mut app, "P");
    assert_eq!(messages.len(), 120);
    assert!(messages.iter().any(|m| m.body.len() == 70_000), "large bodies kept");
}

/// Without `-y`, qbackup asks first, as Tuxedo's commands that write do, and a "no" makes
/// no backup; it shows its progress in verbose mode; qrestore takes a `-m` before its two
/// paths too.
#[test]
fn qbackup_asks_first_and_qrestore_takes_a_leading_move() {
    let env = Env::new();
    let other = two_files(&env);
    let backup = env.path("backup");
    env.script(&format!("qbackup {}\nn\n", backup.display()))
        .ok()
        .stdout_has("Are you sure?")
        .stderr_has("Device not backed up");
    assert!(!backup.exists());
    // In verbose mode, progress dots while it copies.
    env.script(&format!("v\nqbackup {}\ny\n", backup.display()))
        .ok()
        .stdout_has(&format!("{}\n", ".".repeat(20)));
    assert!(backup.join(MANIFEST).exists());
    std::fs::create_dir(env.path("r")).unwrap();
    let (device, moved) = (env.path("r/QUE"), env.path("r/MOVED"));
    env.c(&format!(
        "qrestore -m {}={} {} {}",
        other.display(),
        moved.display(),
        backup.display(),
        device.display()
    ))
    .ok();
    assert!(moved.exists() && !env.path("r/OTHER").exists());
}

/// The journal grown while a backup held its file is cut back to its usual 16 MiB while qmd
/// runs, once its writer is idle: not only at the next start.
#[test]
fn a_journal_grown_during_a_backup_is_cut_back_once_its_writer_is_idle() {
    let env = Env::new();
    let _daemon = Daemon::start_with_env(
        &env.device,
        &SMALL_JOURNAL,
        &[("QM_FAULT", "slowcopy"), BODIES_IN_REDB],
    );
    let other = env.path("OTHER");
    env.c(&format!(
        "crdl {} 0 40; crdl {} 0 100000; qspc QS 40000 99000 4 10 10 10000 '' n 16; qopen QS; \
         qcreate Q fifo none 0 0 100% 0% ''",
        env.dev(),
        other.display()
    ))
    .ok();
    let journal = PathBuf::from(format!("{}.journal", other.display()));
    let pad = "x".repeat(200 << 10);
    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let longest = std::thread::scope(|s| {
        s.spawn(|| {
            let mut app = App::connect(&env);
            // At most 300 (60 MB): the queue space holds them all.
            for i in 0..300 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                app.put("Q", &format!("w{i} {pad}"));
                acked.store(i + 1, Ordering::Relaxed);
            }
        });
        let longest = s.spawn(|| {
            let mut longest = 0;
            while !stop.load(Ordering::Relaxed) {
                longest = longest.max(journal_len(&journal));
                std::thread::sleep(Duration::from_millis(5));
            }
            longest
        });
        assert!(wait_until(Duration::from_secs(10), || acked.load(Ordering::Relaxed) >= 20));
        env.c(&format!("qbackup -y {}", env.path("backup").display())).ok();
        stop.store(true, Ordering::Relaxed);
        longest.join().unwrap()
    });
    assert!(longest > JOURNAL_MAX, "the journal never grew past 16 MiB ({longest} bytes)");
    assert!(
        wait_until(Duration::from_secs(20), || journal_len(&journal) <= JOURNAL_MAX),
        "the idle qmd kept a journal of {} bytes",
        journal_len(&journal)
    );
}
