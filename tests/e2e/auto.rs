//! Fixtures for the automation tests (thresholds, forwarders, configuration): a queue space
//! with queues, a synchronous client, the file threshold commands and services append to,
//! and `qthlog`/`printserver` parsed.

use crate::support::{Daemon, Env, answered, wait_until};
use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl, Message, MsgId, Qos};
use qm_common::protocol::{FiringRecord, ForwarderInfo};
use qm_common::{Diagnostic, QmResult};
use std::time::Duration;

/// The queue space of every automation test.
pub const QS: &str = "QS";

/// The error queue.
pub const ERRQ: &str = "ERRQ fifo none 0 0 100% 0% ''";

/// Creates the device, queue space QS (`pages` pages, 16 blocks of non-persistent memory,
/// room for 20 sessions and transactions, error queue ERRQ) with ERRQ and `queues`
/// (`qcreate` arguments).
#[track_caller]
pub fn setup(env: &Env, pages: u32, queues: &[&str]) {
    let mut cmds = format!(
        "crdl {} 0 2000; qspc -n 16B QS 40000 {pages} 12 20 20 1000 ERRQ n 16; qopen QS; qcreate {ERRQ}",
        env.dev()
    );
    for q in queues {
        cmds += &format!("; qcreate {q}");
    }
    env.c(&cmds).ok();
}

/// Writes the daemon's configuration next to the device (`QUE.toml`): read by a daemon
/// that starts afterwards, or by `daemon reload`.
pub fn write_config(env: &Env, text: &str) {
    std::fs::write(env.path("QUE.toml"), text).expect("write QUE.toml");
}

/// The lines of a file in the test's directory (none when it does not exist).
pub fn lines(env: &Env, file: &str) -> Vec<String> {
    std::fs::read_to_string(env.path(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (at most 15 s) until `file` has `n` lines; returns them.
#[track_caller]
pub fn wait_lines(env: &Env, file: &str, n: usize) -> Vec<String> {
    let reached = wait_until(Duration::from_secs(15), || lines(env, file).len() >= n);
    let got = lines(env, file);
    assert!(reached && got.len() == n, "expected {n} lines in {file}, got {got:#?}");
    got
}

/// How many times the daemon found `queue`'s `limits` (`persistent` or `nonpersistent`)
/// high limit reached, from its `-l 3` log ([`Env::start_traced_daemon`]). The daemon decides
/// and logs a crossing before it answers the change that caused it, so a count taken right
/// after a reply is exact: no window in which a late firing could still come.
pub fn crossings(daemon: &Daemon, queue: &str, limits: &str) -> usize {
    daemon.log_count(&["high limit", &format!(" queue={queue} "), &format!(" limits={limits} ")])
}

/// Asserts that `queue`'s persistent high limit was reached exactly `n` times so far.
#[track_caller]
pub fn assert_crossings(daemon: &Daemon, queue: &str, n: usize) {
    assert_eq!(crossings(daemon, queue, "persistent"), n, "crossings of {queue}\n{}", daemon.log());
}

/// Polls until `cond` holds (at most 15 s); panics with `what` otherwise.
#[track_caller]
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(Duration::from_secs(15), cond), "never happened: {what}");
}

/// `qthlog --json` of one queue or all.
#[track_caller]
pub fn firings(env: &Env, queue: Option<&str>) -> Vec<FiringRecord> {
    env.json(&format!("qopen QS; qthlog {}", queue.unwrap_or("")))
}

/// Waits until `qthlog` holds `n` finished records of `queue`; returns them.
#[track_caller]
pub fn wait_firings(env: &Env, queue: &str, n: usize) -> Vec<FiringRecord> {
    let finished = |r: &FiringRecord| r.outcome != qm_common::protocol::FIRING_RUNNING;
    let reached = wait_until(Duration::from_secs(15), || {
        let got = firings(env, Some(queue));
        got.len() >= n && got.iter().all(finished)
    });
    let got = firings(env, Some(queue));
    assert!(reached && got.len() == n, "expected {n} firings of {queue}, got {got:#?}");
    got
}

/// `printserver --json`.
#[track_caller]
pub fn psr(env: &Env) -> Vec<ForwarderInfo> {
    env.json("psr")
}

/// One forwarder as `printserver` shows it.
#[track_caller]
pub fn server(env: &Env, id: u32) -> ForwarderInfo {
    psr(env).into_iter().find(|f| f.id == id).unwrap_or_else(|| panic!("no forwarder {id}"))
}

/// Waits until forwarder `id` is in `state`; returns it.
#[track_caller]
pub fn wait_state(env: &Env, id: u32, state: &str) -> ForwarderInfo {
    let mut last = None;
    let reached = wait_until(Duration::from_secs(15), || {
        let s = server(env, id);
        let ok = s.state == state;
        last = Some(s);
        ok
    });
    assert!(reached, "forwarder {id} never reached {state:?}: {last:#?}");
    last.expect("polled")
}

pub use crate::app::usage;

/// Messages on `queue` (committed, any state).
#[track_caller]
pub fn depth(env: &Env, queue: &str) -> u64 {
    usage(env, queue).messages()
}

/// A `sleep` command whose command line marks it as this test's: `secs` seconds with a
/// fraction of this test process's pid (seven digits) and two `tag` digits unique to the
/// test across the suite (the tests share one process, hence one pid), so that no marker
/// matches another test's (or another test process's) processes.
pub fn sleep_marker(secs: u32, tag: u8) -> String {
    assert!(tag < 100);
    format!("sleep {secs}.{:07}{tag:02}", std::process::id())
}

/// Kills the processes whose command line contains `marker` (left running on purpose).
pub fn kill_marked(marker: &str) {
    let _ = std::process::Command::new("pkill").arg("-f").arg(marker).status();
}

/// Kills the processes carrying its marker when the test ends, however it ends.
pub struct KillMarked(pub String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        kill_marked(&self.0);
    }
}

/// Whether a process whose command line contains `marker` runs.
pub fn running(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .arg("-f")
        .arg(marker)
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// An application on QS (its own runtime, so tests stay synchronous).
pub struct App {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl App {
    pub fn connect(env: &Env) -> App {
        App::connect_to(&env.device)
    }

    /// An application on QS of the device at `device`.
    pub fn connect_to(device: &std::path::Path) -> App {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt
            .block_on(Client::connect_device(device, "e2e-auto"))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        App { rt, client }
    }

    pub fn enqueue(&mut self, queue: &str, body: &[u8], ctl: &EnqueueCtl) -> QmResult<MsgId> {
        answered(&self.rt, "enqueue", Duration::ZERO, self.client.enqueue(QS, queue, body, ctl))
    }

    /// Enqueues a persistent message; panics on failure.
    #[track_caller]
    pub fn put(&mut self, queue: &str, body: &[u8]) -> MsgId {
        self.put_with(queue, body, EnqueueCtl::default())
    }

    /// Enqueues a non-persistent message; panics on failure.
    #[track_caller]
    pub fn put_np(&mut self, queue: &str, body: &[u8]) -> MsgId {
        let ctl = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
        self.put_with(queue, body, ctl)
    }

    #[track_caller]
    pub fn put_with(&mut self, queue: &str, body: &[u8], ctl: EnqueueCtl) -> MsgId {
        self.enqueue(queue, body, &ctl).unwrap_or_else(|e| panic!("enqueue on {queue}: {e}"))
    }

    pub fn dequeue(&mut self, queue: &str) -> QmResult<Message> {
        self.dequeue_with(queue, &DequeueCtl::default())
    }

    /// Dequeues as `ctl` says (by corrid or msgid, waiting).
    pub fn dequeue_with(&mut self, queue: &str, ctl: &DequeueCtl) -> QmResult<Message> {
        let wait = Duration::from_millis(ctl.wait_ms.unwrap_or(0));
        answered(&self.rt, "dequeue", wait, self.client.dequeue(QS, queue, ctl))
    }

    /// Dequeues the first message; panics when there is none.
    #[track_caller]
    pub fn take(&mut self, queue: &str) -> Message {
        self.dequeue(queue).unwrap_or_else(|e| panic!("dequeue from {queue}: {e}"))
    }

    /// Dequeues every available message.
    #[track_caller]
    pub fn drain(&mut self, queue: &str) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            match self.dequeue(queue) {
                Ok(m) => all.push(m),
                Err(e) if e.diagnostic == Diagnostic::NoMsg => return all,
                Err(e) => panic!("drain {queue}: {e}"),
            }
        }
    }
}
