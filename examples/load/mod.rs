//! What the benchmarks share: the queue they load, qmadmin commands run in-process, and the
//! closed loop of durable enqueue+dequeue pairs that every figure counts.

#![allow(dead_code)]

use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const QSPACE: &str = "BENCH";
pub const QUEUE: &str = "Q";

/// The queue of BENCH the qm clients load: `BENCH_QUEUE` if set (bench/purge.sh fills two
/// and loads a third), else [`QUEUE`].
fn queue() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var("BENCH_QUEUE").unwrap_or_else(|_| QUEUE.to_string()))
}
pub const BODY: usize = 1024;

/// Runs qmadmin `commands` in this process against the daemon at `socket`; they must succeed.
pub fn admin(device: &Path, socket: &Path, commands: &str) {
    let options = qm_shell::options::Options::script(device, socket, commands);
    let input = qm_shell::input::StreamInput::new(std::io::Cursor::new(String::new()), true);
    assert_eq!(qm_shell::run(options, Box::new(input), Default::default()), 0, "admin: {commands}");
}

/// What closed-loop clients share: the flag that stops them and the pairs they made.
#[derive(Clone, Default)]
pub struct Tally {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    /// The longest one pair took, in microseconds: the longest any client waited.
    longest_us: Arc<AtomicU64>,
}

impl Tally {
    /// Whether the clients should go on.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Counts one enqueue+dequeue pair.
    pub fn pair(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one pair that took `took`.
    pub fn pair_took(&self, took: Duration) {
        self.pair();
        self.longest_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The longest a pair took so far.
    pub fn longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.load(Ordering::Relaxed))
    }

    /// Lets the clients run for `secs` (they have started), stops them and returns their
    /// pairs per second; the caller then waits for them to end.
    pub async fn measure(&self, secs: f64) -> f64 {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        self.stop_and_rate(start)
    }

    /// [`Tally::measure`] for clients on threads.
    pub fn measure_blocking(&self, secs: f64) -> f64 {
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.stop_and_rate(start)
    }

    fn stop_and_rate(&self, start: Instant) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    }
}

/// One connection that makes durable enqueue+dequeue pairs: qm's client here, the servers
/// qm is compared with in `bench_peers`.
pub trait Pairs: Send + 'static {
    /// Enqueues `body` and dequeues one message, each acknowledged once durable.
    fn pair(&mut self, body: &[u8]) -> impl Future<Output = ()> + Send;
}

impl Pairs for Client {
    async fn pair(&mut self, body: &[u8]) {
        self.enqueue(QSPACE, queue(), body, &EnqueueCtl::default()).await.expect("enqueue");
        self.dequeue(QSPACE, queue(), &DequeueCtl::default()).await.expect("dequeue");
    }
}

/// Each client makes pairs with a 1 KiB body, over and over, for `secs`; returns the pairs
/// per second they made together.
pub async fn closed_loop<P: Pairs>(clients: Vec<P>, secs: f64) -> f64 {
    let tally = Tally::default();
    let mut tasks = Vec::new();
    for mut c in clients {
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; BODY];
            let mut took_us = Vec::with_capacity(1 << 16);
            while tally.running() {
                let started = Instant::now();
                c.pair(&body).await;
                let took = started.elapsed();
                tally.pair_took(took);
                took_us.push(took.as_micros() as u32);
            }
            took_us
        }));
    }
    // BENCH_TIMELINE=1: the longest pair of each half second, on standard error, to see
    // when clients waited (during a backup, say).
    let timeline = std::env::var_os("BENCH_TIMELINE").map(|_| {
        let tally = tally.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut seen = Duration::ZERO;
            while tally.running() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let longest = tally.longest();
                if longest > seen {
                    eprintln!(
                        "{:6.1} s: a pair took {:.1} ms",
                        start.elapsed().as_secs_f64(),
                        longest.as_secs_f64() * 1000.0
                    );
                    seen = longest;
                }
            }
        })
    });
    let rate = tally.measure(secs).await;
    let mut took_us = Vec::new();
    for t in tasks {
        took_us.extend(t.await.expect("client"));
    }
    if let Some(t) = timeline {
        t.abort();
    }
    // On standard error, so that standard output stays the one figure scripts read.
    eprintln!("{}", percentiles(&mut took_us));
    eprintln!("longest pair: {:.1} ms", tally.longest().as_secs_f64() * 1000.0);
    rate
}

/// The p50, p99 and p99.9 of the pairs' times (in microseconds), as a line to print: the
/// longest alone says little about how often clients wait that long.
fn percentiles(took_us: &mut [u32]) -> String {
    if took_us.is_empty() {
        return "no pair finished".to_string();
    }
    took_us.sort_unstable();
    let at = |p: f64| {
        let i = ((took_us.len() as f64 * p) as usize).min(took_us.len() - 1);
        f64::from(took_us[i]) / 1000.0
    };
    format!(
        "pairs {}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        took_us.len(),
        at(0.5),
        at(0.99),
        at(0.999)
    )
}

/// [`closed_loop`] of qm clients on BENCH/Q (or `BENCH_QUEUE`).
pub async fn client_pairs(clients: Vec<Client>, secs: f64) -> f64 {
    closed_loop(clients, secs).await
}

/// Messages per transaction when a queue is filled ahead of a run.
pub const FILL_PER_TXN: u64 = 1000;

/// Enqueues `n` messages of 1 KiB on BENCH/Q (or `BENCH_QUEUE`), the clients sharing them out evenly, each
/// committing [`FILL_PER_TXN`] per transaction; `queued` counts the messages committed so
/// far, for whoever reports progress.
pub async fn fill(clients: Vec<Client>, n: u64, queued: Arc<AtomicU64>) {
    let count = clients.len() as u64;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let share = n / count + u64::from((i as u64) < n % count);
        let queued = queued.clone();
        tasks.push(tokio::spawn(async move {
            let (body, queue) = (vec![b'p'; BODY], queue());
            let mut left = share;
            while left > 0 {
                let batch = left.min(FILL_PER_TXN);
                c.begin(QSPACE, Some(600)).await.expect("begin");
                for _ in 0..batch {
                    c.enqueue(QSPACE, queue, &body, &EnqueueCtl::default()).await.expect("fill");
                }
                c.commit().await.expect("commit");
                queued.fetch_add(batch, Ordering::Relaxed);
                left -= batch;
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill");
    }
}

/// Runs a daemon with `settings` in this process (two worker threads, as on the two-core
/// machine the figures come from) and returns once its socket is there.
pub fn start_daemon(device: &Path, socket: &Path, settings: qm_daemon::server::Settings) {
    let (d, s) = (device.to_path_buf(), socket.to_path_buf());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(qm_daemon::server::serve_with(d, s, settings))
    });
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}
