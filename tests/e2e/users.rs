//! Throwaway Unix users, for tests that need a second (hostile, or merely other) user:
//! created with `useradd`, removed with `userdel` when dropped; commands run as them
//! through `setpriv` (or `runuser`). Tests run as root (as in CI); a test that needs a
//! second user fails, saying what is missing, where it cannot have one.

#![allow(dead_code)]

use crate::support::{QMADMIN, QMD, Run, wait_with_timeout};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How to become another user.
#[derive(Clone, Copy)]
enum Switch {
    Setpriv,
    Runuser,
}

fn available(program: &str) -> bool {
    Command::new(program).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// What this machine lacks to run a process as another user, if anything.
fn missing() -> Option<String> {
    if euid() != 0 {
        return Some("root (to add a user and run processes as it; CI runs tests as root)".into());
    }
    for tool in ["useradd", "userdel"] {
        if !available(tool) {
            return Some(format!("the {tool} command (package passwd / shadow-utils)"));
        }
    }
    if !available("setpriv") && !available("runuser") {
        return Some("setpriv or runuser (package util-linux)".into());
    }
    None
}

/// Our effective uid: the owner of our /proc entry.
fn euid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

/// Runs `useradd`/`userdel`, retrying while another one holds the password files (tests
/// in parallel add users at the same moment). Returns the last exit status.
fn account_tool(program: &str, args: &[&str]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(program).args(args).output().expect(program);
        let run = Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // useradd and userdel exit 10 when they cannot lock or update /etc/passwd or
        // /etc/group, which another test is changing now.
        let busy = run.stderr.contains("lock") || run.stderr.contains("try again");
        if !busy || Instant::now() >= deadline {
            return run;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn id_of(name: &str, flag: &str) -> u32 {
    let out = Command::new("id").arg(flag).arg(name).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {flag} {name}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A system user that exists for one test.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    switch: Switch,
}

impl User {
    /// Adds a uniquely named user (no home, no login shell). Panics, naming what is missing,
    /// when this machine cannot: a test that needs another user never passes without one.
    pub fn create() -> User {
        if let Some(what) = missing() {
            panic!("this test runs processes as another user and needs {what}");
        }
        let switch = if available("setpriv") { Switch::Setpriv } else { Switch::Runuser };
        loop {
            // Unique across the test threads (counter) and the test processes (pid).
            let name = format!("qmt{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
            let run = account_tool(
                "useradd",
                &[
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    &name,
                ],
            );
            match run.status {
                0 => {
                    let (uid, gid) = (id_of(&name, "-u"), id_of(&name, "-g"));
                    return User { name, uid, gid, switch };
                }
                // Left over by a killed run of a process with our pid: take another name.
                9 => continue,
                _ => panic!("useradd {name} failed: {}", run.stderr),
            }
        }
    }

    /// A command that runs `program` as this user, without qm's environment variables.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match self.switch {
            Switch::Setpriv => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", self.uid))
                    .arg(format!("--regid={}", self.gid))
                    .arg("--clear-groups")
                    .arg("--");
                c
            }
            Switch::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", &self.name, "--"]);
                c
            }
        };
        cmd.arg(program)
            .env_remove("QM_SOCKET")
            .env_remove("QMCONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .current_dir("/");
        cmd
    }

    /// A directory `data` in `env`'s temporary directory that this user owns, for a device
    /// of the user's; the temporary directory is opened for the user to reach it.
    pub fn own_dir(&self, env: &crate::support::Env) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = env.path("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(self.uid), Some(self.gid)).unwrap();
        data
    }

    /// Runs `qmadmin ARGS -c COMMANDS DEVICE` as this user.
    pub fn qmadmin(&self, device: &Path, args: &[&str], commands: &str) -> Run {
        let mut cmd = self.command(QMADMIN);
        cmd.args(args).arg("-c").arg(commands).arg(device).env("PAGER", "cat");
        run(cmd)
    }

    /// Runs a shell command line as this user.
    pub fn sh(&self, line: &str) -> Run {
        let mut cmd = self.command("sh");
        cmd.arg("-c").arg(line);
        run(cmd)
    }

    /// Starts `qmd DEVICE ARGS` in the foreground as this user; returns once it serves.
    pub fn start_qmd(&self, device: &Path, args: &[&str]) -> Qmd {
        let mut cmd = self.command(QMD);
        cmd.arg(device).args(args);
        Qmd::start(cmd)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Whatever it still runs (a daemon a failed test left behind) goes first, by pid.
        for pid in processes_of(self.uid) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_dir_all(format!("/tmp/qm-{}", self.uid));
        let run = account_tool("userdel", &["--force", &self.name]);
        if run.status != 0 && !std::thread::panicking() {
            panic!("userdel {} failed: {}", self.name, run.stderr);
        }
    }
}

/// The pids of the processes `uid` runs.
fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid))
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// Runs a command to its end with nothing on standard input.
pub fn run(mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    wait_with_timeout(cmd.spawn().expect("spawn"), &what, Duration::from_secs(60))
}

/// A `qmd` in the foreground (as any user), killed when dropped.
pub struct Qmd {
    child: Option<Child>,
    /// The daemon's pid, from its ready line (the child may be `runuser`).
    pub pid: u32,
}

impl Qmd {
    /// Starts `cmd` (a `qmd`) and waits for its ready line; panics with what it said if it
    /// does not serve.
    pub fn start(mut cmd: Command) -> Qmd {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qmd");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let pid = line
            .strip_prefix("qmd: pid ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        let Some(pid) = pid else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("qmd output");
            panic!("qmd did not start: {line:?} {}", String::from_utf8_lossy(&out.stderr));
        };
        Qmd { child: Some(child), pid }
    }

    /// Waits for the daemon to end on its own (after `daemon stop`); returns its standard
    /// error.
    pub fn finish(mut self) -> String {
        let child = self.child.take().expect("running");
        wait_with_timeout(child, "qmd (after daemon stop)", Duration::from_secs(30)).stderr
    }
}

impl Drop for Qmd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-KILL").arg(self.pid.to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
