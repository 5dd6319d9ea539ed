//! The applier: one thread per redb file that makes deferred groups durable in redb while
//! the writer goes on with the next ones.
//!
//! A checkpoint under load used to stop a file's groups for its whole length: at a deep
//! queue, tens of milliseconds of B-tree inserts and then redb's own syncs, several times a
//! second. Now the writer takes every deferred group out at once ([`Applying`]), starts
//! writing the journal's other region ([`crate::storage::journal`]), and hands them here.
//! This thread applies them in one durable commit that records the LSN of the last one;
//! only then may the region they came from be written again, and only then do the engines
//! let go of the messages they wrote (the file's applied mark moves).
//!
//! Until that commit, the groups stay readable here for the writer: a removal of a message
//! enqueued by one of them takes its body from [`Applying::body`]. Whatever else applies
//! or commits on the file waits for this commit first ([`crate::storage::journal::Journal::finish_applying`]),
//! so that writes reach redb in the order they were made.
//!
//! A commit that fails leaves the file to be opened again, which replays the journal: both
//! regions are still intact then.

use super::background::Background;
use super::deferred::Enqueued;
use super::writer::{COMMITS, WriteOp, commit_groups};
use crate::storage::handle::Db;
use crate::storage::journal::Marks;
use qm_common::{QmError, QmResult};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};

/// Deferred groups taken out for one durable commit of their own.
pub struct Applying {
    /// Their writes that still have an effect, in order.
    ops: Vec<WriteOp>,
    /// The bodies of the messages they enqueue.
    bodies: Enqueued,
    /// The LSN of the last group.
    lsn: u64,
    /// Disk room the commit may need (held by the writer when it handed them over).
    room: u64,
    marks: Arc<Marks>,
    /// None until the commit is over; then how it went.
    done: Mutex<Option<QmResult<()>>>,
    ended: Condvar,
    /// The policy of the applier thread it was handed to, raised while someone waits.
    background: OnceLock<Arc<Background>>,
}

impl Applying {
    pub fn new(
        ops: Vec<WriteOp>,
        bodies: Enqueued,
        lsn: u64,
        room: u64,
        marks: Arc<Marks>,
    ) -> Applying {
        Applying {
            ops,
            bodies,
            lsn,
            room,
            marks,
            done: Mutex::new(None),
            ended: Condvar::new(),
            background: OnceLock::new(),
        }
    }

    /// The body of message `seq` of `qspace` if one of these groups enqueued it.
    pub fn body(&self, qspace: &str, seq: u64) -> Option<&Arc<[u8]>> {
        self.bodies.get(qspace)?.get(&seq).map(|fresh| fresh.body())
    }

    pub fn room(&self) -> u64 {
        self.room
    }

    /// None while the commit is under way; then whether it was made.
    pub fn finished(&self) -> Option<bool> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Result::is_ok)
    }

    /// Waits for the end of the commit; why it failed if it did. The applier runs at the
    /// normal policy meanwhile (see [`super::background`]).
    pub fn wait(&self) -> QmResult<()> {
        let _raised = match self.finished() {
            None => self.background.get().map(|b| b.waiting()),
            Some(_) => None,
        };
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = done.as_ref() {
                return result.clone();
            }
            done = self.ended.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn end(&self, result: QmResult<()>) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.ended.notify_all();
    }

    /// Applies the groups in one durable commit, recording the LSN of the last.
    fn commit(&self, db: &Db) -> QmResult<()> {
        commit_groups(db, &self.ops, self.lsn, "applying deferred writes failed")
    }
}

/// What the applier is asked to do.
enum Work {
    /// Apply these groups in one durable commit, then copy bodies forward if worth it.
    Apply(Db, Arc<Applying>),
    /// Copy bodies forward if worth it (the writer found the segments grown).
    Compact(Db),
}

/// The handle to a file's applier thread; dropping it ends the thread once the groups sent
/// are applied.
pub struct Applier {
    tx: Option<mpsc::Sender<Work>>,
    background: Arc<Background>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Applier {
    /// Starts the applier of the file called `name`; None when no thread can be started
    /// (the writer then checkpoints by itself, as it always may).
    pub fn start(name: &str) -> Option<Applier> {
        let (tx, rx) = mpsc::channel::<Work>();
        let background = Arc::new(Background::default());
        let its = background.clone();
        let thread =
            std::thread::Builder::new().name(format!("qm-applier {name}")).spawn(move || {
                its.enter();
                its.lower();
                for work in &rx {
                    let db = match work {
                        Work::Apply(db, applying) => {
                            its.lower();
                            match run(&db, &applying) {
                                true => db,
                                false => continue,
                            }
                        }
                        Work::Compact(db) => db,
                    };
                    // Copying bodies forward gives disk room back: not behind every
                    // other thread (and it is rare).
                    its.restore();
                    // Groups handed over while bodies are copied forward are applied
                    // between its steps, not after all of them; a compaction asked for
                    // meanwhile is this one.
                    compact_between(&db, || {
                        while let Ok(work) = rx.try_recv() {
                            if let Work::Apply(db, applying) = work {
                                its.lower();
                                run(&db, &applying);
                                its.restore();
                            }
                        }
                    });
                    its.lower();
                }
                its.leave();
            });
        match thread {
            Ok(thread) => Some(Applier { tx: Some(tx), background, thread: Some(thread) }),
            Err(e) => {
                tracing::warn!("no applier thread ({e}); checkpoints stop the writer meanwhile");
                None
            }
        }
    }

    /// Hands `applying` over; it is applied after those sent before.
    pub fn send(&self, db: Db, applying: Arc<Applying>) {
        let _ = applying.background.set(self.background.clone());
        let sent = self.tx.as_ref().map(|tx| tx.send(Work::Apply(db, applying)));
        if let Some(Err(mpsc::SendError(Work::Apply(db, applying)))) = sent
            && run(&db, &applying)
        {
            compact(&db);
        }
    }

    /// Asks for a compaction of `db`'s body segments on this thread, after the groups
    /// sent before: on the writer's, copying hundreds of megabytes held every writer up.
    pub fn compact(&self, db: Db) {
        let sent = self.tx.as_ref().map(|tx| tx.send(Work::Compact(db)));
        if let Some(Err(mpsc::SendError(Work::Compact(db)))) = sent {
            compact(&db);
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        drop(self.tx.take());
        // A stop waits for what was handed over: not behind every other thread.
        let _raised = self.background.waiting();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies bodies out of mostly dead segments, at once.
pub(super) fn compact(db: &Db) {
    compact_between(db, || {});
}

/// Copies bodies out of mostly dead segments, calling `between` after each step.
fn compact_between(db: &Db, between: impl FnMut()) {
    if let Err(e) = super::segments::compact(db, between) {
        tracing::warn!("{}: {} (tried again later)", db.bodies().path().display(), e.message);
    }
}

/// Applies `applying` in one durable commit; whether it was made.
fn run(db: &Db, applying: &Applying) -> bool {
    while crate::storage::fault::apply_gated() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A panic inside redb must end the commit too: the writer waits for its end.
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| applying.commit(db)))
        .unwrap_or_else(|_| Err(QmError::system("applying deferred writes failed (a panic)")));
    match committed {
        Ok(()) => {
            COMMITS.fetch_add(1, Ordering::Relaxed);
            applying.marks.apply(applying.lsn);
            applying.end(Ok(()));
            true
        }
        Err(e) => {
            // Applied in part, or not durable: the file is opened again, and its journal,
            // both regions intact, replayed.
            tracing::warn!("{} (the file is opened again)", e.message);
            db.poison();
            applying.end(Err(e));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: sched_getscheduler has no memory preconditions.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// Whether `tid`'s policy becomes `want` within five seconds.
    fn becomes(tid: libc::pid_t, want: libc::c_int) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if policy(tid) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// A thread waiting for a commit raises the applier the groups were handed to, for as
    /// long as it waits; the applier goes back once nobody waits.
    #[test]
    fn waiting_for_a_commit_raises_its_applier() {
        let background = Arc::new(Background::default());
        let applying =
            Arc::new(Applying::new(Vec::new(), Enqueued::default(), 1, 0, Arc::default()));
        assert!(applying.background.set(background.clone()).is_ok());
        let (report, reports) = mpsc::channel();
        let (go, step) = mpsc::channel::<()>();
        let its = background.clone();
        let applier = std::thread::spawn(move || {
            its.enter();
            its.lower();
            // SAFETY: gettid has no preconditions.
            report.send((unsafe { libc::gettid() }, policy(0))).unwrap();
            step.recv().unwrap();
            its.lower();
            report.send((0, policy(0))).unwrap();
            its.leave();
        });
        let (tid, lowered) = reports.recv().unwrap();
        let waiting = applying.clone();
        let waiter = std::thread::spawn(move || waiting.wait());
        assert!(becomes(tid, libc::SCHED_OTHER), "raised while a thread waits");
        applying.end(Ok(()));
        waiter.join().unwrap().unwrap();
        go.send(()).unwrap();
        assert_eq!(reports.recv().unwrap().1, lowered, "back once nobody waits");
        applier.join().unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root && std::env::var_os("QM_APPLIER_BACKGROUND").is_none() {
            assert_eq!(lowered, libc::SCHED_IDLE, "root may lower it and bring it back");
        }
    }
}
