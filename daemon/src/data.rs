//! Data-plane requests of one session: enqueue, dequeue, transactions, and message
//! administration. They run on the async side: the engine's lock is held only briefly and
//! durable writes are awaited without holding a thread.

use crate::engine::Engine;
use crate::engine::admin::Change;
use crate::engine::txn::Owner;
use crate::state::Daemon;
use qm_common::message::MsgId;
use qm_common::protocol::{DataRequest, MessageRequest, Reply, Request};
use qm_common::why::{IdleForwarder, Reason, Why};
use qm_common::{Diagnostic, QmError, QmResult};
use std::sync::Arc;
use std::time::Duration;

/// What a session keeps between data requests.
pub struct SessionData {
    /// The queue space it works on, while that stays loaded.
    engine: Option<Arc<Engine>>,
    /// Its open transaction.
    txn: Option<(Arc<Engine>, u64)>,
    pub pid: Option<u32>,
    pub program: String,
    /// Who the session speaks for.
    pub peer: crate::session::Peer,
    /// Turns true when the client goes away during a waiting dequeue.
    pub gone: Option<tokio::sync::watch::Receiver<bool>>,
    /// The messages `qexport -x` sent and holds until its stream is written.
    moving: Option<(Arc<Engine>, Vec<u64>)>,
    /// Warnings for the reply to the request in hand.
    pub notes: Vec<qm_common::protocol::Note>,
    /// Where a change to many messages tells how far it has come, while the session relays
    /// it to the client.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<qm_common::protocol::Progress>>,
}

impl SessionData {
    pub fn new(pid: Option<u32>, program: String, peer: crate::session::Peer) -> Self {
        SessionData {
            engine: None,
            txn: None,
            pid,
            program,
            peer,
            gone: None,
            moving: None,
            notes: Vec::new(),
            progress: None,
        }
    }

    /// Forgets the cached queue space (after an admin request may have changed it).
    pub fn forget(&mut self) {
        self.engine = None;
    }

    /// Rolls back the open transaction of a session that ends.
    pub async fn end(&mut self) {
        if let Some((engine, id)) = self.txn.take() {
            let _ = engine.abort(id, "its client disconnected").await;
        }
        // A move whose stream was not written: its messages stay.
        if let Some((engine, taken)) = self.moving.take() {
            let _ = engine.end_move(taken, false).await;
        }
    }
}

/// The engine of `qspace` (or of the session's open queue space), attaching to it.
async fn attach(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    qspace: Option<String>,
) -> QmResult<Arc<Engine>> {
    if let Some(e) = &sd.engine
        && e.alive()
        && qspace.as_ref().is_none_or(|q| *q == e.name)
    {
        return Ok(e.clone());
    }
    let d = daemon.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let mut store = d.store();
        let name = match qspace {
            Some(q) => q,
            None => d.sessions.open_of(session, store.generation).ok_or_else(|| {
                QmError::new(
                    Diagnostic::NotOpen,
                    "No queue space is open: name one, or qopen it first",
                )
            })?,
        };
        if d.sessions.open_of(session, store.generation).as_deref() == Some(name.as_str())
            && let Some(engine) = store.engine(&name)
        {
            return Ok(engine);
        }
        d.attach(&mut store, session, &name)
    })
    .await
    .map_err(|e| QmError::system(format!("attaching failed: {e}")))??;
    sd.engine = Some(engine.clone());
    Ok(engine)
}

/// The engine and transaction a data call runs in.
async fn target(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    qspace: Option<String>,
) -> QmResult<(Arc<Engine>, Option<u64>)> {
    if let Some((engine, id)) = &sd.txn {
        if let Some(q) = qspace.filter(|q| *q != engine.name) {
            return Err(QmError::inval(format!(
                "Transaction {id} is on queue space {}; it cannot include queue space {q}",
                engine.name
            )));
        }
        return Ok((engine.clone(), Some(*id)));
    }
    Ok((attach(daemon, session, sd, qspace).await?, None))
}

/// Serves a data or message-administration request, if the session's principal may make
/// it (every face comes through here).
pub async fn handle(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    request: Request,
) -> QmResult<Reply> {
    // A dequeue that waits for a message is not work in hand while it waits.
    let waits = match &request {
        Request::Data(DataRequest::Dequeue { ctl, .. }) => ctl.wait_ms.is_some(),
        Request::Data(DataRequest::Enqueue { ctl, .. }) => ctl.wait_ms.is_some(),
        _ => false,
    };
    let _busy = (!waits).then(crate::engine::writer::Busy::enter);
    let mut request = request;
    name_queues(daemon, session, sd, &mut request).await;
    check_rights(daemon, session, sd, &request).await?;
    match request {
        Request::Data(r) => data(daemon, session, sd, r).await,
        Request::Message(r) => message(daemon, session, sd, r).await,
        _ => Err(QmError::new(Diagnostic::Proto, "not a data request")),
    }
}

/// Puts each queue's own name in place of an alias in `request`, so that rights and the
/// request itself see the queue. A name that is neither stays, to be refused as it is.
async fn name_queues(daemon: &Arc<Daemon>, session: u64, sd: &SessionData, request: &mut Request) {
    let (named, names) = request.queue_names_mut();
    if names.is_empty() {
        return;
    }
    let space = match (named, &sd.txn) {
        (Some(q), _) => q.to_string(),
        (None, Some((engine, _))) => engine.name.clone(),
        (None, None) => match daemon.sessions.open_name(session) {
            Some(q) => q,
            None => return,
        },
    };
    // The session's own engine answers without the store's lock.
    let cached = [sd.txn.as_ref().map(|(e, _)| e), sd.engine.as_ref()]
        .into_iter()
        .flatten()
        .find(|e| e.alive() && e.name == space)
        .cloned();
    if cached.as_ref().is_some_and(|e| !e.may_alias()) {
        return;
    }
    let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let found: Vec<Option<String>> = match cached {
        Some(engine) => wanted.iter().map(|n| engine.canonical(n)).collect(),
        None => {
            let d = daemon.clone();
            tokio::task::spawn_blocking(move || d.canonical_queues(&space, &wanted))
                .await
                .unwrap_or_default()
        }
    };
    for (name, found) in names.into_iter().zip(found) {
        if let Some(found) = found {
            *name = found;
        }
    }
}

/// Refuses `request` unless the session's principal may make it.
async fn check_rights(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &SessionData,
    request: &Request,
) -> QmResult<()> {
    if daemon.rights.always_admin(&sd.peer.principal) {
        return Ok(());
    }
    // The queue space a request that names none works on.
    let space = match &sd.txn {
        Some((engine, _)) => Some(engine.name.clone()),
        None => daemon.sessions.open_name(session),
    };
    crate::rights::check_async(daemon, &sd.peer.principal, request, space.as_deref()).await
}

/// Messages an export sends at most in one frame, and bytes of bodies.
const EXPORT_BATCH: usize = 1000;
const EXPORT_BATCH_BYTES: usize = 4 << 20;

/// `qexport`: sends the open queue space's queue definitions and messages to `out` in
/// batches (see [`crate::engine::export`]); how many messages.
pub async fn export(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    request: Request,
    out: tokio::sync::mpsc::Sender<qm_common::export::ExportBatch>,
) -> QmResult<u64> {
    use crate::engine::export::Selection;
    use qm_common::export::ExportBatch;
    let mut request = request;
    name_queues(daemon, session, sd, &mut request).await;
    check_rights(daemon, session, sd, &request).await?;
    let Request::Message(MessageRequest::Export { queue, enqueued, take }) = request else {
        return Err(QmError::new(Diagnostic::Proto, "not an export"));
    };
    if take && sd.moving.is_some() {
        return Err(QmError::in_use(
            "this session's last qexport -x has not ended: its messages are still held",
        ));
    }
    let engine = attach(daemon, session, sd, None).await?;
    let selection = Selection { queue, enqueued };
    let queues = engine.export_queues(&selection)?;
    let closed = || QmError::new(Diagnostic::Os, "the client went away during the export");
    out.send(ExportBatch { queues, messages: Vec::new() }).await.map_err(|_| closed())?;
    let mover = engine.clone();
    let (count, taken) = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let (mut bytes, mut count) = (0, 0u64);
        let mut sink = |m: qm_common::export::ExportedMessage| {
            bytes += m.body.len();
            count += 1;
            batch.push(m);
            if batch.len() >= EXPORT_BATCH || bytes >= EXPORT_BATCH_BYTES {
                let messages = std::mem::take(&mut batch);
                bytes = 0;
                out.blocking_send(ExportBatch { queues: Vec::new(), messages })
                    .map_err(|_| closed())?;
            }
            Ok(())
        };
        let taken = match take {
            true => engine.export_locked(&selection, &mut sink)?,
            false => {
                engine.export(&selection, &mut sink)?;
                Vec::new()
            }
        };
        if !batch.is_empty() {
            let last = ExportBatch { queues: Vec::new(), messages: batch };
            if out.blocking_send(last).is_err() {
                // Not all of it reached the client: what a move locked goes back.
                engine.give_back(&taken);
                return Err(closed());
            }
        }
        Ok((count, taken))
    })
    .await
    .map_err(|e| QmError::system(format!("the export failed: {e}")))??;
    if take {
        sd.moving = Some((mover, taken));
    }
    Ok(count)
}

/// Ends this session's `qexport -x` (see [`MessageRequest::EndExport`]).
async fn end_export(sd: &mut SessionData, commit: bool) -> QmResult<Reply> {
    let (engine, taken) = sd.moving.take().ok_or_else(|| {
        QmError::new(Diagnostic::Proto, "no qexport -x of this session waits to end")
    })?;
    Ok(Reply::Count(engine.end_move(taken, commit).await?))
}

async fn data(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    request: DataRequest,
) -> QmResult<Reply> {
    match request {
        DataRequest::Begin { qspace, timeout_secs } => {
            if let Some((_, id)) = &sd.txn {
                return Err(QmError::new(
                    Diagnostic::Proto,
                    format!("Transaction {id} is open already; commit or abort it first"),
                ));
            }
            if let Some(t) = timeout_secs.filter(|t| !(1..=86_400).contains(t)) {
                return Err(QmError::invalid(
                    "Transaction time-out",
                    t,
                    "it must be 1 to 86400 seconds (none: the daemon's default)",
                ));
            }
            let engine = attach(daemon, session, sd, qspace).await?;
            let owner = Owner { session, pid: sd.pid, program: sd.program.clone() };
            let id =
                engine.begin(owner, timeout_secs.map(|s| Duration::from_secs(u64::from(s))))?;
            sd.txn = Some((engine, id));
            Ok(Reply::Transaction(id))
        }
        DataRequest::Commit => {
            let (engine, id) = sd.txn.take().ok_or_else(no_txn)?;
            engine.commit(id).await.map(|()| Reply::Unit)
        }
        DataRequest::Abort => {
            let (engine, id) = sd.txn.take().ok_or_else(no_txn)?;
            match engine.abort(id, "it was rolled back by its client").await {
                Err(e) if e.message.contains("committed") => Err(e),
                _ => Ok(Reply::Unit),
            }
        }
        DataRequest::Enqueue { qspace, queue, ctl, body } => {
            let (engine, txid) = target(daemon, session, sd, qspace).await?;
            let gone = sd.gone.take();
            let done = engine.enqueue_noted(txid, &queue, &ctl, body, gone).await?;
            if done.downgraded {
                sd.notes.push(qm_common::protocol::Note::warn(format!(
                    "queue {queue} is volatile: message {} is kept in memory only and is lost when qmd stops",
                    done.msgid
                )));
            }
            Ok(Reply::Enqueued(done.msgid))
        }
        DataRequest::Dequeue { qspace, queue, ctl } => {
            let (engine, txid) = target(daemon, session, sd, qspace).await?;
            let gone = sd.gone.take();
            let turn = daemon.net_policy().round_robin.then_some(sd.program.as_str());
            engine
                .dequeue_until(txid, &queue, &ctl, gone, turn)
                .await
                .map(|m| Reply::Message(Box::new(m)))
        }
    }
}

/// `qwhy`: the engine's reasons, `browse` on the message's queue permitting, and whether
/// a forwarder would take it.
async fn why(
    daemon: &Arc<Daemon>,
    sd: &SessionData,
    engine: &Engine,
    msgid: MsgId,
) -> QmResult<Reply> {
    let found = engine.why(&msgid)?;
    crate::rights::check_browse(daemon, &sd.peer.principal, &engine.name, &found.queue).await?;
    let mut reasons = found.reasons;
    if found.could_move {
        reasons.extend(forwarder_reason(daemon, &engine.name, &found.queue));
    }
    let why = Why { msgid, qspace: engine.name.clone(), queue: found.queue, reasons };
    Ok(Reply::Why(Box::new(why)))
}

/// That no forwarder runs for `queue`, naming the configured ones that would serve it.
fn forwarder_reason(daemon: &Daemon, qspace: &str, queue: &str) -> Option<Reason> {
    let serving: Vec<_> = daemon
        .forwarders
        .list()
        .into_iter()
        .filter(|f| f.qspace == qspace && f.queues.iter().any(|q| q == queue))
        .collect();
    // `stopping` finishes its current message and takes no other.
    if serving.iter().any(|f| matches!(f.state.as_str(), "running" | "idle")) {
        return None;
    }
    let configured =
        serving.into_iter().map(|f| IdleForwarder { id: f.id, state: f.state }).collect();
    Some(Reason::NoForwarder { queue: queue.to_string(), configured })
}

fn no_txn() -> QmError {
    QmError::new(Diagnostic::Proto, "No transaction is open (begin one first)")
}

async fn message(
    daemon: &Arc<Daemon>,
    session: u64,
    sd: &mut SessionData,
    request: MessageRequest,
) -> QmResult<Reply> {
    let engine = attach(daemon, session, sd, None).await?;
    let (queue, criteria, change) = match request {
        MessageRequest::List { queue, criteria } => {
            return engine.list(&queue, &criteria).map(Reply::Messages);
        }
        MessageRequest::Transactions => return Ok(Reply::Transactions(engine.transactions())),
        MessageRequest::Complete { id, commit } => {
            return engine.complete(id, commit).await.map(|()| Reply::Unit);
        }
        MessageRequest::Why { msgid } => return why(daemon, sd, &engine, msgid).await,
        MessageRequest::Import { messages } => {
            let done = engine.import(messages).await?;
            let (added, skipped, renumbered) = (done.added, done.skipped, done.renumbered);
            return Ok(Reply::Imported { added, skipped, renumbered });
        }
        MessageRequest::Export { .. } => {
            return Err(QmError::new(Diagnostic::Proto, "an export is answered as a stream"));
        }
        MessageRequest::EndExport { commit } => return end_export(sd, commit).await,
        MessageRequest::Delete { queue, criteria } => (queue, criteria, Change::Delete),
        MessageRequest::ChangePriority { queue, criteria, priority } => {
            (queue, criteria, Change::Priority(priority))
        }
        MessageRequest::ChangeQueue { queue, criteria, new_queue } => {
            (queue, criteria, Change::Queue(new_queue))
        }
        MessageRequest::ChangeTime { queue, criteria, time } => {
            (queue, criteria, Change::Time(time))
        }
        MessageRequest::ChangeExpiration { queue, criteria, expiry } => {
            (queue, criteria, Change::Expiration(expiry))
        }
    };
    let progress = sd.progress.clone();
    let tell = move |p| {
        if let Some(tx) = &progress {
            let _ = tx.send(p);
        }
    };
    let (changed, held) = engine.change(&queue, &criteria, change, &tell).await?;
    Ok(Reply::Changed { changed, held })
}
