//! What a loaded queue space tells `/metrics` about each of its queues: usage, the age of
//! the oldest message, and the counters of what happened since it was loaded.

use super::index::{EntryState, QueueCounters};
use super::record::now_us;
use super::stored::View;
use super::{Engine, Inner};
use std::collections::HashMap;

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
    /// The queue's attributes (seed 004) and what they hold back.
    pub attrs: qm_common::queue::QueueAttrs,
    /// Seconds since the epoch of the last committed enqueue or dequeue, or of its creation.
    pub last_activity: u64,
    pub waiting_enqueues: u64,
}

impl Engine {
    /// When the oldest committed message of each queue was enqueued, resident or stored.
    fn oldest(&self, inner: &Inner) -> HashMap<String, u64> {
        let view = View::new(&self.db, &self.tables).ok();
        let mut oldest = HashMap::new();
        for (name, q) in &inner.index.queues {
            let resident = q.by_age.first().map(|(at, _)| *at);
            let stored = match (&view, q.usage.persistent_messages) {
                (Some(view), 1..) => view.oldest(name, |s| inner.index.gone(s)).ok().flatten(),
                _ => None,
            };
            if let Some(at) = resident.into_iter().chain(stored).min() {
                oldest.insert(name.clone(), at);
            }
        }
        oldest
    }

    /// Every queue of the space, by name.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let now = now_us();
        let inner = self.lock();
        let oldest = self.oldest(&inner);
        let mut stats: Vec<QueueStats> = inner
            .index
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                queue: name.clone(),
                messages: q.usage.messages(),
                bytes: q.usage.persistent_bytes + q.usage.nonpersistent_bytes,
                oldest_age_secs: oldest
                    .get(name)
                    .map_or(0.0, |at| now.saturating_sub(*at) as f64 / 1e6),
                counters: q.counters,
                attrs: q.def.attrs.clone(),
                last_activity: q.last_activity.max(q.def.attrs.created),
                waiting_enqueues: q.line.len() as u64,
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
        let oldest = self.oldest(&inner);
        // Held messages are resident: counted without reading the disk.
        let mut held: HashMap<&str, u64> = HashMap::new();
        for entry in inner.index.msgs.values() {
            if matches!(entry.state, EntryState::Locked(_)) {
                *held.entry(entry.meta.queue.as_str()).or_default() += 1;
            }
        }
        let mut rows: Vec<qm_common::stat::QueueStat> = inner
            .index
            .queues
            .iter()
            .map(|(name, q)| {
                let messages = q.usage.messages();
                let held = held.get(name.as_str()).copied().unwrap_or_default();
                let ready = messages.saturating_sub(q.waiting + held);
                qm_common::stat::QueueStat {
                    queue: name.clone(),
                    messages,
                    bytes: q.usage.persistent_bytes + q.usage.nonpersistent_bytes,
                    ready,
                    waiting: q.waiting,
                    retrying: q.retrying,
                    held,
                    oldest_age_ms: oldest.get(name).map_or(0, |at| now.saturating_sub(*at) / 1000),
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
