//! Transactions: begin, commit, roll back, time-outs; and recovery at load.
//!
//! A transaction's enqueues are invisible and its dequeues locked until it ends. Commit
//! writes them in one durable job; rollback returns the dequeued messages with one more
//! retry counted: unavailable for the queue's retry delay, or moved to the error queue once
//! the retries are used up (dropped when there is no error queue).

use super::index::{EntryState, Index};
use super::record::{MessageMeta, now_us, order_key};
use super::stored::{self, View};
use super::writer::WriteOp;
use super::{Engine, Inner};
use crate::storage::handle::DbFile;
use crate::storage::tables::QueueSpaceTables;
use qm_common::protocol::FiringRecord;
use qm_common::queue::QueueDef;
use qm_common::{Diagnostic, QmError, QmResult};
use redb::ReadableTable;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// An open transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    pub id: u64,
    pub session: u64,
    pub pid: Option<u32>,
    pub program: String,
    pub started: u64,
    pub deadline: Instant,
    pub enqueued: Vec<u64>,
    pub dequeued: Vec<u64>,
    /// Dequeued messages that go to the error queue at commit instead of being deleted.
    pub to_error: Vec<u64>,
    /// Woken when the transaction ends, so a dequeue waiting in it gives up at once.
    pub ended: Arc<Notify>,
}

/// How recent transactions ended, so a late caller learns why its transaction is gone.
#[derive(Debug, Default)]
pub struct Ended {
    reasons: HashMap<u64, String>,
    order: VecDeque<u64>,
}

impl Ended {
    const KEEP: usize = 4096;

    pub fn record(&mut self, id: u64, reason: impl Into<String>) {
        if self.reasons.insert(id, reason.into()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    pub fn error(&self, id: u64) -> QmError {
        match self.reasons.get(&id) {
            Some(why) => {
                QmError::new(Diagnostic::Tran, format!("Transaction {id} has ended: {why}"))
            }
            None => QmError::new(Diagnostic::Tran, format!("Transaction {id} does not exist")),
        }
    }
}

/// Who begins a transaction.
pub struct Owner {
    pub session: u64,
    pub pid: Option<u32>,
    pub program: String,
}

impl Engine {
    pub fn begin(&self, owner: Owner, timeout: Option<Duration>) -> QmResult<u64> {
        let mut inner = self.lock();
        if inner.txns.len() >= self.limits.transactions {
            return Err(QmError::no_space(format!(
                "Queue space {} has {} open, its limit (qspacechange can raise it)",
                self.name,
                qm_common::plural::count(
                    self.limits.transactions as u64,
                    "transaction",
                    "transactions"
                )
            )));
        }
        let id = inner.next_txid;
        inner.next_txid += 1;
        let timeout = timeout.unwrap_or(self.limits.txn_timeout);
        let txn = Txn {
            id,
            session: owner.session,
            pid: owner.pid,
            program: owner.program,
            started: qm_common::time::now_secs(),
            deadline: Instant::now() + timeout,
            enqueued: Vec::new(),
            dequeued: Vec::new(),
            to_error: Vec::new(),
            ended: Arc::new(Notify::new()),
        };
        inner.txns.insert(id, txn);
        drop(inner);
        self.timer_wake.notify_one();
        Ok(id)
    }

    /// Commits: durable when this returns; on a write failure everything is rolled back.
    pub async fn commit(&self, id: u64) -> QmResult<()> {
        let pending = {
            let mut inner = self.lock();
            let txn = inner.txns.remove(&id).ok_or_else(|| inner.ended.error(id))?;
            let mut ops = Vec::new();
            for &seq in &txn.enqueued {
                if let Some(e) = inner.index.msgs.get(&seq).filter(|e| e.meta.persistent) {
                    ops.push(self.put(seq, &e.meta, e.body.clone()));
                }
            }
            let now = now_us();
            let mut moves = Vec::new();
            for &seq in &txn.dequeued {
                let Some(e) = inner.index.msgs.get(&seq) else { continue };
                let moved = if txn.to_error.contains(&seq) {
                    self.error_move(&inner, seq, now)
                } else {
                    None
                };
                match (&moved, e.meta.persistent) {
                    (Some(m), true) => ops.push(self.put(seq, m, None)),
                    (None, true) => ops.push(self.delete(seq, e)),
                    _ => {}
                }
                if let Some(m) = moved {
                    moves.push((seq, m));
                }
            }
            if ops.is_empty() {
                self.finish_commit(&mut inner, &txn, moves);
                return Ok(());
            }
            (txn, moves, self.send(ops))
        };
        let (txn, moves, pending) = pending;
        match pending.wait().await {
            Ok(_) => {
                self.finish_commit(&mut self.lock(), &txn, moves);
                Ok(())
            }
            Err(e) => {
                let mut inner = self.lock();
                self.undo(&mut inner, &txn);
                inner.ended.record(
                    id,
                    format!("its commit failed ({}) and it was rolled back", e.message),
                );
                txn.ended.notify_waiters();
                Err(QmError::new(
                    e.diagnostic,
                    format!(
                        "Commit of transaction {id} failed and it was rolled back: {}",
                        e.message
                    ),
                ))
            }
        }
    }

    fn finish_commit(&self, inner: &mut Inner, txn: &Txn, moves: Vec<(u64, MessageMeta)>) {
        let now = now_us();
        for &seq in &txn.enqueued {
            self.finalize_enqueue(inner, seq, now);
        }
        for &seq in &txn.dequeued {
            let Some(e) = inner.index.msgs.get(&seq) else { continue };
            let blocks = self.blocks(&e.meta);
            let queue = e.meta.queue.clone();
            match moves.iter().find(|(s, _)| *s == seq) {
                Some((_, meta)) => {
                    let state = Index::settle_state(meta, now);
                    inner.index.update_meta(seq, meta.clone(), blocks);
                    inner.index.set_state(seq, state, blocks);
                    inner.index.evict(seq);
                    if let Some(c) = inner.index.counters(&queue) {
                        c.to_error += 1;
                    }
                }
                None => {
                    inner.index.remove(seq, blocks);
                    if let Some(c) = inner.index.counters(&queue) {
                        c.dequeued += 1;
                    }
                    self.touch(inner, &queue);
                }
            }
        }
        inner.ended.record(txn.id, "it was committed");
        txn.ended.notify_waiters();
    }

    /// The record of a message moved to the error queue, if there is one to move it to.
    fn error_move(&self, inner: &Inner, seq: u64, now: u64) -> Option<MessageMeta> {
        let errq = &self.limits.error_queue;
        let mut meta = inner.index.msgs.get(&seq)?.meta.clone();
        let order = &inner.index.queues.get(errq).filter(|_| *errq != meta.queue)?.def.order;
        meta.origin_queue.get_or_insert_with(|| meta.queue.clone());
        meta.queue = errq.clone();
        meta.available_us = now;
        meta.key = order_key(order, &meta, seq);
        Some(meta)
    }

    /// Puts everything back as it was, counting no retries (the failure was not the
    /// application's).
    fn undo(&self, inner: &mut Inner, txn: &Txn) {
        let now = now_us();
        for &seq in &txn.enqueued {
            if let Some(e) = inner.index.msgs.get(&seq) {
                let blocks = self.blocks(&e.meta);
                inner.index.remove(seq, blocks);
            }
        }
        for &seq in &txn.dequeued {
            if let Some(e) = inner.index.msgs.get(&seq) {
                let (blocks, state) = (self.blocks(&e.meta), Index::settle_state(&e.meta, now));
                inner.index.set_state(seq, state, blocks);
            }
        }
    }

    /// Rolls back; `reason` is what a late caller is told.
    pub async fn abort(&self, id: u64, reason: &str) -> QmResult<()> {
        let pending = {
            let mut inner = self.lock();
            let txn = inner.txns.remove(&id).ok_or_else(|| inner.ended.error(id))?;
            let ops = self.rollback(&mut inner, &txn);
            inner.ended.record(id, reason);
            txn.ended.notify_waiters();
            (!ops.is_empty()).then(|| (self.send(ops), txn.dequeued))
        };
        let Some((pending, returned)) = pending else { return Ok(()) };
        let result = pending.wait().await;
        if let Err(e) = &result {
            tracing::error!(qspace = %self.name, "recording the rollback of transaction {id} failed: {}", e.message);
        }
        // The returned messages are on disk as they are in memory now (or, after a failure,
        // stay resident, as memory decides for them).
        let mut inner = self.lock();
        for seq in returned {
            self.settle_going(&mut inner, seq, result.is_ok(), |_| {});
            if result.is_ok() {
                inner.index.evict(seq);
            }
        }
        Ok(())
    }

    fn rollback(&self, inner: &mut Inner, txn: &Txn) -> Vec<WriteOp> {
        let now = now_us();
        for &seq in &txn.enqueued {
            if let Some(e) = inner.index.msgs.get(&seq) {
                let blocks = self.blocks(&e.meta);
                inner.index.remove(seq, blocks);
            }
        }
        let mut ops = Vec::new();
        for &seq in &txn.dequeued {
            ops.extend(self.retry(inner, seq, now));
        }
        ops
    }

    /// Returns a dequeued message after a rollback: one more retry, then delay, error
    /// queue or drop.
    fn retry(&self, inner: &mut Inner, seq: u64, now: u64) -> Option<WriteOp> {
        let entry = inner.index.msgs.get(&seq)?;
        let blocks = self.blocks(&entry.meta);
        let retries = entry.meta.retries + 1;
        let (from, persistent) = (entry.meta.queue.clone(), entry.meta.persistent);
        let expired = entry.meta.expires_us.is_some_and(|e| e <= now);
        let queue = inner.index.queues.get(&from);
        let (limit, delay) = queue.map_or((0, 0), |q| (q.def.retries, q.def.retry_delay));
        let known = queue.is_some();
        if let Some(c) = inner.index.counters(&from) {
            c.retried += 1;
            c.expired += u64::from(expired);
        }
        let meta = if !expired && known && retries <= limit {
            let mut m = inner.index.msgs.get(&seq)?.meta.clone();
            m.retries = retries;
            m.available_us = now + u64::from(delay) * 1_000_000;
            m
        } else if let Some(mut m) = (!expired).then(|| self.error_move(inner, seq, now)).flatten() {
            m.retries = retries;
            if let Some(c) = inner.index.counters(&from) {
                c.to_error += 1;
            }
            tracing::info!(qspace = %self.name, "message {seq:016x} moved to error queue {} after {} retries", m.queue, retries - 1);
            m
        } else if persistent {
            // Dropped: it stays held until its removal is durable.
            let op = self.delete(seq, inner.index.msgs.get(&seq)?);
            inner.index.set_state(seq, EntryState::Locked(super::index::GOING), blocks);
            return Some(op);
        } else {
            inner.index.remove(seq, blocks);
            return None;
        };
        let op = meta.persistent.then(|| self.put(seq, &meta, None));
        let state = Index::settle_state(&meta, now);
        inner.index.update_meta(seq, meta, blocks);
        inner.index.set_state(seq, state, blocks);
        self.timer_wake.notify_one();
        op
    }

    /// Rolls back every transaction of a session (it disconnected).
    pub async fn abort_session(&self, session: u64) {
        let ids: Vec<u64> =
            self.lock().txns.values().filter(|t| t.session == session).map(|t| t.id).collect();
        for id in ids {
            let _ = self.abort(id, "its client disconnected").await;
        }
    }
}

/// What loading a queue space finds on disk.
pub struct Recovered {
    pub index: Index,
    pub firings: VecDeque<(u64, FiringRecord)>,
    /// The queue space has no message and its order tables were never marked as built:
    /// they are from now on (see [`stored::INDEXED`]).
    pub mark_indexed: bool,
}

/// Loads a queue space's state from disk: its queues' totals, its state values and the
/// record of threshold firings. No message is read: they stay on disk, in order. A queue
/// space stored before the order tables existed gets them first, once.
pub fn recover(
    file: &DbFile,
    tables: &QueueSpaceTables,
    defs: Vec<QueueDef>,
    page_size: u32,
) -> QmResult<Recovered> {
    // Writes deferred by an earlier load of this space (or another space of the file) go
    // to redb first: what is read here is all there is.
    file.settle()?;
    let mut index = Index::new(defs);
    let err =
        |e: &dyn std::fmt::Display| QmError::system(format!("loading queue space messages: {e}"));
    let mut view = View::new(file, tables)?;
    let stored = view.last_seq()?;
    let indexed = view.indexed()?;
    if !indexed && stored.is_some() {
        drop(view);
        let started = Instant::now();
        let count = file.write(|txn| stored::reindex(txn, tables, page_size, now_us()))?;
        tracing::info!(
            "queue space {}: ordered its {count} stored messages on disk, once ({} ms)",
            tables.qspace,
            started.elapsed().as_millis()
        );
        view = View::new(file, tables)?;
    }
    for (key, value) in view.states()? {
        restore_state(&mut index, &key, &value);
    }
    let mut firings = VecDeque::new();
    if let Ok(table) = view.txn().open_table(tables.firings()) {
        for item in table.iter().map_err(|e| err(&e))? {
            let (k, v) = item.map_err(|e| err(&e))?;
            if let Ok(mut record) = postcard::from_bytes::<FiringRecord>(v.value()) {
                if record.outcome == qm_common::protocol::FIRING_RUNNING {
                    // A clean stop or an unload rewrote the records of what it left
                    // running, and the next qmd those it found alive: this one had ended.
                    record.outcome = qm_common::protocol::FIRING_UNSEEN.to_string();
                }
                firings.push_back((k.value(), record));
            }
        }
    }
    for (queue, totals) in view.totals()? {
        let Some(q) = index.queues.get_mut(&queue) else {
            tracing::warn!(
                "queue space {}: {} stored messages belong to missing queue {queue}; left on disk",
                tables.qspace,
                totals.messages
            );
            continue;
        };
        q.usage.persistent_messages = totals.messages;
        q.usage.persistent_bytes = totals.bytes;
        q.usage.blocks = totals.blocks;
        q.waiting = totals.waiting;
        q.retrying = totals.retrying;
        q.tops = totals.tops;
        index.capacity.messages += totals.messages;
        index.capacity.blocks += totals.blocks;
    }
    if let Some(last) = stored.and_then(|s| s.checked_add(1)) {
        index.next_seq = index.next_seq.max(last);
    }
    // The mark on disk covers every msgid handed out so far; the next one moves it on.
    index.reserved = index.next_seq;
    index.stored_timer = view.due(0, 0, |_| false)?.1;
    Ok(Recovered { index, firings, mark_indexed: !indexed && stored.is_none() })
}

/// Applies one stored state value: the sequence high-water mark or a threshold state.
fn restore_state(index: &mut Index, key: &str, value: &[u8]) {
    if let Some(queue) = key.strip_prefix(super::attrs::ACTIVITY_PREFIX) {
        super::attrs::restore_activity(index, queue, value);
    } else if key == "next_seq" {
        let bytes: [u8; 8] = value.try_into().unwrap_or([0; 8]);
        index.next_seq = index.next_seq.max(u64::from_be_bytes(bytes));
    } else if let Some((queue, set)) = key.strip_prefix("thr:").and_then(|k| k.rsplit_once(':')) {
        let slot = match set {
            "persistent" => 0,
            "nonpersistent" => 1,
            _ => return,
        };
        if let Some(q) = index.queues.get_mut(queue) {
            q.armed[slot] = value.first() != Some(&0);
        }
    }
}
