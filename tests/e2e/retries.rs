//! Retries: a rolled-back dequeue counts a retry and waits out the queue's retry delay;
//! past its retries the message moves to the error queue (its origin kept), from where
//! `qchangequeue` brings it back with a fresh count; without an error queue it is dropped.

use crate::app::{App, ERRQ, count, nothing_on, qlist, space, space_with};
use qm_common::message::DequeueCtl;
use std::time::{Duration, Instant};

/// Service queue S: 2 retries, 1 second apart.
const S: &str = "S fifo none 2 1 100% 0% ''";

/// One dequeue in a transaction, rolled back.
struct Rollback {
    /// The retries the dequeued message had.
    retries: u32,
    /// When the dequeue returned it.
    got: Instant,
    /// Just before the rollback was asked for.
    asked: Instant,
    /// The clock's seconds just before and just after the rollback.
    seconds: std::ops::RangeInclusive<u64>,
}

/// Dequeues in a transaction (waiting `wait_ms` if given) and rolls it back.
#[track_caller]
fn take_and_abort(app: &mut App, queue: &str, wait_ms: Option<u64>) -> Rollback {
    app.begin(None).unwrap();
    let m = app
        .dequeue(queue, &DequeueCtl { wait_ms, ..DequeueCtl::default() })
        .unwrap_or_else(|e| panic!("dequeue from {queue}: {e}"));
    let got = Instant::now();
    let (asked, before) = (Instant::now(), crate::app::now());
    app.abort().unwrap();
    Rollback { retries: m.retries, got, asked, seconds: before..=crate::app::now() }
}

/// Each rollback counts a retry (qlist's retries column) and hides the message for the
/// delay (QMENOMSG at once; qlist shows it waiting until a second after the rollback, and a
/// waiting dequeue gets it no sooner); the third rollback moves it to the error queue with
/// its origin queue (qlist verbose, the dequeued message); `qset ERRQ; qchangequeue -y S`
/// moves it back with 0 retries.
#[test]
fn retry_delay_then_error_queue_and_back() {
    let env = space(&[ERRQ, S]);
    let mut app = App::connect(&env);
    let id = app.put("S", "job");
    let mut last = take_and_abort(&mut app, "S", None);
    assert_eq!(last.retries, 0);
    for retry in 1..=2 {
        nothing_on(&mut app, "S");
        let listed = qlist(&env, "S");
        assert_eq!((listed[0].retries, listed[0].state.as_str()), (retry, "waiting"));
        let at = listed[0].available.expect("the end of the retry delay is shown");
        let due = last.seconds.start() + 1..=last.seconds.end() + 1;
        assert!(due.contains(&at), "available at {at}, rolled back in {:?}", last.seconds);
        let next = take_and_abort(&mut app, "S", Some(5000));
        assert_eq!(next.retries, retry, "the dequeued message reports its retries");
        let delay = next.got - last.asked;
        assert!(delay >= Duration::from_secs(1), "available before its delay: {delay:?}");
        last = next;
    }
    // Three rollbacks with two retries allowed: on the error queue, ready at once.
    assert!(qlist(&env, "S").is_empty());
    assert_eq!((count(&env, "S"), count(&env, "ERRQ")), (0, 1));
    let e = qlist(&env, "ERRQ");
    assert_eq!(
        (e[0].msgid.as_str(), e[0].retries, e[0].state.as_str()),
        (id.to_string().as_str(), 3, "ready")
    );
    assert_eq!(e[0].origin_queue.as_deref(), Some("S"));
    env.c("qopen QS; verbose; qset ERRQ; qlist").ok().stdout_has("origin queue").stdout_has(" S ");
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    let m = app.dequeue("ERRQ", &peek).unwrap();
    assert_eq!(
        (m.origin_queue.as_deref(), m.retries, m.body.as_slice()),
        (Some("S"), 3, &b"job"[..])
    );

    env.c("qopen QS; qset ERRQ; qchangequeue -y S").ok().stdout_has("1 message moved");
    assert_eq!(count(&env, "ERRQ"), 0);
    let listed = qlist(&env, "S");
    assert_eq!((listed[0].retries, listed[0].origin_queue.as_deref()), (0, None));
    // A fresh count: two more delayed retries before the error queue again.
    assert_eq!(take_and_abort(&mut app, "S", None).retries, 0);
    assert_eq!(qlist(&env, "S")[0].retries, 1);
    let m = app.dequeue("S", &DequeueCtl { wait_ms: Some(5000), ..DequeueCtl::default() }).unwrap();
    assert_eq!((m.msgid, m.retries, m.origin_queue), (id, 1, None));
}

/// With retries 0 the first rollback moves the message to the error queue (client and
/// qmadmin `begin; qdequeue; abort`).
#[test]
fn zero_retries_first_abort_moves() {
    let env = space(&[ERRQ, "Z fifo none 0 5 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("Z", "a");
    take_and_abort(&mut app, "Z", None);
    assert_eq!((count(&env, "Z"), count(&env, "ERRQ")), (0, 1));
    env.c("qopen QS; qenqueue Z b; begin; qdequeue Z; abort")
        .ok()
        .stdout_has("Transaction rolled back");
    let e = qlist(&env, "ERRQ");
    let origins: Vec<Option<&str>> = e.iter().map(|m| m.origin_queue.as_deref()).collect();
    assert_eq!(origins, [Some("Z"), Some("Z")]);
    assert_eq!(app.drain("ERRQ"), ["a", "b"]);
}

/// Without an error queue (none named, or named but not created) a message out of
/// retries is dropped, and its space is free again.
#[test]
fn no_error_queue_drops() {
    for (params, queues) in [
        ("40000 200 8 4 16 1000 '' n 16", vec!["Z fifo none 0 0 100% 0% ''"]),
        ("40000 200 8 4 16 1000 MISSING n 16", vec!["Z fifo none 1 0 100% 0% ''"]),
    ] {
        let env = space_with("", params, &queues);
        let mut app = App::connect(&env);
        app.put("Z", "doomed");
        let retries: u32 = if params.contains("MISSING") { 2 } else { 1 };
        for _ in 0..retries {
            take_and_abort(&mut app, "Z", None);
        }
        assert!(qlist(&env, "Z").is_empty(), "{params}");
        let info = crate::app::qinfo(&env);
        assert_eq!((info.total.messages(), info.total.blocks), (0, 0), "{params}");
        nothing_on(&mut app, "Z");
    }
}
