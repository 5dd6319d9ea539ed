//! Initializing a queue space's extents (`Initialize extents: y` of `qspacecreate` and
//! `qspacechange`, and the extents `qaddext` gives an initialized queue space).
//!
//! Initializing takes from the filesystem, up front, the disk the queue space's file may
//! come to need ([`initialized_bytes`]), so that a disk too small is refused now rather than
//! at an enqueue. The room is held as the file's floor (see [`crate::storage::space`]).
//!
//! It is the one admin command whose work grows with the size of a queue space, so it runs
//! without the store lock: the queue space is marked as being initialized (commands on it
//! are refused meanwhile, see [`Store::check_not_initializing`]), the room is taken in steps
//! that report progress and stop when the daemon stops, and the lock is taken again only to
//! record the result.
//!
//! [`initialized_bytes`]: crate::storage::space::initialized_bytes

use super::Ctx;
use crate::state::{Daemon, Store};
use crate::storage::device::put_qspace;
use crate::storage::handle::DbFile;
use crate::storage::records::QueueSpaceRecord;
use qm_common::protocol::Progress;
use qm_common::{Diagnostic, QmError, QmResult};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Progress is reported this many times, one step of room each.
const STEPS: u64 = 20;

/// For tests only: milliseconds to wait after each step, so that a test can act while an
/// initialization runs (and stop the daemon before it ends). Never set in production.
const TEST_STEP_DELAY: &str = "QM_TEST_INIT_CHUNK_DELAY_MS";

/// Refuses, before anything is written, a queue space whose disk (`bytes` more held for
/// `db`'s file) the filesystem has no room for; `unchanged` says what the refusal left alone.
pub fn check_room(db: &DbFile, bytes: u64, name: &str, unchanged: &str) -> QmResult<()> {
    let space = db.space()?;
    let needed = space.more_for(db.floor() + bytes);
    match space.free() {
        Some(free) if free < needed => Err(too_small(db, name, needed, free, unchanged)),
        _ => Ok(()),
    }
}

/// The refusal of an initialization: how much it needs, how much is free, and where.
fn too_small(db: &DbFile, name: &str, needed: u64, free: u64, unchanged: &str) -> QmError {
    let mib = |b: u64| b.div_ceil(1024 * 1024);
    QmError::no_space(format!(
        "Initializing queue space {name} needs {} MiB more on the filesystem holding {}, which \
         has {} MiB free; {unchanged}. Free space there, or do not initialize its extents \
         (n): then the disk is taken as messages arrive",
        mib(needed),
        db.path().display(),
        mib(free)
    ))
}

/// Holds room for `bytes` more in `db`'s file, in [`STEPS`] steps, each reported to
/// `progress` once `go_on` allowed it. On failure gives back what it took and says why
/// (a filesystem too small as [`too_small`]).
pub fn reserve_steps(
    db: &DbFile,
    name: &str,
    bytes: u64,
    mut go_on: impl FnMut(u64) -> bool,
    mut progress: impl FnMut(Progress),
) -> QmResult<()> {
    let space = db.space()?;
    let base = db.floor();
    for step in 1..=STEPS {
        let held = if go_on(step) {
            space.hold_for(base + bytes * step / STEPS)
        } else {
            Err(QmError::new(
                Diagnostic::Aborted,
                format!("The initialization of queue space {name} was cancelled: qmd is stopping"),
            ))
        };
        if let Err(e) = held {
            let needed = space.more_for(base + bytes);
            space.settle(base);
            return Err(match (e.diagnostic, space.free()) {
                (Diagnostic::NoSpace, Some(free)) => {
                    too_small(db, name, needed, free, "nothing was changed")
                }
                _ => e,
            });
        }
        progress(Progress { done: step, total: STEPS });
    }
    Ok(())
}

/// An initialization to run once the store is unlocked (see [`run`]). Its queue space is
/// marked as being initialized from [`Initialization::begin`] until this is dropped, however
/// it ends.
pub struct Initialization {
    daemon: Arc<Daemon>,
    name: String,
    /// The generation of the device the queue space is on.
    generation: u64,
    db: Arc<DbFile>,
    /// The disk the queue space's pages may need.
    bytes: u64,
}

impl Initialization {
    /// Marks `record`'s queue space as being initialized and returns the work to run once
    /// the store is unlocked: holding `bytes` of room for `db`'s file.
    pub fn begin(
        daemon: &Arc<Daemon>,
        store: &mut Store,
        db: Arc<DbFile>,
        record: &QueueSpaceRecord,
        bytes: u64,
    ) -> Initialization {
        let name = record.params.name.clone();
        store.initializing.insert(name.clone(), store.generation);
        Initialization { daemon: daemon.clone(), name, generation: store.generation, db, bytes }
    }

    fn unmark(&self, store: &mut Store) {
        if store.initializing.get(&self.name) == Some(&self.generation) {
            store.initializing.remove(&self.name);
        }
    }
}

impl Drop for Initialization {
    /// Takes the store's lock: never dropped while it is held.
    fn drop(&mut self) {
        self.unmark(&mut self.daemon.store());
    }
}

/// Runs an initialization; the store must not be locked by the caller.
pub fn run(ctx: &Ctx<'_>, init: Initialization) -> QmResult<()> {
    let delay =
        std::env::var(TEST_STEP_DELAY).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
    let daemon = ctx.daemon;
    let go_on = |step: u64| {
        // The test delay comes between steps, never before the first.
        if let Some(delay) = delay.filter(|_| step > 1) {
            pause(daemon, delay);
        }
        !daemon.stopping()
    };
    let reserved = reserve_steps(&init.db, &init.name, init.bytes, go_on, |p| (ctx.progress)(p));
    let recorded = reserved.and_then(|()| {
        let mut store = daemon.store();
        let recorded = record(&store, &init);
        init.unmark(&mut store);
        recorded
    });
    recorded.map_err(|e| {
        let name = &init.name;
        tracing::warn!(qspace = %name, "initialization ended early: {}", e.message);
        QmError::new(
            e.diagnostic,
            format!(
                "{}; queue space {name} exists but is not initialized (qspacechange {name} \
                 with Initialize extents: y does it)",
                e.message
            ),
        )
    })
}

/// Waits `delay`, or less if the daemon is stopping.
fn pause(daemon: &Daemon, delay: Duration) {
    let until = Instant::now() + delay;
    while !daemon.stopping() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
}

/// Marks the queue space initialized, if its device is still the one it was on, and has
/// every file keep the room its initialized queue spaces need.
fn record(store: &Store, init: &Initialization) -> QmResult<()> {
    let device = store.device.as_ref().filter(|_| store.generation == init.generation);
    let device = device.ok_or_else(|| {
        QmError::system("the device file was removed or replaced during the initialization")
    })?;
    let record = device.qspace(&init.name)?.ok_or_else(|| {
        QmError::system(format!("queue space {} disappeared during its initialization", init.name))
    })?;
    device.write(|txn| put_qspace(txn, &QueueSpaceRecord { initialized: true, ..record }))?;
    device.refresh_floors()
}
