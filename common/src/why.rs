//! Why a message is not moving (`qwhy`): the facts the daemon finds about one message, each
//! of which reads as one sentence for people and carries a kind for programs.
//!
//! The daemon only gathers facts; the wording lives here so that every client says the
//! same thing, with times shown in the reader's own time zone.

use crate::message::MsgId;
use crate::order::{SortKey, Tiebreak};
use crate::plural::count;
use crate::time::format_local;
use serde::{Deserialize, Serialize};

/// An open transaction and the session that began it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub txn: u64,
    /// Absent for clients that came over the network.
    pub pid: Option<u32>,
    pub program: String,
}

impl Holder {
    /// `transaction 3 of pid 812 (orders)`.
    fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("transaction {} of pid {pid} ({})", self.txn, self.program),
            None => format!("transaction {} of {}", self.txn, self.program),
        }
    }
}

/// What puts a message ahead of another in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AheadBy {
    /// Enqueued at the top of the queue (out of order).
    Top,
    /// A sort key of the queue's order.
    Key(SortKey),
    /// Equal on every sort key; the tie-break decides.
    Tiebreak(Tiebreak),
    /// Enqueued before it by naming its msgid (out of order).
    Before,
}

impl AheadBy {
    /// Follows a count of messages: `2 of higher priority`.
    pub fn label(self) -> &'static str {
        match self {
            AheadBy::Top => "placed at the top of the queue",
            AheadBy::Key(SortKey::Priority) => "of higher priority",
            AheadBy::Key(SortKey::Time) => "available earlier (the queue sorts by time)",
            AheadBy::Key(SortKey::Expiration) => "expiring earlier (the queue sorts by expiration)",
            AheadBy::Tiebreak(Tiebreak::Fifo) => "of equal rank enqueued earlier (fifo)",
            AheadBy::Tiebreak(Tiebreak::Lifo) => "of equal rank enqueued later (lifo)",
            AheadBy::Before => "placed before it by msgid",
        }
    }

    /// A short name for programs.
    pub fn name(self) -> &'static str {
        match self {
            AheadBy::Top => "top",
            AheadBy::Key(SortKey::Priority) => "priority",
            AheadBy::Key(SortKey::Time) => "time",
            AheadBy::Key(SortKey::Expiration) => "expiration",
            AheadBy::Tiebreak(Tiebreak::Fifo) => "fifo",
            AheadBy::Tiebreak(Tiebreak::Lifo) => "lifo",
            AheadBy::Before => "before_msgid",
        }
    }
}

/// A configured forwarder for a queue that is not running, with its `printserver` state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleForwarder {
    pub id: u32,
    pub state: String,
}

/// One reason a message stays where it is, or that nothing holds it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Dequeued in a transaction that is still open.
    Held(Holder),
    /// Enqueued in a transaction that is still open: nobody sees it yet.
    Uncommitted(Holder),
    /// A dequeue outside a transaction, or an administrator's change, is finishing with it.
    Busy,
    /// Rolled back `retry` times, out of the `retries` its queue allows; hidden until
    /// `until` (seconds since the epoch).
    RetryDelay { until: u64, retry: u32, retries: u32 },
    /// Not available before `until` (seconds since the epoch).
    NotAvailable { until: u64 },
    /// `total` ready messages come first, counted by what puts each one ahead.
    Behind { queue: String, total: u64, by: Vec<(AheadBy, u64)> },
    /// No forwarder runs for its queue; `configured` are those that would serve it.
    NoForwarder { queue: String, configured: Vec<IdleForwarder> },
    /// Expired at `at` (seconds since the epoch), still there because something holds it or
    /// its removal has not come round yet.
    Expired { at: u64 },
    /// On the error queue, moved there from `origin` with `retries` retries counted.
    ErrorQueue { error_queue: String, origin: String, retries: u32 },
    /// Nothing holds it back: the next dequeue from `queue` takes it.
    NextInLine { queue: String },
}

impl Reason {
    /// The machine-readable kind, as `--json` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Held(_) => "held",
            Reason::Uncommitted(_) => "uncommitted",
            Reason::Busy => "busy",
            Reason::RetryDelay { .. } => "retry_delay",
            Reason::NotAvailable { .. } => "not_available",
            Reason::Behind { .. } => "behind",
            Reason::NoForwarder { .. } => "no_forwarder",
            Reason::Expired { .. } => "expired",
            Reason::ErrorQueue { .. } => "error_queue",
            Reason::NextInLine { .. } => "next_in_line",
        }
    }

    /// The reason as one sentence.
    pub fn sentence(&self) -> String {
        match self {
            Reason::Held(h) => format!(
                "It is held by {}, which dequeued it: it comes back if that transaction rolls back and is gone once it commits.",
                h.describe()
            ),
            Reason::Uncommitted(h) => format!(
                "Its enqueue is not committed yet: {} has to commit before anyone can dequeue it.",
                h.describe()
            ),
            Reason::Busy => {
                "It is being taken off its queue or changed by an administrator command right now."
                    .into()
            }
            Reason::RetryDelay { until, retry, retries } => format!(
                "It is waiting out its retry delay until {} (retry {retry} of {retries}).",
                format_local(*until)
            ),
            Reason::NotAvailable { until } => {
                format!("It is not available until {}.", format_local(*until))
            }
            Reason::Behind { queue, total, by } => {
                let parts: Vec<String> =
                    by.iter().map(|(why, n)| format!("{n} {}", why.label())).collect();
                format!(
                    "It is behind {} that come before it in the order of queue {queue}: {}.",
                    count(*total, "message", "messages"),
                    parts.join(", ")
                )
            }
            Reason::NoForwarder { queue, configured } => no_forwarder(queue, configured),
            Reason::Expired { at } => format!(
                "It expired at {}: no dequeue takes it, and it is removed as soon as nothing holds it.",
                format_local(*at)
            ),
            Reason::ErrorQueue { error_queue, origin, retries } => format!(
                "It was moved to the error queue {error_queue} from queue {origin} after {} (qchangequeue moves it back).",
                count(*retries, "retry", "retries")
            ),
            Reason::NextInLine { queue } => {
                format!("It is next in line on queue {queue}: a dequeue takes it now.")
            }
        }
    }
}

fn no_forwarder(queue: &str, configured: &[IdleForwarder]) -> String {
    let states: Vec<String> =
        configured.iter().map(|f| format!("{} ({})", f.id, f.state)).collect();
    match configured {
        [] => format!(
            "No forwarder serves queue {queue} (none is configured for it): it moves only when an application dequeues it."
        ),
        [f] => format!(
            "No forwarder serves queue {queue}: forwarder {} would (it is {}; boot -i {} starts it).",
            f.id, f.state, f.id
        ),
        _ => format!(
            "No forwarder serves queue {queue}: forwarders {} would (boot -i ID starts one).",
            states.join(", ")
        ),
    }
}

/// What `qwhy` learns about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    pub msgid: MsgId,
    pub qspace: String,
    /// The queue it is on now.
    pub queue: String,
    /// Never empty: when nothing holds the message back, it says so.
    pub reasons: Vec<Reason>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_names_each_cause_with_its_count() {
        let r = Reason::Behind {
            queue: "Q".into(),
            total: 3,
            by: vec![(AheadBy::Key(SortKey::Priority), 2), (AheadBy::Tiebreak(Tiebreak::Fifo), 1)],
        };
        assert_eq!(
            r.sentence(),
            "It is behind 3 messages that come before it in the order of queue Q: 2 of higher priority, 1 of equal rank enqueued earlier (fifo)."
        );
    }

    #[test]
    fn forwarders_that_would_serve_are_named() {
        let one = vec![IdleForwarder { id: 4, state: "not booted".into() }];
        let text = Reason::NoForwarder { queue: "Q".into(), configured: one }.sentence();
        assert!(text.contains("forwarder 4 would (it is not booted; boot -i 4"), "{text}");
        let none = Reason::NoForwarder { queue: "Q".into(), configured: vec![] }.sentence();
        assert!(none.contains("none is configured"), "{none}");
    }
}
