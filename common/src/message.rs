//! Messages and the TPQCTL vocabulary: identifiers, enqueue and dequeue controls, and what
//! a dequeue or a listing returns.
//!
//! Times travel as seconds since the Unix epoch (absolute) or seconds from now (relative);
//! inside the daemon they are microseconds.

use crate::error::{Diagnostic, QmError, QmResult};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest message identifier and correlation identifier, in bytes.
pub const ID_MAX: usize = 32;
/// Largest message body, in bytes.
pub const BODY_MAX: usize = 4 * 1024 * 1024;
/// Refuses a body over [`BODY_MAX`] bytes (QMEINVAL), before anything is sent.
pub fn check_body(len: usize) -> QmResult<()> {
    if len > BODY_MAX {
        return Err(QmError::inval(format!(
            "Message body: {len} bytes is over the limit of {BODY_MAX} bytes"
        )));
    }
    Ok(())
}

/// Default priority of a message enqueued without one.
pub const DEFAULT_PRIORITY: u8 = 50;

/// Writes bytes as text: printable ASCII stays, everything else (and `\`) becomes `\xx`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:02x}"));
        }
    }
    out
}

/// Shows a message body as text: UTF-8 as it is, with only control characters, invalid
/// UTF-8 and the backslash written as `\xx` (so `\` always starts an escape).
pub fn display_body(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:02x}"));
        }
    }
    out
}

/// Reads text written by [`escape_bytes`]: a backslash takes two hex digits.
pub fn unescape_bytes(field: &str, text: &str) -> QmResult<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = text.get(i + 1..i + 3).filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
            let hex = hex.ok_or_else(|| {
                QmError::invalid(
                    field,
                    text,
                    "a backslash must be followed by two hex digits (\\20 is a blank)",
                )
            })?;
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn check_id(field: &str, bytes: &[u8]) -> QmResult<()> {
    if bytes.len() > ID_MAX {
        return Err(QmError::invalid(
            field,
            escape_bytes(bytes),
            &format!("at most {ID_MAX} bytes are allowed"),
        ));
    }
    Ok(())
}

/// A message identifier: unique within its queue space, at most 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl MsgId {
    /// Reads an identifier as typed, with `\xx` escapes.
    pub fn parse(text: &str) -> QmResult<MsgId> {
        let id = MsgId(unescape_bytes("Message id", text)?);
        id.validate()?;
        Ok(id)
    }

    /// Checks the length: 1 to 32 bytes (QMEBADMSGID otherwise).
    pub fn validate(&self) -> QmResult<()> {
        if self.0.is_empty() {
            return Err(QmError::new(Diagnostic::BadMsgid, "Message id must not be empty"));
        }
        check_id("Message id", &self.0).map_err(|e| QmError::new(Diagnostic::BadMsgid, e.message))
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(&self.0))
    }
}

/// Reads a correlation identifier as typed, with `\xx` escapes.
pub fn parse_corrid(text: &str) -> QmResult<Vec<u8>> {
    let bytes = unescape_bytes("Correlation id", text)?;
    check_id("Correlation id", &bytes)?;
    Ok(bytes)
}

/// Quality of service: where a message is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    /// The queue's default delivery policy.
    Default,
    /// On disk: survives anything short of losing the disk.
    #[serde(rename = "persist")]
    Persistent,
    /// In the daemon's memory: lost at `ipcrm` or restart.
    #[serde(rename = "nonpersist")]
    NonPersistent,
}

impl std::str::FromStr for Qos {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Qos> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(Qos::Default),
            "persist" | "persistent" => Ok(Qos::Persistent),
            "nonpersist" | "nonpersistent" => Ok(Qos::NonPersistent),
            _ => Err(QmError::invalid("Delivery mode", s, "use persist, nonpersist or default")),
        }
    }
}

impl fmt::Display for Qos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Qos::Default => "default",
            Qos::Persistent => "persist",
            Qos::NonPersistent => "nonpersist",
        })
    }
}

/// When a message becomes available (`TPQTIME_ABS` / `TPQTIME_REL`); by default at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSpec {
    /// Seconds since the Unix epoch.
    Absolute(u64),
    /// Seconds after the enqueue.
    Relative(u64),
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec::Relative(0)
    }
}

/// When a message expires (`TPQEXPTIME_ABS` / `_REL` / `_NONE`); by default never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expiry {
    Absolute(u64),
    Relative(u64),
    #[default]
    Never,
}

/// Where an enqueued message goes in its queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// By the queue's order.
    #[default]
    Ordered,
    /// `TPQTOP`: first in the queue (the queue must allow `top`).
    Top,
    /// `TPQBEFOREMSGID`: right before this message (the queue must allow `msgid`).
    Before(MsgId),
}

/// The enqueue half of TPQCTL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueCtl {
    /// 1 to 100, higher first; 50 when not given.
    pub priority: Option<u8>,
    pub available: Option<TimeSpec>,
    /// `None`: the queue's default expiration.
    pub expiration: Option<Expiry>,
    pub placement: Placement,
    #[serde(with = "serde_bytes")]
    pub corrid: Vec<u8>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    /// `None`: the queue's default delivery policy.
    pub delivery: Option<Qos>,
    /// QoS for replies to this message (used by forwarders).
    pub reply_qos: Option<Qos>,
    pub urcode: i64,
    /// Wait up to this many milliseconds for room on a queue at its maximum length (no
    /// Tuxedo counterpart); `None` refuses at once.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Longest wait, in milliseconds, of an enqueue or a dequeue (one day).
pub const WAIT_MS_MAX: u64 = 86_400_000;

impl EnqueueCtl {
    /// Checks the fields that do not depend on the queue.
    pub fn validate(&self) -> QmResult<()> {
        if let Some(w) = self.wait_ms.filter(|w| *w > WAIT_MS_MAX) {
            return Err(QmError::invalid(
                "Enqueue wait",
                format!("{w} ms"),
                "it must be 0 to 86400 seconds",
            ));
        }
        if let Some(p) = self.priority.filter(|p| !(1..=100).contains(p)) {
            return Err(QmError::invalid("Priority", p, "it must be 1 to 100"));
        }
        check_id("Correlation id", &self.corrid)?;
        use crate::time::{check_absolute, check_relative};
        let times = [
            (
                "Availability time",
                self.available.map(|t| match t {
                    TimeSpec::Relative(s) => (true, s),
                    TimeSpec::Absolute(s) => (false, s),
                }),
            ),
            (
                "Expiration time",
                self.expiration.and_then(|e| match e {
                    Expiry::Relative(s) => Some((true, s)),
                    Expiry::Absolute(s) => Some((false, s)),
                    Expiry::Never => None,
                }),
            ),
        ];
        for (field, time) in times {
            match time {
                Some((true, s)) => check_relative(field, &format!("+{s}"), s)?,
                Some((false, s)) => check_absolute(field, &s.to_string(), s)?,
                None => 0,
            };
        }
        if let Placement::Before(id) = &self.placement {
            id.validate()?;
        }
        for (field, q) in
            [("Reply queue", &self.reply_queue), ("Failure queue", &self.failure_queue)]
        {
            if let Some(name) = q {
                crate::names::check_queue_name(name)
                    .map_err(|e| QmError::inval(format!("{field}: {}", e.message)))?;
            }
        }
        Ok(())
    }
}

/// Which message a dequeue takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// The first available message in queue order.
    #[default]
    First,
    /// `TPQGETBYMSGID`.
    Msgid(MsgId),
    /// `TPQGETBYCORRID`: the first available message with this correlation id.
    Corrid(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// The dequeue half of TPQCTL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DequeueCtl {
    pub select: Select,
    /// `TPQPEEK`: read without taking.
    pub peek: bool,
    /// `TPQWAIT`: wait up to this many milliseconds for a message.
    pub wait_ms: Option<u64>,
}

impl DequeueCtl {
    /// Checks the identifier a dequeue selects by.
    pub fn validate(&self) -> QmResult<()> {
        match &self.select {
            Select::First => Ok(()),
            Select::Msgid(id) => id.validate(),
            Select::Corrid(c) => check_id("Correlation id", c),
        }
    }
}

/// A dequeued (or peeked) message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub msgid: MsgId,
    #[serde(with = "serde_bytes")]
    pub corrid: Vec<u8>,
    pub priority: u8,
    /// Seconds since the epoch.
    pub enqueued: u64,
    pub expiration: Option<u64>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub delivery: Qos,
    pub reply_qos: Option<Qos>,
    pub urcode: i64,
    /// Rolled-back dequeues so far.
    pub retries: u32,
    /// The queue the message was on before it moved to the error queue.
    pub origin_queue: Option<String>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// State of a message as `qlist` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Can be dequeued now.
    Ready,
    /// Waits for its availability time (or retry delay).
    Waiting,
    /// Dequeued in a transaction that has not ended.
    Locked,
    /// Enqueued in a transaction that has not ended.
    Uncommitted,
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageState::Ready => "ready",
            MessageState::Waiting => "waiting",
            MessageState::Locked => "locked",
            MessageState::Uncommitted => "uncommitted",
        })
    }
}

/// A message as `qlist` shows it (no body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub msgid: MsgId,
    #[serde(with = "serde_bytes")]
    pub corrid: Vec<u8>,
    pub priority: u8,
    pub retries: u32,
    pub length: u64,
    pub delivery: Qos,
    pub reply_qos: Option<Qos>,
    pub enqueued: u64,
    /// Availability time when it lies ahead (scheduled or retry delay).
    pub available: Option<u64>,
    pub expiration: Option<u64>,
    pub state: MessageState,
    pub origin_queue: Option<String>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub urcode: i64,
}

/// `qscan` criteria; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criteria {
    /// Availability time range, seconds since the epoch, inclusive.
    pub time: Option<(u64, u64)>,
    pub priority: Option<(u8, u8)>,
    pub msgid: Option<MsgId>,
    pub corrid: Option<Vec<u8>>,
    pub delivery: Option<Qos>,
    /// Expiration time range, inclusive.
    pub expiration: Option<(u64, u64)>,
}

impl Criteria {
    pub fn is_empty(&self) -> bool {
        *self == Criteria::default()
    }
}

/// A transaction as `qprinttrans` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionInfo {
    pub id: u64,
    pub qspace: String,
    pub session: u64,
    pub pid: Option<u32>,
    pub program: String,
    pub started: u64,
    /// Seconds left before the daemon rolls it back.
    pub timeout_in: u64,
    pub enqueued: u32,
    pub dequeued: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_show_text_as_it_is() {
        assert_eq!(display_body("héllo wörld ✓".as_bytes()), "héllo wörld ✓");
        assert_eq!(display_body(b"a\\b\tc\n\xff"), "a\\5cb\\09c\\0a\\ff");
        // What it shows reads back as the same bytes.
        let raw = b"x \\ \x01 \xc3\xa9 \xc3";
        assert_eq!(unescape_bytes("body", &display_body(raw)).unwrap(), raw);
    }

    #[test]
    fn escapes_round_trip() {
        let raw = b"hello world\\\x00\xff";
        let text = escape_bytes(raw);
        assert_eq!(text, "hello\\20world\\5c\\00\\ff");
        assert_eq!(unescape_bytes("x", &text).unwrap(), raw);
        assert!(unescape_bytes("x", "bad\\2").is_err());
        assert!(unescape_bytes("x", "bad\\zz").is_err());
    }

    #[test]
    fn ids() {
        assert!(MsgId::parse(&"a".repeat(33)).is_err());
        assert_eq!(MsgId::parse("abc").unwrap().to_string(), "abc");
        assert!(parse_corrid("").unwrap().is_empty());
        let mut ctl = EnqueueCtl { priority: Some(0), ..Default::default() };
        assert!(ctl.validate().unwrap_err().message.contains("1 to 100"));
        ctl.priority = Some(100);
        assert!(ctl.validate().is_ok());
    }
}
