//! A device: the redb file named by `QMCONFIG` and the other files its UDL entries name.
//!
//! This type is mechanism only: it reads and writes records in transactions. What may be
//! written (overlaps, limits, attachments) is decided by the admin handlers that call it.

use super::files;
use super::handle::DbFile;
use super::records::{
    DEVICE_MAGIC, DeviceHeader, FILE_MAGIC, FORMAT, FileHeader, QueueSpaceRecord, decode, encode,
    now_secs,
};
use super::space::initialized_bytes;
use super::tables::{GRANTS, HEADER, QSPACES, QueueSpaceTables, UDL, VTOC};
use qm_common::device::{UdlEntry, VtocEntry};
use qm_common::principal::Principal;
use qm_common::rights::{Grant, Scope};
use qm_common::{Diagnostic, QmError, QmResult};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
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

/// Maps any redb failure to a system error that says what was being done. (A failure of
/// the file itself, such as a full filesystem, is told by [`DbFile`] instead.)
pub fn storage_error(what: &str, e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("{what}: {e}"))
}

/// An open file together with the identity of the file it was opened from.
struct DataFile {
    db: Arc<DbFile>,
    identity: Option<FileIdentity>,
}

/// An open device.
pub struct Device {
    path: PathBuf,
    db: Arc<DbFile>,
    /// Group-commit writers, one per open file, started on first use.
    writers: Mutex<Vec<(Arc<DbFile>, Arc<Writer>)>>,
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
            device_id: super::records::random_id(),
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
        let shown = path.to_path_buf();
        let (db, header) = DbFile::open(path, move |txn| identify_device(&shown, txn))?;
        let device = Device {
            path: path.to_path_buf(),
            identity: FileIdentity::of(path),
            db: Arc::new(db),
            writers: Mutex::new(Vec::new()),
            header,
            files: Mutex::new(HashMap::new()),
        };
        // A device whose records cannot be read is refused by whatever reads them next.
        let _ = device.refresh_floors();
        Ok(device)
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

    /// Whether `db` is the device file itself.
    pub fn holds(&self, db: &Arc<DbFile>) -> bool {
        Arc::ptr_eq(db, &self.db)
    }

    /// Runs `f` in one write transaction of the device file and commits it.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> QmResult<T>) -> QmResult<T> {
        self.db.write(f)
    }

    /// Runs `f` in a read transaction of the device file.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> QmResult<T>) -> QmResult<T> {
        self.db.read(f)
    }

    /// Every file this device has open, the device file first.
    pub fn open_files(&self) -> Vec<Arc<DbFile>> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = vec![self.db.clone()];
        for file in files.values() {
            if !list.iter().any(|f| Arc::ptr_eq(f, &file.db)) {
                list.push(file.db.clone());
            }
        }
        list
    }

    /// The disk each file keeps reserved for its queue spaces with initialized extents
    /// (see [`initialized_bytes`]), by file name.
    fn floors(&self) -> QmResult<HashMap<String, u64>> {
        let udl = self.udl()?;
        let vtoc = self.vtoc()?;
        let device_name = self.path.display().to_string();
        let file_of = |index: u8| {
            udl.iter().find(|e| e.index == index).map(|e| {
                if e.index == 0 || self.is_device_file(&e.name, None) {
                    device_name.clone()
                } else {
                    e.name.clone()
                }
            })
        };
        let mut floors = HashMap::new();
        for record in self.qspaces()?.into_iter().filter(|r| r.initialized) {
            let mut extents: Vec<&VtocEntry> = vtoc
                .iter()
                .filter(|t| t.extent.is_some() && t.name == record.params.name)
                .collect();
            extents.sort_by_key(|t| t.extent);
            let pages = extents.iter().map(|t| t.pages).sum();
            if let Some(file) = extents.first().and_then(|t| file_of(t.device)) {
                *floors.entry(file).or_insert(0) += initialized_bytes(pages, self.page_size());
            }
        }
        Ok(floors)
    }

    /// Sets, for every open file, the disk it keeps reserved (after a change of queue
    /// spaces or their initialization); the next commit of each file reserves it.
    pub fn refresh_floors(&self) -> QmResult<()> {
        let floors = self.floors()?;
        let floor = |name: &str| floors.get(name).copied().unwrap_or(0);
        self.db.set_floor(floor(&self.path.display().to_string()));
        // Taken out first: setting a floor may allocate a lot, with no lock held.
        let files: Vec<(String, Arc<DbFile>)> = {
            let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            files.iter().map(|(name, f)| (name.clone(), f.db.clone())).collect()
        };
        for (name, file) in files {
            if !Arc::ptr_eq(&file, &self.db) {
                file.set_floor(floor(&name));
            }
        }
        Ok(())
    }

    /// Closes every file of the device (a clean stop).
    pub fn close(&self) {
        let writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.open_files();
        for (file, _) in writers.iter() {
            if !all.iter().any(|f| Arc::ptr_eq(f, file)) {
                all.push(file.clone());
            }
        }
        drop(writers);
        for file in all {
            file.close();
        }
    }

    /// Runs `f` in a read transaction of the device's own records (its UDL, VTOC, queue
    /// spaces, grants). Those are written by durable commits alone, never deferred, so
    /// the deferred message writes of the file are not applied first as [`Device::read`]
    /// does: every client that opens a queue space reads its record, and at a deep queue
    /// that applied up to 65,536 writes under the writer's lock for each one.
    fn read_records<T>(&self, f: impl FnOnce(&ReadTransaction) -> QmResult<T>) -> QmResult<T> {
        self.db.read_applied(f)
    }

    pub fn udl(&self) -> QmResult<Vec<UdlEntry>> {
        self.read_records(udl_in)
    }

    pub fn vtoc(&self) -> QmResult<Vec<VtocEntry>> {
        self.read_records(vtoc_in)
    }

    pub fn qspaces(&self) -> QmResult<Vec<QueueSpaceRecord>> {
        self.read_records(qspaces_in)
    }

    pub fn device_id(&self) -> u64 {
        self.header.device_id
    }

    pub fn qspace(&self, name: &str) -> QmResult<Option<QueueSpaceRecord>> {
        self.read_records(|txn| {
            let table =
                txn.open_table(QSPACES).map_err(|e| storage_error("reading queue spaces", e))?;
            match table.get(name).map_err(|e| storage_error("reading queue spaces", e))? {
                Some(v) => decode("queue space", v.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Every grant of rights, by principal and scope. A device made before rights existed
    /// has none.
    pub fn grants(&self) -> QmResult<Vec<Grant>> {
        self.read_records(|txn| {
            let table = match txn.open_table(GRANTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage_error("reading rights", e)),
            };
            let mut grants = Vec::new();
            for item in table.iter().map_err(|e| storage_error("reading rights", e))? {
                let (key, value) = item.map_err(|e| storage_error("reading rights", e))?;
                let (principal, scope) = key.value();
                let unreadable = || {
                    QmError::system(format!(
                        "stored grant to {principal} on {scope} cannot be read"
                    ))
                };
                grants.push(Grant {
                    principal: Principal::parse(principal).ok_or_else(unreadable)?,
                    rights: decode("grant", value.value())?,
                    scope: Scope::parse(scope).map_err(|_| unreadable())?,
                });
            }
            Ok(grants)
        })
    }

    /// True when `name` is the device file itself (by path, or by entry 0's recorded name).
    fn is_device_file(&self, name: &str, entry0: Option<&str>) -> bool {
        Path::new(name) == self.path || entry0 == Some(name)
    }

    /// The database holding the tables of a file named by a UDL entry. The file must exist
    /// and belong to this device: a file that was moved or removed is reported, never
    /// silently created again empty.
    pub fn file_db(&self, name: &str) -> QmResult<Arc<DbFile>> {
        self.data_file(name, false)
    }

    /// Like [`Device::file_db`], but creates the file when it does not exist yet (`crdl`,
    /// `chdl` of an entry that holds nothing).
    pub fn create_file_db(&self, name: &str) -> QmResult<Arc<DbFile>> {
        self.data_file(name, true)
    }

    /// The database of a file and its group-commit writer.
    pub fn file(&self, name: &str) -> QmResult<(Arc<DbFile>, Arc<Writer>)> {
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

    fn data_file(&self, name: &str, create: bool) -> QmResult<Arc<DbFile>> {
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
        db.set_floor(self.floors().ok().and_then(|f| f.get(name).copied()).unwrap_or(0));
        files.insert(
            name.to_string(),
            DataFile { db: db.clone(), identity: FileIdentity::of(path) },
        );
        Ok(db)
    }

    fn open_file(&self, path: &Path, create: bool) -> QmResult<Arc<DbFile>> {
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
        let shown = path.to_path_buf();
        let (db, _) = DbFile::open(path, move |txn| identify_file(&shown, device_id, txn))?;
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
pub fn write_in<T>(db: &DbFile, f: impl FnOnce(&WriteTransaction) -> QmResult<T>) -> QmResult<T> {
    db.write(f)
}

/// The UDL entries a device file holds, as `txn` sees them.
pub fn udl_in(txn: &ReadTransaction) -> QmResult<Vec<UdlEntry>> {
    let table = txn.open_table(UDL).map_err(|e| storage_error("reading UDL", e))?;
    collect(table.iter().map_err(|e| storage_error("reading UDL", e))?, "UDL entry")
}

/// The VTOC tables a device file holds, as `txn` sees them.
pub fn vtoc_in(txn: &ReadTransaction) -> QmResult<Vec<VtocEntry>> {
    let table = txn.open_table(VTOC).map_err(|e| storage_error("reading VTOC", e))?;
    collect(table.iter().map_err(|e| storage_error("reading VTOC", e))?, "VTOC entry")
}

/// The queue space records a device file holds, as `txn` sees them.
pub fn qspaces_in(txn: &ReadTransaction) -> QmResult<Vec<QueueSpaceRecord>> {
    let table = txn.open_table(QSPACES).map_err(|e| storage_error("reading queue spaces", e))?;
    collect(table.iter().map_err(|e| storage_error("reading queue spaces", e))?, "queue space")
}

/// The header of a device file, when `txn` is of one qm can read.
pub fn device_header_in(path: &Path, txn: &ReadTransaction) -> QmResult<DeviceHeader> {
    identify_device(path, txn)
}

/// The header of another file of device `device_id`, when `txn` is of one.
pub fn file_header_in(path: &Path, device_id: u64, txn: &ReadTransaction) -> QmResult<FileHeader> {
    identify_file(path, device_id, txn)
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

/// Sets the rights `grant.principal` holds in `grant.scope` to `grant.rights` (none: the
/// entry goes).
pub fn put_grant(txn: &WriteTransaction, grant: &Grant) -> QmResult<()> {
    let mut t = txn.open_table(GRANTS).map_err(|e| storage_error("writing rights", e))?;
    let scope = grant.scope.to_string();
    let key = (grant.principal.as_str(), scope.as_str());
    if grant.rights.is_empty() {
        t.remove(key).map_err(|e| storage_error("writing rights", e))?;
    } else {
        t.insert(key, encode(&grant.rights).as_slice())
            .map_err(|e| storage_error("writing rights", e))?;
    }
    Ok(())
}

/// Removes every table of a queue space (those that exist).
pub fn delete_qspace_tables(txn: &WriteTransaction, tables: &QueueSpaceTables) -> QmResult<()> {
    // What its messages point at in the body segments is no longer live.
    crate::engine::segments::forget(txn, &tables.msg)?;
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
