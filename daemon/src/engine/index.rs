//! The in-memory part of a queue space's index: each queue's counts, and the messages that
//! live in memory, with their order and timers.
//!
//! A committed persistent message lives on disk, in order ([`super::stored`]); in memory
//! are only the messages whose disk record is not the whole truth: non-persistent ones,
//! those in a transaction or being written, and those a transaction or a dequeue holds.
//! They are *resident*: for them memory decides, for the others the disk. A stored message
//! becomes resident when something takes or changes it ([`Index::adopt`]), and leaves once
//! redb holds its last write and it is free again ([`Index::evict`]); a removed one stays
//! hidden on disk until redb holds its removal ([`super::deferred`]). Counts cover every
//! committed message wherever it lives, so that neither move changes them.
//!
//! Everything here is O(log n) in the number of resident messages: ready ones sit in a
//! B-tree by order key, correlation ids map to their own ordered sets, and timers are
//! ordered sets of (time, seq).

use super::record::{MessageMeta, OrderKey};
use super::{FastMap, FastSet};
use crate::storage::bodies::BodyRef;
use qm_common::message::MessageState;
use qm_common::queue::{QueueDef, QueueUsage};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;

/// The holder of a message whose removal is on its way to disk (expired, or dropped after
/// its last retry): it stays resident until then, so no dequeue finds it on disk.
pub const GOING: u64 = u64::MAX - 1;

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
    /// Where its body was in the file's body segments when it was last read from disk, so
    /// that its dequeue reads the body there without looking its record up again. It may
    /// be out of date (compaction moves bodies), but what it points at never changes while
    /// the segment is there: a body's bytes are only ever appended, and checked by CRC.
    pub body_at: Option<BodyRef>,
}

/// Most evictions and removals one [`Index::drain`] carries out. After a backup held a
/// file, the engines learn at once of hundreds of thousands of messages that redb holds
/// now; carried out under one lock, they held every request up for seconds.
const DRAIN_STEP: usize = 1024;

/// A stored message as a queue's head holds it: its record, and where its body was then
/// (see [`Entry::body_at`]).
pub type Unread = (MessageMeta, Option<BodyRef>);

/// Most stored messages a queue's head holds.
pub const HEAD_MAX: usize = 256;

/// The first stored ready messages of a queue, in order, with their records: what the next
/// dequeues take, read from disk in one go rather than one at a time.
///
/// Once loaded it holds a prefix of the queue's stored ready messages that are not
/// resident: every such message that sorts before its last one is in it, and, when
/// `complete`, every such message at all. It is kept so as messages move: one made resident
/// leaves it, one that goes back to disk ready joins it when it sorts before its end.
#[derive(Debug, Default)]
pub struct Head {
    pub msgs: BTreeMap<OrderKey, Unread>,
    pub loaded: bool,
    pub complete: bool,
    /// Where the last batch read from disk ended: every stored ready message not resident
    /// that sorts at or before it is in `msgs`, so the next batch is read after it.
    pub read_to: Option<OrderKey>,
}

impl Head {
    /// A stored message became ready on disk alone.
    fn offer(&mut self, key: OrderKey, meta: &MessageMeta) {
        let inside = self.complete
            || self.msgs.last_key_value().is_some_and(|(last, _)| key < *last)
            || self.read_to.is_some_and(|to| key <= to);
        if !self.loaded || !inside {
            return;
        }
        self.msgs.insert(key, (meta.clone(), None));
        if self.msgs.len() > HEAD_MAX {
            self.msgs.pop_last();
            self.complete = false;
            self.read_to = self.msgs.last_key_value().map(|(k, _)| *k);
        }
    }

    /// Whether the head knows every stored ready message after `key`... up to its end:
    /// it holds one after it, or holds them all.
    pub fn covers(&self, key: &OrderKey) -> bool {
        self.loaded
            && (self.complete || self.msgs.last_key_value().is_some_and(|(last, _)| last > key))
    }
}

/// One queue's definition, resident ready messages and counts.
pub struct QueueState {
    pub def: QueueDef,
    /// Resident ready messages, in order.
    pub ready: BTreeMap<OrderKey, u64>,
    /// The first stored ready ones.
    pub head: Head,
    pub corrids: HashMap<Vec<u8>, BTreeSet<OrderKey>>,
    /// Committed messages (ready, waiting or locked), resident or stored.
    pub usage: QueueUsage,
    /// Committed messages not available yet, and of those the ones rolled back before.
    pub waiting: u64,
    pub retrying: u64,
    /// Dequeues that took a higher-priority message while a lower one waited.
    pub streak: u32,
    /// Counter for `TPQTOP` placements: newer tops come first.
    pub tops: i64,
    /// Woken whenever a message becomes ready.
    pub notify: Arc<Notify>,
    /// Whether each limit set (persistent, non-persistent) may fire again.
    pub armed: [bool; 2],
    /// Resident committed messages by enqueue time (the stored ones are in `age` on disk),
    /// so the oldest one's age is found without a scan.
    pub by_age: BTreeSet<(u64, u64)>,
    /// What happened on the queue since its queue space was loaded.
    pub counters: QueueCounters,
    /// Messages enqueued in open transactions (they count against the maximum length).
    pub pending: u64,
    /// Seconds since the epoch of the last committed enqueue or dequeue (0: none known).
    pub last_activity: u64,
    /// The last activity the disk was last told of.
    pub activity_saved: u64,
    /// Enqueues waiting for room, by ticket, in arrival order ([`super::attrs`]).
    pub line: std::collections::VecDeque<u64>,
    pub next_ticket: u64,
    /// Woken when the queue may have room again.
    pub room: Arc<Notify>,
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
            head: Head::default(),
            corrids: HashMap::new(),
            usage: QueueUsage::default(),
            waiting: 0,
            retrying: 0,
            streak: 0,
            tops: 0,
            notify: Arc::new(Notify::new()),
            armed: [true, true],
            by_age: BTreeSet::new(),
            counters: QueueCounters::default(),
            pending: 0,
            last_activity: 0,
            activity_saved: 0,
            line: Default::default(),
            next_ticket: 0,
            room: Arc::new(Notify::new()),
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
    pub queues: FastMap<String, QueueState>,
    pub msgs: FastMap<u64, Entry>,
    pub waiting: BTreeSet<(u64, u64)>,
    pub expiring: BTreeSet<(u64, u64)>,
    /// Committed and uncommitted messages, for capacity checks.
    pub capacity: Capacity,
    pub next_seq: u64,
    /// Queues whose usage changed since their limits were last checked.
    pub dirty: FastSet<String>,
    /// The msgid high-water mark on disk (or on its way there): no msgid below it is
    /// ever handed out again.
    pub reserved: u64,
    /// The earliest timer of a stored (not resident) message that may not have been seen
    /// yet; none when there is none.
    pub stored_timer: Option<u64>,
    /// The LSN up to which redb held every group when the lock was last taken
    /// ([`crate::storage::handle::DbFile::applied`]).
    pub applied: u64,
    /// The LSN of the last group acknowledged when the lock was last taken
    /// ([`crate::storage::handle::DbFile::horizon`]): at least that of every write
    /// answered before.
    pub horizon: u64,
    /// Messages to let go once redb holds their last write: by sequence number, the
    /// horizon when that write was acknowledged.
    evicting: FastMap<u64, u64>,
    /// Persistent messages removed whose removal redb may not hold yet: the disk must not
    /// show them meanwhile.
    gone: FastSet<u64>,
    /// Evictions and removals in the order they were asked, with that horizon.
    later: VecDeque<(u64, u64, bool)>,
}

impl Index {
    pub fn new(defs: Vec<QueueDef>) -> Self {
        Index {
            queues: defs.into_iter().map(|d| (d.name.clone(), QueueState::new(d))).collect(),
            msgs: FastMap::default(),
            waiting: BTreeSet::new(),
            expiring: BTreeSet::new(),
            capacity: Capacity::default(),
            next_seq: 1,
            dirty: Default::default(),
            reserved: 0,
            stored_timer: None,
            applied: 0,
            horizon: 0,
            evicting: FastMap::default(),
            gone: FastSet::default(),
            later: VecDeque::new(),
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
        self.msgs.insert(seq, entry);
        self.tally(seq, blocks, true);
        self.place(seq);
    }

    /// Makes stored message `seq` resident, in `state` (Ready or Waiting as stored, or
    /// taken at once): it is counted already.
    pub fn adopt(
        &mut self,
        seq: u64,
        meta: MessageMeta,
        state: EntryState,
        body_at: Option<BodyRef>,
    ) {
        if self.msgs.contains_key(&seq) {
            return;
        }
        let expires = meta.expires_us;
        if let Some(q) = self.queues.get_mut(&meta.queue) {
            q.head.msgs.remove(&meta.key);
        }
        self.msgs.insert(seq, Entry { meta, state, body: None, body_at });
        if let Some(exp) = expires {
            self.expiring.insert((exp, seq));
        }
        self.place(seq);
    }

    /// Lets a resident persistent message go back to living on disk alone, if it is still
    /// free then, once redb holds its last write, acknowledged before this call: the disk
    /// must show what memory shows (see [`super::deferred`]).
    pub fn evict(&mut self, seq: u64) {
        if self.msgs.get(&seq).is_some_and(|e| e.meta.persistent) {
            self.evicting.insert(seq, self.horizon);
            self.later.push_back((self.horizon, seq, false));
        }
    }

    /// Carries out the evictions and forgets the removals that redb holds now that it holds
    /// every group up to LSN `applied`: those asked at a horizon no later, at most
    /// [`DRAIN_STEP`] of them; the rest wait for the next call ([`Index::draining`]). Until
    /// then those messages stay resident, which is always safe: memory decides for them.
    pub fn drain(&mut self, applied: u64) {
        self.applied = applied;
        for _ in 0..DRAIN_STEP {
            let Some(&(at, seq, removed)) = self.later.front() else { break };
            if at > applied {
                break;
            }
            self.later.pop_front();
            if removed {
                self.gone.remove(&seq);
            } else if self.evicting.get(&seq) == Some(&at) {
                self.evicting.remove(&seq);
                self.evict_now(seq);
            }
        }
    }

    /// Whether evictions or removals that redb holds are still to be carried out.
    pub fn draining(&self) -> bool {
        self.later.front().is_some_and(|&(at, _, _)| at <= self.applied)
    }

    /// Lets a resident persistent message go back to living on disk alone at once, if it
    /// is free (ready or waiting): one that was only read from disk.
    pub fn evict_now(&mut self, seq: u64) {
        let Some(entry) = self.msgs.get(&seq) else { return };
        let free = matches!(entry.state, EntryState::Ready | EntryState::Waiting);
        if !free || !entry.meta.persistent {
            return;
        }
        self.unplace(seq);
        let Some(entry) = self.msgs.remove(&seq) else { return };
        let meta = &entry.meta;
        if let Some(q) = self.queues.get_mut(&meta.queue) {
            q.by_age.remove(&(meta.enqueued_us, seq));
            if entry.state == EntryState::Ready {
                q.head.offer(meta.key, meta);
            }
        }
        // Its timers are the disk's to watch from now on.
        let mut timers: Vec<u64> = meta.expires_us.into_iter().collect();
        if let Some(exp) = meta.expires_us {
            self.expiring.remove(&(exp, seq));
        }
        // A message ever scheduled may be waiting on disk even when due in memory.
        if entry.state == EntryState::Waiting || meta.available_us > meta.enqueued_us {
            timers.push(meta.available_us);
        }
        for at in timers {
            self.stored_timer = Some(self.stored_timer.map_or(at, |t| t.min(at)));
        }
    }

    /// The counters of `queue`, if it exists.
    pub fn counters(&mut self, queue: &str) -> Option<&mut QueueCounters> {
        self.queues.get_mut(queue).map(|q| &mut q.counters)
    }

    /// Counts (or uncounts) a committed message in its queue's usage, and a waiting one
    /// among its queue's waiting messages.
    fn tally(&mut self, seq: u64, blocks: u64, add: bool) {
        self.count(seq, blocks, add, true);
    }

    /// [`Index::tally`]; `by_age` false leaves the message's place among the resident ones
    /// by age as it is (a change of state between two committed states keeps it).
    fn count(&mut self, seq: u64, blocks: u64, add: bool, by_age: bool) {
        let Some(entry) = self.msgs.get(&seq) else { return };
        let Some(q) = self.queues.get_mut(&entry.meta.queue) else { return };
        if !add && !q.line.is_empty() {
            // Enqueues waiting for room look again.
            q.room.notify_waiters();
        }
        if matches!(entry.state, EntryState::Uncommitted(_)) {
            q.pending = if add { q.pending + 1 } else { q.pending.saturating_sub(1) };
            return;
        }
        if !self.dirty.contains(&entry.meta.queue) {
            self.dirty.insert(entry.meta.queue.clone());
        }
        let age_key = (entry.meta.enqueued_us, seq);
        if by_age && add {
            q.by_age.insert(age_key);
        } else if by_age {
            q.by_age.remove(&age_key);
        }
        let apply = |v: &mut u64, by: u64| if add { *v += by } else { *v = v.saturating_sub(by) };
        if entry.state == EntryState::Waiting {
            apply(&mut q.waiting, 1);
            apply(&mut q.retrying, u64::from(entry.meta.retries > 0));
        }
        let (u, len) = (&mut q.usage, entry.meta.body_len);
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
                if let Some(q) = self.queues.get_mut(&entry.meta.queue) {
                    q.insert_ready(entry.meta.key, seq, &entry.meta.corrid);
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
                if let Some(q) = self.queues.get_mut(&entry.meta.queue) {
                    q.remove_ready(&entry.meta.key, &entry.meta.corrid);
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
        if !self.msgs.contains_key(&seq) {
            return;
        }
        // A change asks for a new eviction once its own write is acknowledged.
        self.evicting.remove(&seq);
        self.unplace(seq);
        let committed = |s: &EntryState| !matches!(s, EntryState::Uncommitted(_));
        let by_age = !(committed(&self.msgs[&seq].state) && committed(&state));
        self.count(seq, blocks, false, by_age);
        if let Some(e) = self.msgs.get_mut(&seq) {
            e.state = state;
        }
        self.count(seq, blocks, true, by_age);
        self.place(seq);
    }

    /// Ready or Waiting, by availability time.
    pub fn settle_state(meta: &MessageMeta, now: u64) -> EntryState {
        if meta.available_us > now { EntryState::Waiting } else { EntryState::Ready }
    }

    /// Removes a message entirely; returns it. A persistent one stays hidden on disk until
    /// redb holds its removal: call this once the removal is acknowledged (or when the
    /// message was never written).
    pub fn remove(&mut self, seq: u64, blocks: u64) -> Option<Entry> {
        self.msgs.get(&seq)?;
        self.unplace(seq);
        self.tally(seq, blocks, false);
        let entry = self.msgs.remove(&seq)?;
        self.evicting.remove(&seq);
        if entry.meta.persistent {
            self.gone.insert(seq);
            self.later.push_back((self.horizon, seq, true));
        }
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
        if !self.msgs.contains_key(&seq) {
            return;
        }
        self.evicting.remove(&seq);
        self.unplace(seq);
        self.tally(seq, blocks, false);
        if let Some(e) = self.msgs.get_mut(&seq) {
            if let Some(exp) = e.meta.expires_us {
                self.expiring.remove(&(exp, seq));
            }
            if let Some(exp) = meta.expires_us {
                self.expiring.insert((exp, seq));
            }
            e.meta = meta;
        }
        self.tally(seq, blocks, true);
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
        w.into_iter().chain(e).chain(self.stored_timer).min()
    }

    /// Whether message `seq` is resident (memory, not the disk, says what it is), or
    /// removed while the disk may still show it.
    pub fn resident(&self, seq: u64) -> bool {
        self.msgs.contains_key(&seq) || self.gone.contains(&seq)
    }

    /// Every message for which memory, not the disk, decides (see [`Index::resident`]).
    pub fn resident_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.msgs.keys().chain(self.gone.iter()).copied()
    }

    /// Whether message `seq` was removed while the disk may still show it.
    pub fn gone(&self, seq: u64) -> bool {
        self.gone.contains(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64) -> MessageMeta {
        let meta = crate::engine::record::test_meta(50, seq);
        MessageMeta { key: OrderKey { seq, ..meta.key }, ..meta }
    }

    #[test]
    fn what_redb_holds_now_is_let_go_a_step_at_a_time() {
        let mut index = Index::new(Vec::new());
        // The removals are acknowledged by group 1 of the journal.
        index.horizon = 1;
        let n = 3 * DRAIN_STEP as u64 + 5;
        for seq in 1..=n {
            let entry =
                Entry { meta: meta(seq), state: EntryState::Ready, body: None, body_at: None };
            index.insert(seq, entry, 1);
            index.remove(seq, 1);
        }
        assert!(!index.draining(), "nothing is held by redb yet");
        assert!((1..=n).all(|seq| index.gone(seq)));
        index.drain(1);
        assert!(index.draining());
        assert_eq!((1..=n).filter(|&seq| index.gone(seq)).count() as u64, n - DRAIN_STEP as u64);
        let mut calls = 1;
        while index.draining() {
            index.drain(1);
            calls += 1;
        }
        assert_eq!(calls, 4);
        assert!((1..=n).all(|seq| !index.gone(seq)), "every removal redb holds is forgotten");
    }
}
