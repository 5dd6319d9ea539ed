//! Crash safety: `qmd` is killed with SIGKILL in the middle of concurrent enqueues,
//! dequeues and transactional dequeues; after a restart every acknowledged message is
//! present exactly once, no acknowledged dequeue comes back, and nothing that was never
//! sent appears.

use crate::support::{Daemon, Env};
use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients saw before the crash.
#[derive(Default)]
struct Ledger {
    /// Enqueue acknowledged: the message must survive (unless acknowledged as dequeued).
    enqueued: HashSet<String>,
    /// Enqueue sent but not acknowledged: may or may not survive.
    enqueue_unknown: HashSet<String>,
    /// Dequeue acknowledged (outside or committed in a transaction): must not come back.
    dequeued: HashSet<String>,
    /// Commit of a transactional dequeue sent but not acknowledged: may or may not be gone.
    dequeue_unknown: HashSet<String>,
    /// Plain dequeues sent but not acknowledged: each may have taken one message we cannot name.
    plain_in_flight: usize,
}

async fn producer(device: std::path::PathBuf, id: usize, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "producer").await else { return };
    for n in 0.. {
        let body = format!("p{id}-{n}");
        ledger.lock().unwrap().enqueue_unknown.insert(body.clone());
        match c.enqueue("QS", "Q", body.as_bytes(), &EnqueueCtl::default()).await {
            Ok(id) => {
                if std::env::var_os("QM_CRASH_DEBUG").is_some() {
                    eprintln!("acked {body} {id}");
                }
                let mut l = ledger.lock().unwrap();
                l.enqueue_unknown.remove(&body);
                l.enqueued.insert(body);
            }
            Err(_) => return,
        }
    }
}

async fn consumer(device: std::path::PathBuf, transactional: bool, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut c) = Client::connect_device(&device, "consumer").await else { return };
    let ctl = DequeueCtl { wait_ms: Some(50), ..DequeueCtl::default() };
    loop {
        if transactional && c.begin("QS", None).await.is_err() {
            return;
        }
        let got = match c.dequeue("QS", "Q", &ctl).await {
            Ok(m) => Some(String::from_utf8(m.body).unwrap()),
            Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => None,
            Err(_) => {
                if !transactional {
                    ledger.lock().unwrap().plain_in_flight += 1;
                }
                return;
            }
        };
        if transactional {
            // Roll back every third message so retries are in flight too.
            let abort = got.as_ref().is_some_and(|b| b.len() % 3 == 0);
            let ended = if abort { c.abort().await } else { c.commit().await };
            match (ended, got) {
                (Ok(()), Some(body)) if !abort => {
                    ledger.lock().unwrap().dequeued.insert(body);
                }
                (Err(_), Some(body)) if !abort => {
                    ledger.lock().unwrap().dequeue_unknown.insert(body);
                    return;
                }
                (Err(_), _) => return,
                _ => {}
            }
        } else if let Some(body) = got {
            ledger.lock().unwrap().dequeued.insert(body);
        }
    }
}

fn drain(env: &Env) -> HashMap<String, usize> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c =
            Client::connect_device(&env.device, "drain").await.expect("connect after restart");
        let mut seen = HashMap::new();
        loop {
            match c.dequeue("QS", "Q", &DequeueCtl::default()).await {
                Ok(m) => *seen.entry(String::from_utf8(m.body).unwrap()).or_insert(0) += 1,
                Err(e) if e.diagnostic == qm_common::Diagnostic::NoMsg => return seen,
                Err(e) => panic!("drain failed: {e}"),
            }
        }
    })
}

/// Three rounds of traffic, SIGKILL, restart and audit.
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
    let mut survivors: HashSet<String> = HashSet::new();
    for round in 0..3 {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
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
        let busy = crate::support::wait_until(Duration::from_secs(10), || {
            let l = ledger.lock().unwrap();
            l.enqueued.len() > 300 && l.dequeued.len() > 100
        });
        assert!(busy, "traffic did not start");
        daemon.signal("KILL");
        // Every client must see its connection fail and record what was in flight.
        rt.block_on(async {
            for c in clients {
                tokio::time::timeout(Duration::from_secs(10), c)
                    .await
                    .expect("client ends")
                    .expect("client");
            }
        });
        daemon = Daemon::start(&env.device, &debug);
        let found = drain(&env);
        let l = ledger.lock().unwrap();
        for (body, count) in &found {
            assert_eq!(*count, 1, "round {round}: {body} came back {count} times");
            let known = l.enqueued.contains(body)
                || l.enqueue_unknown.contains(body)
                || survivors.contains(body);
            assert!(known, "round {round}: {body} was never sent");
            assert!(
                !l.dequeued.contains(body),
                "round {round}: {body} was dequeued and acknowledged, yet came back"
            );
        }
        let missing: Vec<&String> = l
            .enqueued
            .iter()
            .filter(|b| {
                !l.dequeued.contains(*b)
                    && !found.contains_key(*b)
                    && !l.dequeue_unknown.contains(*b)
            })
            .collect();
        if missing.len() > l.plain_in_flight && std::env::var_os("QM_CRASH_DEBUG").is_some() {
            let _ = std::fs::copy(&log, "/tmp/crash-qmd.log");
        }
        assert!(
            missing.len() <= l.plain_in_flight,
            "round {round}: acknowledged messages lost: {missing:?} ({} plain dequeues were in flight); log {log}",
            l.plain_in_flight
        );
        // What survived is drained now; the next round starts from an empty queue.
        survivors.extend(found.into_keys());
        eprintln!(
            "round {round}: {} enqueues and {} dequeues acknowledged before the kill",
            l.enqueued.len(),
            l.dequeued.len()
        );
    }
    drop(daemon);
}
