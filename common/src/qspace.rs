//! Queue spaces: their creation parameters, limits and the reports about them.

use crate::device::VtocEntry;
use crate::error::{QmError, QmResult};
use crate::names::{check_error_queue_name, check_qspace_name};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Lowest IPC key a queue space may use.
pub const IPC_KEY_MIN: u32 = 32769;
/// Highest IPC key a queue space may use.
pub const IPC_KEY_MAX: u32 = 262_143;
/// Largest count accepted for queues, transactions and processes.
pub const COUNT_MAX: u32 = 65_535;
/// Largest number of messages a queue space may be sized for.
pub const MESSAGES_MAX: u32 = 1 << 30;
/// Largest blocking factor.
pub const BLOCKING_MAX: u32 = 4096;
/// Default blocking factor.
pub const BLOCKING_DEFAULT: u32 = 16;

/// Unit of a memory size written `N`, `Nb` or `NB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryUnit {
    Bytes,
    Blocks,
}

/// A memory size as `-n` takes it: bytes (`b`) or blocks (`B`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySize {
    pub value: u64,
    pub unit: MemoryUnit,
}

impl MemorySize {
    pub const ZERO: MemorySize = MemorySize { value: 0, unit: MemoryUnit::Blocks };

    /// Bytes this size stands for on a device with `page_size` pages; bytes round down to
    /// whole pages, as Tuxedo does.
    pub fn bytes(self, page_size: u32) -> u64 {
        let page = u64::from(page_size);
        match self.unit {
            MemoryUnit::Bytes => self.value / page * page,
            MemoryUnit::Blocks => self.value.saturating_mul(page),
        }
    }
}

impl FromStr for MemorySize {
    type Err = QmError;

    fn from_str(s: &str) -> QmResult<Self> {
        let s = s.trim();
        let (digits, unit) = match s.strip_suffix('b') {
            Some(d) => (d, MemoryUnit::Bytes),
            None => (s.strip_suffix('B').unwrap_or(s), MemoryUnit::Blocks),
        };
        let value = digits.parse::<u64>().map_err(|_| {
            QmError::invalid(
                "Non-persistent memory",
                s,
                "write a number of blocks (N or NB) or bytes (Nb)",
            )
        })?;
        if value > 1 << 40 {
            return Err(QmError::invalid("Non-persistent memory", s, "at most 2^40 is allowed"));
        }
        Ok(MemorySize { value, unit })
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.unit {
            MemoryUnit::Bytes => 'b',
            MemoryUnit::Blocks => 'B',
        };
        write!(f, "{}{}", self.value, suffix)
    }
}

/// Everything `qspacecreate` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpaceParams {
    pub name: String,
    pub ipc_key: u32,
    /// Pages requested; rounded down to a multiple of 4 when the space is created.
    pub pages: u64,
    pub queues: u32,
    pub transactions: u32,
    pub processes: u32,
    pub messages: u32,
    /// Empty: no error queue, so messages out of retries are dropped.
    pub error_queue: String,
    pub initialize: bool,
    pub blocking: u32,
    /// `-n`: memory for non-persistent messages.
    pub nonpersistent: MemorySize,
    /// `-A`: extra concurrent blocking actions (waiting dequeues) beyond one per process.
    pub actions: u32,
    /// `-o`: overflow memory in bytes (accepted for compatibility, reported only).
    pub overflow: u64,
}

/// Everything `qspacechange` takes: the creation parameters minus pages and queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpaceChange {
    pub name: String,
    pub ipc_key: u32,
    pub transactions: u32,
    pub processes: u32,
    pub messages: u32,
    pub error_queue: String,
    pub initialize: bool,
    pub blocking: u32,
    pub nonpersistent: Option<MemorySize>,
    pub actions: Option<u32>,
    pub overflow: Option<u64>,
}

/// Rounds a page count down to a multiple of 4, as queue-space sizes are.
pub fn round_pages(pages: u64) -> u64 {
    pages / 4 * 4
}

/// Checks an IPC key.
pub fn check_ipc_key(key: u32) -> QmResult<()> {
    if !(IPC_KEY_MIN..=IPC_KEY_MAX).contains(&key) {
        return Err(QmError::invalid(
            "IPC Key for queue space",
            key,
            &format!("it must be {IPC_KEY_MIN} to {IPC_KEY_MAX}"),
        ));
    }
    Ok(())
}

/// Checks a count field against `1..=max`.
pub fn check_count(field: &str, value: u64, max: u64) -> QmResult<()> {
    if value == 0 || value > max {
        return Err(QmError::invalid(field, value, &format!("it must be 1 to {max}")));
    }
    Ok(())
}

fn check_shared(
    name: &str,
    ipc_key: u32,
    counts: [(&str, u32, u32); 4],
    error_queue: &str,
) -> QmResult<()> {
    check_qspace_name(name)?;
    check_ipc_key(ipc_key)?;
    for (field, value, max) in counts {
        check_count(field, value.into(), max.into())?;
    }
    check_error_queue_name(error_queue)
}

impl QueueSpaceParams {
    /// Checks every field on its own; placement on the device is checked by the daemon.
    pub fn validate(&self) -> QmResult<()> {
        check_shared(
            &self.name,
            self.ipc_key,
            [
                ("Number of concurrent transactions in queue space", self.transactions, COUNT_MAX),
                ("Number of concurrent processes in queue space", self.processes, COUNT_MAX),
                ("Number of messages in queue space", self.messages, MESSAGES_MAX),
                ("Blocking factor", self.blocking, BLOCKING_MAX),
            ],
            &self.error_queue,
        )?;
        check_count("Number of queues in queue space", self.queues.into(), COUNT_MAX.into())?;
        let pages = round_pages(self.pages);
        let overhead = 1 + u64::from(self.queues);
        if pages < overhead {
            return Err(QmError::invalid(
                "Size of queue space in disk pages",
                self.pages,
                &format!(
                    "it must be at least {} (one page plus one per queue, rounded up to a multiple of 4)",
                    overhead.div_ceil(4) * 4
                ),
            ));
        }
        Ok(())
    }
}

impl QueueSpaceChange {
    pub fn validate(&self) -> QmResult<()> {
        check_shared(
            &self.name,
            self.ipc_key,
            [
                ("Number of concurrent transactions in queue space", self.transactions, COUNT_MAX),
                ("Number of concurrent processes in queue space", self.processes, COUNT_MAX),
                ("Number of messages in queue space", self.messages, MESSAGES_MAX),
                ("Blocking factor", self.blocking, BLOCKING_MAX),
            ],
            &self.error_queue,
        )
    }
}

/// State of a queue space, in Tuxedo's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueSpaceState {
    /// On disk only: nothing loaded in the daemon.
    Inactive,
    /// Loaded in the daemon (non-persistent messages live), nobody attached.
    Open,
    /// At least one session, client or forwarder attached.
    Active,
}

impl fmt::Display for QueueSpaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueSpaceState::Inactive => "inactive",
            QueueSpaceState::Open => "open",
            QueueSpaceState::Active => "active",
        })
    }
}

/// What `qspacelist` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpaceInfo {
    pub params: QueueSpaceParams,
    /// File the queue space's data lives in.
    pub file: String,
    pub page_size: u32,
    pub extents: Vec<VtocEntry>,
    pub total_pages: u64,
    /// Pages set aside for the space's own bookkeeping: one plus one per queue.
    pub overhead_pages: u64,
    /// Bytes of memory for non-persistent messages after rounding to whole pages.
    pub nonpersistent_bytes: u64,
    /// Estimate of the daemon memory this space needs at its configured sizes.
    pub memory_estimate: u64,
    pub state: QueueSpaceState,
    pub queues_defined: u32,
    pub messages: u64,
    /// Blocks the messages use; `None` while the queue space is not loaded (counting them
    /// means reading every stored message, which the first `qopen` does anyway).
    pub blocks_used: Option<u64>,
}

/// What `qsize` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeEstimate {
    pub pages: u64,
    pub queues: u32,
    pub transactions: u32,
    pub processes: u32,
    pub messages: u32,
    pub nonpersistent_bytes: u64,
    /// Bytes of daemon memory for indexes, transactions and attachments.
    pub system_bytes: u64,
    /// System bytes plus non-persistent memory.
    pub total_bytes: u64,
    /// qm uses no System V semaphores; always 0, reported for old scripts.
    pub semaphores: u32,
}

/// One process or session attached to a queue space, as `ipcs` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub qspace: String,
    pub ipc_key: u32,
    pub state: QueueSpaceState,
    pub session: u64,
    pub pid: Option<u32>,
    pub program: String,
    pub kind: String,
    /// Seconds since the Unix epoch when it attached.
    pub since: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> QueueSpaceParams {
        QueueSpaceParams {
            name: "QS".into(),
            ipc_key: 88945,
            pages: 50,
            queues: 3,
            transactions: 3,
            processes: 3,
            messages: 12,
            error_queue: "errq".into(),
            initialize: false,
            blocking: 16,
            nonpersistent: MemorySize::ZERO,
            actions: 0,
            overflow: 0,
        }
    }

    #[test]
    fn rounding_and_overhead() {
        assert_eq!(round_pages(50), 48);
        assert_eq!(round_pages(52), 52);
        assert!(params().validate().is_ok());
        let small = QueueSpaceParams { pages: 7, queues: 4, ..params() };
        assert!(small.validate().unwrap_err().message.contains("at least 8"));
    }

    #[test]
    fn ipc_key_range() {
        assert!(check_ipc_key(32768).is_err());
        assert!(check_ipc_key(32769).is_ok());
        assert!(check_ipc_key(262_143).is_ok());
        assert!(check_ipc_key(262_144).unwrap_err().message.contains("32769 to 262143"));
    }

    #[test]
    fn memory_sizes() {
        let m: MemorySize = "2000b".parse().unwrap();
        assert_eq!(m.bytes(1024), 1024);
        assert_eq!("2048b".parse::<MemorySize>().unwrap().bytes(1024), 2048);
        assert_eq!("100".parse::<MemorySize>().unwrap().bytes(1024), 102_400);
        assert_eq!("100B".parse::<MemorySize>().unwrap().bytes(512), 51_200);
        assert!("x".parse::<MemorySize>().is_err());
    }
}
