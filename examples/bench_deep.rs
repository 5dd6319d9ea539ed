//! The client side of `bench/deep.sh` that `bench_peers` has no part for: filling queue
//! BENCH/Q of a running `qmd` to a depth, and timing the first request that loads BENCH
//! after a restart.
//!
//! ```text
//! bench_deep fill SOCKET N     enqueues N messages of 1 KiB, 1,000 per transaction, from 8
//!                              clients; prints progress about every 10 % and a last line
//! bench_deep open SOCKET       connects, then times the first request naming BENCH (a
//!                              `begin`, rolled back at once); prints its seconds
//! ```
//!
//! `open` times a request rather than `qmadmin -c "qopen BENCH"`: both load the queue space
//! the same way (the daemon's first request naming a queue space reads it in), but the
//! request leaves out qmadmin's own start and connection. The 64-client pairs at depth are
//! `bench_peers qm`, the same closed loop as on the empty queue.

mod load;

use qm_common::client::Client;
use qm_common::protocol::ClientKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FILL_CLIENTS: usize = 8;

async fn connect(socket: &Path) -> Client {
    Client::connect(socket, "bench", ClientKind::Application).await.expect("connect to qmd")
}

/// Fills BENCH/Q with `n` messages, printing the rate at every tenth of the way.
async fn fill(socket: &Path, n: u64) {
    let mut clients = Vec::new();
    for _ in 0..FILL_CLIENTS {
        clients.push(connect(socket).await);
    }
    let queued = Arc::new(AtomicU64::new(0));
    let filling = tokio::spawn(load::fill(clients, n, queued.clone()));
    let start = Instant::now();
    let step = n.div_ceil(10).max(1);
    let (mut next, mut last_count, mut last_time) = (step, 0, start);
    // The longest time no transaction was acknowledged, to 20 ms: how long qmd paused.
    let (mut seen, mut moved, mut pause) = (0, start, Duration::ZERO);
    while !filling.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = queued.load(Ordering::Relaxed);
        if done > seen {
            (seen, moved) = (done, Instant::now());
        }
        pause = pause.max(moved.elapsed());
        if done >= next && done < n {
            let now = Instant::now();
            let recent = (done - last_count) as f64 / (now - last_time).as_secs_f64();
            let overall = done as f64 / (now - start).as_secs_f64();
            println!(
                "  {:>3} %  {done:>11} queued  {:>7.1} s  {recent:>8.0} msgs/s lately, \
                 {overall:>8.0} overall",
                done * 100 / n,
                (now - start).as_secs_f64(),
            );
            (last_count, last_time) = (done, now);
            next = (done / step + 1) * step;
        }
    }
    filling.await.expect("fill");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  filled {n} messages in {secs:.1} s: {:.0} msgs/s, longest pause {:.2} s",
        n as f64 / secs,
        pause.as_secs_f64()
    );
}

/// Seconds the first request naming BENCH takes on a fresh connection.
async fn open(socket: &Path) -> f64 {
    let mut c = connect(socket).await;
    let start = Instant::now();
    c.begin(load::QSPACE, None).await.expect("begin on BENCH");
    let secs = start.elapsed().as_secs_f64();
    c.abort().await.expect("abort");
    secs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match &args[..] {
        [what, socket, n] if what == "fill" => {
            let n = n.parse().expect("N: a number of messages");
            rt.block_on(fill(Path::new(socket), n));
        }
        [what, socket] if what == "open" => {
            println!("{:.3}", rt.block_on(open(Path::new(socket))));
        }
        _ => {
            eprintln!("usage: bench_deep fill SOCKET N | open SOCKET");
            std::process::exit(2);
        }
    }
}
