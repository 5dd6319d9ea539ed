//! Queue spaces: `qspacecreate`, `qspacelist`, `qspacechange`, `qspacedestroy`, `qopen`,
//! `qclose`, `qaddext`, `qsize`, and `ipcs`/`ipcrm` (in [`super::ipc`]).

use super::initialize::{Initialization, check_room, reserve_steps};
use super::{Ctx, extents_of, make_inactive, qspace_file, require_device, require_qspace};
use crate::registry::describe_all;
use crate::state::Store;
use crate::storage::Device;
use crate::storage::device::{
    delete_qspace, delete_qspace_tables, delete_vtoc, put_qspace, put_vtoc, storage_error, write_in,
};
use crate::storage::freemap::{first_fit, largest_run};
use crate::storage::records::{QueueSpaceRecord, now_secs};
use crate::storage::space::initialized_bytes;
use crate::storage::tables::QueueSpaceTables;
use qm_common::device::{UdlEntry, VTOC_MAX, VtocEntry};
use qm_common::plural::count;
use qm_common::protocol::{Note, QueueSpaceRequest, Reply};
use qm_common::qspace::{
    QueueSpaceChange, QueueSpaceInfo, QueueSpaceParams, QueueSpaceState, SizeEstimate, round_pages,
};
use qm_common::{QmError, QmResult};

pub fn handle(ctx: &mut Ctx<'_>, store: &mut Store, request: QueueSpaceRequest) -> QmResult<Reply> {
    match request {
        QueueSpaceRequest::Create(params) => create(ctx, store, params),
        QueueSpaceRequest::List { name } => list(ctx, store, name),
        QueueSpaceRequest::Change(change) => change_space(ctx, store, change),
        QueueSpaceRequest::Destroy { name, force } => destroy(ctx, store, &name, force),
        QueueSpaceRequest::Open { name } => open(ctx, store, &name),
        QueueSpaceRequest::Close => close(ctx, store),
        QueueSpaceRequest::AddExtent { name, pages } => add_extent(ctx, store, &name, pages),
        QueueSpaceRequest::Size {
            pages,
            queues,
            transactions,
            processes,
            messages,
            nonpersistent,
        } => {
            let page_size = store
                .device
                .as_ref()
                .map_or(qm_common::device::DEFAULT_PAGE_SIZE, Device::page_size);
            let np = nonpersistent.bytes(page_size);
            Ok(Reply::Size(estimate(
                round_pages(pages),
                queues,
                transactions,
                processes,
                messages,
                np,
            )))
        }
        QueueSpaceRequest::Ipcs { name } => super::ipc::ipcs(ctx, store, name),
        QueueSpaceRequest::Stat { name } => super::ipc::stat(ctx, store, name),
        QueueSpaceRequest::Ipcrm { name, force } => super::ipc::ipcrm(ctx, store, &name, force),
        QueueSpaceRequest::Move { name, index } => {
            super::moving::qspacemove(ctx, store, &name, index)
        }
    }
}

/// Daemon memory a queue space needs at its configured sizes, in bytes.
pub fn estimate(
    pages: u64,
    queues: u32,
    transactions: u32,
    processes: u32,
    messages: u32,
    np: u64,
) -> SizeEstimate {
    // Index entry per message, queue bookkeeping, transaction and attachment slots.
    let system = 64 * 1024
        + u64::from(messages) * 160
        + u64::from(queues) * 2048
        + u64::from(transactions) * 1024
        + u64::from(processes) * 512;
    SizeEstimate {
        pages,
        queues,
        transactions,
        processes,
        messages,
        nonpersistent_bytes: np,
        system_bytes: system,
        total_bytes: system + np,
        semaphores: 0,
    }
}

fn check_ipc_key_free(device: &Device, name: &str, key: u32) -> QmResult<()> {
    if let Some(other) =
        device.qspaces()?.into_iter().find(|r| r.params.ipc_key == key && r.params.name != name)
    {
        return Err(QmError::exists(format!(
            "IPC Key for queue space: {key} is already used by queue space {} -- choose another one",
            other.params.name
        )));
    }
    Ok(())
}

fn next_vtoc_index(vtoc: &[VtocEntry]) -> QmResult<u8> {
    if vtoc.len() >= VTOC_MAX {
        return Err(QmError::no_space(format!("The VTOC is full: at most {VTOC_MAX} tables")));
    }
    Ok((0u8..).find(|i| !vtoc.iter().any(|t| t.index == *i)).unwrap_or(u8::MAX))
}

pub(super) fn no_room(field: &str, pages: u64, largest: u64, where_: &str) -> QmError {
    let (pages, largest) = (page_count(pages), page_count(largest));
    let fit = if pages.starts_with("1 ") { "does" } else { "do" };
    QmError::no_space(format!(
        "{field}: {pages} {fit} not fit; the largest free run {where_} is {largest}"
    ))
}

fn page_count(n: u64) -> String {
    qm_common::plural::count(n, "page", "pages")
}

fn create(ctx: &mut Ctx<'_>, store: &mut Store, params: QueueSpaceParams) -> QmResult<Reply> {
    params.validate()?;
    let device = require_device(ctx, store)?;
    if device.qspace(&params.name)?.is_some() {
        return Err(QmError::exists(format!("Queue space {} already exists", params.name)));
    }
    check_ipc_key_free(device, &params.name, params.ipc_key)?;
    let pages = round_pages(params.pages);
    let udl = device.udl()?;
    let vtoc = device.vtoc()?;
    let index = next_vtoc_index(&vtoc)?;
    let (dev, offset) = first_fit(&udl, &vtoc, pages).ok_or_else(|| {
        no_room(
            "Size of queue space in disk pages",
            pages,
            largest_run(&udl, &vtoc),
            "on the device",
        )
    })?;
    let extent =
        VtocEntry { index, name: params.name.clone(), extent: Some(0), device: dev, offset, pages };
    let record = QueueSpaceRecord {
        params: QueueSpaceParams { pages, ..params },
        initialized: false,
        created: now_secs(),
    };
    let tables = QueueSpaceTables::new(&record.params.name);
    let db = device.file_db(&entry_file(device, &udl, dev))?;
    let init_bytes = initialized_bytes(pages, device.page_size());
    if record.params.initialize {
        check_room(&db, init_bytes, &record.params.name, "nothing was created")?;
    }
    let put_records = |txn: &redb::WriteTransaction| {
        put_vtoc(txn, &extent)?;
        put_qspace(txn, &record)
    };
    if device.holds(&db) {
        device.write(|txn| {
            create_tables(txn, &tables)?;
            put_records(txn)
        })?;
    } else {
        // The tables first: without the device's records (the commit point) they are
        // invisible, so a crash between leaves nothing half made.
        write_in(&db, |txn| create_tables(txn, &tables))?;
        device.write(put_records)?;
    }
    if record.params.initialize {
        ctx.then = Some(Initialization::begin(ctx.daemon, store, db, &record, init_bytes));
    }
    // Said only if it all succeeds: a failed initialization drops the notes.
    ctx.note(Note::info(format!("Queue space {} created", record.params.name)));
    Ok(Reply::Unit)
}

/// The name of the file a UDL entry is on.
pub(super) fn entry_file(device: &Device, udl: &[UdlEntry], index: u8) -> String {
    match udl.iter().find(|e| e.index == index) {
        Some(e) if e.index != 0 => e.name.clone(),
        _ => device.path().display().to_string(),
    }
}

/// Creates a queue space's tables, removing first any a destroy cut short left behind.
fn create_tables(txn: &redb::WriteTransaction, tables: &QueueSpaceTables) -> QmResult<()> {
    delete_qspace_tables(txn, tables)?;
    txn.open_table(tables.queues()).map_err(|e| storage_error("creating queue space tables", e))?;
    Ok(())
}

pub fn state_of(ctx: &Ctx<'_>, store: &Store, name: &str) -> QueueSpaceState {
    if !ctx.daemon.sessions.attached(name, store.generation, None).is_empty() {
        QueueSpaceState::Active
    } else if store.loaded.contains_key(name) {
        QueueSpaceState::Open
    } else {
        QueueSpaceState::Inactive
    }
}

fn list(ctx: &Ctx<'_>, store: &Store, name: Option<String>) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => super::require_open(ctx, store).map_err(|_| {
            QmError::inval("No queue space is currently open; give a queue space name")
        })?,
    };
    let record = require_qspace(device, &name)?;
    let extents = extents_of(&device.vtoc()?, &name);
    let total_pages = extents.iter().map(|t| t.pages).sum();
    let (file, _) = qspace_file(device, &name)?;
    let defs = super::queue::queue_defs(device, &name)?;
    let p = &record.params;
    let np = p.nonpersistent.bytes(device.page_size());
    let est = estimate(total_pages, p.queues, p.transactions, p.processes, p.messages, np);
    let usage = super::queue::space_usage(store, &name);
    Ok(Reply::QueueSpace(Box::new(QueueSpaceInfo {
        file,
        page_size: device.page_size(),
        extents,
        total_pages,
        overhead_pages: 1 + u64::from(p.queues),
        nonpersistent_bytes: np,
        memory_estimate: est.total_bytes,
        state: state_of(ctx, store, &name),
        queues_defined: defs.len() as u32,
        messages: usage.messages(),
        blocks_used: store.engine(&name).is_some().then_some(usage.blocks),
        params: QueueSpaceParams { initialize: record.initialized, ..record.params },
    })))
}

fn change_space(ctx: &mut Ctx<'_>, store: &mut Store, change: QueueSpaceChange) -> QmResult<Reply> {
    change.validate()?;
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, &change.name)?;
    check_ipc_key_free(device, &change.name, change.ipc_key)?;
    let held = super::queue::space_usage(store, &change.name).persistent_messages;
    if u64::from(change.messages) < held {
        return Err(QmError::inval(format!(
            "Number of messages in queue space: {} is below the {held} persistent messages \
             queue space {} holds now; give at least {held}",
            change.messages, change.name
        )));
    }
    let (_, db) = qspace_file(device, &change.name)?;
    let pages = extents_of(&device.vtoc()?, &change.name).iter().map(|t| t.pages).sum();
    let init_bytes = initialized_bytes(pages, device.page_size());
    if change.initialize && !record.initialized {
        check_room(&db, init_bytes, &change.name, "nothing was changed")?;
    }
    make_inactive(ctx, store, &change.name, false)?;
    let device = require_device(ctx, store)?;
    let old = &record.params;
    let params = QueueSpaceParams {
        ipc_key: change.ipc_key,
        transactions: change.transactions,
        processes: change.processes,
        messages: change.messages,
        error_queue: change.error_queue.clone(),
        blocking: change.blocking,
        initialize: change.initialize,
        nonpersistent: change.nonpersistent.unwrap_or(old.nonpersistent),
        actions: change.actions.unwrap_or(old.actions),
        overflow: change.overflow.unwrap_or(old.overflow),
        ..old.clone()
    };
    let updated = QueueSpaceRecord { params, ..record.clone() };
    device.write(|txn| put_qspace(txn, &updated))?;
    if change.initialize && !record.initialized {
        ctx.then = Some(Initialization::begin(ctx.daemon, store, db, &updated, init_bytes));
    }
    ctx.note(Note::info(format!("Queue space {} changed", updated.params.name)));
    Ok(Reply::Unit)
}

fn destroy(ctx: &mut Ctx<'_>, store: &mut Store, name: &str, force: bool) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    require_qspace(device, name)?;
    let usage = super::queue::space_usage(store, name);
    if usage.messages() > 0 && !force {
        return Err(QmError::in_use(format!(
            "Queue space {name} holds {}; use -f to destroy it anyway",
            count(usage.messages(), "message", "messages")
        )));
    }
    let others = ctx.daemon.sessions.attached(name, store.generation, Some(ctx.session));
    if !others.is_empty() && !force {
        return Err(QmError::in_use(format!(
            "Queue space {name} is active; attached: {}; use -f to destroy it anyway",
            describe_all(&others)
        )));
    }
    make_inactive(ctx, store, name, true)?;
    let device = require_device(ctx, store)?;
    let (file, db) = qspace_file(device, name)?;
    let tables = QueueSpaceTables::new(name);
    let extents = extents_of(&device.vtoc()?, name);
    let drop_records = |txn: &redb::WriteTransaction| {
        for t in &extents {
            delete_vtoc(txn, t.index)?;
        }
        delete_qspace(txn, name)
    };
    if device.holds(&db) {
        device.write(|txn| {
            delete_qspace_tables(txn, &tables)?;
            drop_records(txn)
        })?;
    } else {
        // Two files share no transaction: the device's records are the commit point. Tables
        // left on the other file by a crash after it are invisible, and qspacecreate of the
        // same name on that file removes them.
        device.write(drop_records)?;
        if let Err(e) = write_in(&db, |txn| delete_qspace_tables(txn, &tables)) {
            ctx.note(Note::warn(format!(
                "Queue space {name} is destroyed, but its tables could not be removed from {file} ({}); a later qspacecreate of {name} there removes them",
                e.message
            )));
        }
    }
    // The disk held for it goes back to the filesystem.
    device.refresh_floors()?;
    db.space()?.settle(db.floor());
    ctx.note(Note::info(format!("Queue space {name} destroyed")));
    Ok(Reply::Unit)
}

fn open(ctx: &mut Ctx<'_>, store: &mut Store, name: &str) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, name)?;
    qspace_file(device, name)?;
    let error_queue = record.params.error_queue.clone();
    if !error_queue.is_empty()
        && !super::queue::queue_defs(device, name)?.iter().any(|d| d.name == error_queue)
    {
        ctx.note(Note::warn(format!(
            "Error queue {error_queue} of queue space {name} does not exist (create it with qcreate)"
        )));
    }
    ctx.daemon.attach(store, ctx.session, name)?;
    Ok(Reply::Unit)
}

fn close(ctx: &mut Ctx<'_>, store: &Store) -> QmResult<Reply> {
    if ctx.daemon.sessions.open_of(ctx.session, store.generation).is_none() {
        ctx.note(Note::warn("No queue space is currently open"));
    }
    ctx.daemon.sessions.set_open(ctx.session, None);
    Ok(Reply::Unit)
}

fn add_extent(ctx: &mut Ctx<'_>, store: &mut Store, name: &str, pages: u64) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, name)?;
    let asked = pages;
    let pages = round_pages(pages);
    if pages == 0 {
        return Err(QmError::invalid(
            "Number of pages",
            asked,
            "at least 4 pages are needed (sizes round down to a multiple of 4)",
        ));
    }
    let (file, db) = qspace_file(device, name)?;
    let udl = device.udl()?;
    let vtoc = device.vtoc()?;
    let index = next_vtoc_index(&vtoc)?;
    let on_file: Vec<&UdlEntry> = udl
        .iter()
        .filter(|e| {
            if e.index == 0 { file == device.path().display().to_string() } else { e.name == file }
        })
        .collect();
    let (dev, offset) = first_fit(on_file.iter().copied(), &vtoc, pages).ok_or_else(|| {
        no_room(
            "Number of pages",
            pages,
            largest_run(on_file.iter().copied(), &vtoc),
            &format!("on {file}"),
        )
    })?;
    let number = extents_of(&vtoc, name).iter().filter_map(|t| t.extent).max().map_or(0, |n| n + 1);
    // An initialized space keeps its disk reserved: the new pages too, or no new extent.
    let had: u64 = extents_of(&vtoc, name).iter().map(|t| t.pages).sum();
    let page_size = device.page_size();
    let added = initialized_bytes(had + pages, page_size) - initialized_bytes(had, page_size);
    if record.initialized {
        check_room(&db, added, name, "no extent was added")?;
    }
    make_inactive(ctx, store, name, false)?;
    let device = require_device(ctx, store)?;
    let extent = VtocEntry {
        index,
        name: name.to_string(),
        extent: Some(number),
        device: dev,
        offset,
        pages,
    };
    device.write(|txn| put_vtoc(txn, &extent))?;
    if record.initialized {
        if let Err(e) = reserve_steps(&db, name, added, |_| true, |p| (ctx.progress)(p)) {
            device.write(|txn| delete_vtoc(txn, extent.index))?;
            return Err(e);
        }
        device.refresh_floors()?;
    }
    let pages = page_count(pages);
    ctx.note(Note::info(format!(
        "Added extent of {pages} to queue space {name} (device {dev}, offset {offset})"
    )));
    Ok(Reply::Unit)
}
