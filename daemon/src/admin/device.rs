//! The universal device list: `crdl`, `lidl`, `dsdl`, `livtoc`, `chdl`.

use super::{Ctx, require_device};
use crate::state::Store;
use crate::storage::Device;
use crate::storage::device::{delete_udl, put_udl};
use crate::storage::freemap::free_runs;
use qm_common::device::{
    DEFAULT_PAGE_SIZE, DeviceEntryInfo, DeviceListing, ENTRY_MAX_PAGES, UDL_MAX, UDL_PAGES,
    UdlEntry, VTOC_PAGES, VtocEntry, check_page_size,
};
use qm_common::names::check_device_path;
use qm_common::protocol::{DeviceRequest, Note, Reply};
use qm_common::{QmError, QmResult};

pub fn handle(ctx: &mut Ctx<'_>, store: &mut Store, request: DeviceRequest) -> QmResult<Reply> {
    match request {
        DeviceRequest::Create { device, offset, size, page_size } => {
            create(ctx, store, device, offset, size, page_size)
        }
        DeviceRequest::List { index } => list(ctx, store, index),
        DeviceRequest::Destroy { index } => destroy(ctx, store, index),
        DeviceRequest::Vtoc => Ok(Reply::Vtoc(require_device(ctx, store)?.vtoc()?)),
        DeviceRequest::Rename { index, new_name } => rename(ctx, store, index, new_name),
        DeviceRequest::Verify { qspace } => verify(ctx, store, qspace),
        DeviceRequest::Backup { dir } => backup(ctx, store, dir),
        DeviceRequest::Restore { dir, device, map } => restore(ctx, store, dir, device, map),
    }
}

/// `qrestore`: see [`crate::backup::restore`]. Onto this daemon's own device path only
/// while no device is there; the restored device is then served. Another path must not
/// be a file, nor the device of another daemon (its lock held).
fn restore(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    dir: String,
    device: String,
    map: Vec<(String, String)>,
) -> QmResult<Reply> {
    for (field, path) in [("Backup directory", &dir), ("New device", &device)] {
        if !std::path::Path::new(path).is_absolute() {
            return Err(QmError::invalid(field, path, "it must be an absolute path"));
        }
    }
    let target = std::path::PathBuf::from(&device);
    let own = target == ctx.daemon.device_path;
    store.refresh(&ctx.daemon.device_path);
    if own && store.device.is_some() {
        return Err(QmError::in_use(format!(
            "{device} is the device this daemon serves; restore to another path, or remove              it first (daemon stop, then remove the device and its files)"
        )));
    }
    if !own && lock_held(&target) {
        return Err(QmError::in_use(format!(
            "another qmd serves {device} (its lock is held); stop it first"
        )));
    }
    let report = crate::backup::restore::run(std::path::Path::new(&dir), &target, &map)?;
    // The restored device is checked as qverify checks one.
    let checked = if own {
        store.refresh(&ctx.daemon.device_path);
        let device = require_device(ctx, store)?;
        crate::verify::device(device, None, &|_, _| {})?
    } else {
        crate::verify::offline(&target).map_err(QmError::system)?
    };
    if let Some(first) = checked.problems.listed.first() {
        return Err(QmError::system(format!(
            "the restored device {device} did not pass its check ({} problems; first: {}:              {}); run qmd --verify {device} for all of them",
            checked.problems.count(),
            first.place,
            first.what
        )));
    }
    Ok(Reply::Restored(Box::new(report)))
}

/// Whether a daemon holds the lock of the device at `path`.
fn lock_held(path: &std::path::Path) -> bool {
    let lock = qm_common::paths::lock_path(path);
    let Ok(file) = std::fs::File::open(&lock) else { return false };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
}

/// `qbackup`: see [`crate::backup`]. The store stays locked throughout, so that no
/// definition or file of the device changes under the copy; traffic goes on.
fn backup(ctx: &mut Ctx<'_>, store: &mut Store, dir: String) -> QmResult<Reply> {
    let path = std::path::Path::new(&dir);
    if !path.is_absolute() {
        return Err(QmError::invalid("Backup directory", &dir, "it must be an absolute path"));
    }
    let device = require_device(ctx, store)?;
    let progress = ctx.progress;
    let report = crate::backup::run(device, path, &|done, total| {
        progress(qm_common::protocol::Progress { done, total })
    })?;
    Ok(Reply::BackedUp(Box::new(report)))
}

/// `qverify`: checks the device (see [`crate::verify`]), with the store locked so that no
/// definition changes under it; traffic goes on.
fn verify(ctx: &mut Ctx<'_>, store: &mut Store, qspace: Option<String>) -> QmResult<Reply> {
    if let Some(name) = &qspace {
        qm_common::names::check_qspace_name(name)?;
    }
    let device = require_device(ctx, store)?;
    let progress = ctx.progress;
    let report = crate::verify::device(device, qspace.as_deref(), &|done, total| {
        progress(qm_common::protocol::Progress { done, total })
    })?;
    Ok(Reply::Verified(Box::new(report)))
}

fn check_size(size: u64, offset: u64) -> QmResult<()> {
    if size == 0 || size > ENTRY_MAX_PAGES {
        return Err(QmError::invalid(
            "Device size",
            size,
            &format!("it must be 1 to {ENTRY_MAX_PAGES} pages"),
        ));
    }
    if offset > ENTRY_MAX_PAGES {
        return Err(QmError::invalid(
            "Device offset",
            offset,
            &format!("it must be 0 to {ENTRY_MAX_PAGES}"),
        ));
    }
    Ok(())
}

fn create(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    name: String,
    offset: u64,
    size: u64,
    page_size: Option<u32>,
) -> QmResult<Reply> {
    check_device_path(&name)?;
    check_size(size, offset)?;
    let config = ctx.daemon.device_path.display().to_string();
    let created = format!("Created device {name}, offset {offset}, size {size} on {config}");
    let Some(device) = &store.device else {
        create_first(ctx, store, &name, offset, size, page_size)?;
        ctx.note(Note::info(created));
        warn_about_directory(ctx, &name);
        return Ok(Reply::Unit);
    };
    if let Some(p) = page_size.filter(|p| *p != device.page_size()) {
        return Err(QmError::invalid(
            "Page size",
            p,
            &format!(
                "the page size is fixed when the device is created; this device uses {}",
                device.page_size()
            ),
        ));
    }
    let udl = device.udl()?;
    if let Some(same) = udl.iter().find(|e| {
        e.start == offset && e.size == size && (e.name == name || (e.index == 0 && name == config))
    }) {
        // A retry after a crash of a crdl that had committed: it is done.
        ctx.note(Note::warn(format!(
            "Device list entry {} already is {name}, offset {offset}, size {size}; nothing changed",
            same.index
        )));
        return Ok(Reply::Unit);
    }
    if udl.len() >= UDL_MAX {
        return Err(QmError::no_space(format!(
            "The device list is full: at most {UDL_MAX} entries"
        )));
    }
    let entry = UdlEntry { index: first_free_index(&udl), name, start: offset, size };
    check_overlap(device, &udl, &entry)?;
    if !is_device_file(ctx, &udl, &entry.name) {
        device.create_file_db(&entry.name)?;
    }
    device.write(|txn| put_udl(txn, &entry))?;
    ctx.note(Note::info(created));
    warn_about_directory(ctx, &entry.name);
    Ok(Reply::Unit)
}

/// A device file in a directory others may write is theirs to replace: say so.
fn warn_about_directory(ctx: &mut Ctx<'_>, file: &str) {
    let dir = std::path::Path::new(file).parent();
    if let Some(warning) = dir.and_then(qm_common::trust::open_directory_warning) {
        ctx.note(Note::warn(warning));
    }
}

/// Entry 0 creates the device itself.
fn create_first(
    ctx: &Ctx<'_>,
    store: &mut Store,
    name: &str,
    offset: u64,
    size: u64,
    page_size: Option<u32>,
) -> QmResult<()> {
    let config = ctx.daemon.device_path.display().to_string();
    if let Some(why) = &store.open_error {
        return Err(QmError::inval(why.clone()));
    }
    if name != config {
        return Err(QmError::invalid(
            "Device name",
            name,
            &format!("the first entry must be the device itself ({config})"),
        ));
    }
    if offset != 0 {
        return Err(QmError::invalid(
            "Device offset",
            offset,
            "the first entry must start at offset 0",
        ));
    }
    qm_common::device::check_first_entry_size(size)?;
    let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    check_page_size(page_size)?;
    let entry0 = UdlEntry { index: 0, name: name.to_string(), start: 0, size };
    let tables = [
        VtocEntry {
            index: 0,
            name: "VTOC".into(),
            extent: None,
            device: 0,
            offset: 0,
            pages: VTOC_PAGES,
        },
        VtocEntry {
            index: 1,
            name: "UDL".into(),
            extent: None,
            device: 0,
            offset: VTOC_PAGES,
            pages: UDL_PAGES,
        },
    ];
    let device = Device::create(&ctx.daemon.device_path, entry0, &tables, page_size)?;
    store.release();
    store.device = Some(device);
    Ok(())
}

fn first_free_index(udl: &[UdlEntry]) -> u8 {
    (0u8..).find(|i| !udl.iter().any(|e| e.index == *i)).unwrap_or(u8::MAX)
}

fn is_device_file(ctx: &Ctx<'_>, udl: &[UdlEntry], name: &str) -> bool {
    name == ctx.daemon.device_path.display().to_string()
        || udl.iter().any(|e| e.index == 0 && e.name == name)
}

/// Entries on the same file may not overlap.
fn check_overlap(device: &Device, udl: &[UdlEntry], entry: &UdlEntry) -> QmResult<()> {
    match overlapped(device, udl, entry) {
        Some(other) => Err(QmError::invalid(
            "Device offset",
            entry.start,
            &format!(
                "pages {}..{} overlap entry {} of the same file (pages {}..{})",
                entry.start,
                entry.end(),
                other.index,
                other.start,
                other.end()
            ),
        )),
        None => Ok(()),
    }
}

/// The entry on the same file whose pages `entry` would share, if any.
fn overlapped<'u>(device: &Device, udl: &'u [UdlEntry], entry: &UdlEntry) -> Option<&'u UdlEntry> {
    let same_file = |e: &&UdlEntry| {
        e.index != entry.index
            && (e.name == entry.name
                || (e.index == 0 && entry.name == device.path().display().to_string()))
    };
    udl.iter().filter(same_file).find(|e| e.start < entry.end() && entry.start < e.end())
}

fn list(ctx: &Ctx<'_>, store: &Store, index: Option<u8>) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let udl = device.udl()?;
    let vtoc = device.vtoc()?;
    if let Some(i) = index.filter(|i| !udl.iter().any(|e| e.index == *i)) {
        return Err(QmError::not_found(format!("Device list entry {i} does not exist")));
    }
    let entries = udl
        .into_iter()
        .filter(|e| index.is_none_or(|i| i == e.index))
        .map(|entry| DeviceEntryInfo { free: free_runs(&entry, &vtoc), entry })
        .collect();
    Ok(Reply::Device(DeviceListing {
        device: device.path().display().to_string(),
        page_size: device.page_size(),
        entries,
    }))
}

fn find_entry(udl: &[UdlEntry], index: u8) -> QmResult<UdlEntry> {
    udl.iter()
        .find(|e| e.index == index)
        .cloned()
        .ok_or_else(|| QmError::not_found(format!("Device list entry {index} does not exist")))
}

fn destroy(ctx: &mut Ctx<'_>, store: &mut Store, index: u8) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let udl = device.udl()?;
    let vtoc = device.vtoc()?;
    let entry = qm_common::device::check_destroy(&udl, &vtoc, index)?;
    if index == 0 {
        let path = device.path().to_path_buf();
        store.release();
        std::fs::remove_file(&path)
            .map_err(|e| QmError::system(format!("cannot remove {}: {e}", path.display())))?;
        ctx.note(Note::info(format!("Device list destroyed and {} removed", path.display())));
        return Ok(Reply::Unit);
    }
    device.write(|txn| delete_udl(txn, index))?;
    let shared = udl.iter().any(|e| e.index != index && e.name == entry.name);
    if !shared && !is_device_file(ctx, &udl, &entry.name) {
        device.remove_file(&entry.name)?;
    }
    ctx.note(Note::info(format!("Device list entry {index} ({}) destroyed", entry.name)));
    Ok(Reply::Unit)
}

fn rename(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    index: u8,
    new_name: Option<String>,
) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let udl = device.udl()?;
    let entry = find_entry(&udl, index)?;
    let Some(new_name) = new_name else { return Ok(Reply::DeviceName(entry.name)) };
    check_device_path(&new_name)?;
    let config = ctx.daemon.device_path.display().to_string();
    if index == 0 && new_name != config {
        return Err(QmError::invalid(
            "New device name",
            &new_name,
            &format!("entry 0 must name the device itself ({config})"),
        ));
    }
    let vtoc = device.vtoc()?;
    let holds_space = |i: u8| vtoc.iter().any(|t| t.device == i && t.extent.is_some());
    // A queue space lives in one file, maybe through several entries: when its file moved,
    // every entry naming that file moves with it.
    let old_name = entry.name.clone();
    let on_file: Vec<_> = udl.iter().filter(|e| e.name == old_name).cloned().collect();
    let group = if on_file.iter().any(|e| holds_space(e.index)) { on_file } else { vec![entry] };
    if group.iter().any(|e| e.index == 0) && new_name != config {
        return Err(QmError::invalid(
            "New device name",
            &new_name,
            &format!("entry 0 shares this file and must name the device itself ({config})"),
        ));
    }
    let mut spaces: Vec<String> = vtoc
        .iter()
        .filter(|t| t.extent.is_some() && group.iter().any(|e| e.index == t.device))
        .map(|t| t.name.clone())
        .collect();
    spaces.sort();
    spaces.dedup();
    let renamed: Vec<_> =
        group.into_iter().map(|e| UdlEntry { name: new_name.clone(), ..e }).collect();
    for entry in &renamed {
        if let Some(other) = overlapped(device, &udl, entry) {
            return Err(QmError::invalid(
                "New device name",
                &new_name,
                &format!(
                    "entry {} (pages {}..{}) would overlap entry {} on that file (pages {}..{})",
                    entry.index,
                    entry.start,
                    entry.end(),
                    other.index,
                    other.start,
                    other.end()
                ),
            ));
        }
    }
    if index != 0 && !spaces.is_empty() && !std::path::Path::new(&new_name).exists() {
        return Err(QmError::not_found(format!(
            "{new_name} does not exist; entry {index} holds queue space {} whose file must be there",
            spaces.join(", ")
        )));
    }
    if index != 0 {
        device.create_file_db(&new_name)?;
    }
    device.write(|txn| renamed.iter().try_for_each(|e| put_udl(txn, e)))?;
    if renamed.len() > 1 {
        let list: Vec<String> = renamed.iter().map(|e| e.index.to_string()).collect();
        ctx.note(Note::info(format!(
            "Device list entries {} (all on {old_name}, which holds queue space {}) renamed to {new_name}",
            list.join(", "),
            spaces.join(", ")
        )));
        return Ok(Reply::Unit);
    }
    ctx.note(Note::info(format!("Device list entry {index} renamed to {new_name}")));
    Ok(Reply::Unit)
}
