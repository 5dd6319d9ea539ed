//! Several queue managers: an application names a queue as `[MANAGER/]QSPACE/QUEUE` and
//! its request goes to the manager named, or to the reachable manager of highest priority
//! that serves the queue space (static load distribution, and failover of producers, as
//! seed 004 describes). Which managers there are comes from the profile
//! ([`crate::profile`]); `qmadmin managers` shows what [`survey`] finds.

use crate::client::{CallFailure, Done};
use crate::error::{Diagnostic, QmError, QmResult};
use crate::failover::Failover;
use crate::message::{DequeueCtl, EnqueueCtl, Message, MsgId};
use crate::profile::{FullName, Manager, Profile, Source};
use crate::protocol::{ClientKind, DaemonRequest, DataRequest, Reply, Request};
use serde::Serialize;
use std::time::Duration;

/// How long one manager may take to answer when it is surveyed or first asked which
/// queue spaces it serves.
const ASK_LIMIT: Duration = Duration::from_secs(5);

/// A result, with the manager that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<T> {
    pub manager: String,
    pub value: T,
}

/// The connection to one manager, and the queue spaces it said it serves.
struct Link {
    name: String,
    conn: Failover,
    served: Option<Vec<String>>,
}

/// Connections to the managers of a profile, made when first needed.
pub struct Managers {
    profile: Profile,
    program: String,
    kind: ClientKind,
    links: Vec<Link>,
}

impl Managers {
    /// Routes by `profile`, as `program`.
    pub fn new(profile: Profile, program: &str, kind: ClientKind) -> Managers {
        Managers { profile, program: program.to_string(), kind, links: Vec::new() }
    }

    /// Routes by the user's and the host's profiles and `QM_MANAGER`.
    pub fn from_profile(program: &str) -> Result<Managers, String> {
        Ok(Managers::new(Profile::load()?, program, ClientKind::Application))
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Enqueues on `name` (`[MANAGER/]QSPACE/QUEUE`); says which manager took it.
    pub async fn enqueue(
        &mut self,
        name: &str,
        body: &[u8],
        ctl: &EnqueueCtl,
    ) -> QmResult<Routed<MsgId>> {
        let request = |full: &FullName| DataRequest::enqueue(&full.qspace, &full.queue, body, ctl);
        let done = self.route(name, request, |_| false).await?;
        Ok(Routed { manager: done.manager, value: done.value.reply.into_msgid()? })
    }

    /// Dequeues from `name` (`[MANAGER/]QSPACE/QUEUE`): from the manager named, else from
    /// the first, in priority order, that has a message there, so that what producers left
    /// on a lower manager while a higher one was away is taken too. A dequeue that waits
    /// (`ctl.wait_ms`) and finds none anywhere waits at the first manager that serves the
    /// queue space.
    pub async fn dequeue(&mut self, name: &str, ctl: &DequeueCtl) -> QmResult<Routed<Message>> {
        let no_msg = |e: &QmError| e.diagnostic == Diagnostic::NoMsg;
        let now = DequeueCtl { wait_ms: None, ..ctl.clone() };
        let request = |full: &FullName| DataRequest::dequeue(&full.qspace, &full.queue, &now);
        let done = match self.route(name, request, no_msg).await {
            Err(e) if no_msg(&e) && ctl.wait_ms.is_some() => {
                let request =
                    |full: &FullName| DataRequest::dequeue(&full.qspace, &full.queue, ctl);
                self.route(name, request, |_| false).await?
            }
            other => other?,
        };
        Ok(Routed { manager: done.manager, value: done.value.reply.into_message()? })
    }

    /// Sends the request `make` builds for `name` to the manager named, else to the
    /// reachable one of highest priority that serves the queue space: a manager no request
    /// reached hands over to the next, and so does one whose refusal `pass_on` accepts
    /// (when every one refused so, the last refusal is the answer). The error says why
    /// each manager tried was passed.
    async fn route(
        &mut self,
        name: &str,
        make: impl Fn(&FullName) -> DataRequest,
        pass_on: impl Fn(&QmError) -> bool,
    ) -> QmResult<Routed<Done>> {
        let full = FullName::parse(name, &self.profile).map_err(QmError::inval)?;
        let candidates: Vec<Manager> = match &full.manager {
            Some(m) => self.profile.find(m).into_iter().cloned().collect(),
            None => self.profile.candidates().into_iter().cloned().collect(),
        };
        if candidates.is_empty() {
            return Err(QmError::new(
                Diagnostic::NotFound,
                format!(
                    "no queue manager to send {name} to: set {} or list managers in a profile \
                     ({})",
                    crate::profile::MANAGER_ENV,
                    self.profile.read_text()
                ),
            ));
        }
        let mut why = Vec::new();
        let mut refused = None;
        for manager in &candidates {
            let link = self.link(manager);
            match self.serves(link, &full.qspace).await {
                Ok(true) => {}
                Ok(false) => {
                    why.push(format!("{} does not serve {}", manager.name, full.qspace));
                    continue;
                }
                Err(e) => {
                    why.push(format!("{} is unreachable ({})", manager.name, e.message));
                    continue;
                }
            }
            let sent = self.links[link].conn.call_telling(&Request::Data(make(&full))).await;
            match sent {
                Ok(done) => return Ok(Routed { manager: manager.name.clone(), value: done }),
                Err(CallFailure::Refused(e)) if pass_on(&e) => refused = Some(e),
                Err(failure) => {
                    // Asked again next time: it may have stopped, or lost the queue space.
                    self.links[link].served = None;
                    match failure {
                        CallFailure::Unsent(e) => {
                            why.push(format!("{} is unreachable ({})", manager.name, e.message));
                        }
                        other => return Err(other.into_error()),
                    }
                }
            }
        }
        Err(refused.unwrap_or_else(|| {
            QmError::new(
                Diagnostic::NotFound,
                format!("no queue manager serves {name}: {}", why.join("; ")),
            )
        }))
    }

    /// The index of the link to `manager`, made now if there is none.
    fn link(&mut self, manager: &Manager) -> usize {
        if let Some(i) = self.links.iter().position(|l| l.name == manager.name) {
            return i;
        }
        // One round of its addresses: an unreachable manager hands over to the next.
        let conn = Failover::new(manager.addresses(), &self.program, self.kind)
            .with_patience(Duration::ZERO);
        self.links.push(Link { name: manager.name.clone(), conn, served: None });
        self.links.len() - 1
    }

    /// Whether the manager of `link` serves `qspace` (asked once, again after a failure).
    async fn serves(&mut self, link: usize, qspace: &str) -> QmResult<bool> {
        let link = &mut self.links[link];
        if link.served.is_none() {
            link.served = Some(queue_spaces(&mut link.conn).await?);
        }
        Ok(link.served.as_ref().is_some_and(|s| s.iter().any(|q| q == qspace)))
    }
}

/// The queue spaces the daemon behind `conn` serves (those we may see).
async fn queue_spaces(conn: &mut Failover) -> QmResult<Vec<String>> {
    let asked = tokio::time::timeout(ASK_LIMIT, conn.call(Request::Daemon(DaemonRequest::Names)));
    let answer = asked.await.map_err(|_| {
        QmError::new(Diagnostic::Os, format!("no answer within {} s", ASK_LIMIT.as_secs()))
    })??;
    match answer.reply {
        Reply::Names(names) => Ok(names.qspaces),
        other => Err(other.unexpected()),
    }
}

/// What `qmadmin managers` shows of one manager.
#[derive(Debug, Clone, Serialize)]
pub struct ManagerState {
    pub name: String,
    pub priority: i64,
    pub source: Source,
    /// Where it is: a device, or its addresses.
    pub place: String,
    /// `QM_MANAGER` names it.
    pub chosen: bool,
    /// A daemon answered.
    pub up: bool,
    /// The address that answered.
    pub answered: Option<String>,
    pub pid: Option<u32>,
    pub device: Option<String>,
    /// The queue spaces it serves that we may see.
    pub qspaces: Vec<String>,
    /// Why it is not up.
    pub error: Option<String>,
}

/// Asks every manager of `profile` (and the one `QM_MANAGER` names) whether it answers and
/// which queue spaces it serves; in the order an application would try them.
pub async fn survey(profile: &Profile, program: &str) -> Vec<ManagerState> {
    let mut list: Vec<Manager> = profile.candidates().into_iter().cloned().collect();
    if profile.chosen().is_some() {
        let rest = profile.managers().iter().filter(|m| !list.contains(m)).cloned();
        list.extend(rest.collect::<Vec<_>>());
    }
    let mut states = Vec::new();
    for manager in list {
        let chosen = profile.chosen() == Some(&manager);
        states.push(ask(manager, chosen, program).await);
    }
    states
}

async fn ask(manager: Manager, chosen: bool, program: &str) -> ManagerState {
    let mut state = ManagerState {
        name: manager.name.clone(),
        priority: manager.priority,
        source: manager.source.clone(),
        place: manager.place_text(),
        chosen,
        up: false,
        answered: None,
        pid: None,
        device: None,
        qspaces: Vec::new(),
        error: None,
    };
    let addresses = manager.addresses();
    let mut conn = Failover::new(addresses.clone(), program, ClientKind::Application)
        .with_patience(Duration::ZERO);
    let connected = tokio::time::timeout(ASK_LIMIT, conn.connect()).await;
    let welcome = match connected {
        Ok(Ok(client)) => client.welcome().clone(),
        Ok(Err(e)) => {
            state.error = Some(e.message);
            return state;
        }
        Err(_) => {
            state.error = Some(format!("no answer within {} s", ASK_LIMIT.as_secs()));
            return state;
        }
    };
    state.up = true;
    state.answered = conn.address().map(|a| a.to_string());
    state.pid = Some(welcome.daemon_pid);
    state.device = Some(welcome.device);
    match queue_spaces(&mut conn).await {
        Ok(qspaces) => state.qspaces = qspaces,
        Err(e) => state.error = Some(e.message),
    }
    state
}
