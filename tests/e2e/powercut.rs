//! Power cuts: `qmd` loses every write it did not sync (`QM_FAULT=powercut:N`) at points
//! spread over a concurrent workload of enqueues, dequeues, transactional dequeues (commit
//! and abort), `crdl`, `qspacecreate` and `qaddext`. After each cut a normal qmd starts on
//! what is left: nothing acknowledged is lost, nothing unacknowledged half there, no
//! acknowledged dequeue comes back (the drains' included), and the device list, VTOC and
//! queue spaces agree.
//!
//! A request counts as cut short only when its connection was lost: an error qmd answered
//! fails the audit rather than excusing what is missing.

use crate::faults::FaultyQmd;
use crate::support::{Daemon, Env, QMADMIN};
use qm_common::client::Client;
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::message::{DequeueCtl, EnqueueCtl, MsgId};
use qm_common::qspace::QueueSpaceInfo;
use qm_common::queue::QueueListing;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients of one round saw, in the order they saw it.
#[derive(Default)]
struct Ledger {
    /// Counts the events below, to order them.
    events: u64,
    /// Enqueues acknowledged, with their msgids and when.
    enqueued: HashMap<String, (MsgId, u64)>,
    /// Enqueues sent and not acknowledged (outside a transaction, or in one whose commit
    /// was sent and not acknowledged).
    enqueue_unknown: HashSet<String>,
    /// Enqueued in a transaction that was rolled back or never asked to commit: never
    /// visible.
    uncommitted: HashSet<String>,
    /// Dequeues acknowledged (plain, or in a transaction whose commit was acknowledged).
    dequeued: HashSet<String>,
    /// Taken in a transaction whose commit was sent and not acknowledged.
    dequeue_unknown: HashSet<String>,
    /// Taken in any transaction (committed, rolled back or cut short): such a message may
    /// be older than the head a cut plain dequeue took.
    in_transactions: HashSet<String>,
    /// When the (one) plain consumer sent the dequeue it has not seen answered: it may have
    /// taken the head of the queue.
    plain_in_flight: Option<u64>,
    /// Transactional dequeues sent and not answered: each may hold a message the ledger
    /// does not know of, which a plain dequeue meanwhile passed over to take the next.
    transactional_in_flight: usize,
    /// Errors qmd answered (not a lost connection): none is expected, and an answered
    /// request was not cut short.
    answered_errors: Vec<String>,
}

impl Ledger {
    fn event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }
}

/// What the admin commands of one round saw: each command and whether it was acknowledged.
#[derive(Default)]
struct Admin {
    crdl: Vec<(String, bool)>,
    qspc: Vec<(String, bool)>,
    qaddext: Vec<(String, bool)>,
}

/// Ends a client on error `e`: a lost connection is the cut (what was in flight is in the
/// ledger already); an error qmd answered is recorded for the audit to fail on.
fn ended(ledger: &Mutex<Ledger>, e: qm_common::QmError) {
    let lost = e.diagnostic == qm_common::Diagnostic::Os
        && (e.message.starts_with("connection to qmd lost")
            || e.message == "qmd closed the connection");
    if !lost {
        ledger.lock().unwrap().answered_errors.push(e.message);
    }
}

async fn producer(device: PathBuf, id: String, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "producer").await else { return };
    for n in 0.. {
        let body = format!("{id}-{n}");
        ledger.lock().unwrap().enqueue_unknown.insert(body.clone());
        match c.enqueue("QS", "Q", body.as_bytes(), &EnqueueCtl::default()).await {
            Ok(msgid) => {
                let mut l = ledger.lock().unwrap();
                l.enqueue_unknown.remove(&body);
                let at = l.event();
                l.enqueued.insert(body, (msgid, at));
            }
            Err(e) => return ended(&ledger, e),
        }
    }
}

/// Enqueues two messages per transaction; rolls back every third transaction.
async fn transactional_producer(device: PathBuf, id: String, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "producer").await else { return };
    for n in 0.. {
        let bodies = [format!("{id}-{n}a"), format!("{id}-{n}b")];
        if let Err(e) = c.begin("QS", None).await {
            return ended(&ledger, e);
        }
        let mut ids = Vec::new();
        for body in &bodies {
            {
                let mut l = ledger.lock().unwrap();
                l.uncommitted.insert(body.clone());
                l.in_transactions.insert(body.clone());
            }
            match c.enqueue("QS", "Q", body.as_bytes(), &EnqueueCtl::default()).await {
                Ok(msgid) => ids.push(msgid),
                Err(e) => return ended(&ledger, e),
            }
        }
        if n % 3 == 2 {
            if let Err(e) = c.abort().await {
                return ended(&ledger, e);
            }
            continue;
        }
        {
            let mut l = ledger.lock().unwrap();
            for body in &bodies {
                l.uncommitted.remove(body);
                l.enqueue_unknown.insert(body.clone());
            }
        }
        if let Err(e) = c.commit().await {
            return ended(&ledger, e);
        }
        let mut l = ledger.lock().unwrap();
        let at = l.event();
        for (body, msgid) in bodies.into_iter().zip(ids) {
            l.enqueue_unknown.remove(&body);
            l.enqueued.insert(body, (msgid, at));
        }
    }
}

async fn consumer(device: PathBuf, transactional: bool, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "consumer").await else { return };
    let ctl = DequeueCtl { wait_ms: Some(20), ..DequeueCtl::default() };
    loop {
        if transactional && let Err(e) = c.begin("QS", None).await {
            return ended(&ledger, e);
        }
        {
            let mut l = ledger.lock().unwrap();
            match transactional {
                true => l.transactional_in_flight += 1,
                false => l.plain_in_flight = Some(l.event()),
            }
        }
        let got = match c.dequeue("QS", "Q", &ctl).await {
            Ok(m) => Some(String::from_utf8(m.body).unwrap()),
            Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => None,
            Err(e) => return ended(&ledger, e),
        };
        if transactional {
            ledger.lock().unwrap().transactional_in_flight -= 1;
        } else {
            let mut l = ledger.lock().unwrap();
            l.plain_in_flight = None;
            if let Some(body) = got {
                l.dequeued.insert(body);
            }
            continue;
        }
        let Some(body) = got else {
            if let Err(e) = c.abort().await {
                return ended(&ledger, e);
            }
            continue;
        };
        ledger.lock().unwrap().in_transactions.insert(body.clone());
        // Roll back every third message, so that rolled-back messages are about too.
        if body.len() % 3 == 0 {
            if let Err(e) = c.abort().await {
                return ended(&ledger, e);
            }
            continue;
        }
        ledger.lock().unwrap().dequeue_unknown.insert(body.clone());
        if let Err(e) = c.commit().await {
            return ended(&ledger, e);
        }
        let mut l = ledger.lock().unwrap();
        l.dequeue_unknown.remove(&body);
        l.dequeued.insert(body);
    }
}

/// The one client of a round with a single session: an enqueue, then a dequeue, on one
/// connection. With no other session open, qmd commits each request's writes on the
/// session's own thread rather than the writer's; the `qmadmin` runs of the admin work
/// open a second session now and then, so the cuts fall on both ways and between them.
async fn alternating(device: PathBuf, id: String, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "alternating").await else { return };
    for n in 0.. {
        let body = format!("{id}-{n}");
        ledger.lock().unwrap().enqueue_unknown.insert(body.clone());
        match c.enqueue("QS", "Q", body.as_bytes(), &EnqueueCtl::default()).await {
            Ok(msgid) => {
                let mut l = ledger.lock().unwrap();
                l.enqueue_unknown.remove(&body);
                let at = l.event();
                l.enqueued.insert(body, (msgid, at));
            }
            Err(e) => return ended(&ledger, e),
        }
        {
            let mut l = ledger.lock().unwrap();
            l.plain_in_flight = Some(l.event());
        }
        match c.dequeue("QS", "Q", &DequeueCtl::default()).await {
            Ok(m) => {
                let mut l = ledger.lock().unwrap();
                l.plain_in_flight = None;
                l.dequeued.insert(String::from_utf8(m.body).unwrap());
            }
            Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => {
                ledger.lock().unwrap().plain_in_flight = None;
            }
            Err(e) => return ended(&ledger, e),
        }
    }
}

/// Who sends the traffic of a round.
#[derive(Clone, Copy)]
enum Clients {
    /// Four producers, a transactional one, a plain consumer and two transactional ones.
    Many,
    /// One session that enqueues and dequeues in turn ([`alternating`]).
    One,
}

/// Creates entries, queue spaces and extents, one `qmadmin` each, until one fails (the
/// daemon is gone) or `stop` is set; at most two of each per round (the device list is
/// small).
fn admin(device: &Path, round: usize, admin: &Mutex<Admin>, stop: &AtomicBool) {
    let dir = device.parent().expect("device directory");
    for i in 0..2 {
        let file = dir.join(format!("F{round}-{i}")).display().to_string();
        let space = format!("S{round}x{i}");
        let steps = [
            (format!("crdl {file} 0 300"), file.clone(), 0),
            (
                format!("qspc {space} {} 100 4 4 4 100 '' n 16", 50000 + round * 10 + i),
                space.clone(),
                1,
            ),
            (format!("qaddext {space} 8"), space.clone(), 2),
        ];
        for (command, what, kind) in steps {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let ok = Command::new(QMADMIN)
                .env("QMCONFIG", device)
                .env_remove("QM_SOCKET")
                .args(["--no-start", "-c", &command])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let mut a = admin.lock().unwrap();
            match kind {
                0 => a.crdl.push((what, ok)),
                1 => a.qspc.push((what, ok)),
                _ => a.qaddext.push((what, ok)),
            }
            if !ok {
                return;
            }
        }
    }
}

/// Runs the workload until the daemon stops (a cut, or `stop_after` acknowledged enqueues
/// followed by `daemon stop`); returns what the clients and the admin commands saw.
fn workload(
    env: &Env,
    round: usize,
    daemon: FaultyQmd,
    stop_after: Option<usize>,
    who: Clients,
) -> (Ledger, Admin) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let admin_seen = Arc::new(Mutex::new(Admin::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut clients = Vec::new();
    if let Clients::One = who {
        clients.push(rt.spawn(alternating(
            env.device.clone(),
            format!("r{round}a"),
            ledger.clone(),
        )));
    }
    for id in (0..4).filter(|_| matches!(who, Clients::Many)) {
        clients.push(rt.spawn(producer(
            env.device.clone(),
            format!("r{round}p{id}"),
            ledger.clone(),
        )));
    }
    if let Clients::Many = who {
        clients.push(rt.spawn(transactional_producer(
            env.device.clone(),
            format!("r{round}t"),
            ledger.clone(),
        )));
        for i in 0..3 {
            clients.push(rt.spawn(consumer(env.device.clone(), i != 0, ledger.clone())));
        }
    }
    let admin_thread = {
        let device = env.device.clone();
        let (seen, stop) = (admin_seen.clone(), stop.clone());
        std::thread::spawn(move || admin(&device, round, &seen, &stop))
    };
    if let Some(n) = stop_after {
        crate::app::eventually("traffic", || {
            let l = ledger.lock().unwrap();
            l.enqueued.len() >= n && l.dequeued.len() >= n / 4
        });
        stop.store(true, Ordering::Relaxed);
        env.c_no_start("daemon stop").ok();
    }
    // The cut (or the stop) ends the daemon; a minute without is a failure, not a wait.
    daemon.ended(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    admin_thread.join().expect("admin thread");
    rt.block_on(async {
        for c in clients {
            tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("client ends")
                .expect("client");
        }
    });
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    let admin = Arc::try_unwrap(admin_seen).ok().unwrap().into_inner().unwrap();
    (ledger, admin)
}

/// Everything the audit keeps from round to round.
#[derive(Default)]
struct Audit {
    /// Every acknowledged dequeue of every round, the drains' included: none may come back.
    gone: HashSet<String>,
    /// Every body ever sent, outside a transaction or in one asked to commit.
    sent: HashSet<String>,
    /// Every body enqueued in a transaction rolled back or never asked to commit.
    uncommitted: HashSet<String>,
    /// Admin work acknowledged so far: entries, spaces, spaces with their extra extent.
    entries: Vec<String>,
    spaces: Vec<String>,
    extended: Vec<String>,
}

impl Audit {
    fn check(&mut self, env: &Env, round: usize, ledger: &Ledger, admin: &Admin) {
        self.check_device(env, round, admin);
        self.check_messages(env, round, ledger);
    }

    /// The device list, the VTOC and the queue spaces agree, and acknowledged admin work is
    /// there; unacknowledged work is there whole or not at all.
    fn check_device(&mut self, env: &Env, round: usize, admin: &Admin) {
        let commands = admin.crdl.iter().chain(&admin.qspc).chain(&admin.qaddext);
        let cut: Vec<&String> = commands.filter(|(_, ok)| !ok).map(|(what, _)| what).collect();
        eprintln!("round {round}: admin commands cut: {cut:?}");
        let listing: DeviceListing = env.json("lidl");
        let vtoc: Vec<VtocEntry> = env.json("livtoc");
        let entry = |name: &str| listing.entries.iter().find(|e| e.entry.name == name);
        for (file, acked) in &admin.crdl {
            match entry(file) {
                Some(e) => {
                    assert_eq!((e.entry.start, e.entry.size), (0, 300), "round {round}: {file}")
                }
                None => assert!(!acked, "round {round}: acknowledged crdl {file} lost"),
            }
            if *acked || entry(file).is_some() {
                self.entries.push(file.clone());
            }
        }
        for file in &self.entries {
            assert!(entry(file).is_some(), "round {round}: entry {file} lost");
        }
        // Every extent lies in an entry, extents on one file do not overlap, and every space
        // named in the VTOC exists with exactly those extents.
        let file_of = |index: u8| {
            let e = &listing.entries.iter().find(|e| e.entry.index == index).unwrap_or_else(|| {
                panic!("round {round}: an extent on missing entry {index}: {vtoc:?}")
            });
            (e.entry.clone(), if index == 0 { env.dev() } else { e.entry.name.clone() })
        };
        let mut used: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for t in &vtoc {
            let (e, file) = file_of(t.device);
            assert!(
                t.offset >= e.start && t.offset + t.pages <= e.start + e.size,
                "round {round}: extent {t:?} outside entry {e:?}"
            );
            used.entry(file).or_default().push((t.offset, t.offset + t.pages));
        }
        for (file, mut runs) in used {
            runs.sort();
            assert!(
                runs.windows(2).all(|w| w[0].1 <= w[1].0),
                "round {round}: overlap on {file}: {runs:?}"
            );
        }
        let mut names: Vec<&str> =
            vtoc.iter().filter(|t| t.extent.is_some()).map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        for name in &names {
            let info: QueueSpaceInfo = env.json(&format!("qspl {name}"));
            let mut extents: Vec<u64> = vtoc
                .iter()
                .filter(|t| t.extent.is_some() && t.name == *name)
                .map(|t| t.pages)
                .collect();
            extents.sort();
            let mut listed: Vec<u64> = info.extents.iter().map(|t| t.pages).collect();
            listed.sort();
            assert_eq!(listed, extents, "round {round}: qspl {name} and livtoc disagree");
            assert!(std::path::Path::new(&info.file).exists(), "round {round}: {name} has no file");
        }
        let pages_of = |name: &str| -> Vec<u64> {
            let mut p: Vec<u64> = vtoc
                .iter()
                .filter(|t| t.extent.is_some() && t.name == name)
                .map(|t| t.pages)
                .collect();
            p.sort();
            p
        };
        for (space, acked) in &admin.qspc {
            let pages = pages_of(space);
            assert!(
                pages.is_empty() && !acked || pages == [100] || pages == [8, 100],
                "round {round}: {space} has extents {pages:?} (acknowledged: {acked})"
            );
            // Acknowledged, or found done although the cut came before the answer: done
            // for good either way.
            if *acked || !pages.is_empty() {
                self.spaces.push(space.clone());
            }
        }
        for (space, acked) in &admin.qaddext {
            let pages = pages_of(space);
            assert!(
                pages == [100] && !acked || pages == [8, 100],
                "round {round}: {space}: {pages:?}"
            );
            if pages == [8, 100] {
                self.extended.push(space.clone());
            }
        }
        for space in &self.spaces {
            let want: &[u64] = if self.extended.contains(space) { &[8, 100] } else { &[100] };
            assert_eq!(pages_of(space), want, "round {round}: {space}");
        }
        // A queue space made by an unacknowledged qspc is whole: it opens and takes a queue.
        for space in names.iter().filter(|n| n.starts_with('S')) {
            env.c_no_start(&format!("qopen {space}; qcr Q fifo none 0 0 100% 0% ''; qds -y Q"))
                .ok();
        }
    }

    /// Drains Q and checks what came back against what the clients saw.
    fn check_messages(&mut self, env: &Env, round: usize, l: &Ledger) {
        assert!(
            l.answered_errors.is_empty(),
            "round {round}: qmd answered errors before it ended: {:?}",
            l.answered_errors
        );
        self.sent.extend(l.enqueued.keys().cloned());
        self.sent.extend(l.enqueue_unknown.iter().cloned());
        self.uncommitted.extend(l.uncommitted.iter().cloned());
        let info: QueueListing = env.json("qopen QS; qinfo Q");
        let counted = info.queues[0].usage.messages();
        let found = drain(env);
        assert_eq!(counted, found.len() as u64, "round {round}: qinfo counted {counted}");
        let mut seen = HashSet::new();
        for (body, _) in &found {
            assert!(seen.insert(body.clone()), "round {round}: {body} came back twice");
            assert!(
                !self.uncommitted.contains(body),
                "round {round}: {body} was enqueued in a transaction never committed, yet it is there"
            );
            assert!(self.sent.contains(body), "round {round}: {body} was never sent");
            assert!(
                !self.gone.contains(body) && !l.dequeued.contains(body),
                "round {round}: {body} was dequeued and acknowledged, yet came back"
            );
        }
        // A missing acknowledged message is allowed only as what the cut plain dequeue took:
        // the head of the queue when it was sent, so older than every message left that was
        // acknowledged before and that no transaction touched, but for those the cut
        // transactional dequeues may have held then (one each).
        let missing: Vec<(&String, &MsgId)> = l
            .enqueued
            .iter()
            .filter(|(b, _)| !seen.contains(*b) && !l.dequeued.contains(*b))
            .filter(|(b, _)| !l.dequeue_unknown.contains(*b))
            .map(|(b, (id, _))| (b, id))
            .collect();
        let Some(since) = l.plain_in_flight else {
            assert!(missing.is_empty(), "round {round}: acknowledged messages lost: {missing:?}");
            return self.forget(round, l, found);
        };
        assert!(missing.len() <= 1, "round {round}: acknowledged messages lost: {missing:?}");
        let mut older: Vec<&MsgId> = found
            .iter()
            .filter(|(b, _)| !l.in_transactions.contains(b))
            .filter(|(b, _)| l.enqueued.get(b).is_some_and(|(_, at)| *at < since))
            .map(|(_, id)| id)
            .collect();
        older.sort();
        let older_than = older.get(l.transactional_in_flight);
        for (body, id) in &missing {
            assert!(
                older_than.is_none_or(|left| id < left),
                "round {round}: acknowledged {body} lost, and it was not the head of the queue \
                 ({} transactional dequeues cut; the oldest left: {:?})",
                l.transactional_in_flight,
                &older[..older.len().min(3)]
            );
        }
        self.forget(round, l, found);
    }

    /// Adds what this round dequeued and drained to what may never come back.
    fn forget(&mut self, round: usize, l: &Ledger, found: Vec<(String, MsgId)>) {
        self.gone.extend(l.dequeued.iter().cloned());
        self.gone.extend(found.into_iter().map(|(b, _)| b));
        eprintln!(
            "round {round}: {} enqueues and {} dequeues acknowledged, {} entries and {} spaces made",
            l.enqueued.len(),
            l.dequeued.len(),
            self.entries.len(),
            self.spaces.len()
        );
    }
}

/// Takes every message of Q, each acknowledged.
fn drain(env: &Env) -> Vec<(String, MsgId)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Client::connect_device(&env.device, "drain").await.expect("connect");
        let mut found = Vec::new();
        loop {
            match c.dequeue("QS", "Q", &DequeueCtl::default()).await {
                Ok(m) => found.push((String::from_utf8(m.body).unwrap(), m.msgid)),
                Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => return found,
                Err(e) => panic!("drain failed: {e}"),
            }
        }
    })
}

/// Cuts at points spread over the workload: first a round that counts its storage steps
/// and stops cleanly, then a cut while qmd opens the device, then cuts at fractions of that
/// count.
#[test]
fn power_cuts_lose_nothing_acknowledged() {
    power_cuts("", &[], Clients::Many);
}

/// The same with one client, whose writes its session commits itself.
#[test]
fn power_cuts_with_one_client_lose_nothing_acknowledged() {
    power_cuts("", &[], Clients::One);
}

/// The same with bodies kept in redb (`QM_BODY_LOG=0`) rather than in body segments.
#[test]
fn power_cuts_with_bodies_in_redb_lose_nothing_acknowledged() {
    power_cuts("+checkpoints", &[("QM_BODY_LOG", "0")], Clients::Many);
}

/// The same with a checkpoint after every group of writes, so that cuts fall inside
/// checkpoints (the durable redb commit, the journal starting again) as often as not.
#[test]
fn power_cuts_during_checkpoints_lose_nothing_acknowledged() {
    power_cuts("+checkpoints", &[], Clients::Many);
}

/// Cuts the power at points spread over a workload; `mode` is added to each `QM_FAULT`.
fn power_cuts(mode: &str, vars: &[(&str, &str)], who: Clients) {
    let env = Env::new();
    let dev = env.dev();
    // Entry 0 has no room left past QS, so the queue spaces of the admin work go to the
    // entries it creates.
    env.c(&format!(
        "crdl {dev} 0 10085; qspc QS 40000 10000 4 64 64 100000 '' n 16; qopen QS; qcr Q fifo none 1000 0 100% 0% ''"
    ))
    .ok();
    crate::faults::stop_and_wait(&env);
    let mut audit = Audit::default();

    let count = env.path("steps");
    let log = env.path("qmd-0.err");
    let daemon =
        FaultyQmd::start_with(&env, &format!("count:{}{mode}", count.display()), &log, vars)
            .expect("qmd");
    let (ledger, admin) = workload(&env, 0, daemon, Some(300), who);
    let total: u64 = std::fs::read_to_string(&count).unwrap().trim().parse().unwrap();
    let restarted = Daemon::start(&env.device, &[]);
    audit.check(&env, 0, &ledger, &admin);
    crate::faults::stop_and_wait(&env);
    drop(restarted);

    // Step 2 falls in the recovery of the device as qmd opens it; the others in the traffic.
    let fractions = [1, 3, 6, 10, 20, 35, 50, 65, 80, 100];
    let cuts = std::iter::once(2).chain(fractions.iter().map(|pct| (total * pct / 100).max(3)));
    for (i, n) in cuts.into_iter().enumerate() {
        let round = i + 1;
        let log = env.path(&format!("qmd-{round}.err"));
        let fault = format!("powercut:{n}{mode}");
        let (ledger, admin) = match FaultyQmd::start_with(&env, &fault, &log, vars) {
            Some(daemon) => workload(&env, round, daemon, None, who),
            None => (Ledger::default(), Admin::default()),
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains(&format!("power cut at storage step {n}\n")),
            "round {round}: qmd ended without the power cut at step {n}:\n{text}"
        );
        let restarted = Daemon::start(&env.device, &[]);
        audit.check(&env, round, &ledger, &admin);
        crate::faults::stop_and_wait(&env);
        drop(restarted);
    }
}
