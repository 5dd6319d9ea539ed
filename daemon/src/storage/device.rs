//! A device: the redb file named by `QMCONFIG` and the other files its UDL entries name.
//!
//! This type is mechanism only: it reads and writes records in transactions. What may be
//! written (overlaps, limits, attachments) is decided by the admin handlers that call it.

use super::files;
use super::records::{
    DEVICE_MAGIC, DeviceHeader, FILE_MAGIC, FORMAT, FileHeader, QueueSpaceRecord, decode, encode,
    now_secs,
};
use super::tables::{HEADER, QSPACES, QueueSpaceTables, UDL, VTOC};
use qm_common::device::{UdlEntry, VtocEntry};
use qm_common::{Diagnostic, QmError, QmResult};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::engine::writer::Writer;

/// Which file a path names right now: device and inode numbers (of a symbolic link itself,
/// never of what it points to: qm does not follow links to its files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub fn of(path: &Path) -> Option<FileIdentity> {
        std::fs::symlink_metadata(path).ok().map(|m| FileIdentity { dev: m.dev(), ino: m.ino() })
    }
}

/// Maps any redb failure to a system error that says what was being done.
pub fn storage_error(what: &str, e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("{what}: {e}"))
}

/// An open database together with the file it was opened from.
struct DataFile {
    db: Arc<Database>,
    identity: Option<FileIdentity>,
}

/// An open device.
pub struct Device {
    path: PathBuf,
    db: Arc<Database>,
    /// Group-commit writers, one per open database, started on first use.
    writers: Mutex<Vec<(Arc<Database>, Arc<Writer>)>>,
    identity: Option<FileIdentity>,
    header: DeviceHeader,
    /// Other files named by UDL entries, opened on first use.
    files: Mutex<HashMap<String, DataFile>>,
}

/// Reads one record of the header table; `None` when the file has none.
fn read_header<T: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    key: &str,
) -> QmResult<Option<T>> {
    let table = match txn.open_table(HEADER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(storage_error("reading header", e)),
    };
    match table.get(key).map_err(|e| storage_error("reading header", e))? {
        Some(v) => decode("header", v.value()).map(Some),
        None => Ok(None),
    }
}

/// The check that `path` is a qm device this qmd reads, on its header.
fn identify_device(path: &Path, txn: &ReadTransaction) -> QmResult<DeviceHeader> {
    let header: DeviceHeader = read_header(txn, "header")
        .ok()
        .flatten()
        .filter(|h: &DeviceHeader| h.magic == DEVICE_MAGIC)
        .ok_or_else(|| {
            let what = match read_header::<FileHeader>(txn, "file") {
                Ok(Some(h)) => format!(
                    "it is another file of the qm device {}, not a device",
                    h.device_path
                ),
                _ => "a redb database but not a qm device".to_string(),
            };
            QmError::inval(format!(
                "{} exists but is not a qm device ({what}); it was left unchanged: remove it or choose another name",
                path.display()
            ))
        })?;
    if header.format != FORMAT {
        return Err(QmError::inval(format!(
            "{} has device format {}, this qmd reads format {FORMAT}",
            path.display(),
            header.format
        )));
    }
    Ok(header)
}

/// The check that `path` is a file of the device `device_id`, on its header.
fn identify_file(path: &Path, device_id: u64, txn: &ReadTransaction) -> QmResult<FileHeader> {
    match read_header::<FileHeader>(txn, "file").ok().flatten() {
        Some(h) if h.magic == FILE_MAGIC && h.device_id == device_id => Ok(h),
        Some(h) => Err(QmError::new(
            Diagnostic::InUse,
            format!(
                "{} belongs to another qm device ({}); it was left unchanged",
                path.display(),
                h.device_path
            ),
        )),
        None => {
            let what = match read_header::<DeviceHeader>(txn, "header") {
                Ok(Some(_)) => "it is the device file of another qm device",
                _ => "a redb database, not one of qm's",
            };
            Err(QmError::inval(format!(
                "{} exists but is not a qm file ({what}); it was left unchanged: remove it or choose another name",
                path.display()
            )))
        }
    }
}

fn is_empty_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).map(|m| m.is_file() && m.len() == 0).unwrap_or(false)
}

fn new_device_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

impl Device {
    /// Creates a new device file holding entry 0 and the VTOC/UDL tables. The file appears
    /// under `path` whole or not at all (see [`files::create`]).
    pub fn create(
        path: &Path,
        entry0: UdlEntry,
        vtoc: &[VtocEntry],
        page_size: u32,
    ) -> QmResult<Device> {
        let header = DeviceHeader {
            magic: DEVICE_MAGIC.into(),
            format: FORMAT,
            page_size,
            device_id: new_device_id(),
            created: now_secs(),
        };
        files::create(path, |txn| {
            let mut h = txn.open_table(HEADER).map_err(|e| storage_error("creating device", e))?;
            h.insert("header", encode(&header).as_slice())
                .map_err(|e| storage_error("creating device", e))?;
            drop(h);
            put_udl(txn, &entry0)?;
            for table in vtoc {
                put_vtoc(txn, table)?;
            }
            txn.open_table(QSPACES).map_err(|e| storage_error("creating device", e))?;
            Ok(())
        })?;
        Device::open(path)
    }

    /// Opens an existing device file; a file that is not a qm device is left unchanged.
    pub fn open(path: &Path) -> QmResult<Device> {
        let (db, header) = files::open(path, |txn| identify_device(path, txn))?;
        Ok(Device {
            path: path.to_path_buf(),
            identity: FileIdentity::of(path),
            db: Arc::new(db),
            writers: Mutex::new(Vec::new()),
            header,
            files: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn page_size(&self) -> u32 {
        self.header.page_size
    }

    /// False once the device path was deleted or now names another file.
    pub fn is_current(&self) -> bool {
        self.identity.is_some() && FileIdentity::of(&self.path) == self.identity
    }

    /// Whether `db` is the device file's own database.
    pub fn holds(&self, db: &Arc<Database>) -> bool {
        Arc::ptr_eq(db, &self.db)
    }

    /// Runs `f` in one write transaction of the device file and commits it.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> QmResult<T>) -> QmResult<T> {
        write_in(&self.db, f)
    }

    /// Runs `f` in a read transaction of the device file.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> QmResult<T>) -> QmResult<T> {
        let txn = self.db.begin_read().map_err(|e| storage_error("reading device", e))?;
        f(&txn)
    }

    pub fn udl(&self) -> QmResult<Vec<UdlEntry>> {
        self.read(|txn| {
            let table = txn.open_table(UDL).map_err(|e| storage_error("reading UDL", e))?;
            collect(table.iter().map_err(|e| storage_error("reading UDL", e))?, "UDL entry")
        })
    }

    pub fn vtoc(&self) -> QmResult<Vec<VtocEntry>> {
        self.read(|txn| {
            let table = txn.open_table(VTOC).map_err(|e| storage_error("reading VTOC", e))?;
            collect(table.iter().map_err(|e| storage_error("reading VTOC", e))?, "VTOC entry")
        })
    }

    pub fn qspaces(&self) -> QmResult<Vec<QueueSpaceRecord>> {
        self.read(|txn| {
            let table =
                txn.open_table(QSPACES).map_err(|e| storage_error("reading queue spaces", e))?;
            collect(
                table.iter().map_err(|e| storage_error("reading queue spaces", e))?,
                "queue space",
            )
        })
    }

    pub fn qspace(&self, name: &str) -> QmResult<Option<QueueSpaceRecord>> {
        self.read(|txn| {
            let table =
                txn.open_table(QSPACES).map_err(|e| storage_error("reading queue spaces", e))?;
            match table.get(name).map_err(|e| storage_error("reading queue spaces", e))? {
                Some(v) => decode("queue space", v.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    /// True when `name` is the device file itself (by path, or by entry 0's recorded name).
    fn is_device_file(&self, name: &str, entry0: Option<&str>) -> bool {
        Path::new(name) == self.path || entry0 == Some(name)
    }

    /// The database holding the tables of a file named by a UDL entry. The file must exist
    /// and belong to this device: a file that was moved or removed is reported, never
    /// silently created again empty.
    pub fn file_db(&self, name: &str) -> QmResult<Arc<Database>> {
        self.data_file(name, false)
    }

    /// Like [`Device::file_db`], but creates the file when it does not exist yet (`crdl`,
    /// `chdl` of an entry that holds nothing).
    pub fn create_file_db(&self, name: &str) -> QmResult<Arc<Database>> {
        self.data_file(name, true)
    }

    /// The database of a file and its group-commit writer.
    pub fn file(&self, name: &str) -> QmResult<(Arc<Database>, Arc<Writer>)> {
        let db = self.file_db(name)?;
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // A database only the list and its writer still hold was closed: let both go.
        writers.retain(|(d, _)| Arc::ptr_eq(d, &db) || Arc::strong_count(d) > 2);
        if let Some((_, w)) = writers.iter().find(|(d, _)| Arc::ptr_eq(d, &db)) {
            return Ok((db, w.clone()));
        }
        let writer = Writer::start(db.clone(), name)?;
        writers.push((db.clone(), writer.clone()));
        Ok((db, writer))
    }

    fn data_file(&self, name: &str, create: bool) -> QmResult<Arc<Database>> {
        let entry0 = self.udl()?.into_iter().find(|e| e.index == 0).map(|e| e.name);
        if self.is_device_file(name, entry0.as_deref()) {
            return Ok(self.db.clone());
        }
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let path = Path::new(name);
        let identity = FileIdentity::of(path);
        // A cached file whose path now names another file (or none) stays cached: it may
        // have been moved, and is found again by its identity below.
        if let Some(file) = files.get(name)
            && file.identity.is_some()
            && identity == file.identity
        {
            return Ok(file.db.clone());
        }
        // A file this daemon already has open, now under another name: it was moved (and
        // `chdl` follows the move). Opening it a second time would fail on redb's lock.
        if let Some(moved) = identity
            .and_then(|id| files.values().find(|f| f.identity == Some(id)).map(|f| f.db.clone()))
        {
            files.insert(name.to_string(), DataFile { db: moved.clone(), identity });
            return Ok(moved);
        }
        let db = self.open_file(path, create)?;
        files.insert(
            name.to_string(),
            DataFile { db: db.clone(), identity: FileIdentity::of(path) },
        );
        Ok(db)
    }

    fn open_file(&self, path: &Path, create: bool) -> QmResult<Arc<Database>> {
        let exists = std::fs::symlink_metadata(path).is_ok();
        if !exists || is_empty_file(path) {
            if !create {
                return Err(QmError::not_found(format!(
                    "{} is missing or empty: the file of a device list entry was moved or removed; put it back, or rename the entry with chdl",
                    path.display()
                )));
            }
            let header = FileHeader {
                magic: FILE_MAGIC.into(),
                format: FORMAT,
                device_id: self.header.device_id,
                device_path: self.path.display().to_string(),
            };
            files::create(path, |txn| {
                let mut t =
                    txn.open_table(HEADER).map_err(|e| storage_error("writing header", e))?;
                t.insert("file", encode(&header).as_slice())
                    .map_err(|e| storage_error("writing header", e))?;
                Ok(())
            })?;
        }
        let device_id = self.header.device_id;
        let (db, _) = files::open(path, |txn| identify_file(path, device_id, txn))?;
        Ok(Arc::new(db))
    }

    /// Closes and deletes another file of the device (never the device file itself).
    pub fn remove_file(&self, name: &str) -> QmResult<()> {
        if Path::new(name) == self.path {
            return Ok(());
        }
        self.files.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        match std::fs::remove_file(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(QmError::new(Diagnostic::Os, format!("cannot remove {name}: {e}"))),
        }
    }
}

/// Runs `f` in one write transaction of `db` and commits it; an error aborts everything.
pub fn write_in<T>(db: &Database, f: impl FnOnce(&WriteTransaction) -> QmResult<T>) -> QmResult<T> {
    let txn = db.begin_write().map_err(|e| storage_error("starting a write", e))?;
    let value = f(&txn)?;
    txn.commit().map_err(|e| storage_error("committing", e))?;
    Ok(value)
}

fn collect<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    iter: redb::Range<'_, K, &'static [u8]>,
    what: &str,
) -> QmResult<Vec<T>> {
    let mut out = Vec::new();
    for item in iter {
        let (_, v) = item.map_err(|e| storage_error(&format!("reading {what}"), e))?;
        out.push(decode(what, v.value())?);
    }
    Ok(out)
}

pub fn put_udl(txn: &WriteTransaction, entry: &UdlEntry) -> QmResult<()> {
    let mut t = txn.open_table(UDL).map_err(|e| storage_error("writing UDL", e))?;
    t.insert(entry.index, encode(entry).as_slice()).map_err(|e| storage_error("writing UDL", e))?;
    Ok(())
}

pub fn delete_udl(txn: &WriteTransaction, index: u8) -> QmResult<()> {
    let mut t = txn.open_table(UDL).map_err(|e| storage_error("writing UDL", e))?;
    t.remove(index).map_err(|e| storage_error("writing UDL", e))?;
    Ok(())
}

pub fn put_vtoc(txn: &WriteTransaction, entry: &VtocEntry) -> QmResult<()> {
    let mut t = txn.open_table(VTOC).map_err(|e| storage_error("writing VTOC", e))?;
    t.insert(entry.index, encode(entry).as_slice())
        .map_err(|e| storage_error("writing VTOC", e))?;
    Ok(())
}

pub fn delete_vtoc(txn: &WriteTransaction, index: u8) -> QmResult<()> {
    let mut t = txn.open_table(VTOC).map_err(|e| storage_error("writing VTOC", e))?;
    t.remove(index).map_err(|e| storage_error("writing VTOC", e))?;
    Ok(())
}

pub fn put_qspace(txn: &WriteTransaction, record: &QueueSpaceRecord) -> QmResult<()> {
    let mut t = txn.open_table(QSPACES).map_err(|e| storage_error("writing queue space", e))?;
    t.insert(record.params.name.as_str(), encode(record).as_slice())
        .map_err(|e| storage_error("writing queue space", e))?;
    Ok(())
}

/// Removes every table of a queue space (those that exist).
pub fn delete_qspace_tables(txn: &WriteTransaction, tables: &QueueSpaceTables) -> QmResult<()> {
    for table in tables.all() {
        txn.delete_table(redb::TableDefinition::<&str, &[u8]>::new(table))
            .map_err(|e| storage_error("removing queue space tables", e))?;
    }
    Ok(())
}

pub fn delete_qspace(txn: &WriteTransaction, name: &str) -> QmResult<()> {
    let mut t = txn.open_table(QSPACES).map_err(|e| storage_error("writing queue space", e))?;
    t.remove(name).map_err(|e| storage_error("writing queue space", e))?;
    Ok(())
}
