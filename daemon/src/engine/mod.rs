//! The queue engine of one loaded queue space: enqueue, dequeue, transactions, retries,
//! expiry, capacity, and the administration of messages.
//!
//! Committed persistent messages live in redb, in their queues' order ([`stored`]); memory
//! holds the counts and the messages in motion ([`index::Index`]), under one lock per queue
//! space. A change that must reach the disk is sent to the file's writer
//! ([`writer::Writer`]) while the lock is held, so writes land in the order the changes were
//! made, and is made visible only once the writer says it is durable; a message leaves
//! memory only once redb holds it ([`deferred`]). Nothing uncommitted is ever written, so
//! recovery is loading the totals of what is on disk.

pub mod admin;
pub mod applier;
pub mod attrs;
pub mod background;
pub mod deferred;
pub mod export;
pub mod forwarding;
pub mod index;
mod pick;
pub mod record;
pub mod segments;
pub mod stats;
pub mod stored;
pub mod thresholds;
pub mod timers;
mod turns;
pub mod txn;
pub mod verify;
pub mod why;
pub mod writer;

/// A hash map of the engine's own hot path, keyed by what qmd itself assigned or an
/// administrator created (message and transaction numbers, queue and queue space names):
/// foldhash, seeded per process, in place of the standard SipHash, which took about 3 % of
/// qmd's processor time at 64 clients (BENCHMARKS.md). Keys a client chooses (correlation
/// ids) stay on the standard hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set of the same keys as [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use crate::storage::handle::DbFile;
use crate::storage::tables::QueueSpaceTables;
use index::{Entry, EntryState, Index};
use qm_common::device::message_blocks;
use qm_common::message::{
    BODY_MAX, DEFAULT_PRIORITY, DequeueCtl, EnqueueCtl, Expiry, Message, MsgId, Placement, Qos,
    Select, TimeSpec,
};
use qm_common::queue::{DefaultExpiration, QueueDef, QueueUsage};
use qm_common::{Diagnostic, QmError, QmResult};
use record::{MessageMeta, OrderKey, msgid_of, now_us, order_key, secs, seq_of};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use txn::{Ended, Txn};
use writer::{WriteOp, Writer};

/// How far the stored msgid high-water mark runs ahead of the msgids handed out.
const SEQ_RESERVE: u64 = 4096;

/// The limits of a queue space, from its parameters.
#[derive(Debug, Clone)]
pub struct Limits {
    pub page_size: u32,
    /// Pages messages may use: the space's pages minus its overhead.
    pub usable_blocks: u64,
    pub messages: u64,
    pub np_bytes: u64,
    pub transactions: usize,
    /// Waiting dequeues at once: processes plus `-A` actions.
    pub waiters: u32,
    pub error_queue: String,
    pub txn_timeout: Duration,
    /// All pages of the queue space, the base of `%` limits.
    pub total_pages: u64,
    /// Where threshold commands run.
    pub commands: Arc<crate::threshold::CommandEnv>,
}

/// Everything under the queue space's lock.
pub struct Inner {
    pub index: Index,
    pub txns: FastMap<u64, Txn>,
    pub ended: Ended,
    pub next_txid: u64,
    pub waiters: u32,
    /// Threshold firings, oldest first, with their keys on disk.
    pub firings: std::collections::VecDeque<(u64, qm_common::protocol::FiringRecord)>,
    pub next_firing: u64,
    /// The msgid high-water mark known to be on disk: msgids below it are handed out
    /// without waiting (see [`Engine::take_seq`]).
    pub seq_durable: u64,
    /// Lines of waiting dequeues served in turn (`qmd -r`).
    pub turns: turns::Turns,
}

/// The queue space's lock; when released after a change of usage, thresholds are checked.
pub struct Guard<'a> {
    engine: &'a Engine,
    inner: MutexGuard<'a, Inner>,
}

impl std::ops::Deref for Guard<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.inner.index.dirty.is_empty() {
            self.engine.evaluate_thresholds(&mut self.inner);
        }
    }
}

/// A loaded queue space.
pub struct Engine {
    pub name: String,
    pub tables: Arc<QueueSpaceTables>,
    db: Arc<DbFile>,
    writer: Arc<Writer>,
    pub limits: Limits,
    inner: Mutex<Inner>,
    alive: AtomicBool,
    /// Whether a queue of it was ever given an alias since it was loaded: until then a
    /// request's queue names are its queues' own, and naming them takes no lock.
    aliased: AtomicBool,
    /// Wakes the timer task when an earlier deadline appears.
    timer_wake: Arc<Notify>,
    /// Itself, for tasks that must not keep it loaded.
    weak: Weak<Engine>,
}

pub fn bad_queue(queue: &str, qspace: &str) -> QmError {
    QmError::new(
        Diagnostic::BadQueue,
        format!("Queue {queue} does not exist in queue space {qspace}"),
    )
}

fn encode(meta: &MessageMeta) -> Vec<u8> {
    qm_common::frame::encode_sized(meta, 0).unwrap_or_default()
}

impl Engine {
    /// Loads a queue space: its queues and every committed message.
    pub fn load(
        name: &str,
        db: Arc<DbFile>,
        writer: Arc<Writer>,
        defs: Vec<QueueDef>,
        limits: Limits,
    ) -> QmResult<Arc<Engine>> {
        let tables = Arc::new(QueueSpaceTables::new(name));
        let recovered = txn::recover(&db, &tables, defs, limits.page_size)?;
        if recovered.mark_indexed {
            // Applied before any later write of this queue space; a failure (a full disk)
            // leaves it for the next load to try.
            drop(writer.send(vec![WriteOp::State {
                tables: tables.clone(),
                key: stored::INDEXED.into(),
                value: vec![stored::INDEXED_VERSION],
            }]));
        }
        let seq_durable = recovered.index.reserved;
        let mut index = recovered.index;
        let aliased = index.queues.values().any(|q| !q.def.attrs.aliases.is_empty());
        (index.applied, index.horizon) = (db.applied(), db.horizon());
        let engine = Arc::new_cyclic(|weak| Engine {
            name: name.to_string(),
            tables,
            db,
            writer,
            limits,
            inner: Mutex::new(Inner {
                index,
                txns: Default::default(),
                ended: Ended::default(),
                next_txid: 1,
                waiters: 0,
                next_firing: recovered.firings.back().map_or(1, |(n, _)| n + 1),
                firings: recovered.firings,
                seq_durable,
                turns: Default::default(),
            }),
            alive: AtomicBool::new(true),
            aliased: AtomicBool::new(aliased),
            timer_wake: Arc::new(Notify::new()),
            weak: weak.clone(),
        });
        timers::spawn(&engine);
        // A crossing that happened but was never recorded fires now.
        let mut inner = engine.lock();
        inner.index.dirty = inner.index.queues.keys().cloned().collect();
        drop(inner);
        Ok(engine)
    }

    pub fn timer_wake_handle(&self) -> Arc<Notify> {
        self.timer_wake.clone()
    }

    /// Takes the queue space's lock, first letting go of what redb now holds (see
    /// [`deferred`]): before any read of the disk made under it.
    pub fn lock(&self) -> Guard<'_> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let applied = self.db.applied();
        if applied != inner.index.applied || inner.index.draining() {
            inner.index.drain(applied);
        }
        // Read after the answers this lock's holder waited for: it covers their groups.
        inner.index.horizon = self.db.horizon();
        Guard { engine: self, inner }
    }

    /// False once the queue space was unloaded (ipcrm, reconfiguration, device gone).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Unloads: every open transaction ends, waiting dequeues give up.
    pub fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.txns.keys().copied().collect();
        for id in ids {
            if let Some(txn) = inner.txns.remove(&id) {
                txn.ended.notify_waiters();
            }
            inner.ended.record(id, "the queue space was closed (ipcrm or reconfiguration)");
        }
        for q in inner.index.queues.values() {
            q.notify.notify_waiters();
        }
        drop(inner);
        // Threshold commands go on; what becomes of them is no longer seen from here.
        drop(self.mark_running(qm_common::protocol::FIRING_UNLOADED));
        self.timer_wake.notify_one();
    }

    fn blocks(&self, meta: &MessageMeta) -> u64 {
        if meta.persistent { message_blocks(meta.body_len, self.limits.page_size) } else { 0 }
    }

    pub fn usage(&self, queue: &str) -> QueueUsage {
        self.lock().index.queues.get(queue).map(|q| q.usage.clone()).unwrap_or_default()
    }

    pub fn total_usage(&self) -> QueueUsage {
        let inner = self.lock();
        let mut total = QueueUsage::default();
        for q in inner.index.queues.values() {
            total.add(&q.usage);
        }
        total
    }

    /// Adds or replaces a queue definition (qcreate, qchange).
    pub fn define_queue(&self, def: QueueDef) {
        let mut inner = self.lock();
        if !def.attrs.aliases.is_empty() {
            self.aliased.store(true, Ordering::Release);
        }
        inner.index.dirty.insert(def.name.clone());
        match inner.index.queues.get_mut(&def.name) {
            Some(q) => q.def = def,
            None => {
                inner.index.queues.insert(def.name.clone(), index::QueueState::new(def));
            }
        }
    }

    /// Sends writes while the lock is held, so they land in the order of the changes.
    fn send(&self, ops: Vec<WriteOp>) -> writer::Pending {
        self.writer.send(ops)
    }

    fn seq_state(&self, next: u64) -> WriteOp {
        WriteOp::State {
            tables: self.tables.clone(),
            key: "next_seq".into(),
            value: next.to_be_bytes().to_vec(),
        }
    }

    fn put(&self, seq: u64, meta: &MessageMeta, body: Option<Arc<[u8]>>) -> WriteOp {
        WriteOp::Put {
            tables: self.tables.clone(),
            seq,
            meta: encode(meta),
            body,
            body_len: meta.body_len,
            blocks: self.blocks(meta),
            waiting: meta.available_us > now_us(),
        }
    }

    /// The removal of message `seq`, held in memory as `entry`.
    fn delete(&self, seq: u64, entry: &Entry) -> WriteOp {
        let blocks = self.blocks(&entry.meta);
        WriteOp::Delete { tables: self.tables.clone(), seq, blocks, body_at: entry.body_at }
    }

    /// Runs `then` under the lock once `pending` is answered (with whether it succeeded):
    /// in a task, as the caller holds the lock.
    fn after(
        &self,
        pending: writer::Pending,
        then: impl FnOnce(&Engine, &mut Inner, bool) + Send + 'static,
    ) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let weak = self.weak.clone();
        handle.spawn(async move {
            let ok = pending.wait().await.is_ok();
            if let Some(engine) = weak.upgrade() {
                let mut inner = engine.lock();
                then(&engine, &mut inner, ok);
            }
        });
    }

    fn check_capacity(&self, inner: &Inner, persistent: bool, len: u64) -> QmResult<()> {
        let cap = inner.index.capacity;
        if cap.messages + 1 > self.limits.messages {
            return Err(QmError::no_space(format!(
                "Queue space {} is full: it holds {}, its limit (qspacechange can raise it)",
                self.name,
                qm_common::plural::count(self.limits.messages, "message", "messages")
            )));
        }
        if persistent {
            let need = message_blocks(len, self.limits.page_size);
            if cap.blocks + need > self.limits.usable_blocks {
                return Err(QmError::no_space(format!(
                    "Queue space {} is full: {} of {} blocks used, the message needs {need} (qaddext adds pages)",
                    self.name, cap.blocks, self.limits.usable_blocks
                )));
            }
        } else if self.limits.np_bytes == 0 {
            return Err(QmError::no_space(format!(
                "Queue space {} has no memory for non-persistent messages (qspacechange -n sets it)",
                self.name
            )));
        } else if cap.np_bytes + len > self.limits.np_bytes {
            return Err(QmError::no_space(format!(
                "Queue space {}: non-persistent memory is full ({} of {} bytes used, the message needs {len}; set it with qspacechange -n)",
                self.name, cap.np_bytes, self.limits.np_bytes
            )));
        }
        Ok(())
    }

    /// Builds a new message's record from its controls and its queue's defaults.
    fn new_meta(
        &self,
        inner: &mut Inner,
        queue: &str,
        ctl: &EnqueueCtl,
        len: u64,
        seq: u64,
        now: u64,
    ) -> QmResult<MessageMeta> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let def = &q.def;
        let available = match ctl.available {
            Some(TimeSpec::Absolute(s)) => s * 1_000_000,
            Some(TimeSpec::Relative(s)) => now + s * 1_000_000,
            None => now,
        };
        let expires = match ctl.expiration {
            Some(Expiry::Absolute(s)) => Some(s * 1_000_000),
            Some(Expiry::Relative(s)) => Some(now + s * 1_000_000),
            Some(Expiry::Never) => None,
            None => match def.expiration {
                DefaultExpiration::None => None,
                DefaultExpiration::Relative(s) => Some(now + s * 1_000_000),
            },
        };
        let mut meta = MessageMeta {
            queue: queue.to_string(),
            corrid: ctl.corrid.clone(),
            priority: ctl.priority.unwrap_or(DEFAULT_PRIORITY),
            enqueued_us: now,
            available_us: available,
            order_time_us: available,
            expires_us: expires,
            retries: 0,
            persistent: false,
            reply_queue: ctl.reply_queue.clone(),
            failure_queue: ctl.failure_queue.clone(),
            reply_qos: ctl.reply_qos,
            urcode: ctl.urcode,
            body_len: len,
            origin_queue: None,
            key: OrderKey { top: 0, parts: [0; 3], tie: 0, sub: 0, seq },
        };
        meta.key = self.placement_key(inner, queue, &ctl.placement, &meta, seq)?;
        Ok(meta)
    }

    fn placement_key(
        &self,
        inner: &mut Inner,
        queue: &str,
        placement: &Placement,
        meta: &MessageMeta,
        seq: u64,
    ) -> QmResult<OrderKey> {
        let q = inner.index.queues.get_mut(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        match placement {
            Placement::Ordered => Ok(order_key(&q.def.order, meta, seq)),
            Placement::Top if !q.def.out_of_order.top => Err(QmError::inval(format!(
                "Queue {queue} does not allow top-of-queue enqueuing (its out-of-order setting is {})",
                q.def.out_of_order
            ))),
            Placement::Top => {
                q.tops += 1;
                Ok(OrderKey { top: -q.tops, parts: [0; 3], tie: 0, sub: 0, seq })
            }
            Placement::Before(_) if !q.def.out_of_order.msgid => Err(QmError::inval(format!(
                "Queue {queue} does not allow enqueuing before a message id (its out-of-order setting is {})",
                q.def.out_of_order
            ))),
            Placement::Before(target) => {
                let mut disk = self.disk_for(inner, queue);
                let found = match seq_of(target) {
                    Some(s) => self.lookup(inner, &mut disk, s)?,
                    None => None,
                };
                let (t, _) = found.filter(|(m, _)| m.queue == queue).ok_or_else(|| {
                    QmError::new(
                        Diagnostic::BadMsgid,
                        format!("Message {target} is not on queue {queue}"),
                    )
                })?;
                Ok(OrderKey { sub: t.key.sub - 1, seq, ..t.key })
            }
        }
    }

    fn check_txn(&self, inner: &Inner, txid: Option<u64>) -> QmResult<()> {
        match txid {
            Some(id) if !inner.txns.contains_key(&id) => Err(inner.ended.error(id)),
            _ => Ok(()),
        }
    }

    /// Enqueues a message; without a transaction it is durable when this returns.
    pub async fn enqueue(
        &self,
        txid: Option<u64>,
        queue: &str,
        ctl: &EnqueueCtl,
        body: Vec<u8>,
    ) -> QmResult<MsgId> {
        self.enqueue_noted(txid, queue, ctl, body, None).await.map(|e| e.msgid)
    }

    /// Enqueues a message, waiting for room on a full queue if `ctl` asks to (giving up
    /// once `cancel` turns true: the client went away); says whether the message was kept
    /// in memory although it asked for disk (a volatile queue).
    pub async fn enqueue_noted(
        &self,
        txid: Option<u64>,
        queue: &str,
        ctl: &EnqueueCtl,
        body: Vec<u8>,
        mut cancel: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> QmResult<Enqueued> {
        ctl.validate()?;
        if body.len() > BODY_MAX {
            return Err(QmError::inval(format!(
                "Message body: {} bytes is over the limit of {BODY_MAX} bytes",
                body.len()
            )));
        }
        let len = body.len() as u64;
        let deadline =
            ctl.wait_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut line = Line { engine: self, queue, ticket: None };
        let (started, downgraded) = loop {
            let room = {
                let mut inner = self.lock();
                self.check_txn(&inner, txid)?;
                let admitted = self.admit(&inner, queue, ctl, len)?;
                match self.claim_room(&mut inner, queue, &mut line.ticket, deadline.is_some())? {
                    None => {
                        let started = self.start_enqueue(
                            &mut inner,
                            txid,
                            queue,
                            ctl,
                            body,
                            admitted.persistent,
                        )?;
                        break (started, admitted.downgraded);
                    }
                    // Armed under the lock: room made from now on wakes it.
                    Some(room) => {
                        let mut notified = Box::pin(room.notified_owned());
                        notified.as_mut().enable();
                        notified
                    }
                }
            };
            let cancelled = async {
                match cancel.as_mut() {
                    Some(c) => {
                        let _ = c.wait_for(|gone| *gone).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let deadline = deadline.unwrap_or_else(tokio::time::Instant::now);
            let woken = async {
                tokio::select! {
                    _ = room => false,
                    _ = cancelled => true,
                }
            };
            match tokio::time::timeout_at(deadline, woken).await {
                Ok(false) => {}
                Ok(true) => {
                    return Err(QmError::new(Diagnostic::Os, "the client went away while waiting"));
                }
                Err(_) => {
                    let max =
                        self.lock().index.queues.get(queue).and_then(|q| q.def.attrs.max_messages);
                    return Err(attrs::full(queue, max.unwrap_or(0), ctl.wait_ms));
                }
            }
        };
        drop(line);
        let msgid = match started {
            Started::Done(msgid) => msgid,
            Started::Pending { seq, placed, mark, pending } => {
                self.settle_enqueue(txid, seq, placed, mark, pending).await?
            }
        };
        Ok(Enqueued { msgid, downgraded })
    }

    /// The part of an enqueue made under the lock: the message placed and its write sent.
    fn start_enqueue(
        &self,
        inner: &mut Inner,
        txid: Option<u64>,
        queue: &str,
        ctl: &EnqueueCtl,
        body: Vec<u8>,
        persistent: bool,
    ) -> QmResult<Started> {
        let now = now_us();
        let len = body.len() as u64;
        let seq = inner.index.next_seq;
        let mut meta = self.new_meta(inner, queue, ctl, len, seq, now)?;
        // Where it is kept is no part of its place in the order.
        meta.persistent = persistent;
        self.check_capacity(inner, meta.persistent, len)?;
        let (mark_op, mark) = self.take_seq(inner).unzip();
        // `placed`: the blocks of the message put in the index, unless it expired at once.
        let mut placed = None;
        let mut ops: Vec<WriteOp> = mark_op.into_iter().collect();
        // One that expired at once is accepted, but never stored or counted.
        if meta.expires_us.is_none_or(|e| e > now) {
            let blocks = self.blocks(&meta);
            let body: Arc<[u8]> = body.into();
            if txid.is_none() && meta.persistent {
                ops.insert(0, self.put(seq, &meta, Some(body.clone())));
            }
            let state = EntryState::Uncommitted(txid.unwrap_or(0));
            inner.index.insert(seq, Entry { meta, state, body: Some(body), body_at: None }, blocks);
            if let Some(t) = txid.and_then(|id| inner.txns.get_mut(&id)) {
                t.enqueued.push(seq);
            }
            placed = Some(blocks);
        }
        if ops.is_empty() {
            // Nothing to wait for: a non-persistent message (visible now) or one in a
            // transaction (visible at its commit).
            if txid.is_none() && placed.is_some() {
                self.finalize_enqueue(inner, seq, now);
            }
            return Ok(Started::Done(msgid_of(seq)));
        }
        Ok(Started::Pending { seq, placed, mark, pending: self.send(ops) })
    }

    /// The part of an enqueue made once its write is answered.
    async fn settle_enqueue(
        &self,
        txid: Option<u64>,
        seq: u64,
        placed: Option<u64>,
        mark: Option<u64>,
        pending: writer::Pending,
    ) -> QmResult<MsgId> {
        let result = pending.wait().await;
        let mut inner = self.lock();
        match result {
            Ok(_) => {
                if let Some(mark) = mark {
                    inner.seq_durable = inner.seq_durable.max(mark);
                }
                if txid.is_none() && placed.is_some() {
                    self.finalize_enqueue(&mut inner, seq, now_us());
                }
                Ok(msgid_of(seq))
            }
            Err(e) => {
                // Undone as if never asked: nothing of it reached the disk.
                let uncommitted = inner
                    .index
                    .msgs
                    .get(&seq)
                    .is_some_and(|entry| matches!(entry.state, EntryState::Uncommitted(_)));
                if let Some(blocks) = placed.filter(|_| uncommitted) {
                    if let Some(t) = txid.and_then(|id| inner.txns.get_mut(&id)) {
                        t.enqueued.retain(|s| *s != seq);
                    }
                    inner.index.remove(seq, blocks);
                }
                Err(e)
            }
        }
    }

    /// Takes the next sequence number (msgid). Every msgid handed out lies below the
    /// high-water mark on disk, so none is reused after a restart, whether or not its
    /// message was ever written (non-persistent, rolled back, expired at once): the mark
    /// runs [`SEQ_RESERVE`] ahead, and a msgid not yet below the mark known durable comes
    /// with the write that moves the mark (and its value), which must be durable before the
    /// msgid is handed out. A write that fails leaves the durable mark where it was, so the
    /// next msgid tries again.
    fn take_seq(&self, inner: &mut Inner) -> Option<(WriteOp, u64)> {
        inner.index.next_seq += 1;
        if inner.index.next_seq <= inner.seq_durable {
            return None;
        }
        if inner.index.next_seq > inner.index.reserved {
            inner.index.reserved = inner.index.next_seq + SEQ_RESERVE;
        }
        let mark = inner.index.reserved;
        Some((self.seq_state(mark), mark))
    }

    /// Makes a committed enqueue visible; a persistent message then lives on disk alone.
    fn finalize_enqueue(&self, inner: &mut Inner, seq: u64, now: u64) {
        // A persistent message keeps its body until it leaves memory: redb may not hold
        // it before then.
        let Some(entry) = inner.index.msgs.get(&seq) else { return };
        let meta = entry.meta.clone();
        let blocks = self.blocks(&meta);
        if let Some(c) = inner.index.counters(&meta.queue) {
            c.enqueued += 1;
        }
        self.touch(inner, &meta.queue);
        inner.index.set_state(seq, Index::settle_state(&meta, now), blocks);
        if meta.expires_us.is_some_and(|e| e <= now) {
            self.expire(inner, seq);
            return;
        }
        let timed = meta.expires_us.is_some() || meta.available_us > now;
        inner.index.evict(seq);
        // The timer task sleeps until the earliest time it knows of: only a message with a
        // time of its own can bring that forward. Woken for every enqueue, it took the
        // queue space's lock once per message under load.
        if timed {
            self.timer_wake.notify_one();
        }
    }

    /// Removes an expired message that nobody holds. A stored one stays resident, held,
    /// until its removal is durable, so that no dequeue finds it on disk meanwhile.
    fn expire(&self, inner: &mut Inner, seq: u64) {
        let Some(entry) = inner.index.msgs.get(&seq) else { return };
        match entry.state {
            EntryState::Ready | EntryState::Waiting => {
                let blocks = self.blocks(&entry.meta);
                if entry.meta.persistent {
                    let pending = self.send(vec![self.delete(seq, entry)]);
                    inner.index.set_state(seq, EntryState::Locked(index::GOING), blocks);
                    self.after(pending, move |engine, inner, ok| {
                        engine.settle_going(inner, seq, ok, |c| c.expired += 1);
                    });
                    return;
                }
                if let Some(entry) = inner.index.remove(seq, blocks)
                    && let Some(c) = inner.index.counters(&entry.meta.queue)
                {
                    c.expired += 1;
                }
            }
            // Held by a transaction: checked again when it ends.
            _ => {
                if let Some(exp) = entry.meta.expires_us {
                    inner.index.expiring.remove(&(exp, seq));
                }
            }
        }
    }

    /// A message whose removal was sent ([`index::GOING`]) goes once it is durable
    /// (`ok`), counted by `count`; otherwise it stays, free again.
    fn settle_going(
        &self,
        inner: &mut Inner,
        seq: u64,
        ok: bool,
        count: impl FnOnce(&mut index::QueueCounters),
    ) {
        let Some(entry) = inner.index.msgs.get(&seq) else { return };
        if entry.state != EntryState::Locked(index::GOING) {
            return;
        }
        let blocks = self.blocks(&entry.meta);
        if ok {
            if let Some(entry) = inner.index.remove(seq, blocks)
                && let Some(c) = inner.index.counters(&entry.meta.queue)
            {
                count(c);
            }
        } else {
            let state = Index::settle_state(&entry.meta, now_us());
            inner.index.set_state(seq, state, blocks);
        }
    }

    fn to_message(&self, seq: u64, entry: &Entry, body: Vec<u8>) -> Message {
        let m = &entry.meta;
        Message {
            msgid: msgid_of(seq),
            corrid: m.corrid.clone(),
            priority: m.priority,
            enqueued: secs(m.enqueued_us),
            expiration: m.expires_us.map(secs),
            reply_queue: m.reply_queue.clone(),
            failure_queue: m.failure_queue.clone(),
            delivery: if m.persistent { Qos::Persistent } else { Qos::NonPersistent },
            reply_qos: m.reply_qos,
            urcode: m.urcode,
            retries: m.retries,
            origin_queue: m.origin_queue.clone(),
            body,
        }
    }

    fn body_of(&self, seq: u64, entry: &Entry) -> QmResult<Vec<u8>> {
        if let Some(b) = &entry.body {
            return Ok(b.to_vec());
        }
        if let Some(body) = entry.body_at.and_then(|at| writer::read_body_at(self.db.bodies(), &at))
        {
            return Ok(body);
        }
        Ok(writer::read_body(&self.db, &self.tables, seq)?.unwrap_or_default())
    }

    /// Dequeues (or peeks at) a message, waiting for one if asked to.
    pub async fn dequeue(
        &self,
        txid: Option<u64>,
        queue: &str,
        ctl: &DequeueCtl,
    ) -> QmResult<Message> {
        self.dequeue_until(txid, queue, ctl, None, None).await
    }

    /// Like [`Engine::dequeue`], giving up a wait (and only a wait: a message already taken
    /// is delivered) once `cancel` turns true, e.g. because the client went away.
    pub async fn dequeue_until(
        &self,
        txid: Option<u64>,
        queue: &str,
        ctl: &DequeueCtl,
        mut cancel: Option<tokio::sync::watch::Receiver<bool>>,
        program: Option<&str>,
    ) -> QmResult<Message> {
        ctl.validate()?;
        // Only plain waiting dequeues take turns: one that picks a message by id or peeks
        // does not compete with the others.
        let program = program
            .filter(|_| ctl.wait_ms.is_some() && !ctl.peek && matches!(ctl.select, Select::First));
        let mut turn: Option<Turn<'_>> = None;
        let deadline =
            ctl.wait_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut counted_waiter = false;
        // A wait in a transaction ends when the transaction does (time-out, administrator).
        let txn_ended = txid.and_then(|id| self.lock().txns.get(&id).map(|t| t.ended.clone()));
        let result = loop {
            if cancel.as_ref().is_some_and(|c| *c.borrow()) {
                break Err(QmError::new(Diagnostic::Os, "the client went away while waiting"));
            }
            let ticket = turn.as_ref().map(Turn::ticket);
            let attempt =
                self.try_dequeue(txid, queue, ctl, deadline.is_some() && !counted_waiter, ticket);
            match attempt {
                Err(e) => break Err(e),
                Ok(Attempt::Done(msg)) => break Ok(msg),
                Ok(Attempt::Taken { seq, pending, message }) => {
                    break self.complete_take(seq, pending, *message).await;
                }
                Ok(Attempt::Wait(notify)) => {
                    counted_waiter = true;
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let ended = txn_ended.as_deref().map(Notify::notified);
                    tokio::pin!(ended);
                    if let Some(ended) = ended.as_mut().as_pin_mut() {
                        ended.enable();
                    }
                    if let (Some(program), None) = (program, &turn) {
                        let ticket = self.lock().turns.join(queue, program);
                        turn = Some(Turn { engine: self, queue, program, ticket });
                    }
                    let ticket = turn.as_ref().map(Turn::ticket);
                    // Re-check after registering, so a message that arrived meanwhile is not missed.
                    match self.try_dequeue(txid, queue, ctl, false, ticket) {
                        Ok(Attempt::Wait(_)) => {}
                        other => {
                            self.end_wait();
                            return match other? {
                                Attempt::Done(msg) => Ok(msg),
                                Attempt::Taken { seq, pending, message } => {
                                    self.complete_take(seq, pending, *message).await
                                }
                                Attempt::Wait(_) => unreachable!(),
                            };
                        }
                    }
                    let Some(deadline) = deadline else { break Err(no_message(queue)) };
                    // Logged once it is ready to be woken, so a test (or an operator) knows
                    // a message enqueued from now on reaches this dequeue.
                    tracing::debug!(qspace = %self.name, %queue, "dequeue waiting for a message");
                    let cancelled = async {
                        match cancel.as_mut() {
                            Some(c) => {
                                let _ = c.wait_for(|gone| *gone).await;
                            }
                            None => std::future::pending().await,
                        }
                    };
                    let woken = async {
                        match ended.as_mut().as_pin_mut() {
                            Some(ended) => tokio::select! {
                                _ = notified.as_mut() => {}
                                _ = ended => {}
                                _ = cancelled => {}
                            },
                            None => tokio::select! {
                                _ = notified.as_mut() => {}
                                _ = cancelled => {}
                            },
                        }
                    };
                    // Woken: try again (a closed queue space or an ended transaction is
                    // reported as such by the next try).
                    if tokio::time::timeout_at(deadline, woken).await.is_err() {
                        break Err(QmError::new(
                            Diagnostic::NoMsg,
                            format!(
                                "No message arrived on queue {queue} within {}",
                                qm_common::time::duration_text(ctl.wait_ms.unwrap_or(0))
                            ),
                        ));
                    }
                }
            }
        };
        if counted_waiter {
            self.end_wait();
        }
        result
    }

    fn end_wait(&self) {
        let mut inner = self.lock();
        inner.waiters = inner.waiters.saturating_sub(1);
    }

    fn try_dequeue(
        &self,
        txid: Option<u64>,
        queue: &str,
        ctl: &DequeueCtl,
        start_wait: bool,
        turn: Option<(&str, u64)>,
    ) -> QmResult<Attempt> {
        let now = now_us();
        let mut inner = self.lock();
        if !self.alive() {
            return Err(QmError::new(
                Diagnostic::NotOpen,
                format!("Queue space {} was closed", self.name),
            ));
        }
        self.check_txn(&inner, txid)?;
        self.check_dequeue_enabled(&inner, queue)?;
        timers::settle(self, &mut inner, now);
        // Another dequeue of the same program has waited longer: it is served first.
        let my_turn =
            turn.is_none_or(|(program, ticket)| inner.turns.is_first(queue, program, ticket));
        let mut disk = self.disk_for(&inner, queue);
        let picked = match my_turn {
            true => self.pick(&mut inner, &mut disk, queue, &ctl.select, now)?,
            false => None,
        };
        let Some(pick::Picked { key, seq, adopted }) = picked else {
            if ctl.wait_ms.is_none() {
                return Err(no_message(queue));
            }
            if start_wait {
                if inner.waiters >= self.limits.waiters {
                    return Err(QmError::system(format!(
                        "No action available for a waiting dequeue: {} are waiting already (processes plus -A actions of queue space {})",
                        inner.waiters, self.name
                    )));
                }
                inner.waiters += 1;
            }
            let notify = inner
                .index
                .queues
                .get(queue)
                .map(|q| q.notify.clone())
                .ok_or_else(|| bad_queue(queue, &self.name))?;
            return Ok(Attempt::Wait(notify));
        };
        let entry = inner
            .index
            .msgs
            .get(&seq)
            .cloned()
            .ok_or_else(|| QmError::system("index out of step"))?;
        if ctl.peek {
            if adopted {
                inner.index.evict_now(seq);
            }
            drop(inner);
            let body = self.body_of(seq, &entry)?;
            return Ok(Attempt::Done(self.to_message(seq, &entry, body)));
        }
        if matches!(ctl.select, Select::First) {
            self.count_dequeue(&mut inner, &mut disk, queue, &key)?;
        }
        drop(disk);
        let blocks = self.blocks(&entry.meta);
        inner.index.set_state(seq, EntryState::Locked(txid.unwrap_or(0)), blocks);
        if let Some(id) = txid {
            if let Some(t) = inner.txns.get_mut(&id) {
                t.dequeued.push(seq);
            }
            drop(inner);
            let body = self.body_of(seq, &entry);
            return match body {
                Ok(body) => Ok(Attempt::Done(self.to_message(seq, &entry, body))),
                Err(e) => Err(e),
            };
        }
        let message = Box::new(self.to_message(seq, &entry, Vec::new()));
        let pending = match entry.meta.persistent {
            true => Some(self.send(vec![self.delete(seq, &entry)])),
            false => None,
        };
        if pending.is_none() {
            inner.index.remove(seq, blocks);
            if let Some(c) = inner.index.counters(queue) {
                c.dequeued += 1;
            }
            self.touch(&mut inner, queue);
            let mut message = message;
            message.body = entry.body.map(|b| b.to_vec()).unwrap_or_default();
            return Ok(Attempt::Done(*message));
        }
        Ok(Attempt::Taken { seq, pending, message })
    }

    /// Finishes a dequeue outside a transaction once its removal is durable.
    async fn complete_take(
        &self,
        seq: u64,
        pending: Option<writer::Pending>,
        mut message: Message,
    ) -> QmResult<Message> {
        let Some(pending) = pending else { return Ok(message) };
        match pending.wait().await {
            Ok(mut removed) => {
                let mut inner = self.lock();
                if let Some(entry) = inner.index.msgs.get(&seq) {
                    let blocks = self.blocks(&entry.meta);
                    if let Some(entry) = inner.index.remove(seq, blocks) {
                        if let Some(c) = inner.index.counters(&entry.meta.queue) {
                            c.dequeued += 1;
                        }
                        self.touch(&mut inner, &entry.meta.queue);
                    }
                }
                message.body = removed.pop().flatten().unwrap_or_default();
                Ok(message)
            }
            Err(e) => {
                let mut inner = self.lock();
                if let Some(entry) = inner.index.msgs.get(&seq) {
                    let (blocks, state) =
                        (self.blocks(&entry.meta), Index::settle_state(&entry.meta, now_us()));
                    inner.index.set_state(seq, state, blocks);
                }
                Err(e)
            }
        }
    }
}

fn no_message(queue: &str) -> QmError {
    QmError::new(Diagnostic::NoMsg, format!("No message available on queue {queue}"))
}

/// What [`Engine::enqueue_noted`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub msgid: MsgId,
    /// The message asked for disk but its queue is volatile: it is kept in memory.
    pub downgraded: bool,
}

/// An enqueue once its part under the lock is done.
enum Started {
    /// Visible already, or at its transaction's commit.
    Done(MsgId),
    /// Visible once its write is durable.
    Pending { seq: u64, placed: Option<u64>, mark: Option<u64>, pending: writer::Pending },
}

/// An enqueue's place in the line for room on a queue at its maximum length; leaving it,
/// served or not, lets the next one look again.
struct Line<'a> {
    engine: &'a Engine,
    queue: &'a str,
    ticket: Option<u64>,
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.engine.leave_line(self.queue, &mut self.ticket);
        }
    }
}

/// What one try at dequeuing produced.
enum Attempt {
    Done(Message),
    /// Taken outside a transaction: done once the removal is durable.
    Taken {
        seq: u64,
        pending: Option<writer::Pending>,
        message: Box<Message>,
    },
    Wait(Arc<Notify>),
}

/// A waiting dequeue's place in its program's line (`qmd -r`). Leaving it, served or not,
/// wakes the queue's waiters so that the next in line looks again.
struct Turn<'a> {
    engine: &'a Engine,
    queue: &'a str,
    program: &'a str,
    ticket: u64,
}

impl Turn<'_> {
    fn ticket(&self) -> (&str, u64) {
        (self.program, self.ticket)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let notify = {
            let mut inner = self.engine.lock();
            inner.turns.leave(self.queue, self.program, self.ticket);
            inner.index.queues.get(self.queue).map(|q| q.notify.clone())
        };
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}
