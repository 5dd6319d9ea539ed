//! Forwarders and threshold commands: `boot`, `shutdown`, `printserver`, `qthlog`,
//! `qthtest`, and `daemon reload`.

use super::{Ctx, require_open};
use crate::engine::Engine;
use crate::engine::thresholds::Set;
use qm_common::protocol::{AutomationRequest, Note, Reply};
use qm_common::{QmError, QmResult};
use std::sync::Arc;

pub fn handle(ctx: &mut Ctx<'_>, request: AutomationRequest) -> QmResult<Reply> {
    let forwarders = ctx.daemon.forwarders.clone();
    match request {
        AutomationRequest::Boot { id } => {
            forwarders.boot(ctx.daemon, id)?;
            ctx.note(Note::info(format!("Forwarder {id} booted")));
            Ok(Reply::Unit)
        }
        AutomationRequest::Shutdown { id, queue } => {
            let n = forwarders.shutdown(id, queue.as_deref())?;
            let forwarders = qm_common::plural::count(n as u64, "forwarder", "forwarders");
            ctx.note(Note::info(format!("{forwarders} shut down")));
            Ok(Reply::Count(n as u64))
        }
        AutomationRequest::Servers => Ok(Reply::Servers(forwarders.list())),
        AutomationRequest::ThresholdLog { queue } => {
            let engine = open_engine(ctx)?;
            if let Some(q) = queue.as_deref().filter(|q| engine.queue_def(q).is_none()) {
                return Err(crate::engine::bad_queue(q, &engine.name));
            }
            Ok(Reply::Firings(engine.firings(queue.as_deref())))
        }
        AutomationRequest::ThresholdTest { queue, nonpersistent } => {
            let engine = open_engine(ctx)?;
            let set = if nonpersistent { Set::NonPersistent } else { Set::Persistent };
            let record =
                tokio::runtime::Handle::current().block_on(engine.test_fire(&queue, set))?;
            Ok(Reply::Firing(Box::new(record)))
        }
        AutomationRequest::Reload => {
            // A refusal is for the log too: it may be a file someone else planted.
            if let Err(e) = ctx.daemon.reload() {
                tracing::warn!("configuration not reloaded: {}", e.message);
                return Err(e);
            }
            let read = format!("Configuration re-read ({})", ctx.daemon.config_path_text());
            tracing::info!("{read}");
            ctx.note(Note::info(read));
            // Running forwarders follow the file: removed ones stop, changed ones restart.
            for line in forwarders.apply(ctx.daemon) {
                ctx.note(Note::info(line));
            }
            Ok(Reply::Unit)
        }
    }
}

/// The engine of the session's open queue space.
fn open_engine(ctx: &Ctx<'_>) -> QmResult<Arc<Engine>> {
    let store = ctx.daemon.store();
    let name = require_open(ctx, &store)?;
    store
        .engine(&name)
        .ok_or_else(|| QmError::system(format!("queue space {name} is open but not loaded")))
}
