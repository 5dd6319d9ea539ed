//! Group commit: one thread per redb file turns queued writes into durable transactions.
//!
//! Callers send a job (a list of writes) and wait for its reply. The thread takes every job
//! that is waiting, applies them all in one write transaction and commits it with one fsync,
//! then answers all of them. Under load, the jobs that arrive during one fsync share the next,
//! so durable throughput grows with concurrency. Jobs are applied in the order they were
//! sent, which callers rely on: they send while holding their queue space's lock.

use super::record::{split_stored, stored_len, write_stored};
use crate::storage::tables::QueueSpaceTables;
use qm_common::{QmError, QmResult};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most jobs committed together.
const BATCH_MAX: usize = 4096;

/// One write.
pub enum WriteOp {
    /// Store a new message (`body` given) or replace an existing message's record.
    Put { tables: Arc<QueueSpaceTables>, seq: u64, meta: Vec<u8>, body: Option<Arc<[u8]>> },
    /// Remove a message; its body comes back in the job's reply.
    Delete { tables: Arc<QueueSpaceTables>, seq: u64 },
    /// Store a queue-space state value (counters, threshold states).
    State { tables: Arc<QueueSpaceTables>, key: String, value: Vec<u8> },
    /// Store (or, without a value, remove) a record of a table keyed by number.
    Record { table: String, key: u64, value: Option<Vec<u8>> },
    /// Remove a queue's definition and its state values (`qdestroy`), in the same
    /// transaction as the removal of its messages.
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
}

/// A job sent and not yet answered.
pub struct Pending(oneshot::Receiver<JobResult>);

impl Pending {
    /// Waits until the job is durable (or failed).
    pub async fn wait(self) -> JobResult {
        self.0.await.unwrap_or_else(|_| Err(QmError::system("the storage writer stopped")))
    }

    /// Waits from a thread that is not async.
    pub fn wait_blocking(self) -> JobResult {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(QmError::system("the storage writer stopped")))
    }
}

impl Writer {
    /// Starts the writer thread of `db`; it ends when the last handle is dropped.
    pub fn start(db: Arc<Database>, name: &str) -> QmResult<Arc<Writer>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("qm-writer {name}"))
            .spawn(move || run(&db, &rx))
            .map_err(|e| QmError::system(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Writer { tx }))
    }

    /// Queues a job; it is applied after every job sent before it.
    pub fn send(&self, ops: Vec<WriteOp>) -> Pending {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { ops, reply }) {
            let _ = job.reply.send(Err(QmError::system("the storage writer stopped")));
        }
        Pending(rx)
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(db, batch.iter().map(|j| j.ops.as_slice())) {
            Ok(mut results) => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    let seqs: Vec<String> = batch
                        .iter()
                        .flat_map(|j| j.ops.iter())
                        .filter_map(|op| match op {
                            WriteOp::Put { seq, body, .. } => {
                                Some(format!("{}{seq:x}", if body.is_some() { "+" } else { "~" }))
                            }
                            WriteOp::Delete { seq, .. } => Some(format!("-{seq:x}")),
                            WriteOp::State { .. }
                            | WriteOp::Record { .. }
                            | WriteOp::RemoveQueue { .. } => None,
                        })
                        .collect();
                    tracing::trace!("committed {} jobs: {}", batch.len(), seqs.join(" "));
                }
                for job in batch.into_iter().rev() {
                    let _ = job.reply.send(Ok(results.pop().unwrap_or_default()));
                }
            }
            // One bad job must not fail the others: retry each on its own.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = commit(db, std::iter::once(job.ops.as_slice()))
                        .map(|mut r| r.pop().unwrap_or_default());
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!("storage write failed: {}", e.message);
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn fail(e: impl std::fmt::Display) -> QmError {
    QmError::system(format!("storage write failed: {e}"))
}

/// The tables a batch touches, opened once each.
struct Open<'t> {
    txn: &'t WriteTransaction,
    tables: HashMap<String, Table<'t, u64, &'static [u8]>>,
    /// Tables keyed by name: queue definitions and state values.
    named: HashMap<String, Table<'t, &'static str, &'static [u8]>>,
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
    db: &Database,
    jobs: impl Iterator<Item = &'a [WriteOp]>,
) -> QmResult<Vec<Vec<Option<Vec<u8>>>>> {
    let mut txn = db.begin_write().map_err(fail)?;
    txn.set_durability(Durability::Immediate).map_err(fail)?;
    let mut results = Vec::new();
    {
        let mut open = Open { txn: &txn, tables: HashMap::new(), named: HashMap::new() };
        // State values are overwritten by later jobs: write each key once, the last value
        // (or none, when a later job removed it).
        let mut states: HashMap<(&str, &str), Option<&[u8]>> = HashMap::new();
        for ops in jobs {
            results.push(apply(&mut open, ops)?);
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
    }
    txn.commit().map_err(fail)?;
    Ok(results)
}

fn apply(open: &mut Open<'_>, ops: &[WriteOp]) -> QmResult<Vec<Option<Vec<u8>>>> {
    let mut removed = Vec::new();
    for op in ops {
        match op {
            WriteOp::Put { tables, seq, meta, body } => {
                let table = open.table(&tables.msg)?;
                let old;
                let body: &[u8] = match body {
                    Some(b) => b,
                    // A new record for a stored message: keep its body.
                    None => {
                        old = table.get(*seq).map_err(fail)?.map(|v| v.value().to_vec());
                        old.as_deref().and_then(split_stored).map_or(&[][..], |(_, b)| b)
                    }
                };
                let mut slot =
                    table.insert_reserve(*seq, stored_len(meta, body.len())).map_err(fail)?;
                write_stored(slot.as_mut(), meta, body);
            }
            WriteOp::Delete { tables, seq } => {
                let value = open.table(&tables.msg)?.remove(*seq).map_err(fail)?;
                removed.push(value.and_then(|v| split_stored(v.value()).map(|(_, b)| b.to_vec())));
            }
            WriteOp::State { .. } => {}
            WriteOp::RemoveQueue { tables, queue, .. } => {
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

/// Reads one message body outside the writer (for transactional dequeues and peeks).
pub fn read_body(db: &Database, tables: &QueueSpaceTables, seq: u64) -> QmResult<Option<Vec<u8>>> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(fail)?;
    let table = match txn.open_table(tables.msg()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let value = table.get(seq).map_err(fail)?;
    Ok(value.and_then(|v| split_stored(v.value()).map(|(_, b)| b.to_vec())))
}
