//! Benchmark of durable enqueue+dequeue through the real daemon and the real socket.
//!
//! Run with `cargo run --release --example bench` (add `-- --quick` for a short run, or
//! `-- --deep N` to queue N messages instead of 1,000,000 for the second half). A daemon
//! runs in this process on its own runtime, serving a device in a temporary directory on the
//! same disk as `/tmp`; clients connect over its Unix socket, each on its own connection.
//! Every enqueue and every dequeue is its own durable transaction (one fsync per batch of
//! concurrent requests: group commit). Bodies are 1 KiB.
//!
//! Figures: messages per second (one message = one enqueue plus one dequeue) for 1, 8 and
//! 64 concurrent clients; single-client enqueue latency p50/p99; then the same with
//! 1,000,000 messages queued.

use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use qm_common::protocol::ClientKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod load;

use load::{BODY, QSPACE, QUEUE};

struct Setup {
    socket: PathBuf,
    device: PathBuf,
}

/// Pairs per second with `clients` concurrent clients for `secs`.
async fn throughput(setup: &Setup, clients: usize, secs: f64) -> f64 {
    let mut all = Vec::new();
    for _ in 0..clients {
        all.push(client(setup).await);
    }
    load::client_pairs(all, secs).await
}

fn admin(setup: &Setup, commands: &str) {
    load::admin(&setup.device, &setup.socket, commands);
}

async fn client(setup: &Setup) -> Client {
    Client::connect(&setup.socket, "bench", ClientKind::Application).await.expect("connect")
}

/// Single-client enqueue latencies (p50, p99) in milliseconds over `n` enqueues; the
/// messages are dequeued again afterwards.
async fn latency(setup: &Setup, n: usize) -> (f64, f64) {
    let mut c = client(setup).await;
    let body = vec![b'y'; BODY];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.enqueue(QSPACE, QUEUE, &body, &EnqueueCtl::default()).await.expect("enqueue");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for _ in 0..n {
        c.dequeue(QSPACE, QUEUE, &DequeueCtl::default()).await.expect("dequeue");
    }
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[n * 99 / 100])
}

/// Fills the queue with `n` messages, 1,000 per transaction, from 8 clients.
async fn preload(setup: &Setup, n: usize) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(client(setup).await);
    }
    load::fill(clients, n as u64, Default::default()).await;
}

fn report(label: &str, setup: &Setup, rt: &tokio::runtime::Runtime, secs: f64, lat_n: usize) {
    println!("\n{label}");
    println!("  {:<28} {:>12}", "clients", "messages/s");
    for clients in [1, 8, 64] {
        let rate = rt.block_on(throughput(setup, clients, secs));
        println!("  {clients:<28} {rate:>12.0}");
    }
    let (p50, p99) = rt.block_on(latency(setup, lat_n));
    println!("  single-client enqueue latency: p50 {p50:.3} ms, p99 {p99:.3} ms");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (secs, lat_n, deep) = if quick { (1.5, 500, 100_000) } else { (5.0, 3000, 1_000_000) };
    // `--deep N`: how many messages are queued for the second half (10,000,000 for issue 11).
    let deep = args
        .windows(2)
        .find(|w| w[0] == "--deep")
        .map(|w| w[1].parse::<usize>().expect("--deep N: a number of messages"))
        .unwrap_or(deep);
    let dir = tempfile::Builder::new()
        .prefix("qm-bench-")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir");
    let device = dir.path().join("QUE");
    let socket = qm_common::paths::socket_path(&device);
    let setup = Setup { socket, device: device.clone() };
    start_daemon(&setup);
    let pages = 2 * deep as u64 + 100_000;
    admin(
        &setup,
        &format!(
            "crdl {} 0 {}; qspc {QSPACE} 40000 {} 4 256 256 {} \"\" n 16; qopen {QSPACE}; qcr {QUEUE} fifo none 0 0 100% 0% \"\"",
            device.display(),
            pages + 100,
            pages,
            deep as u64 + 200_000
        ),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!(
        "qm benchmark: durable enqueue+dequeue, {BODY}-byte bodies, device {}",
        device.display()
    );
    report("empty queue", &setup, &rt, secs, lat_n);
    let t = Instant::now();
    rt.block_on(preload(&setup, deep));
    println!("\npreloaded {deep} messages in {:.1} s", t.elapsed().as_secs_f64());
    report(&format!("{deep} messages queued"), &setup, &rt, secs, lat_n);
    let size = std::fs::metadata(Path::new(&device)).map(|m| m.len()).unwrap_or(0);
    println!("\ndevice file: {:.1} MiB; process memory: {}", size as f64 / (1 << 20) as f64, rss());
    admin(&setup, "daemon stop");
    while setup.socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Restart: the first qopen loads every committed message back.
    start_daemon(&setup);
    let t = Instant::now();
    admin(&setup, &format!("qopen {QSPACE}"));
    println!(
        "restart: qopen recovered {deep} messages in {:.2} s; process memory: {}",
        t.elapsed().as_secs_f64(),
        rss()
    );
    admin(&setup, "daemon stop");
}

/// Resident memory of this process (daemon and clients together).
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn start_daemon(setup: &Setup) {
    load::start_daemon(&setup.device, &setup.socket, Default::default());
}
