//! A connection to whichever of several daemons answers: an active `qmd` and its standby
//! (`qmd --standby`), each at its own address, or any list an application is given.
//!
//! Addresses are tried in the order given; the first that greets us serves until the
//! connection is lost, and the next request connects again, trying them all for a while
//! (a standby takes a moment to open the device). What is never done is to send a request
//! twice when the first may have taken effect: a request whose answer was lost returns an
//! error saying its outcome is unknown, and a transaction whose connection was lost was
//! rolled back by the daemon that held it, which every request made in it until the next
//! `begin` or `abort` is told.

use crate::address::Address;
use crate::client::{CallFailure, Client, Done};
use crate::error::{Diagnostic, QmError, QmResult};
use crate::message::{DequeueCtl, EnqueueCtl, Message, MsgId};
use crate::protocol::{ClientKind, DataRequest, Reply, Request};
use crate::tls::ClientTlsFiles;
use std::time::Duration;

/// How long reconnecting tries the addresses, by default: a standby that waited on the
/// device's lock opens it within seconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The pause between two rounds of the addresses, at first and at most.
const PAUSE_MIN: Duration = Duration::from_millis(50);
const PAUSE_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    None,
    Open,
    /// Its connection was lost: the daemon rolled it back.
    Lost,
}

/// A client that reconnects to whichever of its addresses answers.
pub struct Failover {
    addresses: Vec<Address>,
    files: ClientTlsFiles,
    program: String,
    kind: ClientKind,
    patience: Duration,
    /// The connection, and the index of the address it was made to.
    client: Option<(usize, Client)>,
    txn: Txn,
}

impl Failover {
    /// Connects lazily (at the first request) to the first of `addresses` that answers.
    /// TLS settings come from the environment, as for [`Client::connect_addr`].
    pub fn new(addresses: Vec<Address>, program: &str, kind: ClientKind) -> Failover {
        Failover {
            addresses,
            files: ClientTlsFiles::from_env(),
            program: program.to_string(),
            kind,
            patience: PATIENCE,
            client: None,
            txn: Txn::None,
        }
    }

    /// Connects (lazily) to the queue manager `name` of `profile` (usually
    /// [`Profile::load`](crate::profile::Profile::load)): its device's socket or its
    /// addresses. Without a name, to the one `QM_MANAGER` names, else to the first of the
    /// profiles' managers that answers, in priority order.
    pub fn to_manager(
        profile: &crate::profile::Profile,
        name: Option<&str>,
        program: &str,
        kind: ClientKind,
    ) -> Result<Failover, String> {
        let addresses: Vec<Address> = match name {
            Some(name) => match profile.find(name) {
                Some(m) => m.addresses(),
                None => {
                    return Err(format!(
                        "no profile names a queue manager {name} ({})",
                        profile.read_text()
                    ));
                }
            },
            None => profile.candidates().iter().flat_map(|m| m.addresses()).collect(),
        };
        if addresses.is_empty() {
            return Err(format!(
                "no queue manager is named: set {} or list managers in a profile ({})",
                crate::profile::MANAGER_ENV,
                profile.read_text()
            ));
        }
        Ok(Failover::new(addresses, program, kind))
    }

    /// TLS settings given rather than from the environment.
    pub fn with_tls(mut self, files: ClientTlsFiles) -> Failover {
        self.files = files;
        self
    }

    /// How long a reconnection tries before it gives up.
    pub fn with_patience(mut self, patience: Duration) -> Failover {
        self.patience = patience;
        self
    }

    /// The address of the daemon connected now, if any.
    pub fn address(&self) -> Option<&Address> {
        self.client.as_ref().map(|(i, _)| &self.addresses[*i])
    }

    /// The connection, made now if there is none: the addresses are tried in order, round
    /// after round, until one answers or the patience runs out. A refusal from every one
    /// of them (a certificate or rights problem, not an absence) ends it at once.
    pub async fn connect(&mut self) -> QmResult<&mut Client> {
        if self.client.is_none() {
            self.client = Some(self.connect_any().await?);
        }
        Ok(&mut self.client.as_mut().expect("connected").1)
    }

    // `&mut`: a future holding `&Failover` would not be `Send` (a client is not `Sync`).
    async fn connect_any(&mut self) -> QmResult<(usize, Client)> {
        let who = (self.program.as_str(), self.kind);
        connect_first(&self.addresses, &self.files, who, self.patience).await
    }

    /// Sends a request to whichever daemon answers and waits for its reply. A request that
    /// did not reach the daemon is sent again after reconnecting (outside a transaction);
    /// one whose answer was lost is not (its outcome is unknown, and the error says so).
    pub async fn call(&mut self, request: Request) -> QmResult<Done> {
        self.call_telling(&request).await.map_err(CallFailure::into_error)
    }

    /// Like [`Failover::call`], telling apart a request no daemon received (none answered,
    /// or the connection was gone before it went out: it may go elsewhere) from one whose
    /// outcome is unknown and one refused.
    pub async fn call_telling(&mut self, request: &Request) -> Result<Done, CallFailure> {
        let step = Step::of(request);
        if self.txn == Txn::Lost {
            match step {
                Step::Begin => self.txn = Txn::None,
                Step::Abort => {
                    self.txn = Txn::None;
                    return Ok(Done { reply: Reply::Unit, notes: Vec::new() });
                }
                _ => {
                    let lost = rolled_back("it was lost with an earlier connection");
                    return Err(CallFailure::Refused(lost));
                }
            }
        }
        // Outside a transaction, what never reached a daemon is sent again, once.
        let outcome = match self.send(request).await {
            Err(Sent::Unsent(_)) if self.txn == Txn::None => self.send(request).await,
            other => other,
        };
        match outcome {
            Ok(done) => {
                self.txn = match step {
                    Step::Begin => Txn::Open,
                    Step::Commit | Step::Abort => Txn::None,
                    Step::Other => self.txn,
                };
                Ok(done)
            }
            Err(Sent::Refused(e)) => {
                if matches!(step, Step::Commit | Step::Abort) {
                    self.txn = Txn::None;
                }
                Err(CallFailure::Refused(e))
            }
            Err(Sent::NoDaemon(e) | Sent::Unsent(e) | Sent::Interrupted(e))
                if self.txn == Txn::Open =>
            {
                if step == Step::Commit {
                    self.txn = Txn::None;
                    return Err(CallFailure::Interrupted(unknown(&e, "the commit")));
                }
                self.txn = Txn::Lost;
                Err(CallFailure::Refused(rolled_back(&e.message)))
            }
            // After NoDaemon it is not sent again: the whole patience went into finding one.
            Err(Sent::NoDaemon(e) | Sent::Unsent(e)) => Err(CallFailure::Unsent(e)),
            Err(Sent::Interrupted(e)) => Err(CallFailure::Interrupted(unknown(&e, "the request"))),
        }
    }

    /// Sends once, on the connection there is or a new one; a lost connection is dropped.
    async fn send(&mut self, request: &Request) -> Result<Done, Sent> {
        let client = self.connect().await.map_err(Sent::NoDaemon)?;
        let e = match client.call_telling(request).await {
            Ok(done) => return Ok(done),
            Err(CallFailure::Refused(e)) => return Err(Sent::Refused(e)),
            Err(lost) => lost,
        };
        // The connection is gone: said with the address it was to, then dropped.
        let at = self.address().map(|a| a.to_string()).unwrap_or_default();
        self.client = None;
        let with_address =
            |e: QmError| QmError::new(e.diagnostic, format!("qmd at {at}: {}", e.message));
        Err(match e {
            CallFailure::Unsent(e) => Sent::Unsent(with_address(e)),
            other => Sent::Interrupted(with_address(other.into_error())),
        })
    }

    /// Enqueues `body` on `queue` of `qspace`; see [`Client::enqueue`].
    pub async fn enqueue(
        &mut self,
        qspace: &str,
        queue: &str,
        body: &[u8],
        ctl: &EnqueueCtl,
    ) -> QmResult<MsgId> {
        let request = DataRequest::enqueue(qspace, queue, body, ctl);
        self.call(Request::Data(request)).await?.reply.into_msgid()
    }

    /// Dequeues (or peeks) a message from `queue` of `qspace`; see [`Client::dequeue`].
    pub async fn dequeue(
        &mut self,
        qspace: &str,
        queue: &str,
        ctl: &DequeueCtl,
    ) -> QmResult<Message> {
        let request = DataRequest::dequeue(qspace, queue, ctl);
        self.call(Request::Data(request)).await?.reply.into_message()
    }

    /// Begins a transaction on `qspace`.
    pub async fn begin(&mut self, qspace: &str, timeout_secs: Option<u32>) -> QmResult<()> {
        let request = DataRequest::Begin { qspace: Some(qspace.to_string()), timeout_secs };
        self.call(Request::Data(request)).await.map(|_| ())
    }

    /// Commits the open transaction.
    pub async fn commit(&mut self) -> QmResult<()> {
        self.call(Request::Data(DataRequest::Commit)).await.map(|_| ())
    }

    /// Rolls back the open transaction (also one lost with its connection).
    pub async fn abort(&mut self) -> QmResult<()> {
        self.call(Request::Data(DataRequest::Abort)).await.map(|_| ())
    }
}

/// Connects to the first of `addresses` that answers, as `who` (program name and kind),
/// trying them round after round until `patience` has passed (one round when it is zero);
/// returns the connection and the index of its address. A refusal from every address (a
/// certificate or rights problem rather than an absence) ends it at once.
pub async fn connect_first(
    addresses: &[Address],
    files: &ClientTlsFiles,
    who: (&str, ClientKind),
    patience: Duration,
) -> QmResult<(usize, Client)> {
    if addresses.is_empty() {
        return Err(QmError::inval("no address to connect to"));
    }
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = PAUSE_MIN;
    loop {
        let mut why = Vec::new();
        let mut all_refused = true;
        for (i, address) in addresses.iter().enumerate() {
            match Client::connect_addr_with(address, files, who.0, who.1).await {
                Ok(client) => return Ok((i, client)),
                Err(e) => {
                    all_refused &= e.diagnostic != Diagnostic::Os;
                    why.push(if addresses.len() == 1 {
                        e.message
                    } else {
                        format!("{address}: {}", e.message)
                    });
                }
            }
        }
        if all_refused || tokio::time::Instant::now() + pause > deadline {
            let diagnostic = if all_refused { Diagnostic::Denied } else { Diagnostic::Os };
            return Err(QmError::new(diagnostic, why.join("; ")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PAUSE_MAX);
    }
}

/// What a request does to the transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Begin,
    Commit,
    Abort,
    Other,
}

impl Step {
    fn of(request: &Request) -> Step {
        match request {
            Request::Data(DataRequest::Begin { .. }) => Step::Begin,
            Request::Data(DataRequest::Commit) => Step::Commit,
            Request::Data(DataRequest::Abort) => Step::Abort,
            _ => Step::Other,
        }
    }
}

/// How one sending ended, when not with an answer.
enum Sent {
    /// No daemon answered at any address.
    NoDaemon(QmError),
    Unsent(QmError),
    Interrupted(QmError),
    Refused(QmError),
}

fn unknown(e: &QmError, what: &str) -> QmError {
    QmError::new(
        Diagnostic::Os,
        format!(
            "{}; whether {what} took effect is unknown (the next request connects to whichever \
             daemon answers)",
            e.message
        ),
    )
}

fn rolled_back(why: &str) -> QmError {
    QmError::new(
        Diagnostic::Aborted,
        format!(
            "the transaction was rolled back: its connection to qmd was lost ({why}); abort or \
             begin a new one"
        ),
    )
}
