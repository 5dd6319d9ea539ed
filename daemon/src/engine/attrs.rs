//! Queue attributes at work (seed 004): a queue's maximum length and the enqueues that wait
//! for room in arrival order, its maximum message size, enqueue and dequeue switched off,
//! its persistence mode, and its last activity (kept for `qinfo` and the empty idle
//! expiration).

use super::index::{Index, QueueState};
use super::writer::WriteOp;
use super::{Engine, Inner, bad_queue};
use qm_common::message::{EnqueueCtl, Qos};
use qm_common::queue::DeliveryPolicy;
use qm_common::{Diagnostic, QmError, QmResult};
use std::sync::Arc;
use tokio::sync::Notify;

/// The state key of a queue's last activity.
pub const ACTIVITY_PREFIX: &str = "act:";
/// A queue's last activity reaches the disk at most this often (seconds): after a crash it
/// may be this much older than it was, which only postpones an idle expiration.
const ACTIVITY_SAVE_EVERY: u64 = 60;

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    crate::storage::records::now_secs()
}

/// What an enqueue asks, as its queue's attributes see it.
pub struct Admission {
    /// Whether the message goes to disk.
    pub persistent: bool,
    /// It asked to be stored but its queue is volatile: kept in memory.
    pub downgraded: bool,
}

/// The refusal of an enqueue to a queue at its maximum length.
pub fn full(queue: &str, max: u64, waited_ms: Option<u64>) -> QmError {
    let held = qm_common::plural::count(max, "message", "messages");
    let waited = match waited_ms {
        Some(ms) => format!(" and no room came within {}", qm_common::time::duration_text(ms)),
        None => String::new(),
    };
    QmError::no_space(format!(
        "Queue {queue} is full: it holds {held}, its maximum length{waited} (qchange -L sets it)"
    ))
}

impl Engine {
    /// Checks what the queue's attributes say of an enqueue of `len` bytes before anything
    /// is taken: the queue exists, takes enqueues and messages this large; and decides
    /// where the message is kept.
    pub(super) fn admit(
        &self,
        inner: &Inner,
        queue: &str,
        ctl: &EnqueueCtl,
        len: u64,
    ) -> QmResult<Admission> {
        let q = inner.index.queues.get(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let attrs = &q.def.attrs;
        if !attrs.enqueue_enabled {
            return Err(QmError::new(
                Diagnostic::EnqueueDisabled,
                format!("Queue {queue} does not take enqueues now (qchange -E on allows them)"),
            ));
        }
        if let Some(max) = attrs.max_size.filter(|max| len > *max) {
            return Err(QmError::inval(format!(
                "Message body: {len} bytes is over queue {queue}'s maximum message size of {max} bytes"
            )));
        }
        let wanted = match ctl.delivery {
            Some(Qos::Persistent) => true,
            Some(Qos::NonPersistent) => false,
            Some(Qos::Default) | None => q.def.delivery == DeliveryPolicy::Persist,
        };
        let persistent = attrs.persistence.stores(wanted);
        Ok(Admission { persistent, downgraded: wanted && !persistent })
    }

    /// Refuses a dequeue (or a peek) of a queue whose dequeue attribute is off.
    pub(super) fn check_dequeue_enabled(&self, inner: &Inner, queue: &str) -> QmResult<()> {
        match inner.index.queues.get(queue) {
            Some(q) if !q.def.attrs.dequeue_enabled => Err(QmError::new(
                Diagnostic::DequeueDisabled,
                format!("Queue {queue} does not give out messages now (qchange -D on allows it)"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether an enqueue holding `ticket` in the queue's line (none: a newcomer) may add a
    /// message now: the queue is under its maximum length by more than the waiters ahead.
    /// A newcomer that may wait joins the line. Answers the queue's room notification to
    /// wait on when there is no room, or the refusal.
    pub(super) fn claim_room(
        &self,
        inner: &mut Inner,
        queue: &str,
        ticket: &mut Option<u64>,
        may_wait: bool,
    ) -> QmResult<Option<Arc<Notify>>> {
        let q = inner.index.queues.get_mut(queue).ok_or_else(|| bad_queue(queue, &self.name))?;
        let Some(max) = q.def.attrs.max_messages else {
            leave(q, ticket);
            return Ok(None);
        };
        let ahead = match ticket {
            Some(t) => q.line.iter().position(|x| x == t).unwrap_or(0),
            None => q.line.len(),
        } as u64;
        if length(q) + ahead < max {
            leave(q, ticket);
            // The next in line may fit too.
            if !q.line.is_empty() {
                q.room.notify_waiters();
            }
            return Ok(None);
        }
        if !may_wait {
            return Err(full(queue, max, None));
        }
        if ticket.is_none() {
            q.next_ticket += 1;
            q.line.push_back(q.next_ticket);
            *ticket = Some(q.next_ticket);
        }
        Ok(Some(q.room.clone()))
    }

    /// Leaves the line of `queue` (an enqueue that gave up); the next one may have room.
    pub(super) fn leave_line(&self, queue: &str, ticket: &mut Option<u64>) {
        let mut inner = self.lock();
        if let Some(q) = inner.index.queues.get_mut(queue) {
            leave(q, ticket);
            q.room.notify_waiters();
        }
    }

    /// Notes a committed enqueue or dequeue on `queue`; now and then the time goes to disk.
    pub(super) fn touch(&self, inner: &mut Inner, queue: &str) {
        let now = now_secs();
        let Some(q) = inner.index.queues.get_mut(queue) else { return };
        q.last_activity = now;
        if now < q.activity_saved + ACTIVITY_SAVE_EVERY {
            return;
        }
        q.activity_saved = now;
        // Fire and forget: it waits for the next group like any deferred state value.
        drop(self.send(vec![WriteOp::State {
            tables: self.tables.clone(),
            key: format!("{ACTIVITY_PREFIX}{queue}"),
            value: now.to_be_bytes().to_vec(),
        }]));
    }

    /// The last activity of `queue` and the enqueues waiting for room on it.
    pub fn activity(&self, queue: &str) -> (u64, u64) {
        let inner = self.lock();
        inner
            .index
            .queues
            .get(queue)
            .map_or((0, 0), |q| (q.last_activity.max(q.def.attrs.created), q.line.len() as u64))
    }

    /// The queue `name` names: itself, or the queue it is an alias of.
    pub fn canonical(&self, name: &str) -> Option<String> {
        canonical_in(&self.lock(), name)
    }

    /// Whether a name a request gives may be an alias of one of these queues: not while
    /// none was ever given one, and then every name is a queue's own or no queue's.
    pub fn may_alias(&self) -> bool {
        self.aliased.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The queues whose empty idle expiration has passed at `now`.
    pub fn idle_expired(&self, now: u64) -> Vec<String> {
        let inner = self.lock();
        inner
            .index
            .queues
            .values()
            .filter(|q| idle_past(q, now))
            .map(|q| q.def.name.clone())
            .collect()
    }
}

/// Whether a queue is empty (nothing committed, nothing on its way in, no enqueue waiting
/// for room) and has been idle for its empty idle expiration.
pub fn idle_past(q: &QueueState, now: u64) -> bool {
    q.def.attrs.idle_expiry.is_some_and(|idle| {
        length(q) == 0
            && q.line.is_empty()
            && q.last_activity.max(q.def.attrs.created).saturating_add(idle) <= now
    })
}

/// The queue `name` names in `inner`: itself, or the queue it is an alias of.
pub fn canonical_in(inner: &Inner, name: &str) -> Option<String> {
    if inner.index.queues.contains_key(name) {
        return Some(name.to_string());
    }
    inner.index.queues.values().find(|q| q.def.answers_to(name)).map(|q| q.def.name.clone())
}

/// Messages on the queue, committed or on their way in.
fn length(q: &QueueState) -> u64 {
    q.usage.messages() + q.pending
}

fn leave(q: &mut QueueState, ticket: &mut Option<u64>) {
    if let Some(t) = ticket.take() {
        q.line.retain(|x| *x != t);
    }
}

/// Restores a queue's last activity from its state value.
pub fn restore_activity(index: &mut Index, queue: &str, value: &[u8]) {
    let bytes: [u8; 8] = value.try_into().unwrap_or([0; 8]);
    if let Some(q) = index.queues.get_mut(queue) {
        let at = u64::from_be_bytes(bytes);
        q.last_activity = q.last_activity.max(at);
        q.activity_saved = q.last_activity;
    }
}
