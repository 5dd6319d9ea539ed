//! Group commit: one thread per redb file turns queued writes into durable transactions.
//!
//! Callers send a job (a list of writes) and wait for its reply. The thread takes every job
//! that is waiting and appends them all as one record to the file's journal
//! ([`crate::storage::journal`]) with one `fdatasync`, then answers all of them. A group of
//! message writes and state values only is not applied to redb then: it is deferred
//! ([`Deferred`]) and applied later with the others, thousands at a time, while a message
//! enqueued and dequeued meanwhile never reaches redb at all. A group with anything else
//! (definitions, threshold firings) is applied at once, after everything deferred, in a commit that is
//! visible but not durable. Checkpoints (durable redb commits) follow when the journal has
//! grown or the writer is idle; a group too large for the journal is committed durably by
//! redb directly. Under load, the jobs that arrive during one fsync share the next, so
//! durable throughput grows with concurrency. Jobs are applied in the order they were
//! sent, which callers rely on: they send while holding their queue space's lock.
//!
//! Before a batch is made durable, room for what it may need on disk is held (see
//! [`crate::storage::space`]): on a filesystem without that room the batch is refused whole,
//! cleanly, and its jobs are tried again one by one, so that the small ones that fit still
//! go through. A job that fails is answered with the reason (`QMENOSPACE` for a full
//! filesystem); the file stays usable, or is opened again by the next batch after an I/O
//! error (see [`DbFile`]).

use super::applier::{Applier, Applying};
use super::deferred::Deferred;
use super::record::{
    MessageMeta, Stored, body_layout, checksum, split_stored, stored_len, stored_room,
    write_logged, write_stored,
};
use super::segments::{self, LiveDeltas};
use super::stored::{self, Delta, Maintained};
use crate::storage::bodies::{Bodies as BodyLog, BodyRef};
use crate::storage::handle::{Db, DbFile};
use crate::storage::journal;
use crate::storage::tables::QueueSpaceTables;
use qm_common::frame::Presized;
use qm_common::{Diagnostic, QmError, QmResult};
use redb::{Durability, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// After a group, the writer looks for the next job this long before it sleeps: at one
/// client the next request comes about a round trip later, and waking a sleeping thread on
/// this kind of machine costs a sizeable share of a flush (BENCHMARKS.md).
const SPIN: Duration = Duration::from_micros(150);
/// Most jobs committed together.
const BATCH_MAX: usize = 4096;
/// A checkpoint is taken once the journal holds [`journal::Journal::checkpoint_bytes`] of
/// records (`qmd --checkpoint-mib`), or once the groups since the last one may take as
/// much disk when redb writes them out (bounding what a checkpoint must hold on a nearly
/// full filesystem), or once the writer had nothing to do for this long, so that a file at
/// rest is durable in redb itself and a start has little to replay.
const IDLE_CHECKPOINT: Duration = Duration::from_millis(500);
/// Between checkpoints, deferred writes ([`Deferred`]) are applied to redb once there are
/// this many of them for each MiB of records between checkpoints (they and their messages
/// are held in memory until then)...
pub(super) const DEFERRED_WRITES_PER_MIB: usize = 16_384;
/// ...or once those that will reach redb may need this much disk there, for each byte of
/// records between checkpoints.
const DEFERRED_ROOM_PER_BYTE: u64 = 64;

fn deferred_writes(journal: &journal::Journal) -> usize {
    (journal.checkpoint_bytes() >> 20) as usize * DEFERRED_WRITES_PER_MIB
}

fn deferred_room(journal: &journal::Journal) -> u64 {
    journal.checkpoint_bytes() * DEFERRED_ROOM_PER_BYTE
}

/// More deferred writes than [`catch_up_sizes`]' second (after a backup held the file, say)
/// are applied this many at a time, a group of jobs served between two commits, rather than
/// all at once: at a deep queue a write takes 5 to 40 µs to apply, so a commit of these
/// takes milliseconds, where the whole set could hold writers up for seconds.
const CATCH_UP: usize = 1024;

/// Storage transactions the writers of this process committed since it started (one per
/// batch), for `/metrics`. A relaxed addition after each fsync: nothing waits on it.
pub static COMMITS: AtomicU64 = AtomicU64::new(0);

/// The longest turn any writer of this process took since [`longest_turn`] was last asked,
/// in microseconds: one group of writes made durable and answered, and whatever checkpoint
/// or catch-up step the writer took before it looked for the next. A request that came
/// meanwhile waited that long before its own group began, so this is the longest writers
/// paused, whatever paused them (a slow disk sync included).
static LONGEST_TURN: AtomicU64 = AtomicU64::new(0);

/// The longest turn of any writer since the last call (see [`LONGEST_TURN`]), and starts
/// measuring again. `qbackup` asks at its start and its end.
pub fn longest_turn() -> Duration {
    Duration::from_micros(LONGEST_TURN.swap(0, Ordering::Relaxed))
}

fn turn_took(started: std::time::Instant) {
    LONGEST_TURN.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// One write.
#[derive(Clone)]
pub enum WriteOp {
    /// Store a new message (`body` given) or replace an existing message's record;
    /// `body_len` is the length of its body either way, `blocks` what it counts against its
    /// queue space, `waiting` whether it may not be dequeued yet (it goes in the timers,
    /// not in its queue's order: see [`super::stored`]).
    Put {
        tables: Arc<QueueSpaceTables>,
        seq: u64,
        meta: Vec<u8>,
        body: Option<Arc<[u8]>>,
        body_len: u64,
        blocks: u64,
        waiting: bool,
    },
    /// Remove a message; its body comes back in the job's reply. `body_at` is where the
    /// body was last seen in a body segment, if it was ([`super::index::Entry::body_at`]):
    /// it is read there first, without a lookup of the record.
    Delete { tables: Arc<QueueSpaceTables>, seq: u64, blocks: u64, body_at: Option<BodyRef> },
    /// A waiting message's time has come: move it to its queue's order.
    Ready { tables: Arc<QueueSpaceTables>, seq: u64 },
    /// Store a queue-space state value (counters, threshold states).
    State { tables: Arc<QueueSpaceTables>, key: String, value: Vec<u8> },
    /// Store (or, without a value, remove) a record of a table keyed by number.
    Record { table: String, key: u64, value: Option<Vec<u8>> },
    /// Remove a queue's definition, its stored messages and its state values (`qdestroy`).
    RemoveQueue { tables: Arc<QueueSpaceTables>, queue: String, state_keys: Vec<String> },
}

/// What a job gets back: for each `Delete`, in order, the body it removed.
pub type JobResult = QmResult<Vec<Option<Vec<u8>>>>;

struct Job {
    ops: Vec<WriteOp>,
    reply: oneshot::Sender<JobResult>,
}

/// The handle to a file's writer thread.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// Jobs sent and not answered yet.
    in_flight: Arc<AtomicU64>,
    /// The file, for the jobs committed by their senders ([`Writer::commit_here`]).
    file: Arc<DbFile>,
    /// How many jobs their senders committed: the thread takes no idle checkpoint while
    /// this moves.
    committed_here: Arc<AtomicU64>,
}

/// A job sent and not yet answered.
pub struct Pending {
    rx: oneshot::Receiver<JobResult>,
    /// Whether it was the writer's only job when sent: then nobody else needs this thread
    /// while the writer works, and the answer is watched for instead of slept on.
    alone: bool,
}

/// How long a job that was alone is watched for before its task sleeps: a flush and then
/// some. Waking a sleeping thread here costs a sizeable share of a flush (BENCHMARKS.md).
const WATCH: Duration = Duration::from_micros(400);

/// Data requests being handled now, by every session of the daemon (see [`Busy`]).
static BUSY: AtomicUsize = AtomicUsize::new(0);
/// Sessions open now, of every face and forwarders' (kept by the session registry).
static SESSIONS: AtomicUsize = AtomicUsize::new(0);
/// Above this many sessions, no task watches for its answer, nor the writer for its next
/// job: the processor time they would burn is then wanted by the others (measured: 64
/// clients lose a quarter when tasks watch).
const WATCH_SESSIONS: usize = 4;

/// A data request in hand: while more than one is, or more than a few sessions are open,
/// no task watches for its answer.
pub struct Busy(());

impl Busy {
    pub fn enter() -> Busy {
        BUSY.fetch_add(1, Ordering::Relaxed);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session was registered.
pub fn session_opened() {
    SESSIONS.fetch_add(1, Ordering::Relaxed);
}

/// A session was unregistered.
pub fn session_closed() {
    SESSIONS.fetch_sub(1, Ordering::Relaxed);
}

/// Whether a task waiting for the writer may watch for its answer now.
fn may_watch() -> bool {
    BUSY.load(Ordering::Relaxed) <= 1 && SESSIONS.load(Ordering::Relaxed) <= WATCH_SESSIONS
}

impl Pending {
    /// Waits until the job is durable (or failed).
    pub async fn wait(mut self) -> JobResult {
        if self.alone {
            let start = std::time::Instant::now();
            while start.elapsed() < WATCH && may_watch() {
                match self.rx.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Empty) => pause(start),
                    Err(oneshot::error::TryRecvError::Closed) => break,
                }
            }
        }
        self.rx.await.unwrap_or_else(|_| Err(QmError::system("the storage writer stopped")))
    }

    /// Waits from a thread that is not async.
    pub fn wait_blocking(self) -> JobResult {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(QmError::system("the storage writer stopped")))
    }
}

impl Writer {
    /// Starts the writer thread of `file`; it ends when the last handle is dropped.
    pub fn start(file: Arc<DbFile>, name: &str) -> QmResult<Arc<Writer>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let in_flight = Arc::new(AtomicU64::new(0));
        let committed_here = Arc::new(AtomicU64::new(0));
        let shared =
            Shared { in_flight: in_flight.clone(), committed_here: committed_here.clone() };
        std::thread::Builder::new()
            .name(format!("qm-writer {name}"))
            .spawn({
                let (file, name) = (file.clone(), name.to_string());
                move || run(&file, &rx, &shared, &name)
            })
            .map_err(|e| QmError::system(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Writer { tx, in_flight, file, committed_here }))
    }

    /// Queues a job; it is applied after every job sent before it.
    pub fn send(&self, ops: Vec<WriteOp>) -> Pending {
        let (reply, rx) = oneshot::channel();
        let ops = match self.commit_here(ops) {
            Ok(result) => {
                let _ = reply.send(result);
                return Pending { rx, alone: false };
            }
            Err(ops) => ops,
        };
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { ops, reply }) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(QmError::system("the storage writer stopped")));
        }
        Pending { rx, alone }
    }

    /// Commits `ops` on the sender's own thread when it is the only session and the
    /// writer has nothing in hand, and the group needs nothing but a journal record (see
    /// [`commit_deferred`]); gives them back otherwise, for the writer's thread. At one
    /// client the two hand-offs between threads per request cost as much as half a flush
    /// on this kind of machine, all three threads often sharing one processor
    /// (BENCHMARKS.md). The sender holds its queue space's lock, as for any send, so
    /// the order of its changes is kept; a job sent meanwhile by another queue space of
    /// the file waits for the journal, as it would wait for the writer.
    fn commit_here(&self, ops: Vec<WriteOp>) -> Result<JobResult, Vec<WriteOp>> {
        if SESSIONS.load(Ordering::Relaxed) > COMMIT_HERE_SESSIONS
            || self.in_flight.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return Err(ops);
        }
        let done = commit_deferred(&self.file, &ops);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        match done {
            Some(removed) => {
                self.committed_here.fetch_add(1, Ordering::Relaxed);
                trace_jobs(std::iter::once(ops.as_slice()));
                Ok(Ok(removed))
            }
            None => Err(ops),
        }
    }
}

/// At most this many sessions for a sender to commit its own job: with more, a flush
/// under a queue space's lock would hold the others up, and a group commit serves them.
const COMMIT_HERE_SESSIONS: usize = 1;

/// What the writer's thread shares with the handle.
struct Shared {
    in_flight: Arc<AtomicU64>,
    committed_here: Arc<AtomicU64>,
}

/// Commits `ops` as one journal record, deferred, when that is all it takes: a group of
/// message writes and state values that fits in the journal, on a file not held by a
/// backup, with no checkpoint due and the room for it in redb already held. Anything
/// else (or any failure, which the writer's thread then meets and reports as usual) gives
/// `None`, and nothing was changed.
fn commit_deferred(file: &DbFile, ops: &[WriteOp]) -> Option<Vec<Option<Vec<u8>>>> {
    let jobs = std::iter::once(ops);
    let small = body_bytes(jobs.clone()) < BODIES_HERE;
    if !small || !Deferred::takes(jobs.clone()) || file.held() {
        return None;
    }
    let record = encode_record(jobs.clone());
    let db = file.get().ok()?;
    let mut guard = file.journal();
    let journal = guard.as_mut()?;
    let due = match crate::storage::fault::checkpoints_always() {
        true => 1,
        false => journal.checkpoint_bytes(),
    };
    if checkpoint_due(journal, due) || !journal.make_room(record.len(), false) {
        return None;
    }
    let held = COMMIT_ROOM + journal.unapplied_room() + room(jobs.clone());
    if db.reserve(held.next_multiple_of(HOLD_STEP)).is_err() {
        return None;
    }
    let removed = journal.deferred.removed(&db, jobs.clone(), journal.applying()).ok()?;
    journal.append(&record).ok()?;
    let lsn = journal.next_lsn() - 1;
    journal.deferred.push(jobs, lsn);
    COMMITS.fetch_add(1, Ordering::Relaxed);
    removed.into_iter().next().or(Some(Vec::new()))
}

/// Bodies a job committed by its sender may hold: more is an import's batch, which the
/// writer's thread commits its own way.
const BODIES_HERE: usize = 64 * 1024;

/// Whether `journal` is due for a checkpoint (`bytes` of records) or for applying its
/// deferred writes.
fn checkpoint_due(journal: &journal::Journal, bytes: u64) -> bool {
    journal.used() >= bytes
        || journal.pending_room >= journal.checkpoint_bytes()
        || journal.deferred.len() >= deferred_writes(journal)
        || journal.deferred.room() >= deferred_room(journal)
}

fn run(file: &DbFile, rx: &mpsc::Receiver<Job>, shared: &Shared, name: &str) {
    let mut log = FailureLog::default();
    // Jobs committed by their senders, when last looked at: while it moves, the file is
    // not idle.
    let mut committed_here = 0;
    let applier = Applier::start(name);
    // Catching up on deferred writes after a backup: a step between two groups, and steps
    // one after another while no job waits.
    let mut catching_up = false;
    // A job taken from the channel that did not fit in the last group: the next one's first.
    let mut carried = None;
    // The bytes of the file's body segments when compaction was last considered.
    let mut segment_bytes = 0;
    loop {
        let next = match carried.take() {
            Some(job) => Ok(job),
            None if catching_up => rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
            }),
            None => spin(rx).map(Ok).unwrap_or_else(|| rx.recv_timeout(IDLE_CHECKPOINT)),
        };
        let turn = std::time::Instant::now();
        let first = match next {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let here = shared.committed_here.load(Ordering::Relaxed);
                if std::mem::replace(&mut committed_here, here) != here {
                    continue;
                }
                catching_up = checkpoint_if(file, Some(1), catching_up, None);
                if !catching_up {
                    compact_unless_held(file, applier.as_ref());
                }
                turn_took(turn);
                if !catching_up && let Some(journal) = file.journal().as_mut() {
                    journal.cut_back();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let batch = gather(first, rx, &mut carried);
        let jobs = batch.len() as u64;
        match commit(file, batch.iter().map(|j| j.ops.as_slice())) {
            Ok(mut results) => {
                log.succeeded();
                trace_jobs(batch.iter().map(|j| j.ops.as_slice()));
                for job in batch.into_iter().rev() {
                    let _ = job.reply.send(Ok(results.pop().unwrap_or_default()));
                }
            }
            // One bad job must not fail the others, nor one large job the small ones when
            // the disk is nearly full: retry each on its own.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = commit(file, std::iter::once(job.ops.as_slice()))
                        .map(|mut r| r.pop().unwrap_or_default());
                    match &result {
                        Ok(_) => log.succeeded(),
                        Err(e) => log.failed(e),
                    }
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                log.failed(&e);
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
        shared.in_flight.fetch_sub(jobs, Ordering::AcqRel);
        let every = crate::storage::fault::checkpoints_always();
        let bytes = if every { Some(1) } else { None };
        catching_up = checkpoint_if(file, bytes, catching_up, applier.as_ref());
        if !catching_up {
            compact_if_grown(file, &mut segment_bytes, applier.as_ref());
        }
        turn_took(turn);
    }
    while checkpoint_if(file, Some(1), false, None) {}
}

/// Considers compaction of the file's body segments once they grew by what compaction
/// waits for since it was last considered (`checked`): a queue filled and emptied again
/// and again without a pause would otherwise grow them until the writer is idle.
fn compact_if_grown(file: &DbFile, checked: &mut u64, applier: Option<&Applier>) {
    let bytes = file.bodies().bytes();
    if bytes < *checked + segments::compact_above() {
        *checked = (*checked).min(bytes);
        return;
    }
    compact_unless_held(file, applier);
    *checked = file.bodies().bytes();
}

/// Compacts the file's body segments ([`super::applier::compact`]) unless a backup holds
/// the file: on the applier's thread when there is one, which goes on applying groups
/// between the steps, or here.
fn compact_unless_held(file: &DbFile, applier: Option<&Applier>) {
    if file.held() {
        return;
    }
    match (file.get(), applier) {
        (Ok(db), Some(applier)) => applier.compact(db),
        (Ok(db), None) => super::applier::compact(&db),
        (Err(_), _) => {}
    }
}

/// The jobs of the next group: `first` and those waiting behind it, as many as the room
/// reckoned for their journal record ([`Logged::room`]) lets the journal take in one
/// record. The job that would pass it is kept in `carried` for the group after: large
/// jobs that arrive together (a parallel `qimport`) then go one record each instead of
/// into one group too large for the journal, which redb would have to commit durably on
/// its own.
fn gather(first: Job, rx: &mpsc::Receiver<Job>, carried: &mut Option<Job>) -> Vec<Job> {
    let room = |job: &Job| job.ops.iter().map(|op| Logged::of(op).room()).sum::<usize>();
    let mut bytes = room(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH_MAX {
        let Ok(job) = rx.try_recv() else { break };
        bytes += room(&job);
        if !journal::Journal::fits(bytes) {
            *carried = Some(job);
            break;
        }
        batch.push(job);
    }
    batch
}

/// The next job, if one comes within [`SPIN`]; none at once while more than a few sessions
/// are open. Those keep the writer busy without it, and when its channel does run empty,
/// the turns of its watch (a `sched_yield` each, about 80,000 a second at 64 clients) take
/// processor time their own requests need (BENCHMARKS.md).
fn spin(rx: &mpsc::Receiver<Job>) -> Option<Job> {
    if SESSIONS.load(Ordering::Relaxed) > WATCH_SESSIONS {
        return None;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < SPIN {
        if let Ok(job) = rx.try_recv() {
            return Some(job);
        }
        pause(start);
    }
    None
}

/// One turn of a wait that watches instead of sleeping, begun at `start`: a busy turn at
/// first, then one that lets another thread of this processor run. On two cores a client
/// woken on the processor of a thread that only watches would otherwise wait for it
/// (BENCHMARKS.md: one client then ran at half its rate in about one run in five).
fn pause(start: std::time::Instant) {
    if start.elapsed() < BUSY_TURNS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// How long a watching wait stays busy before it yields the processor at each turn.
const BUSY_TURNS: Duration = Duration::from_micros(30);

/// Takes a checkpoint when the journal holds at least `bytes` of records (by default, its
/// [`journal::Journal::checkpoint_bytes`]), or the groups since the last one may need more than its
/// checkpoint bytes of disk when redb writes them;
/// short of that, applies the deferred writes once there are many. With an `applier`,
/// both are handed to it ([`hand_off`]) when it is free, and wait for it otherwise.
/// Without (or when the journal cannot switch regions), with more deferred than a
/// checkpoint should apply at once, applies a step of them ([`catch_up`]) and says so
/// (true): the caller comes back for the next, `stepping_already`.
fn checkpoint_if(
    file: &DbFile,
    bytes: Option<u64>,
    stepping_already: bool,
    applier: Option<&Applier>,
) -> bool {
    // A backup copying the file holds it: the journal grows until the copy is done.
    if crate::storage::fault::defers_always() || file.held() {
        return false;
    }
    let due = |j: &journal::Journal| {
        j.used() >= bytes.unwrap_or_else(|| j.checkpoint_bytes())
            || j.pending_room >= j.checkpoint_bytes()
    };
    let many = |j: &journal::Journal| {
        j.deferred.len() >= deferred_writes(j) || j.deferred.room() >= deferred_room(j)
    };
    if !file.journal().as_ref().is_some_and(|j| due(j) || many(j)) {
        return false;
    }
    let Ok(db) = file.get() else { return false };
    let mut guard = file.journal();
    let Some(journal) = guard.as_mut() else { return false };
    // Where room cannot be held ahead, groups acknowledged while the applier's commit met
    // a full disk could be more than the disk takes when the file is opened again and
    // replays them: the writer checkpoints by itself there.
    let applier = applier.filter(|_| db.holds_room());
    let (chunk, above) = catch_up_sizes(journal);
    // Once it steps, it steps down to a step's worth, so that the checkpoint after the
    // last step applies no more than that: a checkpoint of 16,384 writes held
    // writers up for a fifth of a second at a deep queue.
    let above = if stepping_already { chunk } else { above };
    let stepping = journal.deferred.len() > above;
    if applier.is_some() && journal.busy() {
        // The region left last time is still needed: the groups go on in this one, until
        // it is three quarters full.
        if !crowded(journal) || wait_for_applier(file, journal).is_err() {
            return false;
        }
    }
    let done = if let Some(applier) = applier
        && journal.may_switch()
    {
        // However many, they are applied on the applier's thread: no step is taken here.
        hand_off(&db, journal, applier).map(|()| false)
    } else if stepping {
        catch_up(&db, journal, chunk).map(|()| true)
    } else if due(journal) {
        journal::checkpoint(&db, journal).map(|()| false)
    } else {
        settle(&db, journal).map(|_| false)
    };
    match done {
        Ok(stepped) => stepped,
        Err(e) => {
            tracing::warn!("{}: {} (tried again later)", file.path().display(), e.message);
            false
        }
    }
}

/// Whether the region in use is three quarters full: with the applier still busy with the
/// other, the writer then waits for it and hands this one over. Going on to the region's end
/// would cost more: the group that finds it full waits for the applier all the same, and
/// then applies every deferred write in a commit of its own on the writer's thread (at a
/// deep queue, 60,000 writes in most of a second, while no group is answered), and the
/// two sets of messages held in memory meanwhile grow by half again (BENCHMARKS.md).
fn crowded(journal: &journal::Journal) -> bool {
    journal.used() >= journal.checkpoint_bytes() / 2 * 3
}

/// Waits until the groups handed to the applier are in redb, saying so at the debug level.
fn wait_for_applier(file: &DbFile, journal: &mut journal::Journal) -> QmResult<()> {
    let path = file.path().display();
    tracing::debug!("{path}: the journal's region is three quarters full: waiting for the applier");
    let began = std::time::Instant::now();
    journal.finish_applying()?;
    tracing::debug!("{path}: waited {} ms for the applier", began.elapsed().as_millis());
    Ok(())
}

/// Logs failed writes without filling a full disk with the log: a full filesystem is said
/// once until a write succeeds again.
#[derive(Default)]
struct FailureLog {
    disk_full: bool,
}

impl FailureLog {
    fn failed(&mut self, e: &QmError) {
        if e.diagnostic != Diagnostic::NoSpace {
            tracing::error!("storage write failed: {}", e.message);
        } else if !self.disk_full {
            self.disk_full = true;
            tracing::warn!("write refused: {} (said once until a write succeeds again)", e.message);
        }
    }

    fn succeeded(&mut self) {
        if std::mem::take(&mut self.disk_full) {
            tracing::warn!("writes succeed again: there is room on the disk");
        }
    }
}

/// Logs what a group of jobs committed, at trace level.
fn trace_jobs<'a>(jobs: impl ExactSizeIterator<Item = &'a [WriteOp]>) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let count = jobs.len();
    let seqs: Vec<String> = jobs
        .flatten()
        .filter_map(|op| match op {
            WriteOp::Put { seq, body, .. } => {
                Some(format!("{}{seq:x}", if body.is_some() { "+" } else { "~" }))
            }
            WriteOp::Delete { seq, .. } => Some(format!("-{seq:x}")),
            WriteOp::Ready { seq, .. } => Some(format!("!{seq:x}")),
            WriteOp::State { .. } | WriteOp::Record { .. } | WriteOp::RemoveQueue { .. } => None,
        })
        .collect();
    tracing::trace!("committed {count} jobs: {}", seqs.join(" "));
}

/// Room any commit may need besides its values: branch pages, redb's own tables.
const COMMIT_ROOM: u64 = 512 * 1024;
/// Deferred groups hold their room in steps of this much.
const HOLD_STEP: u64 = 16 << 20;
/// Room each write may need: the leaf and branch it changes are copied (copy-on-write).
const OP_ROOM: u64 = 8 * 1024;

/// Disk room the writes of a batch of jobs may need, generously, besides [`COMMIT_ROOM`].
fn room<'a>(jobs: impl Iterator<Item = &'a [WriteOp]>) -> u64 {
    jobs.flatten().map(op_room).sum()
}

/// Disk room one write may need.
pub(super) fn op_room(op: &WriteOp) -> u64 {
    match op {
        WriteOp::Put { meta, body, body_len, .. } => {
            OP_ROOM + stored_room(meta.len(), *body_len as usize, body.is_some())
        }
        _ => OP_ROOM,
    }
}

fn fail(e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("storage write failed: {e}"))
}

/// The tables a batch touches, opened once each.
struct Open<'t> {
    txn: &'t WriteTransaction,
    /// The file's body segments, whether new bodies go there, and the changes of their
    /// live bytes.
    log: &'t BodyLog,
    append: bool,
    /// Whether new bodies are sent to the disk as they are written ([`BodyLog::append_all`]).
    send: bool,
    /// Places of new bodies appended ahead, in the order of their writes ([`prepare_bodies`]).
    prepared: VecDeque<BodyRef>,
    live: LiveDeltas,
    tables: HashMap<String, Table<'t, u64, &'static [u8]>>,
    /// Tables keyed by name: queue definitions and state values.
    named: HashMap<String, Table<'t, &'static str, &'static [u8]>>,
    /// The parts of large bodies.
    parts: HashMap<String, Table<'t, (u64, u32), &'static [u8]>>,
    /// The tables that follow each queue space's messages, by queue space.
    maintained: HashMap<String, Maintained<'t>>,
    /// Changes of queue totals, by (totals table, queue), written once at the end.
    deltas: stored::Deltas,
}

impl<'t> Open<'t> {
    fn table(&mut self, name: &str) -> QmResult<&mut Table<'t, u64, &'static [u8]>> {
        if !self.tables.contains_key(name) {
            let t = self
                .txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new(name))
                .map_err(fail)?;
            self.tables.insert(name.to_string(), t);
        }
        Ok(self.tables.get_mut(name).expect("just inserted"))
    }

    fn parts(&mut self, name: &str) -> QmResult<&mut Table<'t, (u64, u32), &'static [u8]>> {
        if !self.parts.contains_key(name) {
            let t = self
                .txn
                .open_table(redb::TableDefinition::<(u64, u32), &[u8]>::new(name))
                .map_err(fail)?;
            self.parts.insert(name.to_string(), t);
        }
        Ok(self.parts.get_mut(name).expect("just inserted"))
    }

    /// Keeps the order tables of `tables` with `f`, counting its change of totals for
    /// `queue`.
    fn index(
        &mut self,
        tables: &QueueSpaceTables,
        queue: &str,
        f: impl FnOnce(&mut Maintained<'t>) -> Result<Delta, redb::Error>,
    ) -> QmResult<()> {
        if !self.maintained.contains_key(&tables.qspace) {
            let m = Maintained::open(self.txn, tables).map_err(fail)?;
            self.maintained.insert(tables.qspace.clone(), m);
        }
        let maintained = self.maintained.get_mut(&tables.qspace).expect("just inserted");
        let delta = f(maintained).map_err(fail)?;
        stored::gather(&mut self.deltas, &tables.totals, queue, delta);
        Ok(())
    }

    /// Counts the body at `at` as no longer pointed at.
    fn gone(&mut self, at: &BodyRef) {
        *self.live.entry(at.segment).or_default() -= i64::from(at.len);
    }

    fn named(&mut self, name: &str) -> QmResult<&mut Table<'t, &'static str, &'static [u8]>> {
        if !self.named.contains_key(name) {
            let t = self
                .txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new(name))
                .map_err(fail)?;
            self.named.insert(name.to_string(), t);
        }
        Ok(self.named.get_mut(name).expect("just inserted"))
    }
}

fn commit<'a>(
    file: &DbFile,
    jobs: impl Iterator<Item = &'a [WriteOp]> + Clone,
) -> QmResult<Vec<Vec<Option<Vec<u8>>>>> {
    // Encoded before any lock is taken; a group too large for the journal is made durable
    // by redb itself, and so is one of many bodies when bodies go to segments: written
    // there once, not first to the journal and then again when applied.
    let record = Some(jobs.clone())
        .filter(|jobs| !(segments::logs_bodies() && body_bytes(jobs.clone()) >= BODIES_ONCE))
        .map(|jobs| encode_record(jobs))
        .filter(|r| journal::Journal::fits(r.len()));
    let db = file.get()?;
    let mut guard = file.journal();
    let Some(journal) = guard.as_mut() else {
        return Err(QmError::system(format!("{}: its journal is not open", file.path().display())));
    };
    let held = file.held();
    let record = record.filter(|r| journal.make_room(r.len(), held));
    if let Some(record) = &record
        && Deferred::takes(jobs.clone())
    {
        // The room redb will need for it is held now, as for a group applied at once: a
        // group the disk cannot take is refused before it is durable, and the deferred
        // writes always find their room when they are applied (or replayed at a start).
        // Held in steps, so that the room is not grown at every group.
        let own = room(jobs.clone());
        let before = journal.unapplied_room();
        if db.reserve((COMMIT_ROOM + before + own).next_multiple_of(HOLD_STEP)).is_err() {
            // What came before goes to redb first, with the room held for it; this group
            // then asks room for itself alone.
            journal::checkpoint(&db, journal)?;
            db.reserve(COMMIT_ROOM + own)?;
        }
        let removed = journal
            .deferred
            .removed(&db, jobs.clone(), journal.applying())
            .map_err(|e| db.recheck(e))?;
        match journal.append(record) {
            Ok(()) => {
                let lsn = journal.next_lsn() - 1;
                journal.deferred.push(jobs, lsn);
                COMMITS.fetch_add(1, Ordering::Relaxed);
                return Ok(removed);
            }
            Err(e) => {
                tracing::warn!("journal write failed ({}); committing in redb instead", e.message);
                return apply_now(&db, journal, jobs, Durable::ByRedb);
            }
        }
    }
    let how = record.map_or(Durable::ByRedb, Durable::ByRecord);
    apply_now(&db, journal, jobs, how)
}

/// The body bytes of a group from which it is committed by redb directly when bodies go
/// to segments (a `qimport` batch; not the groups of ordinary clients).
const BODIES_ONCE: usize = 1 << 20;

/// The bytes of the bodies `jobs` store.
fn body_bytes<'a>(jobs: impl Iterator<Item = &'a [WriteOp]>) -> usize {
    jobs.flatten()
        .map(|op| match op {
            WriteOp::Put { body: Some(body), .. } => body.len(),
            _ => 0,
        })
        .sum()
}

/// What makes a commit of [`apply_now`] durable.
enum Durable {
    /// The group's journal record, appended once the commit is made.
    ByRecord(Vec<u8>),
    /// The commit itself (redb's own syncs).
    ByRedb,
    /// The journal already: the commit applies deferred groups only.
    Already,
}

/// Applies the deferred writes and then `jobs` to redb in one commit, made durable as
/// `how` says.
fn apply_now<'a>(
    db: &Db,
    journal: &mut journal::Journal,
    jobs: impl Iterator<Item = &'a [WriteOp]> + Clone,
    how: Durable,
) -> QmResult<Vec<Vec<Option<Vec<u8>>>>> {
    let what = "storage write failed";
    // After the groups being applied: they were acknowledged before these.
    journal.finish_applying()?;
    let need = |journal: &journal::Journal| {
        COMMIT_ROOM + journal.pending_room + journal.deferred.room() + room(jobs.clone())
    };
    // On a nearly full filesystem, what earlier groups left in redb's cache is written out
    // first, with the room held for it, so that this group asks room for itself alone.
    if journal.pending_room + journal.deferred.room() > 0 && db.reserve(need(journal)).is_err() {
        journal::checkpoint(db, journal)?;
        if matches!(how, Durable::Already) {
            return Ok(Vec::new());
        }
    }
    let mut txn = db.begin_write().map_err(|e| db.explain(what, e))?;
    let lsn = journal.next_lsn();
    if matches!(how, Durable::ByRedb) {
        crate::storage::files::quick_repair(&mut txn);
    } else {
        txn.set_durability(Durability::None).map_err(|e| db.explain(what, e))?;
    }
    // Taken after begin_write, which waits for any other writer of the file: the room is
    // counted from where that one left off.
    // What the groups applied since the last durable commit may still write is held too.
    db.reserve(need(journal))?;
    // What this commit may still write at the next durable one.
    let added = journal.deferred.room() + room(jobs.clone());
    let applied = if matches!(how, Durable::ByRecord(_)) { lsn } else { lsn - 1 };
    let apply = |txn: &redb::WriteTransaction| {
        apply_deferred(txn, db.bodies(), &journal.deferred).map_err(|e| db.recheck(e))?;
        let results =
            apply_all(txn, db.bodies(), jobs, Bodies::Wanted).map_err(|e| db.recheck(e))?;
        journal::record_lsn(txn, applied).map_err(|e| db.recheck(fail(e)))?;
        let dead = match how {
            Durable::ByRedb => segments::dead(txn, db.bodies()).map_err(|e| db.recheck(e))?,
            _ => Vec::new(),
        };
        Ok((results, dead))
    };
    let (results, dead) = segments::committed(db.bodies(), txn, apply, |e| db.explain(what, e))?;
    segments::remove(db.bodies(), &dead);
    journal.applied(applied);
    let record = match how {
        Durable::ByRedb => {
            COMMITS.fetch_add(1, Ordering::Relaxed);
            journal.restart(lsn);
            return Ok(results);
        }
        Durable::Already => {
            journal.pending_room += added;
            return Ok(results);
        }
        Durable::ByRecord(record) => record,
    };
    COMMITS.fetch_add(1, Ordering::Relaxed);
    journal.pending_room += added;
    match journal.append(&record) {
        Ok(()) => Ok(results),
        // The journal cannot be written: redb makes the group durable itself.
        Err(e) => {
            tracing::warn!("journal write failed ({}); committing in redb instead", e.message);
            match journal::checkpoint_at(db, journal, lsn) {
                Ok(()) => Ok(results),
                Err(e) => {
                    // Applied, visible, and neither journaled nor durable: it must go.
                    db.poison();
                    Err(e)
                }
            }
        }
    }
}

/// Applies the deferred writes of a file in `txn` (see [`Deferred`]).
pub fn apply_deferred(txn: &WriteTransaction, log: &BodyLog, deferred: &Deferred) -> QmResult<()> {
    if deferred.is_empty() {
        return Ok(());
    }
    apply_all(txn, log, std::iter::once(deferred.surviving()), Bodies::Dropped).map(drop)
}

/// Applies the deferred writes of a file in a commit of their own that is not durable
/// (their journal records are): before anything outside the engines reads or writes redb.
/// Returns how many writes it applied.
pub fn settle(db: &Db, journal: &mut journal::Journal) -> QmResult<usize> {
    journal.finish_applying()?;
    if journal.deferred.is_empty() {
        return Ok(0);
    }
    let writes = journal.deferred.len();
    apply_now(db, journal, std::iter::empty(), Durable::Already)?;
    Ok(writes)
}

/// [`CATCH_UP`], and how many deferred writes are caught up in steps: more than a
/// checkpoint usually finds (a quarter of [`deferred_writes`], about 7,600 writes in 4 MiB
/// of records at a deep queue with 1 KiB bodies), so that the usual path stays one commit.
/// With `QM_FAULT=slowcopy`, 16 and 64, so that a test's backup leaves enough deferred
/// writes to catch up in several steps.
fn catch_up_sizes(journal: &journal::Journal) -> (usize, usize) {
    match crate::storage::fault::copies_slowly() {
        true => (16, 64),
        false => (CATCH_UP, deferred_writes(journal) / 4),
    }
}

/// Applies the first deferred groups, about `n` writes, in a durable commit of their own
/// that records the LSN of the last of them: redb then holds every group up to it (the
/// others were applied by earlier commits, which apply all deferred writes, or by earlier
/// steps), so a start after a crash replays only the journal's later records. Each step
/// thus syncs what it wrote, and the checkpoint after the last has little left. The
/// engines are not told ([`journal::Journal::applied`] is not counted): what they hold in
/// memory stays until the whole set is in redb. A failed commit makes the file be opened
/// again, which replays the journal: the writes taken out are no longer anywhere else in
/// memory.
/// Applies `ops`, taken from deferred groups, to redb in one durable commit that records
/// `lsn`, the last of those groups: redb then holds every group up to it. A catch-up step
/// and the applier's commit ([`super::applier`]) are both one.
pub(super) fn commit_groups(db: &Db, ops: &[WriteOp], lsn: u64, what: &str) -> QmResult<()> {
    let mut txn = db.begin_write().map_err(|e| db.explain(what, e))?;
    crate::storage::files::quick_repair(&mut txn);
    let apply = |txn: &redb::WriteTransaction| {
        let ops = std::iter::once(ops.iter());
        apply_all(txn, db.bodies(), ops, Bodies::Dropped).map_err(|e| db.recheck(e))?;
        journal::record_lsn(txn, lsn)
            .map_err(|e| db.recheck(QmError::system(format!("{what}: {e}"))))?;
        segments::dead(txn, db.bodies()).map_err(|e| db.recheck(e))
    };
    let dead = segments::committed(db.bodies(), txn, apply, |e| db.explain(what, e))?;
    segments::remove(db.bodies(), &dead);
    Ok(())
}

fn catch_up(db: &Db, journal: &mut journal::Journal, n: usize) -> QmResult<()> {
    let what = "storage write failed";
    journal.finish_applying()?;
    db.reserve(COMMIT_ROOM + journal.pending_room + journal.deferred.room())?;
    let (chunk, lsn) = journal.deferred.take_groups(n);
    let Some(lsn) = lsn else { return Ok(()) };
    match commit_groups(db, &chunk, lsn, what) {
        Ok(()) => {
            journal.pending_room = 0;
            Ok(())
        }
        Err(e) => {
            db.poison();
            Err(e)
        }
    }
}

/// Takes every deferred group out and hands them to `applier` for a durable commit of their
/// own, and goes on in the journal's other region meanwhile (see [`super::applier`]). The
/// room their commit may need is held now; without it, a checkpoint is taken here instead,
/// which refuses cleanly.
fn hand_off(db: &Db, journal: &mut journal::Journal, applier: &Applier) -> QmResult<()> {
    let held = COMMIT_ROOM + journal.pending_room + journal.deferred.room();
    if db.reserve(held).is_err() {
        return journal::checkpoint(db, journal);
    }
    let lsn = journal.next_lsn() - 1;
    let pending = journal.pending_room;
    let (ops, bodies, room) = journal.deferred.take_all();
    let applying = Arc::new(Applying::new(ops, bodies, lsn, pending + room, journal.marks()));
    journal.switch(applying.clone());
    applier.send(db.clone(), applying);
    Ok(())
}

/// One write as the journal keeps it: what [`apply`] needs, by name.
#[derive(Serialize, Deserialize)]
enum Logged<'a> {
    Put {
        qspace: &'a str,
        seq: u64,
        #[serde(with = "serde_bytes")]
        meta: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        body: Option<&'a [u8]>,
        body_len: u64,
        blocks: u64,
        waiting: bool,
    },
    Delete {
        qspace: &'a str,
        seq: u64,
        blocks: u64,
    },
    Ready {
        qspace: &'a str,
        seq: u64,
    },
    State {
        qspace: &'a str,
        key: &'a str,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    Record {
        table: &'a str,
        key: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: Option<&'a [u8]>,
    },
    RemoveQueue {
        qspace: &'a str,
        queue: &'a str,
        state_keys: Vec<&'a str>,
    },
}

impl<'a> Logged<'a> {
    /// Bytes its encoding may take, at most: its variable parts, and room for the rest
    /// (an enum tag, numbers of up to ten bytes each, the lengths in front of each part).
    fn room(&self) -> usize {
        const FIXED: usize = 48;
        FIXED
            + match self {
                Logged::Put { qspace, meta, body, .. } => {
                    qspace.len() + meta.len() + body.map_or(0, <[u8]>::len)
                }
                Logged::Delete { qspace, .. } | Logged::Ready { qspace, .. } => qspace.len(),
                Logged::State { qspace, key, value } => qspace.len() + key.len() + value.len(),
                Logged::Record { table, value, .. } => table.len() + value.map_or(0, <[u8]>::len),
                Logged::RemoveQueue { qspace, queue, state_keys } => {
                    qspace.len()
                        + queue.len()
                        + state_keys.iter().map(|k| k.len() + 10).sum::<usize>()
                }
            }
    }

    fn of(op: &'a WriteOp) -> Logged<'a> {
        match op {
            WriteOp::Put { tables, seq, meta, body, body_len, blocks, waiting } => Logged::Put {
                qspace: &tables.qspace,
                seq: *seq,
                meta,
                body: body.as_deref(),
                body_len: *body_len,
                blocks: *blocks,
                waiting: *waiting,
            },
            WriteOp::Delete { tables, seq, blocks, .. } => {
                Logged::Delete { qspace: &tables.qspace, seq: *seq, blocks: *blocks }
            }
            WriteOp::Ready { tables, seq } => Logged::Ready { qspace: &tables.qspace, seq: *seq },
            WriteOp::State { tables, key, value } => {
                Logged::State { qspace: &tables.qspace, key, value }
            }
            WriteOp::Record { table, key, value } => {
                Logged::Record { table, key: *key, value: value.as_deref() }
            }
            WriteOp::RemoveQueue { tables, queue, state_keys } => Logged::RemoveQueue {
                qspace: &tables.qspace,
                queue,
                state_keys: state_keys.iter().map(String::as_str).collect(),
            },
        }
    }

    fn op(self, tables: &mut HashMap<String, Arc<QueueSpaceTables>>) -> WriteOp {
        let mut of = |qspace: &str| {
            tables
                .entry(qspace.to_string())
                .or_insert_with(|| Arc::new(QueueSpaceTables::new(qspace)))
                .clone()
        };
        match self {
            Logged::Put { qspace, seq, meta, body, body_len, blocks, waiting } => WriteOp::Put {
                tables: of(qspace),
                seq,
                meta: meta.to_vec(),
                body: body.map(Arc::from),
                body_len,
                blocks,
                waiting,
            },
            Logged::Delete { qspace, seq, blocks } => {
                WriteOp::Delete { tables: of(qspace), seq, blocks, body_at: None }
            }
            Logged::Ready { qspace, seq } => WriteOp::Ready { tables: of(qspace), seq },
            Logged::State { qspace, key, value } => {
                WriteOp::State { tables: of(qspace), key: key.to_string(), value: value.to_vec() }
            }
            Logged::Record { table, key, value } => {
                WriteOp::Record { table: table.to_string(), key, value: value.map(<[u8]>::to_vec) }
            }
            Logged::RemoveQueue { qspace, queue, state_keys } => WriteOp::RemoveQueue {
                tables: of(qspace),
                queue: queue.to_string(),
                state_keys: state_keys.into_iter().map(str::to_string).collect(),
            },
        }
    }
}

/// The journal record of a group of jobs: their writes, in order.
fn encode_record<'a>(jobs: impl Iterator<Item = &'a [WriteOp]>) -> Vec<u8> {
    let logged: Vec<Logged> = jobs.flatten().map(Logged::of).collect();
    // Made as large as the record will be at once: grown by doubling, a record of large
    // bodies was copied about once more (a few percent of the writer's time in an import).
    // Should the estimate fall short, the vector grows as before.
    let room = logged.iter().map(Logged::room).sum();
    postcard::serialize_with_flavor(&logged, Presized(Vec::with_capacity(room))).unwrap_or_default()
}

/// Applies a journal record again, at recovery (see [`crate::storage::journal`]).
pub fn replay(txn: &WriteTransaction, log: &BodyLog, record: &[u8]) -> QmResult<()> {
    let logged: Vec<Logged> = postcard::from_bytes(record)
        .map_err(|e| QmError::system(format!("a journal record cannot be read: {e}")))?;
    let mut tables = HashMap::new();
    let ops: Vec<WriteOp> = logged.into_iter().map(|l| l.op(&mut tables)).collect();
    apply_all(txn, log, std::iter::once(ops.as_slice()), Bodies::Dropped).map(drop)
}

/// Whether applying removals returns the bodies removed: not when nobody waits for them
/// (deferred writes, whose callers were answered already; a replay). Those commits are
/// also the ones that run beside the journal's writes (a replay's at most a region), so
/// their new bodies are sent to the disk as they are written, to keep out of the way of
/// those writes; a group committed directly (an import's) leaves them to the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Bodies {
    Wanted,
    Dropped,
}

/// Applies every job in `txn`; the results of each job, in order.
pub(super) fn apply_all<'a, J>(
    txn: &WriteTransaction,
    log: &BodyLog,
    jobs: impl Iterator<Item = J>,
    bodies: Bodies,
) -> QmResult<Vec<Vec<Option<Vec<u8>>>>>
where
    J: IntoIterator<Item = &'a WriteOp> + Clone,
{
    let mut results = Vec::new();
    let mut open = Open {
        txn,
        log,
        append: segments::logs_bodies(),
        send: bodies == Bodies::Dropped,
        prepared: VecDeque::new(),
        live: LiveDeltas::new(),
        tables: HashMap::new(),
        named: HashMap::new(),
        parts: HashMap::new(),
        maintained: HashMap::new(),
        deltas: HashMap::new(),
    };
    // State values are overwritten by later jobs: write each key once, the last value
    // (or none, when a later job removed it).
    let mut states: HashMap<(&str, &str), Option<&[u8]>> = HashMap::new();
    let jobs: Vec<J> = jobs.collect();
    if open.append {
        prepare_bodies(&mut open, &jobs)?;
    }
    for ops in jobs {
        results.push(apply(&mut open, ops.clone(), bodies)?);
        for op in ops {
            match op {
                WriteOp::State { tables, key, value } => {
                    states.insert((tables.state.as_str(), key.as_str()), Some(value));
                }
                WriteOp::RemoveQueue { tables, state_keys, .. } => {
                    for key in state_keys {
                        states.insert((tables.state.as_str(), key.as_str()), None);
                    }
                }
                _ => {}
            }
        }
    }
    for ((table, key), value) in states {
        let table = open.named(table)?;
        match value {
            Some(v) => drop(table.insert(key, v).map_err(fail)?),
            None => drop(table.remove(key).map_err(fail)?),
        }
    }
    let deltas = std::mem::take(&mut open.deltas);
    let live = std::mem::take(&mut open.live);
    drop(open);
    stored::write_totals(txn, deltas).map_err(fail)?;
    segments::write_live(txn, live)?;
    Ok(results)
}

fn apply<'a>(
    open: &mut Open<'_>,
    ops: impl IntoIterator<Item = &'a WriteOp>,
    bodies: Bodies,
) -> QmResult<Vec<Option<Vec<u8>>>> {
    let mut removed = Vec::new();
    for op in ops {
        match op {
            WriteOp::Put { tables, seq, meta, body: Some(body), blocks, waiting, .. } => {
                let record = decode_meta(*seq, meta)?;
                open.index(tables, &record.queue, |m| m.add(*seq, &record, *waiting, *blocks))?;
                if !(open.append && put_logged(open, tables, *seq, meta, body)?) {
                    put_inline(open, tables, *seq, meta, body)?;
                }
            }
            // A new record for a stored message: its body stays as it is stored.
            WriteOp::Put { tables, seq, meta, body: None, blocks, waiting, .. } => {
                let old = open.table(&tables.msg)?.get(*seq).map_err(fail)?;
                let old = old.map(|v| v.value().to_vec());
                let old = old.as_deref().and_then(split_stored);
                let (tail, parted) = old.as_ref().map_or((&[][..], false), |s| (s.tail, s.parted));
                // A message stored before the checksums gets them now, from its body.
                let body_sum = match old.as_ref().and_then(|s| s.sums) {
                    Some(sums) => sums.body,
                    None => checksum(&whole_body(open, tables, *seq, tail, parted)?),
                };
                let logged = old.as_ref().and_then(|s| s.logged);
                let table = open.table(&tables.msg)?;
                let kept = if logged.is_some() { BodyRef::BYTES } else { tail.len() };
                let mut slot = table.insert_reserve(*seq, stored_len(meta, kept)).map_err(fail)?;
                match &logged {
                    Some(at) => write_logged(slot.as_mut(), meta, at, body_sum),
                    None => write_stored(slot.as_mut(), meta, tail, parted, body_sum),
                }
                drop(slot);
                if let Some(old) = &old {
                    let was = decode_meta(*seq, old.meta)?;
                    open.index(tables, &was.queue, |m| m.remove(*seq, &was, *blocks))?;
                }
                let record = decode_meta(*seq, meta)?;
                open.index(tables, &record.queue, |m| m.add(*seq, &record, *waiting, *blocks))?;
            }
            WriteOp::Ready { tables, seq } => {
                let value = open.table(&tables.msg)?.get(*seq).map_err(fail)?;
                let value = value.map(|v| v.value().to_vec());
                if let Some(stored) = value.as_deref().and_then(split_stored) {
                    let record = decode_meta(*seq, stored.meta)?;
                    open.index(tables, &record.queue, |m| m.make_ready(*seq, &record))?;
                }
            }
            WriteOp::Delete { tables, seq, blocks, .. } => {
                let value = open.table(&tables.msg)?.remove(*seq).map_err(fail)?;
                let value = value.map(|v| v.value().to_vec());
                if let Some(stored) = value.as_deref().and_then(split_stored) {
                    let was = decode_meta(*seq, stored.meta)?;
                    open.index(tables, &was.queue, |m| m.remove(*seq, &was, *blocks))?;
                }
                let body = match value.as_deref().and_then(split_stored) {
                    Some(Stored { logged: Some(at), .. }) => {
                        open.gone(&at);
                        match bodies {
                            Bodies::Wanted => Some(read_logged(open.log, &at)?),
                            Bodies::Dropped => None,
                        }
                    }
                    Some(stored) if stored.parted && bodies == Bodies::Dropped => {
                        let parts = open.parts(&tables.parts)?;
                        let range = (*seq, 0u32)..=(*seq, u32::MAX);
                        parts.retain_in(range, |_, _| false).map_err(fail)?;
                        None
                    }
                    Some(_) if bodies == Bodies::Dropped => None,
                    Some(stored) if stored.parted => {
                        let mut body = Vec::new();
                        let parts = open.parts(&tables.parts)?;
                        let range = (*seq, 0u32)..=(*seq, u32::MAX);
                        for part in parts.extract_from_if(range, |_, _| true).map_err(fail)? {
                            body.extend_from_slice(part.map_err(fail)?.1.value());
                        }
                        body.extend_from_slice(stored.tail);
                        Some(body)
                    }
                    Some(stored) => Some(stored.tail.to_vec()),
                    None => None,
                };
                removed.push(body);
            }
            WriteOp::State { .. } => {}
            WriteOp::RemoveQueue { tables, queue, .. } => {
                purge(open, tables, queue)?;
                open.named(&tables.queues)?.remove(queue.as_str()).map_err(fail)?;
            }
            WriteOp::Record { table, key, value } => {
                let t = open.table(table)?;
                match value {
                    Some(v) => {
                        t.insert(*key, v.as_slice()).map_err(fail)?;
                    }
                    None => {
                        t.remove(*key).map_err(fail)?;
                    }
                }
            }
        }
    }
    Ok(removed)
}

/// Stores message `seq` with its body in its value (and parts, when it is large).
fn put_inline(
    open: &mut Open<'_>,
    tables: &QueueSpaceTables,
    seq: u64,
    meta: &[u8],
    body: &[u8],
) -> QmResult<()> {
    let (parts, tail_len) = body_layout(body.len(), meta.len());
    let mut at = 0;
    for (n, len) in parts.iter().enumerate() {
        let part = &body[at..at + len];
        open.parts(&tables.parts)?.insert((seq, n as u32), part).map_err(fail)?;
        at += len;
    }
    let table = open.table(&tables.msg)?;
    let mut slot = table.insert_reserve(seq, stored_len(meta, tail_len)).map_err(fail)?;
    write_stored(slot.as_mut(), meta, &body[at..], !parts.is_empty(), checksum(body));
    Ok(())
}

/// Stores message `seq` with its body appended to the file's body segments; false (and
/// nothing stored) when the filesystem has no room for the body there. The body then
/// goes into redb, which may have room inside its file: a journal replayed after a full
/// disk must find room for every body it holds, and dead bytes in segments are not
/// room until their whole segment is dead.
fn put_logged(
    open: &mut Open<'_>,
    tables: &QueueSpaceTables,
    seq: u64,
    meta: &[u8],
    body: &[u8],
) -> QmResult<bool> {
    let at = match open.prepared.pop_front() {
        Some(at) if at.len as usize == body.len() => at,
        Some(_) => return Err(fail("a body appended ahead does not match its message")),
        None => {
            let mark = open.log.mark();
            match open.log.append(body) {
                Ok(at) => at,
                Err(e) if disk_full(&e) => {
                    open.log.rollback(mark).map_err(|e| appending(open.log, &e))?;
                    return Ok(false);
                }
                Err(e) => return Err(appending(open.log, &e)),
            }
        }
    };
    *open.live.entry(at.segment).or_default() += i64::from(at.len);
    let table = open.table(&tables.msg)?;
    let mut slot = table.insert_reserve(seq, stored_len(meta, BodyRef::BYTES)).map_err(fail)?;
    write_logged(slot.as_mut(), meta, &at, at.crc);
    Ok(true)
}

/// Appends the new bodies of `jobs` to the segments together ([`BodyLog::append_all`]), for
/// [`put_logged`] to take in turn. When the disk is full, none is kept: each is then tried
/// alone, and stored in redb if it does not fit.
fn prepare_bodies<'a, J>(open: &mut Open<'_>, jobs: &[J]) -> QmResult<()>
where
    J: IntoIterator<Item = &'a WriteOp> + Clone,
{
    let bodies: Vec<&[u8]> = jobs
        .iter()
        .flat_map(|ops| ops.clone())
        .filter_map(|op| match op {
            WriteOp::Put { body: Some(body), .. } => Some(&body[..]),
            _ => None,
        })
        .collect();
    if bodies.len() < 2 {
        return Ok(());
    }
    let mark = open.log.mark();
    match open.log.append_all(&bodies, open.send) {
        Ok(refs) => open.prepared = refs.into(),
        Err(e) if disk_full(&e) => open.log.rollback(mark).map_err(|e| appending(open.log, &e))?,
        Err(e) => return Err(appending(open.log, &e)),
    }
    Ok(())
}

fn disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Why a body could not be appended to `log`: a full filesystem is said as such, as for
/// redb's own writes, so that the request is refused with `QMENOSPACE`.
fn appending(log: &BodyLog, e: &std::io::Error) -> QmError {
    let errno = match e.kind() {
        ErrorKind::StorageFull => Some(libc::ENOSPC),
        ErrorKind::QuotaExceeded => Some(libc::EDQUOT),
        _ => None,
    };
    match errno {
        Some(errno) => crate::storage::space::no_space(log.path(), errno),
        None => {
            fail(format_args!("appending to the body segments of {}: {e}", log.path().display()))
        }
    }
}

/// The body at `at` in `log`.
pub(crate) fn read_logged(log: &BodyLog, at: &BodyRef) -> QmResult<Vec<u8>> {
    log.read(at).map_err(|e| QmError::system(format!("reading a message body: {e}")))
}

/// The body of stored message `seq`: its parts, when it has some, then `tail`.
fn whole_body(
    open: &mut Open<'_>,
    tables: &QueueSpaceTables,
    seq: u64,
    tail: &[u8],
    parted: bool,
) -> QmResult<Vec<u8>> {
    let mut body = Vec::new();
    if parted {
        let parts = open.parts(&tables.parts)?;
        for part in parts.range((seq, 0u32)..=(seq, u32::MAX)).map_err(fail)? {
            body.extend_from_slice(part.map_err(fail)?.1.value());
        }
    }
    body.extend_from_slice(tail);
    Ok(body)
}

fn decode_meta(seq: u64, meta: &[u8]) -> QmResult<MessageMeta> {
    postcard::from_bytes(meta)
        .map_err(|e| QmError::system(format!("message {seq:016x} has a damaged record: {e}")))
}

/// Removes every stored message of `queue` with the keys that follow them, and its totals.
fn purge(open: &mut Open<'_>, tables: &QueueSpaceTables, queue: &str) -> QmResult<()> {
    open.index(tables, queue, |_| Ok(Delta::default()))?;
    let maintained = open.maintained.get_mut(&tables.qspace).expect("opened just above");
    let seqs = maintained.queue_seqs(queue).map_err(fail)?;
    let any_timers = maintained.timed().map_err(fail)?;
    let (mut timed, mut parted) = (Vec::new(), Vec::new());
    open.table(&tables.msg)?;
    let Open { tables: records, live, .. } = &mut *open;
    let records = records.get_mut(&tables.msg).expect("opened just above");
    // Each record is dealt with as it is taken, keeping only what the keys and parts need:
    // a queue of millions is not held in memory.
    take_records(records, seqs, |seq, value| {
        let Some(stored) = split_stored(value) else { return Ok(()) };
        if let Some(at) = &stored.logged {
            *live.entry(at.segment).or_default() -= i64::from(at.len);
        }
        if stored.parted {
            parted.push(seq);
        }
        if any_timers {
            let meta = decode_meta(seq, stored.meta)?;
            timed.push((seq, meta.available_us, meta.expires_us));
        }
        Ok(())
    })?;
    for seq in parted {
        let parts = open.parts(&tables.parts)?;
        parts.retain_in((seq, 0u32)..=(seq, u32::MAX), |_, _| false).map_err(fail)?;
    }
    open.index(tables, queue, |m| m.purge(queue, &timed).map(|()| Delta::default()))?;
    stored::gather(&mut open.deltas, &tables.totals, queue, Delta::reset());
    Ok(())
}

/// Records taken at a time by [`take_records`], so that the numbers it looks for stay few.
const TAKE_STEP: usize = 65_536;

/// Removes the records `seqs` from `table`, calling `each` with every one found and its
/// value. Records close together (a queue holding much of its space's range of numbers)
/// are taken in one pass over their range: a search for each of hundreds of thousands held
/// every other writer up for seconds. A few far apart are searched for each.
fn take_records(
    table: &mut Table<'_, u64, &'static [u8]>,
    mut seqs: Vec<u64>,
    mut each: impl FnMut(u64, &[u8]) -> QmResult<()>,
) -> QmResult<()> {
    seqs.sort_unstable();
    for step in seqs.chunks(TAKE_STEP) {
        let (first, last) = (step[0], step[step.len() - 1]);
        if (last - first) / 16 > step.len() as u64 {
            for &seq in step {
                if let Some(value) = table.remove(seq).map_err(fail)? {
                    each(seq, value.value())?;
                }
            }
            continue;
        }
        let wanted: std::collections::HashSet<u64> = step.iter().copied().collect();
        let taken = table.extract_from_if(first..=last, |seq, _| wanted.contains(&seq));
        for item in taken.map_err(fail)? {
            let (seq, value) = item.map_err(fail)?;
            each(seq.value(), value.value())?;
        }
    }
    Ok(())
}

/// Reads one message body outside the writer (for transactional dequeues and peeks): one
/// that redb holds, so not one whose enqueue is still deferred (the engine keeps those
/// bodies itself).
pub fn read_body(file: &DbFile, tables: &QueueSpaceTables, seq: u64) -> QmResult<Option<Vec<u8>>> {
    file.read_applied(|txn| stored_body(txn, file.bodies(), tables, seq))
}

/// The body at `at`, where a message's body was last seen in a body segment
/// ([`super::index::Entry::body_at`]); `None` when it cannot be read there (a compaction
/// moved it and its old segment went), and then the message's record says where it is.
pub(super) fn read_body_at(log: &BodyLog, at: &BodyRef) -> Option<Vec<u8>> {
    let _reading = log.reading();
    log.read(at)
        .inspect_err(|e| {
            tracing::debug!("a body is no longer where it was seen ({e}); reading its record")
        })
        .ok()
}

/// Message `seq`'s body as `txn` sees it, if it is stored.
pub(super) fn stored_body(
    txn: &redb::ReadTransaction,
    log: &BodyLog,
    tables: &QueueSpaceTables,
    seq: u64,
) -> QmResult<Option<Vec<u8>>> {
    match stored_messages(txn, tables)? {
        Some(table) => stored_body_in(txn, &table, log, tables, seq),
        None => Ok(None),
    }
}

/// The table of `tables`' stored messages as `txn` sees it, if it was made.
pub(super) fn stored_messages(
    txn: &redb::ReadTransaction,
    tables: &QueueSpaceTables,
) -> QmResult<Option<redb::ReadOnlyTable<u64, &'static [u8]>>> {
    match txn.open_table(tables.msg()) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(fail(e)),
    }
}

/// [`stored_body`], with the table of the stored messages open already: the bodies of a
/// group's dequeues are read with one opening of it.
pub(super) fn stored_body_in(
    txn: &redb::ReadTransaction,
    table: &redb::ReadOnlyTable<u64, &'static [u8]>,
    log: &BodyLog,
    tables: &QueueSpaceTables,
    seq: u64,
) -> QmResult<Option<Vec<u8>>> {
    let Some(value) = table.get(seq).map_err(fail)? else { return Ok(None) };
    let Some(Stored { tail, parted, logged, .. }) = split_stored(value.value()) else {
        return Ok(None);
    };
    if let Some(at) = logged {
        return read_logged(log, &at).map(Some);
    }
    if !parted {
        return Ok(Some(tail.to_vec()));
    }
    let parts = txn.open_table(tables.parts()).map_err(fail)?;
    let mut body = Vec::new();
    for part in parts.range((seq, 0u32)..=(seq, u32::MAX)).map_err(fail)? {
        body.extend_from_slice(part.map_err(fail)?.1.value());
    }
    body.extend_from_slice(tail);
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About the largest record the journal takes.
    const LARGEST: usize = 2 << 20;

    /// Records taken by number come back with their values and are gone from the table,
    /// whether they lie close together (one pass) or far apart (a search each); the others
    /// stay.
    #[test]
    fn records_are_taken_close_together_or_far_apart() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let def = redb::TableDefinition::<u64, &[u8]>::new("msg");
        let txn = db.begin_write().unwrap();
        let mut table = txn.open_table(def).unwrap();
        for seq in 0..1000u64 {
            table.insert(seq, seq.to_be_bytes().as_slice()).unwrap();
        }
        let mut take = |seqs: Vec<u64>| {
            let mut taken = Vec::new();
            take_records(&mut table, seqs, |seq, value| {
                assert_eq!(value, seq.to_be_bytes(), "the value of {seq}");
                taken.push(seq);
                Ok(())
            })
            .unwrap();
            taken
        };
        // Close together: one pass over 10..=20.
        assert_eq!(take(vec![20, 10, 12, 14, 16, 18]), [10, 12, 14, 16, 18, 20]);
        // Close together, one of them gone already.
        assert_eq!(take(vec![13, 10, 11]), [11, 13]);
        // Far apart, one of them not there: a search each.
        assert_eq!(take(vec![900, 5, 5000]), [5, 900]);
        assert_eq!(take(Vec::new()), [0u64; 0]);
        let left: Vec<u64> = table.iter().unwrap().map(|e| e.unwrap().0.value()).collect();
        let gone = [5, 10, 11, 12, 13, 14, 16, 18, 20, 900];
        assert_eq!(left, (0..1000).filter(|s| !gone.contains(s)).collect::<Vec<_>>());
    }

    fn job(bytes: usize) -> Job {
        let (reply, _) = oneshot::channel();
        let value = vec![0; bytes];
        Job { ops: vec![WriteOp::Record { table: "t".into(), key: 1, value: Some(value) }], reply }
    }

    #[test]
    fn a_record_is_made_in_the_room_reckoned_for_it() {
        let tables = Arc::new(QueueSpaceTables::new("QSPACE"));
        let ops = vec![
            WriteOp::Put {
                tables: tables.clone(),
                seq: u64::MAX,
                meta: vec![7; 300],
                body: Some(Arc::from(vec![1u8; 100_000])),
                body_len: u64::MAX,
                blocks: u64::MAX,
                waiting: true,
            },
            WriteOp::Delete {
                tables: tables.clone(),
                seq: u64::MAX,
                blocks: u64::MAX,
                body_at: None,
            },
            WriteOp::Ready { tables: tables.clone(), seq: u64::MAX },
            WriteOp::State { tables: tables.clone(), key: "k".repeat(200), value: vec![2; 200] },
            WriteOp::Record { table: "t".repeat(300), key: u64::MAX, value: Some(vec![3; 999]) },
            WriteOp::RemoveQueue {
                tables,
                queue: "Q".repeat(127),
                state_keys: vec!["s".repeat(200); 3],
            },
        ];
        for op in &ops {
            let record = encode_record(std::iter::once(std::slice::from_ref(op)));
            let room = Logged::of(op).room();
            assert!(record.len() <= room, "{} bytes in room for {room}", record.len());
        }
        let record = encode_record(std::iter::once(ops.as_slice()));
        assert_eq!(record.capacity(), ops.iter().map(|op| Logged::of(op).room()).sum::<usize>());
    }

    #[test]
    fn large_jobs_that_arrive_together_go_one_group_each() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            tx.send(job(LARGEST / 2)).unwrap();
        }
        let mut carried = None;
        let first = rx.recv().unwrap();
        assert_eq!(gather(first, &rx, &mut carried).len(), 1, "two halves and more pass the limit");
        let next = carried.take().expect("the job that did not fit is kept");
        assert_eq!(gather(next, &rx, &mut carried).len(), 1);
        assert!(carried.is_some());
        // Small jobs share a group, a large one's too, as before.
        for _ in 0..100 {
            tx.send(job(100)).unwrap();
        }
        let first = carried.take().unwrap();
        assert_eq!(gather(first, &rx, &mut carried).len(), 101);
        assert!(carried.is_none());
    }
}
