//! Time-driven work of a queue space: messages becoming available, messages expiring, and
//! transactions running out of time. One task per loaded queue space sleeps until the
//! earliest deadline (at most a second, so it notices when the space is unloaded).

use super::index::EntryState;
use super::record::now_us;
use super::stored::AVAILABLE;
use super::writer::WriteOp;
use super::{Engine, Inner};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest sleep of the timer task.
const TICK: Duration = Duration::from_secs(1);
/// Most stored timers handled at once (the rest at the next turn, at once).
const BATCH: usize = 1000;

/// Makes due messages ready and removes expired ones.
pub fn settle(engine: &Engine, inner: &mut Inner, now: u64) {
    for seq in inner.index.due(now) {
        if let Some(e) = inner.index.msgs.get(&seq) {
            let blocks = engine.blocks(&e.meta);
            inner.index.set_state(seq, EntryState::Ready, blocks);
        }
    }
    for seq in inner.index.expired(now) {
        engine.expire(inner, seq);
    }
    if inner.index.stored_timer.is_some_and(|t| t <= now) {
        settle_stored(engine, inner, now);
    }
}

/// The same for stored messages whose time has come: each is made resident, then expired,
/// or made ready in memory at once and on disk by a write, after which it goes back to
/// living on disk alone.
fn settle_stored(engine: &Engine, inner: &mut Inner, now: u64) {
    let mut disk = engine.disk();
    let view = match disk.view() {
        Ok(Some(view)) => view,
        Ok(None) => return,
        Err(e) => return tracing::warn!(qspace = %engine.name, "timers: {}", e.message),
    };
    let due = match view.due(now, BATCH, |seq| inner.index.resident(seq)) {
        Ok((due, next)) => {
            inner.index.stored_timer = next;
            due
        }
        Err(e) => return tracing::warn!(qspace = %engine.name, "timers: {}", e.message),
    };
    let mut ops = Vec::new();
    let mut readied = Vec::new();
    for (kind, seq) in due {
        if inner.index.resident(seq) {
            continue;
        }
        let Ok(Some((meta, state))) = engine.lookup(inner, &mut disk, seq) else { continue };
        if !inner.index.queues.contains_key(&meta.queue) {
            continue;
        }
        let (expires, available) = (meta.expires_us, meta.available_us);
        inner.index.adopt(seq, meta, state, None);
        if expires.is_some_and(|e| e <= now) {
            engine.expire(inner, seq);
        } else if kind == AVAILABLE && state == EntryState::Waiting && available <= now {
            let blocks = inner.index.msgs.get(&seq).map_or(0, |e| engine.blocks(&e.meta));
            inner.index.set_state(seq, EntryState::Ready, blocks);
            ops.push(WriteOp::Ready { tables: engine.tables.clone(), seq });
            readied.push(seq);
        }
    }
    if ops.is_empty() {
        return;
    }
    let pending = engine.send(ops);
    engine.after(pending, move |_, inner, ok| {
        for seq in readied.into_iter().filter(|_| ok) {
            inner.index.evict(seq);
        }
    });
}

/// Starts the timer task of `engine` (when a runtime is there to run it).
pub fn spawn(engine: &Arc<Engine>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(engine);
    handle.spawn(async move {
        loop {
            let Some(engine) = weak.upgrade().filter(|e| e.alive()) else { return };
            let now = now_us();
            let (next, overdue, deadline) = {
                let mut inner = engine.lock();
                settle(&engine, &mut inner, now);
                let at = Instant::now();
                let overdue: Vec<u64> = inner.txns.values().filter(|t| t.deadline <= at).map(|t| t.id).collect();
                let deadline = inner.txns.values().map(|t| t.deadline).min();
                (inner.index.next_timer(), overdue, deadline)
            };
            for id in overdue {
                let started = engine.lock().txns.get(&id).map(|t| t.started);
                let age = started.map_or(0, |s| qm_common::time::now_secs().saturating_sub(s));
                tracing::warn!(qspace = %engine.name, "transaction {id} timed out after {age} s; rolled back");
                let _ = engine.abort(id, &format!("it timed out after {age} s and was rolled back")).await;
            }
            let mut sleep = TICK;
            if let Some(t) = next {
                sleep = sleep.min(Duration::from_micros(t.saturating_sub(now_us())));
            }
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(Instant::now()));
            }
            let wake = engine.timer_wake_handle();
            drop(engine);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
            }
        }
    });
}
