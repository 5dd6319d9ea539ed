//! `qwhy`: what keeps one message where it is, read from the index under the queue space's
//! lock. Forwarders are the daemon's business, not the engine's: the caller adds that reason
//! when [`Found::could_move`] says a forwarder would make a difference.

use super::index::EntryState;
use super::record::{OrderKey, now_us, secs, seq_of};
use super::{Engine, Inner};
use qm_common::message::MsgId;
use qm_common::order::QueueOrder;
use qm_common::why::{AheadBy, Holder, Reason};
use qm_common::{Diagnostic, QmError, QmResult};
use std::collections::HashSet;

/// What the engine finds about a message.
pub struct Found {
    pub queue: String,
    pub reasons: Vec<Reason>,
    /// Committed, not held and not expired: it moves as soon as something dequeues it.
    pub could_move: bool,
}

impl Engine {
    /// Why the message `msgid` is not moving; QMEBADMSGID when the queue space has no such
    /// message.
    pub fn why(&self, msgid: &MsgId) -> QmResult<Found> {
        let mut inner = self.lock();
        let now = now_us();
        let mut disk = self.disk();
        let found = match seq_of(msgid) {
            Some(seq) => self.lookup(&inner, &mut disk, seq)?,
            None => None,
        };
        let (meta, state) = found.ok_or_else(|| {
            QmError::new(
                Diagnostic::BadMsgid,
                format!(
                    "Message {msgid} is not in queue space {} (qlist shows the msgids of a queue)",
                    self.name
                ),
            )
        })?;
        let meta = &meta;
        // What a dequeue takes now, should it be this one.
        let first = match state {
            EntryState::Ready => self.first(&mut inner, &mut disk, &meta.queue)?,
            _ => None,
        };
        let mut reasons = Vec::new();
        match state {
            EntryState::Locked(id) | EntryState::Uncommitted(id) => {
                reasons.push(match holder(&inner, id) {
                    None => Reason::Busy,
                    Some(h) if matches!(state, EntryState::Locked(_)) => Reason::Held(h),
                    Some(h) => Reason::Uncommitted(h),
                });
            }
            EntryState::Ready | EntryState::Waiting => {}
        }
        let expired = meta.expires_us.filter(|&e| e <= now);
        if let Some(at) = expired {
            reasons.push(Reason::Expired { at: secs(at) });
        }
        if let Some(origin) = meta.origin_queue.as_ref().filter(|_| {
            !self.limits.error_queue.is_empty() && meta.queue == self.limits.error_queue
        }) {
            reasons.push(Reason::ErrorQueue {
                error_queue: meta.queue.clone(),
                origin: origin.clone(),
                retries: meta.retries,
            });
        }
        let queue = inner.index.queues.get(&meta.queue);
        let free = matches!(state, EntryState::Ready | EntryState::Waiting);
        if free && expired.is_none() && meta.available_us > now {
            let until = secs(meta.available_us);
            // A rollback pushes the availability past the time the message sorts by.
            reasons.push(if meta.retries > 0 && meta.available_us > meta.order_time_us {
                let retries = queue.map_or(0, |q| q.def.retries);
                Reason::RetryDelay { until, retry: meta.retries, retries }
            } else {
                Reason::NotAvailable { until }
            });
        }
        let could_move = free && expired.is_none();
        let Some(q) = queue.filter(|_| state == EntryState::Ready && expired.is_none()) else {
            return Ok(Found { queue: meta.queue.clone(), reasons, could_move });
        };
        if first == Some(meta.key) {
            reasons.push(Reason::NextInLine { queue: meta.queue.clone() });
            return Ok(Found { queue: meta.queue.clone(), reasons, could_move });
        }
        let mut line = Line::new(q.def.order.clone(), meta.key);
        q.ready.range(..meta.key).for_each(|(k, _)| line.count(k));
        // The stored messages ahead are counted from the snapshot taken with the lock held,
        // but without it: at depth that is millions of keys, and traffic goes on meanwhile.
        let resident: HashSet<u64> = inner.index.resident_seqs().collect();
        drop(inner);
        if let Some(view) = disk.view()? {
            let skip = |s| resident.contains(&s);
            view.ahead(&meta.queue, &meta.key, skip, |k| line.count(k))?;
        }
        reasons.push(line.reason(&meta.queue));
        Ok(Found { queue: meta.queue.clone(), reasons, could_move })
    }
}

/// The open transaction `id`, with who began it; none for the daemon's own short locks (a
/// dequeue outside a transaction, an administrator's change).
fn holder(inner: &Inner, id: u64) -> Option<Holder> {
    inner.txns.get(&id).map(|t| Holder { txn: t.id, pid: t.pid, program: t.program.clone() })
}

/// The ready messages ahead of one, counted by what puts each one ahead.
struct Line {
    order: QueueOrder,
    key: OrderKey,
    by: Vec<(AheadBy, u64)>,
    total: u64,
}

impl Line {
    fn new(order: QueueOrder, key: OrderKey) -> Line {
        Line { order, key, by: Vec::new(), total: 0 }
    }

    fn count(&mut self, ahead: &OrderKey) {
        let cause = ahead_by(&self.order, ahead, &self.key);
        match self.by.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, n)) => *n += 1,
            None => self.by.push((cause, 1)),
        }
        self.total += 1;
    }

    /// Behind the messages counted; next in line when there are none.
    fn reason(self, queue: &str) -> Reason {
        let queue = queue.to_string();
        if self.total == 0 {
            // Only the starvation rule (a lower priority goes out after ten higher ones)
            // puts another message first, and that one is taken next: this one follows it.
            return Reason::NextInLine { queue };
        }
        Reason::Behind { queue, total: self.total, by: self.by }
    }
}

/// The first field of the order key where `ahead` sorts before `key`.
fn ahead_by(order: &QueueOrder, ahead: &OrderKey, key: &OrderKey) -> AheadBy {
    if ahead.top != key.top {
        return AheadBy::Top;
    }
    for (i, sort) in order.keys.iter().enumerate() {
        if ahead.parts[i] != key.parts[i] {
            return AheadBy::Key(*sort);
        }
    }
    if ahead.tie == key.tie && ahead.sub != key.sub {
        return AheadBy::Before;
    }
    AheadBy::Tiebreak(order.tiebreak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qm_common::order::{SortKey, Tiebreak};

    fn key(top: i64, prio: i64, tie: i64, sub: i64) -> OrderKey {
        OrderKey { top, parts: [prio, 0, 0], tie, sub, seq: tie as u64 }
    }

    #[test]
    fn the_first_field_that_differs_says_why() {
        let order = QueueOrder { keys: vec![SortKey::Priority], tiebreak: Tiebreak::Fifo };
        let me = key(0, -50, 9, 0);
        assert_eq!(ahead_by(&order, &key(-1, -10, 12, 0), &me), AheadBy::Top);
        assert_eq!(ahead_by(&order, &key(0, -60, 12, 0), &me), AheadBy::Key(SortKey::Priority));
        assert_eq!(ahead_by(&order, &key(0, -50, 3, 0), &me), AheadBy::Tiebreak(Tiebreak::Fifo));
        assert_eq!(ahead_by(&order, &key(0, -50, 9, -1), &me), AheadBy::Before);
    }
}
