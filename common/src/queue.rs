//! Queues: their definition as `qcreate`/`qchange` set it, and what `qinfo` reports.

use crate::error::{QmError, QmResult};
use crate::names::check_queue_name;
use crate::order::{OutOfOrder, QueueOrder};
use crate::threshold::{LimitSet, Threshold};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Most retries a queue may be given.
pub const RETRIES_MAX: u32 = 1_000_000;
/// Longest retry delay, in seconds (one year).
pub const RETRY_DELAY_MAX: u32 = 31_536_000;

/// Where a message goes when the enqueuer does not say (`-d`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryPolicy {
    #[default]
    Persist,
    NonPersist,
}

impl FromStr for DeliveryPolicy {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "persist" | "persistent" => Ok(DeliveryPolicy::Persist),
            "nonpersist" | "nonpersistent" => Ok(DeliveryPolicy::NonPersist),
            _ => Err(QmError::invalid("Delivery policy", s, "use persist or nonpersist")),
        }
    }
}

impl fmt::Display for DeliveryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliveryPolicy::Persist => "persist",
            DeliveryPolicy::NonPersist => "nonpersist",
        })
    }
}

/// A queue's default expiration for messages enqueued without one (`-e`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultExpiration {
    #[default]
    None,
    /// Seconds after the enqueue.
    Relative(u64),
}

impl FromStr for DefaultExpiration {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        let allowed = "use +seconds (for example +3600) or none";
        if s.eq_ignore_ascii_case("none") {
            return Ok(DefaultExpiration::None);
        }
        let digits = s
            .strip_prefix('+')
            .ok_or_else(|| QmError::invalid("Default expiration", s, allowed))?;
        let secs: u64 =
            digits.parse().map_err(|_| QmError::invalid("Default expiration", s, allowed))?;
        if secs > u64::from(u32::MAX) {
            return Err(QmError::invalid("Default expiration", s, "at most +4294967295 seconds"));
        }
        Ok(DefaultExpiration::Relative(secs))
    }
}

impl fmt::Display for DefaultExpiration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultExpiration::None => f.write_str("none"),
            DefaultExpiration::Relative(s) => write!(f, "+{s}"),
        }
    }
}

/// A queue definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub order: QueueOrder,
    pub out_of_order: OutOfOrder,
    pub retries: u32,
    /// Seconds a message stays unavailable after a rolled-back dequeue.
    pub retry_delay: u32,
    /// Persistent limits (b, B, %, m) and their command.
    pub threshold: Threshold,
    /// Non-persistent limits (b, B, %) and their command (`-n`).
    pub nonpersistent_threshold: Threshold,
    pub delivery: DeliveryPolicy,
    pub expiration: DefaultExpiration,
    /// Seed 004's queue attributes; streams and records written before them have none.
    #[serde(default)]
    pub attrs: QueueAttrs,
}

/// The refusal of a queue beyond the `max` queues queue space `qspace` was created for.
pub fn no_more_queues(qspace: &str, max: u32) -> QmError {
    let queues = crate::plural::count(max, "queue", "queues");
    QmError::no_space(format!(
        "Create queue - no more queue entries (max = {max}); queue space {qspace} was created for {queues}"
    ))
}

/// Checks a retry count.
pub fn check_retries(retries: u64) -> QmResult<()> {
    if retries > u64::from(RETRIES_MAX) {
        return Err(QmError::invalid(
            "Retries",
            retries,
            &format!("it must be 0 to {RETRIES_MAX}"),
        ));
    }
    Ok(())
}

/// Checks a retry delay.
pub fn check_retry_delay(delay: u64) -> QmResult<()> {
    if delay > u64::from(RETRY_DELAY_MAX) {
        return Err(QmError::invalid(
            "Retry delay in seconds",
            delay,
            &format!("it must be 0 to {RETRY_DELAY_MAX}"),
        ));
    }
    Ok(())
}

impl QueueDef {
    /// A queue with Tuxedo's defaults: fifo, no out-of-order, no retries, 100%/0%, no command.
    pub fn new(name: impl Into<String>) -> Self {
        QueueDef {
            name: name.into(),
            order: QueueOrder::default(),
            out_of_order: OutOfOrder::default(),
            retries: 0,
            retry_delay: 0,
            threshold: Threshold::default(),
            nonpersistent_threshold: Threshold::default(),
            delivery: DeliveryPolicy::Persist,
            expiration: DefaultExpiration::None,
            attrs: QueueAttrs::default(),
        }
    }

    /// Whether `name` is this queue's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.attrs.aliases.iter().any(|a| a == name)
    }

    pub fn validate(&self) -> QmResult<()> {
        check_queue_name(&self.name)?;
        self.attrs.validate()?;
        let aliases = &self.attrs.aliases;
        for (i, alias) in aliases.iter().enumerate() {
            if *alias == self.name || aliases[..i].contains(alias) {
                return Err(QmError::invalid(
                    "Alias",
                    alias,
                    "a queue's aliases differ from its name and from each other",
                ));
            }
        }
        check_retries(self.retries.into())?;
        check_retry_delay(self.retry_delay.into())?;
        self.threshold.validate(LimitSet::Persistent)?;
        self.nonpersistent_threshold.validate(LimitSet::NonPersistent)
    }
}

/// What `qchange` may change: everything but the name and the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueChange {
    pub name: String,
    pub out_of_order: OutOfOrder,
    pub retries: u32,
    pub retry_delay: u32,
    pub threshold: Threshold,
    /// `None` leaves the current value.
    pub nonpersistent_threshold: Option<Threshold>,
    pub delivery: Option<DeliveryPolicy>,
    pub expiration: Option<DefaultExpiration>,
    /// The attributes given; the others stay.
    pub attrs: AttrsChange,
}

impl QueueChange {
    /// Applies the change to a definition.
    pub fn apply(&self, def: &mut QueueDef) {
        def.out_of_order = self.out_of_order;
        def.retries = self.retries;
        def.retry_delay = self.retry_delay;
        def.threshold = self.threshold.clone();
        if let Some(t) = &self.nonpersistent_threshold {
            def.nonpersistent_threshold = t.clone();
        }
        if let Some(d) = self.delivery {
            def.delivery = d;
        }
        if let Some(e) = self.expiration {
            def.expiration = e;
        }
        self.attrs.apply(&mut def.attrs);
    }
}

/// How `qdestroy` treats a queue that still holds messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestroyMode {
    /// Refuse when the queue holds messages or anyone is attached.
    Normal,
    /// `-p`: purge the messages first; refuse while others are attached.
    Purge,
    /// `-f`: destroy even with messages and attached processes.
    Force,
}

/// Usage figures of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueUsage {
    pub persistent_messages: u64,
    pub nonpersistent_messages: u64,
    /// Bytes of persistent message bodies.
    pub persistent_bytes: u64,
    /// Blocks (pages) used by persistent messages.
    pub blocks: u64,
    /// Bytes of non-persistent message bodies in memory.
    pub nonpersistent_bytes: u64,
}

impl QueueUsage {
    pub fn messages(&self) -> u64 {
        self.persistent_messages + self.nonpersistent_messages
    }

    pub fn add(&mut self, other: &QueueUsage) {
        self.persistent_messages += other.persistent_messages;
        self.nonpersistent_messages += other.nonpersistent_messages;
        self.persistent_bytes += other.persistent_bytes;
        self.blocks += other.blocks;
        self.nonpersistent_bytes += other.nonpersistent_bytes;
    }
}

/// One queue in a `qinfo` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub def: QueueDef,
    pub usage: QueueUsage,
    /// Seconds since the epoch of the last committed enqueue or dequeue; the creation time
    /// when there was none (0 when that is unknown too).
    pub last_activity: u64,
    /// Enqueues waiting for room (`-w` on a queue at its maximum length).
    pub waiting_enqueues: u64,
}

/// What `qinfo` reports: the queues asked for and the totals of the queue space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueListing {
    pub qspace: String,
    pub queues: Vec<QueueInfo>,
    pub total: QueueUsage,
    /// Pages of the queue space, the base of `%` limits.
    pub qspace_pages: u64,
}

/// Longest annotation, in characters.
pub const ANNOTATION_MAX: usize = 256;
/// Longest empty idle expiration, in seconds (one year).
pub const IDLE_EXPIRY_MAX: u64 = 31_536_000;
/// Most messages a queue's maximum length may name.
pub const MAX_MESSAGES_MAX: u64 = 1_000_000_000_000;

/// What a queue stores on disk, whatever its messages ask (seed 004's persistence modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// As each message asks (its delivery mode, else the queue's `-d`).
    #[default]
    Conditional,
    /// Every message is stored, the non-persistent ones too.
    Persistent,
    /// No message is stored; a persistent one is kept in memory, with a warning.
    Volatile,
}

impl FromStr for Persistence {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "conditional" => Ok(Persistence::Conditional),
            "persistent" => Ok(Persistence::Persistent),
            "volatile" => Ok(Persistence::Volatile),
            _ => Err(QmError::invalid(
                "Persistence mode",
                s,
                "use conditional, persistent or volatile",
            )),
        }
    }
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::Conditional => "conditional",
            Persistence::Persistent => "persistent",
            Persistence::Volatile => "volatile",
        })
    }
}

impl Persistence {
    /// Whether a message that asks for `wanted` is stored on disk.
    pub fn stores(self, wanted: bool) -> bool {
        match self {
            Persistence::Conditional => wanted,
            Persistence::Persistent => true,
            Persistence::Volatile => false,
        }
    }
}

/// A queue's attributes beyond Tuxedo's (seed 004): limits, switches, a note, its
/// persistence mode and when it was made. The defaults change nothing Tuxedo does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueAttrs {
    /// Most messages the queue holds (committed and in open transactions); none: no limit
    /// but the queue space's.
    pub max_messages: Option<u64>,
    /// Largest body, in bytes; none: the protocol's limit.
    pub max_size: Option<u64>,
    pub enqueue_enabled: bool,
    pub dequeue_enabled: bool,
    /// Free text for operators.
    pub annotation: String,
    /// Seconds an empty queue may stay idle before it is destroyed; none: never.
    pub idle_expiry: Option<u64>,
    pub persistence: Persistence,
    /// Seconds since the epoch; 0 for queues made before qm recorded it.
    pub created: u64,
    /// Other names the queue answers to (`qalias`), unique in its queue space.
    pub aliases: Vec<String>,
}

impl Default for QueueAttrs {
    fn default() -> Self {
        QueueAttrs {
            max_messages: None,
            max_size: None,
            enqueue_enabled: true,
            dequeue_enabled: true,
            annotation: String::new(),
            idle_expiry: None,
            persistence: Persistence::Conditional,
            created: 0,
            aliases: Vec::new(),
        }
    }
}

impl QueueAttrs {
    pub fn validate(&self) -> QmResult<()> {
        if let Some(n) = self.max_messages {
            check_range("Maximum length", n, 1, MAX_MESSAGES_MAX, "messages")?;
        }
        if let Some(n) = self.max_size {
            check_range("Maximum message size", n, 1, crate::message::BODY_MAX as u64, "bytes")?;
        }
        if let Some(n) = self.idle_expiry {
            check_range("Empty idle expiration", n, 1, IDLE_EXPIRY_MAX, "seconds")?;
        }
        check_annotation(&self.annotation)?;
        for alias in &self.aliases {
            crate::names::check_alias(alias)?;
        }
        Ok(())
    }
}

fn check_range(field: &str, n: u64, low: u64, high: u64, unit: &str) -> QmResult<()> {
    if (low..=high).contains(&n) {
        return Ok(());
    }
    Err(QmError::invalid(field, n, &format!("it must be {low} to {high} {unit}, or none")))
}

/// Checks an annotation: at most [`ANNOTATION_MAX`] characters, none of them a control
/// character (it is shown in tables and logs).
pub fn check_annotation(text: &str) -> QmResult<()> {
    if text.chars().count() > ANNOTATION_MAX {
        return Err(QmError::inval(format!(
            "Annotation: {} characters is over the limit of {ANNOTATION_MAX}",
            text.chars().count()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(QmError::invalid(
            "Annotation",
            text,
            "it may not hold control characters (tabs, line ends)",
        ));
    }
    Ok(())
}

/// A count with `none` for no limit: `-L` (messages), `-S` (bytes), `-I` (seconds).
pub fn parse_limit(field: &str, text: &str, high: u64, unit: &str) -> QmResult<Option<u64>> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let allowed = format!("it must be 1 to {high} {unit}, or none");
    let n: u64 = text.parse().map_err(|_| QmError::invalid(field, text, &allowed))?;
    check_range(field, n, 1, high, unit)?;
    Ok(Some(n))
}

/// `-L`: a maximum length in messages, or none.
pub fn parse_max_messages(text: &str) -> QmResult<Option<u64>> {
    parse_limit("Maximum length", text, MAX_MESSAGES_MAX, "messages")
}

/// `-S`: a maximum message size in bytes, or none.
pub fn parse_max_size(text: &str) -> QmResult<Option<u64>> {
    parse_limit("Maximum message size", text, crate::message::BODY_MAX as u64, "bytes")
}

/// `-I`: an empty idle expiration in seconds, or none.
pub fn parse_idle_expiry(text: &str) -> QmResult<Option<u64>> {
    parse_limit("Empty idle expiration", text, IDLE_EXPIRY_MAX, "seconds")
}

/// `-E`/`-D`: whether an operation is enabled.
pub fn parse_enabled(field: &str, text: &str) -> QmResult<bool> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "enabled" | "enable" => Ok(true),
        "off" | "no" | "disabled" | "disable" => Ok(false),
        _ => Err(QmError::invalid(field, text, "use on or off")),
    }
}

/// The attributes `qchange` was given; the others stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrsChange {
    pub max_messages: Option<Option<u64>>,
    pub max_size: Option<Option<u64>>,
    pub enqueue_enabled: Option<bool>,
    pub dequeue_enabled: Option<bool>,
    pub annotation: Option<String>,
    pub idle_expiry: Option<Option<u64>>,
    pub persistence: Option<Persistence>,
}

impl AttrsChange {
    pub fn apply(&self, attrs: &mut QueueAttrs) {
        if let Some(v) = self.max_messages {
            attrs.max_messages = v;
        }
        if let Some(v) = self.max_size {
            attrs.max_size = v;
        }
        if let Some(v) = self.enqueue_enabled {
            attrs.enqueue_enabled = v;
        }
        if let Some(v) = self.dequeue_enabled {
            attrs.dequeue_enabled = v;
        }
        if let Some(v) = &self.annotation {
            attrs.annotation = v.clone();
        }
        if let Some(v) = self.idle_expiry {
            attrs.idle_expiry = v;
        }
        if let Some(v) = self.persistence {
            attrs.persistence = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration() {
        assert_eq!("none".parse::<DefaultExpiration>().unwrap(), DefaultExpiration::None);
        assert_eq!("+30".parse::<DefaultExpiration>().unwrap(), DefaultExpiration::Relative(30));
        assert!("30".parse::<DefaultExpiration>().is_err());
        assert!("+x".parse::<DefaultExpiration>().is_err());
    }

    #[test]
    fn attributes() {
        assert_eq!(parse_max_messages("none").unwrap(), None);
        assert_eq!(parse_max_messages("10").unwrap(), Some(10));
        let e = parse_max_messages("0").unwrap_err().message;
        assert!(e.contains("Maximum length") && e.contains("1 to"), "{e}");
        assert!(parse_max_size("4194305").is_err());
        assert!(parse_enabled("Enqueue", "maybe").is_err());
        assert!(!parse_enabled("Enqueue", "off").unwrap());
        assert!(check_annotation("two\nlines").is_err());
        assert_eq!("VOLATILE".parse::<Persistence>().unwrap(), Persistence::Volatile);
        assert!(Persistence::Persistent.stores(false) && !Persistence::Volatile.stores(true));
    }

    #[test]
    fn delivery() {
        assert_eq!("nonpersist".parse::<DeliveryPolicy>().unwrap(), DeliveryPolicy::NonPersist);
        assert!("disk".parse::<DeliveryPolicy>().is_err());
    }
}
