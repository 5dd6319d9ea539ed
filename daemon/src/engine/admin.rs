//! Message administration: list, delete and change messages (`qlist`, `qdeletemsg`,
//! `qchangeprio`, `qchangequeue`, `qchangetime`, `qchangeexp`), purge a queue, and list or
//! complete transactions (`qprinttrans`, `qcommittrans`, `qaborttrans`).
//!
//! Messages held by a transaction are left alone. The ones being changed are locked while
//! their new records are written, so no dequeue can take a message mid-change.

use super::index::{EntryState, Index};
use super::record::{MessageMeta, msgid_of, now_us, order_key, secs};
use super::writer::WriteOp;
use super::{Engine, Inner, bad_queue};
use qm_common::message::{Criteria, Expiry, MessageInfo, Qos, TimeSpec, TransactionInfo};
use qm_common::protocol::Progress;
use qm_common::{Diagnostic, QmError, QmResult};
use std::collections::HashSet;
use std::time::Instant;

/// Locks held by the administrator while it rewrites messages.
const ADMIN_LOCK: u64 = u64::MAX;

/// A change to apply to every selected message.
#[derive(Debug, Clone)]
pub enum Change {
    Delete,
    Priority(u8),
    Queue(String),
    Time(TimeSpec),
    Expiration(Expiry),
}

fn in_range<T: PartialOrd>(v: T, range: &Option<(T, T)>) -> bool {
    range.as_ref().is_none_or(|(lo, hi)| *lo <= v && v <= *hi)
}

/// Whether a message meets the `qscan` criteria.
fn matches(seq: u64, meta: &MessageMeta, c: &Criteria) -> bool {
    in_range(secs(meta.available_us), &c.time)
        && in_range(meta.priority, &c.priority)
        && c.msgid.as_ref().is_none_or(|m| *m == msgid_of(seq))
        && c.corrid.as_ref().is_none_or(|id| *id == meta.corrid)
        && c.delivery.is_none_or(|d| match d {
            Qos::Persistent => meta.persistent,
            Qos::NonPersistent => !meta.persistent,
            Qos::Default => true,
        })
        && (c.expiration.is_none()
            || meta.expires_us.is_some_and(|e| in_range(secs(e), &c.expiration)))
}

/// A message selected by criteria: its sequence number, record and state.
type Selected = (u64, MessageMeta, EntryState);

/// Messages looked at (and changed) per step. A step holds the queue space's lock for its
/// own lookups only, and its changes are one write of their own, so that listing or
/// changing every message of a deep queue never holds other work up for long (at 100,000
/// stored messages, one step of all of them held every writer for seconds).
pub(super) const ADMIN_STEP: usize = 1024;

impl Engine {
    /// The messages `criteria` may select in `queue`: the one its msgid names, or every
    /// message of the queue now, resident or stored. Each is looked at again, a step at a
    /// time, by [`Engine::select`]; messages enqueued later are not among them. The stored
    /// ones are read from a snapshot taken under the lock, but without it: at depth that
    /// is millions of keys, and traffic goes on meanwhile (as in `qwhy`).
    pub(super) fn candidates(&self, queue: &str, criteria: &Criteria) -> QmResult<Vec<u64>> {
        let inner = self.lock();
        if !inner.index.queues.contains_key(queue) {
            return Err(bad_queue(queue, &self.name));
        }
        if let Some(msgid) = &criteria.msgid {
            // One message asked for by id: no scan.
            return Ok(super::record::seq_of(msgid).into_iter().collect());
        }
        let mut seqs: Vec<u64> = (inner.index.msgs.iter())
            .filter(|(_, e)| e.meta.queue == queue)
            .map(|(seq, _)| *seq)
            .collect();
        let resident: HashSet<u64> = inner.index.resident_seqs().collect();
        let mut disk = self.disk_for(&inner, queue);
        // The snapshot is taken now, with the resident ones.
        disk.view()?;
        drop(inner);
        if let Some(view) = disk.view()? {
            seqs.extend(view.seqs(queue)?.into_iter().filter(|s| !resident.contains(s)));
        }
        Ok(seqs)
    }

    /// Those of `seqs` that are messages of `queue` meeting `criteria` now.
    pub(super) fn select(
        &self,
        inner: &Inner,
        queue: &str,
        criteria: &Criteria,
        seqs: &[u64],
    ) -> QmResult<Vec<Selected>> {
        let mut disk = self.disk_for(inner, queue);
        let mut list = Vec::new();
        for &seq in seqs {
            if let Some((meta, state)) = self.lookup(inner, &mut disk, seq)?
                && meta.queue == queue
                && matches(seq, &meta, criteria)
            {
                list.push((seq, meta, state));
            }
        }
        Ok(list)
    }

    /// The messages of `queue` meeting `criteria`, in queue order.
    pub fn list(&self, queue: &str, criteria: &Criteria) -> QmResult<Vec<MessageInfo>> {
        let seqs = self.candidates(queue, criteria)?;
        let mut selected = Vec::new();
        for step in seqs.chunks(ADMIN_STEP) {
            selected.extend(self.select(&self.lock(), queue, criteria, step)?);
        }
        selected.sort_unstable_by_key(|(seq, meta, _)| (meta.key, *seq));
        let now = now_us();
        Ok(selected
            .into_iter()
            .map(|(seq, m, state)| MessageInfo {
                msgid: msgid_of(seq),
                corrid: m.corrid.clone(),
                priority: m.priority,
                retries: m.retries,
                length: m.body_len,
                delivery: if m.persistent { Qos::Persistent } else { Qos::NonPersistent },
                reply_qos: m.reply_qos,
                enqueued: secs(m.enqueued_us),
                available: (m.available_us > now).then(|| secs(m.available_us)),
                expiration: m.expires_us.map(secs),
                state: if state == EntryState::Locked(ADMIN_LOCK) {
                    EntryState::Ready.public()
                } else {
                    state.public()
                },
                origin_queue: m.origin_queue.clone(),
                reply_queue: m.reply_queue.clone(),
                failure_queue: m.failure_queue.clone(),
                urcode: m.urcode,
            })
            .collect())
    }

    /// The new record of a message under `change`; `None` when it is to be deleted.
    fn changed(
        &self,
        inner: &Inner,
        seq: u64,
        meta: &MessageMeta,
        change: &Change,
        now: u64,
    ) -> QmResult<Option<MessageMeta>> {
        let mut m = meta.clone();
        let ordinary = m.key.top == 0 && m.key.sub == 0;
        match change {
            Change::Delete => return Ok(None),
            Change::Priority(p) => m.priority = *p,
            Change::Queue(q) => {
                m.queue = q.clone();
                m.retries = 0;
                m.origin_queue = None;
            }
            Change::Time(t) => {
                m.available_us = match t {
                    TimeSpec::Absolute(s) => s * 1_000_000,
                    TimeSpec::Relative(s) => now + s * 1_000_000,
                };
                m.order_time_us = m.available_us;
            }
            Change::Expiration(e) => {
                m.expires_us = match e {
                    Expiry::Absolute(s) => Some(s * 1_000_000),
                    Expiry::Relative(s) => Some(now + s * 1_000_000),
                    Expiry::Never => None,
                }
            }
        }
        let def =
            &inner.index.queues.get(&m.queue).ok_or_else(|| bad_queue(&m.queue, &self.name))?.def;
        if ordinary || matches!(change, Change::Queue(_)) {
            m.key = order_key(&def.order, &m, seq);
        }
        Ok(Some(m))
    }

    /// Applies `change` to the messages of `queue` meeting `criteria`, [`ADMIN_STEP`] at a
    /// time, each step durable before the next; returns how many changed and how many were
    /// skipped because a transaction holds them. After an error, the steps before it stay
    /// done, and the error says how many messages they changed. When there is more than one
    /// step, `progress` is told after each how many of the messages found were looked at.
    pub async fn change(
        &self,
        queue: &str,
        criteria: &Criteria,
        change: Change,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> QmResult<(u64, u64)> {
        if let Change::Queue(new) = &change
            && new == queue
        {
            return Err(QmError::inval(format!(
                "Queue change - new queue name {new} matches old queue name"
            )));
        }
        if let Change::Priority(p) = change
            && !(1..=100).contains(&p)
        {
            return Err(QmError::invalid("Priority", p, "it must be 1 to 100"));
        }
        if let Change::Queue(new) = &change
            && !self.lock().index.queues.contains_key(new)
        {
            return Err(bad_queue(new, &self.name));
        }
        let seqs = self.candidates(queue, criteria)?;
        let total = seqs.len() as u64;
        let (mut changed, mut skipped) = (0, 0);
        for (i, step) in seqs.chunks(ADMIN_STEP).enumerate() {
            if i > 0 {
                while crate::storage::fault::admin_gated() {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            match self.change_step(queue, criteria, &change, step).await {
                Ok((c, s)) => (changed, skipped) = (changed + c, skipped + s),
                Err(mut e) if changed > 0 => {
                    e.message =
                        format!("{} ({changed} messages were changed before it)", e.message);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            if seqs.len() > ADMIN_STEP {
                progress(Progress { done: (i * ADMIN_STEP + step.len()) as u64, total });
            }
        }
        Ok((changed, skipped))
    }

    /// Applies `change` to those of `seqs` that are messages of `queue` meeting `criteria`,
    /// in one write: see [`Engine::change`].
    async fn change_step(
        &self,
        queue: &str,
        criteria: &Criteria,
        change: &Change,
        seqs: &[u64],
    ) -> QmResult<(u64, u64)> {
        let now = now_us();
        let (plan, skipped, pending) = {
            let mut inner = self.lock();
            let mut plan = Vec::new();
            let mut skipped = 0;
            let selected = self.select(&inner, queue, criteria, seqs)?;
            for (seq, meta, state) in &selected {
                if !matches!(state, EntryState::Ready | EntryState::Waiting) {
                    skipped += 1;
                    continue;
                }
                let new = self.changed(&inner, *seq, meta, change, now)?;
                plan.push((*seq, meta.persistent, new));
            }
            let mut ops = Vec::new();
            for (seq, meta, state) in selected {
                if matches!(state, EntryState::Ready | EntryState::Waiting) {
                    inner.index.adopt(seq, meta, state, None);
                }
            }
            for (seq, persistent, new) in &plan {
                let entry = inner.index.msgs[seq].clone();
                let blocks = self.blocks(&entry.meta);
                inner.index.set_state(*seq, EntryState::Locked(ADMIN_LOCK), blocks);
                if *persistent {
                    ops.push(match new {
                        Some(m) => self.put(*seq, m, None),
                        None => self.delete(*seq, &entry),
                    });
                }
            }
            let pending = (!ops.is_empty()).then(|| self.send(ops));
            (plan, skipped, pending)
        };
        let result = match pending {
            Some(p) => p.wait().await.map(|_| ()),
            None => Ok(()),
        };
        let mut inner = self.lock();
        for (seq, _, new) in &plan {
            let Some(e) = inner.index.msgs.get(seq) else { continue };
            let blocks = self.blocks(&e.meta);
            match (&result, new) {
                (Ok(()), None) => {
                    inner.index.remove(*seq, blocks);
                }
                (Ok(()), Some(meta)) => {
                    let state = Index::settle_state(meta, now_us());
                    inner.index.update_meta(*seq, meta.clone(), blocks);
                    inner.index.set_state(*seq, state, blocks);
                    inner.index.evict(*seq);
                }
                (Err(_), _) => {
                    let state = Index::settle_state(&e.meta, now_us());
                    inner.index.set_state(*seq, state, blocks);
                }
            }
        }
        self.timer_wake.notify_one();
        result.map(|()| (plan.len() as u64, skipped))
    }

    /// Removes a queue with its messages and state values (qdestroy), in one durable
    /// transaction; refuses while a transaction holds one of its messages. Blocks until the
    /// removal is durable; returns how many messages went with it.
    pub fn remove_queue(&self, queue: &str) -> QmResult<u64> {
        self.remove_queue_if(queue, |_| true).map(|removed| removed.unwrap_or(0))
    }

    /// Removes `queue` if its empty idle expiration has passed at `now` (checked under the
    /// same lock as the removal, so no enqueue slips in between); whether it did.
    pub fn remove_idle_queue(&self, queue: &str, now: u64) -> QmResult<bool> {
        self.remove_queue_if(queue, |q| super::attrs::idle_past(q, now)).map(|r| r.is_some())
    }

    /// Removes `queue` if `wanted` says so of its state; the messages purged, or `None`.
    fn remove_queue_if(
        &self,
        queue: &str,
        wanted: impl FnOnce(&super::index::QueueState) -> bool,
    ) -> QmResult<Option<u64>> {
        let (purged, pending) = {
            let mut inner = self.lock();
            if !inner.index.queues.get(queue).is_some_and(wanted) {
                return Ok(None);
            }
            let purged = inner.index.queues.get(queue).map_or(0, |q| q.usage.messages());
            let seqs: Vec<u64> = inner
                .index
                .msgs
                .iter()
                .filter(|(_, e)| e.meta.queue == queue)
                .map(|(s, _)| *s)
                .collect();
            let held = seqs
                .iter()
                .filter(|s| {
                    !matches!(inner.index.msgs[*s].state, EntryState::Ready | EntryState::Waiting)
                })
                .count();
            if held > 0 {
                let held = match held {
                    1 => format!("1 message of queue {queue} is held by a transaction"),
                    n => format!("{n} messages of queue {queue} are held by transactions"),
                };
                return Err(QmError::in_use(format!("Destroy queue failed - {held}")));
            }
            // The stored messages go with the queue's removal on disk (the writer takes
            // them in order of age); the resident ones here.
            for seq in &seqs {
                let blocks = self.blocks(&inner.index.msgs[seq].meta);
                inner.index.remove(*seq, blocks);
            }
            let ops = vec![WriteOp::RemoveQueue {
                tables: self.tables.clone(),
                queue: queue.to_string(),
                state_keys: super::thresholds::Set::state_keys(queue)
                    .into_iter()
                    .chain([format!("{}{queue}", super::attrs::ACTIVITY_PREFIX)])
                    .collect(),
            }];
            if let Some(q) = inner.index.queues.remove(queue) {
                let cap = &mut inner.index.capacity;
                cap.messages = cap.messages.saturating_sub(q.usage.persistent_messages);
                cap.blocks = cap.blocks.saturating_sub(q.usage.blocks);
                q.notify.notify_waiters();
                q.room.notify_waiters();
            }
            (purged, self.send(ops))
        };
        pending.wait_blocking()?;
        Ok(Some(purged))
    }

    pub fn transactions(&self) -> Vec<TransactionInfo> {
        let inner = self.lock();
        let now = Instant::now();
        let mut list: Vec<TransactionInfo> = inner
            .txns
            .values()
            .map(|t| TransactionInfo {
                id: t.id,
                qspace: self.name.clone(),
                session: t.session,
                pid: t.pid,
                program: t.program.clone(),
                started: t.started,
                timeout_in: t.deadline.saturating_duration_since(now).as_secs(),
                enqueued: t.enqueued.len() as u32,
                dequeued: t.dequeued.len() as u32,
            })
            .collect();
        list.sort_by_key(|t| t.id);
        list
    }

    /// Completes someone else's transaction (heuristic commit or rollback).
    pub async fn complete(&self, id: u64, commit: bool) -> QmResult<()> {
        if !self.lock().txns.contains_key(&id) {
            return Err(QmError::new(
                Diagnostic::NotFound,
                format!("Transaction {id} is not open in queue space {}", self.name),
            ));
        }
        if commit {
            self.commit(id).await?;
            self.lock().ended.record(id, "it was committed by the administrator");
            Ok(())
        } else {
            self.abort(id, "it was rolled back by the administrator").await
        }
    }
}
