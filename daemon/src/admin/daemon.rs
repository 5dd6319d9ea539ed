//! Daemon-level requests: status, stop, and names for completion.

use super::Ctx;
use qm_common::QmResult;
use qm_common::protocol::{DaemonRequest, DaemonStatus, Names, Reply};

pub fn handle(ctx: &mut Ctx<'_>, request: DaemonRequest) -> QmResult<Reply> {
    match request {
        DaemonRequest::Status => status(ctx),
        DaemonRequest::Stop => {
            ctx.daemon.request_shutdown();
            Ok(Reply::Unit)
        }
        DaemonRequest::Names => names(ctx),
    }
}

fn status(ctx: &Ctx<'_>) -> QmResult<Reply> {
    let store = ctx.daemon.store();
    Ok(Reply::Status(DaemonStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        device: ctx.daemon.device_path.display().to_string(),
        device_exists: store.device.is_some(),
        socket: ctx.daemon.socket_path.display().to_string(),
        started: ctx.daemon.started,
        sessions: ctx.daemon.sessions.count() as u32,
        loaded_qspaces: store.loaded.keys().cloned().collect(),
        config: ctx.daemon.config_path_text(),
        network: ctx.daemon.network.get().cloned(),
    }))
}

fn names(ctx: &Ctx<'_>) -> QmResult<Reply> {
    let store = ctx.daemon.store();
    let Some(device) = &store.device else { return Ok(Reply::Names(Names::default())) };
    // Only the queue spaces the session may open are offered to it.
    let who = ctx.daemon.sessions.get(ctx.session).map(|s| s.principal);
    let visible = |space: &str| {
        who.as_ref().is_some_and(|w| crate::rights::may_see_space(ctx.daemon, &store, w, space))
    };
    let qspaces =
        device.qspaces()?.into_iter().map(|r| r.params.name).filter(|n| visible(n)).collect();
    let queues = match ctx.daemon.sessions.open_of(ctx.session, store.generation) {
        Some(name) if visible(&name) => {
            super::queue::queue_defs(device, &name)?.into_iter().map(|d| d.name).collect()
        }
        _ => Vec::new(),
    };
    Ok(Reply::Names(Names { qspaces, queues }))
}
