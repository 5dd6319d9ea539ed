//! Forwarders (Tuxedo's TMQFORWARD): tasks that take each message of their queues in a
//! transaction, call the service named like the queue, and put the reply on the message's
//! reply queue — or roll back, so the queue's retries, retry delay and error queue apply.
//!
//! Forwarders are defined in the configuration file; `boot` starts one, `shutdown` stops it
//! after its current message, and one started with `-e` stops by itself once its queues are
//! empty (a threshold command can boot it again at the next crossing).

use crate::command::seconds;
use crate::engine::Engine;
use crate::engine::txn::Owner;
use crate::service::{self, Called};
use crate::state::Daemon;
use crate::threshold::CommandEnv;
use crate::workers::{Lease, Pool};
use qm_common::config::{Config, ForwarderDef, ServiceDef};
use qm_common::message::{DequeueCtl, EnqueueCtl, Message};
use qm_common::protocol::{ClientKind, ForwarderInfo};
use qm_common::{Diagnostic, QmError, QmResult};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Wait between two looks at empty queues with `-i 0`, and while one of the forwarder's
/// queues is missing (no arrival can wake it for a queue created again later).
const POLL_MAX: Duration = Duration::from_secs(1);
/// How long `shutdown` waits for forwarders to finish their current message.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// What `printserver` shows of a forwarder.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub state: String,
    pub booted: Option<u64>,
    pub forwarded: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

struct Running {
    /// The definition it runs with (the file may have changed since).
    def: ForwarderDef,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    status: Arc<Mutex<Status>>,
}

#[derive(Default)]
struct Inner {
    defs: BTreeMap<u32, ForwarderDef>,
    services: BTreeMap<String, ServiceDef>,
    running: BTreeMap<u32, Running>,
    /// Last status of forwarders that are not running.
    last: BTreeMap<u32, Status>,
    /// Worker pools, by queue space and service.
    pools: BTreeMap<(String, String), Arc<Pool>>,
    /// The daemon is stopping: no pool is opened any more.
    stopping: bool,
    /// Pools closing, awaited by [`Forwarders::stop_workers`].
    closing: Vec<tokio::task::JoinHandle<()>>,
}

impl Inner {
    /// Takes `key`'s pool out of service; it closes in the background.
    fn close_pool(&mut self, key: &(String, String)) {
        let Some(pool) = self.pools.remove(key) else { return };
        self.closing.retain(|task| !task.is_finished());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.closing.push(runtime.spawn(pool.close()));
        }
    }
}

/// Every forwarder of the daemon.
#[derive(Default)]
pub struct Forwarders {
    inner: Mutex<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn clopt(def: &ForwarderDef) -> String {
    let mut s =
        format!("-q {} -t {} -i {}", def.queues.join(","), def.transaction_timeout, def.idle);
    if def.exit_when_empty {
        s += " -e";
    }
    if def.delete_on_failure {
        s += " -d";
    }
    s
}

impl Forwarders {
    /// Takes the definitions of a (re-read) configuration; running forwarders keep theirs
    /// until `apply` stops or restarts them.
    pub fn configure(&self, config: &Config) {
        let mut inner = lock(&self.inner);
        inner.defs = config.forwarder_defs().into_iter().map(|d| (d.id, d)).collect();
        inner.services = config.services.clone();
        // Workers run what the file said when they started: a changed or removed service's
        // pool closes (lent workers end once their request is answered).
        let stale: Vec<_> = inner
            .pools
            .iter()
            .filter(|((_, name), pool)| inner.services.get(name) != Some(&pool.def))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            inner.close_pool(&key);
        }
    }

    /// The worker pool of `service` in `qspace`, opened on first use.
    fn pool(
        &self,
        env: &Arc<CommandEnv>,
        qspace: &str,
        service: &str,
        def: &ServiceDef,
    ) -> QmResult<Arc<Pool>> {
        let mut inner = lock(&self.inner);
        if inner.stopping {
            return Err(QmError::system(format!(
                "service {service}: not called, the daemon is stopping"
            )));
        }
        let key = (qspace.to_string(), service.to_string());
        if let Some(pool) = inner.pools.get(&key).filter(|p| p.def == *def) {
            return Ok(pool.clone());
        }
        inner.close_pool(&key);
        let settings = def.workers().expect("a worker service");
        let pool = Pool::open(env.clone(), qspace, service, def, settings);
        inner.pools.insert(key, pool.clone());
        Ok(pool)
    }

    /// Closes the pools no running forwarder calls any more.
    fn close_unused_pools(inner: &mut Inner) {
        let used: std::collections::BTreeSet<(String, String)> = inner
            .running
            .values()
            .filter(|r| !*r.done.borrow())
            .flat_map(|r| r.def.queues.iter().map(|q| (r.def.qspace.clone(), q.clone())))
            .collect();
        let unused: Vec<_> = inner.pools.keys().filter(|k| !used.contains(*k)).cloned().collect();
        for key in unused {
            inner.close_pool(&key);
        }
    }

    /// At daemon stop: every pool closes; returns once their workers have ended (each gets
    /// end of input, then a short grace before it is killed).
    pub async fn stop_workers(&self) {
        let closing = {
            let mut inner = lock(&self.inner);
            inner.stopping = true;
            let keys: Vec<_> = inner.pools.keys().cloned().collect();
            for key in keys {
                inner.close_pool(&key);
            }
            std::mem::take(&mut inner.closing)
        };
        for task in closing {
            let _ = task.await;
        }
    }

    pub fn service(&self, name: &str) -> Option<ServiceDef> {
        lock(&self.inner).services.get(name).cloned()
    }

    /// Forwarders that start with the daemon.
    pub fn boot_list(&self) -> Vec<u32> {
        lock(&self.inner).defs.values().filter(|d| d.boot).map(|d| d.id).collect()
    }

    /// After a reload: stops running forwarders that are no longer defined and restarts
    /// those whose definition changed (each after its current message), so what runs is
    /// what the file says. Returns what it did, one line each.
    pub fn apply(self: &Arc<Self>, daemon: &Arc<Daemon>) -> Vec<String> {
        let (removed, changed): (Vec<u32>, Vec<u32>) = {
            let inner = lock(&self.inner);
            let live = inner.running.iter().filter(|(_, r)| !*r.done.borrow());
            let mut removed = Vec::new();
            let mut changed = Vec::new();
            for (id, r) in live {
                match inner.defs.get(id) {
                    None => removed.push(*id),
                    Some(d) if !same_options(d, &r.def) => changed.push(*id),
                    Some(_) => {}
                }
            }
            (removed, changed)
        };
        let mut done = Vec::new();
        for id in removed {
            match self.shutdown(Some(id), None) {
                Ok(_) => {
                    lock(&self.inner).last.remove(&id);
                    done.push(format!(
                        "Forwarder {id} was removed from the configuration: stopped"
                    ));
                }
                Err(e) => done.push(format!("Forwarder {id} could not be stopped: {}", e.message)),
            }
        }
        for id in changed {
            if let Err(e) = self.shutdown(Some(id), None) {
                done.push(format!("Forwarder {id} could not be restarted: {}", e.message));
                continue;
            }
            match self.boot(daemon, id) {
                Ok(()) => done.push(format!(
                    "Forwarder {id} restarted with its new definition ({})",
                    self.options_of(id).unwrap_or_default()
                )),
                Err(e) if e.diagnostic == Diagnostic::Exists => done.push(format!(
                    "Forwarder {id} is still finishing its current message with its old \
                     definition; boot -i {id} once psr shows it stopped"
                )),
                Err(e) => done.push(format!("Forwarder {id} was stopped: {}", e.message)),
            }
        }
        done
    }

    fn options_of(&self, id: u32) -> Option<String> {
        lock(&self.inner).defs.get(&id).map(clopt)
    }

    pub fn list(&self) -> Vec<ForwarderInfo> {
        let inner = lock(&self.inner);
        let mut ids: Vec<u32> = inner.defs.keys().chain(inner.running.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                // A running forwarder shows the definition it runs with.
                let running = inner.running.get(&id);
                let def = running.map(|r| &r.def).or_else(|| inner.defs.get(&id))?;
                let status = match running {
                    Some(r) => lock(&r.status).clone(),
                    None => inner.last.get(&id).cloned().unwrap_or_else(|| Status {
                        state: "not booted".into(),
                        ..Status::default()
                    }),
                };
                Some(ForwarderInfo {
                    id,
                    qspace: def.qspace.clone(),
                    queues: def.queues.clone(),
                    options: clopt(def),
                    state: status.state,
                    booted: status.booted,
                    forwarded: status.forwarded,
                    failures: status.failures,
                    last_error: status.last_error,
                })
            })
            .collect()
    }

    /// Starts forwarder `id`: checks its queue space and queues, attaches, and runs it.
    pub fn boot(self: &Arc<Self>, daemon: &Arc<Daemon>, id: u32) -> QmResult<()> {
        let def = {
            let mut inner = lock(&self.inner);
            let def = inner.defs.get(&id).cloned().ok_or_else(|| {
                QmError::not_found(format!(
                    "Forwarder {id} is not defined in the configuration ({})",
                    daemon.config_path_text()
                ))
            })?;
            if let Some(r) = inner.running.get(&id)
                && !*r.done.borrow()
            {
                return Err(QmError::exists(format!("Forwarder {id} is already running")));
            }
            inner.running.remove(&id);
            def
        };
        let program = format!("TMQFORWARD {id}");
        let session = daemon.sessions.register(
            Some(std::process::id()),
            // The daemon itself: its owner's rights.
            qm_common::principal::Principal::unix(rustix::process::geteuid().as_raw()),
            qm_common::principal::Face::Socket,
            program.clone(),
            ClientKind::Forwarder,
            qm_common::time::now_secs(),
        );
        let engine = {
            let mut store = daemon.store();
            daemon.attach(&mut store, session, &def.qspace)
        };
        let engine = match engine.and_then(|e| check_queues(&e, &def).map(|()| e)) {
            Ok(e) => e,
            Err(e) => {
                daemon.sessions.unregister(session);
                let message = format!("Forwarder {id} cannot boot: {}", e.message);
                // psr shows why (a boot at daemon start has no one else to tell).
                let mut inner = lock(&self.inner);
                let mut last = inner.last.remove(&id).unwrap_or_default();
                last.state = "boot failed".into();
                last.last_error = Some(e.message.clone());
                inner.last.insert(id, last);
                return Err(QmError::new(e.diagnostic, message));
            }
        };
        let status = Arc::new(Mutex::new(Status {
            state: "running".into(),
            booted: Some(qm_common::time::now_secs()),
            ..Status::default()
        }));
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        lock(&self.inner)
            .running
            .insert(id, Running { def: def.clone(), stop, done, status: status.clone() });
        let task = Task {
            forwarders: self.clone(),
            daemon: daemon.clone(),
            def,
            engine,
            session,
            program,
            status,
            stop: stop_rx,
        };
        tokio::runtime::Handle::current().spawn(async move {
            task.run().await;
            let _ = done_tx.send(true);
        });
        tracing::info!("forwarder {id} booted");
        Ok(())
    }

    /// Asks forwarders to stop after their current message and waits for them; returns how
    /// many were stopped.
    pub fn shutdown(&self, id: Option<u32>, queue: Option<&str>) -> QmResult<usize> {
        if id.is_some() && queue.is_some() {
            return Err(QmError::inval(
                "Shutdown: give either -i ID or -q QUEUE, not both (shutdown -i ID | -q QUEUE)",
            ));
        }
        let waits: Vec<(u32, watch::Receiver<bool>)> = {
            let inner = lock(&self.inner);
            if let Some(i) = id
                && !inner.defs.contains_key(&i)
                && !inner.running.contains_key(&i)
            {
                return Err(QmError::not_found(format!(
                    "Shutdown: forwarder {i} is not defined in the configuration"
                )));
            }
            if let Some(q) = queue
                && !inner
                    .defs
                    .values()
                    .chain(inner.running.values().map(|r| &r.def))
                    .any(|d| d.queues.iter().any(|x| x == q))
            {
                return Err(QmError::not_found(format!("Shutdown: no forwarder serves queue {q}")));
            }
            inner
                .running
                .iter()
                .filter(|(i, r)| {
                    !*r.done.borrow()
                        && id.is_none_or(|want| want == **i)
                        && queue.is_none_or(|q| r.def.queues.iter().any(|x| x == q))
                })
                .map(|(i, r)| {
                    let _ = r.stop.send(true);
                    lock(&r.status).state = "stopping".into();
                    (*i, r.done.clone())
                })
                .collect()
        };
        if waits.is_empty() {
            let what = match (id, queue) {
                (Some(i), _) => format!("forwarder {i} is not running"),
                (None, Some(q)) => format!("no forwarder of queue {q} is running"),
                (None, None) => "no forwarder is running".into(),
            };
            return Err(QmError::new(Diagnostic::NotFound, format!("Shutdown: {what}")));
        }
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        for (_, mut done) in waits.clone() {
            while !*done.borrow_and_update() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(waits.len())
    }

    /// Records how forwarder `id` ended. Locks `inner` before its status, as `shutdown` and
    /// `list` do, and sets the final state under both, so a concurrent `shutdown` can neither
    /// deadlock with it nor leave it shown as `stopping`.
    fn finished(&self, id: u32, status: &Mutex<Status>, end: &str) {
        let mut inner = lock(&self.inner);
        let last = {
            let mut s = lock(status);
            s.state = end.to_string();
            s.clone()
        };
        inner.running.remove(&id);
        inner.last.insert(id, last);
        Self::close_unused_pools(&mut inner);
    }
}

/// Whether two definitions run the same way (`boot` only matters at daemon start).
fn same_options(a: &ForwarderDef, b: &ForwarderDef) -> bool {
    ForwarderDef { boot: false, ..a.clone() } == ForwarderDef { boot: false, ..b.clone() }
}

fn check_queues(engine: &Engine, def: &ForwarderDef) -> QmResult<()> {
    for q in &def.queues {
        if engine.queue_def(q).is_none() {
            return Err(QmError::new(
                Diagnostic::BadQueue,
                format!("queue {q} does not exist in queue space {}", def.qspace),
            ));
        }
    }
    Ok(())
}

/// Waits until any of the notifications fires.
async fn any(waits: &mut [Pin<Box<tokio::sync::futures::Notified<'_>>>]) {
    std::future::poll_fn(|cx| {
        for w in waits.iter_mut() {
            if w.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// One running forwarder.
struct Task {
    forwarders: Arc<Forwarders>,
    daemon: Arc<Daemon>,
    def: ForwarderDef,
    engine: Arc<Engine>,
    session: u64,
    program: String,
    status: Arc<Mutex<Status>>,
    stop: watch::Receiver<bool>,
}

/// What forwarding one message did.
enum Step {
    Empty,
    Done,
}

impl Task {
    fn set_state(&self, state: &str) {
        lock(&self.status).state = state.to_string();
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        let end = loop {
            if self.stopping() {
                break "stopped".to_string();
            }
            if !self.engine.alive() {
                break format!("failed: queue space {} was closed", self.def.qspace);
            }
            let notifies: Vec<Arc<Notify>> =
                self.def.queues.iter().filter_map(|q| self.engine.queue_notify(q)).collect();
            let mut waits: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let (mut forwarded, mut empty) = (false, true);
            for queue in self.def.queues.clone() {
                if self.stopping() {
                    break;
                }
                match self.forward_one(&queue).await {
                    Ok(Step::Done) => forwarded = true,
                    Ok(Step::Empty) => {}
                    Err(e) => {
                        empty = false;
                        self.record_failure(&e.message);
                    }
                }
            }
            if forwarded {
                continue;
            }
            // Only queues found empty end a forwarder started with -e; after a failure it
            // waits its idle time and tries again.
            // A message waiting out its retry delay keeps it: it is ready again soon.
            if empty && self.def.exit_when_empty && !self.engine.retry_pending(&self.def.queues) {
                tracing::info!("forwarder {}: no messages on queues - shutting down", self.def.id);
                break "exited (queues empty)".to_string();
            }
            self.set_state("idle");
            // An arrival wakes it at once; -i is how long it waits between looks otherwise.
            let idle = self.def.idle_duration();
            let all_watched = notifies.len() == self.def.queues.len();
            let wait = match (idle.is_zero(), all_watched) {
                (true, _) => POLL_MAX,
                (false, true) => idle,
                (false, false) => idle.min(POLL_MAX),
            };
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = any(&mut waits) => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            self.set_state("running");
        };
        self.daemon.sessions.unregister(self.session);
        tracing::info!("forwarder {} {end}", self.def.id);
        self.forwarders.finished(self.def.id, &self.status, &end);
    }

    fn record_failure(&self, why: &str) {
        let mut s = lock(&self.status);
        s.failures += 1;
        s.last_error = Some(why.to_string());
    }

    /// Takes one message of `queue` and forwards it; `Empty` when there was none.
    async fn forward_one(&mut self, queue: &str) -> QmResult<Step> {
        let owner = Owner {
            session: self.session,
            pid: Some(std::process::id()),
            program: self.program.clone(),
        };
        let limit = Duration::from_secs(u64::from(self.def.transaction_timeout));
        let service = self.forwarders.service(queue);
        // A worker is borrowed before the message is taken: one that cannot start costs
        // no message a retry.
        let lease = match service.as_ref().filter(|d| d.workers().is_some()) {
            Some(def) => {
                // Every worker may be busy: a shutdown does not wait for one to come back.
                let mut stop = self.stop.clone();
                tokio::select! {
                    lease = self.lease(queue, def) => Some(lease?),
                    _ = stop.wait_for(|s| *s) => return Ok(Step::Empty),
                }
            }
            None => None,
        };
        let txid = match self.engine.begin(owner, Some(limit)) {
            Ok(txid) => txid,
            Err(e) => {
                if let Some(lease) = lease {
                    lease.release();
                }
                return Err(e);
            }
        };
        let started = std::time::Instant::now();
        let msg = match self.engine.dequeue(Some(txid), queue, &DequeueCtl::default()).await {
            Ok(m) => m,
            Err(e) => {
                if let Some(lease) = lease {
                    lease.release();
                }
                let _ = self.engine.abort(txid, "the forwarder found nothing to forward").await;
                // A queue switched off for dequeues has nothing to give, like an empty one.
                return match e.diagnostic {
                    Diagnostic::NoMsg | Diagnostic::DequeueDisabled => Ok(Step::Empty),
                    _ => Err(e),
                };
            }
        };
        let left = limit.saturating_sub(started.elapsed());
        let called = match lease {
            Some(lease) => {
                // The service's own timeout when it is the shorter, else what is left of -t.
                let own = service.as_ref().and_then(|d| d.workers()).and_then(|w| w.timeout);
                let (wait, shown) = match own {
                    Some(t) if t <= left => (t, format!("{} (the service's timeout)", seconds(t))),
                    _ => (left, format!("{} (the forwarder's -t)", seconds(limit))),
                };
                Pool::call(lease, &msg, wait, &shown).await
            }
            None => {
                service::call(
                    &self.daemon.command_env,
                    queue,
                    service.as_ref(),
                    &self.def.qspace,
                    &msg,
                    limit,
                    left,
                )
                .await
            }
        };
        if let Called::Success(r) | Called::Failure { reply: r, .. } = &called
            && let Some(warning) = &r.warning
        {
            tracing::warn!("forwarder {}: {warning}", self.def.id);
            lock(&self.status).last_error = Some(warning.clone());
        }
        match called {
            Called::Success(reply) => {
                let to = msg.reply_queue.as_deref();
                if let Err(e) = self.reply(txid, &msg, "reply", to, reply).await {
                    let _ = self.engine.abort(txid, "the reply could not be enqueued").await;
                    return Err(e);
                }
                self.engine.commit(txid).await?;
                lock(&self.status).forwarded += 1;
            }
            Called::Failure { reply, why } => {
                self.record_failure(&why);
                if self.def.delete_on_failure && !reply.body.is_empty() {
                    self.fail_with_reply(txid, queue, &msg, reply).await?;
                } else {
                    let reason = format!("the forwarder's service failed: {why}");
                    // A transaction that already timed out was rolled back all the same: the
                    // failure is recorded once, with the service's reason.
                    if let Err(e) = self.engine.abort(txid, &reason).await {
                        tracing::debug!("forwarder {}: {}", self.def.id, e.message);
                    }
                }
            }
        }
        Ok(Step::Done)
    }

    /// Borrows a worker of `queue`'s service.
    async fn lease(&self, queue: &str, def: &ServiceDef) -> QmResult<Lease> {
        let pool = self.forwarders.pool(&self.daemon.command_env, &self.def.qspace, queue, def)?;
        pool.acquire().await.map_err(QmError::system)
    }

    /// Enqueues a reply (in the transaction) on `to`, if that queue exists.
    async fn reply(
        &self,
        txid: u64,
        msg: &Message,
        which: &str,
        to: Option<&str>,
        reply: service::Reply,
    ) -> QmResult<()> {
        // The sender may have named the reply or failure queue by an alias.
        let named = to.and_then(|q| self.engine.canonical(q));
        let Some(to) = named.as_deref() else {
            if let Some(q) = to {
                tracing::warn!(
                    "forwarder {}: {which} queue {q} does not exist; reply dropped",
                    self.def.id
                );
            }
            return Ok(());
        };
        let ctl = EnqueueCtl {
            priority: Some(msg.priority),
            corrid: msg.corrid.clone(),
            delivery: msg.reply_qos,
            urcode: reply.urcode,
            ..EnqueueCtl::default()
        };
        self.engine.enqueue(Some(txid), to, &ctl, reply.body).await.map(|_| ())
    }

    /// `-d`: the failure reply goes to the failure queue and the request is deleted — or,
    /// when this failure uses up its retries, moved to the error queue.
    async fn fail_with_reply(
        &self,
        txid: u64,
        queue: &str,
        msg: &Message,
        reply: service::Reply,
    ) -> QmResult<()> {
        let to = msg.failure_queue.as_deref();
        if let Err(e) = self.reply(txid, msg, "failure", to, reply).await {
            self.engine.abort(txid, "the failure reply could not be enqueued").await?;
            return Err(e);
        }
        let limit = self.engine.queue_def(queue).map_or(0, |d| d.retries);
        if msg.retries + 1 > limit {
            self.engine.move_to_error_at_commit(txid, &msg.msgid)?;
        }
        self.engine.commit(txid).await
    }
}
