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
        }
    }

    pub fn validate(&self) -> QmResult<()> {
        check_queue_name(&self.name)?;
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
    fn delivery() {
        assert_eq!("nonpersist".parse::<DeliveryPolicy>().unwrap(), DeliveryPolicy::NonPersist);
        assert!("disk".parse::<DeliveryPolicy>().is_err());
    }
}
