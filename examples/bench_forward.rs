//! Benchmark of forwarding through services that stay up (`mode = "worker"`): messages per
//! second moved from a queue to its reply queue by forwarders calling a trivial worker (an
//! echo through `qm_common::worker::serve`). Every message is its own durable transaction:
//! dequeue, call the worker, enqueue the reply, commit (group committed with the other
//! forwarders' transactions).
//!
//! Run with `cargo run --release --example bench_forward` (`-- --messages N` to change the
//! 20,000 messages of each run, `-- --forwarders 1,8,32` for the forwarder counts).

mod support;

use qm_common::client::Client;
use qm_common::message::EnqueueCtl;
use qm_common::worker::{Reply, serve};
use std::time::{Duration, Instant};
use support::Demo;

/// Messages enqueued per transaction while filling the queue.
const FILL_BATCH: usize = 1000;

/// The configuration: `forwarders` forwarders on FWD, and the service FWD run as workers by
/// this very program (`--as-worker`), as many as there are forwarders.
fn config(forwarders: u32) -> String {
    let exe = std::env::current_exe().expect("own path");
    let mut text = String::new();
    for id in 1..=forwarders {
        text +=
            &format!("[[forwarder]]\nid = {id}\nqspace = \"QS\"\nclopt = \"-- -i 0 -q FWD\"\n\n");
    }
    text += &format!(
        "[service.FWD]\ncommand = \"'{}' --as-worker\"\nmode = \"worker\"\nmin = {forwarders}\nmax = {forwarders}\n",
        exe.display()
    );
    text
}

async fn fill(demo: &Demo, n: usize) {
    let mut c = Client::connect_device(&demo.device, "bench").await.expect("connect");
    let ctl = EnqueueCtl { reply_queue: Some("REPLY".into()), ..Default::default() };
    for chunk in (0..n).collect::<Vec<_>>().chunks(FILL_BATCH) {
        c.begin("QS", Some(600)).await.expect("begin");
        for i in chunk {
            c.enqueue("QS", "FWD", format!("message {i}").as_bytes(), &ctl).await.expect("enqueue");
        }
        c.commit().await.expect("commit");
    }
}

/// Boots the forwarders and measures until every reply is on REPLY.
fn forward(demo: &Demo, n: usize, forwarders: u32) -> f64 {
    // The clock includes starting the workers (a few milliseconds).
    let start = Instant::now();
    for id in 1..=forwarders {
        let out = demo.qmadmin(&format!("boot -i {id}"));
        assert!(!out.contains("ERROR"), "boot {id}: {out}");
    }
    while demo.depth("QS", "REPLY") < n as u64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let psr = demo.qmadmin("psr");
    assert!(psr.lines().filter(|l| l.contains("service")).count() == 0, "{psr}");
    for id in 1..=forwarders {
        demo.qmadmin(&format!("shutdown -i {id}"));
    }
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-worker") {
        serve(|request| Reply::success(request.body)).expect("worker protocol");
        return;
    }
    support::act_as_qmadmin();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let n: usize = value("--messages").map_or(20_000, |v| v.parse().expect("--messages N"));
    let counts: Vec<u32> = value("--forwarders").map_or(vec![1, 8, 32], |v| {
        v.split(',').map(|x| x.parse().expect("--forwarders 1,8,32")).collect()
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!(
        "qm forwarding benchmark: trivial worker, {n} messages per run, each one transaction\n"
    );
    for forwarders in counts {
        let demo = Demo::start("qm-bench-forward-", &config(forwarders));
        let dev = demo.device.display().to_string();
        let pages = n * 3 + 1000;
        let setup = demo.qmadmin(&format!(
            "crdl {dev} 0 {}; qspc QS 40000 {pages} 4 64 64 {} '' n 16; qopen QS; qcr FWD fifo none 0 0 100% 0% ''; qcr REPLY fifo none 0 0 100% 0% ''",
            pages + 100,
            n * 2 + 100
        ));
        assert!(!setup.contains("ERROR"), "{setup}");
        rt.block_on(fill(&demo, n));
        let rate = forward(&demo, n, forwarders);
        println!("{forwarders} forwarder(s), {forwarders} worker(s): {rate:.0} messages/s");
        demo.stop();
    }
}
