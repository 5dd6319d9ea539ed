//! Test-only fault injection: a crash or a power cut at a chosen storage step.
//!
//! Tests set `QM_FAULT` in qmd's environment; nothing else should. It is read once, when the
//! first file is opened; when it is unset, [`Backend`] only forwards to redb's `FileBackend`
//! (one branch per operation), so this module costs nothing measurable in production.
//!
//! - `QM_FAULT=crash:N`: just before its Nth storage step, qmd kills itself with SIGKILL.
//!   What it wrote until then stays, as after `kill -9`: the page cache survives a process.
//! - `QM_FAULT=powercut:N`: the same, but first every write to a qm file that no sync of
//!   that file followed is undone (each write keeps the bytes it overwrote until the next
//!   sync, and the length at the last sync is restored), which is what a power cut leaves.
//! - `QM_FAULT=count:PATH`: no fault; PATH always holds the number of steps taken so far,
//!   so a test can learn how many steps a run takes and choose its N.
//! - A suffix `+checkpoints` (`powercut:N+checkpoints`, `count:PATH+checkpoints`): the
//!   writer takes a checkpoint after every group of writes (see [`super::journal`]), so that
//!   the steps of checkpoints are among those cut.
//! - `QM_FAULT=noroom`: no room is held ahead of commits ([`super::space`]), so that a full
//!   filesystem meets redb in the middle of a commit, as it would where qm cannot hold room:
//!   the test of opening a file again after an I/O error.
//! - `QM_FAULT=defer`: no fault; the writer applies deferred writes to redb only when it
//!   must (its journal is full, a queue space is loaded, an administrator writes, qmd
//!   stops), never by itself, so that a test sees them all still deferred
//!   ([`crate::engine::deferred`]).
//! - `QM_FAULT=slowcopy`: no fault; `qbackup` copies each file 64 KiB at a time with a
//!   pause of 20 ms after each piece, so that a test's writers run during the copy (with
//!   `+checkpoints`, each of their groups would be a redb commit but for the hold), and the
//!   writer catches up on more than 64 deferred writes 16 at a time (see
//!   [`crate::engine::writer`]).
//! - `QM_FAULT=smallsegments`: no fault; body segments take 16 KiB and mostly dead ones
//!   are copied forward once they hold 16 KiB of dead bytes, so that a test sees segments
//!   roll over, die and be compacted ([`super::bodies`], [`crate::engine::segments`]).
//! - `QM_FAULT=gatedcompaction:PATH`: as `smallsegments`, and a compaction waits after
//!   each step of its copy while PATH exists, so that a test sees writers go on meanwhile.
//! - `QM_FAULT=gatedadmin:PATH`: no fault; a change to many messages (`qdeletemsg`,
//!   `qchangeprio`, ...) waits before each of its steps after the first while PATH exists,
//!   so that a test sees other work go on between them ([`crate::engine::admin`]).
//! - `QM_FAULT=gatedapply:PATH`: no fault; an applier thread waits before each commit while
//!   PATH exists, so that a test sees what the writer does while one is under way.
//! - `QM_FAULT=fullsegments`: every append to a body segment finds the filesystem full, so
//!   that a test sees bodies go into redb instead.
//! - `QM_FAULT=failapply`: no crash; the first write to a redb file that an applier thread
//!   makes (see [`crate::engine::applier`]) fails with an I/O error, once, so that a test
//!   sees the groups handed over come back from the journal when the file is opened again.
//!
//! A storage step is every write, length change and sync of a qm redb file, and every
//! file-system step of creating one (create, rename into place, sync of the directory).
//! Counting writes and not only syncs puts a crash point between any two operations, which
//! for a plain crash is the finest there is; for a power cut, the cuts between two syncs
//! differ only in the page cache they lose.
//!
//! While a fault is armed, every step of every file takes one lock, so that a cut sees no
//! write half done; with a power cut armed, so does every read, so that none sees what the
//! cut undid in the moment before qmd is gone. Directory entries (creates, renames, removals) are taken as durable at
//! once: the power cut models lost file contents, not lost directory entries.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The environment variable that arms a fault.
pub const VARIABLE: &str = "QM_FAULT";

#[derive(Debug)]
enum Mode {
    Crash(u64),
    PowerCut(u64),
    Count(File),
    SmallSegments,
    GatedCompaction(std::path::PathBuf),
    GatedAdmin(std::path::PathBuf),
    GatedApply(std::path::PathBuf),
    FullSegments,
    NoRoom,
    Defer,
    SlowCopy,
    FailApply,
}

/// Whether `failapply` has failed its write already.
static APPLY_FAILED: AtomicBool = AtomicBool::new(false);

/// The armed fault and the state every step shares.
#[derive(Debug)]
struct Fault {
    mode: Mode,
    /// A checkpoint after every group of writes.
    checkpoints: bool,
    steps: u64,
    /// Every file opened since qmd started, by device and inode, for a power cut to undo
    /// their unsynced writes: kept after the file is closed (its unsynced writes are still
    /// only in the page cache) and shared when it is opened again.
    journals: HashMap<(u64, u64), Arc<Mutex<Journal>>>,
}

static FAULT: OnceLock<Option<Mutex<Fault>>> = OnceLock::new();

fn parse(value: &str) -> Result<Mode, String> {
    let value = value.strip_suffix("+checkpoints").unwrap_or(value);
    let bad = || {
        format!(
            "{VARIABLE}={value} is not crash:N, powercut:N, count:PATH, noroom, defer, slowcopy, \
             failapply, smallsegments, gatedcompaction:PATH, gatedadmin:PATH, gatedapply:PATH or fullsegments"
        )
    };
    match value {
        "noroom" => return Ok(Mode::NoRoom),
        "defer" => return Ok(Mode::Defer),
        "slowcopy" => return Ok(Mode::SlowCopy),
        "failapply" => return Ok(Mode::FailApply),
        "smallsegments" => return Ok(Mode::SmallSegments),
        "fullsegments" => return Ok(Mode::FullSegments),
        _ => {}
    }
    let (kind, arg) = value.split_once(':').ok_or_else(bad)?;
    let step = || arg.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad);
    match kind {
        "crash" => Ok(Mode::Crash(step()?)),
        "gatedcompaction" => Ok(Mode::GatedCompaction(arg.into())),
        "gatedadmin" => Ok(Mode::GatedAdmin(arg.into())),
        "gatedapply" => Ok(Mode::GatedApply(arg.into())),
        "powercut" => Ok(Mode::PowerCut(step()?)),
        "count" => File::create(arg)
            .map(Mode::Count)
            .map_err(|e| format!("{VARIABLE}: cannot create {arg}: {e}")),
        _ => Err(bad()),
    }
}

fn fault() -> Option<&'static Mutex<Fault>> {
    FAULT
        .get_or_init(|| {
            let value = std::env::var(VARIABLE).ok().filter(|v| !v.is_empty())?;
            match parse(&value) {
                Ok(mode) => {
                    tracing::warn!(
                        "{VARIABLE}={value}: storage fault injection is armed (tests only)"
                    );
                    let checkpoints = value.ends_with("+checkpoints");
                    Some(Mutex::new(Fault {
                        mode,
                        checkpoints,
                        steps: 0,
                        journals: HashMap::new(),
                    }))
                }
                Err(why) => {
                    // A test that asked for a fault must not pass without one.
                    eprintln!("qmd: {why}");
                    std::process::exit(2);
                }
            }
        })
        .as_ref()
}

fn lock() -> Option<MutexGuard<'static, Fault>> {
    fault().map(|f| f.lock().unwrap_or_else(|p| p.into_inner()))
}

impl Fault {
    /// Counts one step; crashes or cuts the power when it is the chosen one.
    fn step(&mut self) {
        self.steps += 1;
        match &mut self.mode {
            Mode::Count(file) => {
                let _ = file.write_all_at(format!("{:>20}\n", self.steps).as_bytes(), 0);
                let _ = file.flush();
            }
            Mode::Crash(n) if *n == self.steps => die(self.steps, "crash"),
            Mode::PowerCut(n) if *n == self.steps => {
                for journal in self.journals.values() {
                    journal.lock().unwrap_or_else(|p| p.into_inner()).lose_unsynced();
                }
                die(self.steps, "power cut");
            }
            _ => {}
        }
    }

    fn keeps_journals(&self) -> bool {
        matches!(self.mode, Mode::PowerCut(_))
    }
}

fn die(step: u64, what: &str) -> ! {
    eprintln!("qmd: {VARIABLE}: {what} at storage step {step}");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// Whether `QM_FAULT` is set at all: storage then goes through the counted paths only.
pub fn armed() -> bool {
    fault().is_some()
}

/// Whether a test asked for a checkpoint after every group of writes.
pub fn checkpoints_always() -> bool {
    lock().is_some_and(|f| f.checkpoints)
}

/// Whether a test asked for deferred writes to be applied only when they must be.
pub fn defers_always() -> bool {
    lock().is_some_and(|f| matches!(f.mode, Mode::Defer))
}

/// Whether a test asked `qbackup` to copy slowly, in small pieces.
pub fn copies_slowly() -> bool {
    lock().is_some_and(|f| matches!(f.mode, Mode::SlowCopy))
}

/// Whether this write is the one `failapply` fails: the first an applier thread makes.
fn fails_apply() -> bool {
    let on_applier = std::thread::current().name().is_some_and(|n| n.starts_with("qm-applier"));
    on_applier
        && lock().is_some_and(|f| matches!(f.mode, Mode::FailApply))
        && !APPLY_FAILED.swap(true, Ordering::Relaxed)
}

/// Whether a test asked for small body segments and compaction of little dead space.
pub fn small_segments() -> bool {
    lock().is_some_and(|f| matches!(f.mode, Mode::SmallSegments | Mode::GatedCompaction(_)))
}

/// Whether a test holds compactions between their steps now (`gatedcompaction:PATH` while
/// PATH exists).
pub fn compaction_gated() -> bool {
    lock().is_some_and(|f| matches!(&f.mode, Mode::GatedCompaction(gate) if gate.exists()))
}

/// Whether a test holds the applier threads' commits now (`gatedapply:PATH` while PATH
/// exists).
pub fn apply_gated() -> bool {
    lock().is_some_and(|f| matches!(&f.mode, Mode::GatedApply(gate) if gate.exists()))
}

/// Whether a test holds the steps of a change to many messages now (`gatedadmin:PATH`
/// while PATH exists).
pub fn admin_gated() -> bool {
    lock().is_some_and(|f| matches!(&f.mode, Mode::GatedAdmin(gate) if gate.exists()))
}

/// Whether a test asked for every append to a body segment to find the filesystem full.
pub fn segments_full() -> bool {
    lock().is_some_and(|f| matches!(f.mode, Mode::FullSegments))
}

/// Whether room is held ahead of commits (always, unless a test asked for `noroom`).
pub fn holds_room() -> bool {
    lock().is_none_or(|f| !matches!(f.mode, Mode::NoRoom))
}

/// Counts a file-system step that is not a redb file's own (creating or renaming a file,
/// syncing a directory). Does nothing when no fault is armed.
pub fn step() {
    if let Some(mut fault) = lock() {
        fault.step();
    }
}

/// The backend redb gets for `file`: redb's file backend, with its steps counted when a
/// fault is armed.
pub fn backend(file: File) -> std::io::Result<Backend> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let Some(mut fault) = lock() else {
        return Ok(Backend {
            fd,
            inner: plain(file)?,
            counted: false,
            journal: None,
            unsynced: AtomicBool::new(false),
        });
    };
    let journal = if fault.keeps_journals() {
        let meta = file.metadata()?;
        let journal = match fault.journals.entry((meta.dev(), meta.ino())) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => e
                .insert(Arc::new(Mutex::new(Journal {
                    file: file.try_clone()?,
                    synced_len: meta.len(),
                    len: meta.len(),
                    undo: Vec::new(),
                })))
                .clone(),
        };
        Some(journal)
    } else {
        None
    };
    Ok(Backend {
        fd,
        inner: plain(file)?,
        counted: true,
        journal,
        unsynced: AtomicBool::new(false),
    })
}

fn plain(file: File) -> std::io::Result<FileBackend> {
    FileBackend::new(file).map_err(std::io::Error::other)
}

/// What a power cut must undo in one file: the bytes each write since the last sync
/// overwrote, and the length at that sync.
#[derive(Debug)]
struct Journal {
    file: File,
    synced_len: u64,
    len: u64,
    undo: Vec<(u64, Vec<u8>)>,
}

impl Journal {
    /// Keeps the synced bytes of `start..end` that a write or truncation is about to lose.
    fn save(&mut self, start: u64, end: u64) {
        let end = end.min(self.len).min(self.synced_len);
        if start >= end {
            return;
        }
        let mut old = vec![0; (end - start) as usize];
        if self.file.read_exact_at(&mut old, start).is_ok() {
            self.undo.push((start, old));
        }
    }

    fn synced(&mut self) {
        self.undo.clear();
        self.synced_len = self.len;
    }

    fn lose_unsynced(&mut self) {
        for (offset, old) in self.undo.drain(..).rev() {
            let _ = self.file.write_all_at(&old, offset);
        }
        let _ = self.file.set_len(self.synced_len);
    }
}

/// redb's file backend; with a fault armed, every write, length change and sync is a step.
/// Being the one backend of every qm file, it is also where the fence is checked
/// ([`super::fence`]): before the first write since the file's last sync.
#[derive(Debug)]
pub struct Backend {
    inner: FileBackend,
    /// `inner`'s descriptor, for [`Backend::write_out`], which redb's backend has no call for.
    fd: std::os::fd::RawFd,
    counted: bool,
    journal: Option<Arc<Mutex<Journal>>>,
    /// Written since the last sync: the fence was checked for this commit already.
    unsynced: AtomicBool,
}

impl Backend {
    /// Sends the `len` bytes written from `offset` to the disk now and waits until it has
    /// them, without a flush of its cache: not a sync. A failure is left to the next
    /// [`StorageBackend::sync_data`], which reports every write-back error since the last.
    pub fn write_out(&self, offset: u64, len: u64) {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
        // SAFETY: a plain system call on a descriptor `inner` owns and keeps open while
        // `self` lives; it touches no memory of ours.
        unsafe { libc::sync_file_range(self.fd, offset, len, flags) };
    }

    /// Checks the fence before the first write of a commit.
    fn before_write(&self) -> IoResult<()> {
        if !self.unsynced.swap(true, Ordering::Relaxed) {
            super::fence::check()?;
        }
        Ok(())
    }

    /// Takes the step, then runs `op` with the journal (if any) while no other step runs.
    fn step<T>(&self, op: impl FnOnce(Option<&mut Journal>) -> T) -> T {
        if !self.counted {
            return op(None);
        }
        let mut fault = lock();
        if let Some(f) = fault.as_mut() {
            f.step();
        }
        let mut journal =
            self.journal.as_ref().map(|j| j.lock().unwrap_or_else(|p| p.into_inner()));
        op(journal.as_deref_mut())
    }
}

impl Backend {
    /// With a power cut armed, holds the fault's lock for a read: the cut undoes what was
    /// not synced and kills qmd under that lock, so no read sees the undone file and gets
    /// an answer out before qmd is gone (which no real power cut allows). `None` otherwise.
    fn unless_cut(&self) -> Option<MutexGuard<'static, Fault>> {
        self.journal.as_ref().and_then(|_| lock())
    }
}

type IoResult<T> = Result<T, std::io::Error>;

impl StorageBackend for Backend {
    fn len(&self) -> IoResult<u64> {
        let _cut = self.unless_cut();
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        let _cut = self.unless_cut();
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        // Rare (a file grows in steps): checked every time, and it leaves the next write
        // its own check.
        super::fence::check()?;
        self.step(|journal| {
            if let Some(j) = journal {
                j.save(len, u64::MAX);
                self.inner.set_len(len)?;
                j.len = len;
                return Ok(());
            }
            self.inner.set_len(len)
        })
    }

    fn sync_data(&self) -> IoResult<()> {
        // Before the sync, whatever it returns: the next write is checked again.
        self.unsynced.store(false, Ordering::Relaxed);
        self.step(|journal| {
            self.inner.sync_data()?;
            if let Some(j) = journal {
                j.synced();
            }
            Ok(())
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        if self.counted && fails_apply() {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.before_write()?;
        self.step(|journal| {
            let end = offset + data.len() as u64;
            if let Some(j) = journal {
                j.save(offset, end);
                self.inner.write(offset, data)?;
                j.len = j.len.max(end);
                return Ok(());
            }
            self.inner.write(offset, data)
        })
    }

    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }

    super::forward_range_locks!(inner);
}
