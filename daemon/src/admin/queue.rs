//! Queues of the open queue space: `qcreate`, `qchange`, `qdestroy`, `qinfo`.

use super::{Ctx, qspace_file, require_device, require_open, require_qspace};
use crate::registry::describe_all;
use crate::state::Store;
use crate::storage::Device;
use crate::storage::device::{storage_error, write_in};
use crate::storage::records::{decode_queue, encode};
use crate::storage::tables::QueueSpaceTables;
use qm_common::names::check_queue_name;
use qm_common::plural::count;
use qm_common::protocol::{Note, QueueRequest, Reply};
use qm_common::queue::{DestroyMode, QueueChange, QueueDef, QueueInfo, QueueListing, QueueUsage};
use qm_common::{Diagnostic, QmError, QmResult};
use redb::ReadableTable;

pub fn handle(ctx: &mut Ctx<'_>, store: &mut Store, request: QueueRequest) -> QmResult<Reply> {
    let qspace = require_open(ctx, store)?;
    match request {
        QueueRequest::Create(def) => create(ctx, store, &qspace, def),
        QueueRequest::Change(change) => change_queue(ctx, store, &qspace, change),
        QueueRequest::Destroy { name, mode } => destroy(ctx, store, &qspace, &name, mode),
        QueueRequest::Info { name } => info(ctx, store, &qspace, name),
        QueueRequest::Get { name } => {
            let device = require_device(ctx, store)?;
            Ok(Reply::Queue(Box::new(find(device, &qspace, &name)?)))
        }
        QueueRequest::Alias { queue, alias } => add_alias(ctx, store, &qspace, &queue, alias),
        QueueRequest::Unalias { alias } => remove_alias(ctx, store, &qspace, &alias),
    }
}

/// `qalias`: `queue` answers to `alias` too, which no queue of the space is called or
/// answers to already.
fn add_alias(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    queue: &str,
    alias: String,
) -> QmResult<Reply> {
    qm_common::names::check_alias(&alias)?;
    let device = require_device(ctx, store)?;
    let mut def = find(device, qspace, queue)?;
    if let Some(taken) = queue_defs(device, qspace)?.into_iter().find(|d| d.answers_to(&alias)) {
        let what = match taken.name == alias {
            true => "a queue".to_string(),
            false => format!("an alias of queue {}", taken.name),
        };
        return Err(QmError::exists(format!(
            "Alias {alias} is taken: it is {what} in queue space {qspace}"
        )));
    }
    def.attrs.aliases.push(alias.clone());
    let note = format!("Queue '{}' answers to '{alias}' too", def.name);
    redefine(ctx, store, qspace, def, note)
}

/// `qunalias`: the alias goes; its queue stays.
fn remove_alias(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    alias: &str,
) -> QmResult<Reply> {
    qm_common::names::check_alias(alias)?;
    let device = require_device(ctx, store)?;
    let Some(mut def) = queue_defs(device, qspace)?
        .into_iter()
        .find(|d| d.attrs.aliases.iter().any(|a| a == alias))
    else {
        return Err(QmError::new(
            Diagnostic::NotFound,
            format!("Alias {alias} is no alias in queue space {qspace}"),
        ));
    };
    def.attrs.aliases.retain(|a| a != alias);
    let note = format!("Alias '{alias}' of queue '{}' removed", def.name);
    redefine(ctx, store, qspace, def, note)
}

/// Stores a changed definition, tells the loaded engine, and says so.
fn redefine(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    def: QueueDef,
    note: String,
) -> QmResult<Reply> {
    save(require_device(ctx, store)?, qspace, &def)?;
    ctx.note(Note::info(note));
    if let Some(engine) = store.engine(qspace) {
        engine.define_queue(def);
    }
    Ok(Reply::Unit)
}

/// Every queue definition of a queue space, by name.
pub fn queue_defs(device: &Device, qspace: &str) -> QmResult<Vec<QueueDef>> {
    let (_, db) = qspace_file(device, qspace)?;
    let tables = QueueSpaceTables::new(qspace);
    db.read(|txn| {
        let table = match txn.open_table(tables.queues()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage_error("reading queues", e)),
        };
        let mut defs = Vec::new();
        for item in table.iter().map_err(|e| storage_error("reading queues", e))? {
            let (_, v) = item.map_err(|e| storage_error("reading queues", e))?;
            defs.push(decode_queue(v.value())?);
        }
        Ok(defs)
    })
}

fn find(device: &Device, qspace: &str, name: &str) -> QmResult<QueueDef> {
    check_queue_name(name)?;
    // By its name first: an alias never shadows a queue.
    let defs = queue_defs(device, qspace)?;
    let by_name = defs.iter().position(|d| d.name == name);
    let at = by_name.or_else(|| defs.iter().position(|d| d.answers_to(name)));
    at.map(|i| defs[i].clone()).ok_or_else(|| {
        QmError::new(
            Diagnostic::BadQueue,
            format!("Queue {name} does not exist in queue space {qspace}"),
        )
    })
}

fn save(device: &Device, qspace: &str, def: &QueueDef) -> QmResult<()> {
    let (_, db) = qspace_file(device, qspace)?;
    let tables = QueueSpaceTables::new(qspace);
    write_in(&db, |txn| {
        let mut t =
            txn.open_table(tables.queues()).map_err(|e| storage_error("writing queue", e))?;
        t.insert(def.name.as_str(), encode(def).as_slice())
            .map_err(|e| storage_error("writing queue", e))?;
        Ok(())
    })
}

/// Usage of one queue of a loaded queue space.
pub fn queue_usage(store: &Store, qspace: &str, queue: &str) -> QueueUsage {
    store.engine(qspace).map(|e| e.usage(queue)).unwrap_or_default()
}

/// Usage of a whole queue space: from its engine when loaded, else the number of
/// persistent messages on disk.
pub fn space_usage(store: &Store, qspace: &str) -> QueueUsage {
    if let Some(engine) = store.engine(qspace) {
        return engine.total_usage();
    }
    let count = store.device.as_ref().and_then(|d| stored_messages(d, qspace).ok()).unwrap_or(0);
    QueueUsage { persistent_messages: count, ..QueueUsage::default() }
}

fn stored_messages(device: &Device, qspace: &str) -> QmResult<u64> {
    use redb::ReadableTableMetadata;
    let (_, db) = qspace_file(device, qspace)?;
    let tables = QueueSpaceTables::new(qspace);
    db.read(|txn| match txn.open_table(tables.msg()) {
        Ok(t) => t.len().map_err(|e| storage_error("reading messages", e)),
        Err(_) => Ok(0),
    })
}

fn create(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    mut def: QueueDef,
) -> QmResult<Reply> {
    def.validate()?;
    // qcreate sends none; qimport sends the queue's own, which a move keeps.
    if def.attrs.created == 0 {
        def.attrs.created = crate::storage::records::now_secs();
    }
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, qspace)?;
    let defs = queue_defs(device, qspace)?;
    if defs.iter().any(|d| d.name == def.name) {
        return Err(QmError::exists(format!("Create queue - duplicate queue name '{}'", def.name)));
    }
    if let Some(owner) = defs.iter().find(|d| d.answers_to(&def.name)) {
        return Err(QmError::exists(format!(
            "Create queue - '{}' is an alias of queue {} (qunalias frees it)",
            def.name, owner.name
        )));
    }
    // Aliases come with qalias, one by one, each checked against the space.
    def.attrs.aliases.retain(|a| !defs.iter().any(|d| d.answers_to(a)));
    let max = record.params.queues;
    if defs.len() >= max as usize {
        return Err(qm_common::queue::no_more_queues(qspace, max));
    }
    save(device, qspace, &def)?;
    if let Some(engine) = store.engine(qspace) {
        engine.define_queue(def.clone());
    }
    if def.name == record.params.error_queue {
        ctx.note(Note::info(format!("INFO: Create queue - error queue {} created", def.name)));
    }
    Ok(Reply::Unit)
}

fn change_queue(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    change: QueueChange,
) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let mut def = find(device, qspace, &change.name)?;
    change.apply(&mut def);
    def.validate()?;
    let note = format!("Queue '{}' changed", def.name);
    redefine(ctx, store, qspace, def, note)
}

fn destroy(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    name: &str,
    mode: DestroyMode,
) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let record = require_qspace(device, qspace)?;
    let found = find(device, qspace, name)?.name;
    let name = found.as_str();
    let usage = queue_usage(store, qspace, name);
    if mode == DestroyMode::Normal && usage.messages() > 0 {
        let n = usage.messages();
        return Err(QmError::in_use(format!(
            "Destroy queue failed - {} on queue {name}; use -p to purge {} or -f to force",
            count(n, "message", "messages"),
            if n == 1 { "it" } else { "them" }
        )));
    }
    let others = ctx.daemon.sessions.attached(qspace, store.generation, Some(ctx.session));
    if mode != DestroyMode::Force && !others.is_empty() {
        return Err(QmError::in_use(format!(
            "Destroy queue failed - processes attached to queue space {qspace}: {}; use -f to force",
            describe_all(&others)
        )));
    }
    // The queue's definition, state values and messages go in one transaction, through the
    // engine that holds its messages.
    let purged = store.load(qspace)?.remove_queue(name)?;
    if purged > 0 {
        let purged = count(purged, "message", "messages");
        ctx.note(Note::info(format!("{purged} of queue {name} deleted")));
    }
    if name == record.params.error_queue {
        ctx.note(Note::warn(format!("Destroy queue - error queue {name} destroyed")));
    } else {
        ctx.note(Note::info(format!("Queue '{name}' destroyed")));
    }
    Ok(Reply::Unit)
}

fn info(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    qspace: &str,
    name: Option<String>,
) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let defs = match name.filter(|n| !n.is_empty()) {
        Some(n) => vec![find(device, qspace, &n)?],
        None => queue_defs(device, qspace)?,
    };
    if defs.is_empty() {
        ctx.note(Note::info("INFO: Queue information - no queues defined."));
    }
    let pages = super::extents_of(&device.vtoc()?, qspace).iter().map(|t| t.pages).sum();
    let queues: Vec<QueueInfo> = defs
        .into_iter()
        .map(|def| {
            let (last_activity, waiting_enqueues) = match store.engine(qspace) {
                Some(engine) => engine.activity(&def.name),
                None => (def.attrs.created, 0),
            };
            QueueInfo {
                usage: queue_usage(store, qspace, &def.name),
                def,
                last_activity,
                waiting_enqueues,
            }
        })
        .collect();
    Ok(Reply::Queues(QueueListing {
        qspace: qspace.to_string(),
        total: space_usage(store, qspace),
        queues,
        qspace_pages: pages,
    }))
}
