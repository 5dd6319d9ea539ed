//! `ipcs` and `ipcrm`: who is attached to a queue space, and dropping its in-memory state.
//!
//! qm keeps no System V IPC: a queue space's "IPC resources" are its in-memory state in the
//! daemon (non-persistent messages, transactions, waiting dequeues) and the attachments to it.

use super::qspace::state_of;
use super::{Ctx, require_device, require_qspace};
use crate::registry::describe_all;
use crate::state::Store;
use qm_common::protocol::{Note, Reply};
use qm_common::qspace::Attachment;
use qm_common::{QmError, QmResult};

pub fn ipcs(ctx: &mut Ctx<'_>, store: &mut Store, name: Option<String>) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let names: Vec<String> = match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            require_qspace(device, &n)?;
            vec![n]
        }
        None => device.qspaces()?.into_iter().map(|r| r.params.name).collect(),
    };
    let mut list = Vec::new();
    for name in &names {
        let record = require_qspace(device, name)?;
        let state = state_of(ctx, store, name);
        let attached = ctx.daemon.sessions.attached(name, store.generation, None);
        // A loaded space nobody is attached to still holds state: show it as qmd's.
        if let (true, Some(loaded)) = (attached.is_empty(), store.loaded.get(name)) {
            list.push(Attachment {
                qspace: name.clone(),
                ipc_key: record.params.ipc_key,
                state,
                session: 0,
                pid: None,
                program: "qmd".into(),
                kind: "loaded".into(),
                since: loaded.since,
            });
        }
        for s in attached {
            list.push(Attachment {
                qspace: name.clone(),
                ipc_key: record.params.ipc_key,
                state,
                session: s.id,
                pid: s.pid,
                program: s.program.clone(),
                kind: s.kind.label().into(),
                since: s.open.map_or(s.since, |o| o.since),
            });
        }
    }
    if list.is_empty() {
        let what = names
            .first()
            .filter(|_| names.len() == 1)
            .map_or("any queue space".to_string(), |n| format!("queue space {n}"));
        ctx.note(Note::info(format!("No IPC resources: {what} is not open")));
    }
    Ok(Reply::Attachments(list))
}

pub fn ipcrm(ctx: &mut Ctx<'_>, store: &mut Store, name: &str, force: bool) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    require_qspace(device, name)?;
    let others = ctx.daemon.sessions.attached(name, store.generation, Some(ctx.session));
    if !others.is_empty() && !force {
        return Err(QmError::in_use(format!(
            "ipcrm - processes attached to queue space {name}: {}; use -f to remove anyway",
            describe_all(&others)
        )));
    }
    let was_loaded = store.loaded.contains_key(name);
    let own = ctx.daemon.sessions.open_of(ctx.session, store.generation).as_deref() == Some(name);
    ctx.daemon.sessions.detach_all(name);
    store.unload(name);
    if was_loaded || own || !others.is_empty() {
        ctx.note(Note::info(format!("IPC resources of queue space {name} removed")));
    } else {
        ctx.note(Note::info(format!("No IPC resources: queue space {name} is not open")));
    }
    Ok(Reply::Unit)
}

/// `qstat`: a view of a loaded queue space at this instant (the open one by default).
pub fn stat(ctx: &mut Ctx<'_>, store: &mut Store, name: Option<String>) -> QmResult<Reply> {
    let device = require_device(ctx, store)?;
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => super::require_open(ctx, store)?,
    };
    require_qspace(device, &name)?;
    let engine = store.engine(&name).ok_or_else(|| {
        QmError::new(
            qm_common::Diagnostic::NotOpen,
            format!(
                "Queue space {name} is not loaded: nothing moves in it; qopen it (or start its \
                 clients) to watch it"
            ),
        )
    })?;
    let mut queues = engine.stat_rows();
    for forwarder in ctx.daemon.forwarders.list() {
        let running = matches!(forwarder.state.as_str(), "running" | "idle");
        if !running || forwarder.qspace != name {
            continue;
        }
        for q in queues.iter_mut().filter(|q| forwarder.queues.contains(&q.queue)) {
            q.forwarders.push(forwarder.id);
        }
    }
    let sessions = ctx.daemon.sessions.attached(&name, store.generation, None).len() as u32;
    Ok(Reply::Stat(Box::new(qm_common::stat::SpaceStat {
        qspace: name,
        taken_us: crate::engine::record::now_us(),
        sessions,
        queues,
    })))
}
