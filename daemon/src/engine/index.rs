//! The in-memory index of one queue space: every message's record and state, each queue's
//! ready messages in order, and the timers for availability and expiry.
//!
//! Everything here is O(log n) in the number of messages: ready messages sit in a B-tree by
//! order key, correlation ids map to their own ordered sets, and timers are ordered sets of
//! (time, seq). Nothing scans a queue.

use super::record::{MessageMeta, OrderKey};
use qm_common::message::MessageState;
use qm_common::order::SortKey;
use qm_common::queue::{QueueDef, QueueUsage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use tokio::sync::Notify;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Ready,
    /// Not available before `meta.available_us`.
    Waiting,
    /// Taken by transaction `txid` (or by a call that is committing its dequeue).
    Locked(u64),
    /// Enqueued by transaction `txid`, not committed yet.
    Uncommitted(u64),
}

impl EntryState {
    pub fn public(self) -> MessageState {
        match self {
            EntryState::Ready => MessageState::Ready,
            EntryState::Waiting => MessageState::Waiting,
            EntryState::Locked(_) => MessageState::Locked,
            EntryState::Uncommitted(_) => MessageState::Uncommitted,
        }
    }
}

/// A message in memory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: MessageMeta,
    pub state: EntryState,
    /// Kept in memory for non-persistent messages, and for persistent ones until their
    /// enqueue is committed.
    pub body: Option<Arc<[u8]>>,
}

/// One queue's definition, ready messages and usage.
pub struct QueueState {
    pub def: QueueDef,
    pub ready: BTreeMap<OrderKey, u64>,
    pub corrids: HashMap<Vec<u8>, BTreeSet<OrderKey>>,
    /// Committed messages (ready, waiting or locked).
    pub usage: QueueUsage,
    /// Dequeues that took a higher-priority message while a lower one waited.
    pub streak: u32,
    /// Counter for `TPQTOP` placements: newer tops come first.
    pub tops: i64,
    /// Woken whenever a message becomes ready.
    pub notify: Arc<Notify>,
    /// Whether each limit set (persistent, non-persistent) may fire again.
    pub armed: [bool; 2],
    /// Committed messages by enqueue time, so the oldest one's age is found without a scan.
    pub by_age: BTreeSet<(u64, u64)>,
    /// What happened on the queue since its queue space was loaded.
    pub counters: QueueCounters,
}

/// Events of one queue since its queue space was loaded, for `/metrics`. Counted under the
/// queue space's lock, which every such event holds already: they cost an addition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Messages whose enqueue was committed.
    pub enqueued: u64,
    /// Messages whose dequeue was committed (taken off the queue for good).
    pub dequeued: u64,
    /// Dequeues rolled back (each counts one more retry on its message).
    pub retried: u64,
    /// Messages moved from this queue to the error queue.
    pub to_error: u64,
    /// Messages that expired on this queue.
    pub expired: u64,
    /// High limits reached (threshold firings, with or without a command).
    pub firings: u64,
}

impl QueueState {
    pub fn new(def: QueueDef) -> Self {
        QueueState {
            def,
            ready: BTreeMap::new(),
            corrids: HashMap::new(),
            usage: QueueUsage::default(),
            streak: 0,
            tops: 0,
            notify: Arc::new(Notify::new()),
            armed: [true, true],
            by_age: BTreeSet::new(),
            counters: QueueCounters::default(),
        }
    }

    fn insert_ready(&mut self, key: OrderKey, seq: u64, corrid: &[u8]) {
        self.ready.insert(key, seq);
        if !corrid.is_empty() {
            self.corrids.entry(corrid.to_vec()).or_default().insert(key);
        }
    }

    fn remove_ready(&mut self, key: &OrderKey, corrid: &[u8]) -> bool {
        let removed = self.ready.remove(key).is_some();
        if removed
            && !corrid.is_empty()
            && let Some(set) = self.corrids.get_mut(corrid)
        {
            set.remove(key);
            if set.is_empty() {
                self.corrids.remove(corrid);
            }
        }
        removed
    }

    /// The next message a plain dequeue takes, applying Tuxedo's rule that a lower-priority
    /// message goes out after every ten higher ones while it waits.
    pub fn first(&self) -> Option<(OrderKey, u64)> {
        let (&key, &seq) = self.ready.first_key_value()?;
        if key.top != 0
            || self.def.order.keys.first() != Some(&SortKey::Priority)
            || self.streak < 10
        {
            return Some((key, seq));
        }
        let after_level = OrderKey {
            top: 0,
            parts: [key.parts[0], i64::MAX, i64::MAX],
            tie: i64::MAX,
            sub: i64::MAX,
            seq: u64::MAX,
        };
        let lower = self.ready.range((Bound::Excluded(after_level), Bound::Unbounded)).next();
        Some(lower.map_or((key, seq), |(&k, &s)| (k, s)))
    }

    /// Counts a plain dequeue of `taken` for the starvation rule.
    pub fn count_dequeue(&mut self, taken: &OrderKey) {
        if self.def.order.keys.first() != Some(&SortKey::Priority) || taken.top != 0 {
            return;
        }
        let lower_waits =
            self.ready.last_key_value().is_some_and(|(k, _)| k.parts[0] > taken.parts[0]);
        let took_top_level =
            self.ready.first_key_value().is_none_or(|(k, _)| k.parts[0] >= taken.parts[0]);
        if lower_waits && took_top_level {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
    }

    /// The first ready message with this correlation id.
    pub fn first_with_corrid(&self, corrid: &[u8]) -> Option<(OrderKey, u64)> {
        let key = *self.corrids.get(corrid)?.first()?;
        self.ready.get(&key).map(|&seq| (key, seq))
    }
}

/// Capacity in use and reserved, across a queue space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub messages: u64,
    pub blocks: u64,
    pub np_bytes: u64,
}

/// The whole in-memory state of a queue space.
pub struct Index {
    pub queues: HashMap<String, QueueState>,
    pub msgs: HashMap<u64, Entry>,
    pub waiting: BTreeSet<(u64, u64)>,
    pub expiring: BTreeSet<(u64, u64)>,
    /// Committed and uncommitted messages, for capacity checks.
    pub capacity: Capacity,
    pub next_seq: u64,
    /// Queues whose usage changed since their limits were last checked.
    pub dirty: std::collections::HashSet<String>,
    /// The msgid high-water mark on disk (or on its way there): no msgid below it is
    /// ever handed out again.
    pub reserved: u64,
}

impl Index {
    pub fn new(defs: Vec<QueueDef>) -> Self {
        Index {
            queues: defs.into_iter().map(|d| (d.name.clone(), QueueState::new(d))).collect(),
            msgs: HashMap::new(),
            waiting: BTreeSet::new(),
            expiring: BTreeSet::new(),
            capacity: Capacity::default(),
            next_seq: 1,
            dirty: Default::default(),
            reserved: 0,
        }
    }

    /// Adds a message in `state`; committed states count in its queue's usage.
    pub fn insert(&mut self, seq: u64, entry: Entry, blocks: u64) {
        let meta = &entry.meta;
        self.capacity.messages += 1;
        if meta.persistent {
            self.capacity.blocks += blocks;
        } else {
            self.capacity.np_bytes += meta.body_len;
        }
        if let Some(exp) = meta.expires_us {
            self.expiring.insert((exp, seq));
        }
        let committed = !matches!(entry.state, EntryState::Uncommitted(_));
        self.msgs.insert(seq, entry);
        if committed {
            self.count(seq, blocks, true);
        }
        self.place(seq);
    }

    /// The counters of `queue`, if it exists.
    pub fn counters(&mut self, queue: &str) -> Option<&mut QueueCounters> {
        self.queues.get_mut(queue).map(|q| &mut q.counters)
    }

    /// Counts (or uncounts) a committed message in its queue's usage.
    fn count(&mut self, seq: u64, blocks: u64, add: bool) {
        let Some(entry) = self.msgs.get(&seq) else { return };
        self.dirty.insert(entry.meta.queue.clone());
        let Some(q) = self.queues.get_mut(&entry.meta.queue) else { return };
        let age_key = (entry.meta.enqueued_us, seq);
        if add {
            q.by_age.insert(age_key);
        } else {
            q.by_age.remove(&age_key);
        }
        let u = &mut q.usage;
        let (len, sign) = (entry.meta.body_len, add);
        let apply = |v: &mut u64, by: u64| if sign { *v += by } else { *v = v.saturating_sub(by) };
        if entry.meta.persistent {
            apply(&mut u.persistent_messages, 1);
            apply(&mut u.persistent_bytes, len);
            apply(&mut u.blocks, blocks);
        } else {
            apply(&mut u.nonpersistent_messages, 1);
            apply(&mut u.nonpersistent_bytes, len);
        }
    }

    /// Puts a Ready or Waiting message where it belongs (ready set or waiting timer).
    fn place(&mut self, seq: u64) {
        let Some(entry) = self.msgs.get(&seq) else { return };
        match entry.state {
            EntryState::Ready => {
                let (key, corrid, queue) =
                    (entry.meta.key, entry.meta.corrid.clone(), entry.meta.queue.clone());
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.insert_ready(key, seq, &corrid);
                    q.notify.notify_waiters();
                }
            }
            EntryState::Waiting => {
                self.waiting.insert((entry.meta.available_us, seq));
            }
            _ => {}
        }
    }

    /// Takes a message out of the ready set or the waiting timer (not out of the index).
    pub fn unplace(&mut self, seq: u64) {
        let Some(entry) = self.msgs.get(&seq) else { return };
        match entry.state {
            EntryState::Ready => {
                let (key, corrid, queue) =
                    (entry.meta.key, entry.meta.corrid.clone(), entry.meta.queue.clone());
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.remove_ready(&key, &corrid);
                }
            }
            EntryState::Waiting => {
                self.waiting.remove(&(entry.meta.available_us, seq));
            }
            _ => {}
        }
    }

    /// Changes a message's state, moving it between the ready set and the timer.
    pub fn set_state(&mut self, seq: u64, state: EntryState, blocks: u64) {
        let Some(old) = self.msgs.get(&seq).map(|e| e.state) else { return };
        self.unplace(seq);
        let was_committed = !matches!(old, EntryState::Uncommitted(_));
        if let Some(e) = self.msgs.get_mut(&seq) {
            e.state = state;
        }
        if !was_committed && !matches!(state, EntryState::Uncommitted(_)) {
            self.count(seq, blocks, true);
        }
        self.place(seq);
    }

    /// Ready or Waiting, by availability time.
    pub fn settle_state(meta: &MessageMeta, now: u64) -> EntryState {
        if meta.available_us > now { EntryState::Waiting } else { EntryState::Ready }
    }

    /// Removes a message entirely; returns it.
    pub fn remove(&mut self, seq: u64, blocks: u64) -> Option<Entry> {
        let state = self.msgs.get(&seq)?.state;
        self.unplace(seq);
        if !matches!(state, EntryState::Uncommitted(_)) {
            self.count(seq, blocks, false);
        }
        let entry = self.msgs.remove(&seq)?;
        self.capacity.messages = self.capacity.messages.saturating_sub(1);
        if entry.meta.persistent {
            self.capacity.blocks = self.capacity.blocks.saturating_sub(blocks);
        } else {
            self.capacity.np_bytes = self.capacity.np_bytes.saturating_sub(entry.meta.body_len);
        }
        if let Some(exp) = entry.meta.expires_us {
            self.expiring.remove(&(exp, seq));
        }
        Some(entry)
    }

    /// Replaces a message's record (new queue, priority, times), re-placing it.
    pub fn update_meta(&mut self, seq: u64, meta: MessageMeta, blocks: u64) {
        let Some(state) = self.msgs.get(&seq).map(|e| e.state) else { return };
        let committed = !matches!(state, EntryState::Uncommitted(_));
        self.unplace(seq);
        if committed {
            self.count(seq, blocks, false);
        }
        if let Some(e) = self.msgs.get_mut(&seq) {
            if let Some(exp) = e.meta.expires_us {
                self.expiring.remove(&(exp, seq));
            }
            if let Some(exp) = meta.expires_us {
                self.expiring.insert((exp, seq));
            }
            e.meta = meta;
        }
        if committed {
            self.count(seq, blocks, true);
        }
        self.place(seq);
    }

    /// Messages whose availability time has come, in time order.
    pub fn due(&self, now: u64) -> Vec<u64> {
        self.waiting.range(..=(now, u64::MAX)).map(|&(_, seq)| seq).collect()
    }

    /// Messages whose expiration has come, in time order.
    pub fn expired(&self, now: u64) -> Vec<u64> {
        self.expiring.range(..=(now, u64::MAX)).map(|&(_, seq)| seq).collect()
    }

    /// The earliest time a timer needs attention.
    pub fn next_timer(&self) -> Option<u64> {
        let w = self.waiting.first().map(|&(t, _)| t);
        let e = self.expiring.first().map(|&(t, _)| t);
        w.into_iter().chain(e).min()
    }
}
