//! `qspacemove QSPACE DLINDEX`: moves an inactive queue space to another device list entry,
//! typically on another file (another disk).
//!
//! Its extents become one extent of the same size on the new entry. Within one file only
//! the VTOC changes. To another file, the steps are made so that a crash at any point
//! leaves exactly one valid queue space: its tables are copied into the new file, where
//! nothing names them yet, and checked against the originals; then one commit of the
//! device file moves its extents (the commit point); then the old tables are removed.
//! Tables a crash leaves behind in the file the queue space is not in are never read, and
//! are removed by the next `qspacecreate` or `qspacemove` of that name into that file.

use super::initialize::check_room;
use super::qspace::{entry_file, no_room};
use super::{Ctx, extents_of, make_inactive, qspace_file_name, require_device, require_qspace};
use crate::engine::verify::queue_space;
use crate::state::Store;
use crate::storage::device::{delete_qspace_tables, delete_vtoc, put_vtoc, write_in};
use crate::storage::freemap::{first_fit, largest_run};
use crate::storage::handle::DbFile;
use crate::storage::space::initialized_bytes;
use crate::storage::tables::QueueSpaceTables;
use qm_common::device::VtocEntry;
use qm_common::protocol::{Note, Reply};
use qm_common::verify::Problems;
use qm_common::{QmError, QmResult};

pub fn qspacemove(ctx: &mut Ctx<'_>, store: &mut Store, name: &str, index: u8) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, name)?;
    let udl = device.udl()?;
    let vtoc = device.vtoc()?;
    let entry = udl.iter().find(|e| e.index == index).ok_or_else(|| {
        QmError::not_found(format!("Device list index {index} does not exist (lidl lists them)"))
    })?;
    let extents = extents_of(&vtoc, name);
    let first = extents
        .first()
        .ok_or_else(|| QmError::system(format!("queue space {name} has no extent in the VTOC")))?;
    if extents.iter().all(|t| t.device == index) {
        return Err(QmError::exists(format!(
            "Queue space {name} is on device list entry {index} already"
        )));
    }
    let pages: u64 = extents.iter().map(|t| t.pages).sum();
    // Its own extents do not stand in its way.
    let others: Vec<VtocEntry> =
        vtoc.iter().filter(|t| t.extent.is_none() || t.name != name).cloned().collect();
    let (dev, offset) = first_fit([entry], &others, pages).ok_or_else(|| {
        no_room(
            "Queue space size",
            pages,
            largest_run([entry], &others),
            &format!("on device list entry {index}"),
        )
    })?;
    let moved =
        VtocEntry { index: first.index, extent: Some(0), device: dev, offset, ..first.clone() };
    let from = qspace_file_name(device, name)?;
    let to = entry_file(device, &udl, index);
    let (source, target) = (device.file_db(&from)?, device.file_db(&to)?);
    if record.initialized && from != to {
        let bytes = initialized_bytes(pages, device.page_size());
        check_room(&target, bytes, name, "it was not moved")?;
    }
    make_inactive(ctx, store, name, false)?;
    let device = require_device(ctx, store)?;
    let move_extents = |txn: &redb::WriteTransaction| {
        for t in &extents {
            delete_vtoc(txn, t.index)?;
        }
        put_vtoc(txn, &moved)
    };
    let tables = QueueSpaceTables::new(name);
    if from != to {
        copy_tables(&source, &target, &tables, device.page_size())?;
    }
    device.write(move_extents)?;
    if from != to {
        if let Err(e) = write_in(&source, |txn| delete_qspace_tables(txn, &tables)) {
            ctx.note(Note::warn(format!(
                "Queue space {name} is moved, but its old tables could not be removed from \
                 {from} ({}); nothing reads them, and a later qspacecreate or qspacemove of \
                 {name} there removes them",
                e.message
            )));
        }
        device.refresh_floors()?;
        source.space()?.settle(source.floor());
    }
    ctx.note(Note::info(format!(
        "Queue space {name} moved to device list entry {index} ({to}, offset {offset})"
    )));
    Ok(Reply::Unit)
}

/// Copies a queue space's tables from `source` into `target` (over whatever an earlier
/// move or destroy cut short left there), durably, and checks the copy: every message and
/// order table as `qverify` checks them, and the same messages and bytes as the original.
/// A copy that does not pass is removed.
fn copy_tables(
    source: &DbFile,
    target: &DbFile,
    tables: &QueueSpaceTables,
    page_size: u32,
) -> QmResult<()> {
    let names: Vec<&str> = tables.all().into_iter().filter(|t| *t != tables.init).collect();
    source.read(|from| {
        write_in(target, |to| {
            delete_qspace_tables(to, tables)?;
            crate::backup::copy::named(from, to, &names)?;
            crate::engine::segments::rehome(to, &tables.msg, source.bodies(), target.bodies())
        })
    })?;
    let mut problems = Problems::default();
    let copied =
        target.read(|t| Ok(queue_space(t, target.bodies(), tables, page_size, &mut problems)))?;
    let original = source.read(|t| {
        Ok(queue_space(t, source.bodies(), tables, page_size, &mut Problems::default()))
    })?;
    let differs = (copied.messages, copied.bytes) != (original.messages, original.bytes);
    if problems.is_empty() && !differs {
        return Ok(());
    }
    let _ = write_in(target, |txn| delete_qspace_tables(txn, tables));
    let why = match problems.listed.first() {
        Some(p) => format!("{}: {}", p.place, p.what),
        None => format!(
            "{} messages of {} bytes copied, {} of {} in the original",
            copied.messages, copied.bytes, original.messages, original.bytes
        ),
    };
    Err(QmError::system(format!(
        "queue space {}: its copy in {} did not pass its check ({why}); it was not moved",
        tables.qspace,
        target.path().display()
    )))
}
