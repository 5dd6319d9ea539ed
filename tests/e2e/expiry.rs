//! Expiry: a message past its expiration is removed even if nobody dequeues it and even if
//! it never became available; its space is reclaimed; it is never dequeued, also not by a
//! transaction that held it; `qchangeexp` sets and clears expirations.

use crate::app::{
    App, ERRQ, FIFO_Q, count, eventually, nothing_on, qinfo, qlist, space, space_with, tuxedo_time,
};
use qm_common::Diagnostic;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Qos, TimeSpec};

fn expiring(secs: u64) -> EnqueueCtl {
    EnqueueCtl { expiration: Some(Expiry::Relative(secs)), ..EnqueueCtl::default() }
}

/// Persistent and non-persistent messages with a 2-second expiration disappear without
/// being dequeued, also one whose availability lies after its expiration; `qinfo`'s
/// counts, bytes and blocks drop back. An expiration of +0 is never stored at all.
#[test]
fn expired_messages_disappear() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "keeper");
    let before = qinfo(&env).total;
    app.put_with("Q", "persistent", expiring(2));
    app.put_with(
        "Q",
        "nonpersistent",
        EnqueueCtl { delivery: Some(Qos::NonPersistent), ..expiring(2) },
    );
    app.put_with(
        "Q",
        "never available",
        EnqueueCtl { available: Some(TimeSpec::Relative(100)), ..expiring(2) },
    );
    app.put_with("Q", "at once", expiring(0));
    env.c("qopen QS; qenqueue -e +0 Q at-once-too; qenqueue -e +2 Q script").ok();
    let during = qinfo(&env).total;
    assert_eq!((during.persistent_messages, during.nonpersistent_messages), (4, 1));
    eventually("the expired messages are removed", || qinfo(&env).total == before);
    assert_eq!(qlist(&env, "Q").len(), 1);
    assert_eq!(app.drain("Q"), ["keeper"]);
}

/// Capacity held by expiring messages comes back when they expire: a space full of them
/// refuses an enqueue, and takes it once they are gone.
#[test]
fn expiry_reclaims_capacity() {
    // 12 pages, 2 queues: 9 blocks for messages; message limit 9.
    let env = space_with("", "40000 12 2 4 16 9 '' n 16", &[FIFO_Q]);
    let mut app = App::connect(&env);
    for i in 0..9 {
        app.put_with("Q", &format!("m{i}"), expiring(2));
    }
    let e = app.enqueue("Q", b"one more", &EnqueueCtl::default()).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{e}");
    eventually("the space is free again", || count(&env, "Q") == 0);
    for i in 0..9 {
        app.put("Q", &format!("n{i}"));
    }
    assert_eq!(count(&env, "Q"), 9);
}

/// An expired message is never dequeued: not by a plain or waiting dequeue after its time,
/// not after the transaction that held it rolls back (no retry, no error queue), and an
/// enqueue that expires before its transaction commits never appears.
#[test]
fn expired_never_dequeued() {
    let env = space(&[ERRQ, "Q fifo none 5 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put_with("Q", "short", expiring(1));
    let wait = DequeueCtl { wait_ms: Some(2500), ..DequeueCtl::default() };
    // Hidden for longer than it lives: a waiting dequeue never gets it.
    app.put_with(
        "Q",
        "hidden",
        EnqueueCtl { available: Some(TimeSpec::Relative(2)), ..expiring(1) },
    );
    assert_eq!(app.take_body("Q"), "short", "alive now");
    let e = app.dequeue("Q", &wait).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::NoMsg, "{e}");

    // Held by a transaction while it expires: gone when the transaction rolls back.
    app.put_with("Q", "held", expiring(1));
    app.begin(None).unwrap();
    assert_eq!(app.take_body("Q"), "held");
    app.put_with("Q", "enqueued in the transaction", expiring(1));
    eventually("past the expiration", || {
        crate::app::now() > qlist(&env, "Q")[0].expiration.unwrap()
    });
    assert_eq!(qlist(&env, "Q").len(), 2, "held messages wait for their transaction");
    app.abort().unwrap();
    assert!(qlist(&env, "Q").is_empty(), "no retry and no error queue for an expired message");
    assert_eq!(count(&env, "ERRQ"), 0);
    app.begin(None).unwrap();
    app.put_with("Q", "late", expiring(1));
    eventually("past the expiration", || {
        qlist(&env, "Q").first().is_some_and(|m| crate::app::now() > m.expiration.unwrap())
    });
    app.commit().unwrap();
    nothing_on(&mut app, "Q");
    eventually("removed at commit", || qlist(&env, "Q").is_empty());
    assert_eq!(qinfo(&env).total.messages(), 0);
}

/// `qchangeexp` sets an expiration (relative or absolute) on the selected messages and
/// `none` clears it; it asks for confirmation unless -y is given.
#[test]
fn qchangeexp_sets_and_clears() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let a = app.put("Q", "a");
    let b = app.put_with("Q", "b", expiring(2));
    let c = app.put("Q", "c");
    let peek = DequeueCtl {
        select: qm_common::message::Select::Msgid(b.clone()),
        peek: true,
        ..DequeueCtl::default()
    };
    let b_expired = app.dequeue("Q", &peek).unwrap().expiration.unwrap();
    let far = crate::app::now() + 5000;
    env.c(&format!(
        "qopen QS; qset Q; qscan -m {a}; qchangeexp -y +1; qscan -m {b}; qchangeexp -y none; qscan -m {c}; qchangeexp -y {}",
        tuxedo_time(far)
    ))
    .ok()
    .stdout_has("1 message changed");
    let listed = qlist(&env, "Q");
    assert!(listed[0].expiration.is_some_and(|e| e <= crate::app::now() + 2));
    assert_eq!((listed[1].expiration, listed[2].expiration), (None, Some(far)));
    env.script(&format!("qopen QS\nqset Q\nqscan -m {c}\nqchangeexp +1\nn\n"))
        .ok()
        .stdout_has("Are you sure? [y, n] ")
        .stderr_has("WARN: Expiration time not changed");
    assert_eq!(qlist(&env, "Q")[2].expiration, Some(far));
    eventually("a expires", || count(&env, "Q") == 2);
    // b outlives the expiration it had before `none` cleared it.
    eventually("past b's old expiration", || crate::app::now() > b_expired + 1);
    assert_eq!(app.drain("Q"), ["b", "c"]);
}
