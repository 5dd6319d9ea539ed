//! Message bodies kept out of redb: append-only segment files beside a redb file
//! (`P.bodies.1`, `P.bodies.2`, ...), so that redb holds only a [`BodyRef`] of 16 bytes per
//! body and a body is written once, at the end of a file, instead of through redb's pages.
//!
//! - Durability: a body is durable once a [`Bodies::sync`] that began after its
//!   [`Bodies::append`] returned has returned `Ok`. Its caller must not make a `BodyRef`
//!   durable in redb before that, or a crash could leave redb pointing at bytes never
//!   written.
//! - Never built on what a crash left: a segment that existed when the file was opened is
//!   only read. The first append after an open starts a new segment, so the unsynced (or
//!   torn) end of a segment a crash left is never extended, and no sync of new bodies depends
//!   on it.
//! - A body never spans segments; a segment takes no more bodies once the next would take
//!   it past [`SEGMENT_BYTES`] (a body larger than that goes alone into a new one), so
//!   offsets fit in a `u32`. Removing a segment that no `BodyRef` points into any more is
//!   the caller's decision ([`Bodies::remove`]).
//! - Trust: segments hold the messages qmd serves, so they pass the checks of qm's other
//!   files ([`check_trust`]): created 0600 by qmd, refused if anyone else could write them.
//! - Every write and sync goes through [`fault::backend`], where tests cut the power and
//!   where the fence is checked; creating and removing a segment are counted steps.
//! - One writer appends and syncs while many readers read: the lock covers only the
//!   bookkeeping, never a write, a read or a sync, so that readers do not wait for a sync.

use super::fault;
use super::files::{check_trust, create_private, sync_directory};
use super::space::{Space, io_no_space};
use qm_common::QmError;
use redb::StorageBackend;
use rustix::fs::{Mode, OFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A segment takes no more bodies once the next would take it past this.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The most bytes of a run of bodies [`Bodies::append_all`] writes at once.
const RUN_WRITE: usize = 256 * 1024;

thread_local! {
    /// Where a run of bodies is gathered for one write: kept, so that its pages are not
    /// fresh ones to fault in at every commit.
    static RUN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`SEGMENT_BYTES`] with `QM_FAULT=smallsegments` (tests).
const SMALL_SEGMENT_BYTES: u64 = 16 * 1024;

/// Segment `n` of the redb file at `redb`: `redb` with `.bodies.n` added.
pub fn segment_path(redb: &Path, n: u32) -> PathBuf {
    let mut name = redb.as_os_str().to_owned();
    name.push(format!(".bodies.{n}"));
    PathBuf::from(name)
}

/// Where a body is: what redb holds instead of the body itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    /// `crc32fast::hash` of the body, checked at every read.
    pub crc: u32,
}

impl BodyRef {
    pub const BYTES: usize = 16;

    /// The fields in order, little-endian.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        for (i, field) in [self.segment, self.offset, self.len, self.crc].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&field.to_le_bytes());
        }
        b
    }

    /// The reference `b` holds; `None` unless it is exactly [`BodyRef::BYTES`] long.
    pub fn from_bytes(b: &[u8]) -> Option<BodyRef> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let field = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4"));
        Some(BodyRef { segment: field(0), offset: field(1), len: field(2), crc: field(3) })
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Its length: at open, what the file held; since, up to the end of the last body
    /// placed in it (written or being written).
    len: u64,
    /// Opened when first read, or when created; kept until the segment is removed.
    file: Option<Arc<fault::Backend>>,
}

#[derive(Debug)]
struct State {
    segments: BTreeMap<u32, Segment>,
    /// The segment appends go to: none until the first append after open.
    current: Option<u32>,
    /// The number the next new segment gets (a `u64`, so that running out is an error,
    /// not a wrap to numbers in use).
    next: u64,
    /// Segments written since the last sync.
    unsynced: BTreeSet<u32>,
    /// A segment was created or removed since the last sync.
    directory_unsynced: bool,
    /// Segments removed so far; a read that began after `n` removals is of epoch `n`.
    removals: u64,
    /// Reads under way ([`Bodies::reading`]), by their epoch.
    readers: BTreeMap<u64, usize>,
    /// Segments removed while reads of an earlier epoch were under way, by the epoch
    /// their removal began: unlinked, but still open, so that those reads (whose
    /// transactions may point into them) still find their bodies.
    graveyard: Vec<(u64, u32, Arc<fault::Backend>)>,
    /// redb's syncs of the file that succeeded ([`Bodies::redb_synced`]).
    redb_syncs: u64,
}

/// A read of bodies under way: see [`Bodies::reading`].
pub struct Reading<'a> {
    bodies: &'a Bodies,
    epoch: u64,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut state = self.bodies.state();
        if let Some(count) = state.readers.get_mut(&self.epoch) {
            *count -= 1;
            if *count == 0 {
                state.readers.remove(&self.epoch);
            }
        }
        let oldest = state.readers.keys().next().copied().unwrap_or(u64::MAX);
        state.graveyard.retain(|&(removal, _, _)| removal > oldest);
    }
}

/// The body segments of one redb file.
#[derive(Debug)]
pub struct Bodies {
    path: PathBuf,
    limit: u64,
    state: Mutex<State>,
    /// Copies that need every segment kept as it is now ([`Bodies::pin`]).
    pins: AtomicUsize,
    /// The room held for the redb file, on the same filesystem: an append that finds the
    /// filesystem full is given some of it, as redb's writes are.
    space: Mutex<Option<Arc<Space>>>,
    /// When compaction last looked, and the live bytes it saw then in each mostly dead
    /// segment ([`Bodies::still_since`]).
    seen: Mutex<(Option<std::time::Instant>, BTreeMap<u32, u64>)>,
}

/// While it lives, [`Bodies::pinned`] is true: no segment is removed.
pub struct Pin {
    bodies: Arc<Bodies>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.bodies.pins.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Bodies {
    /// The segments of the redb file at `redb`, as they are: none is appended to.
    pub fn open(redb: &Path) -> io::Result<Bodies> {
        let small = fault::small_segments();
        Self::open_with(redb, if small { SMALL_SEGMENT_BYTES } else { SEGMENT_BYTES })
    }

    /// [`Bodies::open`], segments taking no more bodies past `limit` (small in tests).
    fn open_with(redb: &Path, limit: u64) -> io::Result<Bodies> {
        // An offset is at most the limit (see `fits`), and must fit a `BodyRef`.
        assert!(limit <= u64::from(u32::MAX), "a segment limit of {limit} bytes is too large");
        let segments = scan(redb)?;
        let next = segments.keys().next_back().map_or(1, |&n| u64::from(n) + 1);
        let state = State {
            segments,
            current: None,
            next,
            unsynced: BTreeSet::new(),
            directory_unsynced: false,
            removals: 0,
            readers: BTreeMap::new(),
            graveyard: Vec::new(),
            redb_syncs: 0,
        };
        let (pins, space) = (AtomicUsize::new(0), Mutex::new(None));
        let seen = Mutex::new((None, BTreeMap::new()));
        let path = redb.to_path_buf();
        Ok(Bodies { path, limit, state: Mutex::new(state), pins, space, seen })
    }

    /// The redb file whose bodies these are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `body` at the end of the current segment (starting a new one when it would
    /// not fit), not synced: see [`Bodies::sync`].
    pub fn append(&self, body: &[u8]) -> io::Result<BodyRef> {
        let at = self.reserve(body)?;
        self.write_placed(at.segment, u64::from(at.offset), body)?;
        Ok(at)
    }

    /// [`Bodies::append`] of each of `bodies` in turn, with one write for the bodies that
    /// land in the same segment rather than one each: a commit applying thousands of
    /// enqueues spends less in system calls. With `send`, each write goes to the disk as
    /// it is made ([`Bodies::write_run`]). After an error, some may have been written:
    /// as after a failed [`Bodies::append`], [`Bodies::rollback`] takes them back.
    pub fn append_all(&self, bodies: &[&[u8]], send: bool) -> io::Result<Vec<BodyRef>> {
        let mut refs = Vec::with_capacity(bodies.len());
        // The bodies placed one after another in one segment and not written yet.
        let mut run: Option<(u32, u64, Vec<&[u8]>)> = None;
        for &body in bodies {
            let at = self.reserve(body)?;
            match &mut run {
                Some((n, _, placed)) if *n == at.segment => placed.push(body),
                _ => {
                    if let Some(run) = run.take() {
                        self.write_run(run, send)?;
                    }
                    run = Some((at.segment, u64::from(at.offset), vec![body]));
                }
            }
            refs.push(at);
        }
        if let Some(run) = run {
            self.write_run(run, send)?;
        }
        Ok(refs)
    }

    /// Writes bodies placed one after another in segment `n` from `offset`, in writes of
    /// up to [`RUN_WRITE`] bytes gathered in a buffer the thread keeps. Gathering a whole
    /// run in a new buffer (megabytes at a checkpoint of a deep queue) had the kernel zero
    /// fresh pages for it at every commit: 2 % of qmd's time at 1,000,000 queued.
    ///
    /// With `send`, each write is sent to the disk as soon as it is made, and waited for
    /// (not synced: [`Bodies::sync`] still makes them durable). Left in the page cache, a
    /// checkpoint's tens of megabytes went to the disk all at once at its sync, and every
    /// journal write queued behind them for a tenth of a second; sent a write at a time,
    /// at most one write of them is ahead of a journal write. Without, the kernel sends
    /// them as it likes, which is faster where nothing else waits (an import: 7 %).
    fn write_run(
        &self,
        (n, mut offset, placed): (u32, u64, Vec<&[u8]>),
        send: bool,
    ) -> io::Result<()> {
        let file = self.file_of(n)?;
        let write = |offset: u64, data: &[u8]| {
            self.write_placed(n, offset, data)?;
            if send {
                file.write_out(offset, data.len() as u64);
            }
            Ok::<_, io::Error>(offset + data.len() as u64)
        };
        if let [one] = placed.as_slice() {
            return write(offset, one).map(drop);
        }
        RUN.with_borrow_mut(|buf| {
            buf.clear();
            // Once, at its full size: grown by doubling it would end up twice that.
            buf.reserve_exact(RUN_WRITE);
            for body in placed {
                if !buf.is_empty() && buf.len() + body.len() > RUN_WRITE {
                    offset = write(offset, buf)?;
                    buf.clear();
                }
                if body.len() >= RUN_WRITE {
                    offset = write(offset, body)?;
                } else {
                    buf.extend_from_slice(body);
                }
            }
            if !buf.is_empty() {
                write(offset, buf)?;
            }
            Ok(())
        })
    }

    /// Places `body` at the end of the current segment, not written yet.
    fn reserve(&self, body: &[u8]) -> io::Result<BodyRef> {
        let len = u32::try_from(body.len()).map_err(|_| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("a body of {} bytes is too large for {}", body.len(), self.path.display()),
            )
        })?;
        if fault::segments_full() {
            return Err(io::Error::new(ErrorKind::StorageFull, "no room for a body (QM_FAULT)"));
        }
        let (segment, offset) = self.place(u64::from(len))?;
        Ok(BodyRef { segment, offset, len, crc: crc32fast::hash(body) })
    }

    /// The open file of segment `n`, which [`Bodies::place`] gave bytes of.
    fn file_of(&self, n: u32) -> io::Result<Arc<fault::Backend>> {
        let state = self.state();
        let file = state.segments.get(&n).and_then(|s| s.file.clone());
        file.ok_or_else(|| io::Error::other(format!("body segment {n} is not open for appends")))
    }

    /// Writes `data` at `offset` of segment `n`, placed there before.
    fn write_placed(&self, n: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = self.file_of(n)?;
        // Outside the lock; a failed write leaves a hole no reference points into.
        let mut written = file.write(offset, data);
        while written.as_ref().is_err_and(io_no_space) && self.release_room(data.len() as u64) {
            written = file.write(offset, data);
        }
        written.map_err(|e| failed(&segment_path(&self.path, n), "write", e))?;
        // Marked once written, so that a sync that took the marks meanwhile is not
        // taken to cover it.
        self.state().unsynced.insert(n);
        Ok(())
    }

    /// Takes `len` bytes at the end of the current segment, or of a new one: the segment
    /// and the offset to write them at.
    fn place(&self, len: u64) -> io::Result<(u32, u32)> {
        let mut state = self.state();
        let n = match state.current {
            Some(n) if state.segments.get(&n).is_some_and(|s| fits(s.len, len, self.limit)) => n,
            _ => self.start_segment(&mut state)?,
        };
        let segment = state.segments.get_mut(&n).expect("the current segment is listed");
        let offset = u32::try_from(segment.len).expect("an offset is at most the limit");
        segment.len += len;
        Ok((n, offset))
    }

    /// Creates the next segment and makes it the current one.
    fn start_segment(&self, state: &mut State) -> io::Result<u32> {
        let n = u32::try_from(state.next).map_err(|_| {
            io::Error::other(format!("no body segment number is left for {}", self.path.display()))
        })?;
        let path = segment_path(&self.path, n);
        let file = create_private(&path).map_err(|e| failed(&path, "create", e.into()))?;
        // Created: whatever follows fails, that number is taken, and the name is to sync.
        state.next += 1;
        state.directory_unsynced = true;
        fault::step();
        let file = fault::backend(file).map_err(|e| failed(&path, "open", e))?;
        state.segments.insert(n, Segment { len: 0, file: Some(Arc::new(file)) });
        state.current = Some(n);
        Ok(n)
    }

    /// Makes every body appended before the call durable, and every segment created or
    /// removed. Nothing to do (no system call) when nothing was.
    ///
    /// After an error, the bodies appended since the last sync that succeeded must be taken
    /// as lost, even if a later sync succeeds: the kernel may have dropped pages it failed
    /// to write. They are synced again next time all the same.
    pub fn sync(&self) -> io::Result<()> {
        let (files, directory) = {
            let mut state = self.state();
            if state.unsynced.is_empty() && !state.directory_unsynced {
                return Ok(());
            }
            let taken = std::mem::take(&mut state.unsynced);
            let files: Vec<_> = taken
                .into_iter()
                .filter_map(|n| Some((n, state.segments.get(&n)?.file.clone()?)))
                .collect();
            (files, std::mem::take(&mut state.directory_unsynced))
        };
        let synced = self.sync_files(&files, directory);
        if synced.is_err() {
            let mut state = self.state();
            state.unsynced.extend(files.iter().map(|&(n, _)| n));
            state.directory_unsynced |= directory;
        }
        synced
    }

    fn sync_files(&self, files: &[(u32, Arc<fault::Backend>)], directory: bool) -> io::Result<()> {
        for (n, file) in files {
            file.sync_data().map_err(|e| failed(&segment_path(&self.path, *n), "sync", e))?;
        }
        if directory {
            sync_directory(&self.path).map_err(|e| io::Error::other(e.message))?;
        }
        Ok(())
    }

    /// The body `r` points to, checked against its CRC.
    pub fn read(&self, r: &BodyRef) -> io::Result<Vec<u8>> {
        let file = self.reader(r.segment)?;
        let mut body = vec![0u8; r.len as usize];
        file.read(u64::from(r.offset), &mut body).map_err(|e| self.unreadable(r, e))?;
        if crc32fast::hash(&body) != r.crc {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "the body of {} bytes at offset {} of {} fails its CRC: the file was damaged",
                    r.len,
                    r.offset,
                    segment_path(&self.path, r.segment).display()
                ),
            ));
        }
        Ok(body)
    }

    /// Marks a read of bodies as under way until the returned guard is dropped: to be
    /// taken *before* the read transaction whose references it follows begins. A segment
    /// removed meanwhile (its bodies dead in a later transaction) stays readable to it.
    pub fn reading(&self) -> Reading<'_> {
        let mut state = self.state();
        let epoch = state.removals;
        *state.readers.entry(epoch).or_default() += 1;
        Reading { bodies: self, epoch }
    }

    /// The open file of segment `n`, opened now if no read has needed it yet.
    fn reader(&self, n: u32) -> io::Result<Arc<fault::Backend>> {
        let mut state = self.state();
        if let Some((_, _, file)) = state.graveyard.iter().find(|(_, g, _)| *g == n) {
            return Ok(file.clone());
        }
        let Some(segment) = state.segments.get_mut(&n) else {
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} is not a body segment of {} (removed?)",
                    segment_path(&self.path, n).display(),
                    self.path.display()
                ),
            ));
        };
        if let Some(file) = &segment.file {
            return Ok(file.clone());
        }
        let file = Arc::new(open_segment(&segment_path(&self.path, n))?);
        segment.file = Some(file.clone());
        Ok(file)
    }

    fn unreadable(&self, r: &BodyRef, e: io::Error) -> io::Error {
        let path = segment_path(&self.path, r.segment);
        let why = if e.kind() == ErrorKind::UnexpectedEof {
            "the file ends before them (cut short?)".to_string()
        } else {
            e.to_string()
        };
        io::Error::new(
            e.kind(),
            format!(
                "cannot read {} bytes at offset {} of {}: {why}",
                r.len,
                r.offset,
                path.display()
            ),
        )
    }

    /// Every segment: its number, path and length, in order of number.
    pub fn list(&self) -> Vec<(u32, PathBuf, u64)> {
        let state = self.state();
        state.segments.iter().map(|(&n, s)| (n, segment_path(&self.path, n), s.len)).collect()
    }

    /// Appends that find the filesystem full take room from `space` from now on (the
    /// file's, from its latest open).
    pub fn take_room_from(&self, space: Arc<Space>) {
        *self.space.lock().unwrap_or_else(|p| p.into_inner()) = Some(space);
    }

    fn release_room(&self, len: u64) -> bool {
        let space = self.space.lock().unwrap_or_else(|p| p.into_inner()).clone();
        space.is_some_and(|s| s.release_room(len))
    }

    /// Keeps every segment until the returned pin is dropped: a backup copies segments
    /// after its snapshot, which may point into segments that are dead by then.
    pub fn pin(self: &Arc<Self>) -> Pin {
        self.pins.fetch_add(1, Ordering::SeqCst);
        Pin { bodies: self.clone() }
    }

    /// Whether something pinned the segments ([`Bodies::pin`]).
    pub fn pinned(&self) -> bool {
        self.pins.load(Ordering::SeqCst) > 0
    }

    /// The bytes of all segments.
    pub fn bytes(&self) -> u64 {
        self.state().segments.values().map(|s| s.len).sum()
    }

    /// The segment appends go to now: none before the first append after open.
    pub fn current(&self) -> Option<u32> {
        self.state().current
    }

    /// Makes segment `n` no longer the one appends go to, if it is: the next append starts
    /// a new segment, and `n` may then die and go, or be emptied by compaction.
    pub fn retire(&self, n: u32) {
        let mut state = self.state();
        if state.current == Some(n) {
            state.current = None;
        }
    }

    /// Removes segment `n`, which no reference may point into any more; its removal is
    /// made durable by the next [`Bodies::sync`]. The current segment is refused.
    pub fn remove(&self, n: u32) -> io::Result<()> {
        let path = segment_path(&self.path, n);
        let mut state = self.state();
        if state.current == Some(n) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} takes the bodies appended now; it cannot be removed", path.display()),
            ));
        }
        if !state.segments.contains_key(&n) {
            // Not one of ours, or removed already: a file of that name is left alone.
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!("{} is not a body segment of {}", path.display(), self.path.display()),
            ));
        }
        // Reads under way may still follow references into it: it stays open for them.
        let kept = match (&state.segments[&n].file, state.readers.is_empty()) {
            (_, true) => None,
            (Some(file), false) => Some(file.clone()),
            (None, false) => open_segment(&path).ok().map(Arc::new),
        };
        fault::step();
        match std::fs::remove_file(&path) {
            // Gone already: what the removal was for.
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(failed(&path, "remove", e)),
            _ => {}
        }
        state.removals += 1;
        if let Some(file) = kept {
            let removal = state.removals;
            state.graveyard.push((removal, n, file));
        }
        state.segments.remove(&n);
        state.unsynced.remove(&n);
        state.directory_unsynced = true;
        Ok(())
    }
}

/// Where appends stood at [`Bodies::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    /// The number the next new segment was to get.
    next: u64,
    /// The current segment and its length.
    current: Option<(u32, u64)>,
    /// redb's syncs of the file so far.
    redb_syncs: u64,
}

impl Bodies {
    /// Where appends stand now: what [`Bodies::rollback`] goes back to.
    pub fn mark(&self) -> Mark {
        let state = self.state();
        let current = state.current.and_then(|n| Some((n, state.segments.get(&n)?.len)));
        Mark { next: state.next, current, redb_syncs: state.redb_syncs }
    }

    /// The segments appended to since `mark`, with their lengths now.
    pub fn appended_since(&self, mark: &Mark) -> Vec<(u32, u64)> {
        let state = self.state();
        // Only the segment current at the mark and those made since can have grown.
        let first = mark.current.map_or(mark.next, |(n, _)| u64::from(n));
        let first = u32::try_from(first).unwrap_or(u32::MAX);
        state
            .segments
            .range(first..)
            .filter(|&(&n, s)| match mark.current {
                _ if u64::from(n) >= mark.next => true,
                Some((current, len)) => n == current && s.len > len,
                None => false,
            })
            .map(|(&n, s)| (n, s.len))
            .collect()
    }

    /// Cuts segment `n` back to `len` bytes, when it is longer: the bytes past `len` are
    /// bodies no commit redb holds points at (appended by commits that failed, or that
    /// were not durable when qmd stopped). Whether it was cut.
    pub fn cut(&self, n: u32, len: u64) -> io::Result<bool> {
        let path = segment_path(&self.path, n);
        let mut state = self.state();
        let Some(segment) = state.segments.get_mut(&n) else { return Ok(false) };
        if segment.len <= len {
            return Ok(false);
        }
        // Its own file may be open for reading only.
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::open(&path, flags | OFlags::NONBLOCK, Mode::empty())
            .map_err(|e| failed(&path, "open", e.into()))?;
        let file = File::from(fd);
        check_trust(&path, &file.metadata().map_err(|e| failed(&path, "examine", e))?)
            .map_err(refused)?;
        let file = fault::backend(file).map_err(|e| failed(&path, "open", e))?;
        file.set_len(len).map_err(|e| failed(&path, "cut", e))?;
        segment.len = len;
        Ok(true)
    }

    /// Of `now` (segments with their live bytes), those whose live bytes did not fall
    /// since they were seen at least `after` ago; `now` is remembered for a later call.
    /// Nothing, and nothing remembered, when the last look is more recent than that: live
    /// bytes change only with commits, which a look right after another may not see.
    pub fn still_since(&self, now: BTreeMap<u32, u64>, after: std::time::Duration) -> Vec<u32> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (when, before) = &*seen;
        if when.is_some_and(|t| t.elapsed() < after) {
            return Vec::new();
        }
        let still = now
            .iter()
            .filter(|&(n, live)| before.get(n).is_some_and(|was| live >= was))
            .map(|(&n, _)| n)
            .collect();
        *seen = (Some(std::time::Instant::now()), now);
        still
    }

    /// Counts a sync of the redb file that succeeded (its backend calls this).
    pub fn redb_synced(&self) {
        self.state().redb_syncs += 1;
    }

    /// Undoes the appends since `mark` for a commit that failed, as [`Bodies::rollback`],
    /// unless redb synced the file since: a durable commit writes its header only after
    /// its first sync, so a commit that failed later may have become durable after all,
    /// and its bodies must stay. Whether they were undone.
    pub fn undo_failed_commit(&self, mark: Mark) -> io::Result<bool> {
        if self.state().redb_syncs != mark.redb_syncs {
            return Ok(false);
        }
        self.rollback(mark).map(|()| true)
    }

    /// Undoes every append since `mark`, for a write transaction that failed: nothing
    /// points at those bodies, and a transaction tried again would append them again (on
    /// a full disk, filling it with dead bytes at each try). Only the one writer of the
    /// file appends, inside its write transactions, so nothing else appended meanwhile.
    pub fn rollback(&self, mark: Mark) -> io::Result<()> {
        let mut state = self.state();
        let created: Vec<u32> =
            state.segments.keys().copied().filter(|&n| u64::from(n) >= mark.next).collect();
        for n in created {
            let path = segment_path(&self.path, n);
            fault::step();
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(failed(&path, "remove", e));
                }
                _ => {}
            }
            state.segments.remove(&n);
            state.unsynced.remove(&n);
            state.directory_unsynced = true;
        }
        state.current = mark.current.map(|(n, _)| n);
        if let Some((n, len)) = mark.current
            && let Some(segment) = state.segments.get_mut(&n)
            && segment.len > len
        {
            if let Some(file) = &segment.file {
                file.set_len(len).map_err(|e| failed(&segment_path(&self.path, n), "cut", e))?;
            }
            segment.len = len;
        }
        Ok(())
    }
}

/// Whether `len` more bytes go into a segment of `used` bytes: an empty one takes any body.
fn fits(used: u64, len: u64, limit: u64) -> bool {
    used == 0 || used + len <= limit
}

/// The segments found beside `redb`, trusted, with their lengths.
fn scan(redb: &Path) -> io::Result<BTreeMap<u32, Segment>> {
    let dir = match redb.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = redb.file_name().ok_or_else(|| {
        io::Error::new(ErrorKind::InvalidInput, format!("{} names no file", redb.display()))
    })?;
    let prefix = [name.as_bytes(), b".bodies."].concat();
    let mut segments = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| failed(dir, "list", e))? {
        let entry = entry.map_err(|e| failed(dir, "list", e))?;
        let Some(n) = segment_number(entry.file_name().as_bytes(), &prefix) else {
            continue;
        };
        let path = segment_path(redb, n);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| failed(&path, "examine", e))?;
        check_trust(&path, &meta).map_err(refused)?;
        segments.insert(n, Segment { len: meta.len(), file: None });
    }
    Ok(segments)
}

/// The number of the segment named `name`, if it is `prefix` and a number as
/// [`segment_path`] writes it (from 1, no leading zero or sign): other names are not ours.
fn segment_number(name: &[u8], prefix: &[u8]) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n > 0 && digits == n.to_string().as_bytes()).then_some(n)
}

/// Opens an existing segment to read it, without following a symbolic link, and checks
/// that qm may trust it: the name may have changed since the segments were listed.
fn open_segment(path: &Path) -> io::Result<fault::Backend> {
    // NONBLOCK: opening a FIFO put in its place must be refused, not wait for a writer.
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd =
        rustix::fs::open(path, flags, Mode::empty()).map_err(|e| failed(path, "open", e.into()))?;
    let file = File::from(fd);
    check_trust(path, &file.metadata().map_err(|e| failed(path, "examine", e))?)
        .map_err(refused)?;
    fault::backend(file).map_err(|e| failed(path, "open", e))
}

/// `e`, said of `path`; its kind is kept, so that a full disk stays `StorageFull`.
fn failed(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

/// A file the trust checks refuse; their message names it and says what to do.
fn refused(e: QmError) -> io::Error {
    io::Error::new(ErrorKind::PermissionDenied, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, PermissionsExt};

    fn redb(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("QSPACE")
    }

    /// Body `i`: its length varies from 0 to 299 bytes, its bytes tell it apart.
    fn body(i: usize) -> Vec<u8> {
        (0..(i * 37) % 300).map(|j| (i * 7 + j) as u8).collect()
    }

    fn kind_and_message<T: std::fmt::Debug>(r: io::Result<T>) -> (ErrorKind, String) {
        let e = r.expect_err("an error");
        (e.kind(), e.to_string())
    }

    #[test]
    fn bodies_come_back_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let refs: Vec<_> = (0..200).map(|i| bodies.append(&body(i)).unwrap()).collect();
        bodies.sync().unwrap();
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(bodies.read(r).unwrap(), body(i), "body {i}");
        }
        let list = bodies.list();
        assert!(list.len() > 10, "the bodies fill many segments: {list:?}");
        for (n, path, len) in &list {
            assert!(*len <= 1000, "segment {n} is within the limit");
            assert_eq!(std::fs::metadata(path).unwrap().len(), *len);
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is its owner's alone", path.display());
        }
        assert_eq!(bodies.current(), Some(list.last().unwrap().0));
        // Larger than a segment: alone in a new one, and the next body in another.
        let big = bodies.append(&[9u8; 1500]).unwrap();
        assert_eq!((big.segment, big.offset), (list.last().unwrap().0 + 1, 0));
        assert_eq!(bodies.append(b"after").unwrap().segment, big.segment + 1);
        assert_eq!(bodies.read(&big).unwrap(), [9u8; 1500]);
    }

    /// Bodies appended together land where single appends would have put them, one
    /// write per segment, and come back whole; a body larger than a segment still goes
    /// alone into one of its own.
    #[test]
    fn bodies_appended_together_land_as_one_by_one() {
        let mut all: Vec<Vec<u8>> = (0..60).map(body).collect();
        all.insert(30, vec![7u8; 1500]);
        let (_dir, together) = appended_together_as_one_by_one(1000, &all);
        assert!(together.list().len() > 3, "they span segments");
        assert_eq!(together.append_all(&[], false).unwrap(), vec![]);
    }

    /// A run of bodies longer than one write is written in several, a body as long as one
    /// write alone among them, and the segment holds the same bytes as one by one.
    #[test]
    fn a_long_run_of_bodies_lands_as_one_by_one() {
        let mut all: Vec<Vec<u8>> =
            (0..40).map(|i| vec![i as u8; RUN_WRITE / 7 + i * 13]).collect();
        all.insert(17, vec![0xee; RUN_WRITE]);
        all.insert(18, vec![0xdd; RUN_WRITE + 1]);
        let (_dir, together) = appended_together_as_one_by_one(64 << 20, &all);
        assert_eq!(together.list().len(), 1, "they fit one segment");
    }

    /// A run of bodies appended with `send` is on its way to the disk when `append_all`
    /// returns: none of its pages is left dirty for the sync to send all at once; without,
    /// they are left to the kernel. Checked with `cachestat` (Linux 6.5), which counts a
    /// file's pages in the cache, dirty and under write-back.
    #[test]
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn a_run_of_bodies_is_sent_to_the_disk_as_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        if on_tmpfs(dir.path()) {
            eprintln!(
                "skipped: {} is on tmpfs, which has no disk to send to",
                dir.path().display()
            );
            return;
        }
        let all: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 32 * 1024]).collect();
        let slices: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        for send in [true, false] {
            let bodies = Bodies::open_with(&dir.path().join(format!("{send}")), 64 << 20).unwrap();
            bodies.append_all(&slices, send).unwrap();
            let (_, path, len) = bodies.list().pop().unwrap();
            assert_eq!(len, 2 << 20);
            let [cached, dirty, writeback] = cache_state(&path);
            assert!(cached > 0, "the pages just written are in the cache: {cached}");
            let (sent, left) = (dirty + writeback == 0, dirty == cached);
            assert!(
                if send { sent } else { left },
                "send {send}: {cached} pages, {dirty} dirty, {writeback} under write-back"
            );
            bodies.sync().unwrap();
        }
    }

    /// Pages of `path` in the page cache, dirty, and under write-back.
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn cache_state(path: &Path) -> [u64; 3] {
        use std::os::fd::AsRawFd;
        // The same number on both: a system call added after the tables were unified.
        const SYS_CACHESTAT: libc::c_long = 451;
        let file = std::fs::File::open(path).unwrap();
        let range = [0u64, 0]; // from the start, to the end
        let mut stat = [0u64; 5]; // cache, dirty, writeback, evicted, recently evicted
        // SAFETY: both pointers are to live arrays laid out as the kernel's structures.
        let r = unsafe {
            libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), range.as_ptr(), stat.as_mut_ptr(), 0)
        };
        assert_eq!(r, 0, "cachestat: {}", io::Error::last_os_error());
        [stat[0], stat[1], stat[2]]
    }

    fn on_tmpfs(path: &Path) -> bool {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: all zeroes is a valid `statfs` (plain integers), filled in below.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a structure of the right type to fill.
        let r = unsafe { libc::statfs(c.as_ptr(), &mut fs) };
        r == 0 && fs.f_type == libc::TMPFS_MAGIC
    }

    /// Appends `all` to new body files both one by one and together, with segments of
    /// `limit` bytes, checks that they land alike and read back whole, and returns the
    /// second with its directory.
    fn appended_together_as_one_by_one(limit: u64, all: &[Vec<u8>]) -> (tempfile::TempDir, Bodies) {
        let dir = tempfile::tempdir().unwrap();
        let alone = Bodies::open_with(&dir.path().join("alone"), limit).unwrap();
        let together = Bodies::open_with(&dir.path().join("together"), limit).unwrap();
        let one_by_one: Vec<_> = all.iter().map(|b| alone.append(b).unwrap()).collect();
        let slices: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let refs = together.append_all(&slices, false).unwrap();
        together.sync().unwrap();
        assert_eq!(refs, one_by_one);
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(together.read(r).unwrap(), all[i], "body {i}");
        }
        assert_eq!(alone.list().len(), together.list().len());
        for ((_, a, len_a), (_, b, len_b)) in alone.list().iter().zip(&together.list()) {
            assert_eq!(len_a, len_b);
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        }
        (dir, together)
    }

    /// A read that began before a segment's removal still finds its bodies (its
    /// transaction may point at them); once no such read is left, they are gone.
    #[test]
    fn a_removed_segment_stays_readable_to_reads_begun_before() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let old = bodies.append(&[1; 600]).unwrap();
        let new = bodies.append(&[2; 600]).unwrap();
        assert_ne!(old.segment, new.segment);
        let before = bodies.reading();
        bodies.remove(old.segment).unwrap();
        assert!(!segment_path(bodies.path(), old.segment).exists(), "unlinked");
        assert_eq!(bodies.read(&old).unwrap(), vec![1; 600]);
        let after = bodies.reading();
        drop(before);
        assert_eq!(bodies.read(&old).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(bodies.read(&new).unwrap(), vec![2; 600]);
        drop(after);
        // Removed with no read under way: gone at once.
        let third = bodies.append(&[3; 600]).unwrap();
        bodies.remove(new.segment).unwrap();
        assert_eq!(bodies.read(&new).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(bodies.read(&third).unwrap(), vec![3; 600]);
    }

    /// A commit that failed before redb synced anything has its appends undone; one that
    /// failed after a sync of redb's keeps them, since it may have become durable.
    #[test]
    fn a_failed_commit_is_undone_only_before_redb_synced() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        bodies.append(&[1; 100]).unwrap();
        let mark = bodies.mark();
        bodies.append(&[2; 100]).unwrap();
        assert!(bodies.undo_failed_commit(mark).unwrap(), "nothing synced: undone");
        assert_eq!(bodies.bytes(), 100);
        let mark = bodies.mark();
        bodies.append(&[3; 100]).unwrap();
        bodies.redb_synced();
        assert!(!bodies.undo_failed_commit(mark).unwrap(), "synced: kept");
        assert_eq!(bodies.bytes(), 200);
    }

    /// Compaction's look at mostly dead segments: only those whose live bytes did not fall
    /// since a look long enough ago are still; a look too soon after another sees nothing.
    #[test]
    fn segments_still_since_the_last_look() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let look = |pairs: &[(u32, u64)], after| {
            bodies.still_since(pairs.iter().copied().collect(), Duration::from_secs(after))
        };
        assert_eq!(look(&[(1, 10), (2, 10)], 0), Vec::<u32>::new(), "first look");
        assert_eq!(look(&[(1, 10), (2, 5), (3, 1)], 0), vec![1], "2 fell, 3 is new");
        assert_eq!(look(&[(1, 10), (3, 1)], 3600), Vec::<u32>::new(), "too soon");
        assert_eq!(look(&[(1, 10), (3, 1)], 0), vec![1, 3], "the look too soon kept nothing");
    }

    /// What was appended since a mark, and a segment cut back to a length (also one
    /// opened again, whose file this process did not create).
    #[test]
    fn appends_since_a_mark_and_cutting_back() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let first = bodies.append(&[1; 400]).unwrap();
        let mark = bodies.mark();
        assert_eq!(bodies.appended_since(&mark), vec![]);
        bodies.append(&[2; 400]).unwrap();
        let next = bodies.append(&[3; 400]).unwrap();
        assert_eq!(bodies.appended_since(&mark), vec![(first.segment, 800), (next.segment, 400)]);
        drop(bodies);
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        assert!(!bodies.cut(first.segment, 900).unwrap(), "not longer: left");
        assert!(bodies.cut(first.segment, 400).unwrap());
        let path = segment_path(bodies.path(), first.segment);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 400);
        assert_eq!(bodies.read(&first).unwrap(), vec![1; 400]);
        assert!(!bodies.cut(99, 0).unwrap(), "no such segment: nothing");
    }

    /// The appends of a transaction that failed are undone: the segments it started go,
    /// the one it went on is cut back, and the next append takes their place.
    #[test]
    fn a_rollback_undoes_the_appends_since_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let kept = bodies.append(&[1; 600]).unwrap();
        let mark = bodies.mark();
        let cut = bodies.append(&[2; 300]).unwrap();
        let started = bodies.append(&[3; 600]).unwrap();
        assert_ne!(started.segment, kept.segment, "a segment was started");
        bodies.rollback(mark).unwrap();
        let listed = bodies.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(!segment_path(bodies.path(), started.segment).exists());
        assert_eq!(listed[0].2, 600, "cut back to its length at the mark");
        assert_eq!(std::fs::metadata(&listed[0].1).unwrap().len(), 600);
        assert_eq!(bodies.current(), Some(kept.segment));
        let next = bodies.append(&[4; 300]).unwrap();
        assert_eq!((next.segment, next.offset), (cut.segment, cut.offset));
        assert_eq!(bodies.read(&kept).unwrap(), vec![1; 600]);
        assert_eq!(bodies.read(&next).unwrap(), vec![4; 300]);
        // Back to no segment at all.
        let other = tempfile::tempdir().unwrap();
        let empty = Bodies::open_with(&redb(&other), 1000).unwrap();
        let mark = empty.mark();
        empty.append(b"gone").unwrap();
        empty.rollback(mark).unwrap();
        assert!(empty.list().is_empty() && empty.current().is_none());
    }

    #[test]
    fn a_reopened_file_appends_to_a_new_segment_and_reads_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = redb(&dir);
        let first = Bodies::open_with(&path, 1000).unwrap();
        let refs: Vec<_> = (0..30).map(|i| first.append(&body(i)).unwrap()).collect();
        first.sync().unwrap();
        let before = first.list();
        drop(first);
        // Names that are not segments of this file are not listed.
        for other in ["QSPACE.bodies.07", "QSPACE.bodies.0", "QSPACE.bodies.x", "OTHER.bodies.9"] {
            std::fs::write(dir.path().join(other), b"").unwrap();
        }
        let bodies = Bodies::open_with(&path, 1000).unwrap();
        assert_eq!(bodies.list(), before);
        assert_eq!(bodies.current(), None, "no segment of before is appended to");
        let last = before.last().unwrap().0;
        let r = bodies.append(b"new").unwrap();
        assert_eq!((r.segment, r.offset), (last + 1, 0));
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(bodies.read(r).unwrap(), body(i), "body {i}");
        }
    }

    #[test]
    fn damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        let a = bodies.append(b"first body").unwrap();
        let b = bodies.append(b"second body").unwrap();
        bodies.sync().unwrap();
        let path = segment_path(&redb(&dir), a.segment);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"S", u64::from(b.offset)).unwrap();
        let (kind, message) = kind_and_message(bodies.read(&b));
        assert_eq!(kind, ErrorKind::InvalidData);
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("offset {}", b.offset)), "{message}");
        assert_eq!(bodies.read(&a).unwrap(), b"first body");
        file.set_len(u64::from(b.offset) + 3).unwrap();
        let (kind, message) = kind_and_message(bodies.read(&b));
        assert_eq!(kind, ErrorKind::UnexpectedEof);
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn a_removed_segment_is_not_found_and_the_current_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 100).unwrap();
        let old = bodies.append(&[1u8; 80]).unwrap();
        let new = bodies.append(&[2u8; 80]).unwrap();
        assert_eq!((old.segment, new.segment), (1, 2));
        bodies.sync().unwrap();
        bodies.remove(1).unwrap();
        let path = segment_path(&redb(&dir), 1);
        assert!(!path.exists());
        let (kind, message) = kind_and_message(bodies.read(&old));
        assert_eq!(kind, ErrorKind::NotFound);
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(kind_and_message(bodies.remove(2)).0, ErrorKind::InvalidInput);
        assert_eq!(bodies.read(&new).unwrap(), [2u8; 80]);
        assert_eq!(bodies.list().iter().map(|s| s.0).collect::<Vec<_>>(), [2]);
        bodies.sync().unwrap();
        // Gone from a reopened file too: its number is not given out again while 2 is there.
        let bodies = Bodies::open_with(&redb(&dir), 100).unwrap();
        assert_eq!(kind_and_message(bodies.read(&old)).0, ErrorKind::NotFound);
        assert_eq!(bodies.append(b"x").unwrap().segment, 3);
    }

    #[test]
    fn references_round_trip_through_their_bytes() {
        let r = BodyRef { segment: 3, offset: 0x0102_0304, len: u32::MAX, crc: 0xdead_beef };
        let b = r.to_bytes();
        assert_eq!(b.len(), BodyRef::BYTES);
        assert_eq!(b[..4], [3, 0, 0, 0]);
        assert_eq!(b[4..8], [4, 3, 2, 1]);
        assert_eq!(BodyRef::from_bytes(&b), Some(r));
        assert_eq!(BodyRef::from_bytes(&b[..15]), None);
        assert_eq!(BodyRef::from_bytes(&[b.as_slice(), &[0]].concat()), None);
        assert_eq!(BodyRef::from_bytes(&[]), None);
    }

    #[test]
    fn a_segment_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open_with(&redb(&dir), 1000).unwrap();
        bodies.append(b"body").unwrap();
        bodies.sync().unwrap();
        drop(bodies);
        let path = segment_path(&redb(&dir), 1);
        for mode in [0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let (kind, message) = kind_and_message(Bodies::open(&redb(&dir)).map(|_| ()));
            assert_eq!(kind, ErrorKind::PermissionDenied);
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn a_segment_that_is_a_symbolic_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"").unwrap();
        let path = segment_path(&redb(&dir), 1);
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        let (kind, message) = kind_and_message(Bodies::open(&redb(&dir)).map(|_| ()));
        assert_eq!(kind, ErrorKind::PermissionDenied);
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn a_sync_with_nothing_written_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open(&redb(&dir)).unwrap();
        bodies.sync().unwrap();
        assert!(bodies.list().is_empty());
        assert_eq!(bodies.current(), None);
        let r = bodies.append(b"body").unwrap();
        bodies.sync().unwrap();
        bodies.sync().unwrap();
        assert_eq!(bodies.read(&r).unwrap(), b"body");
        assert_eq!(bodies.list().len(), 1);
    }

    #[test]
    fn bodies_are_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Bodies>();
    }
}
