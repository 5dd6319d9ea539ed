//! Who may do what: the one check every request passes before it is served, on every face
//! (socket, TCP, TLS, HTTP), decided on the session's principal alone.
//!
//! * The daemon's owner (`unix:<owner>`) and root hold `admin` everywhere, whatever is
//!   granted, so nobody can lock them out; the daemon's own forwarders register as the owner.
//! * Everyone else holds what was granted (`qgrant`) and nothing more. A pattern never gives
//!   `anonymous` `admin` (see [`qm_common::rights`]).
//! * Requests map to rights as [`need`] says: enqueue and dequeue to themselves, reading
//!   (peek, `qlist`, `qinfo` and the other listings) to `browse`, everything else to `admin`.
//!   Opening a queue space (`qopen`, `begin`) needs any right on it or on one of its queues;
//!   `whoami`, `qauth` of oneself, `qclose`, `qsize`, commit and abort need none.
//!
//! Grants live in the device file and are read once per device: the cache is marked stale
//! whenever the store lets go of its device or opens another, and rewritten by every grant
//! and revoke, both under the store's lock.

use crate::state::{Daemon, Store};
use qm_common::principal::Principal;
use qm_common::protocol::{
    AutomationRequest, DaemonRequest, DataRequest, DeviceRequest, MessageRequest, QueueRequest,
    QueueSpaceRequest, Request, RightsRequest,
};
use qm_common::rights::{self, Grant, Place, Right, Scope};
use qm_common::{QmError, QmResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The grants of the device served, and who holds `admin` regardless.
pub struct Policy {
    owner: Principal,
    root: Principal,
    grants: RwLock<Arc<Vec<Grant>>>,
    /// Set when the grants above may no longer be the device's.
    stale: Arc<AtomicBool>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

impl Policy {
    pub fn new() -> Policy {
        Policy {
            owner: Principal::unix(rustix::process::geteuid().as_raw()),
            root: Principal::unix(0),
            grants: RwLock::default(),
            stale: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The flag the store raises when it changes device.
    pub fn stale_flag(&self) -> Arc<AtomicBool> {
        self.stale.clone()
    }

    /// The daemon's owner and root: `admin` everywhere, always.
    pub fn always_admin(&self, who: &Principal) -> bool {
        *who == self.owner || *who == self.root
    }

    pub fn always_admin_list(&self) -> Vec<Principal> {
        let mut list = vec![self.owner.clone()];
        if self.root != self.owner {
            list.push(self.root.clone());
        }
        list
    }

    fn cached(&self) -> Option<Arc<Vec<Grant>>> {
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        Some(self.grants.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Reads the grants of the store's device again (the store is locked: nothing changes
    /// devices meanwhile). No device: no grants.
    pub fn reload(&self, store: &Store) -> QmResult<Arc<Vec<Grant>>> {
        let grants = Arc::new(match &store.device {
            Some(device) => device.grants()?,
            None => Vec::new(),
        });
        *self.grants.write().unwrap_or_else(|p| p.into_inner()) = grants.clone();
        // Cleared after the new grants are in place: a reader never takes old ones for new.
        self.stale.store(false, Ordering::Release);
        Ok(grants)
    }

    /// The grants in force; may lock the store and read the device (a blocking call).
    pub fn grants(&self, daemon: &Daemon) -> QmResult<Arc<Vec<Grant>>> {
        match self.cached() {
            Some(grants) => Ok(grants),
            None => self.reload(&daemon.store()),
        }
    }
}

/// What a request needs before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// Each of these rights, at its place.
    All(Vec<(Right, Place)>),
    /// Some right on the queue space or on one of its queues (opening it).
    AnyIn(String),
}

fn one(right: Right, place: Place) -> Need {
    Need::All(vec![(right, place)])
}

/// The rights `request` needs from `who`. `space` is the queue space it works on when it
/// names none (the session's open one, or its transaction's); without one, a request that
/// needs it is refused by its handler, and needs nothing here.
pub fn need(request: &Request, space: Option<&str>, who: &Principal) -> Need {
    let space = space.map(str::to_string);
    let at_space = |right: Right| match &space {
        Some(s) => one(right, Place::Space(s.clone())),
        None => Need::Nothing,
    };
    let at_queue = |right: Right, queue: &str| match &space {
        Some(s) => one(right, Place::Queue(s.clone(), queue.to_string())),
        None => Need::Nothing,
    };
    let daemon = |right: Right| one(right, Place::Daemon);
    match request {
        Request::Hello(_) => Need::Nothing,
        Request::Daemon(r) => match r {
            DaemonRequest::Status => daemon(Right::Browse),
            DaemonRequest::Stop => daemon(Right::Admin),
            // Shown only what the session may use (see `visible_*`).
            DaemonRequest::Names => Need::Nothing,
        },
        Request::Device(r) => match r {
            DeviceRequest::List { .. }
            | DeviceRequest::Vtoc
            | DeviceRequest::Verify { .. }
            | DeviceRequest::Rename { new_name: None, .. } => daemon(Right::Browse),
            DeviceRequest::Create { .. }
            | DeviceRequest::Backup { .. }
            | DeviceRequest::Restore { .. }
            | DeviceRequest::Destroy { .. }
            | DeviceRequest::Rename { new_name: Some(_), .. } => daemon(Right::Admin),
        },
        Request::QueueSpace(r) => match r {
            // Device space is shared: making a queue space is the daemon's business.
            QueueSpaceRequest::Create(_) | QueueSpaceRequest::Move { .. } => daemon(Right::Admin),
            QueueSpaceRequest::List { name: Some(name) } => {
                one(Right::Browse, Place::Space(name.clone()))
            }
            QueueSpaceRequest::List { name: None } => at_space(Right::Browse),
            QueueSpaceRequest::Change(change) => {
                one(Right::Admin, Place::Space(change.name.clone()))
            }
            QueueSpaceRequest::Destroy { name, .. }
            | QueueSpaceRequest::AddExtent { name, .. }
            | QueueSpaceRequest::Ipcrm { name, .. } => {
                one(Right::Admin, Place::Space(name.clone()))
            }
            QueueSpaceRequest::Open { name } => Need::AnyIn(name.clone()),
            // Closing one's own, and an estimate from numbers given: nothing to protect.
            QueueSpaceRequest::Close | QueueSpaceRequest::Size { .. } => Need::Nothing,
            QueueSpaceRequest::Ipcs { name: Some(name) } => {
                one(Right::Browse, Place::Space(name.clone()))
            }
            QueueSpaceRequest::Ipcs { name: None } => daemon(Right::Browse),
            QueueSpaceRequest::Stat { name: Some(name) } => {
                one(Right::Browse, Place::Space(name.clone()))
            }
            QueueSpaceRequest::Stat { name: None } => at_space(Right::Browse),
        },
        Request::Queue(r) => match r {
            QueueRequest::Create(def) => at_queue(Right::Admin, &def.name),
            QueueRequest::Change(change) => at_queue(Right::Admin, &change.name),
            QueueRequest::Destroy { name, .. } => at_queue(Right::Admin, name),
            QueueRequest::Info { name: Some(name) } | QueueRequest::Get { name } => {
                at_queue(Right::Browse, name)
            }
            QueueRequest::Info { name: None } => at_space(Right::Browse),
            QueueRequest::Alias { queue, .. } => at_queue(Right::Admin, queue),
            QueueRequest::Unalias { .. } => at_space(Right::Admin),
        },
        Request::Data(r) => match r {
            DataRequest::Begin { qspace, .. } => match qspace.clone().or(space) {
                Some(s) => Need::AnyIn(s),
                None => Need::Nothing,
            },
            DataRequest::Commit | DataRequest::Abort => Need::Nothing,
            DataRequest::Enqueue { qspace, queue, .. } => match qspace.clone().or(space) {
                Some(s) => one(Right::Enqueue, Place::Queue(s, queue.clone())),
                None => Need::Nothing,
            },
            DataRequest::Dequeue { qspace, queue, ctl } => {
                let right = if ctl.peek { Right::Browse } else { Right::Dequeue };
                match qspace.clone().or(space) {
                    Some(s) => one(right, Place::Queue(s, queue.clone())),
                    None => Need::Nothing,
                }
            }
        },
        Request::Message(r) => match r {
            MessageRequest::List { queue, .. } => at_queue(Right::Browse, queue),
            MessageRequest::Export { queue: Some(queue), take: false, .. } => {
                at_queue(Right::Browse, queue)
            }
            MessageRequest::Export { queue: None, take: false, .. } => at_space(Right::Browse),
            // Taking messages out is an administrator's change.
            MessageRequest::Export { queue: Some(queue), take: true, .. } => {
                at_queue(Right::Admin, queue)
            }
            MessageRequest::Export { queue: None, take: true, .. }
            | MessageRequest::EndExport { .. } => at_space(Right::Admin),
            MessageRequest::Import { .. } => at_space(Right::Admin),
            MessageRequest::Transactions => at_space(Right::Browse),
            MessageRequest::Complete { .. } => at_space(Right::Admin),
            // The message's queue is known only once it is found: its handler then asks
            // for `browse` there (see [`check_browse`]).
            MessageRequest::Why { .. } => match &space {
                Some(s) => Need::AnyIn(s.clone()),
                None => Need::Nothing,
            },
            MessageRequest::ChangeQueue { queue, new_queue, .. } => match &space {
                Some(s) => Need::All(vec![
                    (Right::Admin, Place::Queue(s.clone(), queue.clone())),
                    (Right::Admin, Place::Queue(s.clone(), new_queue.clone())),
                ]),
                None => Need::Nothing,
            },
            MessageRequest::Delete { queue, .. }
            | MessageRequest::ChangePriority { queue, .. }
            | MessageRequest::ChangeTime { queue, .. }
            | MessageRequest::ChangeExpiration { queue, .. } => at_queue(Right::Admin, queue),
        },
        Request::Automation(r) => match r {
            AutomationRequest::Boot { .. }
            | AutomationRequest::Shutdown { .. }
            | AutomationRequest::Reload => daemon(Right::Admin),
            AutomationRequest::Servers => daemon(Right::Browse),
            AutomationRequest::ThresholdLog { queue: Some(q) } => at_queue(Right::Browse, q),
            AutomationRequest::ThresholdLog { queue: None } => at_space(Right::Browse),
            AutomationRequest::ThresholdTest { queue, .. } => at_queue(Right::Admin, queue),
        },
        Request::Rights(r) => match r {
            RightsRequest::WhoAmI => Need::Nothing,
            RightsRequest::List { principal: Some(p) } if p == who => Need::Nothing,
            RightsRequest::List { .. } | RightsRequest::Grant(_) | RightsRequest::Revoke(_) => {
                daemon(Right::Admin)
            }
        },
    }
}

/// Whether `grants` satisfy `need` for `who`; the refusal says who, what and where.
pub fn decide(grants: &[Grant], who: &Principal, need: &Need) -> QmResult<()> {
    match need {
        Need::Nothing => Ok(()),
        Need::All(list) => {
            for (right, place) in list {
                if !rights::allowed(grants, who, *right, place) {
                    return Err(rights::refusal(who, *right, place));
                }
            }
            Ok(())
        }
        Need::AnyIn(space) => {
            let any =
                grants.iter().any(|g| g.scope.touches(space) && g.rights_of(who).next().is_some());
            if any { Ok(()) } else { Err(rights::no_right_in(who, space)) }
        }
    }
}

/// The check, from a blocking thread (admin requests). `space`: see [`need`].
pub fn check(
    daemon: &Daemon,
    who: &Principal,
    request: &Request,
    space: Option<&str>,
) -> QmResult<()> {
    if daemon.rights.always_admin(who) {
        return Ok(());
    }
    let need = need(request, space, who);
    if need == Need::Nothing {
        return Ok(());
    }
    let result = decide(&daemon.rights.grants(daemon)?, who, &need);
    log_refusal(&result);
    result
}

/// The check, from the async side (data requests): the device is read, when it must be,
/// on a blocking thread.
pub async fn check_async(
    daemon: &Arc<Daemon>,
    who: &Principal,
    request: &Request,
    space: Option<&str>,
) -> QmResult<()> {
    check_need_async(daemon, who, need(request, space, who)).await
}

/// `browse` on one queue, from the async side: for a request whose queue is known only once
/// its handler found it (`qwhy`).
pub async fn check_browse(
    daemon: &Arc<Daemon>,
    who: &Principal,
    space: &str,
    queue: &str,
) -> QmResult<()> {
    let need = one(Right::Browse, Place::Queue(space.to_string(), queue.to_string()));
    check_need_async(daemon, who, need).await
}

async fn check_need_async(daemon: &Arc<Daemon>, who: &Principal, need: Need) -> QmResult<()> {
    if daemon.rights.always_admin(who) || need == Need::Nothing {
        return Ok(());
    }
    let grants = match daemon.rights.cached() {
        Some(grants) => grants,
        None => {
            let d = daemon.clone();
            tokio::task::spawn_blocking(move || d.rights.grants(&d))
                .await
                .map_err(|e| QmError::system(format!("reading rights failed: {e}")))??
        }
    };
    let result = decide(&grants, who, &need);
    log_refusal(&result);
    result
}

fn log_refusal(result: &QmResult<()>) {
    if let Err(e) = result {
        tracing::info!("refused: {}", e.message);
    }
}

/// Whether `who` holds some right on the queue space `space` or one of its queues: what
/// completion may show them. The caller holds the store.
pub fn may_see_space(daemon: &Daemon, store: &Store, who: &Principal, space: &str) -> bool {
    if daemon.rights.always_admin(who) {
        return true;
    }
    let grants = daemon.rights.cached().map_or_else(|| daemon.rights.reload(store), Ok);
    grants.is_ok_and(|g| decide(&g, who, &Need::AnyIn(space.into())).is_ok())
}

/// The scopes where `anonymous` holds `admin` (granted to it by name: a pattern never gives
/// it); empty when it holds none. For the network face to warn about at its start.
pub fn anonymous_admin(daemon: &Daemon) -> QmResult<Vec<Scope>> {
    let anonymous = Principal::anonymous();
    Ok(daemon
        .rights
        .grants(daemon)?
        .iter()
        .filter(|g| g.rights_of(&anonymous).any(|r| r == Right::Admin))
        .map(|g| g.scope.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qm_common::message::DequeueCtl;

    fn bob() -> Principal {
        Principal::parse("unix:bob").unwrap()
    }

    #[test]
    fn peek_is_browsing() {
        let ctl = DequeueCtl { peek: true, ..Default::default() };
        let r = Request::Data(DataRequest::Dequeue { qspace: None, queue: "Q".into(), ctl });
        assert_eq!(
            need(&r, Some("QS"), &bob()),
            one(Right::Browse, Place::Queue("QS".into(), "Q".into()))
        );
        assert_eq!(need(&r, None, &bob()), Need::Nothing);
    }

    #[test]
    fn oneself_is_free_to_see() {
        let mine = Request::Rights(RightsRequest::List { principal: Some(bob()) });
        assert_eq!(need(&mine, None, &bob()), Need::Nothing);
        let all = Request::Rights(RightsRequest::List { principal: None });
        assert_eq!(need(&all, None, &bob()), one(Right::Admin, Place::Daemon));
    }

    #[test]
    fn opening_needs_some_right_there() {
        let g = vec![Grant::parse("unix:bob", "enqueue", Some("QS/Q")).unwrap()];
        assert!(decide(&g, &bob(), &Need::AnyIn("QS".into())).is_ok());
        let e = decide(&g, &bob(), &Need::AnyIn("OTHER".into())).unwrap_err();
        assert_eq!(
            e.message,
            "QMEPERM: unix:bob may not open OTHER: it holds no right on it or its queues"
        );
    }
}
