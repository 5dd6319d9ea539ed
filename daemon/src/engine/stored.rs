//! The order of a queue space's stored messages, kept on disk beside them.
//!
//! Four tables follow every stored message (names in [`QueueSpaceTables`]): its place in
//! its queue's order while it may be dequeued (`ready`, and `corrid` when it has a
//! correlation id), the times it becomes available or expires (`timers`), and its place
//! among its queue's messages by age (`age`) unless its place in `ready` already says it
//! ([`in_sequence`]); a fifth totals each queue. The writer keeps
//! them in the same redb transaction as the message itself ([`Maintained`]), deriving every
//! key from the message's record, so they cannot disagree with it. Loading a queue space
//! reads the totals and no message; a dequeue finds its message by reading the first key of
//! its queue's range ([`View`]). Nothing costs more with more messages but the depth of
//! the B-trees.
//!
//! Keys are bytes that sort as the values they encode: a queue name with its length first
//! (so no queue's keys are a prefix of another's), signed numbers with their sign bit
//! flipped, everything big-endian.

use super::index::Unread;
use super::record::{MessageMeta, OrderKey};
use crate::storage::handle::DbFile;
use crate::storage::tables::QueueSpaceTables;
use qm_common::device::message_blocks;
use qm_common::{QmError, QmResult};
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Bound;

/// Timer kinds: when a message becomes available, when it expires.
pub const AVAILABLE: u8 = 0;
pub const EXPIRES: u8 = 1;

/// Most bytes of an encoded order key (see [`push_order`]).
const ORDER_MAX: usize = 64;

fn keys(name: &str) -> TableDefinition<'_, &'static [u8], ()> {
    TableDefinition::new(name)
}

fn timers(name: &str) -> TableDefinition<'_, (u64, u8, u64), ()> {
    TableDefinition::new(name)
}

/// One queue's stored messages, totalled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub messages: u64,
    pub bytes: u64,
    pub blocks: u64,
    /// Those not available yet (scheduled, or in a retry delay)...
    pub waiting: u64,
    /// ...and of those, the ones rolled back at least once.
    pub retrying: u64,
    /// The most `TPQTOP` placements made (the next one goes before them all).
    pub tops: i64,
}

/// A change of totals, gathered over a group of writes and applied once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// The queue went (qdestroy): its totals start again from nothing.
    reset: bool,
    messages: i64,
    bytes: i64,
    blocks: i64,
    waiting: i64,
    retrying: i64,
    tops: i64,
}

impl Delta {
    fn message(meta: &MessageMeta, blocks: u64, waiting: bool, sign: i64) -> Delta {
        let waiting = i64::from(waiting);
        Delta {
            reset: false,
            messages: sign,
            bytes: sign * meta.body_len as i64,
            blocks: sign * blocks as i64,
            waiting: sign * waiting,
            retrying: sign * waiting * i64::from(meta.retries > 0),
            tops: meta.key.top.checked_neg().unwrap_or(0),
        }
    }

    /// The queue is gone: what came before does not count.
    pub fn reset() -> Delta {
        Delta { reset: true, ..Delta::default() }
    }

    pub fn add(&mut self, other: Delta) {
        if other.reset {
            *self = other;
            return;
        }
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.blocks += other.blocks;
        self.waiting += other.waiting;
        self.retrying += other.retrying;
        self.tops = self.tops.max(other.tops);
    }

    fn apply(self, base: Totals) -> Totals {
        let base = if self.reset { Totals::default() } else { base };
        let add = |v: u64, d: i64| v.saturating_add_signed(d);
        Totals {
            messages: add(base.messages, self.messages),
            bytes: add(base.bytes, self.bytes),
            blocks: add(base.blocks, self.blocks),
            waiting: add(base.waiting, self.waiting),
            retrying: add(base.retrying, self.retrying),
            tops: base.tops.max(self.tops),
        }
    }
}

fn prefix(queue: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + queue.len() + ORDER_MAX);
    out.extend_from_slice(&(queue.len() as u16).to_be_bytes());
    out.extend_from_slice(queue.as_bytes());
    out
}

/// A signed number in as few bytes as sort as it: a length byte (0x80 for zero, above for
/// positive numbers, below for negative ones, further from 0x80 the more bytes follow),
/// then the magnitude's significant bytes, in one's complement for a negative number. Most
/// parts of an order key are small or zero: a FIFO key takes 13 bytes instead of 56.
fn push_signed(out: &mut Vec<u8>, v: i64) {
    let m = v.unsigned_abs();
    let n = 8 - (m.leading_zeros() / 8) as usize;
    if v >= 0 {
        out.push(0x80 + n as u8);
        out.extend_from_slice(&m.to_be_bytes()[8 - n..]);
    } else {
        out.push(0x80 - n as u8);
        out.extend_from_slice(&(!m).to_be_bytes()[8 - n..]);
    }
}

/// An unsigned number the same way: its length, then its significant bytes.
fn push_unsigned(out: &mut Vec<u8>, v: u64) {
    let n = 8 - (v.leading_zeros() / 8) as usize;
    out.push(n as u8);
    out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
}

/// Reads what [`push_signed`] wrote at the start of `bytes`; the rest.
fn take_signed(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let (n, negative) = if len >= 0x80 { (len - 0x80, false) } else { (0x80 - len, true) };
    let n = usize::from(n);
    if n > 8 {
        return None;
    }
    let (digits, rest) = (rest.get(..n)?, rest.get(n..)?);
    let mut word = [0u8; 8];
    word[8 - n..].copy_from_slice(digits);
    let raw = u64::from_be_bytes(word);
    if !negative {
        return Some((raw as i64, rest));
    }
    let full = if n == 8 { raw } else { raw | (u64::MAX << (8 * n)) };
    Some(((!full as i64).wrapping_neg(), rest))
}

fn take_unsigned(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&n, rest) = bytes.split_first()?;
    let n = usize::from(n).min(8);
    let mut word = [0u8; 8];
    word[8 - n..].copy_from_slice(rest.get(..n)?);
    Some((u64::from_be_bytes(word), rest.get(n..)?))
}

/// An order key: its parts in order, each as it sorts, then the length of it all (last, so
/// that it can be found from the end; it never decides an order, as no key's parts are a
/// beginning of another's).
fn push_order(out: &mut Vec<u8>, key: &OrderKey) {
    let start = out.len();
    for v in [key.top, key.parts[0], key.parts[1], key.parts[2], key.tie, key.sub] {
        push_signed(out, v);
    }
    push_unsigned(out, key.seq);
    let len = out.len() - start;
    out.push(len as u8);
}

/// The order key a `ready` or `corrid` key ends with.
fn order_of(bytes: &[u8]) -> Option<OrderKey> {
    let (&len, before) = bytes.split_last()?;
    let mut rest = before.get(before.len().checked_sub(usize::from(len))?..)?;
    let mut next = || {
        let (v, r) = take_signed(rest)?;
        rest = r;
        Some(v)
    };
    let (top, p0, p1, p2, tie, sub) = (next()?, next()?, next()?, next()?, next()?, next()?);
    let (seq, _) = take_unsigned(rest)?;
    Some(OrderKey { top, parts: [p0, p1, p2], tie, sub, seq })
}

pub(super) fn ready_key(queue: &str, key: &OrderKey) -> Vec<u8> {
    let mut out = prefix(queue);
    push_order(&mut out, key);
    out
}

fn corrid_prefix(queue: &str, corrid: &[u8]) -> Vec<u8> {
    let mut out = prefix(queue);
    out.push(corrid.len() as u8);
    out.extend_from_slice(corrid);
    out
}

pub(super) fn corrid_key(queue: &str, corrid: &[u8], key: &OrderKey) -> Vec<u8> {
    let mut out = corrid_prefix(queue, corrid);
    push_order(&mut out, key);
    out
}

pub(super) fn age_key(queue: &str, enqueued_us: u64, seq: u64) -> Vec<u8> {
    let mut out = prefix(queue);
    out.extend_from_slice(&enqueued_us.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The enqueue time and sequence number at the end of an `age` key. A key too short to be
/// one (a damaged file) is passed over by the reads here; `qverify` reports it.
fn age_parts(k: &[u8]) -> Option<(u64, u64)> {
    let at = k.len().checked_sub(16)?;
    let number = |i: usize| Some(u64::from_be_bytes(k.get(i..i + 8)?.try_into().ok()?));
    Some((number(at)?, number(at + 8)?))
}

/// Whether message `seq` is *in sequence*: available when it was enqueued, and placed in
/// its queue by its sequence number alone (no top or before placement, no sort key, FIFO).
/// Such a message needs no `age` key: the queue space gives sequence numbers in the order
/// of enqueue times, so among its queue's in-sequence messages the first in `ready` is the
/// oldest ([`View::oldest`]). Most messages of a FIFO queue are; leaving their `age` key out
/// saves two B-tree updates a message (BENCHMARKS.md). An imported message keeps the
/// enqueue time it had, out of step with its new number: [`super::export`] makes it
/// available a microsecond after that time, so it is never in sequence.
pub(super) fn in_sequence(seq: u64, meta: &MessageMeta) -> bool {
    let k = &meta.key;
    k.top == 0
        && k.parts == [0; 3]
        && k.tie == seq as i64
        && k.sub == 0
        && meta.available_us <= meta.enqueued_us
}

/// The bounds of the `ready` keys of `queue` whose order key begins with four zeros (no
/// top placement, no sort key) and a tie-break of zero or more (FIFO): the in-sequence
/// messages are among them, by number. A LIFO queue's keys, whose tie-breaks are below
/// zero, lie before them: a deep LIFO queue is not scanned to find that it has none.
fn plain_span(queue: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = prefix(queue);
    for _ in 0..4 {
        push_signed(&mut lo, 0);
    }
    let mut hi = lo.clone();
    // The length byte of a number of zero or more is 0x80 or above (see `push_signed`).
    lo.push(0x80);
    hi.push(0xff);
    (lo, hi)
}

/// The messages of `queue` named by the keys of its `ready` range [`plain_span`] and of
/// its `age` range: every stored message of the queue, each once, by number.
fn members(
    ready: &impl ReadableTable<&'static [u8], ()>,
    age: &impl ReadableTable<&'static [u8], ()>,
    queue: &str,
) -> Result<Vec<u64>, redb::Error> {
    let mut seqs = Vec::new();
    let (lo, hi) = plain_span(queue);
    for item in ready.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        seqs.extend(order_of(item?.0.value()).map(|k| k.seq));
    }
    let (lo, hi) = span(&prefix(queue), 16);
    for item in age.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        seqs.extend(age_parts(item?.0.value()).map(|(_, seq)| seq));
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// Bounds of every key that starts with `prefix` and goes on with an order key (whose first
/// byte is never 0xff).
fn order_span(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut hi = prefix.to_vec();
    hi.push(0xff);
    (prefix.to_vec(), hi)
}

/// The first key past every key that starts with `prefix`, whose last byte (a queue name's)
/// is never 0xff.
fn past(prefix: &[u8]) -> Vec<u8> {
    let mut hi = prefix.to_vec();
    if let Some(last) = hi.last_mut() {
        *last += 1;
    }
    hi
}

/// The first and last keys of `len` bytes after `prefix`.
fn span(prefix: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut lo = prefix.to_vec();
    lo.resize(prefix.len() + len, 0);
    let mut hi = prefix.to_vec();
    hi.resize(prefix.len() + len, 0xff);
    (lo, hi)
}

/// The tables that follow one queue space's messages, open in a write transaction (those
/// few messages need, the timers and correlation ids, only once one does).
pub struct Maintained<'t> {
    txn: &'t WriteTransaction,
    ready: Table<'t, &'static [u8], ()>,
    age: Table<'t, &'static [u8], ()>,
    corrid: Option<Table<'t, &'static [u8], ()>>,
    timers: Option<Table<'t, (u64, u8, u64), ()>>,
    corrid_name: String,
    timers_name: String,
}

impl<'t> Maintained<'t> {
    pub fn open(txn: &'t WriteTransaction, names: &QueueSpaceTables) -> Result<Self, redb::Error> {
        Ok(Maintained {
            txn,
            ready: txn.open_table(keys(&names.ready))?,
            age: txn.open_table(keys(&names.age))?,
            corrid: None,
            timers: None,
            corrid_name: names.corrid.clone(),
            timers_name: names.timers.clone(),
        })
    }

    fn corrid(&mut self) -> Result<&mut Table<'t, &'static [u8], ()>, redb::Error> {
        if self.corrid.is_none() {
            self.corrid = Some(self.txn.open_table(keys(&self.corrid_name))?);
        }
        Ok(self.corrid.as_mut().expect("just opened"))
    }

    fn timers(&mut self) -> Result<&mut Table<'t, (u64, u8, u64), ()>, redb::Error> {
        if self.timers.is_none() {
            self.timers = Some(self.txn.open_table(timers(&self.timers_name))?);
        }
        Ok(self.timers.as_mut().expect("just opened"))
    }

    /// Adds the keys of message `seq`, just stored with `meta`; `waiting` when it may not
    /// be dequeued yet.
    pub fn add(
        &mut self,
        seq: u64,
        meta: &MessageMeta,
        waiting: bool,
        blocks: u64,
    ) -> Result<Delta, redb::Error> {
        let aged = !in_sequence(seq, meta);
        // Available when enqueued: only a clock set back since could call it waiting.
        let waiting = waiting && aged;
        if waiting {
            self.timers()?.insert((meta.available_us, AVAILABLE, seq), ())?;
        } else {
            self.insert_ready(meta)?;
        }
        if let Some(at) = meta.expires_us {
            self.timers()?.insert((at, EXPIRES, seq), ())?;
        }
        if aged {
            self.age.insert(age_key(&meta.queue, meta.enqueued_us, seq).as_slice(), ())?;
        }
        Ok(Delta::message(meta, blocks, waiting, 1))
    }

    fn insert_ready(&mut self, meta: &MessageMeta) -> Result<(), redb::Error> {
        self.ready.insert(ready_key(&meta.queue, &meta.key).as_slice(), ())?;
        if !meta.corrid.is_empty() {
            let key = corrid_key(&meta.queue, &meta.corrid, &meta.key);
            self.corrid()?.insert(key.as_slice(), ())?;
        }
        Ok(())
    }

    /// Removes the keys of message `seq`, stored with `meta`.
    pub fn remove(
        &mut self,
        seq: u64,
        meta: &MessageMeta,
        blocks: u64,
    ) -> Result<Delta, redb::Error> {
        let was_ready = self.ready.remove(ready_key(&meta.queue, &meta.key).as_slice())?.is_some();
        let waiting = if was_ready {
            if !meta.corrid.is_empty() {
                let key = corrid_key(&meta.queue, &meta.corrid, &meta.key);
                self.corrid()?.remove(key.as_slice())?;
            }
            false
        } else {
            self.timers()?.remove((meta.available_us, AVAILABLE, seq))?.is_some()
        };
        if let Some(at) = meta.expires_us {
            self.timers()?.remove((at, EXPIRES, seq))?;
        }
        if !in_sequence(seq, meta) {
            self.age.remove(age_key(&meta.queue, meta.enqueued_us, seq).as_slice())?;
        }
        Ok(Delta::message(meta, blocks, waiting, -1))
    }

    /// Moves message `seq` from the timers to its queue's order, if it is still waiting.
    pub fn make_ready(&mut self, seq: u64, meta: &MessageMeta) -> Result<Delta, redb::Error> {
        if self.timers()?.remove((meta.available_us, AVAILABLE, seq))?.is_none() {
            return Ok(Delta::default());
        }
        self.insert_ready(meta)?;
        let retrying = i64::from(meta.retries > 0);
        Ok(Delta { waiting: -1, retrying: -retrying, ..Delta::default() })
    }

    /// Whether any message of the queue space waits for a time or expires.
    pub fn timed(&mut self) -> Result<bool, redb::Error> {
        Ok(self.timers()?.first()?.is_some())
    }

    /// Removes the keys of `queue`'s messages once their records are removed: its order,
    /// correlation ids and ages a range each, which is a scan, not a search per key; and
    /// the timers of `timed`, (message, available time, expiry time) for each of them when
    /// [`Self::timed`] said there are timers at all.
    pub fn purge(&mut self, queue: &str, timed: &[Timed]) -> Result<(), redb::Error> {
        let lo = prefix(queue);
        let hi = past(&lo);
        let range = lo.as_slice()..hi.as_slice();
        self.ready.retain_in::<&[u8], _>(range.clone(), |_, _| false)?;
        self.age.retain_in::<&[u8], _>(range.clone(), |_, _| false)?;
        self.corrid()?.retain_in::<&[u8], _>(range, |_, _| false)?;
        if timed.is_empty() {
            return Ok(());
        }
        let timers = self.timers()?;
        for &(seq, available_us, expires_us) in timed {
            // A message waits in the timers while it is not available, and has a timer
            // for its expiry if it expires.
            timers.remove((available_us, AVAILABLE, seq))?;
            if let Some(at) = expires_us {
                timers.remove((at, EXPIRES, seq))?;
            }
        }
        Ok(())
    }

    /// The messages of `queue`, by number.
    pub fn queue_seqs(&self, queue: &str) -> Result<Vec<u64>, redb::Error> {
        members(&self.ready, &self.age, queue)
    }
}

/// A purged message's timers: its number, when it becomes available, when it expires.
pub type Timed = (u64, u64, Option<u64>);

/// Changes of queue totals gathered over a group of writes: by totals table, then queue.
pub type Deltas = HashMap<String, HashMap<String, Delta>>;

/// Adds `delta` to the change of `queue`'s totals in table `totals`, allocating nothing
/// when the queue changed before in the group.
pub fn gather(deltas: &mut Deltas, totals: &str, queue: &str, delta: Delta) {
    if let Some(d) = deltas.get_mut(totals).and_then(|t| t.get_mut(queue)) {
        d.add(delta);
        return;
    }
    deltas.entry(totals.to_string()).or_default().entry(queue.to_string()).or_default().add(delta);
}

/// Writes the totals changed by a group of writes.
pub fn write_totals(txn: &WriteTransaction, deltas: Deltas) -> Result<(), redb::Error> {
    for (name, changes) in deltas {
        let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name))?;
        for (queue, delta) in changes {
            let base = table
                .get(queue.as_str())?
                .and_then(|v| postcard::from_bytes::<Totals>(v.value()).ok())
                .unwrap_or_default();
            let totals = delta.apply(base);
            if delta.reset && totals == Totals::default() {
                table.remove(queue.as_str())?;
            } else {
                let bytes = postcard::to_stdvec(&totals).unwrap_or_default();
                table.insert(queue.as_str(), bytes.as_slice())?;
            }
        }
    }
    Ok(())
}

/// The state value that says a queue space's order tables are there, and in which encoding
/// (see [`reindex`]): 3, the compact order keys without `age` keys for in-sequence
/// messages (2 had them for every message). Tables of another encoding are built again.
pub const INDEXED: &str = "indexed";
pub const INDEXED_VERSION: u8 = 3;

/// Builds the order tables of a queue space from its messages: once, for a queue space
/// stored before they existed (or whose tables were lost). The messages that are due by
/// `now` go in their queues' order, the others in the timers.
pub fn reindex(
    txn: &WriteTransaction,
    names: &QueueSpaceTables,
    page_size: u32,
    now: u64,
) -> QmResult<u64> {
    let fail = |e: &dyn std::fmt::Display| {
        QmError::system(format!("building the order of queue space {}: {e}", names.qspace))
    };
    for name in [&names.ready, &names.corrid, &names.age, &names.totals] {
        txn.delete_table(keys(name)).map_err(|e| fail(&e))?;
    }
    txn.delete_table(timers(&names.timers)).map_err(|e| fail(&e))?;
    let mut maintained = Maintained::open(txn, names).map_err(|e| fail(&e))?;
    let mut deltas = Deltas::new();
    let msg = txn.open_table(names.msg()).map_err(|e| fail(&e))?;
    let mut count = 0;
    for item in msg.iter().map_err(|e| fail(&e))? {
        let (k, v) = item.map_err(|e| fail(&e))?;
        let stored =
            super::record::split_stored(v.value()).ok_or_else(|| fail(&"a truncated message"))?;
        let meta: MessageMeta = postcard::from_bytes(stored.meta).map_err(|e| fail(&e))?;
        // Sizes are counted from the record: it must agree with the body stored with it
        // (for a body stored in parts, with what its cut leaves with the record).
        let tail = match &stored.logged {
            Some(at) => u64::from(at.len),
            None => stored.tail.len() as u64,
        };
        let parted = stored.parted;
        if (!parted && meta.body_len != tail)
            || (parted && tail > meta.body_len)
            || meta.body_len > qm_common::message::BODY_MAX as u64
        {
            return Err(fail(&format_args!(
                "message {:016x} is damaged: its record gives {} body bytes, {tail} are stored",
                k.value(),
                meta.body_len,
            )));
        }
        let blocks = message_blocks(meta.body_len, page_size);
        let delta = maintained
            .add(k.value(), &meta, meta.available_us > now, blocks)
            .map_err(|e| fail(&e))?;
        gather(&mut deltas, &names.totals, &meta.queue, delta);
        count += 1;
    }
    drop(msg);
    drop(maintained);
    write_totals(txn, deltas).map_err(|e| fail(&e))?;
    let mut state = txn.open_table(names.state()).map_err(|e| fail(&e))?;
    state.insert(INDEXED, [INDEXED_VERSION].as_slice()).map_err(|e| fail(&e))?;
    Ok(count)
}

/// Timers due (kind, message), and the time of the next one.
pub type Due = (Vec<(u8, u64)>, Option<u64>);

/// Message `seq`'s record in `table`, the stored messages.
fn meta_in(table: &ReadOnlyTable<u64, &'static [u8]>, seq: u64) -> QmResult<Option<MessageMeta>> {
    Ok(stored_in(table, seq)?.map(|(meta, _)| meta))
}

/// Message `seq`'s record in `table`, the stored messages, and where its body is when it
/// is in a body segment.
fn stored_in(table: &ReadOnlyTable<u64, &'static [u8]>, seq: u64) -> QmResult<Option<Unread>> {
    let Some(value) = table.get(seq).map_err(read_error)? else { return Ok(None) };
    let stored = super::record::split_stored(value.value())
        .ok_or_else(|| read_error(format_args!("message {seq:016x} is truncated")))?;
    let meta = postcard::from_bytes(stored.meta)
        .map_err(|e| read_error(format_args!("message {seq:016x}: {e}")))?;
    Ok(Some((meta, stored.logged)))
}

/// A consistent view of a queue space's stored messages: one read transaction. What the
/// engine holds in memory (messages locked, in a transaction, being written) is newer than
/// what a view shows, so every lookup takes a `skip` that leaves those out.
pub struct View<'n> {
    txn: ReadTransaction,
    names: &'n QueueSpaceTables,
}

fn read_error(e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("reading stored messages: {e}"))
}

impl<'n> View<'n> {
    pub fn new(file: &DbFile, names: &'n QueueSpaceTables) -> QmResult<View<'n>> {
        let db = file.get()?;
        let txn = db.begin_read().map_err(|e| db.explain("reading stored messages", e))?;
        Ok(View { txn, names })
    }

    fn keys(&self, name: &str) -> QmResult<Option<ReadOnlyTable<&'static [u8], ()>>> {
        match self.txn.open_table(keys(name)) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(read_error(e)),
        }
    }

    /// The first key in `lo..=hi` (after `lo`, when `after`) of table `name` whose message
    /// is not skipped, as an order key.
    fn first_in(
        &self,
        name: &str,
        lo: &[u8],
        after: bool,
        hi: &[u8],
        skip: impl Fn(u64) -> bool,
    ) -> QmResult<Option<OrderKey>> {
        let Some(table) = self.keys(name)? else { return Ok(None) };
        let start = if after { Bound::Excluded(lo) } else { Bound::Included(lo) };
        for item in table.range::<&[u8]>((start, Bound::Included(hi))).map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            let Some(key) = order_of(k.value()) else { continue };
            if !skip(key.seq) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The first ready message of `queue` (after `after`, when given).
    pub fn first(
        &self,
        queue: &str,
        after: Option<&OrderKey>,
        skip: impl Fn(u64) -> bool,
    ) -> QmResult<Option<OrderKey>> {
        let (lo, hi) = order_span(&prefix(queue));
        match after {
            Some(key) => self.first_in(&self.names.ready, &ready_key(queue, key), true, &hi, skip),
            None => self.first_in(&self.names.ready, &lo, false, &hi, skip),
        }
    }

    /// The first `n` ready messages of `queue` not skipped (after `after`, when given),
    /// with their records and where their bodies are.
    pub fn first_n(
        &self,
        queue: &str,
        after: Option<&OrderKey>,
        n: usize,
        skip: impl Fn(u64) -> bool,
    ) -> QmResult<Vec<(OrderKey, Unread)>> {
        let mut found = Vec::new();
        let Some(table) = self.keys(&self.names.ready)? else { return Ok(found) };
        // Opened once for the batch, not once a message.
        let messages = self.messages()?;
        let (lo, hi) = order_span(&prefix(queue));
        let from = after.map(|key| ready_key(queue, key));
        let start = match &from {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Included(lo.as_slice()),
        };
        for item in
            table.range::<&[u8]>((start, Bound::Included(hi.as_slice()))).map_err(read_error)?
        {
            let (k, _) = item.map_err(read_error)?;
            let Some(key) = order_of(k.value()).filter(|k| !skip(k.seq)) else { continue };
            let stored = messages.as_ref().map(|t| stored_in(t, key.seq)).transpose()?.flatten();
            let stored = stored.ok_or_else(|| {
                read_error(format_args!("message {:016x} is in order but not stored", key.seq))
            })?;
            found.push((key, stored));
            if found.len() >= n {
                break;
            }
        }
        Ok(found)
    }

    /// The last ready message of `queue`.
    pub fn last(&self, queue: &str, skip: impl Fn(u64) -> bool) -> QmResult<Option<OrderKey>> {
        let Some(table) = self.keys(&self.names.ready)? else { return Ok(None) };
        let (lo, hi) = order_span(&prefix(queue));
        for item in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice()).map_err(read_error)?.rev() {
            let (k, _) = item.map_err(read_error)?;
            if let Some(key) = order_of(k.value()).filter(|k| !skip(k.seq)) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The first ready message of `queue` with correlation id `corrid`.
    pub fn first_corrid(
        &self,
        queue: &str,
        corrid: &[u8],
        skip: impl Fn(u64) -> bool,
    ) -> QmResult<Option<OrderKey>> {
        let (lo, hi) = order_span(&corrid_prefix(queue, corrid));
        self.first_in(&self.names.corrid, &lo, false, &hi, skip)
    }

    /// Whether the message stored with `meta` is in its queue's order (not waiting).
    pub fn is_ready(&self, meta: &MessageMeta) -> QmResult<bool> {
        let Some(table) = self.keys(&self.names.ready)? else { return Ok(false) };
        let key = ready_key(&meta.queue, &meta.key);
        Ok(table.get(key.as_slice()).map_err(read_error)?.is_some())
    }

    /// The record of stored message `seq`.
    pub fn meta(&self, seq: u64) -> QmResult<Option<MessageMeta>> {
        match self.messages()? {
            Some(table) => meta_in(&table, seq),
            None => Ok(None),
        }
    }

    /// The table of the stored messages, if it was made.
    fn messages(&self) -> QmResult<Option<ReadOnlyTable<u64, &'static [u8]>>> {
        match self.txn.open_table(self.names.msg()) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(read_error(e)),
        }
    }

    /// Up to `limit` timers due by `now` (kind, message) of messages not skipped, and the
    /// time of the first timer after them.
    pub fn due(&self, now: u64, limit: usize, skip: impl Fn(u64) -> bool) -> QmResult<Due> {
        let table = match self.txn.open_table(timers(&self.names.timers)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(read_error(e)),
        };
        let mut due = Vec::new();
        for item in table.iter().map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            let (at, kind, seq) = k.value();
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            if !skip(seq) {
                due.push((kind, seq));
            }
        }
        Ok((due, None))
    }

    /// When the oldest stored message of `queue` was enqueued, passing over those that
    /// `skip` says memory decides for: the first in `age`, or the first placed by its
    /// number in `ready` (see [`in_sequence`]), whichever is older.
    pub fn oldest(&self, queue: &str, skip: impl Fn(u64) -> bool) -> QmResult<Option<u64>> {
        let aged = self.first_aged(queue, &skip)?;
        let Some(table) = self.keys(&self.names.ready)? else { return Ok(aged) };
        let (lo, hi) = plain_span(queue);
        for item in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice()).map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            // One placed before another message sorts by that one's number, not its own.
            let Some(key) = order_of(k.value()) else { continue };
            if key.tie != key.seq as i64 || key.sub != 0 || skip(key.seq) {
                continue;
            }
            let at = self.meta(key.seq)?.map(|m| m.enqueued_us);
            return Ok(aged.into_iter().chain(at).min());
        }
        Ok(aged)
    }

    /// When the first message of `queue` in `age` not skipped was enqueued.
    fn first_aged(&self, queue: &str, skip: impl Fn(u64) -> bool) -> QmResult<Option<u64>> {
        let Some(table) = self.keys(&self.names.age)? else { return Ok(None) };
        let (lo, hi) = span(&prefix(queue), 16);
        for item in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice()).map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            match age_parts(k.value()) {
                Some((enqueued_us, seq)) if !skip(seq) => return Ok(Some(enqueued_us)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The stored messages of `queue` enqueued at `enqueued_us` exactly that have an `age`
    /// key: not those in sequence ([`in_sequence`]), which no import is.
    pub fn enqueued_at(&self, queue: &str, enqueued_us: u64) -> QmResult<Vec<u64>> {
        let Some(table) = self.keys(&self.names.age)? else { return Ok(Vec::new()) };
        let (lo, hi) = (age_key(queue, enqueued_us, 0), age_key(queue, enqueued_us, u64::MAX));
        let mut seqs = Vec::new();
        for item in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice()).map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            seqs.extend(age_parts(k.value()).map(|(_, seq)| seq));
        }
        Ok(seqs)
    }

    /// The stored messages of `queue`, by number.
    pub fn seqs(&self, queue: &str) -> QmResult<Vec<u64>> {
        let (Some(ready), Some(age)) = (self.keys(&self.names.ready)?, self.keys(&self.names.age)?)
        else {
            return Ok(Vec::new());
        };
        members(&ready, &age, queue).map_err(read_error)
    }

    /// Calls `f` with each ready message of `queue` that sorts before `key`.
    pub fn ahead(
        &self,
        queue: &str,
        key: &OrderKey,
        skip: impl Fn(u64) -> bool,
        mut f: impl FnMut(&OrderKey),
    ) -> QmResult<()> {
        let Some(table) = self.keys(&self.names.ready)? else { return Ok(()) };
        let (lo, _) = order_span(&prefix(queue));
        let hi = ready_key(queue, key);
        for item in table.range::<&[u8]>(lo.as_slice()..hi.as_slice()).map_err(read_error)? {
            let (k, _) = item.map_err(read_error)?;
            if let Some(ahead) = order_of(k.value()).filter(|k| !skip(k.seq)) {
                f(&ahead);
            }
        }
        Ok(())
    }

    /// Every queue's totals.
    pub fn totals(&self) -> QmResult<HashMap<String, Totals>> {
        let table = match self.txn.open_table(self.names.totals()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(read_error(e)),
        };
        let mut all = HashMap::new();
        for item in table.iter().map_err(read_error)? {
            let (k, v) = item.map_err(read_error)?;
            let totals = postcard::from_bytes(v.value()).map_err(read_error)?;
            all.insert(k.value().to_string(), totals);
        }
        Ok(all)
    }

    /// The highest sequence number stored.
    pub fn last_seq(&self) -> QmResult<Option<u64>> {
        match self.txn.open_table(self.names.msg()) {
            Ok(t) => Ok(t.last().map_err(read_error)?.map(|(k, _)| k.value())),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(read_error(e)),
        }
    }

    /// Whether the order tables were built (see [`reindex`]).
    pub fn indexed(&self) -> QmResult<bool> {
        match self.txn.open_table(self.names.state()) {
            Ok(t) => {
                let value = t.get(INDEXED).map_err(read_error)?;
                Ok(value.is_some_and(|v| v.value() == [INDEXED_VERSION]))
            }
            Err(TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(read_error(e)),
        }
    }

    /// The state values of the queue space.
    pub fn states(&self) -> QmResult<Vec<(String, Vec<u8>)>> {
        match self.txn.open_table(self.names.state()) {
            Ok(t) => t
                .iter()
                .map_err(read_error)?
                .map(|item| {
                    let (k, v) = item.map_err(read_error)?;
                    Ok((k.value().to_string(), v.value().to_vec()))
                })
                .collect(),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(read_error(e)),
        }
    }

    pub fn txn(&self) -> &ReadTransaction {
        &self.txn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(seq: u64) -> OrderKey {
        OrderKey { top: 0, parts: [0; 3], tie: seq as i64, sub: 0, seq }
    }

    #[test]
    fn the_in_sequence_span_holds_fifo_keys_alone() {
        let (lo, hi) = plain_span("Q");
        let inside = |queue: &str, k: &OrderKey| {
            let b = ready_key(queue, k);
            lo <= b && b <= hi
        };
        assert!(inside("Q", &fifo(1)) && inside("Q", &fifo(u64::from(u32::MAX) * 7)));
        // Placed before message 5: it sorts by 5, among them.
        assert!(inside("Q", &OrderKey { sub: -1, ..fifo(9) }));
        assert!(!inside("Q", &OrderKey { tie: -5, ..fifo(5) }), "LIFO");
        assert!(!inside("Q", &OrderKey { top: -1, tie: 0, ..fifo(5) }), "top");
        assert!(!inside("Q", &OrderKey { parts: [-3, 0, 0], ..fifo(5) }), "a priority");
        assert!(!inside("Q", &OrderKey { parts: [0, 0, 1], ..fifo(5) }), "a sort key");
        assert!(!inside("QQ", &fifo(1)) && !inside("P", &fifo(1)), "another queue's");
    }

    #[test]
    fn encoded_keys_sort_as_order_keys() {
        let keys = [
            OrderKey { top: -3, parts: [0; 3], tie: 0, sub: 0, seq: 9 },
            OrderKey { top: 0, parts: [-100, 5, 0], tie: -7, sub: 0, seq: 2 },
            OrderKey { top: 0, parts: [-100, 5, 0], tie: 4, sub: -1, seq: 8 },
            OrderKey { top: 0, parts: [-100, 5, 0], tie: 4, sub: 0, seq: 3 },
            OrderKey { top: 0, parts: [-1, i64::MIN, i64::MAX], tie: 0, sub: 0, seq: 1 },
        ];
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(ready_key("q", &pair[0]) < ready_key("q", &pair[1]));
        }
        for key in &keys {
            assert_eq!(order_of(&ready_key("queue", key)), Some(*key));
            assert_eq!(order_of(&corrid_key("queue", b"id", key)), Some(*key));
        }
        assert_eq!(ready_key("q", &fifo(12_345_678)).len(), 3 + 13 + 1, "compact");
        // Numbers keep their order and come back whole, at every length and at the ends.
        let mut values = vec![i64::MIN, i64::MIN + 1, -1, 0, 1, 255, 256, -255, -256, i64::MAX];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x as i64) >> (x % 64));
        }
        values.sort_unstable();
        let encoded: Vec<Vec<u8>> = values
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                push_signed(&mut out, *v);
                assert_eq!(take_signed(&out), Some((*v, &[][..])), "{v} comes back");
                out
            })
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] <= w[1]), "signed numbers sort as they encode");
        let mut unsigned: Vec<u64> = values.iter().map(|v| *v as u64).collect();
        unsigned.sort_unstable();
        let encoded: Vec<Vec<u8>> = unsigned
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                push_unsigned(&mut out, *v);
                assert_eq!(take_unsigned(&out), Some((*v, &[][..])), "{v} comes back");
                out
            })
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] <= w[1]), "unsigned numbers sort as they encode");
        // A queue's keys never fall inside another's range, whatever their names.
        let (lo, hi) = order_span(&prefix("ab"));
        let other = ready_key("abc", &keys[0]);
        assert!(other < lo || other > hi);
    }

    #[test]
    fn damaged_keys_are_refused_not_read_past_their_end() {
        // A length byte claiming more than eight digits, either sign, with bytes to spare.
        for len in [0x00u8, 0x70, 0x89, 0xff] {
            let mut bytes = vec![len];
            bytes.extend([7u8; 200]);
            assert_eq!(take_signed(&bytes), None, "length byte {len:#x}");
            assert_eq!(order_of(&bytes), None, "length byte {len:#x}");
        }
        let key = age_key("q", 1_234, 99);
        assert_eq!(age_parts(&key), Some((1_234, 99)));
        assert_eq!(age_parts(&key[..15]), None, "shorter than a time and a number");
    }
}
