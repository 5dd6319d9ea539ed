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

    /// Asserts that the `ERROR:` lines are exactly one per fragment, in order, each
    /// containing its fragment.
    #[track_caller]
    pub fn errors_are(&self, fragments: &[&str]) -> &Self {
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("ERROR:")).collect();
        assert_eq!(
            errors.len(),
            fragments.len(),
            "expected {} errors\n--- stderr\n{}",
            fragments.len(),
            self.stderr
        );
        for (line, fragment) in errors.iter().zip(fragments) {
            assert!(
                line.contains(fragment),
                "error {line:?} lacks {fragment:?}\n--- stderr\n{}",
                self.stderr
            );
        }
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Self {
        assert!(!self.stdout.contains(text), "stdout has {text:?}\n--- stdout\n{}", self.stdout);
        self
    }

    /// The first JSON value on standard output (text before it, such as prompts or notes,
    /// and after it is ignored).
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        let start =
            self.stdout.find(['{', '[']).unwrap_or_else(|| panic!("no JSON in {:?}", self.stdout));
        serde_json::Deserializer::from_str(&self.stdout[start..])
            .into_iter::<T>()
            .next()
            .unwrap_or_else(|| panic!("no JSON in {:?}", self.stdout))
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout))
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

    /// Runs `qmadmin --no-start -c commands`: never starts a daemon.
    pub fn c_no_start(&self, commands: &str) -> Run {
        let mut cmd = self.qmadmin_cmd();
        cmd.arg("--no-start").arg("-c").arg(commands);
        self.run_stdin(cmd, "")
    }

    /// Starts a long-lived `qmadmin` whose standard input the test writes to.
    pub fn session(&self) -> Session {
        Session::start(self.qmadmin_cmd())
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
            let stopped = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            // A daemon killed outright leaves its socket file: nothing to wait for then.
            if stopped {
                wait_until(Duration::from_secs(10), || !self.socket().exists());
            }
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

    /// Waits for the daemon to end on its own (after `daemon stop`); returns its exit status.
    pub fn wait(&mut self) -> Run {
        let child = self.child.take().expect("daemon already stopped");
        wait_with_timeout(child, Duration::from_secs(15))
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

/// A `qmadmin` process that stays up while the test feeds it commands, as a second
/// operator's session would: it keeps its daemon connection (and its `qopen`) between
/// commands.
pub struct Session {
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// How much of each stream earlier commands consumed.
    seen: (usize, usize),
    marks: u32,
}

fn drain(stream: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    buf
}

impl Session {
    fn start(mut cmd: Command) -> Session {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qmadmin");
        let stdin = child.stdin.take();
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let mut session =
            Session { child: Some(child), stdin, stdout, stderr, seen: (0, 0), marks: 0 };
        // Wait until it is connected and reading commands.
        session.run("");
        session
    }

    /// The pid of the `qmadmin` process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Writes `lines` (commands and prompt answers) and waits until they have been handled;
    /// returns what they printed on standard output and standard error.
    #[track_caller]
    pub fn run(&mut self, lines: &str) -> Run {
        self.marks += 1;
        let mark = format!("--qm-mark-{}--", self.marks);
        let mut input = lines.to_string();
        if !input.is_empty() && !input.ends_with('\n') {
            input.push('\n');
        }
        // Shell escapes print a marker on each stream once everything before them ran.
        input += &format!("!echo {mark}\n!echo {mark} >&2\n");
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(input.as_bytes()).expect("write to qmadmin");
        stdin.flush().expect("flush qmadmin stdin");
        let has = |buf: &std::sync::Arc<std::sync::Mutex<String>>| {
            buf.lock().unwrap().contains(&format!("{mark}\n"))
        };
        let done = wait_until(Duration::from_secs(30), || has(&self.stdout) && has(&self.stderr));
        assert!(
            done,
            "qmadmin did not finish {lines:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        );
        let take = |buf: &std::sync::Arc<std::sync::Mutex<String>>, from: usize| {
            let all = buf.lock().unwrap();
            let end = all.find(&format!("{mark}\n")).expect("mark");
            (all[from..end].to_string(), end + mark.len() + 1)
        };
        let (stdout, out_end) = take(&self.stdout, self.seen.0);
        let (stderr, err_end) = take(&self.stderr, self.seen.1);
        self.seen = (out_end, err_end);
        let status = i32::from(stderr.lines().any(|l| l.starts_with("ERROR:")));
        Run { status, stdout, stderr }
    }

    /// Closes standard input and waits for `qmadmin` to exit; returns its exit status and
    /// whatever it printed after the last command.
    pub fn finish(mut self) -> Run {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.code().unwrap_or(-1),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    break -1;
                }
            }
        };
        // The reader threads finish at end of file.
        let rest = |buf: &std::sync::Arc<std::sync::Mutex<String>>, from: usize| {
            wait_until(Duration::from_secs(5), || std::sync::Arc::strong_count(buf) == 1);
            buf.lock().unwrap()[from..].to_string()
        };
        Run {
            status,
            stdout: rest(&self.stdout, self.seen.0),
            stderr: rest(&self.stderr, self.seen.1),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
