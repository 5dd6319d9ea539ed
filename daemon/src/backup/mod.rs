//! `qbackup`: an online, consistent copy of a whole device, and `qrestore`.
//!
//! **The snapshot.** What each file's journal holds is applied to redb first, outside any
//! pause. Then, with every file's journal held at once (so no group of writes is committed
//! meanwhile, in any file), each file gets a checkpoint, which makes the rest durable in
//! redb itself, and is *held* ([`DbFile::hold`]): from then on redb writes nothing to it
//! until its copy is made. Then the journals go: writers were held only for the
//! checkpoints, and the time is measured (the manifest's `longest_pause_us`; its
//! `longest_writer_pause_us` is the longest any writer paused over the whole backup, for
//! whatever reason, disk syncs included). A transaction
//! is one group, in one file: it is in the snapshot whole or not at all.
//!
//! **The copies.** Each held file is copied as bytes (`copy_file_range`) into the backup
//! directory, written out and synced, and then let go; meanwhile writers of messages go on
//! into the journal, which grows until the hold ends. A file that had to be opened again
//! during its copy (an I/O error) fails the backup. Each copy is opened once by redb, which
//! finds it as a crash would leave the file and recovers its last commit (the checkpoint)
//! from the allocator state recorded with it. The copies are then checked as `qverify`
//! checks a device ([`crate::verify`]), their CRC-32s taken, and the manifest written last,
//! under a temporary name renamed into place: a directory without `manifest.json` holds a
//! backup that did not finish, and `qrestore` refuses it.

pub mod copy;
pub mod restore;

use crate::storage::Device;
use crate::storage::bodies::Bodies;
use crate::storage::device::{device_header_in, file_header_in, qspaces_in, udl_in, vtoc_in};
use crate::storage::handle::{Db, DbFile, Hold};
use crate::storage::records::QueueSpaceRecord;
use crate::verify::Source;
use qm_common::backup::{
    BACKUP_FORMAT, BackedUpFile, BackedUpSegment, BackupReport, MANIFEST, Manifest,
};
use qm_common::device::{UdlEntry, VtocEntry};
use qm_common::{Diagnostic, QmError, QmResult};
use redb::{ReadTransaction, ReadableDatabase};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cache redb keeps for each copy, read once to check it.
const COPY_CACHE: usize = 64 << 20;
/// Bytes copied between two requests to write the copy out (and two progress reports).
/// Each step's write-out is waited for once the next step's has begun, so the disk never
/// has more than about two steps of the copy to write: a writer's `fdatasync` of its
/// journal waits behind what the disk has queued, and queued without a bound, the copy
/// held writers up for most of a second when it was synced at the end.
const COPY_STEP: u64 = 8 << 20;

/// The name of the device file's copy in a backup directory; the other files are
/// `file-N.qm`, N the first UDL entry on them.
pub const DEVICE_COPY: &str = "device.qm";

/// One file at the moment of the snapshot, held unchanged until it is copied.
struct Cut {
    /// The file as the device names it.
    original: String,
    name: String,
    file: Arc<DbFile>,
    /// The database the snapshot checkpointed: the same one must be open after the copy.
    db: Db,
    /// Dropped once the copy is made: the file is let go.
    _hold: Hold,
    /// Journal groups the snapshot's checkpoint made durable in the file.
    groups: u64,
    /// Its body segments at the snapshot (number, path, length): what the copy points into.
    segments: Vec<(u32, PathBuf, u64)>,
}

/// Backs `device` up into `dir` (absolute, new or empty). `progress` is told bytes copied
/// of about how many.
pub fn run(device: &Device, dir: &Path, progress: &dyn Fn(u64, u64)) -> QmResult<BackupReport> {
    let started = Instant::now();
    prepare_dir(dir)?;
    // Measured from here: what the snapshot and the copies do to writers.
    crate::engine::writer::longest_turn();
    let files = device_files(device)?;
    // Until the manifest is written: the snapshot may point into segments that die
    // before they are copied.
    let _pins: Vec<_> = files.iter().map(|(_, f)| f.bodies().pin()).collect();
    let (cuts, pause) = snapshot(&files)?;
    let segment_bytes: u64 = cuts.iter().flat_map(|c| &c.segments).map(|s| s.2).sum();
    let total = files.iter().map(|(_, f)| file_len(f.path())).sum::<u64>() + segment_bytes;
    let mut done = 0;
    let mut backed = Vec::new();
    for cut in cuts {
        let path = dir.join(&cut.name);
        copy_file(&cut, &path, &mut |bytes| progress((done + bytes).min(total), total))?;
        done += file_len(&path);
        let (name, segments) = (cut.name.clone(), cut.segments.clone());
        backed.push(BackedUpFile {
            original: cut.original.clone(),
            name: cut.name.clone(),
            bytes: 0,
            crc32: String::new(),
            records: 0,
            journal_groups: cut.groups,
            segments: Vec::new(),
        });
        drop(cut);
        recover_copy(&path)?;
        for (number, source, len) in segments {
            let copy = format!("{name}.bodies.{number}");
            let told = &mut |bytes: u64| progress((done + bytes).min(total), total);
            copy_bytes(&source, &dir.join(&copy), Some(len), told)?;
            done += len;
            let (bytes, crc32) = (0, String::new());
            let segment = BackedUpSegment { number, name: copy, bytes, crc32 };
            backed.last_mut().expect("pushed").segments.push(segment);
        }
    }
    progress(total, total);
    let copied = started.elapsed();
    // The copies are checked while their checksums are taken, on another thread: both
    // read every byte, and there are processors for both.
    let copies = Copies::open(dir, &backed, device.path())?;
    let segment_names = backed.iter().flat_map(|f| &f.segments).map(|s| dir.join(&s.name));
    let names: Vec<PathBuf> =
        backed.iter().map(|f| dir.join(&f.name)).chain(segment_names).collect();
    let (report, sums) = std::thread::scope(|s| {
        let sums = s.spawn(|| names.iter().map(|p| checksum_file(p)).collect::<QmResult<Vec<_>>>());
        let report = crate::verify::device(&copies, None, &|_, _| {});
        let sums = sums.join().unwrap_or_else(|_| Err(QmError::system("backup: checksums failed")));
        (report, sums)
    });
    let (report, sums) = (report?, sums?);
    drop(copies);
    if !report.problems.is_empty() {
        let first = &report.problems.listed[0];
        return Err(QmError::system(format!(
            "the backup in {} did not pass its check ({} problems; first: {}: {}); it was \
             left without a manifest, as incomplete",
            dir.display(),
            report.problems.count(),
            first.place,
            first.what
        )));
    }
    let mut sums = sums.into_iter();
    for file in &mut backed {
        let (bytes, crc) = sums.next().expect("one for each file");
        file.bytes = bytes;
        file.crc32 = format!("{crc:08x}");
    }
    for segment in backed.iter_mut().flat_map(|f| &mut f.segments) {
        let (bytes, crc) = sums.next().expect("one for each segment");
        segment.bytes = bytes;
        segment.crc32 = format!("{crc:08x}");
    }
    tracing::info!(
        "backup of {} into {}: copied in {} ms (writers held {} µs), checked and summed in {} ms",
        device.path().display(),
        dir.display(),
        copied.as_millis(),
        pause.as_micros(),
        (started.elapsed() - copied).as_millis(),
    );
    let manifest = Manifest {
        format: BACKUP_FORMAT,
        qm_version: env!("CARGO_PKG_VERSION").to_string(),
        taken: crate::storage::records::now_secs(),
        device: device.path().display().to_string(),
        page_size: device.page_size(),
        files: backed,
        qspaces: report.qspaces,
        longest_pause_us: pause.as_micros() as u64,
        longest_writer_pause_us: crate::engine::writer::longest_turn().as_micros() as u64,
    };
    write_manifest(dir, &manifest)?;
    Ok(BackupReport {
        dir: dir.display().to_string(),
        manifest,
        millis: started.elapsed().as_millis() as u64,
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn io(path: &Path, what: &str, e: std::io::Error) -> QmError {
    QmError::system(format!("{}: {what}: {e}", path.display()))
}

/// The backup directory: made (0700) when missing; an existing one must be an empty
/// directory of ours that others may not write to.
fn prepare_dir(dir: &Path) -> QmResult<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, "cannot create the backup directory", e));
        }
        Err(e) => return Err(io(dir, "cannot look at the backup directory", e)),
        Ok(_) => check_dir(dir)?,
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| io(dir, "cannot read", e))?;
    if let Some(Ok(entry)) = entries.next() {
        return Err(QmError::new(
            Diagnostic::InUse,
            format!(
                "{} is not empty (it holds {}): qbackup writes only into a new or empty \
                 directory, so that it never mixes with or overwrites another backup",
                dir.display(),
                entry.file_name().to_string_lossy()
            ),
        ));
    }
    Ok(())
}

/// A backup directory must be a directory (not a link to one) of qm's user that others
/// cannot change: one they could would let them swap a copy or the manifest between its
/// check and its use.
pub fn check_dir(dir: &Path) -> QmResult<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| io(dir, "cannot look at the backup directory", e))?;
    if !meta.is_dir() {
        return Err(QmError::inval(format!(
            "{} is not a directory: a backup is a directory of files",
            dir.display()
        )));
    }
    if !qm_common::trust::is_trusted_user(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(QmError::new(
            Diagnostic::Denied,
            format!(
                "{} may be written by other users (owner {}, mode {:04o}); a backup goes only \
                 into, and is restored only from, a directory of qm's user that others cannot \
                 change",
                dir.display(),
                qm_common::trust::describe_user(meta.uid()),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The files of the device, the device file first, each with its name in the backup.
fn device_files(device: &Device) -> QmResult<Vec<(String, Arc<DbFile>)>> {
    let device_path = device.path().display().to_string();
    let mut files = vec![(DEVICE_COPY.to_string(), device.file_db(&device_path)?)];
    let mut seen = vec![device_path];
    for entry in device.udl()? {
        if entry.index == 0 || seen.contains(&entry.name) {
            continue;
        }
        files.push((format!("file-{}.qm", entry.index), device.file_db(&entry.name)?));
        seen.push(entry.name);
    }
    Ok(files)
}

/// Takes the snapshot of every file at one moment (see the module's comment); the time
/// writers were held.
fn snapshot(files: &[(String, Arc<DbFile>)]) -> QmResult<(Vec<Cut>, Duration)> {
    // Applied outside the pause, so that the checkpoints in it have little left to apply.
    for (_, file) in files {
        file.settle()?;
    }
    let dbs = files.iter().map(|(_, f)| f.get()).collect::<QmResult<Vec<_>>>()?;
    let held = Instant::now();
    let mut journals: Vec<_> = files.iter().map(|(_, f)| f.journal()).collect();
    let mut cuts = Vec::new();
    for (((name, file), db), journal) in files.iter().zip(dbs).zip(&mut journals) {
        let Some(journal) = journal.as_mut() else {
            return Err(QmError::system(format!(
                "{}: its journal is not open (the file is down); try again",
                file.path().display()
            )));
        };
        let groups = journal.written();
        crate::storage::journal::checkpoint(&db, journal)?;
        let hold = file.hold();
        let original = file.path().display().to_string();
        // Nothing is appended while the file is held: these lengths cover every body the
        // checkpoint points at.
        let segments = file.bodies().list();
        cuts.push(Cut {
            original,
            name: name.clone(),
            file: file.clone(),
            db,
            _hold: hold,
            groups,
            segments,
        });
    }
    drop(journals);
    Ok((cuts, held.elapsed()))
}

/// Copies the bytes of one held file of the snapshot into a new file at `path`, synced
/// when it returns.
fn copy_file(cut: &Cut, path: &Path, progress: &mut dyn FnMut(u64)) -> QmResult<()> {
    let source = cut.file.path();
    copy_bytes(source, path, None, progress)?;
    // Opened again meanwhile (after an I/O error), the file was written by its recovery.
    if !cut.file.get().is_ok_and(|now| now.same_as(&cut.db)) {
        return Err(QmError::system(format!(
            "{} had an I/O error while it was copied; the backup was left incomplete",
            source.display()
        )));
    }
    Ok(())
}

/// Copies the first `len` bytes of `source` (all of it when `None`) into a new file at
/// `path`, synced when it returns.
fn copy_bytes(
    source: &Path,
    path: &Path,
    len: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> QmResult<()> {
    let from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(source)
        .map_err(|e| io(source, "cannot open", e))?;
    // Made here, for qm's user alone; never a file that was there.
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io(path, "cannot create", e))?;
    let len = match len {
        Some(len) => len,
        None => from.metadata().map_err(|e| io(source, "cannot look at", e))?.len(),
    };
    let slowly = crate::storage::fault::copies_slowly();
    let piece = if slowly { 64 << 10 } else { COPY_STEP };
    let mut copied = 0u64;
    let fd = to.as_raw_fd();
    while copied < len {
        if slowly && copied > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let step = (len - copied).min(piece) as usize;
        // SAFETY: both descriptors are open files held here; null offsets mean each
        // file's own position, which the call advances.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                step,
                0,
            )
        };
        if n < 0 {
            return Err(io(path, "cannot copy into", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err(QmError::system(format!(
                "{}: ended at {copied} bytes of {len} while it was copied",
                source.display()
            )));
        }
        let start = copied as i64;
        copied += n as u64;
        // The disk writes this step while the next is copied; the step before it must be
        // written by then (see COPY_STEP). Failures show at the sync below.
        // SAFETY: write-out requests for ranges of a file held open here; no memory is
        // passed.
        unsafe {
            libc::sync_file_range(fd, start, n as i64, libc::SYNC_FILE_RANGE_WRITE);
            if start > 0 {
                let before = start.saturating_sub(piece as i64);
                let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                libc::sync_file_range(fd, before, start - before, wait);
            }
        }
        progress(copied);
    }
    to.sync_all().map_err(|e| io(path, "cannot sync", e))?;
    Ok(())
}

/// Opens a copy once with redb, which recovers the checkpoint it holds (as after a crash,
/// from the allocator state the checkpoint recorded) and closes it cleanly, so that it
/// can then be checked read-only.
fn recover_copy(path: &Path) -> QmResult<()> {
    let db = redb::Builder::new().set_cache_size(COPY_CACHE).open(path).map_err(|e| {
        QmError::system(format!("backup: {}: the copy cannot be opened: {e}", path.display()))
    })?;
    drop(db);
    Ok(())
}

/// The size and CRC-32 of a whole file.
fn checksum_file(path: &Path) -> QmResult<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| io(path, "cannot open", e))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, "cannot read", e))?;
        if n == 0 {
            return Ok((bytes, crc.finalize()));
        }
        crc.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Writes the manifest under a temporary name, syncs it and renames it into place.
fn write_manifest(dir: &Path, manifest: &Manifest) -> QmResult<()> {
    use std::io::Write;
    let temp = dir.join(format!("{MANIFEST}.partial"));
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| QmError::system(format!("backup: the manifest: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|e| io(&temp, "cannot create", e))?;
    file.write_all(text.as_bytes()).map_err(|e| io(&temp, "cannot write", e))?;
    file.sync_all().map_err(|e| io(&temp, "cannot sync", e))?;
    std::fs::rename(&temp, &path).map_err(|e| io(&path, "cannot rename into place", e))?;
    crate::storage::files::sync_directory(&path)
}

/// The copies in a backup directory, opened read-only, seen as the device they copy (for
/// [`crate::verify`]): files are named as the device names them.
pub struct Copies {
    device: String,
    device_id: u64,
    page_size: u32,
    /// By the name the device gives the file: the copy, and its body segments.
    files: HashMap<String, (PathBuf, redb::ReadOnlyDatabase, Bodies)>,
}

impl Copies {
    pub fn open(dir: &Path, files: &[BackedUpFile], device: &Path) -> QmResult<Copies> {
        let mut opened = HashMap::new();
        for f in files {
            let path = dir.join(&f.name);
            let db = redb::Builder::new().set_cache_size(COPY_CACHE).open_read_only(&path);
            let db = db.map_err(|e| {
                QmError::system(format!("{}: cannot be opened: {e}", path.display()))
            })?;
            let bodies = Bodies::open(&path).map_err(|e| {
                QmError::system(format!("{}: its body segments: {e}", path.display()))
            })?;
            opened.insert(f.original.clone(), (path, db, bodies));
        }
        let device_name = device.display().to_string();
        let (path, db, _) = opened.get(&device_name).ok_or_else(|| {
            QmError::system(format!("the backup has no copy of the device file {device_name}"))
        })?;
        let txn = db.begin_read().map_err(|e| QmError::system(format!("reading: {e}")))?;
        let header = device_header_in(path, &txn)?;
        drop(txn);
        Ok(Copies {
            device: device_name,
            device_id: header.device_id,
            page_size: header.page_size,
            files: opened,
        })
    }

    fn txn(&self, file: &str) -> QmResult<(PathBuf, ReadTransaction)> {
        let (path, db, _) = self
            .files
            .get(file)
            .ok_or_else(|| QmError::not_found(format!("the backup holds no copy of {file}")))?;
        let txn = db
            .begin_read()
            .map_err(|e| QmError::system(format!("{}: reading: {e}", path.display())))?;
        Ok((path.clone(), txn))
    }

    fn device_txn(&self) -> QmResult<ReadTransaction> {
        self.txn(&self.device).map(|(_, t)| t)
    }
}

impl Source for Copies {
    fn name(&self) -> String {
        self.device.clone()
    }

    fn page_size(&self) -> u32 {
        self.page_size
    }

    fn udl(&self) -> QmResult<Vec<UdlEntry>> {
        udl_in(&self.device_txn()?)
    }

    fn vtoc(&self) -> QmResult<Vec<VtocEntry>> {
        vtoc_in(&self.device_txn()?)
    }

    fn qspaces(&self) -> QmResult<Vec<QueueSpaceRecord>> {
        qspaces_in(&self.device_txn()?)
    }

    fn file_of(&self, entry: &UdlEntry) -> String {
        if entry.index == 0 { self.device.clone() } else { entry.name.clone() }
    }

    fn open(&self, file: &str) -> QmResult<()> {
        let (path, txn) = self.txn(file)?;
        if file == self.device {
            return device_header_in(&path, &txn).map(drop);
        }
        file_header_in(&path, self.device_id, &txn).map(drop)
    }

    fn read(&self, file: &str, f: &mut dyn FnMut(&ReadTransaction, &Bodies)) -> QmResult<()> {
        let (_, txn) = self.txn(file)?;
        let (_, _, bodies) = &self.files[file];
        f(&txn, bodies);
        Ok(())
    }
}
