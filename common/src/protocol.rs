//! The requests a client sends to `qmd` and the replies it gets back.
//!
//! Every connection starts with [`Request::Hello`]; the daemon answers [`Response::Welcome`]
//! or [`Response::Failed`] and closes. After that each request gets any number of
//! [`Response::Progress`] frames (long work only) and then exactly one `Done` or `Failed`.
//! A session's state (the open queue space) belongs to its connection.

use crate::device::{DeviceListing, VtocEntry};
use crate::error::QmError;
use crate::message::{
    Criteria, DequeueCtl, EnqueueCtl, Expiry, Message, MessageInfo, MsgId, TimeSpec,
    TransactionInfo,
};
use crate::qspace::{Attachment, QueueSpaceChange, QueueSpaceInfo, QueueSpaceParams, SizeEstimate};
use crate::queue::{DestroyMode, QueueChange, QueueDef, QueueListing};
use crate::rights::{Grant, GrantListing, Identity};
use serde::{Deserialize, Serialize};

/// Version of this protocol; client and daemon must agree.
pub const PROTOCOL_VERSION: u16 = 1;

/// What kind of program a session is, shown by `ipcs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Admin,
    Application,
    Forwarder,
}

impl ClientKind {
    pub fn label(self) -> &'static str {
        match self {
            ClientKind::Admin => "admin",
            ClientKind::Application => "client",
            ClientKind::Forwarder => "forwarder",
        }
    }
}

/// The first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub program: String,
    pub kind: ClientKind,
}

/// The daemon's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u16,
    pub daemon_pid: u32,
    pub device: String,
    pub session: u64,
}

/// Daemon-level requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DaemonRequest {
    Status,
    /// Stop the daemon after answering.
    Stop,
    /// Names for completion: all queue spaces, and the queues of the session's open space.
    Names,
}

/// Universal device list requests (`crdl`, `lidl`, `dsdl`, `livtoc`, `chdl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceRequest {
    Create {
        device: String,
        offset: u64,
        size: u64,
        page_size: Option<u32>,
    },
    List {
        index: Option<u8>,
    },
    Destroy {
        index: u8,
    },
    Vtoc,
    /// Without `new_name`, reports the entry's current name.
    Rename {
        index: u8,
        new_name: Option<String>,
    },
    /// `qverify`: the device's lists, and every queue space or (`qspace`) one.
    Verify {
        qspace: Option<String>,
    },
    /// `qbackup`: a consistent copy of the whole device into `dir` (absolute).
    Backup {
        dir: String,
    },
    /// `qrestore`: the backup in `dir` as a new device at `device`, files moved as `map`
    /// says (old path, new path); all paths absolute.
    Restore {
        dir: String,
        device: String,
        map: Vec<(String, String)>,
    },
}

/// Queue space requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueSpaceRequest {
    Create(QueueSpaceParams),
    /// `None`: the session's open queue space.
    List {
        name: Option<String>,
    },
    Change(QueueSpaceChange),
    Destroy {
        name: String,
        force: bool,
    },
    Open {
        name: String,
    },
    Close,
    AddExtent {
        name: String,
        pages: u64,
    },
    Size {
        pages: u64,
        queues: u32,
        transactions: u32,
        processes: u32,
        messages: u32,
        nonpersistent: crate::qspace::MemorySize,
    },
    /// `None`: every queue space the daemon has loaded.
    Ipcs {
        name: Option<String>,
    },
    /// A live view of a loaded queue space (`qstat`); `None`: the session's open one.
    Stat {
        name: Option<String>,
    },
    Ipcrm {
        name: String,
        force: bool,
    },
    /// `qspacemove`: moves an inactive queue space to device list entry `index`.
    Move {
        name: String,
        index: u8,
    },
}

/// Queue requests; they act on the session's open queue space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueRequest {
    Create(QueueDef),
    Change(QueueChange),
    Destroy {
        name: String,
        mode: DestroyMode,
    },
    /// `None`: every queue.
    Info {
        name: Option<String>,
    },
    /// One queue's definition, e.g. for `qchange` to offer as defaults.
    Get {
        name: String,
    },
    /// `qalias`: `queue` answers to `alias` too.
    Alias {
        queue: String,
        alias: String,
    },
    /// `qunalias`: the alias goes.
    Unalias {
        alias: String,
    },
}

/// Data-plane requests. `qspace: None` means the session's open queue space; naming one
/// attaches the session to it. Without [`DataRequest::Begin`] every call is its own
/// transaction; after it, calls join the session's transaction until commit or abort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    Begin {
        qspace: Option<String>,
        timeout_secs: Option<u32>,
    },
    Commit,
    Abort,
    Enqueue {
        qspace: Option<String>,
        queue: String,
        ctl: EnqueueCtl,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    Dequeue {
        qspace: Option<String>,
        queue: String,
        ctl: DequeueCtl,
    },
}

/// Message administration on the session's open queue space (`qlist`, `qdeletemsg`,
/// `qchange*`, `qprinttrans`, `qcommittrans`, `qaborttrans`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageRequest {
    List {
        queue: String,
        criteria: Criteria,
    },
    Delete {
        queue: String,
        criteria: Criteria,
    },
    ChangePriority {
        queue: String,
        criteria: Criteria,
        priority: u8,
    },
    ChangeQueue {
        queue: String,
        criteria: Criteria,
        new_queue: String,
    },
    ChangeTime {
        queue: String,
        criteria: Criteria,
        time: TimeSpec,
    },
    ChangeExpiration {
        queue: String,
        criteria: Criteria,
        expiry: Expiry,
    },
    Transactions,
    /// Commit or roll back a transaction the daemon holds (heuristic completion).
    Complete {
        id: u64,
        commit: bool,
    },
    /// Why a message of the open queue space is not moving (`qwhy`).
    Why {
        msgid: MsgId,
    },
    /// `qexport`: the open queue space's messages (of one queue; enqueued in a time range,
    /// seconds since the epoch, inclusive), sent as [`Response::Exported`] batches, the
    /// queue definitions first, before `Done` with the number of messages.
    /// With `take` (`qexport -x`) the messages are locked as they are sent, and removed
    /// when [`MessageRequest::EndExport`] commits (given back if it does not, or if the
    /// session ends first).
    Export {
        queue: Option<String>,
        enqueued: Option<(u64, u64)>,
        take: bool,
    },
    /// Ends `qexport -x` once its stream is written: removes the messages (`commit`), or
    /// gives them back. Answered with how many were removed.
    EndExport {
        commit: bool,
    },
    /// `qimport`: messages to enqueue as they were exported (msgids kept; a msgid the queue
    /// space holds already is skipped), in one durable write.
    Import {
        messages: Vec<crate::export::ExportedMessage>,
    },
}

/// Forwarders, threshold commands and configuration (`boot`, `shutdown`, `printserver`,
/// `qthlog`, `qthtest`, `daemon reload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomationRequest {
    Boot {
        id: u32,
    },
    /// Stops one forwarder, or every forwarder serving `queue`.
    Shutdown {
        id: Option<u32>,
        queue: Option<String>,
    },
    Servers,
    /// Threshold firings of the session's open queue space (one queue, or all).
    ThresholdLog {
        queue: Option<String>,
    },
    /// Runs a queue's threshold command now, in its real environment.
    ThresholdTest {
        queue: String,
        nonpersistent: bool,
    },
    /// Re-reads the configuration file.
    Reload,
}

/// Rights of principals (`qgrant`, `qrevoke`, `qauth`, `whoami`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RightsRequest {
    /// Adds the grant's rights to what its principal holds in its scope.
    Grant(Grant),
    /// Takes the grant's rights back, exactly as they were granted (same principal, same
    /// scope).
    Revoke(Grant),
    /// The grants that apply to `principal` (matched by name or pattern), or all of them.
    List { principal: Option<crate::principal::Principal> },
    /// Who the session is.
    WhoAmI,
}

/// A forwarder as `printserver` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwarderInfo {
    pub id: u32,
    pub qspace: String,
    pub queues: Vec<String>,
    /// The options in Tuxedo's CLOPT spelling.
    pub options: String,
    /// `running`, `idle`, `stopping`, `stopped`, `exited` (queues empty), `failed`, or
    /// `not booted`.
    pub state: String,
    pub booted: Option<u64>,
    pub forwarded: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// One run of a threshold command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiringRecord {
    pub qspace: String,
    pub queue: String,
    /// `persistent` or `nonpersistent`: which set of limits.
    pub limits: String,
    /// The high limit reached, e.g. `80%`.
    pub limit: String,
    /// The usage that reached it, in the limit's unit.
    pub usage: String,
    pub command: String,
    /// Seconds since the epoch when the command started.
    pub started: u64,
    pub duration_ms: u64,
    /// Exit status; `None` when it was killed or could not start.
    pub exit: Option<i32>,
    /// `exit 0`, `killed after the 60 s time limit`, `cannot start: ...`; [`FIRING_RUNNING`]
    /// while it runs, [`FIRING_CUT_SHORT`] when the daemon ended first.
    pub outcome: String,
    /// The first lines the command printed (standard output, then standard error).
    pub output: String,
    /// Run by `qthtest` rather than by a crossing.
    pub test: bool,
}

impl FiringRecord {
    /// Whether `duration_ms` says how long the command ran: not while it runs, nor when
    /// nobody saw it end.
    pub fn duration_known(&self) -> bool {
        ![FIRING_RUNNING, FIRING_CUT_SHORT, FIRING_ENDED_AT_START, FIRING_UNLOADED, FIRING_UNSEEN]
            .contains(&self.outcome.as_str())
    }
}

/// A request frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello(Hello),
    Daemon(DaemonRequest),
    Device(DeviceRequest),
    QueueSpace(QueueSpaceRequest),
    Queue(QueueRequest),
    Data(DataRequest),
    Message(MessageRequest),
    Automation(AutomationRequest),
    Rights(RightsRequest),
}

impl Request {
    /// The queue space a data request names (`None`: the session's own) and the queue
    /// names it takes, which may be aliases: the daemon puts the queues' own names in their
    /// place before it checks rights or runs the request.
    pub fn queue_names_mut(&mut self) -> (Option<&str>, Vec<&mut String>) {
        match self {
            Request::Data(DataRequest::Enqueue { qspace, queue, .. })
            | Request::Data(DataRequest::Dequeue { qspace, queue, .. }) => {
                (qspace.as_deref(), vec![queue])
            }
            Request::Message(m) => (None, m.queue_names_mut()),
            _ => (None, Vec::new()),
        }
    }
}

impl MessageRequest {
    fn queue_names_mut(&mut self) -> Vec<&mut String> {
        match self {
            MessageRequest::List { queue, .. }
            | MessageRequest::Delete { queue, .. }
            | MessageRequest::ChangePriority { queue, .. }
            | MessageRequest::ChangeTime { queue, .. }
            | MessageRequest::ChangeExpiration { queue, .. } => vec![queue],
            MessageRequest::ChangeQueue { queue, new_queue, .. } => vec![queue, new_queue],
            MessageRequest::Export { queue: Some(queue), .. } => vec![queue],
            _ => Vec::new(),
        }
    }
}

/// Severity of a note attached to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoteLevel {
    Info,
    Warn,
}

/// A line for the user that does not make the request fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub level: NoteLevel,
    pub text: String,
}

impl Note {
    pub fn info(text: impl Into<String>) -> Self {
        Note { level: NoteLevel::Info, text: text.into() }
    }

    pub fn warn(text: impl Into<String>) -> Self {
        Note { level: NoteLevel::Warn, text: text.into() }
    }
}

/// Daemon status as `daemon` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub device: String,
    pub device_exists: bool,
    pub socket: String,
    pub started: u64,
    pub sessions: u32,
    pub loaded_qspaces: Vec<String>,
    /// The configuration file in use, or where one would be read from.
    pub config: String,
    /// The network face (`tcp://ADDR:PORT` or `tls+tcp://...`), when it is open.
    pub network: Option<String>,
}

/// Names offered to tab completion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    pub qspaces: Vec<String>,
    pub queues: Vec<String>,
}

/// The outcome of a firing whose command is still running.
pub const FIRING_RUNNING: &str = "running";
/// The outcome of a firing whose command was still running when the daemon stopped (and
/// killed it).
pub const FIRING_CUT_SHORT: &str = "cut short: the daemon stopped while it ran";
/// The outcome of a firing whose command was still running when its queue space was
/// unloaded (ipcrm, qspacechange, a replaced device): it went on, but nobody saw it end.
pub const FIRING_UNLOADED: &str =
    "not seen to end: its queue space was unloaded while it ran (the command went on)";
/// The outcome of a firing found still running at load: qmd was killed while it ran, and
/// the command had ended by the time the next qmd started (else it would have been
/// [`FIRING_ENDED_AT_START`]), so how it ended is not known.
pub const FIRING_UNSEEN: &str =
    "not seen to end: qmd was killed while it ran, and it ended before the next qmd started";
/// The outcome of a firing whose command a killed qmd left running, and which the next qmd
/// killed when it started.
pub const FIRING_ENDED_AT_START: &str =
    "killed by the next qmd at its start: qmd was killed while it ran";

/// The payload of a successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Unit,
    Status(DaemonStatus),
    Names(Names),
    Device(DeviceListing),
    Vtoc(Vec<VtocEntry>),
    DeviceName(String),
    QueueSpace(Box<QueueSpaceInfo>),
    Size(SizeEstimate),
    Attachments(Vec<Attachment>),
    Queues(QueueListing),
    Queue(Box<QueueDef>),
    Enqueued(MsgId),
    Message(Box<Message>),
    /// A transaction began; its id.
    Transaction(u64),
    Messages(Vec<MessageInfo>),
    /// How many messages an admin command changed.
    Count(u64),
    Transactions(Vec<TransactionInfo>),
    Servers(Vec<ForwarderInfo>),
    Firings(Vec<FiringRecord>),
    Stat(Box<crate::stat::SpaceStat>),
    Firing(Box<FiringRecord>),
    /// What a message-admin command did: messages changed, and messages left alone because
    /// a transaction holds them.
    Changed {
        changed: u64,
        held: u64,
    },
    Grants(GrantListing),
    Identity(Identity),
    Why(Box<crate::why::Why>),
    Verified(Box<crate::verify::VerifyReport>),
    BackedUp(Box<crate::backup::BackupReport>),
    Restored(Box<crate::backup::RestoreReport>),
    /// What `qimport` did with a batch: messages added (`renumbered` of them under a new
    /// msgid, theirs being another message's), and skipped as held already.
    Imported {
        added: u64,
        skipped: u64,
        renumbered: u64,
    },
}

/// Progress of long work, e.g. initializing extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Welcome(Welcome),
    Progress(Progress),
    /// Part of what `qexport` asked for.
    Exported(Box<crate::export::ExportBatch>),
    Done {
        reply: Reply,
        notes: Vec<Note>,
    },
    Failed(QmError),
}

/// The data plane's requests as the clients build them.
impl DataRequest {
    /// An enqueue of `body` on `queue` of `qspace`.
    pub fn enqueue(qspace: &str, queue: &str, body: &[u8], ctl: &EnqueueCtl) -> DataRequest {
        DataRequest::Enqueue {
            qspace: Some(qspace.to_string()),
            queue: queue.to_string(),
            ctl: ctl.clone(),
            body: body.to_vec(),
        }
    }

    /// A dequeue (or peek) from `queue` of `qspace`.
    pub fn dequeue(qspace: &str, queue: &str, ctl: &DequeueCtl) -> DataRequest {
        DataRequest::Dequeue {
            qspace: Some(qspace.to_string()),
            queue: queue.to_string(),
            ctl: ctl.clone(),
        }
    }
}

/// What the clients take out of the data plane's replies.
impl Reply {
    /// The new message's id, from an enqueue's reply.
    pub fn into_msgid(self) -> Result<MsgId, QmError> {
        match self {
            Reply::Enqueued(id) => Ok(id),
            other => Err(other.unexpected()),
        }
    }

    /// The message, from a dequeue's reply.
    pub fn into_message(self) -> Result<Message, QmError> {
        match self {
            Reply::Message(m) => Ok(*m),
            other => Err(other.unexpected()),
        }
    }

    /// The transaction's id, from a begin's reply.
    pub fn into_transaction(self) -> Result<u64, QmError> {
        match self {
            Reply::Transaction(id) => Ok(id),
            other => Err(other.unexpected()),
        }
    }

    /// A reply the request did not call for.
    pub fn unexpected(self) -> QmError {
        QmError::system(format!("unexpected reply from qmd: {self:?}"))
    }
}
