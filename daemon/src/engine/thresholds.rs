//! Capacity thresholds: after every change to a queue's usage, each of its two limit sets
//! (persistent: b, B, % of the queue space's pages, m; non-persistent: b, B, % of the
//! non-persistent memory) is checked. Reaching the high limit fires its command once; the
//! set re-arms only when usage has fallen to the low limit.
//!
//! The set's new state is written before its command runs, so a restart never fires twice
//! for one crossing; at load, a set that is armed yet above its high limit fires (its
//! crossing was never recorded).

use super::index::QueueState;
use super::writer::{Pending, WriteOp};
use super::{Engine, Inner};
use crate::threshold::{self, Firing};
use qm_common::protocol::FiringRecord;
use qm_common::queue::QueueUsage;
use qm_common::threshold::{LimitUnit, Threshold};
use qm_common::{QmError, QmResult};
use std::sync::Arc;

/// Firings kept per queue space (in memory and on disk).
pub const FIRINGS_KEPT: usize = 1000;

/// Which limit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Persistent = 0,
    NonPersistent = 1,
}

impl Set {
    pub const BOTH: [Set; 2] = [Set::Persistent, Set::NonPersistent];

    pub fn label(self) -> &'static str {
        match self {
            Set::Persistent => "persistent",
            Set::NonPersistent => "nonpersistent",
        }
    }

    fn key(self, queue: &str) -> String {
        format!("thr:{queue}:{}", self.label())
    }

    /// The state keys of both sets of a queue: removed when the queue is destroyed, so a
    /// queue created later under the same name starts armed.
    pub fn state_keys(queue: &str) -> [String; 2] {
        Set::BOTH.map(|set| set.key(queue))
    }

    pub fn threshold(self, q: &QueueState) -> &Threshold {
        match self {
            Set::Persistent => &q.def.threshold,
            Set::NonPersistent => &q.def.nonpersistent_threshold,
        }
    }
}

/// Usage measured in a limit's unit: `used / base`, where base is 1 except for percents.
struct Measure {
    used: u128,
    base: u128,
}

impl Measure {
    /// True when usage is at or above `value` (percent of base for `%`).
    fn at_least(&self, value: u64, unit: LimitUnit) -> bool {
        match unit {
            LimitUnit::Percent => self.base > 0 && self.used * 100 >= u128::from(value) * self.base,
            _ => self.used >= u128::from(value),
        }
    }

    fn at_most(&self, value: u64, unit: LimitUnit) -> bool {
        match unit {
            LimitUnit::Percent => {
                self.base == 0 || self.used * 100 <= u128::from(value) * self.base
            }
            _ => self.used <= u128::from(value),
        }
    }

    fn show(&self, unit: LimitUnit) -> String {
        match unit {
            LimitUnit::Percent if self.base > 0 => format!("{}%", self.used * 100 / self.base),
            LimitUnit::Percent => "0%".into(),
            other => format!("{}{}", self.used, other.suffix()),
        }
    }
}

impl Engine {
    fn measure(&self, u: &QueueUsage, set: Set, unit: LimitUnit) -> Measure {
        let page = u128::from(self.limits.page_size.max(1));
        let (used, base) = match (set, unit) {
            (_, LimitUnit::Messages) => (u.messages().into(), 1),
            (Set::Persistent, LimitUnit::Bytes) => (u.persistent_bytes.into(), 1),
            (Set::Persistent, LimitUnit::Blocks) => (u.blocks.into(), 1),
            (Set::Persistent, LimitUnit::Percent) => {
                (u.blocks.into(), self.limits.total_pages.into())
            }
            (Set::NonPersistent, LimitUnit::Bytes) => (u.nonpersistent_bytes.into(), 1),
            (Set::NonPersistent, LimitUnit::Blocks) => {
                (u128::from(u.nonpersistent_bytes).div_ceil(page), 1)
            }
            (Set::NonPersistent, LimitUnit::Percent) => {
                (u.nonpersistent_bytes.into(), self.limits.np_bytes.into())
            }
        };
        Measure { used, base }
    }

    /// Checks the limits of every queue whose usage changed since the last check.
    pub(super) fn evaluate_thresholds(&self, inner: &mut Inner) {
        let dirty = std::mem::take(&mut inner.index.dirty);
        for name in dirty {
            for set in Set::BOTH {
                self.evaluate(inner, &name, set);
            }
        }
    }

    fn evaluate(&self, inner: &mut Inner, queue: &str, set: Set) {
        let Some(q) = inner.index.queues.get_mut(queue) else { return };
        let t = set.threshold(q).clone();
        let m = self.measure(&q.usage, set, t.high.unit);
        let armed = q.armed[set as usize];
        let fire = armed && m.at_least(t.high.value, t.high.unit);
        let rearm = !armed && m.at_most(t.low.value, t.low.unit);
        if !fire && !rearm {
            return;
        }
        q.armed[set as usize] = !fire;
        q.counters.firings += u64::from(fire);
        // Logged before the change that caused it is answered: at -l 3 the log tells which
        // change crossed a limit, and that no other did.
        let (qspace, limits) = (&self.name, set.label());
        if fire {
            let usage = m.show(t.high.unit);
            tracing::debug!(%qspace, %queue, %limits, %usage, "high limit {} reached", t.high);
        } else {
            let usage = m.show(t.low.unit);
            tracing::debug!(%qspace, %queue, %limits, %usage, "low limit {} reached: armed again", t.low);
        }
        let state = WriteOp::State {
            tables: self.tables.clone(),
            key: set.key(queue),
            value: vec![u8::from(!fire)],
        };
        let pending = self.send(vec![state]);
        if !fire || t.command.is_empty() {
            drop(pending);
            return;
        }
        let firing = self.firing(q, set, &t, &m, false);
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let env = self.limits.commands.clone();
        let engine = self.weak.clone();
        handle.spawn(async move {
            // The command runs only once the crossing is on disk.
            if pending.wait().await.is_err() {
                return;
            }
            // Recorded as running first, so that a command the daemon's end cuts short
            // (stop, kill -9) still shows in qthlog.
            let running = engine.upgrade().map(|e| e.record_firing(threshold::running(&firing)));
            let record = threshold::run(&env, firing).await;
            if let Some(engine) = engine.upgrade() {
                match running {
                    Some(n) => engine.update_firing(n, record),
                    None => drop(engine.record_firing(record)),
                }
            }
        });
    }

    fn firing(&self, q: &QueueState, set: Set, t: &Threshold, m: &Measure, test: bool) -> Firing {
        let queue = &q.def.name;
        Firing {
            aliases: q.def.attrs.aliases.clone(),
            qspace: self.name.clone(),
            queue: queue.to_string(),
            limits: set.label(),
            limit: t.high,
            usage: m.show(t.high.unit),
            command: t.command.clone(),
            test,
        }
    }

    /// Replaces firing `n` (recorded as running) with how it ended, unless it was dropped
    /// as one of the oldest meanwhile.
    pub fn update_firing(&self, n: u64, record: FiringRecord) {
        let mut inner = self.lock();
        let Some(slot) = inner.firings.iter_mut().find(|(k, _)| *k == n) else { return };
        slot.1 = record;
        let value = Some(postcard::to_stdvec(&slot.1).unwrap_or_default());
        drop(self.send(vec![WriteOp::Record {
            table: self.tables.firings.clone(),
            key: n,
            value,
        }]));
    }

    /// Rewrites the firings still recorded as running with `outcome` (the daemon stopping,
    /// the queue space unloaded), in memory and on disk; the write, if any, can be waited
    /// for.
    pub fn mark_running(&self, outcome: &str) -> Option<Pending> {
        let mut inner = self.lock();
        let mut ops = Vec::new();
        for (n, record) in inner.firings.iter_mut() {
            if record.outcome == qm_common::protocol::FIRING_RUNNING {
                record.outcome = outcome.to_string();
                ops.push(WriteOp::Record {
                    table: self.tables.firings.clone(),
                    key: *n,
                    value: Some(postcard::to_stdvec(&*record).unwrap_or_default()),
                });
            }
        }
        (!ops.is_empty()).then(|| self.send(ops))
    }

    /// Keeps a firing in memory and on disk, dropping the oldest beyond [`FIRINGS_KEPT`];
    /// returns its number.
    pub fn record_firing(&self, record: FiringRecord) -> u64 {
        let mut inner = self.lock();
        let n = inner.next_firing;
        inner.next_firing += 1;
        let mut ops = vec![WriteOp::Record {
            table: self.tables.firings.clone(),
            key: n,
            value: Some(postcard::to_stdvec(&record).unwrap_or_default()),
        }];
        inner.firings.push_back((n, record));
        while inner.firings.len() > FIRINGS_KEPT {
            if let Some((old, _)) = inner.firings.pop_front() {
                ops.push(WriteOp::Record {
                    table: self.tables.firings.clone(),
                    key: old,
                    value: None,
                });
            }
        }
        drop(self.send(ops));
        n
    }

    /// Recorded firings, oldest first, of one queue or all.
    pub fn firings(&self, queue: Option<&str>) -> Vec<FiringRecord> {
        let inner = self.lock();
        inner
            .firings
            .iter()
            .map(|(_, r)| r)
            .filter(|r| queue.is_none_or(|q| r.queue == q))
            .cloned()
            .collect()
    }

    /// Runs a queue's threshold command now, with its current usage (`qthtest`).
    pub async fn test_fire(self: &Arc<Self>, queue: &str, set: Set) -> QmResult<FiringRecord> {
        let firing = {
            let inner = self.lock();
            let q =
                inner.index.queues.get(queue).ok_or_else(|| super::bad_queue(queue, &self.name))?;
            let t = set.threshold(q);
            if t.command.is_empty() {
                return Err(QmError::inval(format!(
                    "Queue {queue} has no {} threshold command",
                    set.label()
                )));
            }
            let m = self.measure(&q.usage, set, t.high.unit);
            self.firing(q, set, t, &m, true)
        };
        let record = threshold::run(&self.limits.commands, firing).await;
        self.record_firing(record.clone());
        Ok(record)
    }
}
