//! Capacity exhaustion: disk blocks, message slots and non-persistent memory each run out
//! with QMENOSPACE and a clear message, change nothing, and are available again after a
//! dequeue; an oversized body is QMEINVAL.

use crate::app::{App, FIFO_Q, qinfo, refused, space_with};
use crate::support::Env;
use qm_common::Diagnostic;
use qm_common::message::{BODY_MAX, EnqueueCtl, Qos};

fn np() -> EnqueueCtl {
    EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() }
}

fn body(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

/// A persistent message takes ceil((128 + len) / page size) blocks; a queue space of 20
/// pages with 2 queues has 17 for messages. Filling them refuses the next message with
/// QMENOSPACE (client and qmadmin), changes nothing, leaves non-persistent messages
/// possible, and a dequeue makes room again. The same arithmetic on 512-byte pages (8
/// pages, 2 queues: 5 blocks).
#[test]
fn pages_full() {
    let env = space_with("-n 4B", "40000 20 2 4 16 1000 '' n 16", &[FIFO_Q]);
    let mut app = App::connect(&env);
    for _ in 0..8 {
        app.enqueue("Q", &body(1024 + 1024 - 128), &EnqueueCtl::default()).unwrap();
    }
    assert_eq!(qinfo(&env).total.blocks, 16, "two blocks each");
    let before = qinfo(&env);
    let e = refused(
        app.enqueue("Q", &body(1024 - 128 + 1), &EnqueueCtl::default()),
        Diagnostic::NoSpace,
    );
    assert_eq!(
        e.message,
        "Queue space QS is full: 16 of 17 blocks used, the message needs 2 (qaddext adds pages)"
    );
    let file = env.path("897");
    std::fs::write(&file, body(897)).unwrap();
    env.c(&format!("qopen QS; qenqueue -F {} Q", file.display()))
        .failed()
        .stderr_has("ERROR: Queue space QS is full: 16 of 17 blocks used, the message needs 2")
        .stderr_has("(qaddext adds pages) (QMENOSPACE)");
    env.c("qopen QS; qdequeue NOSUCH").failed().stderr_has("(QMEBADQUEUE)");
    assert_eq!(qinfo(&env), before, "refused enqueues change nothing");
    app.enqueue("Q", &body(1024 - 128), &EnqueueCtl::default()).expect("one block fits");
    let e = refused(app.enqueue("Q", b"", &EnqueueCtl::default()), Diagnostic::NoSpace);
    assert!(e.message.contains("17 of 17 blocks used, the message needs 1"), "{e}");
    app.enqueue("Q", &body(1000), &np()).expect("non-persistent memory is separate");
    app.take("Q");
    app.enqueue("Q", &body(1024), &EnqueueCtl::default()).expect("room after a dequeue");
    assert_eq!(qinfo(&env).total.blocks, 17);

    let env = Env::new();
    env.c(&format!(
        "crdl -p 512 {} 0 2000; qspc QS 40000 8 2 4 4 1000 '' n 16; qopen QS; qcreate {FIFO_Q}",
        env.dev()
    ))
    .ok();
    let mut app = App::connect(&env);
    for len in [384, 385, 0] {
        app.enqueue("Q", &body(len), &EnqueueCtl::default()).unwrap();
    }
    assert_eq!(qinfo(&env).total.blocks, 1 + 2 + 1);
    app.enqueue("Q", b"", &EnqueueCtl::default()).expect("the fifth block");
    let e = refused(app.enqueue("Q", b"", &EnqueueCtl::default()), Diagnostic::NoSpace);
    assert!(e.message.contains("5 of 5 blocks used, the message needs 1"), "{e}");
}

/// The queue space's `Number of messages` counts every message, persistent,
/// non-persistent and uncommitted; one more is QMENOSPACE until one goes.
#[test]
fn message_slots_full() {
    let env = space_with("-n 4B", "40000 200 2 4 16 3 '' n 16", &[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "persistent");
    app.enqueue("Q", b"np", &np()).unwrap();
    let mut other = App::connect(&env);
    other.begin(None).unwrap();
    other.put("Q", "uncommitted");
    let before = qinfo(&env);
    for ctl in [EnqueueCtl::default(), np()] {
        let e = refused(app.enqueue("Q", b"more", &ctl), Diagnostic::NoSpace);
        assert_eq!(
            e.message,
            "Queue space QS is full: it holds 3 messages, its limit (qspacechange can raise it)"
        );
    }
    env.c("qopen QS; qenqueue Q more").failed().stderr_has("it holds 3 messages, its limit");
    assert_eq!(qinfo(&env), before);
    other.abort().unwrap();
    app.put("Q", "room after the rollback");
    let e = refused(app.enqueue("Q", b"more", &EnqueueCtl::default()), Diagnostic::NoSpace);
    assert!(e.message.contains("3 messages"), "{e}");
    app.take("Q");
    app.put("Q", "room after a dequeue");
}

/// Non-persistent memory (`qspacecreate -n`) holds that many bytes of bodies; one more is
/// QMENOSPACE while persistent messages still fit; a dequeue frees it.
#[test]
fn nonpersistent_memory_full() {
    let env = space_with("-n 2B", "40000 200 2 4 16 1000 '' n 16", &[FIFO_Q]);
    let mut app = App::connect(&env);
    app.enqueue("Q", &body(1000), &np()).unwrap();
    app.enqueue("Q", &body(1000), &np()).unwrap();
    let before = qinfo(&env);
    let e = refused(app.enqueue("Q", &body(49), &np()), Diagnostic::NoSpace);
    assert_eq!(
        e.message,
        "Queue space QS: non-persistent memory is full (2000 of 2048 bytes used, the message needs 49; set it with qspacechange -n)"
    );
    env.c("qopen QS; qenqueue -d nonpersist Q text").ok();
    env.c(&format!("qopen QS; qenqueue -d nonpersist Q {}", "y".repeat(100))).failed().stderr_has(
        "non-persistent memory is full (2004 of 2048 bytes used, the message needs 100",
    );
    app.enqueue("Q", &body(44), &np()).expect("exactly full");
    assert_eq!(qinfo(&env).total.nonpersistent_bytes, 2048);
    assert_eq!(qinfo(&env).total.nonpersistent_messages, before.total.nonpersistent_messages + 2);
    app.put("Q", "persistent still fits");
    app.take("Q");
    app.enqueue("Q", &body(1000), &np()).expect("room after a dequeue");
}

/// Without non-persistent memory (no `-n`, or less than a page in bytes) every
/// non-persistent enqueue, explicit or by the queue's default, is QMENOSPACE with a
/// message saying there is none.
#[test]
fn no_nonpersistent_memory() {
    for option in ["", "-n 1000b"] {
        let env = space_with(
            option,
            "40000 200 2 4 16 1000 '' n 16",
            &[FIFO_Q, "-d nonpersist N fifo none 0 0 100% 0% ''"],
        );
        let mut app = App::connect(&env);
        let before = qinfo(&env);
        let e = refused(app.enqueue("Q", b"x", &np()), Diagnostic::NoSpace);
        assert_eq!(
            e.message,
            "Queue space QS has no memory for non-persistent messages (qspacechange -n sets it)"
        );
        refused(app.enqueue("N", b"x", &EnqueueCtl::default()), Diagnostic::NoSpace);
        env.c("qopen QS; qenqueue N x; qenqueue -d nonpersist Q x")
            .failed()
            .errors_are(&["has no memory for non-persistent messages", "has no memory"]);
        assert_eq!(qinfo(&env), before);
        app.put("Q", "persistent is fine");
        app.put_with(
            "N",
            "so is an explicit persist",
            EnqueueCtl { delivery: Some(Qos::Persistent), ..EnqueueCtl::default() },
        );
    }
}

/// A body of 4 MiB is accepted; one byte more is QMEINVAL, from the client and from
/// `qenqueue -F`.
#[test]
fn oversized_body() {
    let env = space_with("-n 4100B", "40000 200 2 4 16 1000 '' n 16", &[FIFO_Q]);
    let mut app = App::connect(&env);
    let e = refused(app.enqueue("Q", &body(BODY_MAX + 1), &np()), Diagnostic::Inval);
    assert_eq!(e.message, "Message body: 4194305 bytes is over the limit of 4194304 bytes");
    let file = env.path("big");
    std::fs::write(&file, body(BODY_MAX + 1)).unwrap();
    env.c(&format!("qopen QS; qenqueue -d nonpersist -F {} Q", file.display()))
        .failed()
        .stderr_has("Message body: 4194305 bytes is over the limit of 4194304 bytes");
    assert_eq!(qinfo(&env).total.messages(), 0);
    app.enqueue("Q", &body(BODY_MAX), &np()).expect("4 MiB is allowed");
    assert_eq!(app.take("Q").body.len(), BODY_MAX);
}
