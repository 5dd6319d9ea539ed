//! Queue attributes (seed 004): maximum length with enqueues that wait for room in arrival
//! order, maximum message size, enqueue and dequeue switched off, annotation, creation and
//! last activity, empty idle expiration, persistence modes; set by qcreate/qchange options,
//! shown by qinfo, kept by qexport/qimport and across restarts.

use crate::app::{App, ERRQ, FIFO_Q, count, eventually, now, qinfo, refused, space};
use crate::support::Env;
use qm_common::Diagnostic;
use qm_common::message::{DequeueCtl, EnqueueCtl, Qos};
use qm_common::queue::{Persistence, QueueAttrs, QueueInfo};
use std::time::Duration;

fn info(env: &Env, queue: &str) -> QueueInfo {
    qinfo(env)
        .queues
        .into_iter()
        .find(|q| q.def.name == queue)
        .unwrap_or_else(|| panic!("no queue {queue}"))
}

fn attrs(env: &Env, queue: &str) -> QueueAttrs {
    info(env, queue).def.attrs
}

fn waiting_enqueues(env: &Env, queue: &str) -> u64 {
    info(env, queue).waiting_enqueues
}

/// Options set attributes at qcreate and qchange, which changes only those given; qinfo
/// shows them (JSON and verbose); bad values are refused naming the field and range, and
/// change nothing; Tuxedo's positional grammar is untouched.
#[test]
fn options_set_and_show_attributes() {
    let env = space(&[ERRQ]);
    let before = now();
    env.c("qopen QS; qcreate -L 5 -S 100 -E off -D off -a 'orders from the web shop' -I 3600 -P volatile A fifo none 0 0 100% 0% ''")
        .ok()
        .stdout_has("Queue 'A' created");
    let a = attrs(&env, "A");
    assert_eq!(
        (a.max_messages, a.max_size, a.enqueue_enabled, a.dequeue_enabled, a.idle_expiry),
        (Some(5), Some(100), false, false, Some(3600))
    );
    assert_eq!(a.annotation, "orders from the web shop");
    assert_eq!(a.persistence, Persistence::Volatile);
    assert!(a.created >= before && a.created <= now(), "created {}", a.created);

    // Only what is given changes; the positional answers are Tuxedo's as before.
    env.c("qopen QS; qchange -L none -E on A none 0 0 100% 0% ''").ok();
    let changed = attrs(&env, "A");
    assert_eq!((changed.max_messages, changed.enqueue_enabled), (None, true));
    assert_eq!(QueueAttrs { max_messages: None, enqueue_enabled: true, ..a.clone() }, changed);

    // A queue made the Tuxedo way has the defaults.
    env.c(&format!("qopen QS; qcreate {FIFO_Q}")).ok();
    let plain = attrs(&env, "Q");
    assert_eq!(QueueAttrs { created: plain.created, ..QueueAttrs::default() }, plain);

    // Verbose qinfo has a table of them.
    let shown = env.c("qopen QS; verbose; qinfo A");
    shown.ok().stdout_has("max length").stdout_has("persistence").stdout_has("volatile");
    shown.stdout_has("orders from the web shop");

    for (option, field) in [
        ("-L 0", "Maximum length: '0' is invalid; it must be 1 to"),
        ("-L lots", "Maximum length: 'lots' is invalid"),
        ("-S 4194305", "Maximum message size: '4194305' is invalid; it must be 1 to 4194304 bytes"),
        ("-E maybe", "Enqueue: 'maybe' is invalid; use on or off"),
        ("-D 2", "Dequeue: '2' is invalid; use on or off"),
        ("-I 0", "Empty idle expiration: '0' is invalid; it must be 1 to 31536000 seconds"),
        ("-P sometimes", "Persistence mode: 'sometimes' is invalid"),
    ] {
        env.c(&format!("qopen QS; qchange {option} A none 0 0 100% 0% ''"))
            .failed()
            .stderr_has(field);
    }
    let long = "x".repeat(257);
    env.c(&format!("qopen QS; qchange -a {long} A none 0 0 100% 0% ''"))
        .failed()
        .stderr_has("Annotation: 257 characters is over the limit of 256");
    assert_eq!(attrs(&env, "A"), changed, "refused changes change nothing");
}

/// A queue at its maximum length refuses an enqueue at once (QMENOSPACE, naming the queue
/// and its limit); enqueues in open transactions count; `-w` waits for room.
#[test]
fn maximum_length_refuses_or_waits() {
    let env = space(&[ERRQ, "L fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qchange -L 2 L none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    app.put("L", "1");
    app.begin(None).unwrap();
    app.put("L", "2");
    let mut other = App::connect(&env);
    let e = refused(other.enqueue("L", b"3", &EnqueueCtl::default()), Diagnostic::NoSpace);
    assert_eq!(
        e.message,
        "Queue L is full: it holds 2 messages, its maximum length (qchange -L sets it)"
    );
    app.abort().unwrap();
    other.put("L", "3");
    refused(other.enqueue("L", b"4", &EnqueueCtl::default()), Diagnostic::NoSpace);

    // qmadmin: refused at once, or after the wait it was given.
    env.c("qopen QS; qenqueue L x").failed().stderr_has("Queue L is full").stderr_has("QMENOSPACE");
    let started = std::time::Instant::now();
    env.c("qopen QS; qenqueue -w 1 L x").failed().stderr_has(
        "Queue L is full: it holds 2 messages, its maximum length and no room came within 1 s",
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A waiting enqueue gets in once a dequeue makes room.
    let device = env.device.clone();
    let waiter = std::thread::spawn(move || {
        let ctl = EnqueueCtl { wait_ms: Some(30_000), ..EnqueueCtl::default() };
        App::connect_to(&device).enqueue("L", b"waited", &ctl)
    });
    eventually("the enqueue waits", || waiting_enqueues(&env, "L") == 1);
    assert_eq!(app.take_body("L"), "1");
    waiter.join().unwrap().expect("the waiting enqueue gets in");
    assert_eq!(app.drain("L"), ["3", "waited"]);
}

/// Enqueues waiting for room get it in the order they came; a newcomer does not pass them.
#[test]
fn waiting_enqueues_are_served_in_arrival_order() {
    let env = space(&[ERRQ, "L fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qchange -L 1 L none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    app.put("L", "first");
    let wait = |body: &'static str| {
        let device = env.device.clone();
        std::thread::spawn(move || {
            let ctl = EnqueueCtl { wait_ms: Some(30_000), ..EnqueueCtl::default() };
            App::connect_to(&device).enqueue("L", body.as_bytes(), &ctl)
        })
    };
    let a = wait("a");
    eventually("a waits", || waiting_enqueues(&env, "L") == 1);
    let b = wait("b");
    eventually("b waits", || waiting_enqueues(&env, "L") == 2);
    assert_eq!(app.take_body("L"), "first");
    a.join().unwrap().expect("a gets in first");
    assert_eq!(waiting_enqueues(&env, "L"), 1, "b still waits");
    // Room made while b waits is b's, not a newcomer's.
    assert_eq!(app.take_body("L"), "a");
    b.join().unwrap().expect("b gets in next");
    refused(app.enqueue("L", b"late", &EnqueueCtl::default()), Diagnostic::NoSpace);
    assert_eq!(app.drain("L"), ["b"]);
}

/// The maximum message size refuses a larger body (QMEINVAL, naming queue and limit).
#[test]
fn maximum_message_size() {
    let env = space(&[ERRQ, FIFO_Q]);
    env.c("qopen QS; qchange -S 10 Q none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    app.put("Q", "ten bytes!");
    let e = refused(app.enqueue("Q", b"eleven byte", &EnqueueCtl::default()), Diagnostic::Inval);
    assert_eq!(
        e.message,
        "Message body: 11 bytes is over queue Q's maximum message size of 10 bytes"
    );
    assert_eq!(count(&env, "Q"), 1);
}

/// Enqueue or dequeue switched off is refused with its own diagnostic; switched on again,
/// it works. Messages stay where they are meanwhile.
#[test]
fn enqueue_and_dequeue_switched_off() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "kept");
    env.c("qopen QS; qchange -E off -D off Q none 0 0 100% 0% ''").ok();
    let e = refused(app.enqueue("Q", b"x", &EnqueueCtl::default()), Diagnostic::EnqueueDisabled);
    assert_eq!(e.message, "Queue Q does not take enqueues now (qchange -E on allows them)");
    let e = refused(app.dequeue("Q", &DequeueCtl::default()), Diagnostic::DequeueDisabled);
    assert_eq!(e.message, "Queue Q does not give out messages now (qchange -D on allows it)");
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    refused(app.dequeue("Q", &peek), Diagnostic::DequeueDisabled);
    env.c("qopen QS; qenqueue Q y").failed().stderr_has("QMEENQDISABLED");
    env.c("qopen QS; qdequeue Q").failed().stderr_has("QMEDEQDISABLED");
    assert_eq!(count(&env, "Q"), 1);

    env.c("qopen QS; qchange -E on Q none 0 0 100% 0% ''").ok();
    app.put("Q", "new");
    refused(app.dequeue("Q", &DequeueCtl::default()), Diagnostic::DequeueDisabled);
    env.c("qopen QS; qchange -D on Q none 0 0 100% 0% ''").ok();
    assert_eq!(app.drain("Q"), ["kept", "new"]);
}

/// persistent stores every message, volatile none (a message that asks for disk is
/// accepted with a warning), conditional as the message asks; across a restart.
#[test]
fn persistence_modes() {
    let env = space(&[ERRQ, "P fifo none 0 0 100% 0% ''", "V fifo none 0 0 100% 0% ''", FIFO_Q]);
    env.c("qopen QS; qchange -P persistent P none 0 0 100% 0% ''; qchange -P volatile V none 0 0 100% 0% ''")
        .ok();
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    let mut app = App::connect(&env);
    app.put_with("P", "asked for memory", np.clone());
    app.put_with("Q", "conditional memory", np.clone());
    app.put("Q", "conditional disk");
    env.c("qopen QS; qenqueue V 'asked for disk'")
        .ok()
        .stderr_has("WARN: queue V is volatile: message")
        .stderr_has("is kept in memory only and is lost when qmd stops");
    app.put_with("V", "asked for memory", np);
    assert_eq!(info(&env, "P").usage.persistent_messages, 1);
    assert_eq!(info(&env, "V").usage.nonpersistent_messages, 2);
    drop(app);

    env.stop_daemon();
    // qmadmin starts the daemon again.
    env.c("qopen QS").ok();
    let mut app = App::connect(&env);
    let kept = app.take("P");
    assert_eq!(kept.body, b"asked for memory");
    assert_eq!(kept.delivery, Qos::Persistent);
    assert_eq!(app.drain("Q"), ["conditional disk"]);
    assert_eq!(app.drain("V"), Vec::<String>::new(), "a volatile queue keeps nothing");
}

/// The last activity is the last committed enqueue or dequeue (the creation time before
/// any) and survives a restart.
#[test]
fn last_activity_is_kept() {
    let env = space(&[ERRQ, FIFO_Q]);
    let created = attrs(&env, "Q").created;
    assert_eq!(info(&env, "Q").last_activity, created);
    std::thread::sleep(Duration::from_millis(1100));
    let mut app = App::connect(&env);
    app.put("Q", "x");
    let after = info(&env, "Q").last_activity;
    assert!(after > created && after <= now(), "{after} after {created}");
    drop(app);
    env.stop_daemon();
    assert_eq!(info(&env, "Q").last_activity, after);
}

/// A queue with an empty idle expiration is destroyed once it has been empty and idle that
/// long; one holding a message, or without the attribute, stays.
#[test]
fn empty_idle_queues_are_destroyed() {
    let env = space(&[ERRQ, FIFO_Q]);
    env.c("qopen QS; qcreate -I 1 IDLE fifo none 0 0 100% 0% ''; qcreate -I 1 BUSY fifo none 0 0 100% 0% ''")
        .ok();
    let mut app = App::connect(&env);
    app.put("BUSY", "holds it");
    let names =
        |env: &Env| -> Vec<String> { qinfo(env).queues.into_iter().map(|q| q.def.name).collect() };
    eventually("IDLE is destroyed", || !names(&env).contains(&"IDLE".to_string()));
    std::thread::sleep(Duration::from_millis(1500));
    let left = names(&env);
    assert!(left.contains(&"BUSY".to_string()) && left.contains(&"Q".to_string()), "{left:?}");
    assert_eq!(app.take_body("BUSY"), "holds it");
    eventually("BUSY is destroyed once empty and idle", || {
        !names(&env).contains(&"BUSY".to_string())
    });
    refused(app.enqueue("BUSY", b"x", &EnqueueCtl::default()), Diagnostic::BadQueue);
    assert!(names(&env).contains(&"Q".to_string()));
}

/// qexport carries the attributes; qimport creates the queue with them.
#[test]
fn export_keeps_attributes() {
    let env = space(&[ERRQ]);
    env.c("qopen QS; qcreate -L 7 -a 'kept by export' -P persistent A fifo none 0 0 100% 0% ''")
        .ok();
    let stream = env.path("a.qmx");
    env.c(&format!("qopen QS; qexport {}", stream.display())).ok();
    let other = Env::new();
    crate::app::setup(&other, "-n 16B", crate::app::PARAMS, &[ERRQ]);
    // The import comes a second later at least: it keeps the queue's creation time.
    let created = attrs(&env, "A").created;
    eventually("a second passed", || now() > created);
    other.c(&format!("qopen QS; qimport {}", stream.display())).ok();
    let a = attrs(&other, "A");
    assert_eq!((a.max_messages, a.persistence), (Some(7), Persistence::Persistent));
    assert_eq!(a.annotation, "kept by export");
    assert_eq!(a.created, created, "the import keeps the creation time");
}

/// An alias (which may hold `/`) names its queue everywhere a queue name is taken:
/// enqueue, dequeue, qmadmin's message commands, qinfo, qchange; it survives a restart,
/// cannot be taken twice, and goes with qunalias.
#[test]
fn aliases_name_their_queue() {
    let env = space(&[
        ERRQ,
        "HOTLINE fifo none 0 0 1m 0m 'echo \"$QM_QUEUE $QM_ALIASES\" > fired.txt'",
        FIFO_Q,
    ]);
    env.c("qopen QS; qalias HOTLINE cf/hotline")
        .ok()
        .stdout_has("Queue 'HOTLINE' answers to 'cf/hotline' too");
    let mut app = App::connect(&env);
    app.put("cf/hotline", "by alias");
    assert_eq!(count(&env, "HOTLINE"), 1);
    let fired = env.path("fired.txt");
    eventually("the threshold command ran", || {
        std::fs::read_to_string(&fired).is_ok_and(|t| t == "HOTLINE cf/hotline\n")
    });
    env.c("qopen QS; qenqueue cf/hotline 'from a script'").ok();
    assert_eq!(crate::app::qlist(&env, "cf/hotline").len(), 2);
    let shown: qm_common::queue::QueueListing = env.json("qopen QS; qinfo cf/hotline");
    assert_eq!(shown.queues[0].def.name, "HOTLINE");
    assert_eq!(shown.queues[0].def.attrs.aliases, ["cf/hotline"]);
    env.c("qopen QS; qchange -a 'answers the hotline' cf/hotline none 0 0 100% 0% ''").ok();
    assert_eq!(attrs(&env, "HOTLINE").annotation, "answers the hotline");

    for (command, refusal) in [
        ("qalias Q cf/hotline", "Alias cf/hotline is taken: it is an alias of queue HOTLINE"),
        ("qalias Q HOTLINE", "Alias HOTLINE is taken: it is a queue"),
        ("qalias Q 'two words'", "Alias: 'two words' is invalid"),
        ("qalias NOSUCH x", "Queue NOSUCH does not exist"),
        (
            "qcreate cf/hotline fifo none 0 0 100% 0% ''",
            "'cf/hotline' is an alias of queue HOTLINE",
        ),
        ("qunalias nothing", "Alias nothing is no alias in queue space QS"),
    ] {
        env.c(&format!("qopen QS; {command}")).failed().stderr_has(refusal);
    }

    drop(app);
    env.stop_daemon();
    env.c("qopen QS").ok();
    let mut app = App::connect(&env);
    assert_eq!(app.drain("cf/hotline"), ["by alias", "from a script"]);
    env.c("qopen QS; qunalias cf/hotline")
        .ok()
        .stdout_has("Alias 'cf/hotline' of queue 'HOTLINE' removed");
    refused(app.enqueue("cf/hotline", b"x", &EnqueueCtl::default()), Diagnostic::BadQueue);
    app.put("HOTLINE", "by name");
}

/// An alias given while a session is already at work in the queue space names its queue
/// for that session's next request, though the session had never met an alias there.
#[test]
fn an_alias_given_during_a_session_names_its_queue_at_once() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "by name");
    env.c("qopen QS; qalias Q late/alias").ok();
    app.put("late/alias", "by alias");
    assert_eq!(count(&env, "Q"), 2);
    assert_eq!(app.drain("late/alias"), ["by name", "by alias"]);
}

/// A waiting enqueue whose client goes away leaves the line: it is not counted any more,
/// and its message never gets in when room comes.
#[test]
fn a_waiting_enqueue_leaves_with_its_client() {
    let env = space(&[ERRQ, "L fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qchange -L 1 L none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    app.put("L", "first");
    let mut waiter = env.qmadmin_cmd();
    waiter
        .args(["--no-start", "-c", "qopen QS; qenqueue -w 60 L gone"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut waiter = waiter.spawn().unwrap();
    eventually("the enqueue waits", || waiting_enqueues(&env, "L") == 1);
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    eventually("the line is empty", || waiting_enqueues(&env, "L") == 0);
    assert_eq!(app.take_body("L"), "first");
    app.put("L", "second");
    assert_eq!(app.drain("L"), ["second"], "the departed client's message got in");
}

/// Rights by alias for a principal that is not admin: a grant on the queue covers requests
/// made by its alias, and an alias gives nothing on a queue not granted.
#[test]
fn rights_follow_the_queue_an_alias_names() {
    use qm_common::address::Address;
    use qm_common::client::Client;
    use qm_common::protocol::ClientKind;
    let _ports = crate::network::scanning();
    let (env, _daemon, file) = crate::network::listening(&[]);
    env.c("qopen QS; qcreate HOTLINE fifo none 0 0 100% 0% ''; qalias HOTLINE cf/hotline").ok();
    env.c("qgrant anonymous enqueue,browse QS/HOTLINE").ok();
    let address: Address = file.address();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut anon =
        rt.block_on(Client::connect_addr(&address, "e2e-alias", ClientKind::Application)).unwrap();
    let ctl = EnqueueCtl::default();
    rt.block_on(anon.enqueue("QS", "cf/hotline", b"by alias", &ctl)).unwrap();
    let e = rt.block_on(anon.enqueue("QS", "Q", b"not granted", &ctl)).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::Perm, "{e}");
    let e = rt.block_on(anon.dequeue("QS", "cf/hotline", &DequeueCtl::default())).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::Perm, "{e}");
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    let m = rt.block_on(anon.dequeue("QS", "cf/hotline", &peek)).unwrap();
    assert_eq!(m.body, b"by alias");
    // A grant on Q does not reach HOTLINE through an alias of it.
    env.c("qrevoke anonymous enqueue,browse QS/HOTLINE; qgrant anonymous enqueue QS/Q").ok();
    let e = rt.block_on(anon.enqueue("QS", "cf/hotline", b"x", &ctl)).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::Perm, "{e}");
    assert_eq!(count(&env, "HOTLINE"), 1);
}
