//! Fixtures for the data-plane tests: a queue space with queues, a synchronous application
//! client over the typed async client, and what `qlist` and `qinfo` report, parsed.

use crate::support::{Daemon, Env, answered};
use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl, Message, MsgId, Qos, Select, TimeSpec};
use qm_common::queue::{QueueListing, QueueUsage};
use qm_common::{Diagnostic, QmError, QmResult};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The queue space every data-plane test uses.
pub const QS: &str = "QS";

/// `qspc` parameters after the name: 200 pages, 8 queues, 4 transactions, 16 processes,
/// 1000 messages, error queue ERRQ, 16 blocks of non-persistent memory.
pub const PARAMS: &str = "40000 200 8 4 16 1000 ERRQ n 16";

/// A device and queue space QS (`qspc [OPTIONS] QS PARAMS`) with the queues given as
/// `qcreate` arguments, e.g. `Q fifo none 0 0 100% 0% ''`.
pub fn space_with(options: &str, params: &str, queues: &[&str]) -> Env {
    let env = Env::new();
    setup(&env, options, params, queues);
    env
}

/// Creates the device, queue space QS and its queues in `env` (whose daemon may be
/// running already).
pub fn setup(env: &Env, options: &str, params: &str, queues: &[&str]) {
    let mut cmds = format!("crdl {} 0 2000; qspc {options} QS {params}; qopen QS", env.dev());
    for q in queues {
        cmds += &format!("; qcreate {q}");
    }
    env.c(&cmds).ok();
}

/// Creates a device just large enough for queue space QS of `pages` pages (the other
/// parameters as [`PARAMS`]) and its queues, in `env` (whose daemon may be running).
pub fn setup_pages(env: &Env, pages: u32, queues: &[&str]) {
    let mut cmds = format!(
        "crdl {} 0 {}; qspc QS 40000 {pages} 8 4 16 1000 ERRQ n 16; qopen QS",
        env.dev(),
        pages + 1000
    );
    for q in queues {
        cmds += &format!("; qcreate {q}");
    }
    env.c(&cmds).ok();
}

/// Queue space QS with [`PARAMS`] (16 blocks of non-persistent memory) and `queues`.
pub fn space(queues: &[&str]) -> Env {
    space_with("-n 16B", PARAMS, queues)
}

/// Like [`space`], served by a daemon whose `-l 3` log the test reads (see [`waiting`]).
pub fn traced_space(queues: &[&str]) -> (Env, Daemon) {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, "-n 16B", PARAMS, queues);
    (env, daemon)
}

/// Waits until `n` dequeues in all have started waiting for a message (from the daemon's
/// log): a message enqueued or a transaction ended from now on reaches the n-th one.
#[track_caller]
pub fn waiting(daemon: &Daemon, n: usize) {
    daemon.wait_log(&["dequeue waiting for a message"], n);
}

/// The error queue and a plain fifo queue Q.
pub const ERRQ: &str = "ERRQ fifo none 0 0 100% 0% ''";
pub const FIFO_Q: &str = "Q fifo none 0 0 100% 0% ''";

/// An application connected to the daemon of `env` (its own runtime, so tests stay sync).
pub struct App {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl App {
    pub fn connect(env: &Env) -> App {
        App::connect_to(&env.device)
    }

    /// Connects to the daemon serving `device` (e.g. from another thread).
    pub fn connect_to(device: &std::path::Path) -> App {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt
            .block_on(Client::connect_device(device, "e2e-app"))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        App { rt, client }
    }

    /// An application connected by `connect` (to an address, through a connection file):
    /// the connection's error when it fails.
    pub fn connect_by<F: std::future::Future<Output = QmResult<Client>>>(
        connect: impl FnOnce() -> F,
    ) -> QmResult<App> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = answered(&rt, "connect", Duration::ZERO, connect())?;
        Ok(App { rt, client })
    }

    pub fn enqueue(&mut self, queue: &str, body: &[u8], ctl: &EnqueueCtl) -> QmResult<MsgId> {
        answered(&self.rt, "enqueue", Duration::ZERO, self.client.enqueue(QS, queue, body, ctl))
    }

    pub fn dequeue(&mut self, queue: &str, ctl: &DequeueCtl) -> QmResult<Message> {
        let wait = Duration::from_millis(ctl.wait_ms.unwrap_or(0));
        answered(&self.rt, "dequeue", wait, self.client.dequeue(QS, queue, ctl))
    }

    /// Enqueues with default controls; panics on failure.
    #[track_caller]
    pub fn put(&mut self, queue: &str, body: &str) -> MsgId {
        self.put_with(queue, body, EnqueueCtl::default())
    }

    #[track_caller]
    pub fn put_with(&mut self, queue: &str, body: &str, ctl: EnqueueCtl) -> MsgId {
        self.enqueue(queue, body.as_bytes(), &ctl)
            .unwrap_or_else(|e| panic!("enqueue {body} on {queue}: {e}"))
    }

    /// Dequeues the first message; panics when there is none.
    #[track_caller]
    pub fn take(&mut self, queue: &str) -> Message {
        self.dequeue(queue, &DequeueCtl::default())
            .unwrap_or_else(|e| panic!("dequeue from {queue}: {e}"))
    }

    /// The body of the first message, as text.
    #[track_caller]
    pub fn take_body(&mut self, queue: &str) -> String {
        String::from_utf8(self.take(queue).body).unwrap()
    }

    /// Dequeues until the queue has nothing available; returns the bodies in order.
    #[track_caller]
    pub fn drain(&mut self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            match self.dequeue(queue, &DequeueCtl::default()) {
                Ok(m) => bodies.push(String::from_utf8(m.body).unwrap()),
                Err(e) if e.diagnostic == Diagnostic::NoMsg => return bodies,
                Err(e) => panic!("drain {queue}: {e}"),
            }
        }
    }

    /// Dequeues the message with this msgid.
    pub fn take_id(&mut self, queue: &str, id: &MsgId) -> QmResult<Message> {
        let ctl = DequeueCtl { select: Select::Msgid(id.clone()), ..DequeueCtl::default() };
        self.dequeue(queue, &ctl)
    }

    pub fn begin(&mut self, timeout_secs: Option<u32>) -> QmResult<u64> {
        answered(&self.rt, "begin", Duration::ZERO, self.client.begin(QS, timeout_secs))
    }

    pub fn commit(&mut self) -> QmResult<()> {
        answered(&self.rt, "commit", Duration::ZERO, self.client.commit())
    }

    pub fn abort(&mut self) -> QmResult<()> {
        answered(&self.rt, "abort", Duration::ZERO, self.client.abort())
    }
}

/// The error of a call that must fail, with its diagnostic checked.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(result: QmResult<T>, diagnostic: Diagnostic) -> QmError {
    let e = result.expect_err("the call must fail");
    assert_eq!(e.diagnostic, diagnostic, "wrong diagnostic for: {}", e.message);
    e
}

/// Asserts that nothing is available on `queue` right now.
#[track_caller]
pub fn nothing_on(app: &mut App, queue: &str) {
    refused(app.dequeue(queue, &DequeueCtl::default()), Diagnostic::NoMsg);
}

/// One `qlist --json` row.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub msgid: String,
    pub corrid: String,
    pub priority: u8,
    pub retries: u32,
    pub length: u64,
    pub delivery: String,
    pub reply_qos: Option<String>,
    pub enqueued: u64,
    pub available: Option<u64>,
    pub expiration: Option<u64>,
    pub state: String,
    pub origin_queue: Option<String>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub urcode: i64,
}

/// `qlist` of `queue` (no criteria), in queue order.
#[track_caller]
pub fn qlist(env: &Env, queue: &str) -> Vec<Listed> {
    let run = env.c(&format!("qopen QS; qset {queue}; qlist --json"));
    run.ok();
    if run.stdout.contains("Queue list - no messages") {
        return Vec::new();
    }
    run.json()
}

/// `qinfo --json` of the whole queue space.
#[track_caller]
pub fn qinfo(env: &Env) -> QueueListing {
    env.json("qopen QS; qinfo")
}

/// What `qinfo` reports for one queue.
#[track_caller]
pub fn usage(env: &Env, queue: &str) -> QueueUsage {
    let listing = qinfo(env);
    listing
        .queues
        .into_iter()
        .find(|q| q.def.name == queue)
        .unwrap_or_else(|| panic!("no queue {queue}"))
        .usage
}

/// Messages `qinfo` counts on `queue`.
#[track_caller]
pub fn count(env: &Env, queue: &str) -> u64 {
    usage(env, queue).messages()
}

/// Polls until `cond` holds (at most 10 s); panics with `what` otherwise.
#[track_caller]
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(crate::support::wait_until(Duration::from_secs(10), cond), "never happened: {what}");
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    qm_common::time::now_secs()
}

/// `secs` as qmadmin's absolute time `YYMMDDHHMMSS` (local time).
pub fn tuxedo_time(secs: u64) -> String {
    let text = qm_common::time::format_local(secs);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits[2..].to_string()
}

/// Runs `f` and returns how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// Waits until no application or earlier qmadmin is attached to QS any more (the daemon
/// notices a closed connection asynchronously).
#[track_caller]
pub fn detached(env: &Env) {
    eventually("everyone detached", || {
        let run = env.c("ipcs QS");
        run.status == 0 && !run.stdout.contains("e2e-app") && !run.stdout.contains("qmadmin")
    });
}

/// `qmadmin -c COMMANDS` on the device at `device` (not `Env`'s own).
pub fn admin_on(device: &std::path::Path, commands: &str) -> crate::support::Run {
    let mut cmd = std::process::Command::new(crate::support::QMADMIN);
    cmd.env("QMCONFIG", device).env_remove("QM_SOCKET").env("PAGER", "cat").arg("-c").arg(commands);
    crate::support::run_limited(cmd, Duration::from_secs(120))
}

/// `n` messages on queue P with every property a message can carry, varied, some of them
/// bodies of 70,000 bytes (stored in parts), one in `nonpersistent` non-persistent; then
/// one on Q not available for an hour.
pub fn varied(app: &mut App, n: usize, nonpersistent: Option<usize>) {
    for i in 0..n {
        let ctl = EnqueueCtl {
            priority: Some((i % 90 + 1) as u8),
            corrid: format!("c{}", i % 7).into_bytes(),
            reply_queue: (i % 3 == 0).then(|| "Q".to_string()),
            failure_queue: (i % 5 == 0).then(|| "P".to_string()),
            urcode: i as i64 - 50,
            delivery: nonpersistent.filter(|every| i % every == 0).map(|_| Qos::NonPersistent),
            ..EnqueueCtl::default()
        };
        let body = if i % 50 == 7 { "L".repeat(70_000) } else { format!("varied {i}") };
        app.put_with("P", &body, ctl);
    }
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    app.put_with("Q", "in an hour", later);
}

/// Every message of `queue` that can be dequeued now, in order.
pub fn all(app: &mut App, queue: &str) -> Vec<Message> {
    let mut out = Vec::new();
    while let Ok(m) = app.dequeue(queue, &DequeueCtl::default()) {
        out.push(m);
    }
    out
}
