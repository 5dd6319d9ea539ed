//! The one place qm opens and creates its redb files (the device and the files its UDL
//! entries name).
//!
//! - Trust: a device holds threshold commands that qmd runs, and its files hold the
//!   messages it serves, so a file is used only when it is a regular file (not a symbolic
//!   link) owned by qmd's user or root and writable by its owner alone.
//! - Read before write: whether a file is qm's is decided without changing a byte of it
//!   (redb's magic number, then its header record, read while [`Overlay`] holds redb's own
//!   writes in memory); only then do those writes reach the file. A file qm refuses is left
//!   exactly as it was.
//! - Crash-atomic creation: a new file is built and committed under a temporary name in
//!   the same directory, then renamed into place, so its name never shows a half-made file;
//!   a retry removes the leftover of a creation that was cut short.
//! - Every file goes through [`fault::backend`], where tests inject crashes and power cuts,
//!   and through [`SpaceBackend`], which holds room for it against a disk that fills up (see
//!   [`space`]).
//! - A file redb has to repair (it was not closed cleanly) is said in the log.
//!
//! Opening takes a path and an `identify` check, and can be called again on the same path
//! to reopen a file (after an I/O error latched in redb, the `Database` must be dropped and
//! the file opened anew: [`super::handle::DbFile`]).

use super::fault;
use super::overlay::{Overlay, Release};
use super::space::{self, Space, SpaceBackend};
use qm_common::{Diagnostic, QmError, QmResult, trust};
use redb::{Builder, Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// redb's magic number: the first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Bytes of page cache redb keeps per open file (`qmd --cache-mib`).
static CACHE_SIZE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(64 << 20);

/// Sets the page cache of the files opened from now on.
pub fn set_cache_size(bytes: u64) {
    CACHE_SIZE.store(bytes, Ordering::Relaxed);
}

fn cache_size() -> usize {
    CACHE_SIZE.load(Ordering::Relaxed) as usize
}

/// Suffix of the temporary name a new file is built under.
const NEW_SUFFIX: &str = ".qm-new";

pub fn os_error(path: &Path, what: &str, e: impl std::fmt::Display) -> QmError {
    QmError::new(Diagnostic::Os, format!("cannot {what} {}: {e}", path.display()))
}

/// The temporary name `path` is built under.
pub fn new_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(NEW_SUFFIX);
    PathBuf::from(name)
}

/// Opens an existing file without following a symbolic link, and checks that qm may trust it.
fn open_trusted(path: &Path) -> QmResult<File> {
    // Looked at first so that a device node or a pipe is not even opened; the open file is
    // checked again, as the name may change in between.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        check_trust(path, &meta)?;
    }
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => symlink_refused(path),
        rustix::io::Errno::NOENT => {
            QmError::not_found(format!("{} does not exist", path.display()))
        }
        other => os_error(path, "open", std::io::Error::from(other)),
    })?;
    let file = File::from(fd);
    check_trust(path, &file.metadata().map_err(|e| os_error(path, "examine", e))?)?;
    Ok(file)
}

fn symlink_refused(path: &Path) -> QmError {
    QmError::new(
        Diagnostic::Denied,
        format!(
            "{} is a symbolic link; qm opens its files only under their own name (a link \
             could lead it to someone else's file): name the file itself",
            path.display()
        ),
    )
}

/// The trust rule: a regular file, owned by qmd's user or root, writable by its owner only.
pub fn check_trust(path: &Path, meta: &std::fs::Metadata) -> QmResult<()> {
    let shown = path.display();
    if meta.file_type().is_symlink() {
        return Err(symlink_refused(path));
    }
    if !meta.file_type().is_file() {
        return Err(QmError::new(
            Diagnostic::Denied,
            format!("{shown} is not a regular file; a qm device or device list entry must be one"),
        ));
    }
    if !trust::is_trusted_user(meta.uid()) {
        return Err(QmError::new(
            Diagnostic::Denied,
            format!(
                "{shown} belongs to {}, not to {}; qm runs the commands its device holds, so \
                 it uses only its own files: chown {} {shown}, or use another file",
                trust::describe_user(meta.uid()),
                trust::trusted_users(),
                trust::euid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(QmError::new(
            Diagnostic::Denied,
            format!(
                "{shown} has mode {}: users other than its owner may write to it, and qm runs \
                 the commands its device holds; chmod go-w {shown}",
                trust::mode_text(meta.mode())
            ),
        ));
    }
    Ok(())
}

/// The refusal of a file that is not qm's: what it is, and that it was left alone.
fn not_ours(path: &Path, what: &str) -> QmError {
    QmError::inval(format!(
        "{} exists but is not a qm file ({what}); it was left unchanged: remove it or choose \
         another name",
        path.display()
    ))
}

fn refused_open(path: &Path, e: redb::DatabaseError) -> QmError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => QmError::in_use(format!(
            "{} is in use by another process (another qmd?)",
            path.display()
        )),
        other => unreadable(path, other),
    }
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> QmError {
    QmError::inval(format!(
        "{} is a redb database that cannot be read ({e}); it was left unchanged: restore it \
         from a copy, or remove it",
        path.display()
    ))
}

/// Reads redb's magic number; refuses a file that is empty or is not a redb database.
fn check_magic(path: &Path, file: &File) -> QmResult<()> {
    let mut magic = [0u8; REDB_MAGIC.len()];
    let len = file.metadata().map_err(|e| os_error(path, "examine", e))?.len();
    if len == 0 {
        return Err(QmError::inval(format!(
            "{} is empty, not a qm file; remove it (crdl creates the file)",
            path.display()
        )));
    }
    if len < magic.len() as u64 || file.read_exact_at(&mut magic, 0).is_err() || magic != REDB_MAGIC
    {
        return Err(not_ours(path, "not a redb database"));
    }
    Ok(())
}

/// How long an open waits for another process to let go of a file: a qmd that was just
/// stopped releases its lock file before its last handle on the device, and lets go of that
/// within moments. Kept short, as the store is locked meanwhile.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// Runs `open` until the file is not held by another process any more, or `BUSY_WAIT`
/// has passed.
fn unless_busy<T>(
    mut open: impl FnMut() -> Result<T, redb::DatabaseError>,
) -> Result<T, redb::DatabaseError> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match open() {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens an existing file of qm's: `identify` reads its header and says whether it is the
/// file expected (an error refuses it). Until it says so, redb's writes are held in memory
/// ([`Overlay`]): nothing is written to a file that is refused. Returns the database, what
/// `identify` found, and the file's [`Space`] (its disk reservation and I/O errors).
pub fn open<T>(
    path: &Path,
    identify: impl Fn(&ReadTransaction) -> QmResult<T>,
    bodies: &Arc<super::bodies::Bodies>,
) -> QmResult<(Database, T, Arc<Space>)> {
    let file = open_trusted(path)?;
    check_magic(path, &file)?;
    let space = Space::new(path, &file).map_err(|e| os_error(path, "examine", e))?;
    bodies.take_room_from(space.clone());
    space.count_bodies(bodies);
    let repaired = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let look = || -> QmResult<(Database, T, Release)> {
        let mut release = None;
        let db = unless_busy(|| {
            let backend = SpaceBackend::new(fault::backend(file.try_clone()?)?, space.clone())
                .with_bodies(Some(bodies.clone()));
            let (overlay, held) = Overlay::new(backend)?;
            release = Some(held);
            let seen = repaired.clone();
            Builder::new()
                .set_cache_size(cache_size())
                .set_repair_callback(move |_| seen.store(true, Ordering::Relaxed))
                .create_with_backend(overlay)
        })
        .map_err(|e| refused_open(path, e))?;
        let found = identify(&db.begin_read().map_err(|e| unreadable(path, e))?)?;
        Ok((db, found, release.expect("set by the open")))
    };
    // redb trusts what it reads and may panic on a damaged file: that is a refusal too.
    let (db, found, release) = catch_unwind(AssertUnwindSafe(look)).unwrap_or_else(|_| {
        Err(QmError::inval(format!(
            "{} is a damaged redb database; it was left unchanged: restore it from a copy, \
             or remove it",
            path.display()
        )))
    })?;
    // Refused before anything is written to the file.
    let txn = db.begin_read().map_err(|e| unreadable(path, e))?;
    crate::engine::segments::check_present(&crate::engine::segments::live_in(&txn)?, bodies)?;
    drop(txn);
    release.write_through().map_err(|e| space::io_failure(path, "write", &e))?;
    crate::engine::segments::cut_dead_tails(&db, bodies)?;
    if repaired.load(Ordering::Relaxed) {
        // Said so that an operator knows why the start took long, and a test that a clean
        // stop leaves nothing to repair.
        tracing::warn!(
            "{} was not closed cleanly (qmd was killed, crashed, or met an I/O error): redb \
             checked and repaired it in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok((db, found, space))
}

/// Creates a file whose first transaction `fill` writes, atomically: under `path` there is
/// either no file or the whole file. Refuses when `path` exists and is not empty.
pub fn create(path: &Path, fill: impl FnOnce(&WriteTransaction) -> QmResult<()>) -> QmResult<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(path)),
        Ok(m) if !m.file_type().is_file() || m.len() > 0 => {
            return Err(QmError::exists(format!(
                "{} already exists and is not an empty file; remove it first",
                path.display()
            )));
        }
        _ => {}
    }
    let temp = new_name(path);
    remove_leftover(&temp)?;
    let built = build(&temp, path, fill);
    if built.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    built?;
    fault::step();
    std::fs::rename(&temp, path).map_err(|e| space::io_failure(path, "create", &e))?;
    sync_directory(path)
}

/// Removes what a creation cut short left under the temporary name, if qm made it.
pub fn remove_leftover(temp: &Path) -> QmResult<()> {
    let meta = match std::fs::symlink_metadata(temp) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(os_error(temp, "examine", e)),
    };
    if !meta.file_type().is_file() || meta.uid() != trust::euid() {
        return Err(QmError::exists(format!(
            "{} exists and is not a file qm left: qm builds new files under that name; \
             remove it",
            temp.display()
        )));
    }
    tracing::info!("removing {}, left by a creation that was cut short", temp.display());
    std::fs::remove_file(temp).map_err(|e| os_error(temp, "remove", e))
}

/// Makes the whole new file under `temp` and commits it. A full filesystem is said so,
/// naming `path` (the name the file is made for).
fn build(
    temp: &Path,
    path: &Path,
    fill: impl FnOnce(&WriteTransaction) -> QmResult<()>,
) -> QmResult<()> {
    fault::step();
    let file = create_private(temp)
        .map_err(|e| space::io_failure(path, "create", &std::io::Error::from(e)))?;
    let space = Space::new(path, &file).map_err(|e| os_error(temp, "create", e))?;
    let what =
        |e: &dyn std::fmt::Display| space.explain(&format!("cannot write {}", temp.display()), e);
    let backend = SpaceBackend::new(
        fault::backend(file).map_err(|e| os_error(temp, "create", e))?,
        space.clone(),
    );
    let db = Builder::new().create_with_backend(backend).map_err(|e| what(&e))?;
    let mut txn = db.begin_write().map_err(|e| what(&e))?;
    quick_repair(&mut txn);
    fill(&txn)?;
    txn.commit().map_err(|e| what(&e))?;
    db.close().map_err(|e| what(&e))
}

/// Creates a new file at `path` for qm's user alone (0600), never one that was there and
/// never through a symbolic link.
pub fn create_private(path: &Path) -> rustix::io::Result<File> {
    let flags = OFlags::RDWR
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)).map(File::from)
}

/// Makes a rename or creation in `path`'s directory durable.
pub fn sync_directory(path: &Path) -> QmResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fault::step();
    let fd =
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| os_error(dir, "open", std::io::Error::from(e)))?;
    rustix::fs::fsync(&fd).map_err(|e| space::io_failure(dir, "sync", &std::io::Error::from(e)))
}

/// Makes a durable commit record redb's allocator state (and commit in two phases), so
/// that opening the file after a crash does not walk every table to rebuild it: seconds
/// per gigabyte otherwise (BENCHMARKS.md, "At depth"). Only durable commits do it; the
/// journaled ones are not what a crash goes back to.
pub fn quick_repair(txn: &mut redb::WriteTransaction) {
    txn.set_quick_repair(true);
}
