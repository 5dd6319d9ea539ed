//! Running external commands (threshold commands and services) with `sh -c`: in their own
//! process group, with a time limit that kills the whole group, with bounded capture of
//! what they print, and without waiting on a background child that keeps a pipe open.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most bytes kept of each of standard output and standard error.
pub const CAPTURE_MAX: usize = 4 * 1024 * 1024;
/// How long to wait for the pipes to close once the command itself has exited.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed by a signal (its number).
    Signaled(i32),
    /// Killed after its time limit.
    TimedOut(Duration),
    /// It could not be started.
    NotStarted(String),
}

impl Ending {
    pub fn success(&self) -> bool {
        *self == Ending::Exited(0)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Ending::Exited(c) => Some(*c),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Ending::Exited(c) => format!("exit {c}"),
            Ending::Signaled(s) => format!("killed by signal {s}"),
            Ending::TimedOut(d) => format!("killed after the {} s time limit", d.as_secs_f64()),
            Ending::NotStarted(why) => format!("cannot start: {why}"),
        }
    }
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

/// A command to run.
pub struct ShellCommand<'a> {
    pub command: &'a str,
    pub env: Vec<(&'static str, String)>,
    pub stdin: Option<Vec<u8>>,
    pub cwd: Option<PathBuf>,
    pub limit: Duration,
}

async fn capture(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = CAPTURE_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Kills a command's process group if the task running it is dropped before the command
/// ended (the daemon stopping): nothing it started outlives its time limit.
struct Group {
    pid: Option<u32>,
    ended: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.ended {
            kill_group(self.pid);
        }
    }
}

/// Runs the command to its end or its time limit.
pub async fn run(spec: ShellCommand<'_>) -> Outcome {
    let start = Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(spec.command).envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ending: Ending::NotStarted(e.to_string()),
                stdout: Vec::new(),
                stderr: Vec::new(),
                duration: start.elapsed(),
            };
        }
    };
    let pid = child.id();
    let mut group = Group { pid, ended: false };
    if let (Some(mut stdin), Some(body)) = (child.stdin.take(), spec.stdin) {
        // A command that does not read its input must not block us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }
    let out = tokio::spawn(capture(child.stdout.take().expect("piped")));
    let err = tokio::spawn(capture(child.stderr.take().expect("piped")));
    let ending = match tokio::time::timeout(spec.limit, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(code) => Ending::Exited(code),
            None => Ending::Signaled(
                std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
            ),
        },
        Ok(Err(e)) => Ending::NotStarted(e.to_string()),
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            Ending::TimedOut(spec.limit)
        }
    };
    group.ended = true;
    let grab = |task: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(PIPE_GRACE, task).await {
            Ok(Ok(bytes)) => bytes,
            _ => Vec::new(),
        }
    };
    let stdout = grab(out).await;
    let stderr = grab(err).await;
    Outcome { ending, stdout, stderr, duration: start.elapsed() }
}

/// The first `lines` lines of standard output then standard error, for records.
pub fn first_lines(outcome: &Outcome, lines: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr)
    );
    let mut kept: Vec<&str> = text.lines().take(lines).collect();
    if text.lines().count() > lines {
        kept.push("...");
    }
    kept.join("\n").chars().take(2000).collect()
}
