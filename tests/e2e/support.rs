//! Test fixtures: a temporary device directory, real `qmd` and `qmadmin` processes.
//!
//! Every test gets its own directory, device and daemon, so tests run in parallel. A daemon
//! started by `qmadmin` (auto-start) is stopped when the [`Env`] is dropped.

#![allow(dead_code)]

use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const QMD: &str = env!("CARGO_BIN_EXE_qmd");
pub const QMADMIN: &str = env!("CARGO_BIN_EXE_qmadmin");

/// What a finished process printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success, showing the whole transcript otherwise.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.status, 0,
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_ne!(
            self.status, 0,
            "expected failure\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, text: &str) -> &Self {
        assert!(!self.stderr.contains(text), "stderr has {text:?}\n--- stderr\n{}", self.stderr);
        self
    }

    /// Number of `ERROR:` lines printed.
    pub fn errors(&self) -> usize {
        self.stderr.lines().filter(|l| l.starts_with("ERROR:")).count()
    }
}

fn finish(out: std::process::Output) -> Run {
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory with a device path in it (the file need not exist).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub device: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("qm-e2e-").tempdir().expect("temp dir");
        let device = dir.path().join("QUE");
        Env { dir, device }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dev(&self) -> String {
        self.device.display().to_string()
    }

    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("{}.sock", self.dev()))
    }

    /// A `qmadmin` command with QMCONFIG set and a clean environment for sockets.
    pub fn qmadmin_cmd(&self) -> Command {
        let mut cmd = Command::new(QMADMIN);
        cmd.env("QMCONFIG", &self.device)
            .env_remove("QM_SOCKET")
            .env("PAGER", "cat")
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs `qmadmin` with `script` on standard input, as a here-document would.
    pub fn script(&self, script: &str) -> Run {
        self.run_stdin(self.qmadmin_cmd(), script)
    }

    /// Runs `qmadmin -c commands`.
    pub fn c(&self, commands: &str) -> Run {
        let mut cmd = self.qmadmin_cmd();
        cmd.arg("-c").arg(commands);
        self.run_stdin(cmd, "")
    }

    pub fn run_stdin(&self, mut cmd: Command, input: &str) -> Run {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qmadmin");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = wait_with_timeout(child, Duration::from_secs(60));
        let _ = writer.join();
        out
    }

    /// Runs `-c commands --json` (the last command's listing) and parses it.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self, commands: &str) -> T {
        let mut cmd = self.qmadmin_cmd();
        cmd.arg("--json").arg("-c").arg(commands);
        let run = self.run_stdin(cmd, "");
        run.ok();
        let start =
            run.stdout.find(['{', '[']).unwrap_or_else(|| panic!("no JSON in {:?}", run.stdout));
        serde_json::from_str(&run.stdout[start..])
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", run.stdout))
    }

    /// Creates the device (2000 pages) so tests can start from a queue space.
    pub fn with_device(&self) -> &Self {
        self.c(&format!("crdl {} 0 2000", self.dev())).ok();
        self
    }

    /// Starts `qmd` in the foreground as a child of the test.
    pub fn start_daemon(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.device, extra)
    }

    /// Stops whatever daemon serves this device.
    pub fn stop_daemon(&self) {
        if self.socket().exists() {
            let mut cmd = Command::new(QMADMIN);
            cmd.arg("--no-start")
                .arg("-c")
                .arg("daemon stop")
                .arg(&self.device)
                .env_remove("QM_SOCKET");
            let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
            wait_until(Duration::from_secs(10), || !self.socket().exists());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// Waits for a child, killing it after `limit`.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    finish(child.wait_with_output().expect("output"))
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A `qmd` running in the foreground for one test.
pub struct Daemon {
    pub child: Option<Child>,
    pub pid: u32,
}

impl Daemon {
    /// Starts `qmd DEVICE` and returns once it printed its ready line.
    pub fn start(device: &Path, extra: &[&str]) -> Daemon {
        let mut child = Command::new(QMD)
            .arg(device)
            .args(extra)
            .env_remove("QM_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qmd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert!(line.contains("serving"), "qmd did not start: {line:?}");
        let pid = child.id();
        Daemon { child: Some(child), pid }
    }

    /// Sends a signal and waits for the process to end; returns its exit status.
    pub fn signal(&mut self, sig: &str) -> Run {
        let child = self.child.take().expect("daemon already stopped");
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid.to_string()).status();
        wait_with_timeout(child, Duration::from_secs(15))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
