//! The mail-the-administrator scenario: ORDERS runs its command once when it reaches 80 %
//! of the queue space, and not again until it has drained to 10 % and filled up again. The
//! "mail" is appended to a file.
//!
//! Run with `cargo run --release --example mail_admin`.

mod support;

use support::{Demo, step};

fn fill_to(demo: &Demo, target: u64, mailbox: &std::path::Path) {
    let body = "m".repeat(800);
    let mut depth = demo.depth("QSPACE", "ORDERS");
    while depth < target {
        demo.qmadmin(&format!("qopen QSPACE; qenqueue ORDERS {body}"));
        depth += 1;
    }
    while depth > target {
        demo.qmadmin("qopen QSPACE; qdequeue ORDERS");
        depth -= 1;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mails = std::fs::read_to_string(mailbox).unwrap_or_default();
    println!(
        "  ORDERS holds {depth:>2} messages ({:>3} % of 40 pages); mails so far: {}",
        depth * 100 / 40,
        mails.lines().count()
    );
}

fn main() {
    support::act_as_qmadmin();
    let demo = Demo::start("qm-mail-", "");
    let dev = demo.device.display().to_string();
    let mailbox = demo.path("mailbox.txt");
    step("ORDERS: high 80 %, low 10 %, command appends a mail to mailbox.txt");
    print!(
        "{}",
        demo.qmadmin(&format!(
            "crdl {dev} 0 1000; qspc QSPACE 40000 40 2 8 8 1000 '' n 16; qopen QSPACE; qcr ORDERS fifo none 0 0 80% 10% 'echo \"To: admin  Subject: $QM_QSPACE/$QM_QUEUE at $QM_USAGE (limit $QM_LIMIT)\" >> {}'",
            mailbox.display()
        ))
    );
    step("fill to 80 %: one mail");
    fill_to(&demo, 32, &mailbox);
    step("drain to 50 % and fill to 90 %: no new mail (not re-armed)");
    fill_to(&demo, 20, &mailbox);
    fill_to(&demo, 36, &mailbox);
    step("drain to 10 % (re-arms) and fill to 80 % again: a second mail");
    fill_to(&demo, 4, &mailbox);
    fill_to(&demo, 32, &mailbox);
    step("the mailbox");
    print!("{}", std::fs::read_to_string(&mailbox).unwrap_or_default());
    step("the record of firings (qthlog)");
    print!("{}", demo.qmadmin("qopen QSPACE; qthlog"));
    demo.stop();
}
