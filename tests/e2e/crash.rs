//! Crash safety: `qmd` is killed with SIGKILL in the middle of concurrent enqueues,
//! dequeues and transactional dequeues, three times; after each restart the queue is drained
//! and audited against what the clients were told.
//!
//! # What the audit proves
//!
//! Every message body is unique, and the drain after each restart empties the queue, so a
//! message of an earlier round never has a reason to be seen again. After each restart:
//!
//! * Everything the drain finds was sent in this round, once. A body of an earlier round
//!   came back: after a consumer's or the drain's acknowledged dequeue, or after it was
//!   found gone at an earlier restart.
//! * Nothing the drain finds was dequeued with an acknowledgement (plain, or committed).
//! * An acknowledged enqueue is found, or was dequeued with an acknowledgement, or its
//!   transactional dequeue's commit was in flight at the kill (it may have happened), or it
//!   is *missing*. A missing message can only have been taken by a plain dequeue in flight
//!   at the kill: there are at most as many missing messages as such dequeues.
//! * A missing message `m` was the head of the fifo queue when that dequeue ran: every
//!   message ahead of it was then gone or held by a transaction. A message `s` found by the
//!   drain is certainly ahead of `m` when its enqueue was acknowledged before `m`'s was sent;
//!   `s` was never gone (it is still there), so it was held: by a consumer's transaction (the
//!   ledger knows every message those got), or by another dequeue in flight at the kill,
//!   whose effect the crash undid (the ledger cannot name those messages, but each such
//!   dequeue held at most one). So at most (dequeues in flight - 1) found messages that no
//!   transaction of the ledger held may be certainly ahead of a missing one. A lost message
//!   in the middle of the queue has hundreds of them.
//!
//! A last kill and restart after the third round checks that the drain's own dequeues
//! stayed done: the queue must be empty.
//!
//! A request counts as in flight only when its connection was lost: an error qmd answered
//! (it was not killed yet) fails the audit rather than excusing a missing message.

use crate::support::{Daemon, Env};
use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients of one round were told, with a logical clock that orders the moments
/// they sent requests and received answers.
#[derive(Default)]
struct Ledger {
    clock: u64,
    /// Every enqueue sent: when it was sent, and when it was acknowledged if it was.
    enqueued: HashMap<String, (u64, Option<u64>)>,
    /// Dequeues acknowledged (plain, or committed in a transaction): must not come back.
    dequeued: HashSet<String>,
    /// Transactional dequeues whose commit was sent but not acknowledged: may be gone.
    commit_unknown: HashSet<String>,
    /// Every message a consumer's transaction got (committed, rolled back, or unknown).
    held: HashSet<String>,
    /// Plain dequeues sent but not answered: each may have taken a message.
    plain_in_flight: usize,
    /// Transactional dequeues sent but not answered: each may have held a message.
    held_in_flight: usize,
    /// Errors the daemon answered (not a lost connection): none is expected, and a request
    /// that was answered was not in flight at the kill.
    answered_errors: Vec<String>,
}

impl Ledger {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn enqueue_acked(&self, body: &str) -> Option<u64> {
        self.enqueued.get(body).and_then(|(_, acked)| *acked)
    }
}

type Shared = Arc<Mutex<Ledger>>;

/// Whether `e` is the connection failing (the kill), as opposed to an answer from qmd.
fn connection_lost(e: &qm_common::QmError) -> bool {
    e.diagnostic == qm_common::Diagnostic::Os
        && (e.message.starts_with("connection to qmd lost")
            || e.message == "qmd closed the connection")
}

/// Ends a client on error `e`: a lost connection is the kill (`in_flight` counts what the
/// request may have done); an answered error is recorded for the audit to fail on.
fn ended(ledger: &Shared, e: &qm_common::QmError, what: &str, in_flight: impl FnOnce(&mut Ledger)) {
    let mut l = ledger.lock().unwrap();
    if connection_lost(e) {
        in_flight(&mut l);
    } else {
        l.answered_errors.push(format!("{what}: {e}"));
    }
}

async fn producer(device: std::path::PathBuf, id: usize, ledger: Shared) {
    let Ok(mut c) = Client::connect_device(&device, "producer").await else { return };
    for n in 0.. {
        let body = format!("p{id}-{n}");
        {
            let mut l = ledger.lock().unwrap();
            let sent = l.tick();
            l.enqueued.insert(body.clone(), (sent, None));
        }
        match c.enqueue("QS", "Q", body.as_bytes(), &EnqueueCtl::default()).await {
            Ok(_) => {
                let mut l = ledger.lock().unwrap();
                let acked = l.tick();
                l.enqueued.get_mut(&body).expect("sent").1 = Some(acked);
            }
            Err(e) => return ended(&ledger, &e, "enqueue", |_| {}),
        }
    }
}

async fn consumer(device: std::path::PathBuf, transactional: bool, ledger: Shared) {
    let Ok(mut c) = Client::connect_device(&device, "consumer").await else { return };
    let ctl = DequeueCtl { wait_ms: Some(50), ..DequeueCtl::default() };
    loop {
        if transactional && let Err(e) = c.begin("QS", None).await {
            return ended(&ledger, &e, "begin", |_| {});
        }
        let got = match c.dequeue("QS", "Q", &ctl).await {
            Ok(m) => Some(String::from_utf8(m.body).unwrap()),
            Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => None,
            Err(e) => {
                return ended(&ledger, &e, "dequeue", |l| {
                    if transactional {
                        l.held_in_flight += 1;
                    } else {
                        l.plain_in_flight += 1;
                    }
                });
            }
        };
        if !transactional {
            if let Some(body) = got {
                ledger.lock().unwrap().dequeued.insert(body);
            }
            continue;
        }
        if let Some(body) = &got {
            ledger.lock().unwrap().held.insert(body.clone());
        }
        // Roll back every third message so retries are in flight too.
        let abort = got.as_ref().is_some_and(|b| b.len() % 3 == 0);
        let finished = if abort { c.abort().await } else { c.commit().await };
        match (finished, got) {
            (Ok(()), Some(body)) if !abort => {
                ledger.lock().unwrap().dequeued.insert(body);
            }
            (Err(e), Some(body)) if !abort => {
                return ended(&ledger, &e, "commit", |l| {
                    l.commit_unknown.insert(body);
                });
            }
            (Err(e), _) => return ended(&ledger, &e, "abort", |_| {}),
            _ => {}
        }
    }
}

/// Dequeues everything (each dequeue acknowledged); the bodies in queue order.
fn drain(env: &Env) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c =
            Client::connect_device(&env.device, "drain").await.expect("connect after restart");
        let mut seen = Vec::new();
        let ctl = DequeueCtl::default();
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(60), c.dequeue("QS", "Q", &ctl));
            match answer.await.expect("the drain's dequeue got no answer within 60 s") {
                Ok(m) => seen.push(String::from_utf8(m.body).unwrap()),
                Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => return seen,
                Err(e) => panic!("drain failed: {e}"),
            }
        }
    })
}

/// Bodies of earlier rounds, each with why it must never be seen again.
type Gone = HashMap<String, String>;

/// Checks what the drain after round `round` found against the round's ledger and every
/// earlier round; then records this round's bodies as gone.
fn audit(round: usize, found: &[String], l: &Ledger, gone: &mut Gone) {
    assert!(
        l.answered_errors.is_empty(),
        "round {round}: qmd answered errors before the kill: {:?}",
        l.answered_errors
    );
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for body in found {
        *counts.entry(body).or_default() += 1;
    }
    for (body, count) in &counts {
        assert_eq!(*count, 1, "round {round}: {body} came back {count} times");
        if let Some(why) = gone.get(*body) {
            panic!("round {round}: {body} came back, though {why}");
        }
        assert!(l.enqueued.contains_key(*body), "round {round}: {body} was never sent");
        assert!(
            !l.dequeued.contains(*body),
            "round {round}: {body} was dequeued and acknowledged, yet came back"
        );
    }
    let missing: Vec<&String> = l
        .enqueued
        .keys()
        .filter(|b| l.enqueue_acked(b).is_some())
        .filter(|b| {
            !l.dequeued.contains(*b)
                && !l.commit_unknown.contains(*b)
                && !counts.contains_key(b.as_str())
        })
        .collect();
    assert!(
        missing.len() <= l.plain_in_flight,
        "round {round}: acknowledged messages lost: {missing:?} (only {} plain dequeues were in flight)",
        l.plain_in_flight
    );
    let in_flight = l.plain_in_flight + l.held_in_flight;
    for m in &missing {
        let sent = l.enqueued[*m].0;
        let ahead: Vec<&String> = found
            .iter()
            .filter(|s| !l.held.contains(*s))
            .filter(|s| l.enqueue_acked(s).is_some_and(|acked| acked < sent))
            .collect();
        assert!(
            ahead.len() < in_flight,
            "round {round}: {m} is missing, but it was not the head of the queue: {} messages \
             no transaction held were ahead of it ({:?}...), and only {in_flight} dequeues were \
             in flight",
            ahead.len(),
            &ahead[..ahead.len().min(5)]
        );
    }
    for body in l.enqueued.keys() {
        let why = if counts.contains_key(body.as_str()) {
            format!("the drain after round {round} took it")
        } else if l.dequeued.contains(body) {
            format!("its dequeue was acknowledged in round {round}")
        } else {
            format!("it was not there after round {round}'s restart")
        };
        gone.insert(body.clone(), why);
    }
    eprintln!(
        "round {round}: {} enqueues and {} dequeues acknowledged before the kill, {} found after it, {} missing ({} plain and {} transactional dequeues in flight)",
        l.enqueued.values().filter(|(_, a)| a.is_some()).count(),
        l.dequeued.len(),
        found.len(),
        missing.len(),
        l.plain_in_flight,
        l.held_in_flight
    );
}

/// Three rounds of traffic, SIGKILL, restart and audit; then a last kill and restart.
#[test]
fn sigkill_loses_and_duplicates_nothing() {
    let env = Env::new();
    let dev = env.dev();
    let log = env.path("qmd.log").display().to_string();
    let debug: Vec<&str> = if std::env::var_os("QM_CRASH_DEBUG").is_some() {
        vec!["-l", "4", "-g", &log]
    } else {
        vec![]
    };
    let mut daemon = env.start_daemon(&debug);
    env.c(&format!(
        "crdl {dev} 0 20000; qspc QS 40000 10000 4 64 64 100000 \"\" n 16; qopen QS; qcr Q fifo none 1000 0 100% 0% \"\""
    ))
    .ok();
    let mut gone = Gone::new();
    for round in 0..3 {
        let ledger = Shared::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut clients = Vec::new();
        for id in 0..6 {
            clients.push(rt.spawn(producer(env.device.clone(), round * 100 + id, ledger.clone())));
        }
        for i in 0..4 {
            clients.push(rt.spawn(consumer(env.device.clone(), i % 2 == 0, ledger.clone())));
        }
        // Let traffic build up, then kill without warning.
        let busy = crate::support::wait_until(Duration::from_secs(30), || {
            let l = ledger.lock().unwrap();
            l.enqueued.len() > 300 && l.dequeued.len() > 100
        });
        assert!(busy, "traffic did not start");
        daemon.signal("KILL");
        // Every client must see its connection fail and record what was in flight.
        rt.block_on(async {
            for c in clients {
                tokio::time::timeout(Duration::from_secs(30), c)
                    .await
                    .expect("a client still waits for the killed daemon")
                    .expect("client");
            }
        });
        daemon = Daemon::start(&env.device, &debug);
        let found = drain(&env);
        audit(round, &found, &ledger.lock().unwrap(), &mut gone);
    }
    // The last drain's dequeues were acknowledged: nothing may come back after a crash.
    daemon.signal("KILL");
    let _daemon = Daemon::start(&env.device, &debug);
    let back: Vec<(String, String)> = drain(&env)
        .into_iter()
        .map(|b| {
            let why = gone.get(&b).cloned().unwrap_or_else(|| "it was never sent".into());
            (b, why)
        })
        .collect();
    assert!(back.is_empty(), "messages came back after the last restart: {back:?}");
}
