//! Test fixtures: a temporary device directory, real `qmd` and `qmadmin` processes.
//!
//! Every test gets its own directory, device and daemon, so tests run in parallel. A daemon
//! started by `qmadmin` (auto-start) is stopped when the [`Env`] is dropped.

#![allow(dead_code)]

use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Read, Write};
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

    /// A `qmadmin` command with QMCONFIG set and a clean environment for sockets. TMPDIR
    /// is the test's directory, as for [`Daemon::start`], since the daemon it starts
    /// inherits it.
    pub fn qmadmin_cmd(&self) -> Command {
        let mut cmd = Command::new(QMADMIN);
        cmd.env("QMCONFIG", &self.device)
            .env_remove("QM_SOCKET")
            .env("PAGER", "cat")
            .env("TMPDIR", self.dir.path())
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs `qmadmin` with `script` on standard input, as a here-document would.
    #[track_caller]
    pub fn script(&self, script: &str) -> Run {
        self.run_stdin(self.qmadmin_cmd(), script)
    }

    /// Runs `qmadmin -c commands`.
    #[track_caller]
    pub fn c(&self, commands: &str) -> Run {
        let mut cmd = self.qmadmin_cmd();
        cmd.arg("-c").arg(commands);
        self.run_stdin(cmd, "")
    }

    #[track_caller]
    pub fn run_stdin(&self, mut cmd: Command, input: &str) -> Run {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qmadmin");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = wait_with_timeout(child, &what, Duration::from_secs(60));
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
    #[track_caller]
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
    #[track_caller]
    pub fn start_daemon(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.device, extra)
    }

    /// Starts `qmd -l 3 -g qmd.log` (and `extra`) in the foreground: its log says what it
    /// decided (a dequeue waiting, a limit reached), which tests read with
    /// [`Daemon::log_count`] and [`Daemon::wait_log`].
    #[track_caller]
    pub fn start_traced_daemon(&self, extra: &[&str]) -> Daemon {
        let log = self.path("qmd.log");
        let mut args = vec!["-l", "3", "-g", log.to_str().expect("UTF-8 path")];
        args.extend_from_slice(extra);
        let mut daemon = Daemon::start(&self.device, &args);
        daemon.log = Some(log);
        daemon
    }

    /// Stops whatever daemon serves this device. A daemon that does not stop fails the test
    /// (unless it is failing already).
    pub fn stop_daemon(&self) {
        if !self.socket().exists() {
            return;
        }
        let mut cmd = Command::new(QMADMIN);
        cmd.arg("--no-start")
            .arg("-c")
            .arg("daemon stop")
            .arg(&self.device)
            .env_remove("QM_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let Ok(mut child) = cmd.spawn() else { return };
        let limit = Duration::from_secs(30);
        let stopped = match wait_limited(&mut child, limit) {
            // A daemon killed outright leaves its socket file, and nobody to stop.
            Some(status) => {
                let mut said = String::new();
                if let Some(mut out) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut out, &mut said);
                }
                status.success() && !said.contains("nothing to stop")
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                fail_unless_failing(&format!(
                    "qmadmin -c 'daemon stop' did not end within {limit:?}"
                ));
                false
            }
        };
        if stopped && !wait_until(Duration::from_secs(10), || !self.socket().exists()) {
            fail_unless_failing(
                "the daemon said it stopped, but its socket is still there after 10 s",
            );
        }
    }
}

/// Fails the test with `why`, unless it is failing already (a second panic would abort).
fn fail_unless_failing(why: &str) {
    if std::thread::panicking() {
        eprintln!("{why}");
    } else {
        panic!("{why}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A daemon that qmadmin started logs to DEVICE.log.
        show_tail_if_failing(
            "the background qmd's log",
            &PathBuf::from(format!("{}.log", self.dev())),
        );
        self.stop_daemon();
    }
}

/// What a child prints, read by threads while it runs: a child that prints more than a pipe
/// holds never blocks on it.
struct Collector {
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(child: &mut Child) -> Collector {
        let mut readers = Vec::new();
        let mut reader = |stream: Option<Box<dyn std::io::Read + Send>>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            if let Some(mut stream) = stream {
                let sink = buf.clone();
                readers.push(std::thread::spawn(move || {
                    let mut chunk = [0u8; 8192];
                    while let Ok(n @ 1..) = stream.read(&mut chunk) {
                        sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                }));
            }
            buf
        };
        let stdout = reader(child.stdout.take().map(|s| Box::new(s) as _));
        let stderr = reader(child.stderr.take().map(|s| Box::new(s) as _));
        Collector { stdout, stderr, readers }
    }

    /// What was printed so far.
    fn run(&self, status: i32) -> Run {
        let text = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&b.lock().unwrap()).into_owned()
        };
        Run { status, stdout: text(&self.stdout), stderr: text(&self.stderr) }
    }

    /// Waits until the pipes are closed (a process the child left behind may still hold
    /// them) or `deadline` passes; whether they were.
    fn closed_by(&self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.readers.iter().all(std::thread::JoinHandle::is_finished) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.readers.iter().all(std::thread::JoinHandle::is_finished)
    }
}

/// Spawns `cmd` with standard input empty and standard error (and, after its first line,
/// standard output) appended to `log`; returns the child and its first line of output, or
/// `None` when none came within `limit`. The line is read through a thread, so a process
/// that hangs fails the test instead of blocking it.
pub fn spawn_to_first_line(
    cmd: &mut Command,
    log: std::fs::File,
    limit: Duration,
) -> (Child, Option<String>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().expect("the standard error file"));
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let mut log = log;
        let _ = std::io::copy(&mut reader, &mut log);
    });
    let line = rx.recv_timeout(limit).ok();
    (child, line)
}

/// Polls `child` until it exits or `limit` passes; `None` on time-out (the child still runs).
fn wait_limited(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for a child process: {e}"),
        }
    }
}

/// The exit code, or 128 + the signal that ended the process (as a shell shows it).
fn code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits for `child` (the command `what`) and returns what it printed. A child still running
/// after `limit`, or whose output stays open that long, is killed and fails the test, saying
/// which command hung, for how long, and what it had printed: a hang is never mistaken for
/// an ordinary failure.
#[track_caller]
pub fn wait_with_timeout(mut child: Child, what: &str, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    let collector = Collector::start(&mut child);
    let status = wait_limited(&mut child, limit);
    if let Some(status) = status
        && collector.closed_by(deadline)
    {
        return collector.run(code(status));
    }
    let _ = child.kill();
    let _ = child.wait();
    let run = collector.run(-1);
    let why = if status.is_some() {
        "exited, but its output was still held open (by a process it left running)"
    } else {
        "did not finish and was killed"
    };
    panic!("{what} {why} after {limit:?}\n--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr);
}

/// Runs `cmd` to its end (standard input empty) within `limit`; see [`wait_with_timeout`].
#[track_caller]
pub fn run_limited(mut cmd: Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait_with_timeout(child, &what, limit)
}

/// Runs a client call to the daemon on `rt`. A call with no answer after a minute (plus
/// `wait`, the time the call itself asked to wait) fails the test as hung, naming `what`.
#[track_caller]
pub fn answered<T>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    wait: Duration,
    call: impl std::future::Future<Output = T>,
) -> T {
    let limit = Duration::from_secs(60) + wait;
    rt.block_on(async { tokio::time::timeout(limit, call).await })
        .unwrap_or_else(|_| panic!("{what}: no answer from qmd within {limit:?}"))
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

/// The last `n` lines of a file, for a failing test's report (empty when there is none).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prints the end of a daemon's log when the test is failing, so its report shows what the
/// daemon said.
fn show_tail_if_failing(what: &str, path: &Path) {
    if std::thread::panicking() && path.exists() {
        eprintln!("--- last lines of {what} ({})\n{}", path.display(), tail(path, 40));
    }
}

/// A `qmd` running in the foreground for one test. Its standard error goes to a file next to
/// the device (`QUE.qmd-stderr`), never to a pipe nobody reads.
pub struct Daemon {
    pub child: Option<Child>,
    pub pid: u32,
    stderr: PathBuf,
    /// The `-g` log of a daemon started by [`Env::start_traced_daemon`].
    log: Option<PathBuf>,
}

impl Daemon {
    /// Starts `qmd DEVICE` and returns once it printed its ready line.
    #[track_caller]
    pub fn start(device: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(device, extra, &[])
    }

    /// Like [`Daemon::start`], with `vars` set in qmd's environment (QM_SOCKET is unset
    /// unless given).
    #[track_caller]
    pub fn start_with_env(device: &Path, extra: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(QMD);
        cmd.arg(device).args(extra).env_remove("QM_SOCKET").envs(vars.iter().copied());
        Daemon::start_command(cmd, device)
    }

    /// Starts `cmd`, a `qmd` for `device` (or a program that execs one, such as `prlimit`),
    /// with its standard error going to the device's `.qmd-stderr` file, and returns once it
    /// printed its ready line.
    #[track_caller]
    pub fn start_command(cmd: Command, device: &Path) -> Daemon {
        Daemon::start_saying(cmd, device, "serving")
    }

    /// Starts `qmd --standby DEVICE` (and `extra`) while another qmd serves the device;
    /// returns once it says it waits.
    #[track_caller]
    pub fn start_standby(device: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new(QMD);
        cmd.arg(device).arg("--standby").args(extra).env_remove("QM_SOCKET");
        Daemon::start_saying(cmd, device, "standby for")
    }

    /// Starts `cmd` and returns once its first line says `word`.
    #[track_caller]
    fn start_saying(mut cmd: Command, device: &Path, word: &str) -> Daemon {
        // Threshold commands and workers inherit it: a child killed before its cleanup
        // leaves its temporary files in the test's directory, removed with it, not in /tmp.
        if let Some(dir) = device.parent() {
            cmd.env("TMPDIR", dir);
        }
        let stderr = PathBuf::from(format!("{}.qmd-stderr", device.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .expect("qmd's standard error file");
        let (child, ready) = spawn_to_first_line(&mut cmd, file, Duration::from_secs(30));
        let pid = child.id();
        let daemon = Daemon { child: Some(child), pid, stderr, log: None };
        match ready {
            Some(line) if line.contains(word) => daemon,
            Some(line) => panic!(
                "qmd did not start: {line:?}\n--- its standard error\n{}",
                tail(&daemon.stderr, 40)
            ),
            None => panic!(
                "qmd {} printed no ready line within 30 s\n--- its standard error\n{}",
                device.display(),
                tail(&daemon.stderr, 40)
            ),
        }
    }

    /// Waits for the daemon to end on its own (after `daemon stop`); returns its exit status.
    #[track_caller]
    pub fn wait(&mut self) -> Run {
        let mut child = self.child.take().expect("daemon already stopped");
        let limit = Duration::from_secs(15);
        match wait_limited(&mut child, limit) {
            Some(status) => {
                Run { status: code(status), stdout: String::new(), stderr: self.stderr_text() }
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "qmd (pid {}) did not end within {limit:?} and was killed\n--- its standard error\n{}",
                    self.pid,
                    tail(&self.stderr, 40)
                );
            }
        }
    }

    /// Sends a signal (`"TERM"`, `"KILL"`, ...) and waits for the process to end; returns its
    /// exit status.
    #[track_caller]
    pub fn signal(&mut self, sig: &str) -> Run {
        self.signal_only(sig);
        self.wait()
    }

    /// Sends a signal (`"HUP"`, ...) and returns at once.
    pub fn signal_only(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// Stops the daemon with SIGSTOP and returns once every one of its threads is stopped:
    /// `kill` returns before a thread running on the other processor has taken the signal,
    /// and a request sent in that moment would still be served.
    #[track_caller]
    pub fn pause(&self) {
        self.signal_only("STOP");
        let tasks = format!("/proc/{}/task", self.pid);
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|entries| {
                entries.flatten().all(|task| {
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // The state follows the command's closing parenthesis: "T" when stopped.
                    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
                })
            })
        };
        let began = std::time::Instant::now();
        while !stopped() {
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "qmd (pid {}) did not stop",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What the daemon wrote on its standard error so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The daemon's `-g` log so far (a daemon from [`Env::start_traced_daemon`]).
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("a daemon started with a log file");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Log lines containing every one of `parts`. The daemon writes a log line before it
    /// answers the request that caused it, so a count taken after a reply covers that request.
    pub fn log_count(&self, parts: &[&str]) -> usize {
        self.log().lines().filter(|l| parts.iter().all(|p| l.contains(p))).count()
    }

    /// Waits until the log has at least `n` lines containing every one of `parts`.
    #[track_caller]
    pub fn wait_log(&self, parts: &[&str], n: usize) {
        let reached = wait_until(Duration::from_secs(15), || self.log_count(parts) >= n);
        assert!(
            reached,
            "the log never had {n} lines with {parts:?}\n--- log\n{}",
            tail(self.log.as_ref().expect("log"), 40)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        show_tail_if_failing("qmd's standard error", &self.stderr);
        if let Some(log) = &self.log {
            show_tail_if_failing("qmd's log", log);
        }
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
    /// whatever it printed after the last command. A `qmadmin` that does not exit within 30 s
    /// fails the test.
    #[track_caller]
    pub fn finish(mut self) -> Run {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("running");
        let limit = Duration::from_secs(30);
        let Some(status) = wait_limited(&mut child, limit) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "qmadmin did not exit within {limit:?} after its input ended\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
        };
        // The reader threads finish at end of file.
        let rest = |buf: &std::sync::Arc<std::sync::Mutex<String>>, from: usize| {
            wait_until(Duration::from_secs(5), || std::sync::Arc::strong_count(buf) == 1);
            buf.lock().unwrap()[from..].to_string()
        };
        Run {
            status: code(status),
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

/// What a running process has printed so far, read by a thread.
pub struct Output(std::sync::Arc<std::sync::Mutex<String>>);

impl Output {
    pub fn of(stream: impl std::io::Read + Send + 'static) -> Output {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 256];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Output(text)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}
