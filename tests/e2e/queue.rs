//! Queues of the open queue space: qcreate's announced defaults, qchange's current values
//! as defaults, qdestroy, qinfo, and the error queue's notes.

use crate::support::Env;
use qm_common::queue::{DefaultExpiration, DeliveryPolicy, QueueDef, QueueListing};

/// A device with queue space QS (4 queues, error queue ERRQ).
fn setup() -> Env {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 ERRQ n 16").ok();
    env
}

fn def(env: &Env, name: &str) -> QueueDef {
    let listing: QueueListing = env.json(&format!("qopen QS; qinfo {name}"));
    assert_eq!(listing.queues.len(), 1);
    listing.queues.into_iter().next().unwrap().def
}

/// Empty answers to qcreate's prompts take Tuxedo's defaults, each announced.
#[test]
fn qcreate_announces_defaults() {
    let env = setup();
    let run = env.script("qopen QS\nqcreate\nA\n\n\n\n\n\n\n\n");
    run.ok()
        .stdout_has("Queue name: queue order (priority, time, fifo, lifo): Default queue order: fifo\n")
        .stdout_has("Default out-of-ordering enqueuing: none\n")
        .stdout_has("Default retries: 0\n")
        .stdout_has("Default retry delay: 0\n")
        .stdout_has("[default=100%]): Default high threshold: 100%\n")
        .stdout_has("Reset (low) limit for queue capacity warning [default=0%]: Default low threshold: 0%\n")
        .stdout_has("queue capacity command: No default queue capacity command\nQueue 'A' created");
    let made = def(&env, "A");
    assert!(made.attrs.created > 0, "the daemon records when the queue was made");
    let mut expected = QueueDef::new("A");
    expected.attrs.created = made.attrs.created;
    assert_eq!(made, expected);
    // An empty queue name is warned about and asked again.
    env.script("qopen QS\nqcreate\n\nB\n\n\n\n\n\n\n\n")
        .ok()
        .stderr_has("WARN: Queue name must be specified")
        .stdout_has("Queue 'B' created");
}

/// qchange offers the current values as defaults: empty answers keep them. An empty
/// positional command clears it; -d, -e and -n change only when given.
#[test]
fn qchange_keeps_and_changes() {
    let env = setup();
    env.c("qopen QS; qcr A priority,fifo top 2 5 50m 5m \"run me\"").ok();
    let before = def(&env, "A");
    let run = env.script("qopen QS\nqchange A\n\n\n\n\n\n\n");
    run.ok()
        .stdout_has("out-of-ordering enqueuing (top, msgid, [default=top]): ")
        .stdout_has("retries [default=2]: ")
        .stdout_has("retry delay in seconds [default=5]: ")
        .stdout_has("m for messages [default=50m]): ")
        .stdout_has("Reset (low) limit for queue capacity warning [default=5m]: ")
        .stdout_has("queue capacity command [default=run me]: ");
    assert_eq!(def(&env, "A"), before, "empty answers keep every value");

    env.c("qopen QS; qchange -d nonpersist -e +60 -n 50%,10%,np A msgid 3 7 80% 20% \"\"").ok();
    let changed = def(&env, "A");
    assert!(changed.out_of_order.msgid && !changed.out_of_order.top);
    assert_eq!((changed.retries, changed.retry_delay), (3, 7));
    assert_eq!(
        (changed.threshold.high.to_string(), changed.threshold.low.to_string()),
        ("80%".to_string(), "20%".to_string())
    );
    assert_eq!(changed.threshold.command, "", "an empty positional command clears it");
    assert_eq!(changed.delivery, DeliveryPolicy::NonPersist);
    assert_eq!(changed.expiration, DefaultExpiration::Relative(60));
    assert_eq!(changed.nonpersistent_threshold.command, "np");
    assert_eq!(changed.order, before.order, "the order cannot change");

    // Without options, -d, -e and -n stay as they are.
    env.c("qopen QS; qchange A none 0 0 100% 0% \"mail ops\"").ok();
    let again = def(&env, "A");
    assert_eq!(again.delivery, DeliveryPolicy::NonPersist);
    assert_eq!(again.expiration, DefaultExpiration::Relative(60));
    assert_eq!(again.nonpersistent_threshold, changed.nonpersistent_threshold);
    assert_eq!(again.threshold.command, "mail ops");
    // A bad value changes nothing.
    env.c("qopen QS; qchange A none 0 0 100% 100% \"\"").failed().stderr_has(
        "Reset (low) limit: '100%' is invalid; it must be less than the high limit (100%)",
    );
    env.c("qopen QS; qchange NOPE")
        .failed()
        .stderr_has("Queue NOPE does not exist in queue space QS");
    assert_eq!(def(&env, "A"), again);
}

/// qdestroy removes a queue (after confirmation); qinfo lists one queue, all queues, or
/// says there are none; verbose adds the definitions.
#[test]
fn qdestroy_and_qinfo() {
    let env = setup();
    env.c("qopen QS; qinfo")
        .ok()
        .stdout_has("INFO: Queue information - no queues defined.")
        .stdout_lacks("messages");
    env.c("qopen QS; qcr A fifo none 0 0 100% 0% \"\"; qcr B time,lifo none 0 0 5m 0m \"\"").ok();
    env.c("qopen QS; v; qinfo").ok().stdout_has(" A ").stdout_has("time,lifo").stdout_has("5m/0m");
    env.c("qopen QS; qinfo NOPE")
        .failed()
        .stderr_has("Queue NOPE does not exist in queue space QS");
    env.script("qopen QS\nqdestroy\nA\ny\n").ok().stdout_has("Queue name: Are you sure? [y, n] ");
    let listing: QueueListing = env.json("qopen QS; qinfo");
    assert_eq!(listing.queues.iter().map(|q| q.def.name.as_str()).collect::<Vec<_>>(), ["B"]);
    env.c("qopen QS; qds -y A").failed().stderr_has("Queue A does not exist in queue space QS");
    // The freed slot can be used again: 4 queues fit.
    env.c("qopen QS; qcr A fifo none 0 0 100% 0% \"\"; qcr C fifo none 0 0 100% 0% \"\"; qcr D fifo none 0 0 100% 0% \"\"").ok();
    assert_eq!(env.json::<QueueListing>("qopen QS; qinfo").queues.len(), 4);
}

/// Opening a space whose error queue is missing warns; creating it says so; destroying it
/// warns.
#[test]
fn error_queue_notes() {
    let env = setup();
    env.c("qopen QS").ok().stderr_has(
        "WARN: Error queue ERRQ of queue space QS does not exist (create it with qcreate)",
    );
    env.c("qopen QS; qcr ERRQ fifo none 0 0 100% 0% \"\"")
        .ok()
        .stdout_has("INFO: Create queue - error queue ERRQ created");
    env.c("qopen QS").ok().stderr_lacks("WARN");
    env.c("qopen QS; qds -y ERRQ")
        .ok()
        .stderr_has("WARN: Destroy queue - error queue ERRQ destroyed");
}

/// A queue holding messages is destroyed only with `-p` (purge) or `-f` (force): plain
/// `qdestroy` refuses and says how many; `-p` refuses while others are attached, `-f` does
/// not; neither removes a message a transaction holds. What is purged is gone for good: its
/// space is free, and neither a restart nor a queue created again under the name brings it
/// back.
#[test]
fn qdestroy_of_a_queue_holding_messages() {
    use crate::app::{App, count, qinfo, refused};
    use qm_common::message::{EnqueueCtl, Qos};
    let env = Env::new();
    env.with_device();
    env.c("qspc -n 8 QS 40000 100 4 2 8 100 '' n 16; qopen QS; qcr Q fifo none 5 0 100% 0% ''; qcr KEEP fifo none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    app.put("Q", "one");
    app.put("Q", "two");
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    app.put_with("Q", "three", np);
    app.put("KEEP", "kept");
    let before = qinfo(&env);
    env.c("qopen QS; qds -y Q").failed().errors_are(&[
        "Destroy queue failed - 3 messages on queue Q; use -p to purge them or -f to force",
    ]);
    // Another session attached: -p refuses, naming it.
    let mut other = env.session();
    other.run("qopen QS").ok();
    env.c("qopen QS; qds -p -y Q")
        .failed()
        .stderr_has("Destroy queue failed - processes attached to queue space QS: ")
        .stderr_has(&format!("qmadmin pid {}", other.pid()))
        .stderr_has("use -f to force");
    // A message held by a transaction stops even -f.
    app.begin(None).unwrap();
    assert_eq!(app.take_body("Q"), "one");
    env.c("qopen QS; qds -f -y Q")
        .failed()
        .errors_are(&["Destroy queue failed - 1 message of queue Q is held by a transaction"]);
    app.abort().unwrap();
    assert_eq!(qinfo(&env), before, "the refusals changed nothing");

    // -f with the other session still attached: purged and destroyed.
    env.c("qopen QS; qds -f -y Q").ok().stdout_has("3 messages of queue Q deleted");
    other.run("qinfo KEEP").ok().stdout_has("KEEP");
    let after = qinfo(&env);
    assert_eq!(after.queues.iter().map(|q| q.def.name.as_str()).collect::<Vec<_>>(), ["KEEP"]);
    assert_eq!(after.total, crate::app::usage(&env, "KEEP"), "Q's blocks and memory are free");
    drop(other.finish());

    // -p once nobody else is attached; then a restart and the queue created again.
    env.c("qopen QS; qcr Q fifo none 5 0 100% 0% ''").ok();
    app.put("Q", "four");
    drop(app);
    crate::app::detached(&env);
    env.c("qopen QS; qds -y Q").failed().errors_are(&[
        "Destroy queue failed - 1 message on queue Q; use -p to purge it or -f to force",
    ]);
    env.c("qopen QS; qds -p -y Q").ok().stdout_has("1 message of queue Q deleted");
    env.stop_daemon();
    env.c("qopen QS; qcr Q fifo none 5 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    refused(app.dequeue("Q", &Default::default()), qm_common::Diagnostic::NoMsg);
    assert_eq!((count(&env, "Q"), count(&env, "KEEP")), (0, 1));
    assert_eq!(app.take_body("KEEP"), "kept");
}

/// `qdestroy -f` (purging, as `-p` does) takes every kind of key its queue's messages have (order, correlation ids,
/// ages, timers of scheduled and expiring messages) and none of another queue's, even one
/// whose name begins with the purged queue's; after a restart too.
#[test]
fn qdestroy_purge_takes_its_queues_keys_only() {
    use crate::app::{App, count, refused};
    use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Select, TimeSpec};
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 200 4 2 8 100 '' n 16; qopen QS; \
           qcr Q fifo none 0 0 100% 0% ''; qcr Q1 fifo none 0 0 100% 0% ''; \
           qcr KEEP fifo none 0 0 100% 0% ''")
        .ok();
    let corrid = || EnqueueCtl { corrid: b"c1".to_vec(), ..EnqueueCtl::default() };
    let soon =
        |secs| EnqueueCtl { available: Some(TimeSpec::Relative(secs)), ..EnqueueCtl::default() };
    let expiring =
        || EnqueueCtl { expiration: Some(Expiry::Relative(3600)), ..EnqueueCtl::default() };
    let mut app = App::connect(&env);
    for queue in ["Q", "Q1", "KEEP"] {
        app.put(queue, &format!("{queue} plain"));
        app.put_with(queue, &format!("{queue} by corrid"), corrid());
        app.put_with(queue, &format!("{queue} expiring"), expiring());
    }
    app.put_with("Q", "Q later", soon(1));
    app.put_with("Q", "Q much later", soon(3600));
    app.put_with("KEEP", "KEEP later", soon(2));
    env.c("qopen QS; qds -f -y Q").ok().stdout_has("5 messages of queue Q deleted");
    // The order tables hold exactly the keys the remaining messages call for.
    env.c("qverify QS").ok();
    drop(app);
    env.stop_daemon();

    env.c("qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    let mut app = App::connect(&env);
    let by_corrid = DequeueCtl { select: Select::Corrid(b"c1".to_vec()), ..Default::default() };
    refused(app.dequeue("Q", &by_corrid), qm_common::Diagnostic::NoMsg);
    for queue in ["Q1", "KEEP"] {
        let taken = app.dequeue(queue, &by_corrid).unwrap();
        assert_eq!(taken.body, format!("{queue} by corrid").as_bytes());
    }
    // KEEP's scheduled message comes after Q's would have: Q stays empty.
    let wait = DequeueCtl { wait_ms: Some(20_000), ..Default::default() };
    let drained: Vec<String> = (0..3)
        .map(|_| String::from_utf8(app.dequeue("KEEP", &wait).unwrap().body).unwrap())
        .collect();
    assert_eq!(drained, ["KEEP plain", "KEEP expiring", "KEEP later"]);
    assert_eq!(app.drain("Q1"), ["Q1 plain", "Q1 expiring"]);
    assert_eq!((count(&env, "Q"), count(&env, "Q1"), count(&env, "KEEP")), (0, 0, 0));
    refused(app.dequeue("Q", &Default::default()), qm_common::Diagnostic::NoMsg);
}

/// JSON listings speak the commands' own words, in lower case: the sort keys and tiebreak
/// `qcreate` takes, `persist`/`nonpersist`, limit units, queue space states, session kinds.
#[test]
fn json_uses_the_commands_words() {
    let env = Env::new();
    env.c(&format!(
        "crdl {} 0 2000; qspc -n 16B QS 40000 200 8 4 16 1000 '' n 16; qopen QS; \
         qcreate -d nonpersist Q priority,time,lifo none 0 0 80% 10% ''",
        env.dev()
    ))
    .ok();
    let listing: serde_json::Value = env.json("qopen QS; qinfo Q");
    let def = &listing["queues"][0]["def"];
    assert_eq!(def["order"]["keys"], serde_json::json!(["priority", "time"]));
    assert_eq!(def["order"]["tiebreak"], "lifo");
    assert_eq!(def["threshold"]["high"]["unit"], "percent");
    assert_eq!(def["delivery"], "nonpersist");
    let ipcs: serde_json::Value = env.json("qopen QS; ipcs");
    assert_eq!(ipcs[0]["state"], "active");
    assert_eq!(ipcs[0]["kind"], "admin");
}

/// Every change says so in one line: queue spaces created and changed, queues created,
/// changed and destroyed (with the messages a purge took).
#[test]
fn every_change_says_so() {
    let env = Env::new();
    let run = env.c(&format!(
        "crdl {} 0 2000; qspc QS 40000 200 8 4 16 1000 '' n 16; qspch QS 40000 4 16 1000 '' n 16; \
         qopen QS; qcreate Q fifo none 0 0 100% 0% ''; qchange Q none 1 0 100% 0% ''; \
         qenqueue Q x; qdestroy -p -y Q",
        env.dev()
    ));
    run.ok()
        .stdout_has("Queue space QS created\n")
        .stdout_has("Queue space QS changed\n")
        .stdout_has("Queue 'Q' created\n")
        .stdout_has("Queue 'Q' changed\n")
        .stdout_has("1 message of queue Q deleted\nQueue 'Q' destroyed\n");
}
