//! What a loaded queue space tells `/metrics` about each of its queues: usage, the age of
//! the oldest message, and the counters of what happened since it was loaded.

use super::Engine;
use super::index::QueueCounters;
use super::record::now_us;

/// One queue, as `/metrics` reports it.
#[derive(Debug, Clone)]
pub struct QueueStats {
    pub queue: String,
    /// Committed messages (ready, waiting for their time, or held by a transaction).
    pub messages: u64,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Seconds since the oldest of them was enqueued; 0 for an empty queue.
    pub oldest_age_secs: f64,
    pub counters: QueueCounters,
}

impl Engine {
    /// Every queue of the space, by name.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let now = now_us();
        let inner = self.lock();
        let mut stats: Vec<QueueStats> = inner
            .index
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                queue: name.clone(),
                messages: q.usage.messages(),
                bytes: q.usage.persistent_bytes + q.usage.nonpersistent_bytes,
                oldest_age_secs: q
                    .by_age
                    .first()
                    .map_or(0.0, |(at, _)| now.saturating_sub(*at) as f64 / 1e6),
                counters: q.counters,
            })
            .collect();
        drop(inner);
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        stats
    }
}
