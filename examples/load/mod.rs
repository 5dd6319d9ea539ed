//! What the benchmarks share: the queue they load, qmadmin commands run in-process, and the
//! closed loop of durable enqueue+dequeue pairs that every figure counts.

#![allow(dead_code)]

use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const QSPACE: &str = "BENCH";
pub const QUEUE: &str = "Q";
pub const BODY: usize = 1024;

/// Runs qmadmin `commands` in this process against the daemon at `socket`; they must succeed.
pub fn admin(device: &Path, socket: &Path, commands: &str) {
    let options = qm_shell::options::Options::script(device, socket, commands);
    let input = qm_shell::input::StreamInput::new(std::io::Cursor::new(String::new()), true);
    assert_eq!(qm_shell::run(options, Box::new(input), Default::default()), 0, "admin: {commands}");
}

/// Each client enqueues a 1 KiB body on BENCH/Q and dequeues one, over and over, for `secs`;
/// returns the pairs per second they made together.
pub async fn client_pairs(clients: Vec<Client>, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut c in clients {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; BODY];
            let (enq, deq) = (EnqueueCtl::default(), DequeueCtl::default());
            while !stop.load(Ordering::Relaxed) {
                c.enqueue(QSPACE, QUEUE, &body, &enq).await.expect("enqueue");
                c.dequeue(QSPACE, QUEUE, &deq).await.expect("dequeue");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.expect("client");
    }
    count as f64 / elapsed
}
