//! Storage faults: `crdl`, `qdestroy -p` and `qspacedestroy -f` crashed at every storage step
//! (`QM_FAULT=crash:N`) leave all or nothing and can be run again; files qmd refuses (not
//! qm's, damaged, or not to be trusted) are left byte for byte as they were.

use crate::support::{Daemon, Env, QMD, Run, run_limited, spawn_to_first_line};
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::queue::QueueListing;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A `qmd` started with `QM_FAULT` set, its standard error in a file; killed if still running
/// when dropped.
pub struct FaultyQmd {
    child: Child,
    log: PathBuf,
}

impl FaultyQmd {
    /// Starts `qmd` on `env`'s device with `QM_FAULT=fault`, its standard error appended to
    /// `log`; `None` when it ended before it was ready (the fault struck while it started).
    #[track_caller]
    pub fn start(env: &Env, fault: &str, log: &Path) -> Option<FaultyQmd> {
        FaultyQmd::start_with(env, fault, log, &[])
    }

    /// [`FaultyQmd::start`], with `vars` in qmd's environment too.
    #[track_caller]
    pub fn start_with(
        env: &Env,
        fault: &str,
        log: &Path,
        vars: &[(&str, &str)],
    ) -> Option<FaultyQmd> {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
        let mut cmd = Command::new(QMD);
        cmd.arg(&env.device).env("QM_FAULT", fault).env_remove("QM_SOCKET");
        cmd.envs(vars.iter().copied());
        let (mut child, line) = spawn_to_first_line(&mut cmd, err, Duration::from_secs(60));
        let line = line.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("qmd ({fault}) printed no ready line within 60 s")
        });
        let qmd = FaultyQmd { child, log: log.to_path_buf() };
        if line.contains("serving") {
            return Some(qmd);
        }
        qmd.ended(Duration::from_secs(30));
        None
    }

    /// Waits until the process has ended; a process still running after `limit` fails the
    /// test. Returns what it wrote on standard error.
    #[track_caller]
    pub fn ended(mut self, limit: Duration) -> String {
        let ended =
            crate::support::wait_until(limit, || matches!(self.child.try_wait(), Ok(Some(_))));
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(ended, "qmd did not end within {limit:?}\n--- its standard error\n{log}");
        log
    }
}

impl Drop for FaultyQmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the daemon of `env` and waits until it has let go of the device (its lock file),
/// so that the next qmd can start at once.
pub fn stop_and_wait(env: &Env) {
    env.stop_daemon();
    let lock = std::fs::File::open(qm_common::paths::lock_path(&env.device)).expect("lock file");
    let free = crate::support::wait_until(Duration::from_secs(30), || {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    });
    assert!(free, "the daemon did not let go of {}", env.dev());
}

/// How many storage steps starting qmd on this device takes.
fn startup_steps(env: &Env) -> u64 {
    let count = env.path("steps");
    let log = env.path("qmd-fault.err");
    let daemon =
        FaultyQmd::start(env, &format!("count:{}", count.display()), &log).unwrap_or_else(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("qmd did not start:\n{log}")
        });
    let steps = std::fs::read_to_string(&count).unwrap_or_default().trim().parse().unwrap_or(0);
    drop(daemon);
    steps
}

/// Runs `commands` on a qmd that crashes at storage step `n`. Returns whether they ran to
/// the end; when they did not, checks that the crash was the injected one.
fn run_crashing_at(env: &Env, n: u64, commands: &str) -> bool {
    let log = env.path("qmd-fault.err");
    let _ = std::fs::remove_file(&log);
    let Some(daemon) = FaultyQmd::start(env, &format!("crash:{n}"), &log) else {
        return false;
    };
    let run = env.c_no_start(commands);
    if run.status == 0 {
        return true;
    }
    let log = daemon.ended(Duration::from_secs(30));
    assert!(
        log.contains(&format!("crash at storage step {n}\n")),
        "step {n}: the commands failed without the injected crash\n--- qmadmin\n{}\n--- qmd\n{log}",
        run.stderr
    );
    false
}

/// The device list, or `None` when there is no device.
fn device_list(env: &Env) -> Option<DeviceListing> {
    let run = env.c_no_start("lidl");
    if run.status != 0 {
        run.stderr_has("Device list not initialized");
        return None;
    }
    Some(env.json("lidl"))
}

fn entries(listing: &DeviceListing) -> Vec<(u8, String, u64, u64)> {
    listing
        .entries
        .iter()
        .map(|e| (e.entry.index, e.entry.name.clone(), e.entry.start, e.entry.size))
        .collect()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".qm-new"))
        .collect()
}

/// Asserts enough crash points were driven for the test to mean something.
#[track_caller]
fn enough(points: u64, at_least: u64) {
    assert!(points >= at_least, "only {points} crash points before the command completed");
}

/// `crdl` of the device itself, crashed at each step: afterwards there is no device or the
/// whole entry 0, and the same `crdl` succeeds.
#[test]
fn crdl_of_the_device_at_every_crash_point() {
    let mut crashes = 0;
    for n in 1.. {
        let env = Env::new();
        let crdl = format!("crdl {} 0 2000", env.dev());
        let completed = run_crashing_at(&env, n, &crdl);
        let _daemon = Daemon::start(&env.device, &[]);
        let whole = vec![(0, env.dev(), 0, 2000)];
        match device_list(&env) {
            None => assert!(!env.device.exists(), "step {n}: a device file without a device"),
            Some(listing) => assert_eq!(entries(&listing), whole, "step {n}"),
        }
        env.c_no_start(&crdl).ok();
        assert_eq!(entries(&device_list(&env).expect("device")), whole, "step {n}");
        let vtoc: Vec<VtocEntry> = env.json("livtoc");
        assert_eq!(vtoc.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["VTOC", "UDL"]);
        assert_eq!(leftovers(env.dir.path()), Vec::<PathBuf>::new(), "step {n}");
        if completed {
            break;
        }
        crashes += 1;
    }
    enough(crashes, 10);
}

/// `crdl` of an entry on another file, crashed at each step (qmd's start included): the
/// entry is there whole or not at all, and the same `crdl` succeeds.
#[test]
fn crdl_on_another_file_at_every_crash_point() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 200", env.dev())).ok();
    stop_and_wait(&env);
    let pristine = std::fs::read(&env.device).unwrap();
    let other = env.path("F2");
    let crdl = format!("crdl {} 0 1000", other.display());
    let first = vec![(0, env.dev(), 0, 200)];
    let both = vec![(0, env.dev(), 0, 200), (1, other.display().to_string(), 0, 1000)];
    let mut crashes = 0;
    for n in 1.. {
        std::fs::write(&env.device, &pristine).unwrap();
        let _ = std::fs::remove_file(&other);
        let completed = run_crashing_at(&env, n, &crdl);
        let daemon = Daemon::start(&env.device, &[]);
        let found = entries(&device_list(&env).expect("device"));
        assert!(found == first || found == both, "step {n}: {found:?}");
        env.c_no_start(&crdl).ok();
        assert_eq!(entries(&device_list(&env).expect("device")), both, "step {n}");
        // The entry's file is usable: a queue space goes there.
        env.c_no_start("qspc QF 41000 500 4 4 4 100 '' n 16").ok();
        assert_eq!(
            env.json::<qm_common::qspace::QueueSpaceInfo>("qspl QF").file,
            other.display().to_string()
        );
        assert_eq!(leftovers(env.dir.path()), Vec::<PathBuf>::new(), "step {n}");
        drop(daemon);
        if completed {
            break;
        }
        crashes += 1;
    }
    enough(crashes, 10);
}

/// A device with queue space QS (on the device file: queues Q with 5 messages, R with 2)
/// and QF (on another file: queue Q with 3), and the bytes of both files once it stopped,
/// with their body segments, if any.
struct Spaces {
    env: Env,
    device: Vec<u8>,
    other: Vec<u8>,
    segments: Vec<(PathBuf, Vec<u8>)>,
}

/// The body segments (`FILE.bodies.N`) of the files in `env`'s directory.
fn body_segments(env: &Env) -> Vec<PathBuf> {
    std::fs::read_dir(env.device.parent().unwrap())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".bodies.")))
        .collect()
}

impl Spaces {
    fn new() -> Spaces {
        let env = Env::new();
        let other = env.path("F2");
        let q = "fifo none 0 0 100% 0% ''";
        let mut script = format!(
            "crdl {} 0 300; crdl {} 0 1000; qspc QS 40000 200 8 4 16 1000 '' n 16; \
             qspc QF 41000 500 8 4 16 1000 '' n 16; qopen QS; qcr Q {q}; qcr R {q}",
            env.dev(),
            other.display()
        );
        for i in 0..5 {
            script += &format!("; qenqueue Q q{i}");
        }
        script += "; qenqueue R r0; qenqueue R r1; qopen QF; qcr Q {q}";
        script = script.replace("{q}", q);
        for i in 0..3 {
            script += &format!("; qenqueue Q f{i}");
        }
        env.c(&script).ok();
        assert_eq!(
            env.json::<qm_common::qspace::QueueSpaceInfo>("qspl QF").file,
            other.display().to_string()
        );
        stop_and_wait(&env);
        let device = std::fs::read(&env.device).unwrap();
        let other = std::fs::read(&other).unwrap();
        let segments = body_segments(&env)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        Spaces { env, device, other, segments }
    }

    fn restore(&self) {
        std::fs::write(&self.env.device, &self.device).unwrap();
        std::fs::write(self.env.path("F2"), &self.other).unwrap();
        for segment in body_segments(&self.env) {
            std::fs::remove_file(segment).unwrap();
        }
        for (path, bytes) in &self.segments {
            std::fs::write(path, bytes).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    /// Messages per queue of a queue space, `None` when it does not exist.
    fn counts(&self, qspace: &str) -> Option<Vec<(String, u64)>> {
        let run = self.env.c_no_start(&format!("qspl {qspace}"));
        if run.status != 0 {
            run.stderr_has(&format!("Queue space {qspace} does not exist"));
            let vtoc: Vec<VtocEntry> = self.env.json("livtoc");
            assert!(!vtoc.iter().any(|t| t.name == qspace), "extents of a destroyed space");
            return None;
        }
        let listing: QueueListing = self.env.json(&format!("qopen {qspace}; qinfo"));
        Some(listing.queues.into_iter().map(|q| (q.def.name, q.usage.messages())).collect())
    }
}

fn counts(list: &[(&str, u64)]) -> Option<Vec<(String, u64)>> {
    Some(list.iter().map(|(q, n)| (q.to_string(), *n)).collect())
}

/// `qdestroy -p` of a queue holding messages, crashed at each step: the queue is there with
/// all its messages or gone with all of them, and a queue created again under its name is
/// empty.
#[test]
fn qdestroy_purge_at_every_crash_point() {
    let spaces = Spaces::new();
    let env = &spaces.env;
    let start = startup_steps(env);
    let mut crashes = 0;
    for n in start + 1.. {
        spaces.restore();
        let completed = run_crashing_at(env, n, "qopen QS; qdestroy -p -y Q");
        let _daemon = Daemon::start(&env.device, &[]);
        let found = spaces.counts("QS");
        assert!(
            found == counts(&[("Q", 5), ("R", 2)]) || found == counts(&[("R", 2)]),
            "step {n}: {found:?}"
        );
        if found == counts(&[("Q", 5), ("R", 2)]) {
            env.c_no_start("qopen QS; qdestroy -p -y Q").ok();
        }
        env.c_no_start("qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
        assert_eq!(spaces.counts("QS"), counts(&[("Q", 0), ("R", 2)]), "step {n}");
        if completed {
            break;
        }
        crashes += 1;
    }
    // Two at least: before the journal record is written, and before it is synced.
    enough(crashes, 2);
}

/// `qspacedestroy -f` of a space holding messages, on the device file and on another file,
/// crashed at each step: the space is there whole or gone, and a space created again under
/// its name (on the same file) holds nothing of the old one.
#[test]
fn qspacedestroy_force_at_every_crash_point() {
    let spaces = Spaces::new();
    let env = &spaces.env;
    let start = startup_steps(env);
    for (qspace, before, key, pages) in
        [("QS", counts(&[("Q", 5), ("R", 2)]), 40000, 200), ("QF", counts(&[("Q", 3)]), 41000, 500)]
    {
        let mut crashes = 0;
        for n in start + 1.. {
            spaces.restore();
            let completed = run_crashing_at(env, n, &format!("qspds -f -y {qspace}"));
            let _daemon = Daemon::start(&env.device, &[]);
            let found = spaces.counts(qspace);
            assert!(found == before || found.is_none(), "{qspace} step {n}: {found:?}");
            if found.is_some() {
                env.c_no_start(&format!("qspds -f -y {qspace}")).ok();
            }
            assert_eq!(spaces.counts(qspace), None, "{qspace} step {n}");
            env.c_no_start(&format!(
                "qspc {qspace} {key} {pages} 8 4 16 1000 '' n 16; qopen {qspace}; qcr Q fifo none 0 0 100% 0% ''"
            ))
            .ok();
            assert_eq!(spaces.counts(qspace), counts(&[("Q", 0)]), "{qspace} step {n}");
            if completed {
                break;
            }
            crashes += 1;
        }
        enough(crashes, 2);
    }
}

/// `qspacemove` of a queue space holding messages from the device file to another file,
/// crashed at each step: afterwards there is exactly one queue space, whole, on one entry
/// or the other; it passes `qverify`; and the move, run again if it did not finish, does.
#[test]
fn qspacemove_at_every_crash_point() {
    let spaces = Spaces::new();
    let env = &spaces.env;
    let start = startup_steps(env);
    let whole = counts(&[("Q", 5), ("R", 2)]);
    let mut crashes = 0;
    for n in start + 1.. {
        spaces.restore();
        let completed = run_crashing_at(env, n, "qspacemove QS 1");
        let _daemon = Daemon::start(&env.device, &[]);
        let vtoc: Vec<VtocEntry> = env.json("livtoc");
        let on: Vec<u8> = vtoc.iter().filter(|t| t.name == "QS").map(|t| t.device).collect();
        assert!(on == [0] || on == [1], "step {n}: QS on entries {on:?}");
        assert_eq!(spaces.counts("QS"), whole, "step {n}");
        env.c_no_start("qverify").ok();
        if on == [0] {
            env.c_no_start("qspacemove QS 1").ok();
            assert_eq!(spaces.counts("QS"), whole, "step {n}, moved again");
        }
        assert_eq!(spaces.counts("QF"), counts(&[("Q", 3)]), "step {n}");
        if completed {
            break;
        }
        crashes += 1;
    }
    enough(crashes, 4);
}

/// Runs `qmd path` and expects it to refuse the file.
fn qmd_refuses(path: &Path) -> Run {
    let mut cmd = Command::new(QMD);
    cmd.arg(path).env_remove("QM_SOCKET").env_remove("QM_FAULT");
    let run = run_limited(cmd, Duration::from_secs(60));
    assert_ne!(run.status, 0, "qmd served {}: {run:?}", path.display());
    run
}

/// Bytes that look like nothing in particular.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A redb database that is not qm's.
fn foreign_redb(path: &Path) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("data")).unwrap();
        for i in 0..200u64 {
            t.insert(i, noise(100).as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A file qmd refuses as its device, or as the file of a new device list entry, is left
/// byte for byte as it was: a foreign redb database, copies of a real device cut short
/// (taken while it ran and after it stopped), random bytes, an empty file.
#[test]
fn refused_files_are_left_unchanged() {
    let source = Env::new();
    source.c(&format!("crdl {} 0 2000; qspc QS 40000 200 8 4 16 1000 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''; qenqueue Q one; qenqueue Q two", source.dev())).ok();
    let running = std::fs::read(&source.device).unwrap();
    stop_and_wait(&source);
    let stopped = std::fs::read(&source.device).unwrap();

    let env = Env::new();
    foreign_redb(&env.path("foreign"));
    let candidates: Vec<(&str, Vec<u8>)> = vec![
        ("foreign", std::fs::read(env.path("foreign")).unwrap()),
        ("cut-running", running[..running.len() / 2].to_vec()),
        ("cut-stopped", stopped[..stopped.len() / 2].to_vec()),
        ("cut-header", stopped[..300].to_vec()),
        ("noise", noise(64 * 1024)),
    ];
    for (name, bytes) in &candidates {
        std::fs::write(env.path(name), bytes).unwrap();
    }
    std::fs::write(env.path("empty"), b"").unwrap();

    for (name, bytes) in &candidates {
        let path = env.path(name);
        let run = qmd_refuses(&path);
        assert!(run.stderr.contains(&path.display().to_string()), "{name}: {}", run.stderr);
        assert!(&std::fs::read(&path).unwrap() == bytes, "{name}: qmd changed a file it refused");
    }
    qmd_refuses(&env.path("empty")).stderr_has("is empty");

    // As the file of a new device list entry of a working device.
    env.c(&format!("crdl {} 0 100", env.dev())).ok();
    for (name, bytes) in &candidates {
        let path = env.path(name);
        env.c(&format!("crdl {} 0 100", path.display()))
            .failed()
            .stderr_has(&path.display().to_string())
            .stderr_has("left unchanged");
        assert!(&std::fs::read(&path).unwrap() == bytes, "{name}: crdl changed a file it refused");
    }
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries.len(), 1, "no entry was added");
    assert_eq!(leftovers(env.dir.path()), Vec::<PathBuf>::new());
}

fn chown(path: &Path, uid: u32) {
    let done = Command::new("chown").arg(uid.to_string()).arg(path).status().expect("chown");
    assert!(done.success(), "chown {uid} {} needs root (tests run as root)", path.display());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A device or entry file others could write, owned by another user, or reached through a
/// symbolic link is refused with the reason and the fix, and left unchanged.
#[test]
fn untrusted_files_are_refused() {
    let env = Env::new();
    let other = env.path("F2");
    // The device file has no room for QF, so QF goes to F2.
    env.c(&format!("crdl {} 0 60; crdl {} 0 100", env.dev(), other.display())).ok();
    stop_and_wait(&env);
    let bytes = std::fs::read(&env.device).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&env.device).unwrap().mode() & 0o777, 0o600, "created 0600");
    assert_eq!(std::fs::metadata(&other).unwrap().mode() & 0o777, 0o600, "created 0600");

    chmod(&env.device, 0o620);
    qmd_refuses(&env.device).stderr_has("mode 0620").stderr_has("chmod go-w");
    chmod(&env.device, 0o604);
    chown(&env.device, 54321);
    qmd_refuses(&env.device).stderr_has("belongs to uid 54321").stderr_has("chown");
    assert!(std::fs::read(&env.device).unwrap() == bytes, "a refused device is left unchanged");
    chown(&env.device, my_uid());

    let link = env.path("LINK");
    std::os::unix::fs::symlink(&env.device, &link).unwrap();
    qmd_refuses(&link).stderr_has("symbolic link");

    // The file of an entry: refused when qm opens it.
    let _daemon = Daemon::start(&env.device, &[]);
    chmod(&other, 0o666);
    env.c_no_start("qspc QF 41000 60 4 4 4 100 '' n 16")
        .failed()
        .stderr_has(&format!("{} has mode 0666", other.display()));
    chmod(&other, 0o600);
    env.c_no_start("qspc QF 41000 60 4 4 4 100 '' n 16").ok();
    let moved = env.path("F2-link");
    std::os::unix::fs::symlink(&other, &moved).unwrap();
    env.c_no_start(&format!("crdl {} 0 100", moved.display())).failed().stderr_has("symbolic link");
    // What lies under the name qm builds a new file under is removed only if qm left it.
    let planted = env.path("F3.qm-new");
    std::fs::write(&planted, b"someone else's").unwrap();
    chown(&planted, 54321);
    env.c_no_start(&format!("crdl {} 0 100", env.path("F3").display()))
        .failed()
        .stderr_has("F3.qm-new exists and is not a file qm left");
    assert_eq!(std::fs::read(&planted).unwrap(), b"someone else's");
    assert!(!env.path("F3").exists());
}

fn my_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("uid")
}

/// A qmd started as soon as the previous one let go of its lock serves the device: it
/// waits for the old process to close the device file instead of calling it in use.
#[test]
fn start_right_after_stop() {
    let env = Env::new();
    let mut daemon = Daemon::start(&env.device, &[]);
    env.c_no_start(&format!(
        "crdl {} 0 2000; qspc QS 40000 200 8 4 16 1000 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''; qenqueue Q one",
        env.dev()
    ))
    .ok();
    let mut stopped = Vec::new();
    for _ in 0..40 {
        stop_and_wait(&env);
        // The old process may still be ending: it is reaped at the end, not waited for.
        stopped.push(std::mem::replace(&mut daemon, Daemon::start(&env.device, &[])));
        env.c_no_start("qopen QS; qinfo Q").ok().stdout_has("Q ");
    }
    for mut old in stopped {
        old.wait();
    }
}
