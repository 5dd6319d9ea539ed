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

impl Engine {
    /// Every queue for `qstat`: counts at this instant (messages waiting and held found
    /// from the waiting set, not by a scan of every message), totals since the load, and
    /// the threshold state with the last firing.
    pub fn stat_rows(&self) -> Vec<qm_common::stat::QueueStat> {
        let now = now_us();
        let inner = self.lock();
        let mut waiting: std::collections::HashMap<&str, (u64, u64)> = Default::default();
        for (_, seq) in &inner.index.waiting {
            if let Some(entry) = inner.index.msgs.get(seq) {
                let w = waiting.entry(entry.meta.queue.as_str()).or_default();
                w.0 += 1;
                w.1 += u64::from(entry.meta.retries > 0);
            }
        }
        let mut rows: Vec<qm_common::stat::QueueStat> = inner
            .index
            .queues
            .iter()
            .map(|(name, q)| {
                let messages = q.usage.messages();
                let ready = q.ready.len() as u64;
                let (wait, retrying) = waiting.get(name.as_str()).copied().unwrap_or_default();
                qm_common::stat::QueueStat {
                    queue: name.clone(),
                    messages,
                    bytes: q.usage.persistent_bytes + q.usage.nonpersistent_bytes,
                    ready,
                    waiting: wait,
                    retrying,
                    held: messages.saturating_sub(ready + wait),
                    oldest_age_ms: q
                        .by_age
                        .first()
                        .map_or(0, |(at, _)| now.saturating_sub(*at) / 1000),
                    enqueued: q.counters.enqueued,
                    dequeued: q.counters.dequeued,
                    to_error: q.counters.to_error,
                    expired: q.counters.expired,
                    threshold: if q.armed.iter().all(|a| *a) {
                        "armed".into()
                    } else {
                        String::new()
                    },
                    forwarders: Vec::new(),
                }
            })
            .collect();
        drop(inner);
        for row in rows.iter_mut().filter(|r| r.threshold.is_empty()) {
            let last = self.firings(Some(&row.queue)).into_iter().rfind(|f| !f.test);
            row.threshold = match last {
                Some(f) => format!("fired at {}", qm_common::time::format_local(f.started)),
                None => "fired".into(),
            };
        }
        rows.sort_by(|a, b| a.queue.cmp(&b.queue));
        rows
    }
}
