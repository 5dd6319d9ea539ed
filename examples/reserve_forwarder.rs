//! The reserve-forwarder scenario: at 90 % the queue's threshold command boots reserve
//! forwarder 1002, which drains the queue through its service and exits when the queue is
//! empty; the next crossing boots it again.
//!
//! Run with `cargo run --release --example reserve_forwarder`.

mod support;

use std::time::{Duration, Instant};
use support::{Demo, step};

const CONFIG: &str = r#"
# Reserve forwarder 1002: not booted with the daemon, exits when its queue is empty.
[[forwarder]]
id = 1002
qspace = "QSPACE"
clopt = "-- -i 0 -q ORDERS -e"

# The service the forwarder calls for each ORDERS message: body in, reply out.
[service.ORDERS]
command = "sleep 0.02; tr a-z A-Z"
"#;

fn watch(demo: &Demo, until_empty: bool) {
    let start = Instant::now();
    let mut last = u64::MAX;
    while start.elapsed() < Duration::from_secs(30) {
        let depth = demo.depth("QSPACE", "ORDERS");
        if depth != last {
            println!(
                "  {:>6.2} s  ORDERS holds {depth:>2} messages",
                start.elapsed().as_secs_f64()
            );
            last = depth;
        }
        let psr = demo.qmadmin("psr");
        if until_empty && depth == 0 && psr.contains("exited") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    support::act_as_qmadmin();
    let demo = Demo::start("qm-reserve-", CONFIG);
    let dev = demo.device.display().to_string();
    step(
        "queue space of 100 pages; ORDERS fires at 90 % (re-arms at 0 %): qmadmin -c \"boot -i 1002\"",
    );
    print!(
        "{}",
        demo.qmadmin(&format!(
            "crdl {dev} 0 1000; qspc QSPACE 40000 100 3 8 8 1000 ERRQ n 16; qopen QSPACE; qcr ERRQ fifo none 0 0 100% 0% ''; qcr REPLIES fifo none 0 0 100% 0% ''; qcr ORDERS fifo none 3 0 90% 0% 'qmadmin -c \"boot -i 1002\"'; psr"
        ))
    );
    for round in 1..=2 {
        step(&format!(
            "round {round}: a producer fills ORDERS with 90 messages of 800 bytes (one block each)"
        ));
        let body = "x".repeat(790);
        for i in 0..90 {
            demo.qmadmin(&format!(
                "qopen QSPACE; qenqueue -r REPLIES ORDERS order-{round}-{i:02}-{body}"
            ));
        }
        watch(&demo, true);
        step(&format!("round {round}: what happened"));
        print!("{}", demo.qmadmin("qopen QSPACE; psr; qthlog ORDERS; qinfo"));
        step(&format!(
            "round {round}: the client reads its 90 replies (the service upper-cased each order)"
        ));
        let reads = vec!["qdequeue REPLIES"; 90].join("; ");
        let replies = demo.qmadmin(&format!("qopen QSPACE; {reads}"));
        let bodies: Vec<&str> = replies.lines().filter(|l| l.starts_with("ORDER-")).collect();
        println!(
            "  {} replies read; the first: {}...",
            bodies.len(),
            &bodies.first().copied().unwrap_or("")[..bodies.first().map_or(0, |b| b.len().min(16))]
        );
    }
    demo.stop();
}
