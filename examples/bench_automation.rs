//! Benchmark of automation: how long after the commit that crosses a high limit its
//! threshold command starts, and how many messages per second a forwarder moves through a
//! trivial service.
//!
//! Run with `cargo run --release --example bench_automation`.

mod support;

use qm_common::client::Client;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::Demo;

const CONFIG: &str = r#"
[[forwarder]]
id = 1
qspace = "QS"
clopt = "-- -i 0 -q FWD -e"

[[forwarder]]
id = 2
qspace = "QS"
clopt = "-- -i 0 -q FWD -e"

[[forwarder]]
id = 3
qspace = "QS"
clopt = "-- -i 0 -q FWD -e"

[[forwarder]]
id = 4
qspace = "QS"
clopt = "-- -i 0 -q FWD -e"

[service.FWD]
command = "cat"
"#;

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Crossing commit to command start, over `rounds` fill/drain cycles of a 2m/0m queue.
async fn threshold_delay(demo: &Demo, rounds: usize) -> Vec<f64> {
    let stamp = demo.path("stamp");
    let mut c = Client::connect_device(&demo.device, "bench").await.expect("connect");
    let mut delays = Vec::new();
    for _ in 0..rounds {
        let _ = std::fs::remove_file(&stamp);
        c.enqueue("QS", "TH", b"a", &EnqueueCtl::default()).await.expect("enqueue");
        c.enqueue("QS", "TH", b"b", &EnqueueCtl::default()).await.expect("enqueue");
        let acked = now_ns();
        let deadline = Instant::now() + Duration::from_secs(5);
        let started = loop {
            if let Ok(text) = std::fs::read_to_string(&stamp)
                && let Ok(ns) = text.trim().parse::<u128>()
            {
                break ns;
            }
            assert!(Instant::now() < deadline, "threshold command did not run");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        delays.push(started.saturating_sub(acked) as f64 / 1e6);
        for _ in 0..2 {
            c.dequeue("QS", "TH", &DequeueCtl::default()).await.expect("dequeue");
        }
    }
    delays.sort_by(f64::total_cmp);
    delays
}

/// Messages per second through `forwarders` forwarders with the `cat` service.
async fn forwarding(demo: &Demo, n: usize, forwarders: u32) -> f64 {
    let mut c = Client::connect_device(&demo.device, "bench").await.expect("connect");
    c.begin("QS", Some(600)).await.expect("begin");
    for i in 0..n {
        c.enqueue(
            "QS",
            "FWD",
            format!("message {i}").as_bytes(),
            &EnqueueCtl { reply_queue: Some("REPLY".into()), ..Default::default() },
        )
        .await
        .expect("enqueue");
    }
    c.commit().await.expect("commit");
    let start = Instant::now();
    for id in 1..=forwarders {
        assert!(!demo.qmadmin(&format!("boot -i {id}")).contains("ERROR"), "boot {id}");
    }
    let mut got = 0;
    let wait = DequeueCtl { wait_ms: Some(10_000), ..Default::default() };
    while got < n {
        c.dequeue("QS", "REPLY", &wait).await.expect("reply");
        got += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    while demo.qmadmin("psr").contains("running") || demo.qmadmin("psr").contains("idle") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rate
}

fn main() {
    support::act_as_qmadmin();
    let demo = Demo::start("qm-bench-auto-", CONFIG);
    let dev = demo.device.display().to_string();
    let stamp = demo.path("stamp").display().to_string();
    let setup = demo.qmadmin(&format!(
        "crdl {dev} 0 20000; qspc QS 40000 10000 4 64 64 100000 '' n 16; qopen QS; qcr TH fifo none 0 0 2m 0m 'date +%s%N > {stamp}'; qcr FWD fifo none 0 0 100% 0% ''; qcr REPLY fifo none 0 0 100% 0% ''"
    ));
    assert!(!setup.contains("ERROR"), "{setup}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!("qm automation benchmark (device {dev})\n");
    let delays = rt.block_on(threshold_delay(&demo, 200));
    println!(
        "threshold command start after the crossing commit (200 crossings): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&delays, 50),
        percentile(&delays, 99),
        delays[delays.len() - 1]
    );
    for forwarders in [1, 4] {
        let rate = rt.block_on(forwarding(&demo, 2000, forwarders));
        println!(
            "forwarding through the `cat` service, {forwarders} forwarder(s): {rate:.0} messages/s (2000 messages, each with a reply)"
        );
    }
    demo.stop();
}
