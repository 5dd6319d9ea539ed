//! The write-ahead journal of one redb file: what makes a group of writes durable with one
//! `fdatasync` of a preallocated file instead of a redb commit's own syncs.
//!
//! The writer ([`crate::engine::writer`]) appends each group of writes here as one record
//! and syncs it; only then are the callers answered. A group of message writes is applied
//! to redb later, with the others deferred since ([`crate::engine::deferred`]); any other
//! group is applied at once, after them, in a commit that is visible but not durable
//! (`Durability::None`). Every commit that applies groups records the number (LSN) of the
//! last one it holds. Now and then a durable redb commit (a checkpoint) applies what is
//! deferred and makes everything up to its LSN durable in redb itself: under load on the
//! applier's thread, while records go on into the other region (below); otherwise on the
//! writer's, and the journal starts again from its beginning. Any durable commit of the file, an administrative one
//! included, applies the deferred groups first and carries the LSN of the last group
//! applied, so redb always knows how far it is durable.
//!
//! When the file is opened, redb is back at its last durable commit: the records past the
//! LSN it holds are applied again ([`crate::engine::writer::replay`]) in one durable
//! commit. Every write a record holds sets or removes one key, so applying a record whose
//! writes redb already holds changes nothing; starting from any record at or before the
//! durable point gives the same end state.
//!
//! Layout: a header page (magic, format, the journal's id, which redb also records, so that
//! a journal is never applied to another file, and where the back region begins), then two
//! regions of records, the front one from the end of the header page and the back one from
//! there (twice `qmd --checkpoint-mib`; 8 MiB in journals of format 3). A record is
//! `[length u32][crc32 u32][lsn u64][payload]`, little-endian, the CRC over the journal's
//! id, the LSN and the payload (the id since format 3: a record left by an earlier
//! generation never passes). A scan of a region stops at the first record that is torn,
//! fails its CRC, or does not carry the LSN after its predecessor's: what follows is left
//! over from before the region last started again.
//!
//! Why two regions: under load, a checkpoint does not stop the groups. The writer hands the
//! deferred groups to a thread of their own ([`crate::engine::applier`]), which applies
//! them in a durable commit, and goes on appending in the other region; the region it left
//! is written again only once that commit is made. Recovery reads both regions and applies
//! the records past redb's durable point in order of LSN.
//!
//! The file is filled with zeros as it grows (from 1 MiB, doubling up to the end of the back
//! region), so that a sync writes data only, never the file's size or block map: one device
//! flush per group.

use super::fault;
use super::files::{check_trust, os_error};
use qm_common::{QmError, QmResult};
use redb::{ReadableDatabase, StorageBackend, TableDefinition};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::engine::applier::Applying;

/// How far the groups of a file have come, by LSN, for the engines: a message written by a
/// group stays in memory until redb holds that group ([`crate::engine::index::Index::drain`]).
/// Kept by the file across reopenings; only ever grows.
#[derive(Default)]
pub struct Marks {
    /// The last group acknowledged from the journal.
    acknowledged: AtomicU64,
    /// Every group up to this one is in redb, visible to readers.
    applied: AtomicU64,
}

impl Marks {
    /// Group `lsn` is durable in the journal; its callers are answered next.
    pub fn acknowledge(&self, lsn: u64) {
        self.acknowledged.fetch_max(lsn, Ordering::Release);
    }

    /// Every group up to `lsn` is in redb.
    pub fn apply(&self, lsn: u64) {
        self.applied.fetch_max(lsn, Ordering::Release);
    }

    /// The last group acknowledged: read after a write was answered, at least its group.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Acquire)
    }

    /// Every group up to this one is in redb.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

/// `id` → the journal's id, `lsn` → the LSN of the last group applied (both `u64`).
pub const TABLE: TableDefinition<&str, u64> = TableDefinition::new("qm.journal");

const MAGIC: &[u8; 16] = b"qm-journal\0\0\0\0\0\0";
/// 4: the header says where the back region begins. 3: two regions (the back one from
/// 8 MiB), and the CRC of a record covers the journal's id. 2: writes carry the
/// blocks and the waiting flag the order tables need (see [`crate::engine::stored`]). A
/// journal of format 2 is read (its front region alone, CRCs without the id) and goes on
/// as format 3; one of format 1 is taken over when it holds nothing to replay, and refused
/// otherwise: this qm cannot read its records. A journal of format 3 is read as it lies and
/// goes on as format 4.
const FORMAT: u32 = 4;
const EARLIER_FORMATS: &[u32] = &[1, 2, 3];
/// Since this format the CRC of a record covers the journal's id.
const GENERATION_IN_CRC: u32 = 3;
/// The oldest format whose records this qm reads.
const READABLE: u32 = 2;
/// Records start after the header page.
const HEADER: u64 = 4096;
const RECORD_HEAD: usize = 16;
const FIRST_LEN: u64 = 1 << 20;
/// Disk room held before a checkpoint or the recovery commit, besides what it replays.
const RECOVERY_ROOM: u64 = 512 << 10;
/// Where the back region begins in journals of format 3, and in those of later formats
/// made with the smallest checkpoint size allowed.
const SMALLEST_BACK: u64 = 8 << 20;
/// The journal never grows past the end of its back region (twice where that region
/// begins); when the region in use is full, the writer checkpoints and starts again...
/// ...except while `qbackup` holds its file, when no checkpoint can be taken: it then grows
/// in steps of a region (a step of zeros is written in tens of milliseconds) up to this,
/// and goes on doing so after the hold until a checkpoint starts it again at the front; it
/// is cut back to its usual length once the writer is idle, or at the next start
/// ([`Journal::cut_back`]).
const HELD_MAX_LEN: u64 = 1 << 30;

/// Bytes of records between two checkpoints (`qmd --checkpoint-mib`): the journal's
/// regions are twice that, and the writer hands a region's groups to the applier once it
/// holds this much.
static CHECKPOINT_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_CHECKPOINT_MIB << 20);
/// `qmd --checkpoint-mib` when it is not given.
pub const DEFAULT_CHECKPOINT_MIB: u64 = 32;
/// The range `qmd --checkpoint-mib` takes: from the size that gives the smallest back
/// region, to the one whose journal reaches a backup's limit.
pub const CHECKPOINT_MIB: std::ops::RangeInclusive<u64> = 4..=256;

/// Sets the bytes of records between checkpoints of the journals made or started again
/// from now on.
pub fn set_checkpoint_bytes(bytes: u64) {
    CHECKPOINT_BYTES.store(bytes, Ordering::Relaxed);
}

/// Where the back region of a journal begins when it is made or started again now.
fn back_now() -> u64 {
    2 * CHECKPOINT_BYTES.load(Ordering::Relaxed)
}

/// The journal's path beside its redb file.
pub fn path_of(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// An open journal, positioned for the next record.
pub struct Journal {
    path: PathBuf,
    file: fault::Backend,
    /// The same file, for growing it on a thread of its own ([`Journal::grow_ahead`]).
    spare: File,
    /// Zeros being added past the end on that thread: the length they make, once written
    /// and synced.
    growing: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
    /// The file's length: zeros past the last record, ready to be overwritten.
    len: u64,
    /// Where the next record goes.
    at: u64,
    /// Where the region records go to now begins: the end of the header page or
    /// [`Journal::back`].
    start: u64,
    /// Where the back region begins: the header's, or 8 MiB in a journal of format 3.
    back: u64,
    /// The LSN the next record carries.
    next_lsn: u64,
    /// The id in the header, part of every record's CRC (format 3).
    generation: u64,
    /// The format of the records here: the header's until a new generation is written.
    format: u32,
    /// Records written since the journal last started again.
    written: u64,
    /// Disk room the groups applied since the last durable commit may still take when redb
    /// writes them out: the next durable commit holds it first.
    pub pending_room: u64,
    /// Groups durable here and not yet applied to redb.
    pub deferred: crate::engine::deferred::Deferred,
    /// Groups handed to the applier thread with the region left then: that region is not
    /// written again until they are in redb, durably.
    applying: Option<Arc<Applying>>,
    /// How far the groups acknowledged and applied have come, for the engines (see
    /// [`crate::storage::handle::DbFile::applied`]).
    marks: Arc<Marks>,
    /// False when its generation could not be recorded in redb (a full filesystem at
    /// open): records written now would not be applied at the next open, so none are.
    usable: bool,
    /// Records written straight to the device, where the filesystem takes it
    /// ([`super::direct`]).
    direct: Option<super::direct::Direct>,
}

/// What a journal's header says.
struct Header {
    generation: u64,
    format: u32,
    back: u64,
}

/// The refusal of a journal that is not this file's.
fn foreign(path: &Path, why: &str) -> QmError {
    QmError::inval(format!(
        "{} is not the journal of its redb file ({why}); it was left unchanged. If it is a \
         left-over, move it away and start again",
        path.display()
    ))
}

fn io(path: &Path, what: &str) -> impl Fn(std::io::Error) -> QmError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| super::space::io_failure(&path, &what, &e)
}

impl Journal {
    /// Opens the journal of the redb file at `db_path`, creating it when there is none
    /// (`existed` says whether it was there), and reads the generation its header carries.
    fn open(db_path: &Path, marks: Arc<Marks>) -> QmResult<(Journal, Header, bool)> {
        let path = path_of(db_path);
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let (file, existed) = match rustix::fs::open(&path, flags, Mode::empty()) {
            Ok(fd) => (File::from(fd), true),
            Err(rustix::io::Errno::NOENT) => (create(&path)?, false),
            Err(rustix::io::Errno::LOOP) => {
                return Err(foreign(&path, "it is a symbolic link"));
            }
            Err(e) => return Err(os_error(&path, "open", std::io::Error::from(e))),
        };
        check_trust(&path, &file.metadata().map_err(|e| os_error(&path, "examine", e))?)?;
        let len = file.metadata().map_err(|e| os_error(&path, "examine", e))?.len();
        let direct = super::direct::Direct::open(&file);
        let spare = file.try_clone().map_err(|e| os_error(&path, "open", e))?;
        let file = fault::backend(file).map_err(|e| os_error(&path, "open", e))?;
        let mut journal = Journal {
            path,
            file,
            spare,
            growing: None,
            len,
            at: HEADER,
            start: HEADER,
            back: SMALLEST_BACK,
            next_lsn: 1,
            generation: 0,
            format: FORMAT,
            written: 0,
            pending_room: 0,
            deferred: Default::default(),
            applying: None,
            marks,
            usable: true,
            direct,
        };
        let header = journal.read_header()?;
        (journal.generation, journal.format) = (header.generation, header.format);
        journal.back = header.back;
        Ok((journal, header, existed))
    }

    /// Checks the header is a journal's; returns its generation and format.
    fn read_header(&self) -> QmResult<Header> {
        let mut head = [0u8; 40];
        if self.len < HEADER {
            return Err(foreign(&self.path, "it is shorter than a journal's header"));
        }
        self.file.read(0, &mut head).map_err(io(&self.path, "read"))?;
        if &head[..16] != MAGIC {
            return Err(foreign(&self.path, "it does not start like a qm journal"));
        }
        let format = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
        if format != FORMAT && !EARLIER_FORMATS.contains(&format) {
            return Err(foreign(&self.path, &format!("it has format {format}, not {FORMAT}")));
        }
        let generation = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
        let back = match format {
            FORMAT => u64::from_le_bytes(head[32..40].try_into().expect("8 bytes")),
            _ => SMALLEST_BACK,
        };
        let backs = 2 * (CHECKPOINT_MIB.start() << 20)..=2 * (CHECKPOINT_MIB.end() << 20);
        if !backs.contains(&back) || back % (1 << 20) != 0 {
            return Err(foreign(&self.path, &format!("its back region would begin at {back}")));
        }
        Ok(Header { generation, format, back })
    }

    /// Writes `generation` into the header, durably, with the back region beginning at
    /// `back`; records are written in this format, generation and layout from now
    /// on (the caller starts the journal again: what lies past the header is stale).
    fn write_header(&mut self, generation: u64, back: u64) -> QmResult<()> {
        self.file.write(0, &header(generation, back)).map_err(io(&self.path, "write"))?;
        self.file.sync_data().map_err(io(&self.path, "sync"))?;
        (self.generation, self.format, self.back) = (generation, FORMAT, back);
        Ok(())
    }

    /// The journal's usual length: the end of its back region.
    fn max_len(&self) -> u64 {
        2 * self.back
    }

    /// Bytes of records in a region at which a checkpoint is due: half the region, so that
    /// groups go on into the other half while the applier's commit of the other region is
    /// not made yet.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.back / 2
    }

    /// The records past `after` that follow on from it without a gap, read from both
    /// regions (the front alone before format 3), in order of LSN.
    fn scan(&self, after: u64) -> QmResult<Vec<(u64, Vec<u8>)>> {
        let mut found = std::collections::BTreeMap::new();
        let both = [HEADER, self.back];
        let regions: &[u64] = if self.format >= GENERATION_IN_CRC { &both } else { &both[..1] };
        for &start in regions {
            for (lsn, payload) in self.scan_region(start, after)? {
                found.insert(lsn, payload);
            }
        }
        let mut records = Vec::new();
        for (lsn, payload) in found {
            // The first may lie past `after` + 1: the caller says why it is not applied.
            if records.last().is_some_and(|&(last, _)| lsn != last + 1) {
                break;
            }
            records.push((lsn, payload));
        }
        Ok(records)
    }

    /// The records of the region that begins at `start` which follow each other, those
    /// whose LSN is past `after`.
    fn scan_region(&self, start: u64, after: u64) -> QmResult<Vec<(u64, Vec<u8>)>> {
        let mut records = Vec::new();
        let mut at = start;
        let mut expected: Option<u64> = None;
        while let Some((lsn, payload, next)) = self.record_at(at)? {
            if expected.is_some_and(|e| e != lsn) {
                break;
            }
            if lsn > after {
                records.push((lsn, payload));
            }
            expected = Some(lsn + 1);
            at = next;
        }
        Ok(records)
    }

    /// Records written since the journal last started again: the groups a checkpoint now
    /// would make durable in redb (told by a backup's manifest).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The record at `at`, if a whole and valid one is there.
    fn record_at(&self, at: u64) -> QmResult<Option<(u64, Vec<u8>, u64)>> {
        if at + RECORD_HEAD as u64 > self.len {
            return Ok(None);
        }
        let mut head = [0u8; RECORD_HEAD];
        self.file.read(at, &mut head).map_err(io(&self.path, "read"))?;
        let len = u64::from(u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let lsn = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let end = at + RECORD_HEAD as u64 + len;
        if len == 0 || end > self.len {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        self.file.read(at + RECORD_HEAD as u64, &mut payload).map_err(io(&self.path, "read"))?;
        if self.checksum(lsn, &payload) != crc {
            return Ok(None);
        }
        Ok(Some((lsn, payload, end)))
    }

    /// From now on records go at the beginning again, the first with `lsn`: everything
    /// written so far is durable in redb (or was just found to be stale).
    pub fn restart(&mut self, lsn: u64) {
        self.at = HEADER;
        self.start = HEADER;
        self.next_lsn = lsn;
        self.written = 0;
        self.pending_room = 0;
        self.applying = None;
    }

    /// Hands `applying` (every group up to the last record, taken from the deferred ones)
    /// to the applier, and goes on in the other region. Only when [`Journal::may_switch`].
    pub fn switch(&mut self, applying: Arc<Applying>) {
        self.start = if self.start == HEADER { self.back } else { HEADER };
        self.at = self.start;
        self.pending_room = 0;
        self.applying = Some(applying);
    }

    /// Whether records may go to the other region now: the groups of its last use are in
    /// redb, and the front region has not grown over the back one (a backup's hold lets
    /// it): a checkpoint then starts the journal again instead.
    pub fn may_switch(&mut self) -> bool {
        self.usable && !self.busy() && (self.start != HEADER || self.at <= self.back)
    }

    /// Whether groups handed to the applier are still being applied; forgets them once
    /// they are in redb.
    pub fn busy(&mut self) -> bool {
        match &self.applying {
            Some(a) if a.finished() == Some(true) => {
                self.applying = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The groups the applier is applying now, if any (they are in redb once it is done).
    pub fn applying(&self) -> Option<&Applying> {
        self.applying.as_deref()
    }

    /// Waits until the groups handed to the applier are in redb: whatever applies or
    /// commits next must come after them. Their commit's error when it failed (the file is
    /// then opened again, which replays the journal).
    pub fn finish_applying(&mut self) -> QmResult<()> {
        let Some(applying) = self.applying.take() else { return Ok(()) };
        let result = applying.wait();
        if result.is_err() {
            self.applying = Some(applying);
        }
        result
    }

    /// Disk room what is not yet durable in redb may take there: groups applied since the
    /// last durable commit, deferred, and being applied.
    pub fn unapplied_room(&self) -> u64 {
        let applying = self.applying.as_ref().filter(|a| a.finished().is_none());
        self.pending_room + self.deferred.room() + applying.map_or(0, |a| a.room())
    }

    /// The journal's marks, for the applier to move.
    pub fn marks(&self) -> Arc<Marks> {
        self.marks.clone()
    }

    /// Gives the room a backup's hold made the journal take back to the filesystem, when
    /// no record lies past the usual length. Called at a start and when the writer is idle,
    /// never under load: the change of size makes the next sync commit the filesystem's
    /// own journal, which then waits for everything written meanwhile (after a backup,
    /// the copy's metadata: one group waited 1.2 s for it).
    pub fn cut_back(&mut self) {
        self.finish_growing();
        // The back region lies below its end: a group being applied may still need it.
        let usual = self.max_len();
        if self.len > usual && self.at <= usual && self.file.set_len(usual).is_ok() {
            self.len = usual;
            // The filesystem's commit is paid now, not by the next group.
            let _ = self.file.sync_data();
        }
    }

    /// Everything deferred was just applied to redb (or the records it came from were):
    /// every group up to `lsn`.
    pub fn applied(&mut self, lsn: u64) {
        self.deferred.clear();
        self.marks.apply(lsn);
    }

    /// The LSN the next record will carry.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Whether a record of `payload_len` bytes can ever fit.
    pub fn fits(payload_len: usize) -> bool {
        (RECORD_HEAD + payload_len) as u64 <= (SMALLEST_BACK - HEADER) / 4
    }

    /// Bytes of records written in the region in use since it began.
    pub fn used(&self) -> u64 {
        self.at - self.start
    }

    /// Makes room for a record of `payload_len` bytes, growing the file if need be (past
    /// its usual length when its redb file is `held` by a backup); false when the journal is
    /// full (checkpoint, then it starts again) or cannot grow (the filesystem is full): the
    /// group is then committed by redb directly.
    pub fn make_room(&mut self, payload_len: usize, held: bool) -> bool {
        if !self.usable {
            return false;
        }
        let need = self.at + (RECORD_HEAD + payload_len) as u64;
        // The front region must not run into the back one while its groups are applied.
        if self.start == HEADER && need > self.back && self.busy() {
            return false;
        }
        if need > self.len {
            self.finish_growing();
        }
        if need <= self.len {
            self.grow_ahead();
            return true;
        }
        // Records past the usual size were written during a hold, and the writer is still
        // catching up after it (in steps between groups, until a checkpoint starts the
        // journal again at the front): refused more room now, the next group would be
        // committed by redb together with every write still deferred, holding all writers
        // up for most of a second (BENCHMARKS.md).
        let held = held || self.at > self.max_len();
        match self.grow(need, held) {
            Ok(grown) => grown,
            Err(e) => {
                tracing::debug!("journal not grown: {}", e.message);
                false
            }
        }
    }

    /// Appends `payload` as the record with the next LSN and syncs it, in room made by
    /// [`Journal::make_room`].
    pub fn append(&mut self, payload: &[u8]) -> QmResult<()> {
        let total = (RECORD_HEAD + payload.len()) as u64;
        if self.at + total > self.len {
            return Err(QmError::system("the journal has no room for the record"));
        }
        let lsn = self.next_lsn;
        let mut head = [0u8; RECORD_HEAD];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&self.checksum(lsn, payload).to_le_bytes());
        head[8..].copy_from_slice(&lsn.to_le_bytes());
        let started = std::time::Instant::now();
        self.write_record(&head, payload)?;
        crate::timings::JOURNAL_SYNCS.record(started.elapsed());
        self.at += total;
        self.next_lsn += 1;
        self.written += 1;
        self.marks.acknowledge(lsn);
        Ok(())
    }

    /// Writes a record at the journal's end and makes it durable: straight to the device
    /// where it can, else into the page cache and synced.
    fn write_record(&mut self, head: &[u8], payload: &[u8]) -> QmResult<()> {
        if let Some(direct) = &mut self.direct {
            let file = &self.file;
            let read = |at, out: &mut [u8]| file.read(at, out);
            match direct.write(self.at, head, payload, read) {
                Ok(()) => return Ok(()),
                // The filesystem took the descriptor but not the write (nothing was
                // written): from now on through the page cache.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::warn!(
                        "{}: direct writes refused ({e}); written through the page cache",
                        self.path.display()
                    );
                    self.direct = None;
                }
                Err(e) => return Err(io(&self.path, "write")(e)),
            }
        }
        let mut record = Vec::with_capacity(head.len() + payload.len());
        record.extend_from_slice(head);
        record.extend_from_slice(payload);
        self.file.write(self.at, &record).map_err(io(&self.path, "write"))?;
        self.file.sync_data().map_err(io(&self.path, "sync"))
    }

    /// The CRC of a record: over the generation too since format 3.
    fn checksum(&self, lsn: u64, payload: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        if self.format >= GENERATION_IN_CRC {
            h.update(&self.generation.to_le_bytes());
        }
        h.update(&lsn.to_le_bytes());
        h.update(payload);
        h.finalize()
    }

    /// Once records fill half the file, while it is shorter than usual, doubles it on a
    /// thread of its own (up to its usual length), so that groups are not held up by
    /// tens of MiB of zeros being written and synced: a new file's journal grows to four
    /// times the checkpoint size under its first load, and each doubling written by the
    /// writer itself stalled every group for up to a tenth of a second. Not while a test's
    /// fault is armed: its steps are counted on the writer's thread.
    fn grow_ahead(&mut self) {
        let usual = self.max_len();
        if self.growing.is_some() || self.len >= usual || self.at < self.len / 2 || fault::armed() {
            return;
        }
        let (from, to) = (self.len, (self.len * 2).min(usual));
        let Ok(file) = self.spare.try_clone() else { return };
        let zeros = move || fill_with_zeros(&fault::backend(file)?, from, to).map(|()| to);
        let thread = std::thread::Builder::new().name("qm-journal-grow".into());
        self.growing = thread.spawn(zeros).ok();
    }

    /// Waits for a growth under way and takes the length it made; one that failed leaves
    /// the file as the writer knew it (what it wrote past that is cut off again).
    fn finish_growing(&mut self) {
        let Some(growing) = self.growing.take() else { return };
        match growing.join() {
            Ok(Ok(len)) => self.len = self.len.max(len),
            Ok(Err(e)) => {
                tracing::debug!("{}: not grown ahead: {e}", self.path.display());
                let _ = self.file.set_len(self.len);
            }
            Err(_) => {
                let _ = self.file.set_len(self.len);
            }
        }
    }

    /// Makes the file at least `need` long, in zeros, doubling up to its usual length and
    /// in steps of a region past that (`held` only); false when that would pass the limit.
    fn grow(&mut self, need: u64, held: bool) -> QmResult<bool> {
        self.finish_growing();
        let usual = self.max_len();
        let limit = if held { HELD_MAX_LEN.max(usual) } else { usual };
        if need > limit {
            return Ok(false);
        }
        let mut len = self.len.max(FIRST_LEN);
        while len < need {
            len = if len < usual { (len * 2).min(usual) } else { len + self.back };
        }
        let len = len.min(limit);
        let filled = fill_with_zeros(&self.file, self.len, len).map_err(io(&self.path, "grow"));
        if let Err(e) = filled {
            // What was written of the growth goes back to a nearly full filesystem: kept, it
            // would take the room freed there, time after time.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len = len;
        Ok(true)
    }
}

/// Writes zeros over `from..to` of `file`, a MiB at a time, and syncs them.
fn fill_with_zeros(file: &fault::Backend, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64);
        file.write(at, &zeros[..n as usize])?;
        at += n;
    }
    file.sync_data()
}

impl Drop for Journal {
    /// A growth under way must be over before the file is opened again: zeros written
    /// after a new journal's records would erase them.
    fn drop(&mut self) {
        self.finish_growing();
    }
}

/// Room a commit replaying `records` may need: generously, twice their bytes.
fn replay_room(records: &[(u64, Vec<u8>)]) -> u64 {
    2 * records.iter().map(|(_, r)| r.len() as u64).sum::<u64>()
}

/// A header page carrying `generation`, its back region beginning at `back`.
fn header(generation: u64, back: u64) -> Vec<u8> {
    let mut head = vec![0u8; HEADER as usize];
    head[..16].copy_from_slice(MAGIC);
    head[16..20].copy_from_slice(&FORMAT.to_le_bytes());
    head[24..32].copy_from_slice(&generation.to_le_bytes());
    head[32..40].copy_from_slice(&back.to_le_bytes());
    head
}

/// Creates a journal: its header and its first MiB of zeros, written and synced under a
/// temporary name and then renamed into place, so that a crash never leaves a journal
/// half made.
fn create(path: &Path) -> QmResult<File> {
    let temp = super::files::new_name(path);
    // Left by a crash in the middle of a creation (and only if qm left it).
    super::files::remove_leftover(&temp)?;
    fault::step();
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(&temp, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| os_error(&temp, "create", std::io::Error::from(e)))?;
    let file = File::from(fd);
    let head = header(0, back_now());
    let backend = fault::backend(file.try_clone().map_err(|e| os_error(&temp, "open", e))?)
        .map_err(|e| os_error(&temp, "open", e))?;
    let write = || -> std::io::Result<()> {
        backend.write(0, &head)?;
        backend.write(HEADER, &vec![0u8; (FIRST_LEN - HEADER) as usize])?;
        backend.sync_data()?;
        fault::step();
        std::fs::rename(&temp, path)
    };
    let written = write();
    drop(backend);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(super::space::io_failure(path, "create", &e));
    }
    super::files::sync_directory(path)?;
    Ok(file)
}

/// The journal generation and the LSN of the last group applied, as the redb file records
/// them (no generation before its first journal).
fn recorded(db: &redb::Database) -> Result<(Option<u64>, u64), redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, 0)),
        Err(e) => return Err(e.into()),
    };
    let generation = table.get("generation")?.map(|v| v.value());
    let lsn = table.get("lsn")?.map_or(0, |v| v.value());
    Ok((generation, lsn))
}

/// Records in `txn` that the groups up to `lsn` are applied.
pub fn record_lsn(txn: &redb::WriteTransaction, lsn: u64) -> Result<(), redb::Error> {
    txn.open_table(TABLE)?.insert("lsn", lsn)?;
    Ok(())
}

/// Opens the journal of the redb file `db` (at `path`), applies the records that continue
/// what redb holds durably, and starts a new generation: one durable commit recording the
/// records applied and the generation, then the journal's header. Returns the journal,
/// empty and ready.
///
/// A journal is applied only when its header carries the generation redb records, and only
/// from the record right after redb's durable point: a journal left beside a file restored
/// from an older copy, or by another file of the same name, is never applied to it.
pub fn recover(
    db: &redb::Database,
    bodies: &super::bodies::Bodies,
    path: &Path,
    space: &super::space::Space,
    floor: u64,
    marks: Arc<Marks>,
) -> QmResult<Journal> {
    let what = format!("cannot recover the journal of {}", path.display());
    let fail = |e: redb::Error| space.explain(&what, e);
    let (recorded, durable) = recorded(db).map_err(fail)?;
    let (mut journal, Header { generation: found, format, .. }, existed) =
        Journal::open(path, marks)?;
    if !existed && recorded.is_some() {
        tracing::warn!(
            "{}: its journal {} was missing and was made again; if qmd did not stop cleanly, \
             writes acknowledged after the file's last checkpoint are not in it",
            path.display(),
            journal.path.display()
        );
    }
    let mut records = Vec::new();
    if existed && recorded == Some(found) {
        let scanned = journal.scan(durable)?;
        if format < READABLE && !scanned.is_empty() {
            return Err(QmError::inval(format!(
                "{} was written by an earlier qm (journal format {format}) and holds {} not \
                 yet in {}, which this qm cannot read; it was left unchanged. Start the qmd \
                 that wrote it once and stop it cleanly (qmadmin: daemon stop), then start \
                 this one",
                journal.path.display(),
                qm_common::plural::count(
                    scanned.len() as u64,
                    "group of writes",
                    "groups of writes"
                ),
                path.display()
            )));
        }
        match scanned.first() {
            Some(&(first, _)) if first != durable + 1 => tracing::warn!(
                "{}: its journal {} starts at record {first}, past the file's durable point \
                 ({durable}): it does not continue this file and was not applied",
                path.display(),
                journal.path.display()
            ),
            _ => records = scanned,
        }
    }
    let last = records.last().map_or(durable, |&(lsn, _)| lsn);
    let generation = loop {
        let g = super::records::random_id();
        if Some(g) != recorded {
            break g;
        }
    };
    let started = std::time::Instant::now();
    let commit = || -> QmResult<()> {
        let mut txn = db.begin_write().map_err(|e| fail(e.into()))?;
        super::files::quick_repair(&mut txn);
        space.reserve(RECOVERY_ROOM + replay_room(&records), floor)?;
        // Before the replay appends: what no durable commit points at goes.
        let dead = crate::engine::segments::dead(&txn, bodies)?;
        crate::engine::segments::remove(bodies, &dead);
        let apply = |txn: &redb::WriteTransaction| {
            for (_, payload) in &records {
                crate::engine::writer::replay(txn, bodies, payload)?;
            }
            let mut table = txn.open_table(TABLE).map_err(|e| fail(e.into()))?;
            table.insert("lsn", last).map_err(|e| fail(e.into()))?;
            table.insert("generation", generation).map_err(|e| fail(e.into()))?;
            Ok(())
        };
        crate::engine::segments::committed(bodies, txn, apply, |e| fail(e.into()))
    };
    match commit() {
        // Where room cannot be held ahead, what is acknowledged before a full disk must
        // still fit when it is replayed: checkpoints stay the smallest there.
        Ok(()) if space.holds_room() => journal.write_header(generation, back_now())?,
        Ok(()) => journal.write_header(generation, SMALLEST_BACK)?,
        // Nothing to replay, and no room to record a new generation: the journal goes on
        // with the one redb holds, or, if that is not its own, is not used until the next
        // open (groups are then committed by redb directly, or refused while it is full).
        Err(e) if records.is_empty() => {
            journal.usable = recorded == Some(found) && format == FORMAT;
            tracing::warn!(
                "{}: no new journal generation ({}); {}",
                path.display(),
                e.message,
                if journal.usable { "the current one goes on" } else { "journal not used" }
            );
        }
        Err(e) => return Err(e),
    }
    if !records.is_empty() {
        tracing::info!(
            "{}: replayed {} journal records ({} to {last}) in {} ms",
            path.display(),
            records.len(),
            durable + 1,
            started.elapsed().as_millis()
        );
    }
    journal.restart(last + 1);
    journal.cut_back();
    journal.applied(last);
    journal.marks.acknowledge(last);
    Ok(journal)
}

/// Makes everything journaled durable in redb itself and starts the journal again: a
/// durable commit applying the deferred groups and recording the LSN of the last group.
pub fn checkpoint(db: &super::handle::Db, journal: &mut Journal) -> QmResult<()> {
    let applied = journal.next_lsn() - 1;
    checkpoint_at(db, journal, applied)
}

/// [`checkpoint`], when the last group applied is `applied` (one the journal does not hold).
/// The deferred groups are applied in the same commit.
pub fn checkpoint_at(db: &super::handle::Db, journal: &mut Journal, applied: u64) -> QmResult<()> {
    journal.finish_applying()?;
    let pending = journal.pending_room + journal.deferred.room();
    let explain = |e: redb::Error| db.explain("checkpoint failed", e);
    let mut txn = db.begin_write().map_err(|e| explain(e.into()))?;
    super::files::quick_repair(&mut txn);
    // Refused cleanly on a full filesystem: the journal keeps what it holds.
    db.reserve(RECOVERY_ROOM + pending)?;
    let bodies = db.bodies();
    let apply = |txn: &redb::WriteTransaction| {
        crate::engine::writer::apply_deferred(txn, bodies, &journal.deferred)
            .map_err(|e| db.recheck(e))?;
        record_lsn(txn, applied).map_err(explain)?;
        crate::engine::segments::dead(txn, bodies).map_err(|e| db.recheck(e))
    };
    let dead = crate::engine::segments::committed(bodies, txn, apply, |e| explain(e.into()))?;
    crate::engine::segments::remove(bodies, &dead);
    journal.applied(applied);
    journal.restart(applied + 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new journal beside `dir/d.qm`, its header written with `generation`, its regions
    /// the smallest there are.
    fn journal(dir: &Path, generation: u64) -> Journal {
        let (mut journal, _, existed) = Journal::open(&dir.join("d.qm"), Arc::default()).unwrap();
        assert!(!existed);
        journal.write_header(generation, SMALLEST_BACK).unwrap();
        journal
    }

    /// Appends records of `len` bytes, each holding its LSN, until the LSN is `last`.
    fn append_to(journal: &mut Journal, last: u64, len: usize) {
        while journal.next_lsn() <= last {
            let mut payload = vec![0u8; len];
            payload[..8].copy_from_slice(&journal.next_lsn().to_le_bytes());
            assert!(journal.make_room(payload.len(), false));
            journal.append(&payload).unwrap();
        }
    }

    fn lsns(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
        for (lsn, payload) in records {
            assert_eq!(payload[..8], lsn.to_le_bytes(), "record {lsn} holds its own payload");
        }
        records.iter().map(|&(lsn, _)| lsn).collect()
    }

    fn handed_over(journal: &Journal) -> Arc<Applying> {
        let lsn = journal.next_lsn() - 1;
        Arc::new(Applying::new(Vec::new(), Default::default(), lsn, 0, journal.marks()))
    }

    #[test]
    fn records_of_both_regions_are_read_in_order_of_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        append_to(&mut journal, 3, 100);
        let first = handed_over(&journal);
        journal.switch(first.clone());
        assert_eq!(journal.at, SMALLEST_BACK, "the groups after a hand-over go to the back region");
        append_to(&mut journal, 5, 100);
        // While the groups 1 to 3 are applied, a crash leaves both regions to read.
        assert_eq!(lsns(&journal.scan(0).unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(lsns(&journal.scan(3).unwrap()), [4, 5]);
        assert!(!journal.may_switch(), "the front region is still needed");
        first.end(Ok(()));
        assert!(journal.may_switch());
        journal.switch(handed_over(&journal));
        assert_eq!(journal.at, HEADER);
        // Longer records over the old ones: the scan stops where the new ones end.
        append_to(&mut journal, 7, 150);
        assert_eq!(lsns(&journal.scan(3).unwrap()), [4, 5, 6, 7]);
        assert_eq!(lsns(&journal.scan(5).unwrap()), [6, 7]);
    }

    /// A hold grows the journal past its usual size; once it ends, the writer catches up in
    /// steps between groups, and those groups must still find room in the journal.
    #[test]
    fn a_journal_grown_by_a_hold_keeps_growing_while_it_is_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        let largest = (SMALLEST_BACK - HEADER) as usize / 4 - RECORD_HEAD;
        while journal.at + (RECORD_HEAD + largest) as u64 <= journal.max_len() {
            assert!(journal.make_room(largest, false));
            journal.append(&vec![1u8; largest]).unwrap();
        }
        assert!(!journal.make_room(largest, false), "not held, the journal stops at MAX_LEN");
        assert!(journal.make_room(largest, true), "held by a backup, it grows past it");
        journal.append(&vec![1u8; largest]).unwrap();
        while journal.at + (RECORD_HEAD + largest) as u64 <= journal.len {
            assert!(journal.make_room(largest, true));
            journal.append(&vec![1u8; largest]).unwrap();
        }
        // The hold ended; no checkpoint has started the journal again yet.
        assert!(journal.make_room(largest, false), "after the hold, it goes on growing");
        assert!(journal.len > journal.max_len() + SMALLEST_BACK);
    }

    #[test]
    fn the_front_region_does_not_run_into_the_back_one_while_it_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        let front = handed_over(&journal);
        journal.switch(front.clone());
        append_to(&mut journal, 1, 100);
        front.end(Ok(()));
        // Back to the front, the back region's group still being applied.
        let back = handed_over(&journal);
        journal.switch(back.clone());
        let largest = (SMALLEST_BACK - HEADER) as usize / 4 - RECORD_HEAD;
        let mut fitted = 0;
        while journal.make_room(largest, false) {
            journal.append(&vec![1u8; largest]).unwrap();
            fitted += 1;
        }
        assert_eq!(fitted, 4, "the front region takes four of the largest records");
        back.end(Ok(()));
        assert!(journal.may_switch(), "the front region ends where the back one begins");
        assert!(journal.make_room(largest, false), "once applied, the back region is free");
        journal.append(&vec![1u8; largest]).unwrap();
        assert!(!journal.may_switch(), "but the front region ran into it: no switch back");
    }

    #[test]
    fn records_of_an_earlier_generation_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        append_to(&mut journal, 3, 100);
        assert_eq!(lsns(&journal.scan(0).unwrap()), [1, 2, 3]);
        // A start records a new generation and goes on from the last LSN: the old records
        // are still in the file, and must not pass for records of the new one.
        journal.write_header(8, SMALLEST_BACK).unwrap();
        assert!(journal.scan(0).unwrap().is_empty());
    }

    /// A journal of format 3 has its back region at 8 MiB and says nothing of it: its
    /// records are read from both regions as they lie, and a new generation goes on in the
    /// current format, with the regions asked for now.
    #[test]
    fn a_journal_of_format_3_is_read_and_goes_on_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        append_to(&mut journal, 2, 100);
        journal.switch(handed_over(&journal));
        append_to(&mut journal, 4, 100);
        let mut head = header(7, 0);
        head[16..20].copy_from_slice(&3u32.to_le_bytes());
        journal.file.write(0, &head).unwrap();
        drop(journal);
        let (mut journal, found, _) =
            Journal::open(&dir.path().join("d.qm"), Arc::default()).unwrap();
        assert_eq!((found.format, found.back), (3, SMALLEST_BACK));
        assert_eq!(lsns(&journal.scan(0).unwrap()), [1, 2, 3, 4], "both regions are read");
        journal.write_header(8, 64 << 20).unwrap();
        drop(journal);
        let (journal, found, _) = Journal::open(&dir.path().join("d.qm"), Arc::default()).unwrap();
        assert_eq!((found.format, found.back, found.generation), (FORMAT, 64 << 20, 8));
        assert_eq!(journal.checkpoint_bytes(), 32 << 20);
    }

    /// Once records fill half the file, the next doubling is written on a thread of its
    /// own while records go on below it; the writer takes the new length when it needs it.
    #[test]
    fn a_journal_grows_ahead_of_its_records() {
        let append_one = |journal: &mut Journal| {
            let next = journal.next_lsn();
            append_to(journal, next, 4000);
        };
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), 7);
        assert_eq!(journal.len, FIRST_LEN);
        while journal.at < FIRST_LEN / 2 {
            append_one(&mut journal);
        }
        assert!(journal.growing.is_none(), "not before a record passed the half");
        append_one(&mut journal);
        assert!(journal.growing.is_some(), "grown ahead once records passed half the file");
        while journal.at + 4100 <= FIRST_LEN {
            append_one(&mut journal);
        }
        append_one(&mut journal);
        assert_eq!(journal.len, 2 * FIRST_LEN, "the record past the old end took the growth");
        let on_disk = std::fs::metadata(dir.path().join("d.qm.journal")).unwrap().len();
        assert_eq!(on_disk, 2 * FIRST_LEN);
        let last = journal.next_lsn() - 1;
        assert_eq!(lsns(&journal.scan(0).unwrap()), (1..=last).collect::<Vec<_>>());
    }

    /// A header that puts the back region where no qm would is not a journal's.
    #[test]
    fn a_header_with_a_back_region_out_of_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path(), 7);
        for back in [0, 4 << 20, (8 << 20) + 1, 1 << 40] {
            journal.file.write(0, &header(7, back)).unwrap();
            let Err(e) = Journal::open(&dir.path().join("d.qm"), Arc::default()) else {
                panic!("a back region at {back} was taken");
            };
            assert!(e.message.contains("back region"), "{}", e.message);
        }
    }
}
