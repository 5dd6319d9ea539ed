//! How long the disk takes: each journal record's write and sync (one group commit),
//! counted in buckets for `/metrics` (`qm_journal_sync_seconds`).
//!
//! Every request of a group waits for its sync, so this is where a slow or busy disk
//! shows first: on the machine of BENCHMARKS.md most syncs take a tenth of a millisecond,
//! and now and then one takes a second while the disk stops. etcd exposes the same
//! measure of its own log (`wal_fsync_duration_seconds`) for the same reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: from a quarter of a millisecond to ten
/// seconds, about two and a half times apart.
pub const BOUNDS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// Durations counted by bucket, with their sum; lock-free, as the writer records one per
/// group.
pub struct Histogram {
    /// Per bucket (not cumulative); the last one past every bound.
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// What a [`Histogram`] held when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// Per bucket, cumulative as the exposition format wants: durations up to each bound of
    /// [`BOUNDS_US`], then all of them.
    pub cumulative: Vec<u64>,
    pub sum_us: u64,
}

impl Counted {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let bucket = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn read(&self) -> Counted {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        Counted { cumulative, sum_us: self.sum_us.load(Ordering::Relaxed) }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Every journal record's write and sync in this process since it started.
pub static JOURNAL_SYNCS: Histogram = Histogram::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets_and_add_up() {
        let h = Histogram::new();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(250));
        h.record(Duration::from_micros(251));
        h.record(Duration::from_millis(120));
        h.record(Duration::from_secs(30));
        let c = h.read();
        assert_eq!(c.cumulative.len(), BOUNDS_US.len() + 1);
        assert_eq!(&c.cumulative[..3], &[2, 3, 3], "a bound holds what equals it");
        assert_eq!(c.cumulative[8], 3, "120 ms is over 100 ms");
        assert_eq!(c.cumulative[9], 4, "and under 250 ms");
        assert_eq!(c.cumulative[BOUNDS_US.len() - 1], 4, "30 s is past every bound");
        assert_eq!(c.count(), 5);
        assert_eq!(c.sum_us, 100 + 250 + 251 + 120_000 + 30_000_000);
    }
}
