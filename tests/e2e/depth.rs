//! Messages live on disk in their queues' order: after a restart the order, the counts and
//! the timers come back from the order tables and the queues' totals (no message is read
//! to load a queue space), and a queue space stored before those tables existed is put in
//! order once, when it is loaded.

use crate::auto::{App, eventually, setup};
use crate::faults::stop_and_wait;
use crate::support::Env;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Select, TimeSpec};
use std::time::{SystemTime, UNIX_EPOCH};

/// One queue's row of `qstat --json`.
fn stat(env: &Env, queue: &str) -> serde_json::Value {
    let view: serde_json::Value = env.json("qopen QS; qstat --json QS");
    let rows = view["queues"].as_array().expect("queues").clone();
    rows.into_iter().find(|q| q["queue"] == queue).unwrap_or_else(|| panic!("{queue}: {view}"))
}

fn counts(row: &serde_json::Value) -> [u64; 4] {
    ["messages", "ready", "waiting", "bytes"].map(|k| row[k].as_u64().unwrap_or(u64::MAX))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn with_priority(priority: u8) -> EnqueueCtl {
    EnqueueCtl { priority: Some(priority), ..EnqueueCtl::default() }
}

fn body(m: &qm_common::message::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Priority order, a correlation id, a message not available yet and one that expires:
/// all as they were after `daemon stop` and a new start.
#[test]
fn order_counts_and_timers_come_back_from_disk() {
    let env = Env::new();
    setup(&env, 300, &["P priority none 0 0 100% 0% ''", "E fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for (i, prio) in [10, 90, 50, 90, 10].into_iter().enumerate() {
        app.put_with("P", format!("m{i}").as_bytes(), with_priority(prio));
    }
    let corrid = EnqueueCtl { corrid: b"order-7".to_vec(), ..with_priority(1) };
    app.put_with("P", b"with-corrid", corrid);
    let due = now_secs() + 4;
    let later = EnqueueCtl { available: Some(TimeSpec::Absolute(due)), ..with_priority(1) };
    app.put_with("P", b"later", later);
    let expiring = EnqueueCtl { expiration: Some(Expiry::Relative(2)), ..EnqueueCtl::default() };
    app.put_with("E", b"short-lived", expiring);
    drop(app);
    let before = stat(&env, "P");
    assert_eq!(counts(&before)[..3], [7, 6, 1], "{before}");

    stop_and_wait(&env);
    let _daemon = env.start_daemon(&[]);
    let after = stat(&env, "P");
    if now_secs() < due {
        assert_eq!(counts(&after), counts(&before), "the same counts after a restart: {after}");
    }
    assert!(after["oldest_age_ms"].as_u64() >= before["oldest_age_ms"].as_u64(), "{after}");

    let mut app = App::connect(&env);
    let by_corrid =
        DequeueCtl { select: Select::Corrid(b"order-7".to_vec()), ..Default::default() };
    assert_eq!(body(&app.dequeue_with("P", &by_corrid).unwrap()), "with-corrid");
    let taken: Vec<String> = (0..5).map(|_| body(&app.take("P"))).collect();
    assert_eq!(taken, ["m1", "m3", "m2", "m0", "m4"], "priority order, first in first out");
    // The timer of the message stored for later still runs after the restart.
    let wait = DequeueCtl { wait_ms: Some(60_000), ..Default::default() };
    let got = app.dequeue_with("P", &wait).unwrap();
    assert_eq!(body(&got), "later");
    assert!(now_secs() >= due, "not before its time");
    assert_eq!(counts(&stat(&env, "P"))[..3], [0, 0, 0]);
    // So does the expiry's.
    eventually("the stored message on E expires", || {
        let e = stat(&env, "E");
        e["messages"] == 0 && e["expired"] == 1
    });
}

/// A queue space whose file has messages but no order tables (as one written before they
/// existed) is put in order when it is loaded: every message, in its order, counted.
#[test]
fn a_queue_space_stored_before_the_order_tables_is_ordered_when_loaded() {
    let env = Env::new();
    setup(&env, 300, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for i in 0..40 {
        app.put("Q", format!("n{i:02}").as_bytes());
    }
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    app.put_with("Q", b"in an hour", later);
    drop(app);
    stop_and_wait(&env);

    {
        use redb::{ReadableDatabase, TableDefinition};
        let db = redb::Database::open(&env.device).unwrap();
        let txn = db.begin_write().unwrap();
        for name in ["ready", "corrid", "timers", "age", "totals"] {
            let table = format!("qs.QS.{name}");
            let was = txn.delete_table(TableDefinition::<&str, &[u8]>::new(&table)).unwrap();
            // The correlation id table is made by the first message that has one.
            assert!(was || name == "corrid", "{table} was there");
        }
        let mut state = txn.open_table(TableDefinition::<&str, &[u8]>::new("qs.QS.state")).unwrap();
        assert!(state.remove("indexed").unwrap().is_some());
        drop(state);
        txn.commit().unwrap();
        drop(db.begin_read().unwrap());
    }

    let daemon = env.start_traced_daemon(&[]);
    let row = stat(&env, "Q");
    assert_eq!(counts(&row)[..3], [41, 40, 1], "{row}");
    assert_eq!(daemon.log_count(&["ordered its 41 stored messages"]), 1);
    let mut app = App::connect(&env);
    let bodies: Vec<String> = app.drain("Q").iter().map(body).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    assert_eq!(bodies, expected);
    // Ordered once: the next load reads the totals again (the log goes on in the same
    // file, and still says it once).
    stop_and_wait(&env);
    drop(daemon);
    let daemon = env.start_traced_daemon(&[]);
    assert_eq!(counts(&stat(&env, "Q"))[..3], [1, 0, 1]);
    assert_eq!(daemon.log_count(&["ordered its"]), 1);
}

/// A message enqueued in sequence keeps no key of its age on disk (only its place in the
/// queue's order): after a restart the oldest message's age still counts it, older than a
/// later one that waits for its time, and qverify finds the tables whole. R holds a
/// message enqueued with the later one, to measure against in the same `qstat`.
#[test]
fn the_oldest_age_counts_messages_stored_in_sequence() {
    let env = Env::new();
    setup(&env, 300, &["Q fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("Q", b"first, in sequence");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    app.put_with("Q", b"in an hour", later);
    app.put("R", b"the reference");
    app.put("Q", b"third, in sequence");
    drop(app);
    stop_and_wait(&env);
    let _daemon = env.start_daemon(&[]);
    // Read from disk alone: nothing of the queues is in memory after the restart.
    let ages = |env: &Env| {
        let view: serde_json::Value = env.json("qopen QS; qstat --json QS");
        let age = |q: &str| {
            let rows = view["queues"].as_array().expect("queues");
            let row = rows.iter().find(|r| r["queue"] == q).expect("a row");
            row["oldest_age_ms"].as_u64().expect("oldest_age_ms")
        };
        (age("Q"), age("R"))
    };
    assert_eq!(counts(&stat(&env, "Q"))[..3], [3, 2, 1]);
    let (q, r) = ages(&env);
    assert!(q >= r + 400, "the first message is the oldest: {q} ms, the reference {r} ms");
    env.c("qverify QS").ok().stdout_has("No problem found.");
    let mut app = App::connect(&env);
    assert_eq!(body(&app.take("Q")), "first, in sequence");
    let (q, r) = ages(&env);
    assert!(q.abs_diff(r) < 300, "the one waiting is the oldest left: {q} ms, {r} ms");
    env.c("qverify QS").ok().stdout_has("No problem found.");
}

/// A queue space whose order tables are of the earlier encoding (2: an `age` key for every
/// message) is ordered again when loaded: a key left from it is gone, and qverify finds the
/// tables whole.
#[test]
fn order_tables_of_the_earlier_encoding_are_built_again() {
    let env = Env::new();
    setup(&env, 300, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for i in 0..5 {
        app.put("Q", format!("n{i}").as_bytes());
    }
    drop(app);
    stop_and_wait(&env);
    {
        use redb::{ReadableDatabase, TableDefinition};
        let db = redb::Database::open(&env.device).unwrap();
        let txn = db.begin_write().unwrap();
        let mut age = txn.open_table(TableDefinition::<&[u8], ()>::new("qs.QS.age")).unwrap();
        // An `age` key as encoding 2 gave the first message: queue, time, number.
        let mut key = 1u16.to_be_bytes().to_vec();
        key.extend_from_slice(b"Q");
        key.extend_from_slice(&1u64.to_be_bytes());
        key.extend_from_slice(&1u64.to_be_bytes());
        age.insert(key.as_slice(), ()).unwrap();
        drop(age);
        let mut state = txn.open_table(TableDefinition::<&str, &[u8]>::new("qs.QS.state")).unwrap();
        assert_eq!(state.insert("indexed", [2u8].as_slice()).unwrap().unwrap().value(), [3]);
        drop(state);
        txn.commit().unwrap();
        drop(db.begin_read().unwrap());
    }
    let daemon = env.start_traced_daemon(&[]);
    assert_eq!(counts(&stat(&env, "Q"))[..3], [5, 5, 0]);
    assert_eq!(daemon.log_count(&["ordered its 5 stored messages"]), 1);
    env.c("qverify QS").ok().stdout_has("No problem found.");
    let mut app = App::connect(&env);
    let bodies: Vec<String> = app.drain("Q").iter().map(body).collect();
    assert_eq!(bodies, ["n0", "n1", "n2", "n3", "n4"]);
}

/// More stored messages than a queue's head holds, and new ones that sort before, among and
/// after those the head holds, with rollbacks between: every dequeue takes the first in the
/// queue's order.
#[test]
fn the_queue_order_holds_past_the_head_read_from_disk() {
    use crate::app::{App as DataApp, ERRQ, space_with};
    let env = space_with(
        "",
        "40000 1800 8 4 16 1000 ERRQ n 16",
        &[ERRQ, "P priority none 5 0 100% 0% ''"],
    );
    let mut app = DataApp::connect(&env);
    for i in 0..300 {
        app.put_with("P", &format!("30-{i:03}"), with_priority(30));
    }
    // The first dequeue reads the head from disk; what follows must merge with it.
    assert_eq!(app.take_body("P"), "30-000");
    for i in 0..5 {
        app.put_with("P", &format!("60-{i:03}"), with_priority(60));
        app.put_with("P", &format!("10-{i:03}"), with_priority(10));
        app.put_with("P", &format!("30-{:03}", 300 + i), with_priority(30));
    }
    let mut taken = Vec::new();
    while taken.len() < 314 {
        if taken.len() % 97 == 50 {
            // A message taken and rolled back keeps its place: it comes out next again.
            app.begin(None).unwrap();
            let again = app.take_body("P");
            app.abort().unwrap();
            assert_eq!(app.take_body("P"), again, "a rolled back message keeps its place");
            taken.push(again);
            continue;
        }
        taken.push(app.take_body("P"));
    }
    let mut expected: Vec<String> = (0..5).map(|i| format!("60-{i:03}")).collect();
    expected.extend((1..305).map(|i| format!("30-{i:03}")));
    expected.extend((0..5).map(|i| format!("10-{i:03}")));
    // Tuxedo's rule lets a lower priority out after every ten higher ones while it waits:
    // within each priority, first in first out, and every message once.
    assert_eq!(taken[..5], expected[..5], "the highest priority first");
    for prio in ["60-", "30-", "10-"] {
        let got: Vec<&String> = taken.iter().filter(|b| b.starts_with(prio)).collect();
        let want: Vec<&String> = expected.iter().filter(|b| b.starts_with(prio)).collect();
        assert_eq!(got, want, "priority {prio} in order, each once");
    }
    let ten = taken.iter().position(|b| b.starts_with("10-")).unwrap();
    assert_eq!(ten, 10, "the first lower one after ten higher ones: {taken:?}");
    crate::app::nothing_on(&mut app, "P");
}

/// After `kill -9`, opening the device does not walk the whole file to rebuild redb's
/// allocator (seconds per gigabyte): every durable commit records it. Checkpoints are taken
/// after every group here, so the crash comes after durable commits of queue traffic.
#[test]
fn a_crash_leaves_nothing_to_walk_at_the_next_start() {
    use crate::support::Daemon;
    let env = Env::new();
    let steps = env.path("steps");
    let fault = format!("count:{}+checkpoints", steps.display());
    let log = |n: u32| env.path(&format!("qmd{n}.log"));
    let start = |n: u32, vars: &[(&str, &str)]| {
        let log = log(n);
        let args = ["-l", "3", "-g", log.to_str().expect("UTF-8")];
        Daemon::start_with_env(&env.device, &args, vars)
    };
    let mut daemon = start(1, &[("QM_FAULT", &fault)]);
    setup(&env, 300, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for i in 0..30 {
        app.put("Q", format!("m{i:02}").as_bytes());
    }
    assert_eq!(body(&app.take("Q")), "m00");
    drop(app);
    daemon.signal("KILL");

    let _daemon = start(2, &[]);
    let mut app = App::connect(&env);
    let bodies: Vec<String> = app.drain("Q").iter().map(body).collect();
    let expected: Vec<String> = (1..30).map(|i| format!("m{i:02}")).collect();
    assert_eq!(bodies, expected, "every acknowledged write is there");
    let text = std::fs::read_to_string(log(2)).unwrap_or_default();
    assert!(!text.contains("was not closed cleanly"), "the start walked the file:\n{text}");
}

/// Random traffic on a FIFO queue (persistent and non-persistent messages, correlation ids,
/// dequeues first, by corrid and by msgid, rollbacks, restarts) against a model of the queue:
/// every dequeue takes the message the model says, and what is left at the end is exactly
/// the model's. Deep enough for the queue's head to be read from disk again and again.
#[test]
fn random_traffic_with_restarts_matches_a_model() {
    use crate::app::{App as DataApp, ERRQ, space_with};
    use qm_common::Diagnostic;
    use qm_common::message::{MsgId, Qos};

    struct Msg {
        body: String,
        corrid: Vec<u8>,
        persistent: bool,
        id: MsgId,
    }
    let queues = [ERRQ, "F fifo none 100 0 100% 0% ''"];
    let env = space_with("-n 64B", "40000 1800 8 4 16 1000 ERRQ n 16", &queues);
    stop_and_wait(&env);
    let mut daemon = env.start_daemon(&[]);
    let mut app = DataApp::connect(&env);
    let mut model: Vec<Msg> = Vec::new();
    let (mut restarts, mut deepest) = (0, 0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let expect = |got: QmResultMsg, want: Option<&Msg>, what: &str| match (got, want) {
        (Ok(m), Some(w)) => assert_eq!(body(&m), w.body, "{what}"),
        (Err(e), None) => assert_eq!(e.diagnostic, Diagnostic::NoMsg, "{what}: {e}"),
        (got, want) => panic!(
            "{what}: got {:?}, the model has {:?}",
            got.map(|m| body(&m)),
            want.map(|w| &w.body)
        ),
    };
    for step in 0..800 {
        let roll = next() % 100;
        let corrid = format!("c{}", next() % 4).into_bytes();
        match roll {
            0..=64 => {
                let persistent = roll < 55;
                let with_corrid = next() % 3 == 0;
                let delivery = Some(if persistent { Qos::Persistent } else { Qos::NonPersistent });
                let corrid = if with_corrid { corrid } else { Vec::new() };
                let ctl = EnqueueCtl { corrid: corrid.clone(), delivery, ..EnqueueCtl::default() };
                let text = format!("m{step:03}");
                let id = app.put_with("F", &text, ctl);
                model.push(Msg { body: text, corrid, persistent, id });
            }
            65..=79 => {
                let got = app.dequeue("F", &DequeueCtl::default());
                expect(got, model.first(), &format!("step {step}: dequeue"));
                if !model.is_empty() {
                    model.remove(0);
                }
            }
            80..=86 => {
                let ctl =
                    DequeueCtl { select: Select::Corrid(corrid.clone()), ..Default::default() };
                let at = model.iter().position(|m| m.corrid == corrid);
                expect(
                    app.dequeue("F", &ctl),
                    at.map(|i| &model[i]),
                    &format!("step {step}: by corrid"),
                );
                if let Some(i) = at {
                    model.remove(i);
                }
            }
            87..=91 if !model.is_empty() => {
                let i = (next() % model.len() as u64) as usize;
                let got = app.take_id("F", &model[i].id);
                expect(got, Some(&model[i]), &format!("step {step}: by msgid"));
                model.remove(i);
            }
            92..=96 => {
                app.begin(None).unwrap();
                let got = app.dequeue("F", &DequeueCtl::default());
                expect(got, model.first(), &format!("step {step}: dequeue in a transaction"));
                app.abort().unwrap();
            }
            97.. => {
                drop(app);
                stop_and_wait(&env);
                drop(daemon);
                daemon = env.start_daemon(&[]);
                app = DataApp::connect(&env);
                model.retain(|m| m.persistent);
                restarts += 1;
            }
            _ => {}
        }
        deepest = deepest.max(model.len());
    }
    assert!(restarts >= 5 && deepest > 200, "{restarts} restarts, {deepest} deep at most");
    let left = app.drain("F");
    let want: Vec<&String> = model.iter().map(|m| &m.body).collect();
    assert_eq!(left.iter().collect::<Vec<_>>(), want, "what is left is the model's");
    drop(daemon);
}

type QmResultMsg = qm_common::QmResult<qm_common::message::Message>;

/// Writes that are durable in the journal but not yet in redb (`QM_FAULT=defer` keeps them
/// there until something needs them): a dequeued message stays gone for every way of
/// finding it, a peek sees a new message's body, a queue space loaded again sees them all,
/// and after `kill -9` the journal brings back exactly what was acknowledged.
#[test]
fn writes_not_yet_in_redb_are_seen_by_every_reader() {
    use crate::support::Daemon;
    use qm_common::Diagnostic;
    use qm_common::message::MsgId;
    let env = Env::new();
    let mut daemon = Daemon::start_with_env(&env.device, &[], &[("QM_FAULT", "defer")]);
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let ids: Vec<MsgId> = (0..300).map(|i| app.put("Q", format!("m{i:03}").as_bytes())).collect();
    let fresh = app.put("Q", b"fresh");
    let by_id = |id: &MsgId, peek: bool| DequeueCtl {
        select: Select::Msgid(id.clone()),
        peek,
        ..DequeueCtl::default()
    };
    assert_eq!(body(&app.dequeue_with("Q", &by_id(&fresh, true)).unwrap()), "fresh");
    // Unloading and loading the space again puts the messages in redb, on disk alone.
    drop(app);
    env.c("ipcrm -f -y QS").ok();
    let mut app = App::connect(&env);
    // Their removals are deferred: past several heads read from disk, each message once.
    let taken: Vec<String> = (0..150).map(|_| body(&app.take("Q"))).collect();
    let expected: Vec<String> = (0..150).map(|i| format!("m{i:03}")).collect();
    assert_eq!(taken, expected, "first in, first out");
    for peek in [true, false] {
        let gone = app.dequeue_with("Q", &by_id(&ids[10], peek)).expect_err("dequeued before");
        assert_eq!(gone.diagnostic, Diagnostic::NoMsg, "{gone}");
    }
    assert_eq!(body(&app.dequeue_with("Q", &by_id(&ids[200], true)).unwrap()), "m200");
    assert_eq!(counts(&stat(&env, "Q"))[..2], [151, 151]);
    let listed = env.c("qopen QS; qset Q; qlist").ok().stdout.clone();
    let listed: Vec<&str> = listed
        .lines()
        .map(|l| l.split('|').next().unwrap_or("").trim())
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let mut left: Vec<String> = ids[150..].iter().map(ToString::to_string).collect();
    left.push(fresh.to_string());
    assert_eq!(listed, left, "qlist shows the messages left, none taken");

    drop(app);
    env.c("ipcrm -f -y QS").ok();
    assert_eq!(counts(&stat(&env, "Q"))[..2], [151, 151], "the same after a new load");
    let mut app = App::connect(&env);
    for i in 0..10 {
        app.put("Q", format!("n{i}").as_bytes());
    }
    let next: Vec<String> = (0..5).map(|_| body(&app.take("Q"))).collect();
    assert_eq!(next, ["m150", "m151", "m152", "m153", "m154"]);
    drop(app);

    daemon.signal("KILL");
    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    let left: Vec<String> = app.drain("Q").iter().map(body).collect();
    let mut expected: Vec<String> = (155..300).map(|i| format!("m{i:03}")).collect();
    expected.push("fresh".into());
    expected.extend((0..10).map(|i| format!("n{i}")));
    assert_eq!(left, expected, "every acknowledged write, and no dequeued message, after kill -9");
}

/// A client's first request naming a queue space reads the space's record from the
/// device, which deferred writes never touch: clients that come and go while writes are
/// deferred (`QM_FAULT=defer` keeps them so) leave them deferred. Each such first request
/// used to apply them all, under the writer's lock, before it was served. An
/// administrator's write still applies them first.
#[test]
fn clients_opening_a_queue_space_leave_deferred_writes_deferred() {
    use crate::support::Daemon;
    let env = Env::new();
    let log = env.path("qmd.log");
    let args = ["-l", "3", "-g", log.to_str().unwrap()];
    let _daemon = Daemon::start_with_env(&env.device, &args, &[("QM_FAULT", "defer")]);
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    let applied = || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.matches("deferred writes applied first").count()
    };
    // The first client loads the queue space, which applies what is deferred by then.
    let mut app = App::connect(&env);
    for i in 0..100 {
        app.put("Q", format!("m{i:03}").as_bytes());
    }
    let before = applied();
    for i in 0..10 {
        let mut other = App::connect(&env);
        assert_eq!(body(&other.take("Q")), format!("m{i:03}"));
    }
    assert_eq!(applied(), before, "ten clients opened QS and applied the deferred writes");
    assert_eq!(counts(&stat(&env, "Q"))[..2], [90, 90]);
    env.c("qopen QS; qcreate Q2 fifo none 0 0 100% 0% ''").ok();
    eventually("the new queue's definition applies the deferred writes", || applied() > before);
}

/// The msgid high-water mark is a state value, deferred like message writes when it comes
/// alone (`QM_FAULT=defer` keeps it so): non-persistent enqueues write nothing else, yet
/// after the queue space is loaded again, and after `kill -9` and the journal's replay, a
/// new msgid is above every one handed out before.
#[test]
fn a_deferred_msgid_mark_survives_a_reload_and_a_kill() {
    use crate::support::Daemon;
    let env = Env::new();
    let mut daemon = Daemon::start_with_env(&env.device, &[], &[("QM_FAULT", "defer")]);
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    let mut seen = Vec::new();
    let mut app = App::connect(&env);
    let pass = |app: &mut App| {
        let id = app.put_np("Q", b"np");
        app.take("Q");
        id
    };
    // Past the first mark (it runs 4,096 ahead), so that a later one is written too.
    seen.extend((0..4200).map(|_| pass(&mut app)));
    drop(app);
    env.c("ipcrm -f -y QS").ok();
    let mut app = App::connect(&env);
    let after_reload = app.put_np("Q", b"after reload");
    assert!(seen.iter().all(|id| *id < after_reload), "{after_reload} after a reload");
    seen.push(after_reload);
    seen.extend((0..4200).map(|_| pass(&mut app)));
    drop(app);
    daemon.signal("KILL");
    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    let after_kill = app.put("Q", b"after kill");
    let above = seen.iter().filter(|id| **id >= after_kill).count();
    assert_eq!(above, 0, "{after_kill} must be above the {} msgids handed out", seen.len());
}

/// The scheduling policy (field 41 of `/proc/PID/task/TID/stat`) of each applier thread
/// of process `pid`.
fn applier_policies(pid: u32) -> Vec<i64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    let mut policies = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The fields after the name, which may hold spaces, start with the third.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        if comm.starts_with("qm-applier") {
            policies.push(fields.get(41 - 3).and_then(|f| f.parse().ok()).unwrap_or(-1));
        }
    }
    policies
}

/// Whether a thread of this process may go to `SCHED_IDLE` and come back, as qmd asks
/// before it puts its appliers there.
fn may_come_back_from_idle() -> bool {
    let set = |policy| {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a valid parameter for both policies, on the calling thread.
        unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
    };
    std::thread::spawn(move || set(libc::SCHED_IDLE) && set(libc::SCHED_OTHER)).join().unwrap()
}

/// An applier waits behind every other thread (`SCHED_IDLE`, shown as `IDL` by
/// `ps -L -o cls`) where the daemon may bring it back while something waits for its
/// commit, here as root; `QM_APPLIER_BACKGROUND=0` keeps it at the normal policy. Either
/// way the messages written before a stop are there after it.
#[test]
fn appliers_run_in_the_background() {
    use crate::support::Daemon;
    let lowered = if may_come_back_from_idle() { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    for (vars, expected) in [(&[][..], lowered), (&[("QM_APPLIER_BACKGROUND", "0")][..], 0)] {
        let env = Env::new();
        let daemon = Daemon::start_with_env(&env.device, &[], vars);
        setup(&env, 300, &["Q fifo none 0 0 100% 0% ''"]);
        let mut app = App::connect(&env);
        for i in 0..20 {
            app.put("Q", format!("m{i:02}").as_bytes());
        }
        let pid = daemon.pid;
        eventually("an applier thread in its place", || {
            let policies = applier_policies(pid);
            !policies.is_empty() && policies.iter().all(|&p| p == i64::from(expected))
        });
        drop(app);
        stop_and_wait(&env);
        drop(daemon);
        let _daemon = Daemon::start_with_env(&env.device, &[], vars);
        let mut app = App::connect(&env);
        let left: Vec<String> = app.drain("Q").iter().map(body).collect();
        assert_eq!(left, (0..20).map(|i| format!("m{i:02}")).collect::<Vec<_>>(), "{vars:?}");
    }
}

/// A daemon run by an ordinary user, whose `RLIMIT_NICE` does not let a thread come back
/// from `SCHED_IDLE`, leaves its appliers at the normal policy: lowered, they could not be
/// raised while the writer waits for them. It needs root and a second user (as in CI).
#[test]
fn an_unprivileged_daemon_keeps_its_appliers_at_the_normal_policy() {
    use std::os::unix::process::CommandExt;
    let user = crate::users::User::create();
    let env = Env::new();
    let device = user.own_dir(&env).join("QUE");
    let mut cmd = user.command(crate::support::QMD);
    cmd.arg(&device).args(["-l", "3"]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            match libc::setrlimit(libc::RLIMIT_NICE, &none) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let qmd = crate::users::Qmd::start(cmd);
    let commands = format!(
        "crdl {} 0 2000; qspc QS 40001 300 4 16 16 100 '' n 16; qopen QS; \
         qcreate Q fifo none 0 0 100% 0% ''",
        device.display()
    );
    user.qmadmin(&device, &["--no-start"], &commands).ok();
    let policies = applier_policies(qmd.pid);
    assert!(!policies.is_empty(), "qmd {} has no applier thread", qmd.pid);
    assert!(policies.iter().all(|&p| p == i64::from(libc::SCHED_OTHER)), "{policies:?}");
    user.qmadmin(&device, &["--no-start"], "daemon stop").ok();
    let said = qmd.finish();
    assert!(said.contains("appliers run at the normal policy"), "{said}");
}
