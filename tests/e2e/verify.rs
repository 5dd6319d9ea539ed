//! qverify and `qmd --verify`: a device that is whole passes, while traffic flows; a
//! flipped byte in a message, a VTOC table laid over another and an order key gone are
//! each found and named, by the running daemon and on the stopped device.

use crate::auto::{App, setup};
use crate::faults::stop_and_wait;
use crate::support::{Env, QMD, Run, run_limited};
use qm_common::message::{EnqueueCtl, Expiry, TimeSpec};
use qm_common::verify::VerifyReport;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `qmd --verify DEVICE`.
fn offline(env: &Env) -> Run {
    let mut cmd = Command::new(QMD);
    cmd.arg("--verify").arg(&env.device);
    run_limited(cmd, Duration::from_secs(60))
}

/// Messages of every kind: plain, with a correlation id, not available yet, expiring, a
/// body stored in parts, non-persistent.
fn fill(env: &Env) {
    let mut app = App::connect(env);
    for i in 0..50 {
        app.put("Q", format!("plain {i}").as_bytes());
    }
    let corrid = EnqueueCtl { corrid: b"order-7".to_vec(), ..EnqueueCtl::default() };
    app.put_with("Q", b"with a corrid", corrid);
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    app.put_with("Q", b"in an hour", later);
    let expiring = EnqueueCtl { expiration: Some(Expiry::Relative(3600)), ..EnqueueCtl::default() };
    app.put_with("R", b"expires in an hour", expiring);
    app.put("R", &vec![b'x'; 100_000]);
    app.put_np("R", b"in memory only");
}

#[test]
fn a_whole_device_passes_while_traffic_flows() {
    let env = Env::new();
    let queues = ["Q fifo none 0 0 100% 0% ''", "R priority,fifo none 0 0 100% 0% ''"];
    setup(&env, 1500, &[queues[0], queues[1], "T fifo none 0 0 100% 0% ''"]);
    fill(&env);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut app = App::connect(&env);
            while !stop.load(Ordering::Relaxed) {
                app.put("T", b"traffic");
                app.take("T");
            }
        });
        for _ in 0..3 {
            let report: VerifyReport = env.json("qverify --json");
            assert!(report.problems.is_empty(), "{report:?}");
            let qs = report.qspaces.iter().find(|q| q.name == "QS").expect("QS checked");
            assert!((54..=55).contains(&qs.messages), "{report:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    env.c("qverify QS").ok().stdout_has("No problem found.").stdout_lacks("....");
    // In verbose mode, progress dots while it checks.
    env.c("v; qverify QS").ok().stdout_has(&format!("{}\n", ".".repeat(20)));
    stop_and_wait(&env);
    offline(&env).ok().stdout_has("No problem found.");
}

/// Flips one bit of the first place `needle` appears in the device file, or else in its
/// first body segment that holds it.
fn flip(env: &Env, needle: &[u8]) {
    let segments = (1..1000).map(|n| env.path(&format!("QUE.bodies.{n}")));
    for path in std::iter::once(env.device.clone()).chain(segments.filter(|p| p.exists())) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + 3] ^= 1;
            return std::fs::write(&path, bytes).unwrap();
        }
    }
    panic!("{needle:?} is stored nowhere");
}

#[test]
fn a_flipped_byte_in_a_message_is_found() {
    let env = Env::new();
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("Q", b"before");
    let damaged = app.put("Q", b"a body that will be damaged");
    app.put("Q", b"after");
    drop(app);
    stop_and_wait(&env);
    offline(&env).ok();
    flip(&env, b"a body that will be damaged");
    let found = offline(&env);
    assert_eq!(found.status, 1, "{}{}", found.stdout, found.stderr);
    found.stdout_has(&format!("message {damaged} of QS")).stdout_has("damaged");
    // Only that message: its record still reads, so its queue's order and totals agree.
    assert_eq!(found.stdout.matches(" of QS ").count(), 1, "{}", found.stdout);
    // The running daemon finds it too, and qmadmin fails.
    env.c("qverify").failed().stdout_has("damaged").stderr_has("qverify found 1 problem");
}

#[test]
fn a_vtoc_table_over_another_is_found() {
    use qm_common::device::VtocEntry;
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let env = Env::new();
    setup(&env, 200, &["Q fifo none 0 0 100% 0% ''"]);
    env.c("qaddext QS 100").ok();
    stop_and_wait(&env);
    {
        let db = redb::Database::open(&env.device).unwrap();
        let txn = db.begin_write().unwrap();
        let mut vtoc = txn.open_table(TableDefinition::<u8, &[u8]>::new("qm.vtoc")).unwrap();
        let tables: Vec<VtocEntry> = vtoc
            .iter()
            .unwrap()
            .map(|item| postcard::from_bytes(item.unwrap().1.value()).unwrap())
            .collect();
        let first = tables.iter().find(|t| t.extent == Some(0)).unwrap().clone();
        let mut second = tables.iter().find(|t| t.extent == Some(1)).unwrap().clone();
        second.offset = first.offset + 10;
        vtoc.insert(second.index, postcard::to_stdvec(&second).unwrap().as_slice()).unwrap();
        drop(vtoc);
        txn.commit().unwrap();
        drop(db.begin_read().unwrap());
    }
    let found = offline(&env);
    assert_eq!(found.status, 1, "{}{}", found.stdout, found.stderr);
    found.stdout_has("(QS extent 1)").stdout_has("overlap VTOC table");
}

#[test]
fn a_missing_order_key_is_found_and_named() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let env = Env::new();
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let first = app.put("Q", b"first");
    app.put("Q", b"second");
    drop(app);
    stop_and_wait(&env);
    {
        let db = redb::Database::open(&env.device).unwrap();
        let txn = db.begin_write().unwrap();
        let mut ready = txn.open_table(TableDefinition::<&[u8], ()>::new("qs.QS.ready")).unwrap();
        let key = ready.first().unwrap().unwrap().0.value().to_vec();
        ready.remove(key.as_slice()).unwrap();
        drop(ready);
        txn.commit().unwrap();
        drop(db.begin_read().unwrap());
    }
    let found = offline(&env);
    assert_eq!(found.status, 1, "{}{}", found.stdout, found.stderr);
    found.stdout_has(&format!("message {first} has no key in order table ready"));
}

#[test]
fn a_served_device_is_not_verified_offline() {
    let env = Env::new();
    setup(&env, 200, &[]);
    let refused = offline(&env);
    assert_eq!(refused.status, 2, "{}{}", refused.stdout, refused.stderr);
    refused.stderr_has("another qmd already serves");
    let mut cmd = Command::new(QMD);
    cmd.arg("--verify").arg(env.path("NOPE"));
    let missing = run_limited(cmd, Duration::from_secs(10));
    assert_eq!(missing.status, 2);
    missing.stderr_has("no such device file");
}
