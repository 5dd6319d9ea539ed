//! Benchmark of durable enqueue+dequeue pairs over the HTTP face, next to the same pairs
//! over the Unix socket.
//!
//! Run with `cargo run --release --example bench_http` (add `-- --quick` for a short run).
//! A daemon runs in this process (two worker threads) with its HTTP face on a free port of
//! 127.0.0.1, serving a device in a temporary directory. Each HTTP client keeps one
//! keep-alive connection and repeats `POST /bench/BENCH/Q` with a 1 KiB body, then
//! `GET /bench/BENCH/Q`; each is its own durable transaction, as over the socket. Figures:
//! pairs per second for 1, 8 and 64 clients, over the socket, over HTTP with async (hyper)
//! clients on one thread as the socket clients are, and over HTTP with a thread per client
//! (ureq, blocking), as simple scripts and farm jobs would do it.

use qm_common::client::Client;
use qm_common::protocol::ClientKind;
use std::path::PathBuf;
use std::time::Duration;

mod load;

use load::{BODY, QSPACE, QUEUE, admin};
const URL_PATH: &str = "bench";

/// Pairs per second over HTTP with `clients` threads for `secs`.
fn http_throughput(port: u16, clients: usize, secs: f64) -> f64 {
    let tally = load::Tally::default();
    let url = format!("http://127.0.0.1:{port}/{URL_PATH}/{QSPACE}/{QUEUE}");
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (tally, url) = (tally.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::Agent::new_with_defaults();
                let body = vec![b'x'; BODY];
                while tally.running() {
                    let posted = agent.post(&url).send(&body[..]).expect("enqueue");
                    assert_eq!(posted.status(), 201);
                    let mut got = agent.get(&url).call().expect("dequeue");
                    assert_eq!(got.status(), 200);
                    assert_eq!(got.body_mut().read_to_vec().expect("body").len(), BODY);
                    tally.pair();
                }
            })
        })
        .collect();
    let rate = tally.measure_blocking(secs);
    for t in threads {
        t.join().expect("client");
    }
    rate
}

/// Pairs per second over HTTP with `clients` async connections (hyper's client) for `secs`.
async fn hyper_throughput(port: u16, clients: usize, secs: f64) -> f64 {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let tally = load::Tally::default();
    let path = format!("/{URL_PATH}/{QSPACE}/{QUEUE}");
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("http");
        tokio::spawn(conn);
        let (tally, path) = (tally.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![b'x'; BODY]);
            while tally.running() {
                let post = hyper::Request::post(&path)
                    .header(hyper::header::HOST, "127.0.0.1")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let posted = sender.send_request(post).await.expect("enqueue");
                assert_eq!(posted.status(), 201);
                posted.into_body().collect().await.expect("answer");
                let get = hyper::Request::get(&path)
                    .header(hyper::header::HOST, "127.0.0.1")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let got = sender.send_request(get).await.expect("dequeue");
                assert_eq!(got.status(), 200);
                let message = got.into_body().collect().await.expect("message").to_bytes();
                assert_eq!(message.len(), BODY);
                tally.pair();
            }
        }));
    }
    let rate = tally.measure(secs).await;
    for t in tasks {
        t.await.expect("client");
    }
    rate
}

/// Pairs per second over the Unix socket with `clients` connections for `secs`.
async fn socket_throughput(socket: &std::path::Path, clients: usize, secs: f64) -> f64 {
    let mut all = Vec::new();
    for _ in 0..clients {
        all.push(Client::connect(socket, "bench", ClientKind::Application).await.expect("connect"));
    }
    load::client_pairs(all, secs).await
}

/// A port nobody listens on right now (the daemon binds it a moment later).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("its address").port()
}

fn start_daemon(device: PathBuf, socket: PathBuf, port: u16) {
    let face =
        qm_daemon::http::HttpFace { port, max_connections: 1024, url_path: URL_PATH.to_string() };
    let settings =
        qm_daemon::server::Settings { http: Some(face), ..qm_daemon::server::Settings::default() };
    load::start_daemon(&device, &socket, settings);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 1.5 } else { 5.0 };
    let dir = tempfile::Builder::new().prefix("qm-bench-http-").tempdir().expect("temp dir");
    let device = dir.path().join("QUE");
    let socket = qm_common::paths::socket_path(&device);
    let port = free_port();
    start_daemon(device.clone(), socket.clone(), port);
    admin(
        &device,
        &socket,
        &format!(
            "crdl {} 0 200100; qspc {QSPACE} 40000 200000 4 256 256 200000 \"\" n 16; \
             qopen {QSPACE}; qcr {QUEUE} fifo none 0 0 100% 0% \"\"; \
             qgrant anonymous enqueue,dequeue {QSPACE}",
            device.display()
        ),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!("qm HTTP benchmark: durable enqueue+dequeue pairs, {BODY}-byte bodies, keep-alive");
    println!(
        "  {:<8} {:>10} {:>12} {:>8} {:>14} {:>8}",
        "clients", "socket/s", "HTTP async/s", "of sock", "HTTP thread/s", "of sock"
    );
    for clients in [1, 8, 64] {
        let unix = rt.block_on(socket_throughput(&socket, clients, secs));
        let async_http = rt.block_on(hyper_throughput(port, clients, secs));
        let threads = http_throughput(port, clients, secs);
        println!(
            "  {clients:<8} {unix:>10.0} {async_http:>12.0} {:>7.0}% {threads:>14.0} {:>7.0}%",
            100.0 * async_http / unix,
            100.0 * threads / unix
        );
    }
    admin(&device, &socket, "daemon stop");
    while socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}
