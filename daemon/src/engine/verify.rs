//! Checks one queue space's stored messages against each other, for `qverify`.
//!
//! Every message record is decoded and its checksums (record and whole body) compared;
//! its body's stored length must be the one its record gives. The order tables (`ready`,
//! `corrid`, `timers`, `age`) must hold exactly the keys the messages call for, and
//! `totals` exactly the sums of the messages. The tables are compared as multisets, by a
//! sum of key hashes, in one pass over each: memory does not grow with the messages. Only
//! when a table's sum differs is it read again key by key, to name what is wrong.

use super::record::{MessageMeta, Stored, Sums, checksum, split_stored};
use super::stored::{self, AVAILABLE, EXPIRES, Totals};
use crate::storage::bodies::{Bodies, BodyRef};
use crate::storage::tables::QueueSpaceTables;
use qm_common::device::message_blocks;
use qm_common::plural::count;
use qm_common::verify::Problems;
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// What one queue space holds, as checked.
#[derive(Debug, Default)]
pub struct Checked {
    pub messages: u64,
    pub bytes: u64,
}

/// A table's keys as a multiset: how many, and the wrapping sum of their hashes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct KeySum {
    count: u64,
    sum: u64,
}

impl KeySum {
    fn add(&mut self, key: &[u8]) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash(key));
    }
}

fn hash(key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The four order tables, by the names `qverify` reports.
const ORDER: [&str; 4] = ["ready", "corrid", "timers", "age"];

/// Checks queue space `names` in `txn`; what is wrong goes to `problems`.
pub fn queue_space(
    txn: &ReadTransaction,
    bodies: &Bodies,
    names: &QueueSpaceTables,
    page_size: u32,
    problems: &mut Problems,
) -> Checked {
    let place = format!("queue space {}", names.qspace);
    let mut checked = Checked::default();
    let queues = match queue_defs(txn, names) {
        Ok(q) => q,
        Err(e) => {
            problems.add(&place, e);
            return checked;
        }
    };
    // Messages still waiting for their time: in `timers`, not in their queue's order.
    let waiting = match waiting(txn, names) {
        Ok(w) => w,
        Err(e) => {
            problems.add(&place, e);
            HashSet::new()
        }
    };
    let mut expected: HashMap<&str, KeySum> =
        ORDER.iter().map(|t| (*t, KeySum::default())).collect();
    let mut totals: HashMap<String, Totals> = HashMap::new();
    let mut last_seq = None;
    let mut undefined = Vec::new();
    let walked = each_message(txn, bodies, names, problems, |seq, meta, body_len| {
        last_seq = Some(seq);
        if !queues.contains(&meta.queue) {
            undefined.push((seq, meta.queue.clone()));
        }
        let is_waiting = waiting.contains(&seq);
        for (table, key) in keys_of(seq, meta, is_waiting) {
            expected.get_mut(table).expect("an order table").add(&key);
        }
        let t = totals.entry(meta.queue.clone()).or_default();
        t.messages += 1;
        t.bytes += body_len;
        t.blocks += message_blocks(body_len, page_size);
        t.waiting += u64::from(is_waiting);
        t.retrying += u64::from(is_waiting && meta.retries > 0);
        t.tops = t.tops.max(meta.key.top.checked_neg().unwrap_or(0));
        checked.messages += 1;
        checked.bytes += body_len;
    });
    for (seq, queue) in undefined {
        let place = format!("message {seq:016x} of {}", names.qspace);
        problems.add(&place, format!("its queue {queue} is not defined"));
    }
    if let Err(e) = walked {
        problems.add(&place, e);
        return checked;
    }
    for table in ORDER {
        match actual_keys(txn, names, table) {
            Ok(found) if found == expected[table] => {}
            Ok(found) => {
                let why = format!(
                    "its order table {table} does not match its messages ({} keys, {} expected)",
                    found.count, expected[table].count
                );
                problems.add(&place, why);
                name_differences(txn, bodies, names, table, &waiting, problems);
            }
            Err(e) => problems.add(&place, e),
        }
    }
    check_totals(txn, names, &totals, &place, problems);
    check_mark(txn, names, last_seq, &place, problems);
    checked
}

fn open_error(table: &str, e: impl std::fmt::Display) -> String {
    format!("table {table} cannot be read: {e}")
}

fn queue_defs(txn: &ReadTransaction, names: &QueueSpaceTables) -> Result<HashSet<String>, String> {
    let mut queues = HashSet::new();
    let table = match txn.open_table(names.queues()) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(queues),
        Err(e) => return Err(open_error("queues", e)),
    };
    for item in table.iter().map_err(|e| open_error("queues", e))? {
        let (k, v) = item.map_err(|e| open_error("queues", e))?;
        if let Err(e) = crate::storage::records::decode_queue(v.value()) {
            return Err(format!("the definition of queue {} cannot be read: {e}", k.value()));
        }
        queues.insert(k.value().to_string());
    }
    Ok(queues)
}

fn timers_def(name: &str) -> TableDefinition<'_, (u64, u8, u64), ()> {
    TableDefinition::new(name)
}

fn keys_def(name: &str) -> TableDefinition<'_, &'static [u8], ()> {
    TableDefinition::new(name)
}

/// The messages `timers` holds as not yet available.
fn waiting(txn: &ReadTransaction, names: &QueueSpaceTables) -> Result<HashSet<u64>, String> {
    let mut waiting = HashSet::new();
    let table = match txn.open_table(timers_def(&names.timers)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(waiting),
        Err(e) => return Err(open_error("timers", e)),
    };
    for item in table.iter().map_err(|e| open_error("timers", e))? {
        let (_, kind, seq) = item.map_err(|e| open_error("timers", e))?.0.value();
        if kind == AVAILABLE {
            waiting.insert(seq);
        }
    }
    Ok(waiting)
}

/// The keys message `seq` calls for in the order tables, as each table holds them (a
/// `timers` key as its three parts, big-endian).
fn keys_of(seq: u64, meta: &MessageMeta, waiting: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut keys = Vec::new();
    if !stored::in_sequence(seq, meta) {
        keys.push(("age", stored::age_key(&meta.queue, meta.enqueued_us, seq)));
    }
    if waiting {
        keys.push(("timers", timer_bytes(meta.available_us, AVAILABLE, seq)));
    } else {
        keys.push(("ready", stored::ready_key(&meta.queue, &meta.key)));
        if !meta.corrid.is_empty() {
            keys.push(("corrid", stored::corrid_key(&meta.queue, &meta.corrid, &meta.key)));
        }
    }
    if let Some(at) = meta.expires_us {
        keys.push(("timers", timer_bytes(at, EXPIRES, seq)));
    }
    keys
}

fn timer_bytes(time: u64, kind: u8, seq: u64) -> Vec<u8> {
    let mut out = time.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Calls `f` with every message that decodes and whose checksums and length hold, with its
/// body's length; reports the others.
fn each_message(
    txn: &ReadTransaction,
    bodies: &Bodies,
    names: &QueueSpaceTables,
    problems: &mut Problems,
    mut f: impl FnMut(u64, &MessageMeta, u64),
) -> Result<(), String> {
    let table = match txn.open_table(names.msg()) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(open_error("msg", e)),
    };
    let parts = match txn.open_table(names.parts()) {
        Ok(t) => Some(t),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(open_error("parts", e)),
    };
    for item in table.iter().map_err(|e| open_error("msg", e))? {
        let (k, v) = item.map_err(|e| open_error("msg", e))?;
        let seq = k.value();
        let place = format!("message {seq:016x} of {}", names.qspace);
        match check_message(seq, v.value(), parts.as_ref(), bodies) {
            // A message whose record reads is counted in its queue even if its body is
            // damaged: the order tables and totals are checked against what it says.
            Ok((meta, body_len, damage)) => {
                if let Some(why) = damage {
                    problems.add(&place, why);
                }
                f(seq, &meta, body_len)
            }
            Err(why) => problems.add(&place, why),
        }
    }
    // Parts of no message: left behind by a removal.
    if let Some(parts) = parts {
        let mut orphans = 0u64;
        for item in parts.iter().map_err(|e| open_error("parts", e))? {
            let (seq, _) = item.map_err(|e| open_error("parts", e))?.0.value();
            if table.get(seq).map_err(|e| open_error("msg", e))?.is_none() {
                orphans += 1;
            }
        }
        if orphans > 0 {
            let place = format!("queue space {}", names.qspace);
            problems.add(&place, format!("{orphans} body parts belong to no stored message"));
        }
    }
    Ok(())
}

type Parts = redb::ReadOnlyTable<(u64, u32), &'static [u8]>;

/// Decodes one stored message and checks it: its record (an error when it cannot be
/// read), then its body's length and checksum (what is wrong with them, if anything).
fn check_message(
    seq: u64,
    value: &[u8],
    parts: Option<&Parts>,
    bodies: &Bodies,
) -> Result<(MessageMeta, u64, Option<String>), String> {
    let Some(Stored { meta, tail, parted, sums, logged }) = split_stored(value) else {
        return Err("its stored value is cut short".into());
    };
    if let Some(sums) = sums
        && sums.meta != checksum(meta)
    {
        return Err("its record does not match its checksum (damaged)".into());
    }
    let record: MessageMeta =
        postcard::from_bytes(meta).map_err(|e| format!("its record cannot be decoded: {e}"))?;
    if let Some(at) = logged {
        return Ok(check_logged(record, &at, sums, bodies));
    }
    let mut body_sum = crc32fast::Hasher::new();
    let mut len = 0u64;
    if parted {
        let Some(parts) = parts else {
            let len = tail.len() as u64;
            return Ok((record, len, Some("its body parts are missing".into())));
        };
        let range = (seq, 0u32)..=(seq, u32::MAX);
        for (n, part) in parts.range(range).map_err(|e| open_error("parts", e))?.enumerate() {
            let (key, bytes) = part.map_err(|e| open_error("parts", e))?;
            if key.value().1 as usize != n {
                return Ok((record, len, Some(format!("its body part {n} is missing"))));
            }
            body_sum.update(bytes.value());
            len += bytes.value().len() as u64;
        }
    }
    body_sum.update(tail);
    len += tail.len() as u64;
    let damage = if len != record.body_len {
        Some(format!("its record gives {} body bytes, {len} are stored", record.body_len))
    } else if sums.is_some_and(|s| s.body != body_sum.finalize()) {
        Some("its body does not match its checksum (damaged)".into())
    } else {
        None
    };
    Ok((record, len, damage))
}

/// Checks a body kept in a body segment: it reads whole and matches both checksums.
fn check_logged(
    record: MessageMeta,
    at: &BodyRef,
    sums: Option<Sums>,
    bodies: &Bodies,
) -> (MessageMeta, u64, Option<String>) {
    let len = u64::from(at.len);
    let damage = if len != record.body_len {
        Some(format!("its record gives {} body bytes, its body segment {len}", record.body_len))
    } else if sums.is_some_and(|s| s.body != at.crc) {
        Some("its body's reference does not match its checksum (damaged)".into())
    } else {
        bodies.read(at).err().map(|e| format!("its body cannot be read: {e}"))
    };
    (record, len, damage)
}

/// The keys of order table `table` as a multiset.
fn actual_keys(
    txn: &ReadTransaction,
    names: &QueueSpaceTables,
    table: &str,
) -> Result<KeySum, String> {
    let mut sum = KeySum::default();
    if table == "timers" {
        let t = match txn.open_table(timers_def(&names.timers)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(sum),
            Err(e) => return Err(open_error(table, e)),
        };
        for item in t.iter().map_err(|e| open_error(table, e))? {
            let (time, kind, seq) = item.map_err(|e| open_error(table, e))?.0.value();
            sum.add(&timer_bytes(time, kind, seq));
        }
        return Ok(sum);
    }
    let t = match txn.open_table(keys_def(table_name(names, table))) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(sum),
        Err(e) => return Err(open_error(table, e)),
    };
    for item in t.iter().map_err(|e| open_error(table, e))? {
        sum.add(item.map_err(|e| open_error(table, e))?.0.value());
    }
    Ok(sum)
}

fn table_name<'n>(names: &'n QueueSpaceTables, table: &str) -> &'n str {
    match table {
        "ready" => &names.ready,
        "corrid" => &names.corrid,
        "age" => &names.age,
        _ => &names.timers,
    }
}

/// Reads order table `table` again key by key and names its keys that no message calls
/// for and the messages that lack theirs (the first few of each).
fn name_differences(
    txn: &ReadTransaction,
    bodies: &Bodies,
    names: &QueueSpaceTables,
    table: &str,
    waiting: &HashSet<u64>,
    problems: &mut Problems,
) {
    let place = format!("queue space {}", names.qspace);
    let mut wanted: HashMap<Vec<u8>, u64> = HashMap::new();
    let _ = each_message(txn, bodies, names, &mut Problems::default(), |seq, meta, _| {
        for (t, key) in keys_of(seq, meta, waiting.contains(&seq)) {
            if t == table {
                wanted.insert(key, seq);
            }
        }
    });
    let mut stray = Vec::new();
    let mut visit = |key: Vec<u8>| {
        if wanted.remove(&key).is_none() {
            stray.push(key);
        }
    };
    let read = if table == "timers" {
        txn.open_table(timers_def(&names.timers)).map_err(|e| e.to_string()).and_then(|t| {
            for item in t.iter().map_err(|e| e.to_string())? {
                let (time, kind, seq) = item.map_err(|e| e.to_string())?.0.value();
                visit(timer_bytes(time, kind, seq));
            }
            Ok(())
        })
    } else {
        txn.open_table(keys_def(table_name(names, table))).map_err(|e| e.to_string()).and_then(
            |t| {
                for item in t.iter().map_err(|e| e.to_string())? {
                    visit(item.map_err(|e| e.to_string())?.0.value().to_vec());
                }
                Ok(())
            },
        )
    };
    if let Err(e) = read {
        return problems.add(&place, open_error(table, e));
    }
    let mut missing: Vec<u64> = wanted.into_values().collect();
    missing.sort_unstable();
    for seq in missing.iter().take(SHOWN) {
        problems.add(&place, format!("message {seq:016x} has no key in order table {table}"));
    }
    if stray.len() + missing.len() > 0 {
        let what = format!(
            "order table {table}: {} of no message, {} without their key",
            count(stray.len() as u64, "key", "keys"),
            count(missing.len() as u64, "message", "messages")
        );
        problems.add(&place, what);
    }
}

/// Of each kind of difference, how many are named one by one.
const SHOWN: usize = 10;

fn check_totals(
    txn: &ReadTransaction,
    names: &QueueSpaceTables,
    counted: &HashMap<String, Totals>,
    place: &str,
    problems: &mut Problems,
) {
    let stored = match txn.open_table(names.totals()) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) if counted.is_empty() => return,
        Err(e) => return problems.add(place, open_error("totals", e)),
    };
    let mut seen = HashSet::new();
    let rows = match stored.iter() {
        Ok(rows) => rows,
        Err(e) => return problems.add(place, open_error("totals", e)),
    };
    for item in rows {
        let (queue, value) = match item {
            Ok(row) => row,
            Err(e) => return problems.add(place, open_error("totals", e)),
        };
        let queue = queue.value().to_string();
        let Ok(totals) = postcard::from_bytes::<Totals>(value.value()) else {
            problems.add(place, format!("the totals of queue {queue} cannot be read"));
            continue;
        };
        let want = counted.get(&queue).copied().unwrap_or_default();
        let same = Totals { tops: want.tops, ..totals } == want && totals.tops >= want.tops;
        if !same {
            problems.add(
                place,
                format!(
                    "the totals of queue {queue} say {} messages, {} bytes, {} blocks, {} waiting; \
                     its messages make {}, {}, {}, {}",
                    totals.messages,
                    totals.bytes,
                    totals.blocks,
                    totals.waiting,
                    want.messages,
                    want.bytes,
                    want.blocks,
                    want.waiting
                ),
            );
        }
        seen.insert(queue);
    }
    for (queue, t) in counted {
        if !seen.contains(queue) {
            problems.add(
                place,
                format!("queue {queue} holds {} messages but has no totals", t.messages),
            );
        }
    }
}

/// Every stored msgid lies below the high-water mark, or one could be handed out again.
fn check_mark(
    txn: &ReadTransaction,
    names: &QueueSpaceTables,
    last_seq: Option<u64>,
    place: &str,
    problems: &mut Problems,
) {
    let Some(last) = last_seq else { return };
    let mark = txn.open_table(names.state()).ok().and_then(|t| {
        let v = t.get("next_seq").ok()??;
        Some(u64::from_be_bytes(v.value().try_into().ok()?))
    });
    match mark {
        Some(mark) if mark >= last => {}
        Some(mark) => problems.add(
            place,
            format!("its msgid high-water mark {mark:016x} is below stored message {last:016x}"),
        ),
        None => problems.add(place, "it holds messages but no msgid high-water mark"),
    }
}
