//! The daemon: one per device, an owner-only socket, clean shutdown, state kept across
//! restarts, auto-start, a deleted device, malformed frames and foreign users.

use crate::support::{Env, QMD};
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::protocol::{
    ClientKind, DaemonRequest, DaemonStatus, Hello, PROTOCOL_VERSION, Reply, Request, Response,
};
use qm_common::qspace::{QueueSpaceInfo, QueueSpaceState};
use qm_common::queue::QueueListing;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A second `qmd` on the same device refuses with a clear message; the first keeps
/// serving; the socket and the device are owner-only.
#[test]
fn one_daemon_per_device() {
    let env = Env::new();
    let _daemon = env.start_daemon(&[]);
    let mut second = Command::new(QMD);
    second.arg(&env.device).env_remove("QM_SOCKET");
    let out = crate::support::run_limited(second, Duration::from_secs(30));
    assert_ne!(out.status, 0);
    let stderr = &out.stderr;
    assert!(stderr.contains(&format!("qmd: another qmd already serves {}", env.dev())), "{stderr}");
    assert_eq!(mode(&env.socket()), 0o600, "the socket is for its owner only");
    env.with_device();
    assert_eq!(mode(&env.device), 0o600, "the device is for its owner only");
    env.c_no_start("lidl").ok();
}

/// Everything a restart must keep: device list, VTOC, queue spaces and queues.
type Snapshot = (DeviceListing, Vec<VtocEntry>, QueueSpaceInfo, QueueSpaceInfo, QueueListing);

/// The state on disk. A queue space's state (loaded or not) is the daemon's memory, which
/// a restart starts afresh: checked to be inactive, then left out of the comparison.
fn snapshot(env: &Env, fresh: bool) -> Snapshot {
    let mut spaces: Vec<QueueSpaceInfo> =
        ["QS", "FAR"].iter().map(|s| env.json(&format!("qspl {s}"))).collect();
    for space in &mut spaces {
        if fresh {
            assert_eq!(space.state, QueueSpaceState::Inactive, "nothing is loaded after a restart");
        }
        space.state = QueueSpaceState::Inactive;
        // Blocks are counted once a space is loaded; the qinfo below compares the usage.
        space.blocks_used = None;
    }
    let far = spaces.pop().unwrap();
    let qs = spaces.pop().unwrap();
    (env.json("lidl"), env.json("livtoc"), qs, far, env.json("qopen QS; qinfo"))
}

/// State survives `daemon stop` and SIGTERM and a new daemon; SIGTERM ends cleanly: exit
/// status 0 and the socket file removed.
#[test]
fn restart_keeps_everything() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    let fs = env.path("FS").display().to_string();
    env.c_no_start(&format!("crdl {} 0 300; crdl {fs} 0 500", env.dev())).ok();
    env.c_no_start(
        "qspc -n 8 QS 40000 100 4 2 2 100 ERRQ n 16; qaddext QS 20; qspc FAR 40001 300 2 2 2 10 \"\" y 16",
    )
    .ok();
    env.c_no_start(
        "qopen QS; qcr ERRQ fifo none 0 0 100% 0% \"\"; qcr -d nonpersist -e +30 Q1 priority,lifo top 3 10 80% 20% \"echo full\"",
    )
    .ok();
    let before = snapshot(&env, false);
    assert_eq!(before.3.file, fs);
    assert_eq!(before.4.queues.len(), 2);

    env.c_no_start("daemon stop").ok().stdout_has("qmd stopped");
    assert_eq!(daemon.wait().status, 0);
    assert!(!env.socket().exists(), "the socket file is removed");
    env.c_no_start("lidl").failed().stderr_has("no qmd answers on");

    let mut daemon = env.start_daemon(&[]);
    assert_eq!(snapshot(&env, true), before, "state after daemon stop and a new start");
    let stopped = daemon.signal("TERM");
    assert_eq!(stopped.status, 0, "SIGTERM ends cleanly: {stopped:?}");
    assert!(!env.socket().exists(), "the socket file is removed");

    let _daemon = env.start_daemon(&[]);
    assert_eq!(snapshot(&env, true), before, "state after SIGTERM and a new start");
}

/// `--no-start` fails clearly when no daemon runs and starts nothing.
#[test]
fn no_start_starts_nothing() {
    let env = Env::new();
    env.c_no_start("lidl")
        .failed()
        .stderr_has(&format!("ERROR: no qmd answers on {}", env.socket().display()))
        .stderr_lacks("started");
    assert!(!env.socket().exists());
    assert!(!qm_common::paths::lock_path(&env.device).exists(), "no daemon ran");
    assert!(!env.device.exists());
}

/// Auto-start says so in exactly one line on standard error; the next session reuses the
/// daemon silently.
#[test]
fn autostart_says_one_line() {
    let env = Env::new();
    let run = env.c(&format!("crdl {} 0 100", env.dev()));
    run.ok();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("qmadmin: started qmd pid "), "{lines:?}");
    assert!(lines[0].contains(&format!("serving {}", env.dev())), "{lines:?}");
    env.c("lidl").ok().stderr_lacks("started");
    let status: DaemonStatus = env.json("daemon status");
    assert!(lines[0].contains(&format!("pid {} ", status.pid)));
    assert!(status.device_exists);
}

/// Several qmadmins starting at the same moment end up on one daemon, and exactly one of
/// them says it started it.
#[test]
fn concurrent_autostart() {
    let env = Env::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.qmadmin_cmd()
                .arg("--json")
                .arg("-c")
                .arg("daemon status")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<_> = children
        .into_iter()
        .map(|c| {
            crate::support::wait_with_timeout(
                c,
                "qmadmin -c 'daemon status'",
                Duration::from_secs(60),
            )
        })
        .collect();
    for run in &runs {
        run.ok();
    }
    let started = runs.iter().map(|r| r.stderr.matches("started qmd").count()).sum::<usize>();
    assert_eq!(started, 1, "{runs:?}");
    let pids: Vec<u32> = runs.iter().map(|r| r.json::<DaemonStatus>().pid).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one daemon: {pids:?}");
}

/// A daemon whose device file is deleted lets go of it: the device list is gone, and a new
/// device can be created at the same path.
#[test]
fn deleted_device_is_released() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 \"\" n 16; qopen QS").ok();
    std::fs::remove_file(&env.device).unwrap();
    env.c("lidl").failed().stderr_has(&format!("Device list not initialized on {}", env.dev()));
    let status: DaemonStatus = env.json("daemon status");
    assert!(!status.device_exists);
    assert!(status.loaded_qspaces.is_empty());
    env.c("qspl QS").failed().stderr_has("Device list not initialized");
    env.c(&format!("crdl {} 0 200", env.dev())).ok();
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries[0].entry.size, 200);
}

/// A raw connection to the control socket, speaking frames.
struct Raw(UnixStream);

impl Raw {
    fn connect(env: &Env) -> Raw {
        let s = UnixStream::connect(env.socket()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap();
        self.0.write_all(&len.to_be_bytes()).unwrap();
        self.0.write_all(bytes).unwrap();
    }

    fn send(&mut self, request: &Request) {
        self.send_bytes(&postcard::to_stdvec(request).unwrap());
    }

    fn hello(&mut self) {
        let hello =
            Hello { version: PROTOCOL_VERSION, program: "raw".into(), kind: ClientKind::Admin };
        self.send(&Request::Hello(hello));
        assert!(matches!(self.recv(), Some(Response::Welcome(_))));
    }

    /// The next frame, or `None` when the daemon closed the connection.
    fn recv(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return None;
            }
            Err(e) => panic!("reading from qmd: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        Some(postcard::from_bytes(&body).expect("a response frame"))
    }

    #[track_caller]
    fn recv_failure(&mut self) -> String {
        match self.recv() {
            Some(Response::Failed(e)) => e.message,
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
}

/// Malformed frames: garbage gets an error frame and the session goes on; an oversized
/// length closes the connection; a first frame that is not a greeting is refused. The
/// daemon serves others throughout.
#[test]
fn bad_frames() {
    let env = Env::new();
    let daemon = env.start_daemon(&[]);
    env.with_device();

    // Garbage after the greeting: an error frame, then the session still works.
    let mut raw = Raw::connect(&env);
    raw.hello();
    raw.send_bytes(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa]);
    assert!(raw.recv_failure().contains("malformed request frame"));
    raw.send(&Request::Daemon(DaemonRequest::Status));
    assert!(matches!(raw.recv(), Some(Response::Done { reply: Reply::Status(_), .. })));
    env.c_no_start("lidl").ok();

    // A length over the limit (5 MiB): told why, then the connection is closed.
    let mut raw = Raw::connect(&env);
    raw.hello();
    raw.0.write_all(&(5u32 * 1024 * 1024 + 1).to_be_bytes()).unwrap();
    assert!(raw.recv_failure().contains("over the limit"));
    assert!(raw.recv().is_none(), "the connection is closed");
    env.c_no_start("lidl").ok();

    // An oversized length before any greeting: closed.
    let mut raw = Raw::connect(&env);
    raw.0.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(raw.recv().is_none());

    // A first frame that is not a greeting: refused and closed.
    let mut raw = Raw::connect(&env);
    raw.send(&Request::Daemon(DaemonRequest::Status));
    assert!(raw.recv_failure().contains("the first frame must be a greeting"));
    assert!(raw.recv().is_none());

    // Garbage as the greeting: refused and closed.
    let mut raw = Raw::connect(&env);
    raw.send_bytes(b"\xff\xff\xff\xff\xff garbage");
    assert!(raw.recv_failure().contains("malformed greeting"));
    assert!(raw.recv().is_none());

    // A connection that closes halfway through a frame harms nobody.
    let mut raw = Raw::connect(&env);
    raw.hello();
    raw.0.write_all(&100u32.to_be_bytes()).unwrap();
    raw.0.write_all(b"partial").unwrap();
    drop(raw);

    env.c_no_start("lidl").ok();
    let status: DaemonStatus = env.json("daemon status");
    assert_eq!(status.pid, daemon.pid);
}

/// Another user cannot connect to the socket (mode 0600) and is told whose it is; the
/// daemon checks its peers' uid as well: another user gets "permission denied" from it even
/// when the socket's mode would let them in. Their qmadmin starts no daemon of its own.
/// It needs root and a second user: without them it fails, saying what is missing.
#[test]
fn other_users_are_refused() {
    let other = crate::users::User::create();
    let env = Env::new();
    let daemon = env.start_daemon(&[]);
    env.with_device();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The socket as qmd makes it (0600): they cannot connect, and are told whose it is
    // rather than sent off to start a daemon of their own on our device.
    let closed = format!(
        "cannot connect to {}: permission denied: the socket belongs to uid 0 (root), mode 0600",
        env.socket().display()
    );
    for extra in [&["--no-start"][..], &[][..]] {
        let run = other.qmadmin(&env.device, extra, "lidl");
        run.failed().errors_are(&[&closed]).stderr_lacks("started qmd").stderr_lacks("log file");
    }
    std::fs::set_permissions(env.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    for extra in [&["--no-start"][..], &[][..]] {
        let run = other.qmadmin(&env.device, extra, "lidl");
        run.failed()
            .stderr_has(&format!("permission denied: uid {} may not use this qmd", other.uid))
            .stderr_lacks("started qmd")
            .stdout_lacks("Device list on");
    }
    assert!(env.socket().exists(), "the daemon is still there");
    let status: DaemonStatus = env.json("daemon status");
    assert_eq!(status.pid, daemon.pid, "still the one daemon");
}

/// `daemon stop` returns once the daemon is gone, so the next qmadmin starts a new one at
/// once, with the device as it was.
#[test]
fn stop_then_start_at_once() {
    let env = Env::new();
    env.with_device();
    let mut pids = Vec::new();
    for _ in 0..3 {
        env.c("daemon stop").ok().stdout_has("qmd stopped");
        assert!(!env.socket().exists());
        let run = env.c("lidl");
        run.ok().stderr_has("qmadmin: started qmd pid ");
        let status: DaemonStatus = env.json("daemon status");
        assert!(status.device_exists);
        pids.push(status.pid);
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "a new daemon each time: {pids:?}");
}

/// `-l 3` logs every admin request and every refusal to the `-g` file; `-l 1` does not.
#[test]
fn log_levels_and_log_file() {
    let env = Env::new();
    let log = env.path("qmd.log").display().to_string();
    let mut daemon = env.start_daemon(&["-l", "3", "-g", &log]);
    env.c(&format!("crdl {} 0 200; qspl NOSUCH", env.dev())).failed();
    env.c("daemon stop").ok();
    daemon.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("admin request") && text.contains(&env.dev()), "{text}");
    assert!(text.contains("admin request refused: Queue space NOSUCH does not exist"), "{text}");

    let quiet = env.path("quiet.log").display().to_string();
    let mut daemon = env.start_daemon(&["-l", "1", "-g", &quiet]);
    env.c("lidl").ok();
    env.c("daemon stop").ok();
    daemon.wait();
    let text = std::fs::read_to_string(&quiet).unwrap_or_default();
    assert!(!text.contains("admin request"), "{text}");
}
