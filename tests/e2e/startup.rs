//! How qmd is started, reached and stopped: another socket (`--socket`, `QM_SOCKET`) for
//! the daemon, qmadmin, auto-start and the commands qmd runs; `--detach` and its log;
//! SIGINT.

use crate::support::{Daemon, Env, QMADMIN, QMD, run_limited};
use qm_common::protocol::DaemonStatus;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `qmadmin --no-start` for `env`'s device reaching the daemon on `socket`: through
/// `--socket` or through `QM_SOCKET`.
fn qmadmin_on(env: &Env, socket: &Path, by_env: bool, commands: &str) -> crate::support::Run {
    let mut cmd = env.qmadmin_cmd();
    if by_env {
        cmd.env("QM_SOCKET", socket);
    } else {
        cmd.arg("--socket").arg(socket);
    }
    cmd.arg("--no-start").arg("--json").arg("-c").arg(commands);
    env.run_stdin(cmd, "")
}

/// Stops the daemon listening on a socket of its own when the test ends, however it ends.
struct StopOnDrop<'a>(&'a Env, PathBuf);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let mut cmd = Command::new(QMADMIN);
        cmd.arg("--no-start").arg("--socket").arg(&self.1).arg("-c").arg("daemon stop");
        cmd.arg(&self.0.device).env_remove("QM_SOCKET");
        if self.1.exists() {
            let _ = run_limited(cmd, Duration::from_secs(30));
        }
    }
}

/// `qmd --socket PATH` listens there and nowhere else; qmadmin reaches it with `--socket` or
/// `QM_SOCKET` (and without them finds no daemon); the commands qmd runs get that socket
/// as `QM_SOCKET`. `QM_SOCKET` also tells qmd where to listen, and qmadmin's auto-start
/// passes it on.
#[test]
fn another_socket_by_option_or_environment() {
    let env = Env::new();
    let socket = env.path("control.sock");
    let daemon = env.start_daemon(&["--socket", socket.to_str().unwrap()]);
    assert!(socket.exists() && !env.socket().exists());
    for by_env in [false, true] {
        let status: DaemonStatus = qmadmin_on(&env, &socket, by_env, "daemon status").ok().json();
        assert_eq!(status.pid, daemon.pid);
    }
    env.c_no_start("lidl")
        .failed()
        .stderr_has(&format!("no qmd answers on {}", env.socket().display()));
    // A threshold command calls back through the same socket.
    let setup = format!(
        "crdl {} 0 2000; qspc QS 40000 100 4 2 4 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% 'echo $QM_SOCKET > seen.txt'; qthtest Q",
        env.dev()
    );
    qmadmin_on(&env, &socket, false, &setup).ok();
    let seen = std::fs::read_to_string(env.path("seen.txt")).unwrap();
    assert_eq!(seen.trim(), socket.display().to_string());
    drop(daemon);

    // QM_SOCKET for qmd itself.
    let other = env.path("other.sock");
    let daemon =
        Daemon::start_with_env(&env.device, &[], &[("QM_SOCKET", other.to_str().unwrap())]);
    let status: DaemonStatus = qmadmin_on(&env, &other, true, "daemon status").ok().json();
    assert_eq!(status.pid, daemon.pid);
    assert!(!env.socket().exists());
    drop(daemon);

    // qmadmin's auto-start with QM_SOCKET: the new daemon listens there.
    let third = env.path("third.sock");
    let _stop = StopOnDrop(&env, third.clone());
    let mut cmd = env.qmadmin_cmd();
    cmd.env("QM_SOCKET", &third).arg("-c").arg("lidl");
    env.run_stdin(cmd, "").ok().stderr_has(&format!("on {}", third.display()));
    assert!(third.exists() && !env.socket().exists());
    qmadmin_on(&env, &third, false, "lidl").ok().stdout_has(&env.dev());
}

/// The process group of a process, from /proc.
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name in parentheses may hold blanks: the fields after it are fixed.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(2).unwrap().parse().unwrap()
}

/// `qmd --detach` returns once the daemon serves, saying so; the daemon runs on in its own
/// process group and logs to `DEVICE.log` (owner-only), or to `-g FILE` when given; a
/// detached start that cannot serve says why and fails.
#[test]
fn detach_serves_in_the_background_and_logs_to_device_log() {
    let env = Env::new();
    let mut cmd = Command::new(QMD);
    cmd.arg(&env.device).arg("--detach").arg("-l").arg("3").env_remove("QM_SOCKET");
    let run = run_limited(cmd, Duration::from_secs(30));
    run.ok().stdout_has(&format!("serving {} on {}", env.dev(), env.socket().display()));
    let status: DaemonStatus = env.json("daemon status");
    assert!(run.stdout.contains(&format!("pid {} ", status.pid)), "{}", run.stdout);
    assert_eq!(process_group(status.pid), status.pid, "a process group of its own");
    env.c(&format!("crdl {} 0 100", env.dev())).ok();
    let log = PathBuf::from(format!("{}.log", env.dev()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving") && text.contains("admin request"), "{text}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // A second detached start on the same device fails, saying why.
    let mut cmd = Command::new(QMD);
    cmd.arg(&env.device).arg("--detach").env_remove("QM_SOCKET");
    let run = run_limited(cmd, Duration::from_secs(30));
    run.failed().stderr_has("another qmd already serves");
    env.c("daemon stop").ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stop requested: shutting down"), "{text}");

    // -g FILE wins over DEVICE.log.
    let other = env.path("elsewhere.log");
    let mut cmd = Command::new(QMD);
    cmd.arg(&env.device).arg("--detach").arg("-l").arg("3").arg("-g").arg(&other);
    cmd.env_remove("QM_SOCKET");
    run_limited(cmd, Duration::from_secs(30)).ok();
    let before = std::fs::read_to_string(&log).unwrap();
    env.c("lidl").ok();
    env.c("daemon stop").ok();
    let text = std::fs::read_to_string(&other).unwrap();
    assert!(text.contains("serving") && text.contains("admin request"), "{text}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before, "DEVICE.log untouched");
}

/// SIGINT stops qmd cleanly, as SIGTERM does: exit status 0, its socket removed, its lock
/// released (a new daemon starts at once), an open transaction rolled back and what was
/// committed kept.
#[test]
fn sigint_stops_cleanly() {
    use crate::app::{App, FIFO_Q, PARAMS, setup};
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    setup(&env, "", PARAMS, &[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "kept");
    app.begin(None).unwrap();
    app.put("Q", "uncommitted");
    let stopped = daemon.signal("INT");
    assert_eq!(stopped.status, 0, "{stopped:?}");
    assert!(!env.socket().exists(), "the socket is removed");
    let daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    assert_eq!(app.drain("Q"), ["kept"]);
    drop(daemon);
}

/// `daemon stop` with no daemon running starts none just to stop it: it says there was
/// nothing to stop and succeeds.
#[test]
fn daemon_stop_starts_no_daemon() {
    let env = Env::new();
    env.with_device();
    env.c("daemon stop").ok();
    assert!(!env.socket().exists(), "the daemon is still there");
    std::fs::remove_file(env.path("QUE.log")).unwrap();
    let run = env.c("daemon stop");
    run.ok().stdout_has("nothing to stop").stderr_lacks("started qmd");
    assert!(!env.socket().exists(), "a daemon was started to be stopped");
    assert!(!env.path("QUE.log").exists(), "a daemon was started to be stopped");
}

/// A log file in a directory that does not exist: qmd says which directory is missing.
#[test]
fn a_log_file_in_a_missing_directory_is_named() {
    let env = Env::new();
    let log = env.path("no-such-dir/qmd.log");
    let mut cmd = Command::new(QMD);
    cmd.arg(&env.device).arg("-g").arg(&log);
    let run = run_limited(cmd, Duration::from_secs(30));
    run.failed().stderr_has(&format!(
        "cannot create log file {}: its directory {} does not exist",
        log.display(),
        env.path("no-such-dir").display()
    ));
}
