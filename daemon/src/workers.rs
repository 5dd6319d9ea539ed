//! Services that stay up (`mode = "worker"`): a pool of worker processes per queue space and
//! service, each started once and sent one request at a time over the worker protocol
//! (`qm_common::worker`, `docs/worker-protocol.md`).
//!
//! A forwarder borrows a worker ([`Pool::acquire`]) before it takes a message, so a worker
//! that cannot start costs no message a retry. A worker that dies, answers with a bad frame
//! or overruns the request's deadline has its process group killed and is replaced; the
//! forwarder rolls the message back as for a failed exec service. Workers are replaced after
//! `max_requests` requests, kept at `min` and never more than `max`. A pool closes (its
//! workers get end of input, a short grace, then their groups are killed) when no running
//! forwarder calls it any more, when a reload changes or removes its service, and when the
//! daemon stops.

use crate::service::{Called, Reply};
use crate::threshold::CommandEnv;
use qm_common::config::{ServiceDef, WorkerSettings};
use qm_common::message::{Message, escape_bytes};
use qm_common::worker::{self, GREETING, REPLY_MAX, Request};
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Notify;

/// How long a worker has to end by itself after its input is closed before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a new worker has to write its greeting when its service sets no `timeout`.
const GREETING_LIMIT: Duration = Duration::from_secs(30);
/// How long to wait for a worker's exit status once its output ended, for the message.
const STATUS_WAIT: Duration = Duration::from_millis(500);
/// Longest line of a worker's standard error copied to the log.
const STDERR_LINE_MAX: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `task` when a runtime runs (a pool dropped at the very end has none to use).
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

/// Kills a worker's process group (the worker and whatever it started).
fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// One running worker process.
struct Worker {
    child: Child,
    /// Taken (closed) when the worker is asked to end.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    served: u64,
}

impl Drop for Worker {
    /// Nothing a worker started outlives it.
    fn drop(&mut self) {
        kill_group(self.pid);
    }
}

impl Worker {
    /// Whether it has already exited (found while idle).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its exit status, when it comes soon after its output ended.
    async fn ending(&mut self) -> String {
        match tokio::time::timeout(STATUS_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => describe(status),
            _ => "its output ended".into(),
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".into(),
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Worker>,
    /// Workers idle, lent or starting: never more than `max`.
    in_service: u32,
    closed: bool,
    /// Process groups of workers not yet ended (lent ones included), killed at the end of
    /// [`Pool::close`] if still there.
    groups: BTreeSet<u32>,
}

/// The workers of one service in one queue space.
pub struct Pool {
    qspace: String,
    service: String,
    /// The definition its workers run with.
    pub def: ServiceDef,
    settings: WorkerSettings,
    env: Arc<CommandEnv>,
    state: Mutex<State>,
    /// A worker came back, ended, or the pool closed.
    changed: Notify,
}

/// A worker lent to a forwarder for one request. Dropped unused (the forwarder's task was
/// cancelled), the worker is killed: it may be in the middle of a request.
pub struct Lease {
    pool: Arc<Pool>,
    worker: Option<Worker>,
}

impl Lease {
    /// Gives the worker back unused (there was no message).
    pub fn release(mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.give_back(w);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.discard(w);
        }
    }
}

/// What went wrong talking to a worker.
enum Trouble {
    /// Its input or output closed: it died.
    Gone,
    /// It broke the protocol.
    Bad(String),
}

impl Pool {
    /// A pool for `service` of `qspace`; starts its `min` workers in the background.
    pub fn open(
        env: Arc<CommandEnv>,
        qspace: &str,
        service: &str,
        def: &ServiceDef,
        settings: WorkerSettings,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            qspace: qspace.to_string(),
            service: service.to_string(),
            def: def.clone(),
            settings,
            env,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        pool.top_up();
        pool
    }

    /// Lends an idle worker, or starts one if fewer than `max` run, or waits for one to
    /// come back.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, String> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut dead = Vec::new();
            let start = {
                let mut st = lock(&self.state);
                if st.closed {
                    return Err(format!(
                        "service {}: its workers are stopping (reload or daemon stop)",
                        self.service
                    ));
                }
                let mut found = None;
                while let Some(mut w) = st.idle.pop() {
                    match w.exited() {
                        None => {
                            found = Some(w);
                            break;
                        }
                        Some(status) => {
                            tracing::warn!(
                                "service {}: worker pid {} {} while idle; another is started",
                                self.service,
                                w.pid,
                                describe(status)
                            );
                            st.in_service = st.in_service.saturating_sub(1);
                            st.groups.remove(&w.pid);
                            dead.push(w);
                        }
                    }
                }
                if let Some(w) = found {
                    return Ok(Lease { pool: self.clone(), worker: Some(w) });
                }
                let room = st.in_service < self.settings.max;
                if room {
                    st.in_service += 1;
                }
                room
            };
            drop(dead);
            if start {
                return self.start_for_lease().await;
            }
            tracing::debug!(
                "service {}: no worker is free (max = {}); waiting for one",
                self.service,
                self.settings.max
            );
            changed.await;
        }
    }

    /// Starts a worker for the caller. The start runs in a task of its own: a caller that
    /// gives up waiting (its forwarder stops) leaves the new worker idle in the pool.
    async fn start_for_lease(self: &Arc<Self>) -> Result<Lease, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = self.clone();
        tokio::spawn(async move {
            match pool.start().await {
                Ok(w) => {
                    if let Err(Ok(w)) = tx.send(Ok(w)) {
                        pool.give_back(w);
                    }
                }
                Err(why) => {
                    pool.not_started();
                    let _ = tx.send(Err(why));
                }
            }
        });
        match rx.await {
            Ok(started) => started.map(|w| Lease { pool: self.clone(), worker: Some(w) }),
            Err(_) => Err(format!("service {}: the worker start was interrupted", self.service)),
        }
    }

    /// Starts one worker and waits for its greeting.
    async fn start(&self) -> Result<Worker, String> {
        let service = &self.service;
        let cwd = self.env.cwd();
        // Checked at every start: the program may have changed since the configuration
        // was read.
        qm_common::trust::check_command_files(&self.def.command, cwd.as_deref())
            .map_err(|why| format!("service {service}: worker not started: {why}"))?;
        let mut vars = self.env.base();
        vars.extend([
            ("QM_QSPACE", self.qspace.clone()),
            ("QM_QUEUE", service.clone()),
            ("QM_SERVICE", service.clone()),
        ]);
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(&self.def.command).envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0).kill_on_drop(true);
        if let Some(dir) = &cwd {
            cmd.current_dir(dir);
        }
        let mut child =
            cmd.spawn().map_err(|e| format!("service {service}: worker not started: {e}"))?;
        let pid = child.id().unwrap_or(0);
        lock(&self.state).groups.insert(pid);
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(stderr, service.clone(), pid));
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("piped")
        };
        let mut worker =
            Worker { child, stdin: Some(stdin), stdout: BufReader::new(stdout), pid, served: 0 };
        let limit = self.settings.timeout.unwrap_or(GREETING_LIMIT);
        let mut greeting = [0u8; 4];
        let why = match tokio::time::timeout(limit, worker.stdout.read_exact(&mut greeting)).await {
            Ok(Ok(_)) if &greeting == GREETING => {
                tracing::info!("service {service}: worker pid {pid} started");
                return Ok(worker);
            }
            Ok(Ok(_)) => format!(
                "it wrote {} instead of the greeting {} (is the command a worker? see \
                 docs/worker-protocol.md)",
                escape_bytes(&greeting),
                escape_bytes(GREETING)
            ),
            Ok(Err(_)) => format!("it {} before its greeting", worker.ending().await),
            Err(_) => format!(
                "it wrote no greeting within {} (a worker writes {} first; see \
                 docs/worker-protocol.md)",
                crate::command::seconds(limit),
                escape_bytes(GREETING)
            ),
        };
        self.forget(worker);
        Err(format!("service {service}: worker pid {pid} not started: {why}"))
    }

    /// Takes back a worker that served well: idle again, or replaced when it reached
    /// `max_requests` or the pool closed.
    fn give_back(self: &Arc<Self>, worker: Worker) {
        let used_up = self.settings.max_requests.is_some_and(|m| worker.served >= m);
        {
            let mut st = lock(&self.state);
            if !st.closed && !used_up {
                st.idle.push(worker);
                drop(st);
                self.changed.notify_one();
                return;
            }
            st.in_service = st.in_service.saturating_sub(1);
        }
        if used_up {
            tracing::info!(
                "service {}: worker pid {} served its {} requests; it is replaced",
                self.service,
                worker.pid,
                worker.served
            );
        }
        spawn(self.clone().retire(worker));
        self.top_up();
        self.changed.notify_one();
    }

    /// Kills a worker that failed (its message is rolled back) and starts another if fewer
    /// than `min` are left.
    fn discard(self: &Arc<Self>, worker: Worker) {
        {
            let mut st = lock(&self.state);
            st.in_service = st.in_service.saturating_sub(1);
        }
        self.forget(worker);
        self.top_up();
        self.changed.notify_one();
    }

    /// Kills a worker's group and stops tracking it.
    fn forget(&self, worker: Worker) {
        let pid = worker.pid;
        drop(worker);
        lock(&self.state).groups.remove(&pid);
        self.changed.notify_waiters();
    }

    /// A start that failed gives its place back.
    fn not_started(&self) {
        let mut st = lock(&self.state);
        st.in_service = st.in_service.saturating_sub(1);
        drop(st);
        self.changed.notify_one();
    }

    /// Starts workers in the background until `min` are in service. A start that fails
    /// does not call this again: a broken command is not restarted in a loop.
    fn top_up(self: &Arc<Self>) {
        loop {
            {
                let mut st = lock(&self.state);
                if st.closed || st.in_service >= self.settings.min {
                    return;
                }
                st.in_service += 1;
            }
            let pool = self.clone();
            spawn(async move {
                match pool.start().await {
                    Ok(w) => pool.give_back(w),
                    Err(why) => {
                        tracing::warn!("{why}");
                        pool.not_started();
                    }
                }
            });
        }
    }

    /// Ends a worker politely: end of input, [`STOP_GRACE`] to exit, then its group is
    /// killed.
    async fn retire(self: Arc<Self>, mut worker: Worker) {
        // Closing the pipe's write end is what the worker sees as end of input.
        drop(worker.stdin.take());
        if tokio::time::timeout(STOP_GRACE, worker.child.wait()).await.is_err() {
            tracing::warn!(
                "service {}: worker pid {} did not end within {} of its input closing; killed",
                self.service,
                worker.pid,
                crate::command::seconds(STOP_GRACE)
            );
        }
        self.forget(worker);
    }

    /// Closes the pool: idle workers are retired now, lent ones when they come back; one
    /// still serving its request after twice [`STOP_GRACE`] is killed.
    pub async fn close(self: Arc<Self>) {
        let idle = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.in_service = st.in_service.saturating_sub(st.idle.len() as u32);
            std::mem::take(&mut st.idle)
        };
        self.changed.notify_waiters();
        let retiring: Vec<_> =
            idle.into_iter().map(|w| tokio::spawn(self.clone().retire(w))).collect();
        let ended = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if lock(&self.state).groups.is_empty() {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(STOP_GRACE * 2, ended).await;
        let left: Vec<u32> = lock(&self.state).groups.iter().copied().collect();
        for pid in left {
            tracing::warn!(
                "service {}: worker pid {pid} was still serving a request {} after its pool \
                 closed; killed",
                self.service,
                crate::command::seconds(STOP_GRACE * 2)
            );
            kill_group(pid);
        }
        for task in retiring {
            let _ = task.await;
        }
    }

    /// Sends `msg` to the lent worker and waits for its reply until `limit` has passed;
    /// `shown` is the limit as the message names it ("5 s (the service's timeout)").
    pub async fn call(mut lease: Lease, msg: &Message, limit: Duration, shown: &str) -> Called {
        let pool = lease.pool.clone();
        let service = pool.service.clone();
        let mut worker = lease.worker.take().expect("a lease holds a worker");
        let pid = worker.pid;
        let deadline = std::time::SystemTime::now() + limit;
        let request = Request {
            msgid: msg.msgid.clone(),
            corrid: msg.corrid.clone(),
            priority: msg.priority,
            retries: msg.retries,
            deadline_ms: deadline
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            body: msg.body.clone(),
        };
        let answered = tokio::time::timeout(limit, exchange(&mut worker, &request)).await;
        let failure = |why: String| Called::Failure {
            reply: Reply { body: Vec::new(), urcode: -1, warning: None },
            why,
        };
        let called = match answered {
            Ok(Ok(reply)) => {
                worker.served += 1;
                let urcode = reply.urcode;
                let success = reply.success;
                let reply = Reply { body: reply.body, urcode, warning: None };
                let called = if success {
                    Called::Success(reply)
                } else {
                    let why =
                        format!("service {service} replied failure (user return code {urcode})");
                    Called::Failure { reply, why }
                };
                pool.give_back(worker);
                return called;
            }
            Ok(Err(Trouble::Gone)) => failure(format!(
                "service {service}: worker pid {pid} {} during the request; another is started",
                worker.ending().await
            )),
            Ok(Err(Trouble::Bad(why))) => failure(format!(
                "service {service}: worker pid {pid} broke the worker protocol: {why}; it was \
                 killed and another is started"
            )),
            Err(_) => failure(format!(
                "service {service}: worker pid {pid} killed after the time limit of {shown}"
            )),
        };
        pool.discard(worker);
        called
    }
}

/// Writes one request and reads its reply. A worker that exits meanwhile has its group
/// killed at once: a child it left would otherwise hold its output open until the deadline.
/// What it wrote before it exited is still read.
async fn exchange(worker: &mut Worker, request: &Request) -> Result<worker::Reply, Trouble> {
    let Worker { child, stdin, stdout, pid, .. } = worker;
    let talk = async {
        let stdin = stdin.as_mut().ok_or(Trouble::Gone)?;
        stdin.write_all(&request.encode()).await.map_err(|_| Trouble::Gone)?;
        let mut prefix = [0u8; worker::LENGTH_BYTES];
        stdout.read_exact(&mut prefix).await.map_err(|_| Trouble::Gone)?;
        // An oversized reply is refused unread: the worker is killed, nothing is buffered.
        let len = worker::payload_length(prefix, REPLY_MAX).map_err(Trouble::Bad)?;
        let mut payload = vec![0u8; len];
        stdout.read_exact(&mut payload).await.map_err(|_| Trouble::Gone)?;
        worker::Reply::decode(&payload).map_err(Trouble::Bad)
    };
    tokio::pin!(talk);
    tokio::select! {
        answer = &mut talk => answer,
        _ = child.wait() => {
            kill_group(*pid);
            talk.await
        }
    }
}

/// Copies a worker's standard error to the log, a line at a time.
async fn log_stderr(stderr: tokio::process::ChildStderr, service: String, pid: u32) {
    let mut lines = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines).take(STDERR_LINE_MAX as u64).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                tracing::warn!("service {service} worker pid {pid}: {}", text.trim_end());
            }
        }
    }
}
