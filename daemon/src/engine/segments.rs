//! Which body segments ([`crate::storage::bodies`]) still hold bodies redb points at, and
//! the removal of those that do not.
//!
//! Table `qm.bodies` of each redb file counts the live bytes of each segment; the commits
//! that store a body in a segment or remove one change it, so it always says what the
//! records of the same commit point at. A segment is dead once its row is gone and
//! appends no longer go to it: nothing can point into it again, since only appends add
//! bodies. It is unlinked after a *durable* commit that saw it dead, so that a crash never
//! brings back records whose bodies are gone; at an open, before the journal is replayed,
//! every segment without a row goes (bodies that only non-durable commits pointed at; the
//! replay writes them again).
//!
//! With `QM_BODY_LOG=0` in qmd's environment, bodies stay in redb (their record's value) and
//! no segment is made; either way qmd reads both kinds, so a device may hold both.

use super::record::{split_stored, stored_len, write_logged};
use crate::storage::bodies::{Bodies, BodyRef, Mark};
use crate::storage::handle::Db;
use qm_common::{QmError, QmResult};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// Live body bytes by segment number.
pub const LIVE: TableDefinition<u32, u64> = TableDefinition::new("qm.bodies");

/// By segment number, how far the segment reached when the last commit that appended to
/// it was made: no reference of that commit or an earlier one points past it, so what a
/// segment holds beyond it when the file is opened is dead ([`cut_dead_tails`]).
pub const ENDS: TableDefinition<u32, u64> = TableDefinition::new("qm.bodies.ends");

/// Whether applied bodies go to body segments: unless `QM_BODY_LOG=0`.
pub fn logs_bodies() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        crate::options::env_switch("QM_BODY_LOG", "bodies kept in redb", "in body segments")
    })
}

fn fail(e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("body segments: {e}"))
}

/// Changes of live bytes by segment, gathered over one commit.
pub type LiveDeltas = HashMap<u32, i64>;

/// Writes the changes of live bytes gathered in `deltas`; a segment with none left loses
/// its row.
pub fn write_live(txn: &WriteTransaction, deltas: LiveDeltas) -> QmResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(LIVE).map_err(fail)?;
    for (segment, delta) in deltas {
        let had = table.get(segment).map_err(fail)?.map_or(0, |v| v.value());
        let now = had.checked_add_signed(delta).ok_or_else(|| {
            fail(format_args!("segment {segment} would hold {had} {delta:+} live bytes"))
        })?;
        match now {
            0 => drop(table.remove(segment).map_err(fail)?),
            n => drop(table.insert(segment, n).map_err(fail)?),
        }
    }
    Ok(())
}

/// The live bytes of each segment as `txn` counts them (for `qverify`).
pub fn live_in(txn: &redb::ReadTransaction) -> QmResult<BTreeMap<u32, u64>> {
    by_segment(txn, LIVE)
}

/// A table of `txn` that holds a number for each segment, read whole.
fn by_segment(
    txn: &redb::ReadTransaction,
    def: TableDefinition<u32, u64>,
) -> QmResult<BTreeMap<u32, u64>> {
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(fail(e)),
    };
    let mut all = BTreeMap::new();
    for item in table.iter().map_err(fail)? {
        let (k, v) = item.map_err(fail)?;
        all.insert(k.value(), v.value());
    }
    Ok(all)
}

/// Refuses a file whose messages (`live`, as [`live_in`] read it) point into body segments that are not there (a file
/// moved or copied without its `FILE.bodies.*`): its messages could not be read.
pub fn check_present(live: &BTreeMap<u32, u64>, bodies: &Bodies) -> QmResult<()> {
    let listed: Vec<u32> = bodies.list().into_iter().map(|(n, _, _)| n).collect();
    let missing: Vec<_> = live
        .keys()
        .filter(|n| !listed.contains(n))
        .map(|&n| crate::storage::bodies::segment_path(bodies.path(), n))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
    Err(QmError::inval(format!(
        "{} cannot be opened: its messages' bodies are in {}, which {} missing; a file moved \
         or copied must take its body segments ({}.bodies.*) with it. It was left unchanged",
        bodies.path().display(),
        names.join(", "),
        if names.len() == 1 { "is" } else { "are" },
        bodies.path().display()
    )))
}

/// The body bytes the messages of every message table of `txn`'s file point at, by
/// segment (for `qverify`, to compare with [`live_in`]).
pub fn pointed_at(txn: &redb::ReadTransaction) -> QmResult<BTreeMap<u32, u64>> {
    let mut pointed = BTreeMap::new();
    each_reference(txn, |_, _, at| {
        *pointed.entry(at.segment).or_default() += u64::from(at.len);
    })?;
    Ok(pointed)
}

/// Calls `f` with the table, sequence number and body reference of every message of every
/// message table of `txn`'s file whose body is in a segment.
fn each_reference(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&str, u64, BodyRef),
) -> QmResult<()> {
    use redb::TableHandle;
    for handle in txn.list_tables().map_err(fail)? {
        let name = handle.name();
        if !(name.starts_with("qs.") && name.ends_with(".msg")) {
            continue;
        }
        let table = txn.open_table(messages(name)).map_err(fail)?;
        for item in table.iter().map_err(fail)? {
            let (k, v) = item.map_err(fail)?;
            if let Some(at) = split_stored(v.value()).and_then(|s| s.logged) {
                f(name, k.value(), at);
            }
        }
    }
    Ok(())
}

/// Gives message `seq` of `table`, whose body is at `at` in `from`, a copy of that body
/// appended to `to`: where it went, or `None` when the message's body is not at `at` (any
/// more).
fn move_body(
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    seq: u64,
    at: &BodyRef,
    from: &Bodies,
    to: &Bodies,
) -> QmResult<Option<BodyRef>> {
    let value = table.get(seq).map_err(fail)?.map(|v| v.value().to_vec());
    let Some(stored) = value.as_deref().and_then(split_stored) else { return Ok(None) };
    if stored.logged != Some(*at) {
        return Ok(None);
    }
    let body = from.read(at).map_err(fail)?;
    let moved = to.append(&body).map_err(fail)?;
    let sum = stored.sums.map_or(moved.crc, |s| s.body);
    let mut slot =
        table.insert_reserve(seq, stored_len(stored.meta, BodyRef::BYTES)).map_err(fail)?;
    write_logged(slot.as_mut(), stored.meta, &moved, sum);
    Ok(Some(moved))
}

/// The segments of `bodies` nothing in `txn` points at (see the module's comment). The
/// segment appends go to is one of them when nothing points into it any more: it is
/// retired, so that a queue filled and emptied again and again does not grow it.
pub fn dead(txn: &WriteTransaction, bodies: &Bodies) -> QmResult<Vec<u32>> {
    let listed = bodies.list();
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let table = txn.open_table(LIVE).map_err(fail)?;
    let current = bodies.current();
    let mut dead = Vec::new();
    for (segment, _, len) in listed {
        if table.get(segment).map_err(fail)?.is_some() {
            continue;
        }
        if Some(segment) == current {
            // Inside a write transaction: no append is under way.
            if len == 0 {
                continue;
            }
            bodies.retire(segment);
        }
        dead.push(segment);
    }
    if !dead.is_empty() {
        let mut ends = txn.open_table(ENDS).map_err(fail)?;
        for &segment in &dead {
            ends.remove(segment).map_err(fail)?;
        }
    }
    Ok(dead)
}

/// Records in `txn` how far each segment appended to since `mark` reaches ([`ENDS`]).
fn record_ends(txn: &WriteTransaction, bodies: &Bodies, mark: &Mark) -> QmResult<()> {
    let appended = bodies.appended_since(mark);
    if appended.is_empty() {
        return Ok(());
    }
    let mut ends = txn.open_table(ENDS).map_err(fail)?;
    for (segment, end) in appended {
        ends.insert(segment, end).map_err(fail)?;
    }
    Ok(())
}

/// Cuts every segment of the file `db` opens back to where its last durable commit left
/// it ([`ENDS`]): what lies beyond was appended by commits that failed or were lost, and
/// a full disk must get that room back before the journal is replayed. A segment with
/// no live bytes is left to the sweep before the replay.
pub fn cut_dead_tails(db: &redb::Database, bodies: &Bodies) -> QmResult<()> {
    if bodies.list().is_empty() {
        return Ok(());
    }
    let txn = db.begin_read().map_err(fail)?;
    let (live, ends) = match (txn.open_table(LIVE), txn.open_table(ENDS)) {
        (Ok(live), Ok(ends)) => (live, ends),
        _ => return Ok(()),
    };
    for item in ends.iter().map_err(fail)? {
        let (segment, end) = item.map_err(fail)?;
        let (segment, end) = (segment.value(), end.value());
        if live.get(segment).map_err(fail)?.is_none() {
            continue;
        }
        let before = bodies.bytes();
        if bodies.cut(segment, end).map_err(fail)? {
            tracing::info!(
                "{}: cut {} bytes no commit points at off body segment {segment}",
                bodies.path().display(),
                before - bodies.bytes()
            );
        }
    }
    Ok(())
}

/// Runs `apply` in `txn`, which may append bodies, and commits `txn`. When either fails,
/// the appends are undone ([`Bodies::undo_failed_commit`]): nothing points at them, and a
/// write tried again would append them again (on a full disk, filling the room freed for
/// it with dead bytes at each try). `explain` says why the commit failed.
pub fn committed<T>(
    bodies: &Bodies,
    txn: WriteTransaction,
    apply: impl FnOnce(&WriteTransaction) -> QmResult<T>,
    explain: impl FnOnce(redb::CommitError) -> QmError,
) -> QmResult<T> {
    let mark = bodies.mark();
    let result = apply(&txn)
        .and_then(|value| record_ends(&txn, bodies, &mark).map(|()| value))
        .and_then(|value| txn.commit().map(|()| value).map_err(explain));
    if result.is_err() {
        match bodies.undo_failed_commit(mark) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "{}: a commit failed after redb synced it; the bodies it appended stay",
                bodies.path().display()
            ),
            Err(e) => tracing::warn!(
                "{}: the bodies a failed write appended could not be cut back: {e}",
                bodies.path().display()
            ),
        }
    }
    result
}

/// Unlinks the `dead` segments, once the commit that found them so is durable. A
/// segment that cannot be removed is said and left, as are all while a backup pins them:
/// the next durable commit tries again.
pub fn remove(bodies: &Bodies, dead: &[u32]) {
    if bodies.pinned() {
        return;
    }
    for &segment in dead {
        if let Err(e) = bodies.remove(segment) {
            tracing::warn!(
                "{}: body segment {segment} holds no live body but cannot be removed: {e}",
                bodies.path().display()
            );
        }
    }
}

fn messages(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// Messages (by sequence number) and where their bodies are.
type References = Vec<(u64, BodyRef)>;

/// The body references of up to [`CHUNK`] messages of `table` after `after` (from the
/// first when `None`), and the last message looked at: `None` when there was none.
fn references(
    table: &impl ReadableTable<u64, &'static [u8]>,
    after: Option<u64>,
) -> QmResult<(References, Option<u64>)> {
    let range = match after {
        Some(u64::MAX) => return Ok((Vec::new(), None)),
        Some(seq) => table.range(seq + 1..),
        None => table.range(0..),
    };
    let (mut found, mut last) = (Vec::new(), None);
    for item in range.map_err(fail)?.take(CHUNK) {
        let (k, v) = item.map_err(fail)?;
        last = Some(k.value());
        if let Some(at) = split_stored(v.value()).and_then(|s| s.logged) {
            found.push((k.value(), at));
        }
    }
    Ok((found, last))
}

/// Messages read at a time by [`forget`] and [`rehome`], so that their memory stays small.
const CHUNK: usize = 4096;

/// Counts the bodies the messages of table `msg` point at as no longer live: before the
/// table is deleted (a queue space destroyed, or moved away).
pub fn forget(txn: &WriteTransaction, msg: &str) -> QmResult<()> {
    // A file whose messages point at no segment needs no walk through them.
    if txn.open_table(LIVE).map_err(fail)?.first().map_err(fail)?.is_none() {
        return Ok(());
    }
    let table = txn.open_table(messages(msg)).map_err(fail)?;
    let mut live = LiveDeltas::new();
    let mut after = None;
    loop {
        let (chunk, last) = references(&table, after)?;
        for (_, at) in chunk {
            *live.entry(at.segment).or_default() -= i64::from(at.len);
        }
        match last {
            Some(seq) => after = Some(seq),
            None => break,
        }
    }
    drop(table);
    write_live(txn, live)
}

/// Gives the messages of table `msg` in `txn`, copied from another file, bodies of their
/// own in this file's segments `to`, read from that file's segments `from`.
pub fn rehome(txn: &WriteTransaction, msg: &str, from: &Bodies, to: &Bodies) -> QmResult<()> {
    let mut table = txn.open_table(messages(msg)).map_err(fail)?;
    let mut live = LiveDeltas::new();
    let mut after = None;
    loop {
        let (chunk, last) = references(&table, after)?;
        for (seq, at) in chunk {
            // The segments it came from are another file's: they count nothing here.
            if let Some(moved) = move_body(&mut table, seq, &at, from, to)? {
                *live.entry(moved.segment).or_default() += i64::from(moved.len);
            }
        }
        match last {
            Some(seq) => after = Some(seq),
            None => break,
        }
    }
    drop(table);
    write_live(txn, live)
}

/// A segment is copied forward once no more than this share of it is live (one half), so
/// that the segments of a file take at most about twice its live bodies...
const SPARSE_SHARE: u64 = 2;
/// ...once such segments hold this many dead bytes in all, or an eighth of the file's live
/// bytes if that is more: finding the messages that point into them reads every record of
/// the file, worth it only for that much. The segment appends go to is retired first when
/// it is sparse and at least this large.
const COMPACT_ABOVE: u64 = 4 << 20;
/// How long a mostly dead segment must keep its live bytes to be copied forward.
const STILL_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Bodies copied forward in one write transaction, so that writers wait little for it.
const COPY_STEP: u64 = 8 << 20;

/// [`COMPACT_ABOVE`], or 16 KiB with `QM_FAULT=smallsegments` (tests).
pub fn compact_above() -> u64 {
    match crate::storage::fault::small_segments() {
        true => 16 << 10,
        false => COMPACT_ABOVE,
    }
}

/// The segments worth copying forward now: mostly dead ones that stopped dying (their
/// live bytes did not fall since compaction last looked), when they hold enough dead
/// bytes together. One that still dies is left to die whole: the old segments of a queue
/// served in order empty themselves, and copying their bodies would write them twice. The
/// segment appends go to is retired as soon as it is mostly dead, so that it may die.
fn sparse(db: &Db) -> QmResult<Vec<u32>> {
    let bodies = db.bodies();
    let listed = bodies.list();
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let txn = db.begin_read().map_err(fail)?;
    let (live, ends) = (live_in(&txn)?, by_segment(&txn, ENDS)?);
    let current = bodies.current();
    let lengths: BTreeMap<u32, u64> = listed.iter().map(|&(n, _, len)| (n, len)).collect();
    let sparse = mostly_dead(&lengths, &live, &ends, current);
    if let Some(current) = current.filter(|c| sparse.contains_key(c)) {
        bodies.retire(current);
    }
    let still = bodies.still_since(sparse, STILL_FOR);
    let dead: u64 = still.iter().map(|n| lengths[n] - live.get(n).copied().unwrap_or(0)).sum();
    let above = compact_above().max(live.values().sum::<u64>() / 8);
    Ok(if dead >= above { still } else { Vec::new() })
}

/// The segments of `lengths` (their bytes placed) at most half live, with their live
/// bytes, as the commits that `live` and `ends` were read from left them; the one appends
/// go to (`current`) only once it is long enough to be worth emptying.
fn mostly_dead(
    lengths: &BTreeMap<u32, u64>,
    live: &BTreeMap<u32, u64>,
    ends: &BTreeMap<u32, u64>,
    current: Option<u32>,
) -> BTreeMap<u32, u64> {
    let mut sparse = BTreeMap::new();
    for (&segment, &len) in lengths {
        let held = live.get(&segment).copied().unwrap_or(0);
        // What commits made durable: the segment appends go to may hold more, appended by
        // a commit under way, whose bodies the live bytes read here do not count yet (a
        // large one made the segment look half dead and ended it at each such commit).
        let len = ends.get(&segment).map_or(len, |&end| end.min(len));
        let open = Some(segment) == current && len < compact_above();
        if !open && held > 0 && held * SPARSE_SHARE <= len {
            sparse.insert(segment, held);
        }
    }
    sparse
}

/// A message whose body is in a segment being emptied: its table, its sequence number,
/// and where its body is.
type Found = (String, u64, BodyRef);

/// The messages of every message table of the file whose bodies are in `segments`, read
/// in one read transaction, calling `between` after every [`CHUNK`] records: at millions
/// of messages the read takes seconds, and groups handed to the applier meanwhile are
/// applied there rather than after it.
fn pointing_into(db: &Db, segments: &[u32], between: &mut impl FnMut()) -> QmResult<Vec<Found>> {
    let mut found = Vec::new();
    let mut read = 0usize;
    each_reference(&db.begin_read().map_err(fail)?, |name, seq, at| {
        if segments.contains(&at.segment) {
            found.push((name.to_string(), seq, at));
        }
        read += 1;
        if read.is_multiple_of(CHUNK) {
            between();
        }
    })?;
    Ok(found)
}

/// Copies the live bodies of mostly dead segments forward, so that those segments die and
/// go: a few long-lived messages do not keep whole segments on disk. Each step is a durable
/// write transaction of its own, and `between` is called after each: the applier applies
/// the groups handed to it meanwhile there, so that copying hundreds of megabytes (after a
/// large queue was purged) does not hold the writer's checkpoints up for seconds. A durable
/// commit after the last step removes the segments emptied (a crash before leaves them,
/// and the next compaction finds them dead). A message changed meanwhile is left as it is.
pub fn compact(db: &Db, mut between: impl FnMut()) -> QmResult<()> {
    let victims = sparse(db)?;
    if victims.is_empty() {
        return Ok(());
    }
    let found = pointing_into(db, &victims, &mut between)?;
    let live: u64 = found.iter().map(|(_, _, at)| u64::from(at.len)).sum();
    tracing::info!(
        "{}: copying {} of live bodies forward out of {} mostly dead body segments",
        db.bodies().path().display(),
        qm_common::plural::count(live, "byte", "bytes"),
        victims.len()
    );
    let mut moved = 0u64;
    for step in steps(&found) {
        moved += copy_forward(db, step)?;
        between();
        while crate::storage::fault::compaction_gated() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            between();
        }
    }
    // Made durable now, so that the segments emptied go now, not at the next write.
    let mut txn = db.begin_write().map_err(fail)?;
    crate::storage::files::quick_repair(&mut txn);
    let dead = dead(&txn, db.bodies())?;
    txn.commit().map_err(fail)?;
    remove(db.bodies(), &dead);
    tracing::info!(
        "{}: {} of live bodies copied forward out of {} mostly dead body segments",
        db.bodies().path().display(),
        qm_common::plural::count(moved, "byte", "bytes"),
        victims.len()
    );
    Ok(())
}

/// `found` cut into steps of about [`COPY_STEP`] bytes of bodies.
fn steps(found: &[Found]) -> Vec<&[Found]> {
    let (mut steps, mut start, mut bytes) = (Vec::new(), 0, 0);
    for (i, (_, _, at)) in found.iter().enumerate() {
        bytes += u64::from(at.len);
        if bytes >= COPY_STEP {
            steps.push(&found[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < found.len() {
        steps.push(&found[start..]);
    }
    steps
}

/// Copies the bodies of `step` forward in one write transaction; the bytes copied.
fn copy_forward(db: &Db, step: &[Found]) -> QmResult<u64> {
    let bodies = db.bodies();
    // Durable, so that no later commit has all the steps' bodies to sync at once.
    let txn = db.begin_write().map_err(fail)?;
    let copy = |txn: &WriteTransaction| {
        let mut live = LiveDeltas::new();
        let mut moved = 0;
        for (name, seq, at) in step {
            let mut table = txn.open_table(messages(name)).map_err(fail)?;
            let Some(to) = move_body(&mut table, *seq, at, bodies, bodies)? else { continue };
            *live.entry(at.segment).or_default() -= i64::from(at.len);
            *live.entry(to.segment).or_default() += i64::from(to.len);
            moved += u64::from(at.len);
        }
        write_live(txn, live)?;
        Ok(moved)
    };
    committed(bodies, txn, copy, fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies a commit under way appended to the segment appends go to are not dead
    /// bytes; once committed, a segment half of whose bytes died is mostly dead.
    #[test]
    fn bodies_of_a_commit_under_way_are_not_dead_bytes() {
        let mib = 1 << 20;
        let map = |pairs: &[(u32, u64)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
        let lengths = map(&[(4, 64 * mib), (5, 12 * mib)]);
        // Segment 5 holds 4 MiB committed and live, and 8 MiB a large commit is appending.
        let live = map(&[(4, 64 * mib), (5, 4 * mib)]);
        let ends = map(&[(4, 64 * mib), (5, 4 * mib)]);
        assert_eq!(mostly_dead(&lengths, &live, &ends, Some(5)), BTreeMap::new());
        // Committed, then half of each segment's bytes died.
        let live = map(&[(4, 32 * mib), (5, 6 * mib)]);
        let ends = map(&[(4, 64 * mib), (5, 12 * mib)]);
        let found = mostly_dead(&lengths, &live, &ends, Some(5));
        assert_eq!(found, map(&[(4, 32 * mib), (5, 6 * mib)]));
        // A segment without a recorded end (written before ends were) counts its length.
        let found = mostly_dead(&lengths, &live, &BTreeMap::new(), None);
        assert_eq!(found, map(&[(4, 32 * mib), (5, 6 * mib)]));
        // The segment appends go to is left alone while it is short.
        let lengths = map(&[(5, 2 * mib)]);
        let live = map(&[(5, mib / 2)]);
        assert_eq!(mostly_dead(&lengths, &live, &BTreeMap::new(), Some(5)), BTreeMap::new());
        assert_eq!(mostly_dead(&lengths, &live, &BTreeMap::new(), None), live);
    }
}
