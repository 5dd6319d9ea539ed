//! `qrestore DIR NEWDEVICE [-m OLD=NEW ...]`: a working device made from a backup.
//!
//! The manifest is read and every copy checked against it (size, CRC-32) before anything
//! is written. Each file goes to its new place: the device file to NEWDEVICE, another
//! file where `-m` maps its old path, or else beside NEWDEVICE under its old name. None
//! of those may exist: a restore never overwrites a file. Each is copied under a
//! temporary name, given a new device identity (so that the restored device and the one
//! backed up can never take each other's files) and the new paths in its device list,
//! synced, and renamed into place, the device file last: until then there is no device.
//! A file's body segments go beside its new place, as `NEWPATH.bodies.N`, before it.

use super::DEVICE_COPY;
use crate::storage::files::{check_trust, new_name, sync_directory};
use crate::storage::records::{DeviceHeader, FileHeader, decode, encode, random_id};
use crate::storage::tables::{HEADER, UDL};
use qm_common::backup::{BACKUP_FORMAT, MANIFEST, Manifest, RestoreReport};
use qm_common::device::UdlEntry;
use qm_common::{Diagnostic, QmError, QmResult};
use redb::ReadableTable;
use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where each file of a backup goes.
struct Plan {
    manifest: Manifest,
    /// (copy in the backup, target, original path), the device file last.
    moves: Vec<(PathBuf, PathBuf, String)>,
    /// The body segments of each target: (copy in the backup, target).
    segments: HashMap<PathBuf, Vec<(PathBuf, PathBuf)>>,
}

/// Restores the backup in `dir` as the device `device`; `map` moves files (old path →
/// new path).
pub fn run(dir: &Path, device: &Path, map: &[(String, String)]) -> QmResult<RestoreReport> {
    let plan = plan(dir, device, map)?;
    let device_id = random_id();
    for (copy, target, _) in &plan.moves {
        for (segment, to) in plan.segments.get(target).into_iter().flatten() {
            place_segment(segment, to)?;
        }
        place(copy, target, device, device_id, &plan)?;
    }
    let files = plan
        .moves
        .iter()
        .map(|(_, target, original)| (original.clone(), target.display().to_string()))
        .collect();
    Ok(RestoreReport {
        device: device.display().to_string(),
        files,
        qspaces: plan.manifest.qspaces.clone(),
    })
}

fn refused(message: String) -> QmError {
    QmError::new(Diagnostic::InUse, message)
}

/// Reads and checks the backup, and decides where each file goes; writes nothing.
fn plan(dir: &Path, device: &Path, map: &[(String, String)]) -> QmResult<Plan> {
    let manifest = read_manifest(dir)?;
    let mut mapped: HashMap<&str, &str> = HashMap::new();
    for (old, new) in map {
        if !manifest.files.iter().any(|f| &f.original == old && f.name != DEVICE_COPY) {
            return Err(QmError::inval(format!(
                "-m {old}={new}: the backup holds no file of the device list named {old} (it \
                 holds: {})",
                manifest.files.iter().map(|f| f.original.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if !Path::new(new).is_absolute() {
            return Err(QmError::invalid("-m new path", new, "it must be an absolute path"));
        }
        mapped.insert(old, new);
    }
    let beside = device.parent().unwrap_or(Path::new("/"));
    let mut moves = Vec::new();
    let mut segments = HashMap::new();
    for file in &manifest.files {
        check_copy(dir, &file.name, file.bytes, &file.crc32)?;
        let target = match (file.name == DEVICE_COPY, mapped.get(file.original.as_str())) {
            (true, _) => device.to_path_buf(),
            (false, Some(new)) => PathBuf::from(new),
            (false, None) => beside.join(Path::new(&file.original).file_name().unwrap_or_default()),
        };
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(refused(format!(
                "{} exists: qrestore never overwrites a file; remove it, or give the file of \
                 {} another place with -m {}=NEWPATH",
                target.display(),
                file.original,
                file.original
            )));
        }
        if moves.iter().any(|(_, t, _): &(PathBuf, PathBuf, String)| t == &target) {
            return Err(QmError::inval(format!(
                "two files of the backup would go to {}; give one another place with -m",
                target.display()
            )));
        }
        segments.insert(target.clone(), plan_segments(dir, file, &target)?);
        moves.push((dir.join(&file.name), target, file.original.clone()));
    }
    // The device file goes last: until it is in place there is no device.
    moves.rotate_left(1);
    Ok(Plan { manifest, moves, segments })
}

/// The body segments of `file`, each checked, with where it goes beside `target`.
fn plan_segments(
    dir: &Path,
    file: &qm_common::backup::BackedUpFile,
    target: &Path,
) -> QmResult<Vec<(PathBuf, PathBuf)>> {
    let mut planned = Vec::new();
    for segment in &file.segments {
        check_copy(dir, &segment.name, segment.bytes, &segment.crc32)?;
        let to = crate::storage::bodies::segment_path(target, segment.number);
        if std::fs::symlink_metadata(&to).is_ok() {
            return Err(refused(format!(
                "{} exists: qrestore never overwrites a file, and it would put a body                  segment of {} there; remove it, or give the file another place with -m",
                to.display(),
                file.original
            )));
        }
        planned.push((dir.join(&segment.name), to));
    }
    Ok(planned)
}

fn read_manifest(dir: &Path) -> QmResult<Manifest> {
    super::check_dir(dir)?;
    let path = dir.join(MANIFEST);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return Err(QmError::not_found(format!(
                "{} holds no {MANIFEST}: it is not a backup, or one that did not finish \
                 (qbackup writes the manifest last); nothing was restored",
                dir.display()
            )));
        }
    };
    check_trust(&path, &meta)?;
    if meta.len() > 64 << 20 {
        return Err(QmError::inval(format!("{} is too large for a manifest", path.display())));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| QmError::system(format!("{}: {e}", path.display())))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        QmError::inval(format!("{} is not a backup manifest qm can read: {e}", path.display()))
    })?;
    if manifest.format != BACKUP_FORMAT {
        return Err(QmError::inval(format!(
            "{} has backup format {}; this qm reads format {BACKUP_FORMAT}",
            path.display(),
            manifest.format
        )));
    }
    if manifest.files.first().is_none_or(|f| f.name != DEVICE_COPY) {
        return Err(QmError::inval(format!(
            "{} does not list the device file first",
            path.display()
        )));
    }
    Ok(manifest)
}

/// A copy must be a plain file name in the backup, trusted, of the size and CRC-32 the
/// manifest gives.
fn check_copy(dir: &Path, name: &str, size: u64, crc32: &str) -> QmResult<()> {
    if name.contains('/') || name.starts_with('.') || name.is_empty() {
        return Err(QmError::inval(format!(
            "the manifest names a copy '{name}', which is not a file of the backup directory"
        )));
    }
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| {
        QmError::not_found(format!("{} is missing from the backup", path.display()))
    })?;
    check_trust(&path, &meta)?;
    let (bytes, crc) = super::checksum_file(&path)?;
    if bytes != size || format!("{crc:08x}") != crc32 {
        return Err(QmError::inval(format!(
            "{} is damaged: {bytes} bytes with CRC-32 {crc:08x}, the manifest says {size} \
             bytes with {crc32}; nothing was restored",
            path.display(),
        )));
    }
    Ok(())
}

/// Copies one body segment to `target` under a temporary name, syncs it and renames it
/// into place.
fn place_segment(copy: &Path, target: &Path) -> QmResult<()> {
    let temp = new_name(target);
    crate::storage::files::remove_leftover(&temp)?;
    copy_synced(copy, &temp)?;
    std::fs::rename(&temp, target)
        .map_err(|e| QmError::system(format!("{}: renaming into place: {e}", temp.display())))?;
    sync_directory(target)
}

/// Copies `copy` into a new file `to`, made for qm's user alone, synced.
fn copy_synced(copy: &Path, to: &Path) -> QmResult<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        QmError::system(format!("{}: {what}: {e}", to.display()))
    };
    let mut from = std::fs::File::open(copy).map_err(|e| fail("reading the copy", &e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| fail("creating", &e))?;
    std::io::copy(&mut from, &mut file).map_err(|e| fail("copying", &e))?;
    file.sync_all().map_err(|e| fail("syncing", &e))
}

/// Copies one file to its target under a temporary name, gives it its new identity and
/// paths, syncs it and renames it into place.
fn place(copy: &Path, target: &Path, device: &Path, device_id: u64, plan: &Plan) -> QmResult<()> {
    let temp = new_name(target);
    crate::storage::files::remove_leftover(&temp)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        QmError::system(format!("{}: {what}: {e}", temp.display()))
    };
    copy_synced(copy, &temp)?;
    let db = redb::Database::open(&temp).map_err(|e| fail("opening", &e))?;
    let txn = db.begin_write().map_err(|e| fail("writing", &e))?;
    {
        let mut header = txn.open_table(HEADER).map_err(|e| fail("writing", &e))?;
        if target == device {
            let old = header.get("header").map_err(|e| fail("reading", &e))?;
            let mut h: DeviceHeader =
                decode("header", old.ok_or_else(|| fail("reading", &"no header"))?.value())?;
            h.device_id = device_id;
            header.insert("header", encode(&h).as_slice()).map_err(|e| fail("writing", &e))?;
            drop(header);
            let mut udl = txn.open_table(UDL).map_err(|e| fail("writing", &e))?;
            let entries: Vec<UdlEntry> = udl
                .iter()
                .map_err(|e| fail("reading", &e))?
                .map(|item| {
                    let (_, v) = item.map_err(|e| fail("reading", &e))?;
                    decode::<UdlEntry>("UDL entry", v.value())
                })
                .collect::<QmResult<_>>()?;
            for mut entry in entries {
                entry.name = new_path(&entry, device, plan);
                udl.insert(entry.index, encode(&entry).as_slice())
                    .map_err(|e| fail("writing", &e))?;
            }
        } else {
            let h = FileHeader {
                magic: crate::storage::records::FILE_MAGIC.into(),
                format: crate::storage::records::FORMAT,
                device_id,
                device_path: device.display().to_string(),
            };
            header.insert("file", encode(&h).as_slice()).map_err(|e| fail("writing", &e))?;
        }
    }
    txn.commit().map_err(|e| fail("committing", &e))?;
    drop(db);
    std::fs::rename(&temp, target).map_err(|e| fail("renaming into place", &e))?;
    sync_directory(target)
}

/// The path a UDL entry names in the restored device.
fn new_path(entry: &UdlEntry, device: &Path, plan: &Plan) -> String {
    if entry.index == 0 {
        return device.display().to_string();
    }
    plan.moves
        .iter()
        .find(|(_, _, original)| *original == entry.name)
        .map_or(entry.name.clone(), |(_, target, _)| target.display().to_string())
}
