//! Groups of message writes that are durable in the journal and not yet applied to redb.
//!
//! A group holding only message writes (a new message, a new record for one, a message
//! becoming ready, a removal) and state values (the msgid high-water mark, threshold
//! states: only the engines read them, after a settle) is made durable by its journal record alone; redb gets it
//! later, with every other group deferred since, in one commit: when the set has grown
//! (see [`super::writer`]), at each checkpoint, and before anything reads or writes redb
//! outside the queue engines ([`crate::storage::handle::DbFile::settle`]). A message
//! enqueued and dequeued in between never reaches redb at all: its writes cancel out.
//! Under load most messages live that short, so most groups cost one journal append and
//! no B-tree work; on a deep queue the writes that do reach redb are applied thousands at
//! a time, each leaf and branch copied once per commit instead of once per group.
//!
//! What redb does not hold yet, the engines do: a message stays in memory (resident, its
//! body included) until the commit that applies its last write, and a removed one leaves a
//! mark that hides it on disk until then (see [`super::index::Index::drain`]). Each such
//! commit moves the file's applied mark to the LSN of the last group it holds
//! ([`crate::storage::handle::DbFile::applied`]), which the engines watch for that.

use super::FastMap;
use super::applier::Applying;
use super::writer::{
    DEFERRED_WRITES_PER_MIB, WriteOp, op_room, read_body_at, stored_body_in, stored_messages,
};
use crate::storage::handle::Db;
use qm_common::QmResult;
use redb::ReadableDatabase;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The messages enqueued by deferred groups, by queue space and sequence number.
pub type Enqueued = FastMap<String, FastMap<u64, Fresh>>;

/// A message whose enqueue is deferred.
pub struct Fresh {
    /// Its body.
    body: Arc<[u8]>,
    /// The disk room its writes were counted for.
    room: u64,
    /// Where its enqueue is among the deferred writes (counted from the first write ever
    /// deferred, as `Deferred::first` is), and its later ones (a new record, becoming
    /// ready): a removal deferred with them takes them all out.
    at: u64,
    later: Vec<u64>,
}

impl Fresh {
    /// Its body.
    pub fn body(&self) -> &Arc<[u8]> {
        &self.body
    }
}

/// The deferred writes of one redb file, in the order they were made.
#[derive(Default)]
pub struct Deferred {
    /// The writes, in order; `None` where one was taken out because it cancelled out: the
    /// writes of a message enqueued and removed while deferred go at the removal, so that
    /// its body is let go of then, and the hand-over to the applier has nothing to sort.
    ops: VecDeque<Option<WriteOp>>,
    /// How many writes were deferred before `ops[0]`.
    first: u64,
    /// The groups `ops` came from, oldest first: how many writes each, and its LSN.
    groups: VecDeque<(usize, u64)>,
    /// Messages enqueued by deferred writes, by queue space and sequence number.
    fresh: FastMap<String, FastMap<u64, Fresh>>,
    /// Disk room the writes that will reach redb may need there.
    room: u64,
}

impl Deferred {
    /// Whether a group of jobs may be deferred: message writes and state values only.
    /// Definitions and records go to redb at once, with everything deferred before them.
    pub fn takes<'a>(mut jobs: impl Iterator<Item = &'a [WriteOp]>) -> bool {
        jobs.all(|ops| {
            ops.iter().all(|op| {
                matches!(
                    op,
                    WriteOp::Put { .. }
                        | WriteOp::Delete { .. }
                        | WriteOp::Ready { .. }
                        | WriteOp::State { .. }
                )
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Writes deferred, counting the enqueues that cancelled out (not the removals that
    /// cancelled them, which are never kept).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Disk room the writes that will reach redb may need there.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// The bodies a group's removals take, job by job, as applying it would return them:
    /// from a deferred enqueue when there is one, or one being applied (`applying`), else
    /// from redb.
    pub fn removed<'a>(
        &self,
        db: &Db,
        jobs: impl Iterator<Item = &'a [WriteOp]>,
        applying: Option<&Applying>,
    ) -> QmResult<Vec<Vec<Option<Vec<u8>>>>> {
        let mut read = None;
        // The table of stored messages of each queue space read from, opened once.
        let mut opened = HashMap::new();
        let mut results = Vec::new();
        // Enqueued earlier in the same group.
        let mut group: FastMap<(&str, u64), &Arc<[u8]>> = FastMap::default();
        for ops in jobs {
            let mut removed = Vec::new();
            for op in ops {
                match op {
                    WriteOp::Put { tables, seq, body: Some(body), .. } => {
                        group.insert((tables.qspace.as_str(), *seq), body);
                    }
                    WriteOp::Delete { tables, seq, body_at, .. } => {
                        if let Some(body) = group.remove(&(tables.qspace.as_str(), *seq)) {
                            removed.push(Some(body.to_vec()));
                            continue;
                        }
                        if let Some(fresh) = self.fresh(&tables.qspace, *seq) {
                            removed.push(Some(fresh.body.to_vec()));
                            continue;
                        }
                        // Its commit may not be made yet.
                        if let Some(body) = applying.and_then(|a| a.body(&tables.qspace, *seq)) {
                            removed.push(Some(body.to_vec()));
                            continue;
                        }
                        if let Some(body) =
                            body_at.as_ref().and_then(|at| read_body_at(db.bodies(), at))
                        {
                            removed.push(Some(body));
                            continue;
                        }
                        if read.is_none() {
                            // Taken first: the bodies the transaction points at stay readable.
                            let reading = db.bodies().reading();
                            let txn = db.begin_read().map_err(|e| db.explain("reading", e))?;
                            read = Some((reading, txn));
                        }
                        let (_, txn) = read.as_ref().expect("just begun");
                        let qspace = tables.qspace.as_str();
                        if !opened.contains_key(qspace) {
                            opened.insert(qspace, stored_messages(txn, tables)?);
                        }
                        let body = match &opened[qspace] {
                            Some(table) => stored_body_in(txn, table, db.bodies(), tables, *seq)?,
                            None => None,
                        };
                        removed.push(body);
                    }
                    _ => {}
                }
            }
            results.push(removed);
        }
        Ok(results)
    }

    fn fresh(&self, qspace: &str, seq: u64) -> Option<&Fresh> {
        self.fresh.get(qspace)?.get(&seq)
    }

    /// Adds the group whose journal record, with LSN `lsn`, is durable.
    pub fn push<'a>(&mut self, jobs: impl Iterator<Item = &'a [WriteOp]>, lsn: u64) {
        let before = self.ops.len();
        self.push_ops(jobs);
        self.groups.push_back((self.ops.len() - before, lsn));
    }

    fn push_ops<'a>(&mut self, jobs: impl Iterator<Item = &'a [WriteOp]>) {
        for op in jobs.flatten() {
            let at = self.first + self.ops.len() as u64;
            let room = op_room(op);
            match op {
                WriteOp::Put { tables, seq, body: Some(body), .. } => {
                    let fresh = Fresh { body: body.clone(), room, at, later: Vec::new() };
                    match self.fresh.get_mut(&tables.qspace) {
                        Some(map) => drop(map.insert(*seq, fresh)),
                        None => {
                            self.fresh
                                .insert(tables.qspace.clone(), FastMap::from_iter([(*seq, fresh)]));
                        }
                    }
                }
                WriteOp::Delete { tables, seq, .. } => {
                    let fresh = self.fresh.get_mut(&tables.qspace).and_then(|m| m.remove(seq));
                    if let Some(fresh) = fresh {
                        self.cancel(fresh);
                        continue;
                    }
                }
                WriteOp::Put { tables, seq, .. } | WriteOp::Ready { tables, seq } => {
                    let fresh = self.fresh.get_mut(&tables.qspace).and_then(|m| m.get_mut(seq));
                    if let Some(fresh) = fresh {
                        fresh.later.push(at);
                        fresh.room += room;
                    }
                }
                _ => {}
            }
            self.room += room;
            self.ops.push_back(Some(op.clone()));
        }
    }

    /// Takes out the writes of a message enqueued and removed while deferred.
    fn cancel(&mut self, fresh: Fresh) {
        for at in std::iter::once(fresh.at).chain(fresh.later) {
            if let Some(slot) =
                at.checked_sub(self.first).and_then(|i| self.ops.get_mut(i as usize))
            {
                *slot = None;
            }
        }
        self.room = self.room.saturating_sub(fresh.room);
    }

    /// The writes that still have an effect, in order.
    pub fn surviving(&self) -> impl Iterator<Item = &WriteOp> + Clone {
        self.ops.iter().flatten()
    }

    /// Takes out the first groups, at least one and no more than make `n` writes when
    /// there are several, for a commit of their own ahead of the rest (after a backup held
    /// the file, the set is too large to apply at once without holding up every writer):
    /// the writes that still have an effect, and the LSN of the last group taken. A
    /// message whose enqueue is taken out is no longer fresh: a later removal reads it from
    /// redb, which holds it by then. The writes of a message both enqueued and removed
    /// stay cancelled.
    pub fn take_groups(&mut self, n: usize) -> (Vec<WriteOp>, Option<u64>) {
        let (mut count, mut lsn) = (0, None);
        while let Some(&(ops, at)) = self.groups.front() {
            if lsn.is_some() && count + ops > n {
                break;
            }
            self.groups.pop_front();
            count += ops;
            lsn = Some(at);
        }
        (self.take_front(count), lsn)
    }

    fn take_front(&mut self, n: usize) -> Vec<WriteOp> {
        let n = n.min(self.ops.len());
        let front: Vec<WriteOp> = self.ops.drain(..n).flatten().collect();
        self.first += n as u64;
        let mut taken = Vec::with_capacity(front.len());
        for op in front {
            self.room = self.room.saturating_sub(op_room(&op));
            if let WriteOp::Put { tables, seq, body: Some(_), .. } = &op
                && let Some(map) = self.fresh.get_mut(&tables.qspace)
            {
                map.remove(seq);
            }
            taken.push(op);
        }
        taken
    }

    /// Takes out every group, for the applier: the writes that still have an effect, in
    /// order, the bodies of the messages they enqueue, and the room they may need. A later
    /// removal of one of those messages is then applied after them, as in
    /// [`Deferred::take_groups`].
    pub fn take_all(&mut self) -> (Vec<WriteOp>, Enqueued, u64) {
        const USUAL_MAX: usize =
            DEFERRED_WRITES_PER_MIB * crate::storage::journal::DEFAULT_CHECKPOINT_MIB as usize;
        let room = self.room;
        // Moved, not copied: the writer does this at every hand-over. The next set starts
        // as large as this one, rather than grow to it by doubling into fresh pages (but
        // no larger than a set usually gets: one that grew while a backup held the file
        // is not kept).
        let next = VecDeque::with_capacity(self.ops.len().min(USUAL_MAX));
        let all = std::mem::replace(&mut self.ops, next);
        self.first += all.len() as u64;
        let ops: Vec<WriteOp> = all.into_iter().flatten().collect();
        // Each queue space's map is left empty as large as it was, for the same reason.
        let bodies = self
            .fresh
            .iter_mut()
            .map(|(qspace, msgs)| {
                let kept = msgs.len().min(USUAL_MAX);
                let next = FastMap::with_capacity_and_hasher(kept, Default::default());
                (qspace.clone(), std::mem::replace(msgs, next))
            })
            .collect();
        self.groups.clear();
        self.room = 0;
        (ops, bodies, room)
    }

    /// Forgets everything: it was applied (or the journal it came from was replayed).
    pub fn clear(&mut self) {
        self.first += self.ops.len() as u64;
        self.ops.clear();
        self.groups.clear();
        self.fresh.clear();
        self.room = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tables::QueueSpaceTables;

    fn put(tables: &Arc<QueueSpaceTables>, seq: u64) -> WriteOp {
        WriteOp::Put {
            tables: tables.clone(),
            seq,
            meta: vec![1, 2, 3],
            body: Some(Arc::from(&b"body"[..])),
            body_len: 4,
            blocks: 1,
            waiting: false,
        }
    }

    fn delete(tables: &Arc<QueueSpaceTables>, seq: u64) -> WriteOp {
        WriteOp::Delete { tables: tables.clone(), seq, blocks: 1, body_at: None }
    }

    fn seqs<'a>(ops: impl Iterator<Item = &'a WriteOp>) -> Vec<(char, u64)> {
        ops.map(|op| match op {
            WriteOp::Put { seq, .. } => ('+', *seq),
            WriteOp::Delete { seq, .. } => ('-', *seq),
            _ => ('?', 0),
        })
        .collect()
    }

    #[test]
    fn a_removal_after_its_enqueue_was_taken_out_still_applies() {
        let tables = Arc::new(QueueSpaceTables::new("QS"));
        let mut deferred = Deferred::default();
        deferred.push(std::iter::once(&[put(&tables, 1)][..]), 7);
        deferred.push(std::iter::once(&[put(&tables, 2)][..]), 8);
        let (taken, lsn) = deferred.take_groups(1);
        assert_eq!((seqs(taken.iter()), lsn), (vec![('+', 1)], Some(7)));
        // Message 1 is in redb now: its removal must reach redb too, not cancel out.
        deferred.push(std::iter::once(&[delete(&tables, 1)][..]), 9);
        assert_eq!(seqs(deferred.surviving()), [('+', 2), ('-', 1)]);
        assert!(deferred.room() > 0);
    }

    #[test]
    fn a_message_enqueued_and_removed_lets_go_of_its_writes_and_body_at_once() {
        let tables = Arc::new(QueueSpaceTables::new("QS"));
        let mut deferred = Deferred::default();
        let body: Arc<[u8]> = Arc::from(&b"body"[..]);
        let mut enqueue = put(&tables, 1);
        if let WriteOp::Put { body: b, waiting, .. } = &mut enqueue {
            (*b, *waiting) = (Some(body.clone()), true);
        }
        deferred.push(std::iter::once(&[enqueue, put(&tables, 2)][..]), 7);
        let ready = WriteOp::Ready { tables: tables.clone(), seq: 1 };
        deferred.push(std::iter::once(&[ready][..]), 8);
        let room = deferred.room();
        deferred.push(std::iter::once(&[delete(&tables, 1)][..]), 9);
        assert_eq!(Arc::strong_count(&body), 1, "the removal let go of the body");
        assert_eq!(seqs(deferred.surviving()), [('+', 2)], "its enqueue and ready went too");
        assert!(deferred.room() < room, "and the room counted for them");
        let (ops, bodies, _) = deferred.take_all();
        assert_eq!(seqs(ops.iter()), [('+', 2)]);
        assert!(bodies.get("QS").is_some_and(|m| !m.contains_key(&1) && m.contains_key(&2)));
    }

    #[test]
    fn steps_take_whole_groups() {
        let tables = Arc::new(QueueSpaceTables::new("QS"));
        let mut deferred = Deferred::default();
        deferred.push(std::iter::once(&[put(&tables, 1), put(&tables, 2), put(&tables, 3)][..]), 1);
        deferred.push(std::iter::once(&[put(&tables, 4)][..]), 2);
        deferred.push(std::iter::once(&[put(&tables, 5)][..]), 3);
        // One group larger than the step goes whole; then as many as fit.
        let (taken, lsn) = deferred.take_groups(2);
        assert_eq!((taken.len(), lsn), (3, Some(1)));
        let (taken, lsn) = deferred.take_groups(2);
        assert_eq!((taken.len(), lsn), (2, Some(3)));
    }

    #[test]
    fn all_is_handed_over_but_what_cancels_out() {
        let tables = Arc::new(QueueSpaceTables::new("QS"));
        let mut deferred = Deferred::default();
        deferred.push(std::iter::once(&[put(&tables, 1), put(&tables, 2)][..]), 7);
        deferred.push(std::iter::once(&[delete(&tables, 1), put(&tables, 3)][..]), 8);
        let (ops, bodies, room) = deferred.take_all();
        assert_eq!(seqs(ops.iter()), [('+', 2), ('+', 3)], "message 1 came and went");
        let handed = |seq| bodies.get("QS").is_some_and(|m| m.contains_key(&seq));
        assert!(!handed(1) && handed(2) && handed(3), "the bodies a removal may ask for");
        assert!(room > 0);
        assert!(deferred.is_empty() && deferred.room() == 0);
        // Message 2 goes to redb with the groups handed over: its removal must follow it.
        deferred.push(std::iter::once(&[delete(&tables, 2)][..]), 9);
        assert_eq!(seqs(deferred.surviving()), [('-', 2)]);
    }

    #[test]
    fn a_message_enqueued_and_removed_while_deferred_stays_cancelled_across_steps() {
        let tables = Arc::new(QueueSpaceTables::new("QS"));
        let mut deferred = Deferred::default();
        deferred.push(std::iter::once(&[put(&tables, 1)][..]), 7);
        deferred.push(std::iter::once(&[put(&tables, 2), delete(&tables, 1)][..]), 8);
        // The enqueue of 1 goes out in the first step, cancelled; its removal with the next.
        let (taken, lsn) = deferred.take_groups(1);
        assert_eq!((seqs(taken.iter()), lsn), (vec![], Some(7)));
        let (taken, lsn) = deferred.take_groups(1);
        assert_eq!((seqs(taken.iter()), lsn), (vec![('+', 2)], Some(8)));
        assert!(deferred.is_empty());
        let (taken, lsn) = deferred.take_groups(1);
        assert_eq!((taken.len(), lsn), (0, None));
    }
}
