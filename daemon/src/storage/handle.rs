//! One redb file as the rest of qmd holds it: a handle that hands out the file's current
//! `Database` for each use, so that the database can be closed and opened again under its
//! users.
//!
//! redb latches an I/O error: every later call on that `Database` fails until it is dropped
//! (see [`super::space`]). After one, the next use retires the failed database: it waits for
//! the uses still holding it (each holds it for one transaction), drops it, and opens the
//! file again through [`files::open`], whose recovery finds what was committed and nothing
//! of the commit that failed. While the file cannot be opened (the filesystem is still full)
//! every use is refused with the reason, and a later one tries again. The engines keep their
//! in-memory state meanwhile: it never holds a change the writer did not report durable.
//!
//! At a clean stop [`DbFile::close`] closes the database, so that the next start finds the
//! file closed and opens it without a repair.
//!
//! `qbackup` copies a file as bytes while it is *held* ([`DbFile::hold`]): until the hold
//! ends, every redb write transaction of the file waits ([`Db::begin_write`]), so the file
//! does not change under the copy. Writers of messages go on meanwhile: their groups are
//! durable in the journal and deferred (see [`crate::engine::deferred`]).

use super::bodies::Bodies;
use super::files;
use super::journal::Journal;
use super::space::{Space, no_space};
use qm_common::{QmError, QmResult};
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a use waits for the others to let go of a failed database before it gives up
/// (they hold it for one transaction; a wait this long means one of them waits on us).
const RETIRE_WAIT: Duration = Duration::from_secs(1);
/// Pause between two attempts to open a file again.
const REOPEN_PAUSE: Duration = Duration::from_millis(200);
/// Below this much free space a reopen is not tried: redb's recovery writes to the file.
const REOPEN_MIN_FREE: u64 = 256 * 1024;
/// How long a clean stop waits for the last uses of a database before it closes it anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// What an administrative write is given room for (records, tables, a queue definition).
const WRITE_NEED: u64 = 1024 * 1024;

type Identify = dyn Fn(&ReadTransaction) -> QmResult<()> + Send + Sync;

/// How many copies hold a file now (see [`DbFile::hold`]), and the signal that one ended.
#[derive(Default)]
struct Holds {
    count: Mutex<u32>,
    ended: Condvar,
}

impl Holds {
    fn count(&self) -> MutexGuard<'_, u32> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once nothing holds the file.
    fn wait(&self) {
        let mut count = self.count();
        while *count > 0 {
            count = self.ended.wait(count).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// While it lives, no redb write transaction of its file begins (see [`DbFile::hold`]).
pub struct Hold {
    holds: Arc<Holds>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        *self.holds.count() -= 1;
        self.holds.ended.notify_all();
    }
}

struct Slot {
    db: Option<Arc<Database>>,
    space: Arc<Space>,
    /// Why the file is not open now, told to every use until it is again.
    down: Option<QmError>,
    not_before: Instant,
    closed: bool,
}

/// A redb file of the device.
pub struct DbFile {
    path: PathBuf,
    /// Checks, at every reopen, that the file is still the one first opened.
    identify: Box<Identify>,
    slot: Mutex<Slot>,
    /// Bytes kept reserved from the start of the file: what its queue spaces with
    /// initialized extents may need.
    floor: AtomicU64,
    /// The file's write-ahead journal, replayed at every open (see [`super::journal`]).
    /// Taken after the database (never while waiting for it), by the writer and by reopen.
    /// `None` while the file is down.
    journal: Mutex<Option<Journal>>,
    /// Commits that applied deferred writes to redb so far (see [`DbFile::applied`]).
    marks: Arc<super::journal::Marks>,
    /// Copies that hold the file unchanged now (see [`DbFile::hold`]).
    holds: Arc<Holds>,
    /// The file's body segments: they outlive a reopen (what they hold is the file's).
    bodies: Arc<Bodies>,
}

/// One use of the file: its database for one transaction, and what explains its failures.
#[derive(Clone)]
pub struct Db {
    db: Arc<Database>,
    space: Arc<Space>,
    floor: u64,
    holds: Arc<Holds>,
    bodies: Arc<Bodies>,
}

impl std::ops::Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Db {
    /// What a failed redb call means: a full filesystem, another I/O error, or `what: e`.
    pub fn explain(&self, what: &str, e: impl std::fmt::Display) -> QmError {
        self.space.explain(what, e)
    }

    /// `e`, unless an I/O error of the file explains it better.
    pub fn recheck(&self, e: QmError) -> QmError {
        if self.space.failure().is_some() { self.space.explain("", &e) } else { e }
    }

    /// Marks the database failed, so that the next use opens the file again: redb goes
    /// back to its last durable commit and the journal is replayed onto it. For a change
    /// applied but not made durable, which must not stay visible.
    pub fn poison(&self) {
        self.space.fail(&std::io::Error::from_raw_os_error(libc::EIO));
    }

    /// Reserves the room a commit needing `need` bytes may write (see
    /// [`Space::reserve`]); refused cleanly when the filesystem is full.
    pub fn reserve(&self, need: u64) -> QmResult<()> {
        self.space.reserve(need, self.floor)
    }

    /// Whether room is held ahead of its commits ([`Space::holds_room`]).
    pub fn holds_room(&self) -> bool {
        self.space.holds_room()
    }

    /// Begins a write transaction once no copy holds the file ([`DbFile::hold`]).
    pub fn begin_write(&self) -> Result<WriteTransaction, redb::TransactionError> {
        self.holds.wait();
        self.db.begin_write()
    }

    /// The file's body segments.
    pub fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    /// Whether `other` is this same open database (not the file opened again since).
    pub fn same_as(&self, other: &Db) -> bool {
        Arc::ptr_eq(&self.db, &other.db)
    }
}

impl DbFile {
    /// Opens `path`; `identify` checks it is the file expected, now and at every reopen,
    /// and says what it found the first time.
    pub fn open<T>(
        path: &Path,
        identify: impl Fn(&ReadTransaction) -> QmResult<T> + Send + Sync + 'static,
    ) -> QmResult<(DbFile, T)> {
        let bodies = Arc::new(
            Bodies::open(path)
                .map_err(|e| files::os_error(path, "list the body segments of", e))?,
        );
        let (db, found, space) = files::open(path, &identify, &bodies)?;
        let marks = Arc::new(super::journal::Marks::default());
        let journal = super::journal::recover(&db, &bodies, path, &space, 0, marks.clone())?;
        let file = DbFile {
            path: path.to_path_buf(),
            identify: Box::new(move |txn| identify(txn).map(drop)),
            slot: Mutex::new(Slot {
                db: Some(Arc::new(db)),
                space,
                down: None,
                not_before: Instant::now(),
                closed: false,
            }),
            floor: AtomicU64::new(0),
            journal: Mutex::new(Some(journal)),
            marks,
            holds: Arc::default(),
            bodies,
        };
        Ok((file, found))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's body segments.
    pub fn bodies(&self) -> &Arc<Bodies> {
        &self.bodies
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The LSN up to which redb holds every group ([`crate::engine::deferred`]): a write
    /// acknowledged before [`DbFile::horizon`] was read is in redb once this reaches it.
    pub fn applied(&self) -> u64 {
        self.marks.applied()
    }

    /// The LSN of the last group acknowledged from the journal.
    pub fn horizon(&self) -> u64 {
        self.marks.acknowledged()
    }

    /// Applies the writes that are durable in the journal but not yet in redb, so that
    /// what is read or written next sees them.
    pub fn settle(&self) -> QmResult<()> {
        let db = self.get()?;
        let mut guard = self.journal();
        let Some(journal) = guard.as_mut() else { return Ok(()) };
        let writes = crate::engine::writer::settle(&db, journal)?;
        if writes > 0 {
            tracing::debug!("{}: {writes} deferred writes applied first", self.path.display());
        }
        Ok(())
    }

    /// Holds the file unchanged until the returned guard is dropped: redb write
    /// transactions wait, the writer takes no checkpoint and lets the journal grow (see
    /// [`super::journal::Journal::make_room`]). Taken by `qbackup` after a checkpoint, while
    /// it copies the file's bytes; anything that must write redb meanwhile (a definition,
    /// a threshold firing, an administrator's change) waits for the copy.
    pub fn hold(&self) -> Hold {
        *self.holds.count() += 1;
        Hold { holds: self.holds.clone() }
    }

    /// Whether a copy holds the file now ([`DbFile::hold`]).
    pub fn held(&self) -> bool {
        *self.holds.count() > 0
    }

    /// The file's journal, for the writer. Take the database ([`DbFile::get`]) first.
    pub fn journal(&self) -> MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds, from now on, the disk the file's initialized queue spaces may take (`bytes`
    /// in all). Taken now: the room is held by this qmd only, so at a start it is taken
    /// again, and a filesystem that filled up meanwhile is said in the log.
    pub fn set_floor(&self, bytes: u64) {
        self.floor.store(bytes, Ordering::Relaxed);
        if bytes == 0 {
            return;
        }
        let space = match self.space() {
            Ok(space) => space,
            Err(_) => return,
        };
        if let Err(e) = space.hold_for(bytes) {
            tracing::warn!(
                "{}: the disk its initialized queue spaces need ({} MiB in all) cannot be held \
                 ({}); their enqueues may be refused until there is room",
                self.path.display(),
                bytes.div_ceil(1 << 20),
                e.message
            );
        }
    }

    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// The file's disk side now (reservation, free space).
    pub fn space(&self) -> QmResult<Arc<Space>> {
        Ok(self.get()?.space)
    }

    /// The database for one use: the open one, or the file opened again after an I/O error.
    pub fn get(&self) -> QmResult<Db> {
        let deadline = Instant::now() + RETIRE_WAIT;
        loop {
            let mut slot = self.slot();
            if slot.closed {
                return Err(QmError::system(format!(
                    "{} is closed: qmd is stopping",
                    self.path.display()
                )));
            }
            if let Some(db) = &slot.db
                && slot.space.failure().is_none()
            {
                let floor = self.floor();
                let holds = self.holds.clone();
                let bodies = self.bodies.clone();
                let space = slot.space.clone();
                return Ok(Db { db: db.clone(), space, floor, holds, bodies });
            }
            if let Some(db) = slot.db.take() {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        // Dropping it closes it; redb writes nothing more after an I/O error.
                        drop(db);
                        tracing::warn!(
                            "{} closed after an I/O error; it is opened again once possible",
                            self.path.display()
                        );
                        slot.down = Some(slot.space.explain("reopening", "I/O error"));
                    }
                    Err(db) => {
                        slot.db = Some(db);
                        drop(slot);
                        if Instant::now() >= deadline {
                            return Err(self.unavailable("its last users still hold it"));
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                }
            }
            return self.reopen(&mut slot);
        }
    }

    /// Why the file cannot be used now: the reason it is down, or what its I/O error
    /// means, and `why` it is not opened again yet.
    fn unavailable(&self, why: &str) -> QmError {
        let slot = self.slot();
        slot.down.clone().unwrap_or_else(|| {
            let what = format!("{} cannot be opened again yet ({why})", self.path.display());
            slot.space.explain(&what, "after an I/O error")
        })
    }

    fn reopen(&self, slot: &mut Slot) -> QmResult<Db> {
        let down = |slot: &Slot| slot.down.clone().unwrap_or_else(|| QmError::system("not open"));
        if Instant::now() < slot.not_before {
            return Err(down(slot));
        }
        slot.not_before = Instant::now() + REOPEN_PAUSE;
        if slot.space.free().is_some_and(|free| free < REOPEN_MIN_FREE) {
            slot.down = Some(no_space(&self.path, rustix::io::Errno::NOSPC.raw_os_error()));
            return Err(down(slot));
        }
        // The old journal goes first: it holds the file's lock.
        *self.journal() = None;
        let opened = files::open(&self.path, |txn| (self.identify)(txn), &self.bodies).and_then(
            |(db, (), space)| {
                let journal = super::journal::recover(
                    &db,
                    &self.bodies,
                    &self.path,
                    &space,
                    self.floor(),
                    self.marks.clone(),
                )?;
                *self.journal() = Some(journal);
                Ok((db, (), space))
            },
        );
        match opened {
            Ok((db, (), space)) => {
                tracing::warn!(
                    "{} opened again; carrying on from what it holds",
                    self.path.display()
                );
                let db = Arc::new(db);
                slot.db = Some(db.clone());
                slot.space = space.clone();
                slot.down = None;
                let (holds, bodies) = (self.holds.clone(), self.bodies.clone());
                Ok(Db { db, space, floor: self.floor(), holds, bodies })
            }
            Err(e) => {
                // Said once for each reason: it is tried again at every use.
                if slot.down.as_ref().is_none_or(|d| d.message != e.message) {
                    tracing::warn!(
                        "{} cannot be opened again yet: {}",
                        self.path.display(),
                        e.message
                    );
                }
                slot.down = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Runs `f` in one read transaction, which sees every write acknowledged so far.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> QmResult<T>) -> QmResult<T> {
        // Only message writes and state values are deferred, and only the engines read
        // them (after settling, when they load a queue space): a read
        // that cannot settle them (a full disk) still sees everything else.
        if let Err(e) = self.settle() {
            tracing::debug!("{}: deferred writes not applied: {}", self.path.display(), e.message);
        }
        self.read_applied(f)
    }

    /// Runs `f` in one read transaction of what redb holds: without the deferred writes,
    /// which only the engines may ignore (they hold those messages in memory).
    pub fn read_applied<T>(&self, f: impl FnOnce(&ReadTransaction) -> QmResult<T>) -> QmResult<T> {
        // Before the transaction: the bodies it points at stay readable for it.
        let _reading = self.bodies.reading();
        let db = self.get()?;
        let txn = db.begin_read().map_err(|e| db.explain("reading", e))?;
        f(&txn).map_err(|e| db.recheck(e))
    }

    /// Runs `f` in one write transaction and commits it; an error (a full filesystem
    /// included) aborts everything.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> QmResult<T>) -> QmResult<T> {
        // Deferred writes go first: they were acknowledged before this one was asked.
        self.settle()?;
        let db = self.get()?;
        // A durable commit also writes out what the journaled groups left in redb's cache.
        // Read before the write lock: the writer holds the journal while it waits for that.
        let pending = self.journal().as_ref().map_or(0, |j| j.unapplied_room());
        let mut txn = db.begin_write().map_err(|e| db.explain("starting a write", e))?;
        super::files::quick_repair(&mut txn);
        db.reserve(WRITE_NEED + pending)?;
        // A queue space moved here gets its bodies appended (see `segments::rehome`).
        let apply = |txn: &WriteTransaction| f(txn).map_err(|e| db.recheck(e));
        let explain = |e: redb::CommitError| db.explain("committing", e);
        crate::engine::segments::committed(&self.bodies, txn, apply, explain)
    }

    /// Closes the database for good (a clean stop): waits a moment for its last uses, then
    /// lets redb record that the file was closed cleanly.
    pub fn close(&self) {
        if let Ok(db) = self.get()
            && let Some(journal) = self.journal().as_mut()
            && let Err(e) = super::journal::checkpoint(&db, journal)
        {
            tracing::warn!(
                "{}: {} (its journal is replayed at the next start)",
                self.path.display(),
                e.message
            );
        }
        let mut db = {
            let mut slot = self.slot();
            slot.closed = true;
            match slot.db.take() {
                Some(db) => db,
                None => return,
            }
        };
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(open) => {
                    match open.close() {
                        Ok(()) => tracing::debug!("{} closed", self.path.display()),
                        Err(e) => tracing::warn!(
                            "{} could not be closed cleanly ({e}); the next start repairs it",
                            self.path.display()
                        ),
                    }
                    return;
                }
                Err(still) if Instant::now() < deadline => {
                    db = still;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    tracing::warn!(
                        "{} is still in use and was left open; the next start repairs it",
                        self.path.display()
                    );
                    return;
                }
            }
        }
    }
}
