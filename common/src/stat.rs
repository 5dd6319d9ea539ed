//! `qstat`: a live view of a queue space, one row per queue. The daemon gives counts and
//! totals at one instant; rates come from two views taken a moment apart.

use serde::{Deserialize, Serialize};

/// One queue at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStat {
    pub queue: String,
    /// Committed messages: ready, waiting for their time, or held by a transaction.
    pub messages: u64,
    pub bytes: u64,
    /// Ready to be dequeued now.
    pub ready: u64,
    /// Not available yet (a future time, or a retry delay).
    pub waiting: u64,
    /// Of those waiting, how many wait out a retry delay (dequeued and rolled back before).
    pub retrying: u64,
    /// Taken by a transaction not yet committed.
    pub held: u64,
    /// Milliseconds since the oldest message was enqueued; 0 for an empty queue.
    pub oldest_age_ms: u64,
    /// Totals since the queue space was loaded.
    pub enqueued: u64,
    pub dequeued: u64,
    pub to_error: u64,
    pub expired: u64,
    /// `armed`, or `fired at TIME` when a high limit was reached and the low one not yet.
    pub threshold: String,
    /// Forwarders running for this queue (their ids).
    pub forwarders: Vec<u32>,
}

/// A queue space at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceStat {
    pub qspace: String,
    /// When the view was taken, microseconds since the epoch.
    pub taken_us: u64,
    /// Sessions attached (clients, forwarders, qmadmin).
    pub sessions: u32,
    pub queues: Vec<QueueStat>,
}

/// Rates of one queue between two views, messages per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub enqueued_per_sec: f64,
    pub dequeued_per_sec: f64,
}

impl SpaceStat {
    /// The rates of `queue` since `earlier`; `None` for a queue the earlier view lacks or
    /// views taken at the same instant.
    pub fn rates(&self, earlier: &SpaceStat, queue: &QueueStat) -> Option<Rates> {
        let secs = self.taken_us.checked_sub(earlier.taken_us)? as f64 / 1e6;
        let before = earlier.queues.iter().find(|q| q.queue == queue.queue)?;
        (secs > 0.0).then(|| Rates {
            enqueued_per_sec: queue.enqueued.saturating_sub(before.enqueued) as f64 / secs,
            dequeued_per_sec: queue.dequeued.saturating_sub(before.dequeued) as f64 / secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(at_us: u64, enqueued: u64, dequeued: u64) -> SpaceStat {
        let q = QueueStat { queue: "Q".into(), enqueued, dequeued, ..Default::default() };
        SpaceStat { qspace: "QS".into(), taken_us: at_us, sessions: 1, queues: vec![q] }
    }

    #[test]
    fn rates_between_two_views() {
        let (before, after) = (view(1_000_000, 10, 4), view(3_000_000, 30, 10));
        let rates = after.rates(&before, &after.queues[0]).unwrap();
        assert_eq!(rates, Rates { enqueued_per_sec: 10.0, dequeued_per_sec: 3.0 });
        assert_eq!(after.rates(&after, &after.queues[0]), None, "same instant");
        let mut other = view(0, 0, 0);
        other.queues[0].queue = "R".into();
        assert_eq!(after.rates(&other, &after.queues[0]), None, "a queue the view lacks");
    }
}
