//! Initializing a queue space's extents (`Initialize extents: y` of `qspacecreate` and
//! `qspacechange`). This is the one admin command whose work grows with the size of a
//! queue space, so it runs without the store lock: the queue space is marked as being
//! initialized (commands on it are refused meanwhile, see
//! [`Store::check_not_initializing`]), the work goes in chunks that report progress and
//! stop when the daemon stops, and the lock is taken again only to record the result.
//!
//! The loop here does not care how a chunk claims its disk space: that is [`Filler`]'s
//! business.

use super::Ctx;
use crate::state::{Daemon, Store};
use crate::storage::device::{put_qspace, storage_error, write_in};
use crate::storage::records::QueueSpaceRecord;
use crate::storage::tables::QueueSpaceTables;
use qm_common::protocol::Progress;
use qm_common::{Diagnostic, QmError, QmResult};
use redb::Database;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes one chunk covers. A chunk is one write transaction of the queue space's
/// file, which other queue spaces in that file wait for: it must stay short.
const CHUNK_BYTES: u64 = 1024 * 1024;
/// Progress is reported this many times at least.
const STEPS: u64 = 20;

/// For tests only: milliseconds to wait after each chunk, so that a test can act while an
/// initialization runs (and stop the daemon before it ends). Never set in production.
const TEST_CHUNK_DELAY: &str = "QM_TEST_INIT_CHUNK_DELAY_MS";

/// An initialization to run once the store is unlocked (see [`run`]). Its queue space is
/// marked as being initialized from [`Initialization::begin`] until this is dropped, however
/// it ends.
pub struct Initialization {
    daemon: Arc<Daemon>,
    name: String,
    /// The generation of the device the queue space is on.
    generation: u64,
    pages: u64,
    /// Pages per chunk.
    step: u64,
    filler: Filler,
}

impl Initialization {
    /// Marks `record`'s queue space as being initialized and returns the work to run once
    /// the store is unlocked.
    pub fn begin(
        daemon: &Arc<Daemon>,
        store: &mut Store,
        db: Arc<Database>,
        record: &QueueSpaceRecord,
        pages: u64,
        page_size: u32,
    ) -> Initialization {
        let name = record.params.name.clone();
        store.initializing.insert(name.clone(), store.generation);
        let page = u64::from(page_size.max(1));
        let blocking = u64::from(record.params.blocking.max(1));
        let step = (pages / STEPS).min(CHUNK_BYTES / page).max(blocking);
        Initialization {
            daemon: daemon.clone(),
            filler: Filler::new(db, &name, page, blocking),
            name,
            generation: store.generation,
            pages,
            step,
        }
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
pub fn run(ctx: &Ctx<'_>, mut init: Initialization) -> QmResult<()> {
    let filled = fill(ctx, &mut init);
    // The filler goes either way: once done it leaves its pages free in the file, and a
    // cancelled initialization leaves nothing behind.
    let removed = init.filler.remove();
    let recorded = filled.and(removed).and_then(|()| {
        let mut store = ctx.daemon.store();
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

/// Fills the queue space chunk by chunk, reporting progress.
fn fill(ctx: &Ctx<'_>, init: &mut Initialization) -> QmResult<()> {
    let delay = std::env::var(TEST_CHUNK_DELAY)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut done = 0;
    while done < init.pages {
        if ctx.daemon.stopping() {
            return Err(QmError::new(
                Diagnostic::Aborted,
                format!(
                    "The initialization of queue space {} was cancelled: qmd is stopping",
                    init.name
                ),
            ));
        }
        let pages = init.step.min(init.pages - done);
        init.filler.fill(pages)?;
        done += pages;
        (ctx.progress)(Progress { done, total: init.pages });
        if let Some(delay) = delay {
            pause(ctx.daemon, delay);
        }
    }
    Ok(())
}

/// Waits `delay`, or less if the daemon is stopping.
fn pause(daemon: &Daemon, delay: Duration) {
    let until = Instant::now() + delay;
    while !daemon.stopping() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
}

/// Marks the queue space initialized, if its device is still the one it was on.
fn record(store: &Store, init: &Initialization) -> QmResult<()> {
    let device = store.device.as_ref().filter(|_| store.generation == init.generation);
    let device = device.ok_or_else(|| {
        QmError::system("the device file was removed or replaced during the initialization")
    })?;
    let record = device.qspace(&init.name)?.ok_or_else(|| {
        QmError::system(format!("queue space {} disappeared during its initialization", init.name))
    })?;
    device.write(|txn| put_qspace(txn, &QueueSpaceRecord { initialized: true, ..record }))
}

/// What initializing writes: zeroed pages in a table of the queue space, one write
/// transaction per chunk, so that its file grows to hold the queue space's disk space.
/// Removing the table at the end leaves those pages allocated to the file and free for
/// messages.
struct Filler {
    db: Arc<Database>,
    tables: QueueSpaceTables,
    page: u64,
    /// Pages per row.
    blocking: u64,
    next_key: u64,
    zeros: Vec<u8>,
}

impl Filler {
    fn new(db: Arc<Database>, qspace: &str, page: u64, blocking: u64) -> Filler {
        let zeros = vec![0u8; (blocking * page) as usize];
        Filler { db, tables: QueueSpaceTables::new(qspace), page, blocking, next_key: 0, zeros }
    }

    /// Claims `pages` more pages, in one transaction.
    fn fill(&mut self, mut pages: u64) -> QmResult<()> {
        fn err(e: impl std::fmt::Display) -> QmError {
            storage_error("initializing extents", e)
        }
        write_in(&self.db, |txn| {
            let mut table = txn.open_table(self.tables.init()).map_err(err)?;
            while pages > 0 {
                let n = self.blocking.min(pages);
                table
                    .insert(self.next_key, &self.zeros[..(n * self.page) as usize])
                    .map_err(err)?;
                self.next_key += 1;
                pages -= n;
            }
            Ok(())
        })
    }

    /// Removes what was written (all of it, from earlier attempts too).
    fn remove(&self) -> QmResult<()> {
        write_in(&self.db, |txn| {
            txn.delete_table(self.tables.init())
                .map_err(|e| storage_error("initializing extents", e))?;
            Ok(())
        })
    }
}
