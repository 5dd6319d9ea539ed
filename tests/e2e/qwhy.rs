//! `qwhy MSGID`: each reason a message is not moving, found by a real qmadmin asking a real
//! qmd about messages put in that state by an application: held by another session's
//! transaction, enqueued by one not committed, in its retry delay, not available yet, behind
//! messages of higher priority, no forwarder running, expired while held, moved to the error
//! queue; next in line when nothing holds it back; a clear error for a msgid the queue space
//! does not have; `browse` on the message's queue needed.

use crate::app::{App, ERRQ, FIFO_Q, eventually, now, space};
use crate::auto::{wait_state, write_config};
use crate::support::Env;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, MsgId, TimeSpec};
use serde::Deserialize;
use serde_json::Value;

/// `qwhy --json`.
#[derive(Debug, Deserialize)]
struct Why {
    msgid: String,
    qspace: String,
    queue: String,
    reasons: Vec<Value>,
}

impl Why {
    fn kinds(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r["kind"].as_str().expect("a kind")).collect()
    }

    /// The reason of `kind`; panics when there is none.
    #[track_caller]
    fn reason(&self, kind: &str) -> &Value {
        self.reasons
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} reason in {:#?}", self.reasons))
    }
}

#[track_caller]
fn why(env: &Env, id: &MsgId) -> Why {
    let w: Why = env.json(&format!("qopen QS; qwhy {id}"));
    assert_eq!((w.msgid.as_str(), w.qspace.as_str()), (id.to_string().as_str(), "QS"));
    w
}

/// The sentences `qwhy` prints for people, one line each.
#[track_caller]
fn sentences(env: &Env, id: &MsgId) -> String {
    env.c(&format!("qopen QS; qwhy {id}")).ok().stdout.clone()
}

/// A single message with nothing ahead of it: next in line, and (no forwarder being
/// configured) only a dequeue by an application takes it. `-m` takes the msgid too.
#[test]
fn next_in_line_when_nothing_holds_it() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let id = app.put("Q", "only");
    let w = why(&env, &id);
    assert_eq!(w.queue, "Q");
    assert_eq!(w.kinds(), ["next_in_line", "no_forwarder"]);
    let text = env.c(&format!("qopen QS; qwhy -m {id}")).ok().stdout.clone();
    assert!(text.contains("It is next in line on queue Q: a dequeue takes it now."), "{text}");
    assert!(text.contains("none is configured for it"), "{text}");
}

/// Dequeued in an open transaction of another session: held by that transaction, named with
/// its pid and program; once it commits the message is gone and qwhy says so.
#[test]
fn held_by_another_sessions_transaction() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let id = app.put("Q", "work");
    let txn = app.begin(None).unwrap();
    app.take("Q");
    let w = why(&env, &id);
    assert_eq!(w.kinds(), ["held"], "a held message waits on its transaction alone");
    let held = w.reason("held");
    assert_eq!(held["transaction"], txn);
    assert_eq!(held["pid"], std::process::id());
    assert_eq!(held["program"], "e2e-app");
    let text = sentences(&env, &id);
    let expected =
        format!("It is held by transaction {txn} of pid {} (e2e-app)", std::process::id());
    assert!(text.contains(&expected), "{text}");
    app.commit().unwrap();
    env.c(&format!("qopen QS; qwhy {id}"))
        .failed()
        .stderr_has(&format!("Message {id} is not in queue space QS"));
}

/// An aborted dequeue: waiting out the retry delay until the rollback plus the queue's
/// delay, retry 1 of the queue's 2.
#[test]
fn waiting_out_its_retry_delay() {
    let env = space(&[ERRQ, "S fifo none 2 60 100% 0% ''"]);
    let mut app = App::connect(&env);
    let id = app.put("S", "job");
    app.begin(None).unwrap();
    app.take("S");
    let before = now();
    app.abort().unwrap();
    let after = now();
    let w = why(&env, &id);
    assert_eq!(w.kinds(), ["retry_delay", "no_forwarder"]);
    let r = w.reason("retry_delay");
    assert_eq!((r["retry"].as_u64(), r["retries"].as_u64()), (Some(1), Some(2)));
    let until = r["until"].as_u64().unwrap();
    assert!((before + 60..=after + 60).contains(&until), "until {until}, aborted at {before}");
    let text = sentences(&env, &id);
    assert!(text.contains("It is waiting out its retry delay until "), "{text}");
    assert!(text.contains("(retry 1 of 2)."), "{text}");
    assert!(text.contains(&qm_common::time::format_local(until)), "{text}");
}

/// Enqueued for later: not available until its time, and not a retry.
#[test]
fn not_available_until_its_time() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let before = now();
    let ctl = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    let id = app.put_with("Q", "later", ctl);
    let after = now();
    let w = why(&env, &id);
    assert_eq!(w.kinds(), ["not_available", "no_forwarder"]);
    let until = w.reason("not_available")["until"].as_u64().unwrap();
    assert!((before + 3600..=after + 3600).contains(&until), "until {until}");
    let text = sentences(&env, &id);
    let expected = format!("It is not available until {}.", qm_common::time::format_local(until));
    assert!(text.contains(&expected), "{text}");
}

/// In a priority queue: behind the messages of higher priority and the one of its own
/// priority enqueued before it, counted by cause; the highest one is next in line.
#[test]
fn behind_higher_priority_messages() {
    let env = space(&[ERRQ, "P priority,fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let prio = |p| EnqueueCtl { priority: Some(p), ..EnqueueCtl::default() };
    app.put_with("P", "first low", prio(10));
    let low = app.put_with("P", "second low", prio(10));
    let high = app.put_with("P", "high", prio(90));
    app.put_with("P", "middle", prio(60));
    let w = why(&env, &low);
    assert_eq!(w.kinds(), ["behind", "no_forwarder"]);
    let behind = w.reason("behind");
    assert_eq!(behind["ahead"], 3);
    assert_eq!(behind["by"], serde_json::json!({ "priority": 2, "fifo": 1 }));
    let text = sentences(&env, &low);
    assert!(
        text.contains("It is behind 3 messages that come before it in the order of queue P: 2 of higher priority, 1 of equal rank enqueued earlier (fifo)."),
        "{text}"
    );
    assert_eq!(why(&env, &high).kinds(), ["next_in_line", "no_forwarder"]);
}

/// A queue no forwarder serves: none configured says so; one configured but not booted is
/// named with how to start it; once it runs, the reason is gone.
#[test]
fn no_forwarder_running_names_the_one_that_would_serve() {
    let env = Env::new();
    write_config(
        &env,
        "[[forwarder]]\nid = 7\nqspace = \"QS\"\nclopt = \"-- -q F -i 1\"\n\n[service.F]\ncommand = 'cat'\n",
    );
    crate::auto::setup(&env, 200, &["F fifo none 0 0 100% 0% ''", FIFO_Q]);
    let mut app = App::connect(&env);
    // Not available yet, so that the forwarder, once booted, leaves it where it is.
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() };
    let on_f = app.put_with("F", "for the service", later);
    let on_q = app.put("Q", "for an application");

    let w = why(&env, &on_f);
    let r = w.reason("no_forwarder");
    assert_eq!(r["configured"], serde_json::json!([{ "id": 7, "state": "not booted" }]));
    let text = sentences(&env, &on_f);
    assert!(
        text.contains("No forwarder serves queue F: forwarder 7 would (it is not booted; boot -i 7 starts it)."),
        "{text}"
    );
    let text = sentences(&env, &on_q);
    assert!(
        text.contains("No forwarder serves queue Q (none is configured for it): it moves only when an application dequeues it."),
        "{text}"
    );

    env.c("boot -i 7").ok();
    wait_state(&env, 7, "idle");
    assert_eq!(why(&env, &on_f).kinds(), ["not_available"]);
    assert_eq!(why(&env, &on_q).kinds(), ["next_in_line", "no_forwarder"]);
    env.c("shutdown -i 7").ok();
}

/// Past its expiration while a transaction holds it: both reasons, the expiry time given.
#[test]
fn expired_while_held() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let before = now();
    let ctl = EnqueueCtl { expiration: Some(Expiry::Relative(2)), ..EnqueueCtl::default() };
    let id = app.put_with("Q", "short-lived", ctl);
    app.begin(None).unwrap();
    app.dequeue("Q", &DequeueCtl::default()).expect("dequeued before it expired");
    eventually("qwhy says it expired", || why(&env, &id).kinds().contains(&"expired"));
    let w = why(&env, &id);
    assert_eq!(w.kinds(), ["held", "expired"]);
    let at = w.reason("expired")["at"].as_u64().unwrap();
    assert!(at >= before + 2, "expired at {at}, enqueued at {before}");
    let text = sentences(&env, &id);
    let expected = format!("It expired at {}", qm_common::time::format_local(at));
    assert!(text.contains(&expected), "{text}");
    app.abort().unwrap();
}

/// Rolled back past its retries: on the error queue, from its queue, with the retries
/// counted (as qlist shows them); a dequeue from the error queue takes it.
#[test]
fn moved_to_the_error_queue() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let id = app.put("Q", "poison");
    app.begin(None).unwrap();
    app.take("Q");
    app.abort().unwrap();
    let w = why(&env, &id);
    assert_eq!(w.queue, "ERRQ");
    assert_eq!(w.kinds(), ["error_queue", "next_in_line", "no_forwarder"]);
    let r = w.reason("error_queue");
    assert_eq!((r["origin_queue"].as_str(), r["retries"].as_u64()), (Some("Q"), Some(1)));
    let text = sentences(&env, &id);
    assert!(
        text.contains("It was moved to the error queue ERRQ from queue Q after 1 retry"),
        "{text}"
    );
}

/// A msgid the queue space does not have (well formed or not), and no queue space open:
/// each a clear error naming what is wrong; nothing is printed on standard output.
#[test]
fn unknown_msgid_is_named() {
    let env = space(&[ERRQ, FIFO_Q]);
    let run = env.c("qopen QS; qwhy 00000000000000ff");
    run.failed().errors_are(&[
        "Message 00000000000000ff is not in queue space QS (qlist shows the msgids of a queue)",
    ]);
    assert!(run.stdout.trim().is_empty(), "{}", run.stdout);
    env.c("qopen QS; qwhy not-a-qm-msgid")
        .failed()
        .stderr_has("Message not-a-qm-msgid is not in queue space QS");
    env.c("qopen QS; qwhy -m 0000000000000001 0000000000000001")
        .failed()
        .stderr_has("give the message id once");
    env.c("qwhy 0000000000000001").failed().stderr_has("No queue space is open");
}

/// Another local user needs `browse` on the message's queue: with only `enqueue` there it
/// may open QS but is refused with the exact QMEPERM sentence; granted browse, it is told.
#[test]
fn needs_browse_on_the_messages_queue() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let other = crate::users::User::create();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _daemon = env.start_daemon(&["--socket-mode", "0666"]);
    let admin = |c: &str| env.c(c);
    crate::rights::rights_setup(&admin, &env.device);
    let id = App::connect(&env).put("Q", "private");
    let principal = format!("unix:{}", other.name);
    let peer = |c: &str| other.qmadmin(&env.device, &["--no-start"], c);
    env.c(&format!("qgrant {principal} enqueue QS/Q")).ok();
    crate::rights::refused_with(
        &peer(&format!("qopen QS; qwhy {id}")),
        &format!("QMEPERM: {principal} may not browse QS/Q"),
    );
    env.c(&format!("qgrant {principal} browse QS/Q")).ok();
    peer(&format!("qopen QS; qwhy {id}")).ok().stdout_has("It is next in line on queue Q");
}

/// Enqueued in a transaction that has not committed: its enqueue waits on that transaction;
/// once it commits, the message is next in line.
#[test]
fn enqueued_by_an_uncommitted_transaction() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut app = App::connect(&env);
    let txn = app.begin(None).unwrap();
    let id = app.put("Q", "pending");
    let w = why(&env, &id);
    assert_eq!(w.kinds(), ["uncommitted"]);
    assert_eq!(w.reason("uncommitted")["transaction"], txn);
    let text = sentences(&env, &id);
    assert!(
        text.contains(&format!("Its enqueue is not committed yet: transaction {txn} of pid")),
        "{text}"
    );
    app.commit().unwrap();
    assert_eq!(why(&env, &id).kinds(), ["next_in_line", "no_forwarder"]);
}
