//! Admin requests: one module per command family, one dispatch table here.
//!
//! Handlers run on a blocking thread with the store locked, so each request sees and leaves
//! a consistent device. They validate everything before writing anything: a refused request
//! changes nothing. Work that grows with a queue space's size (initializing its extents) is
//! handed back in [`Ctx::then`] and runs once the store is unlocked.

mod automation;
mod daemon;
mod device;
mod initialize;
mod ipc;
mod moving;
mod qspace;
pub mod queue;
mod rights;

use crate::state::{Daemon, Store};
use crate::storage::Device;
use crate::storage::handle::DbFile;
use crate::storage::records::QueueSpaceRecord;
use qm_common::device::VtocEntry;
use qm_common::protocol::{Note, Progress, QueueSpaceRequest, Reply, Request};
use qm_common::{Diagnostic, QmError, QmResult};
use std::sync::Arc;

/// What a handler knows about the request it serves.
pub struct Ctx<'a> {
    pub daemon: &'a Arc<Daemon>,
    pub session: u64,
    pub progress: &'a (dyn Fn(Progress) + Sync),
    pub notes: Vec<Note>,
    /// Long work a handler left to run after the store is unlocked (dropped unrun if the
    /// handler then failed).
    pub then: Option<initialize::Initialization>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        daemon: &'a Arc<Daemon>,
        session: u64,
        progress: &'a (dyn Fn(Progress) + Sync),
    ) -> Self {
        Ctx { daemon, session, progress, notes: Vec::new(), then: None }
    }

    pub fn note(&mut self, note: Note) {
        self.notes.push(note);
    }
}

/// Serves one admin request, if the session's principal may make it.
pub fn handle(ctx: &mut Ctx<'_>, request: Request) -> QmResult<Reply> {
    let session = ctx.daemon.sessions.get(ctx.session).ok_or_else(|| {
        QmError::system(format!("session {} is not registered; request refused", ctx.session))
    })?;
    let open = session.open.as_ref().map(|o| o.name.as_str());
    crate::rights::check(ctx.daemon, &session.principal, &request, open)?;
    if let Request::Daemon(r) = request {
        return daemon::handle(ctx, r);
    }
    // Booting a forwarder attaches it, which takes the store itself.
    if let Request::Automation(r) = request {
        return automation::handle(ctx, r);
    }
    let reply = {
        let mut store = ctx.daemon.store();
        if let Some(name) = named_qspace(&request) {
            store.check_not_initializing(name)?;
        }
        match request {
            Request::Device(r) => device::handle(ctx, &mut store, r),
            Request::QueueSpace(r) => qspace::handle(ctx, &mut store, r),
            Request::Queue(r) => queue::handle(ctx, &mut store, r),
            Request::Rights(r) => rights::handle(ctx, &mut store, r),
            Request::Hello(_) => {
                Err(QmError::new(Diagnostic::Proto, "the session is already greeted"))
            }
            Request::Automation(_) => unreachable!("handled above"),
            Request::Data(_) | Request::Message(_) => {
                Err(QmError::new(Diagnostic::Proto, "data requests are served asynchronously"))
            }
            Request::Daemon(_) => unreachable!("handled above"),
        }?
    };
    if let Some(init) = ctx.then.take() {
        initialize::run(ctx, init)?;
    }
    Ok(reply)
}

/// The queue space a request changes or attaches to, by name.
fn named_qspace(request: &Request) -> Option<&str> {
    match request {
        Request::QueueSpace(
            QueueSpaceRequest::Open { name }
            | QueueSpaceRequest::Destroy { name, .. }
            | QueueSpaceRequest::AddExtent { name, .. }
            | QueueSpaceRequest::Ipcrm { name, .. },
        ) => Some(name),
        Request::QueueSpace(QueueSpaceRequest::Change(change)) => Some(&change.name),
        _ => None,
    }
}

/// The device, or the error Tuxedo gives when there is none.
pub fn require_device<'s>(ctx: &Ctx<'_>, store: &'s Store) -> QmResult<&'s Device> {
    store.device.as_ref().ok_or_else(|| match &store.open_error {
        Some(why) => QmError::inval(why.clone()),
        None => QmError::not_found(format!(
            "Device list not initialized on {}; create it with crdl",
            ctx.daemon.device_path.display()
        )),
    })
}

/// A queue space record, or a clear error naming it.
pub fn require_qspace(device: &Device, name: &str) -> QmResult<QueueSpaceRecord> {
    qm_common::names::check_qspace_name(name)?;
    device
        .qspace(name)?
        .ok_or_else(|| QmError::not_found(format!("Queue space {name} does not exist")))
}

/// The extents of a queue space, in extent order.
pub fn extents_of(vtoc: &[VtocEntry], name: &str) -> Vec<VtocEntry> {
    let mut list: Vec<VtocEntry> =
        vtoc.iter().filter(|t| t.extent.is_some() && t.name == name).cloned().collect();
    list.sort_by_key(|t| t.extent);
    list
}

/// The file a queue space lives in (its first extent's entry) and that file's database.
pub fn qspace_file(device: &Device, name: &str) -> QmResult<(String, Arc<DbFile>)> {
    let file = qspace_file_name(device, name)?;
    let db = device.file_db(&file)?;
    Ok((file, db))
}

/// The name of the file a queue space lives in.
pub fn qspace_file_name(device: &Device, name: &str) -> QmResult<String> {
    let vtoc = device.vtoc()?;
    let first = extents_of(&vtoc, name)
        .into_iter()
        .next()
        .ok_or_else(|| QmError::system(format!("queue space {name} has no extent in the VTOC")))?;
    let udl = device.udl()?;
    let entry = udl.iter().find(|e| e.index == first.device).ok_or_else(|| {
        QmError::system(format!(
            "queue space {name} is on UDL entry {} which is missing",
            first.device
        ))
    })?;
    Ok(if entry.index == 0 { device.path().display().to_string() } else { entry.name.clone() })
}

/// Closes the session's own attachment to `name` and refuses if anyone else is attached;
/// then drops the space's in-memory state. Used by commands that need the space inactive.
pub fn make_inactive(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    name: &str,
    force: bool,
) -> QmResult<()> {
    let others = ctx.daemon.sessions.attached(name, store.generation, Some(ctx.session));
    if !others.is_empty() && !force {
        return Err(QmError::in_use(format!(
            "Queue space {name} is active; attached: {}",
            crate::registry::describe_all(&others)
        )));
    }
    if ctx.daemon.sessions.open_of(ctx.session, store.generation).as_deref() == Some(name) {
        ctx.daemon.sessions.set_open(ctx.session, None);
        ctx.note(Note::info(format!("Queue space {name} closed")));
    }
    ctx.daemon.sessions.detach_all(name);
    if store.unload(name) {
        ctx.note(Note::warn(format!(
            "In-memory state of queue space {name} was reset: its non-persistent messages are lost"
        )));
    }
    Ok(())
}

/// The queue space the session has open, or Tuxedo's error.
pub fn require_open(ctx: &Ctx<'_>, store: &Store) -> QmResult<String> {
    let sessions = &ctx.daemon.sessions;
    sessions.open_of(ctx.session, store.generation).ok_or_else(|| {
        match sessions.stale_open_of(ctx.session, store.generation) {
            Some(name) => {
                // Said once; after that the session simply has nothing open.
                sessions.set_open(ctx.session, None);
                QmError::new(
                    Diagnostic::NotOpen,
                    format!(
                        "Queue space {name} was closed because the device file was removed or \
                     replaced; open it again (qopen)"
                    ),
                )
            }
            None => QmError::new(Diagnostic::NotOpen, "Queue space must be opened first (qopen)"),
        }
    })
}
