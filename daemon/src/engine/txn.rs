//! Transactions: begin, commit, roll back, time-outs; and recovery at load.
//!
//! A transaction's enqueues are invisible and its dequeues locked until it ends. Commit
//! writes them in one durable job; rollback returns the dequeued messages with one more
//! retry counted: unavailable for the queue's retry delay, or moved to the error queue once
//! the retries are used up (dropped when there is no error queue).

use super::index::{Entry, EntryState, Index};
use super::record::{MessageMeta, now_us, order_key};
use super::writer::WriteOp;
use super::{Engine, Inner};
use crate::storage::tables::QueueSpaceTables;
use qm_common::device::message_blocks;
use qm_common::queue::QueueDef;
use qm_common::{Diagnostic, QmError, QmResult};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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
                "Queue space {} has {} transactions open, its limit (qspacechange can raise it)",
                self.name, self.limits.transactions
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
        };
        inner.txns.insert(id, txn);
        drop(inner);
        self.timer_wake.notify_one();
        Ok(id)
    }

    /// Commits: durable when this returns; on a write failure everything is rolled back.
    pub async fn commit(&self, id: u64) -> QmResult<()> {
        let (txn, pending) = {
            let mut inner = self.lock();
            let txn = inner.txns.remove(&id).ok_or_else(|| inner.ended.error(id))?;
            let mut ops = Vec::new();
            for &seq in &txn.enqueued {
                if let Some(e) = inner.index.msgs.get(&seq).filter(|e| e.meta.persistent) {
                    ops.push(self.put(seq, &e.meta, e.body.clone()));
                }
            }
            for &seq in &txn.dequeued {
                if inner.index.msgs.get(&seq).is_some_and(|e| e.meta.persistent) {
                    ops.push(self.delete(seq));
                }
            }
            if !txn.enqueued.is_empty() {
                ops.push(self.seq_state(inner.index.next_seq));
            }
            if ops.is_empty() {
                self.finish_commit(&mut inner, &txn);
                return Ok(());
            }
            (txn, self.send(ops))
        };
        match pending.wait().await {
            Ok(_) => {
                self.finish_commit(&mut self.lock(), &txn);
                Ok(())
            }
            Err(e) => {
                let mut inner = self.lock();
                self.undo(&mut inner, &txn);
                inner.ended.record(
                    id,
                    format!("its commit failed ({}) and it was rolled back", e.message),
                );
                Err(QmError::system(format!(
                    "Commit of transaction {id} failed and it was rolled back: {}",
                    e.message
                )))
            }
        }
    }

    fn finish_commit(&self, inner: &mut Inner, txn: &Txn) {
        let now = now_us();
        for &seq in &txn.enqueued {
            self.finalize_enqueue(inner, seq, now);
        }
        for &seq in &txn.dequeued {
            if let Some(e) = inner.index.msgs.get(&seq) {
                let blocks = self.blocks(&e.meta);
                inner.index.remove(seq, blocks);
            }
        }
        inner.ended.record(txn.id, "it was committed");
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
            (!ops.is_empty()).then(|| self.send(ops))
        };
        if let Some(p) = pending
            && let Err(e) = p.wait().await
        {
            tracing::error!(qspace = %self.name, "recording the rollback of transaction {id} failed: {}", e.message);
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
        let mut meta = entry.meta.clone();
        let blocks = self.blocks(&meta);
        meta.retries += 1;
        let (limit, delay) = match inner.index.queues.get(&meta.queue) {
            Some(q) => (q.def.retries, q.def.retry_delay),
            None => (0, 0),
        };
        let expired = meta.expires_us.is_some_and(|e| e <= now);
        let errq = &self.limits.error_queue;
        let queue_gone = !inner.index.queues.contains_key(&meta.queue);
        if !expired && !queue_gone && meta.retries <= limit {
            meta.available_us = now + u64::from(delay) * 1_000_000;
        } else if !expired
            && !errq.is_empty()
            && *errq != meta.queue
            && inner.index.queues.contains_key(errq)
        {
            let order = &inner.index.queues[errq].def.order;
            meta.origin_queue.get_or_insert_with(|| meta.queue.clone());
            meta.queue = errq.clone();
            meta.available_us = now;
            meta.key = order_key(order, &meta, seq);
            tracing::info!(qspace = %self.name, "message {seq:016x} moved to error queue {errq} after {} retries", meta.retries - 1);
        } else {
            let op = meta.persistent.then(|| self.delete(seq));
            inner.index.remove(seq, blocks);
            return op;
        }
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

/// Rebuilds the index from the committed messages on disk.
pub fn recover(
    db: &Database,
    tables: &QueueSpaceTables,
    defs: Vec<QueueDef>,
    page_size: u32,
) -> QmResult<Index> {
    let mut index = Index::new(defs);
    let err =
        |e: &dyn std::fmt::Display| QmError::system(format!("loading queue space messages: {e}"));
    let txn = db.begin_read().map_err(|e| err(&e))?;
    if let Ok(state) = txn.open_table(tables.state())
        && let Some(v) = state.get("next_seq").map_err(|e| err(&e))?
    {
        let bytes: [u8; 8] = v.value().try_into().unwrap_or([0; 8]);
        index.next_seq = index.next_seq.max(u64::from_be_bytes(bytes));
    }
    let table = match txn.open_table(tables.msg()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(index),
        Err(e) => return Err(err(&e)),
    };
    let now = now_us();
    for item in table.iter().map_err(|e| err(&e))? {
        let (k, v) = item.map_err(|e| err(&e))?;
        let seq = k.value();
        let bytes = super::record::split_stored(v.value())
            .map(|(m, _)| m)
            .ok_or_else(|| err(&"truncated message record"))?;
        let meta: MessageMeta = postcard::from_bytes(bytes).map_err(|e| err(&e))?;
        let Some(q) = index.queues.get_mut(&meta.queue) else {
            tracing::warn!(
                "message {seq:016x} belongs to missing queue {}; left on disk",
                meta.queue
            );
            continue;
        };
        q.tops = q.tops.max(-meta.key.top);
        index.next_seq = index.next_seq.max(seq + 1);
        let blocks = if meta.persistent { message_blocks(meta.body_len, page_size) } else { 0 };
        let state = Index::settle_state(&meta, now);
        index.insert(seq, Entry { meta, state, body: None }, blocks);
    }
    debug_assert!(index.msgs.values().all(|e| !matches!(e.state, EntryState::Locked(_))));
    Ok(index)
}
