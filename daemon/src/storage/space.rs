//! Disk space: what a full filesystem does to qm's files, and how qm keeps it from
//! poisoning them.
//!
//! redb turns any I/O error into a latched failure: every later call on that `Database`
//! answers "Previous I/O error" until it is dropped and the file opened again. A write that
//! fails for lack of space in the middle of a commit would therefore stop every writer of
//! the file. So qm holds room ahead of redb, in an unnamed file on the same filesystem
//! (`O_TMPFILE`: nothing to name, plant or clean up; it goes when qmd does):
//!
//! - Before a commit writes anything, [`Space::reserve`] makes sure the room held covers
//!   what a commit of its size may need. A filesystem with no room refuses that, and the
//!   commit is refused cleanly with nothing written ([`no_space`]).
//! - When one of redb's writes then finds the filesystem full, [`SpaceBackend`] gives part
//!   of the held room back to the filesystem and tries the write again, so the commit
//!   completes. Where redb places its pages in the file cannot be known from outside; room
//!   held aside and handed over at the moment of need works whatever it does.
//! - Queue spaces created with `Initialize extents: y` add a floor: the room held also
//!   covers what they may still need ([`initialized_bytes`], less what the file already
//!   has on disk), taken when they are created ([`Space::hold_for`]), so that a disk too
//!   small is refused then rather than at an enqueue.
//! - [`SpaceBackend`] also keeps the first I/O error of the database, so that an error
//!   redb reports later ("Previous I/O error") can still be told for what it was. Whoever
//!   holds the file then opens it again ([`super::handle::DbFile`]).
//!
//! All of this assumes a filesystem that overwrites in place (ext4, xfs, tmpfs). On a
//! copy-on-write one (btrfs, zfs) an overwrite needs new blocks as well; qm then relies on
//! opening the file again once there is room.

use qm_common::{Diagnostic, QmError, QmResult};
use redb::StorageBackend;
use rustix::fs::{FallocateFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const MIB: u64 = 1024 * 1024;

/// Room is held in steps of this size, and never less: small enough that room given to
/// one write and not used is taken back whole by the next commit.
const GRAIN: u64 = 64 * 1024;
/// Room held beyond what is needed is given back once it is more than this.
const SLACK: u64 = 4 * MIB;

/// The most disk bytes a queue space of `pages` pages of `page_size` bytes takes in its
/// file over its life; what `Initialize extents: y` reserves. See BENCHMARKS.md ("Disk
/// usage") for the measurements behind it. Filled to its limit, a queue space takes at most
/// 1.11 times its pages (with any message size, the order tables included). But redb
/// doubles the file's length as it grows and, as messages come and go, writes its pages all
/// over that length, so in time the file takes its whole length: at most twice what it held
/// when it last grew, i.e. 2.1 times the pages, plus three times the largest body's run of
/// pages (a run must be free and whole: the order tables' small pages between freed runs
/// may start a growth of its own), plus 4 MiB for redb's own tables.
pub fn initialized_bytes(pages: u64, page_size: u32) -> u64 {
    let bytes = pages * u64::from(page_size);
    let largest = bytes.min(qm_common::message::BODY_MAX as u64);
    bytes * 21 / 10 + 3 * largest + 4 * MIB
}

/// Whether an error number means the filesystem has no room (or the user no quota) left.
fn is_no_space(errno: i32) -> bool {
    errno == Errno::NOSPC.raw_os_error() || errno == Errno::DQUOT.raw_os_error()
}

pub(crate) fn io_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(is_no_space)
}

/// The refusal for a full filesystem: which file, that it is the filesystem and not a queue
/// space limit, that nothing changed, and what to do.
pub fn no_space(path: &Path, errno: i32) -> QmError {
    let file = path.display();
    let what = if errno == Errno::DQUOT.raw_os_error() {
        format!("the disk quota of qmd's user on the filesystem holding {file} is used up")
    } else {
        format!("the filesystem holding {file} is full")
    };
    QmError::new(
        Diagnostic::NoSpace,
        format!(
            "{what}; nothing was changed. This is the disk, not a queue space limit: free \
             space on that filesystem (or raise the quota), then retry; qmd carries on by \
             itself once there is room"
        ),
    )
}

/// An I/O error on `path`: a full filesystem is said so, anything else as the system error.
pub fn io_failure(path: &Path, what: &str, e: &std::io::Error) -> QmError {
    match e.raw_os_error() {
        Some(errno) if is_no_space(errno) => no_space(path, errno),
        _ => QmError::new(Diagnostic::Os, format!("cannot {what} {}: {e}", path.display())),
    }
}

/// The room held for the file: an unnamed file of `held` bytes.
#[derive(Debug)]
struct Room {
    file: Option<File>,
    held: u64,
}

/// The disk side of one open redb file: the room held for it, and its first I/O error.
#[derive(Debug)]
pub struct Space {
    path: PathBuf,
    /// The redb file itself, for `fstat` and `fstatvfs` beside redb's own handle.
    file: File,
    room: Mutex<Room>,
    /// The first I/O error (its errno, or -1 without one) since the file was opened.
    failure: Mutex<Option<i32>>,
    /// The file's body segments, whose bytes count as the file's own (weak: they hold
    /// this too).
    bodies: Mutex<std::sync::Weak<super::bodies::Bodies>>,
}

/// An unnamed file in `path`'s directory, to hold room in; `None` where the filesystem has
/// no `O_TMPFILE`.
fn room_file(path: &Path) -> Option<File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)).ok().map(File::from)
}

fn grains(bytes: u64) -> u64 {
    bytes.max(1).div_ceil(GRAIN) * GRAIN
}

impl Space {
    /// The disk side of `file`, opened from `path`.
    pub fn new(path: &Path, file: &File) -> std::io::Result<Arc<Space>> {
        Ok(Arc::new(Space {
            path: path.to_path_buf(),
            file: file.try_clone()?,
            room: Mutex::new(Room { file: None, held: 0 }),
            failure: Mutex::new(None),
            bodies: Mutex::new(std::sync::Weak::new()),
        }))
    }

    /// Whether room is held ahead for this file: not on a filesystem without `fallocate`
    /// (nor with `QM_FAULT=noroom`), where a full disk is met inside redb's commits.
    pub fn holds_room(&self) -> bool {
        self.room().file.is_some()
    }

    fn room(&self) -> MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the bytes of `bodies` as the file's own from now on.
    pub fn count_bodies(&self, bodies: &Arc<super::bodies::Bodies>) {
        *self.bodies.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(bodies);
    }

    /// Bytes the redb file and its body segments have on disk.
    fn allocated(&self) -> u64 {
        let bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
        let segments = bodies.map_or(0, |b| b.bytes());
        self.file.metadata().map_or(0, |m| m.blocks() * 512) + segments
    }

    /// The room a commit that may need `need` new bytes should find held, when the file's
    /// initialized queue spaces may take up to `floor` bytes in all: what they may still
    /// take covers the commit's own needs (their messages are part of it).
    fn target(&self, need: u64, floor: u64) -> u64 {
        let need = grains(need);
        if floor == 0 {
            return need;
        }
        // Not rounded: room given to one write and not used must be enough to take back.
        floor.saturating_sub(self.allocated()).max(need)
    }

    /// Makes sure the room held covers a commit that may need `need` new bytes on disk,
    /// and what the file's initialized queue spaces may still take (`floor` in all).
    /// Refuses with [`no_space`] when the filesystem has no room: nothing was written then.
    pub fn reserve(&self, need: u64, floor: u64) -> QmResult<()> {
        let target = self.target(need, floor);
        let mut room = self.room();
        if room.held > target + SLACK {
            // Much more than needed now (a large commit, a queue space gone): give it back.
            self.set_held(&mut room, target);
        }
        if room.held >= target {
            return Ok(());
        }
        self.grow(&mut room, target)
    }

    /// Holds what a floor of `floor` bytes needs (a step of a queue space's initialization);
    /// refuses with [`no_space`] when the filesystem has no room.
    pub fn hold_for(&self, floor: u64) -> QmResult<()> {
        let target = self.target(MIB, floor);
        let mut room = self.room();
        if room.held >= target {
            return Ok(());
        }
        self.grow(&mut room, target)
    }

    /// Holds no more than a floor of `floor` bytes needs (an initialization that could
    /// not finish gives back what it took).
    pub fn settle(&self, floor: u64) {
        let target = self.target(MIB, floor);
        let mut room = self.room();
        if room.held > target {
            self.set_held(&mut room, target);
        }
    }

    /// How many more bytes holding room for a floor of `floor` bytes takes from the
    /// filesystem.
    pub fn more_for(&self, floor: u64) -> u64 {
        let target = self.target(MIB, floor);
        target.saturating_sub(self.room().held)
    }

    fn grow(&self, room: &mut Room, target: u64) -> QmResult<()> {
        if room.file.is_none() && super::fault::holds_room() {
            room.file = room_file(&self.path);
        }
        let Some(file) = &room.file else { return Ok(()) };
        match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, target) {
            Ok(()) => {
                room.held = target;
                Ok(())
            }
            Err(e) => {
                // What a failed allocation took on the way is given back.
                let _ = rustix::fs::ftruncate(file, room.held);
                match e {
                    e if is_no_space(e.raw_os_error()) => {
                        Err(no_space(&self.path, e.raw_os_error()))
                    }
                    Errno::OPNOTSUPP | Errno::NOSYS => {
                        tracing::info!(
                            "the filesystem holding {} cannot hold room ahead (no fallocate); \
                             a full disk is met by opening the file again instead",
                            self.path.display()
                        );
                        room.file = None;
                        Ok(())
                    }
                    e => Err(io_failure(&self.path, "hold disk room for", &e.into())),
                }
            }
        }
    }

    fn set_held(&self, room: &mut Room, bytes: u64) {
        if let Some(file) = &room.file
            && rustix::fs::ftruncate(file, bytes).is_ok()
        {
            room.held = bytes;
        }
    }

    /// Gives part of the held room back to the filesystem: one of redb's writes of `len`
    /// bytes needs it now. Whether there was any.
    pub(crate) fn release_room(&self, len: u64) -> bool {
        let mut room = self.room();
        if room.held == 0 || room.file.is_none() {
            return false;
        }
        let keep = room.held.saturating_sub(grains(len));
        tracing::debug!(
            "{}: the filesystem is full: {} of the bytes held for it are used",
            self.path.display(),
            room.held - keep
        );
        let held = room.held;
        self.set_held(&mut room, keep);
        room.held < held
    }

    /// Bytes free for qmd's user on the filesystem holding the file.
    pub fn free(&self) -> Option<u64> {
        let vfs = rustix::fs::fstatvfs(&self.file).ok()?;
        Some(vfs.f_bavail.saturating_mul(vfs.f_frsize))
    }

    /// The errno of the first I/O error since the file was opened, if there was one.
    pub fn failure(&self) -> Option<i32> {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `e` as the file's I/O error (the first one stays).
    pub fn fail(&self, e: &std::io::Error) {
        self.record(e);
    }

    fn record(&self, e: &std::io::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!("{}: I/O error: {e}", self.path.display());
            *failure = Some(e.raw_os_error().unwrap_or(-1));
        }
    }

    /// What a failed operation on this file means for the user: a full filesystem, another
    /// I/O error (the file is opened again), or the storage error itself.
    pub fn explain(&self, what: &str, e: impl std::fmt::Display) -> QmError {
        match self.failure() {
            Some(errno) if is_no_space(errno) => no_space(&self.path, errno),
            Some(errno) => QmError::system(format!(
                "{what}: I/O error on {} ({}); the file is opened again for the next request",
                self.path.display(),
                std::io::Error::from_raw_os_error(errno)
            )),
            None => QmError::system(format!("{what}: {e}")),
        }
    }
}

/// The backend redb gets: `inner`, watched by a [`Space`].
#[derive(Debug)]
pub struct SpaceBackend<B> {
    inner: B,
    space: Arc<Space>,
    /// The file's body segments, synced before each of redb's syncs: a durable commit
    /// must not point at bodies a power cut could lose.
    bodies: Option<Arc<super::bodies::Bodies>>,
}

impl<B> SpaceBackend<B> {
    pub fn new(inner: B, space: Arc<Space>) -> Self {
        SpaceBackend { inner, space, bodies: None }
    }

    pub fn with_bodies(self, bodies: Option<Arc<super::bodies::Bodies>>) -> Self {
        SpaceBackend { bodies, ..self }
    }

    /// Runs `op`, a write or a length change of `len` bytes; while it finds the filesystem
    /// full, again after giving it some of the room held for this file. An error that
    /// remains is kept for [`Space::explain`].
    fn watch<T>(&self, len: u64, op: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
        loop {
            let result = op();
            match &result {
                Err(e) if io_no_space(e) && self.space.release_room(len) => continue,
                _ => return self.keep(result),
            }
        }
    }

    /// Keeps the error of `result`, if any, for [`Space::explain`].
    fn keep<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            self.space.record(e);
        }
        result
    }
}

impl<B: StorageBackend> StorageBackend for SpaceBackend<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.keep(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.watch(0, || self.inner.set_len(len))
    }

    fn sync_data(&self) -> std::io::Result<()> {
        // Never tried again: after a failed sync the kernel may have dropped the data it
        // could not write, and a second sync would report success all the same.
        if let Some(bodies) = &self.bodies {
            self.keep(bodies.sync())?;
        }
        self.keep(self.inner.sync_data())?;
        if let Some(bodies) = &self.bodies {
            bodies.redb_synced();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.watch(data.len() as u64, || self.inner.write(offset, data))
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    super::forward_range_locks!(inner);
}
