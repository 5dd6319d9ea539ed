//! Which message a dequeue takes: the first in its queue's order among the resident
//! messages and the stored ones (see [`super::index`]), with Tuxedo's rule that a lower
//! priority goes out after every ten higher ones while it waits.
//!
//! The stored ones are taken from the queue's head ([`super::index::Head`]), read from disk
//! a batch at a time, so that most dequeues read nothing from disk before the writer removes
//! their message.

use super::index::{EntryState, HEAD_MAX};
use super::record::{MessageMeta, OrderKey, seq_of};
use super::stored::View;
use super::{Engine, Inner, bad_queue};
use crate::storage::handle::DbFile;
use crate::storage::tables::QueueSpaceTables;
use qm_common::message::Select;
use qm_common::order::SortKey;
use qm_common::{QmError, QmResult};
use std::ops::Bound;

/// Stored messages read into a queue's head at a time.
const HEAD_BATCH: usize = HEAD_MAX / 4;

/// The lower of two keys, either of which may be missing.
fn lowest(a: Option<OrderKey>, b: Option<OrderKey>) -> Option<OrderKey> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The stored messages of a queue space as one use sees them: a read transaction, begun
/// the first time it is needed (a dequeue served from a queue's head needs none), and only
/// when there may be stored messages at all.
pub(super) struct Disk<'e> {
    file: &'e DbFile,
    names: &'e QueueSpaceTables,
    stored: bool,
    view: Option<View<'e>>,
}

impl<'e> Disk<'e> {
    pub(super) fn view(&mut self) -> QmResult<Option<&View<'e>>> {
        if self.stored && self.view.is_none() {
            self.view = Some(View::new(self.file, self.names)?);
        }
        Ok(self.view.as_ref())
    }
}

impl Engine {
    /// The stored messages of `queue`, for one use.
    pub(super) fn disk_for(&self, inner: &Inner, queue: &str) -> Disk<'_> {
        let stored = inner.index.queues.get(queue).is_some_and(|q| q.usage.persistent_messages > 0);
        Disk { file: &self.db, names: &self.tables, stored, view: None }
    }

    /// The stored messages of the whole queue space, for one use.
    pub(super) fn disk(&self) -> Disk<'_> {
        Disk { file: &self.db, names: &self.tables, stored: true, view: None }
    }

    /// The first stored ready message of `queue` (after `after`, when given): from its
    /// head, which is read again from disk when it is used up.
    fn first_stored(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        after: Option<&OrderKey>,
    ) -> QmResult<Option<OrderKey>> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let head = &q.head;
        match after {
            Some(a) if head.covers(a) => {
                let next = head.msgs.range((Bound::Excluded(*a), Bound::Unbounded)).next();
                return Ok(next.map(|(k, _)| *k));
            }
            Some(a) => {
                let Some(view) = disk.view()? else { return Ok(None) };
                return view.first(queue, Some(a), |s| inner.index.resident(s));
            }
            None if head.loaded && (head.complete || !head.msgs.is_empty()) => {
                return Ok(head.msgs.keys().next().copied());
            }
            None => {}
        }
        // Read on from where the last batch ended: the messages before it were taken, and
        // those taken may still be on disk, hidden, until redb holds their removal.
        let from = head.read_to;
        let Some(view) = disk.view()? else { return Ok(None) };
        let found = view.first_n(queue, from.as_ref(), HEAD_BATCH, |s| inner.index.resident(s))?;
        let q = inner.index.queues.get_mut(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        q.head.complete = found.len() < HEAD_BATCH;
        q.head.loaded = true;
        q.head.msgs = found.into_iter().collect();
        if let Some((last, _)) = q.head.msgs.last_key_value() {
            q.head.read_to = Some(*last);
        }
        Ok(q.head.msgs.keys().next().copied())
    }

    /// The first ready message of `queue` (after `after`, when given).
    fn first_ready(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        after: Option<&OrderKey>,
    ) -> QmResult<Option<OrderKey>> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let resident = match after {
            None => q.ready.keys().next().copied(),
            Some(a) => {
                q.ready.range((Bound::Excluded(*a), Bound::Unbounded)).next().map(|(k, _)| *k)
            }
        };
        let stored = self.first_stored(inner, disk, queue, after)?;
        Ok(lowest(resident, stored))
    }

    /// The message a plain dequeue of `queue` takes now.
    pub(super) fn first(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
    ) -> QmResult<Option<OrderKey>> {
        let Some(key) = self.first_ready(inner, disk, queue, None)? else { return Ok(None) };
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        if key.top != 0 || q.def.order.keys.first() != Some(&SortKey::Priority) || q.streak < 10 {
            return Ok(Some(key));
        }
        let after_level = OrderKey {
            top: 0,
            parts: [key.parts[0], i64::MAX, i64::MAX],
            tie: i64::MAX,
            sub: i64::MAX,
            seq: u64::MAX,
        };
        Ok(Some(self.first_ready(inner, disk, queue, Some(&after_level))?.unwrap_or(key)))
    }

    /// Counts a plain dequeue of `taken` for the starvation rule.
    pub(super) fn count_dequeue(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        taken: &OrderKey,
    ) -> QmResult<()> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        if q.def.order.keys.first() != Some(&SortKey::Priority) || taken.top != 0 {
            return Ok(());
        }
        let resident_last = q.ready.keys().next_back().copied();
        let stored_last = if q.head.loaded && q.head.complete {
            q.head.msgs.keys().next_back().copied()
        } else {
            match disk.view()? {
                Some(v) => v.last(queue, |s| inner.index.resident(s))?,
                None => None,
            }
        };
        let last = resident_last.max(stored_last);
        let first = self.first_ready(inner, disk, queue, None)?;
        let lower_waits = last.is_some_and(|k| k.parts[0] > taken.parts[0]);
        let took_top_level = first.is_none_or(|k| k.parts[0] >= taken.parts[0]);
        if let Some(q) = inner.index.queues.get_mut(queue) {
            q.streak = if lower_waits && took_top_level { q.streak + 1 } else { 0 };
        }
        Ok(())
    }

    /// The first ready message of `queue` with correlation id `corrid`.
    fn first_with_corrid(
        &self,
        inner: &Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        corrid: &[u8],
    ) -> QmResult<Option<OrderKey>> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let resident = q.corrids.get(corrid).and_then(|set| set.first().copied());
        let stored = match disk.view()? {
            Some(v) => v.first_corrid(queue, corrid, |s| inner.index.resident(s))?,
            None => None,
        };
        Ok(lowest(resident, stored))
    }

    /// Message `seq` of `queue`, if it is ready there.
    fn ready_by_id(
        &self,
        inner: &Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        seq: u64,
    ) -> QmResult<Option<OrderKey>> {
        if let Some(e) = inner.index.msgs.get(&seq) {
            let ready = e.meta.queue == queue && e.state == EntryState::Ready;
            return Ok(ready.then_some(e.meta.key));
        }
        if inner.index.gone(seq) {
            return Ok(None);
        }
        let Some(view) = disk.view()? else { return Ok(None) };
        let Some(meta) = view.meta(seq)?.filter(|m| m.queue == queue) else { return Ok(None) };
        Ok(view.is_ready(&meta)?.then_some(meta.key))
    }

    /// Message `seq`'s record and state, resident or stored.
    pub(super) fn lookup(
        &self,
        inner: &Inner,
        disk: &mut Disk<'_>,
        seq: u64,
    ) -> QmResult<Option<(MessageMeta, EntryState)>> {
        if let Some(e) = inner.index.msgs.get(&seq) {
            return Ok(Some((e.meta.clone(), e.state)));
        }
        if inner.index.gone(seq) {
            return Ok(None);
        }
        let Some(view) = disk.view()? else { return Ok(None) };
        let Some(meta) = view.meta(seq)? else { return Ok(None) };
        let state = if view.is_ready(&meta)? { EntryState::Ready } else { EntryState::Waiting };
        Ok(Some((meta, state)))
    }

    /// Makes stored ready message `key` of `queue` resident, as it is stored; whether it
    /// was not already.
    fn make_resident(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        key: &OrderKey,
    ) -> QmResult<bool> {
        let seq = key.seq;
        if inner.index.resident(seq) {
            return Ok(false);
        }
        let in_head = inner.index.queues.get(queue).and_then(|q| q.head.msgs.get(key)).cloned();
        if let Some((meta, body_at)) = in_head {
            inner.index.adopt(seq, meta, EntryState::Ready, body_at);
            return Ok(true);
        }
        let found = self.lookup(inner, disk, seq)?;
        let (meta, state) = found.ok_or_else(|| {
            QmError::system(format!("message {seq:016x} is in its queue's order but not stored"))
        })?;
        inner.index.adopt(seq, meta, state, None);
        Ok(true)
    }

    /// Picks the message a dequeue would take, expiring any it finds dead on the way; it is
    /// resident when returned, and `adopted` says whether it was made so for this.
    pub(super) fn pick(
        &self,
        inner: &mut Inner,
        disk: &mut Disk<'_>,
        queue: &str,
        select: &Select,
        now: u64,
    ) -> QmResult<Option<Picked>> {
        loop {
            let found = match select {
                Select::First => self.first(inner, disk, queue)?,
                Select::Corrid(c) => self.first_with_corrid(inner, disk, queue, c)?,
                Select::Msgid(id) => match seq_of(id) {
                    Some(seq) => self.ready_by_id(inner, disk, queue, seq)?,
                    None => None,
                },
            };
            let Some(key) = found else { return Ok(None) };
            let seq = key.seq;
            let adopted = self.make_resident(inner, disk, queue, &key)?;
            let expired = inner
                .index
                .msgs
                .get(&seq)
                .and_then(|e| e.meta.expires_us)
                .is_some_and(|e| e <= now);
            if !expired {
                return Ok(Some(Picked { key, seq, adopted }));
            }
            self.expire(inner, seq);
        }
    }
}

/// The message a dequeue takes.
pub(super) struct Picked {
    pub key: OrderKey,
    pub seq: u64,
    /// Read from disk for this dequeue (a peek lets it go again).
    pub adopted: bool,
}
