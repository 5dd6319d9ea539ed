//! Running external commands (threshold commands and services) with `sh -c`: in their own
//! process group, with a time limit that kills the whole group, with bounded capture of
//! what they print, and without waiting on a background child that keeps a pipe open.
//! A qmd killed outright (`kill -9`) cannot end its commands; the next one finds them by
//! their environment and ends them ([`end_orphans`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most bytes kept of each of standard output and standard error: one more than a message
/// body may hold, so a reply over the body limit is told from one that just fits.
pub const CAPTURE_MAX: usize = qm_common::message::BODY_MAX + 1;
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
            Ending::TimedOut(d) => format!("killed after the {} time limit", seconds(*d)),
            Ending::NotStarted(why) => format!("cannot start: {why}"),
        }
    }
}

/// A time limit as configured: whole seconds ("2 s"), else milliseconds ("1500 ms").
pub fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
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
    /// Kill what the command left running in its process group once it exited (a service
    /// is a synchronous call); threshold commands may leave background jobs.
    pub kill_leftovers: bool,
}

/// What was read of a pipe; `None` once taken, after which more output is read and dropped.
type Kept = Arc<Mutex<Option<Vec<u8>>>>;

/// Reads `pipe` to its end into `kept` as it comes, so what was printed is there even when a
/// background child holds the pipe open past the command's end.
async fn capture(mut pipe: impl AsyncRead + Unpin, kept: Kept) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(kept) = kept.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    let room = CAPTURE_MAX.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
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
    // A program or script others may change would run as qmd's user: refused every time,
    // since it may have changed since the configuration was read.
    if let Err(why) = qm_common::trust::check_command_files(spec.command, spec.cwd.as_deref()) {
        return Outcome {
            ending: Ending::NotStarted(why),
            stdout: Vec::new(),
            stderr: Vec::new(),
            duration: start.elapsed(),
        };
    }
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
    let (out_kept, err_kept): (Kept, Kept) =
        (Arc::new(Mutex::new(Some(Vec::new()))), Arc::new(Mutex::new(Some(Vec::new()))));
    let out = tokio::spawn(capture(child.stdout.take().expect("piped"), out_kept.clone()));
    let err = tokio::spawn(capture(child.stderr.take().expect("piped"), err_kept.clone()));
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
    if spec.kill_leftovers {
        // The group outlives its leader while a child is in it; killing it closes the
        // pipes, and what is still buffered in them is read below.
        kill_group(pid);
    }
    // Drain what is in the pipes; a background child that keeps them open is not waited
    // for beyond the grace, and what was read so far is kept.
    let grace = tokio::time::sleep(PIPE_GRACE);
    tokio::pin!(grace);
    for task in [out, err] {
        tokio::select! {
            _ = task => {}
            _ = &mut grace => {}
        }
    }
    // A reader still blocked on a pipe held open by a background child keeps reading (so
    // the child never gets SIGPIPE) and drops what it reads; it ends with the child.
    let take =
        |kept: &Kept| kept.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
    let (stdout, stderr) = (take(&out_kept), take(&err_kept));
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

/// Commands a previous qmd of the same device left running when it was killed, ended by
/// [`end_orphans`].
#[derive(Debug, Default)]
pub struct Orphans {
    /// Process groups of services.
    pub services: usize,
    /// Threshold commands: the queue space and queue of each, and whether `qthtest` ran it.
    pub thresholds: Vec<Orphan>,
}

impl Orphans {
    /// The queues of the threshold commands, as `QSPACE/QUEUE, ...`.
    pub fn queues(&self) -> String {
        let names: Vec<String> =
            self.thresholds.iter().map(|o| format!("{}/{}", o.qspace, o.queue)).collect();
        names.join(", ")
    }
}

/// A threshold command found still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub qspace: String,
    pub queue: String,
    pub test: bool,
}

/// One process's environment, as `NAME=value` byte strings.
struct Environ(Vec<u8>);

impl Environ {
    fn of(pid: u32) -> Option<Environ> {
        std::fs::read(format!("/proc/{pid}/environ")).ok().map(Environ)
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.split(|b| *b == 0).find_map(|var| {
            let value = var.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(String::from_utf8_lossy(value).into_owned())
        })
    }
}

/// Kills the process groups of services and threshold commands that a previous qmd of
/// `device` left running (`kill -9` leaves no one to end them). They are known by their
/// environment (`QMCONFIG` naming this device, and `QM_SERVICE` or `QM_EVENT`), which a
/// process that merely reuses a recorded pid would not have; only this user's processes
/// count (root could read everyone's). A service's group is killed whatever is left of it (its message was
/// rolled back and will be forwarded again); a threshold command's only while the command
/// itself (the group's leader) still runs, since what it started in the background after
/// it ended is the operator's business.
pub fn end_orphans(device: &std::path::Path) -> Orphans {
    let device = device.display().to_string();
    let own = std::process::id();
    // Through libc: in a pid namespace whose process group lies outside it (qmd as pid 1
    // of `unshare --pid`), the group reads as 0, which rustix takes for a broken promise
    // and panics on.
    // SAFETY: getpgrp has no preconditions and cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    let mut services = std::collections::BTreeSet::new();
    let mut thresholds = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Orphans::default() };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Only our own processes: root could read (and would kill) anyone's.
        let mine = entry
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == qm_common::trust::euid());
        let Some(env) = Environ::of(pid).filter(|_| pid != own && mine) else { continue };
        if env.get("QMCONFIG").as_deref() != Some(device.as_str()) {
            continue;
        }
        // SAFETY: getpgid takes any pid; a gone one or one outside our namespace is
        // an error (-1) or 0, both refused here.
        let group = unsafe { libc::getpgid(pid as libc::pid_t) };
        if group <= 0 || group == own_group {
            continue;
        }
        if env.get("QM_SERVICE").is_some() {
            services.insert(group);
        } else if let Some(event) = env.get("QM_EVENT")
            && group == pid as i32
        {
            let orphan = Orphan {
                qspace: env.get("QM_QSPACE").unwrap_or_default(),
                queue: env.get("QM_QUEUE").unwrap_or_default(),
                test: event == "test",
            };
            thresholds.insert(group, orphan);
        }
    }
    for group in services.iter().chain(thresholds.keys()) {
        kill_group(u32::try_from(*group).ok());
    }
    Orphans { services: services.len(), thresholds: thresholds.into_values().collect() }
}
