//! Threshold commands: what runs when a queue's usage reaches its high limit.
//!
//! The engine decides when a limit is crossed (see `engine::thresholds`); this module runs
//! the command detached from the commit that crossed it, in an environment that names the
//! event, and returns the record kept of every firing. It also records what became of
//! commands a killed qmd left running, which the next one ends at its start.

use crate::command::{self, Orphan, ShellCommand};
use crate::state::Store;
use crate::storage::device::{storage_error, write_in};
use crate::storage::tables::QueueSpaceTables;
use qm_common::QmResult;
use qm_common::protocol::{FIRING_ENDED_AT_START, FIRING_RUNNING, FiringRecord};
use qm_common::threshold::Limit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What every threshold command and service gets to know about the daemon.
#[derive(Debug)]
pub struct CommandEnv {
    pub device: PathBuf,
    pub socket: PathBuf,
    timeout_secs: AtomicU64,
}

impl CommandEnv {
    pub fn new(device: PathBuf, socket: PathBuf, timeout_secs: u64) -> Self {
        CommandEnv { device, socket, timeout_secs: AtomicU64::new(timeout_secs) }
    }

    /// Time limit of threshold commands.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.load(Ordering::Relaxed))
    }

    pub fn set_timeout(&self, secs: u64) {
        self.timeout_secs.store(secs, Ordering::Relaxed);
    }

    /// `QMCONFIG` and `QM_SOCKET`, so commands can call `qmadmin` back, and a `PATH` that
    /// starts with the daemon's own directory, where the matching `qmadmin` is installed.
    pub fn base(&self) -> Vec<(&'static str, String)> {
        let own_dir =
            std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.display().to_string()));
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let path = match own_dir {
            Some(dir) => format!("{dir}:{path}"),
            None => path,
        };
        vec![
            ("QMCONFIG", self.device.display().to_string()),
            ("QM_SOCKET", self.socket.display().to_string()),
            ("PATH", path),
        ]
    }

    /// Commands run in the device's directory.
    pub fn cwd(&self) -> Option<PathBuf> {
        self.device.parent().map(|p| p.to_path_buf())
    }
}

/// A crossing (or a test) to run a command for.
#[derive(Debug, Clone)]
pub struct Firing {
    pub qspace: String,
    pub queue: String,
    /// `persistent` or `nonpersistent`.
    pub limits: &'static str,
    pub limit: Limit,
    pub usage: String,
    pub command: String,
    pub test: bool,
    /// The queue's aliases (`QM_ALIASES`, space separated).
    pub aliases: Vec<String>,
}

/// The record of a firing whose command is about to start.
pub fn running(firing: &Firing) -> FiringRecord {
    FiringRecord {
        qspace: firing.qspace.clone(),
        queue: firing.queue.clone(),
        limits: firing.limits.to_string(),
        limit: firing.limit.to_string(),
        usage: firing.usage.clone(),
        command: firing.command.clone(),
        started: qm_common::time::now_secs(),
        duration_ms: 0,
        exit: None,
        outcome: FIRING_RUNNING.to_string(),
        output: String::new(),
        test: firing.test,
    }
}

/// Runs the firing's command and records how it went.
pub async fn run(env: &CommandEnv, firing: Firing) -> FiringRecord {
    let started = qm_common::time::now_secs();
    let mut vars = env.base();
    vars.extend([
        ("QM_QSPACE", firing.qspace.clone()),
        ("QM_QUEUE", firing.queue.clone()),
        ("QM_LIMITS", firing.limits.to_string()),
        ("QM_LIMIT", firing.limit.to_string()),
        ("QM_USAGE", firing.usage.clone()),
        ("QM_EVENT", if firing.test { "test" } else { "high" }.to_string()),
        ("QM_ALIASES", firing.aliases.join(" ")),
    ]);
    let outcome = command::run(ShellCommand {
        command: &firing.command,
        env: vars,
        stdin: None,
        cwd: env.cwd(),
        limit: env.timeout(),
        // Operators may start things with `&`: they are not killed, and what the command
        // printed is kept all the same.
        kill_leftovers: false,
    })
    .await;
    let record = FiringRecord {
        started,
        duration_ms: outcome.duration.as_millis() as u64,
        exit: outcome.ending.exit_code(),
        outcome: outcome.ending.describe(),
        output: command::first_lines(&outcome, 10),
        ..running(&firing)
    };
    if outcome.ending.success() {
        tracing::info!(qspace = %record.qspace, queue = %record.queue, "threshold command ran: {}", record.command);
    } else {
        tracing::warn!(qspace = %record.qspace, queue = %record.queue, "threshold command {}: {}", record.outcome, record.command);
    }
    record
}

/// Records, for the threshold commands a killed qmd left running and this one ended at its
/// start, that they were ended so: in each queue's latest firings still recorded as running
/// (one per command ended). Runs before any queue space is loaded, so it writes to the
/// firing records on disk directly.
pub fn record_orphans(store: &Store, ended: &[Orphan]) {
    let Some(device) = &store.device else { return };
    let mut per_qspace: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for orphan in ended.iter().filter(|o| !o.test) {
        per_qspace.entry(&orphan.qspace).or_default().push(&orphan.queue);
    }
    for (qspace, queues) in per_qspace {
        let written = crate::admin::qspace_file(device, qspace)
            .and_then(|(_, db)| mark_ended(&db, &QueueSpaceTables::new(qspace), &queues));
        if let Err(e) = written {
            tracing::warn!(qspace, "cannot record the threshold commands ended: {}", e.message);
        }
    }
}

/// Marks, for each entry of `queues`, the queue's latest firing still recorded as running.
fn mark_ended(
    db: &crate::storage::handle::DbFile,
    tables: &QueueSpaceTables,
    queues: &[&str],
) -> QmResult<()> {
    use redb::ReadableTable;
    let err = |e: &dyn std::fmt::Display| storage_error("recording ended threshold commands", e);
    write_in(db, |txn| {
        let mut table = txn.open_table(tables.firings()).map_err(|e| err(&e))?;
        let mut running: Vec<(u64, FiringRecord)> = Vec::new();
        for item in table.iter().map_err(|e| err(&e))? {
            let (k, v) = item.map_err(|e| err(&e))?;
            if let Ok(record) = postcard::from_bytes::<FiringRecord>(v.value())
                && record.outcome == FIRING_RUNNING
            {
                running.push((k.value(), record));
            }
        }
        for queue in queues {
            let latest = running.iter().rposition(|(_, r)| r.queue == *queue);
            let Some((key, mut record)) = latest.map(|i| running.remove(i)) else { continue };
            record.outcome = FIRING_ENDED_AT_START.to_string();
            let value = postcard::to_stdvec(&record).map_err(|e| err(&e))?;
            table.insert(key, value.as_slice()).map_err(|e| err(&e))?;
        }
        Ok(())
    })
}
