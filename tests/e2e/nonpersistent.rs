//! Non-persistent messages live in the daemon's memory: they survive `qclose` and new
//! sessions, and are lost at `ipcrm`, `qaddext`, `qspacechange` (with a WARN) and a daemon
//! restart, while persistent messages survive all of these. `qinfo` counts both kinds.

use crate::app::{App, FIFO_Q, detached, qinfo, space, traced_space, waiting};
use crate::support::Env;
use qm_common::message::{DequeueCtl, EnqueueCtl, Qos};
use qm_common::queue::QueueUsage;

/// Enqueues one persistent and one non-persistent message ("p" and "np1"/"np22"...).
fn one_of_each(env: &Env, np_body: &str) {
    let mut app = App::connect(env);
    app.put("Q", "p");
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    app.put_with("Q", np_body, np);
    drop(app);
    detached(env);
}

fn total(env: &Env) -> QueueUsage {
    qinfo(env).total
}

/// qinfo counts and sizes each kind separately (text and JSON); both kinds survive
/// `qclose` and a new session's `qopen`.
#[test]
fn survive_qclose_and_new_sessions() {
    let env = space(&[FIFO_Q]);
    one_of_each(&env, "nonpersistent");
    let t = total(&env);
    assert_eq!((t.persistent_messages, t.persistent_bytes, t.blocks), (1, 1, 1));
    assert_eq!((t.nonpersistent_messages, t.nonpersistent_bytes), (1, 13));
    env.c("qopen QS; qinfo Q")
        .ok()
        .stdout_has("| messages | persistent | nonpersistent | bytes | blocks | np bytes");
    let mut s = env.session();
    s.run("qopen QS\nqclose").ok();
    s.run("qopen QS\nqclose\nqopen QS").ok();
    assert_eq!(total(&env), t);
    s.run("qdequeue Q\nqdequeue Q")
        .ok()
        .stdout_has("\np\n")
        .stdout_has("delivery=nonpersist\nnonpersistent");
}

/// `ipcrm` drops the non-persistent messages and keeps the persistent ones; `ipcrm -f`
/// ends an open transaction, whose dequeued message is back as it was on disk, and wakes a
/// waiting dequeue, which fails with QMENOTOPEN (a wait that ran its course would answer
/// QMENOMSG).
#[test]
fn lost_at_ipcrm() {
    let (env, daemon) = traced_space(&[FIFO_Q]);
    one_of_each(&env, "np");
    env.c("ipcrm -y QS").ok();
    let t = total(&env);
    assert_eq!((t.persistent_messages, t.nonpersistent_messages, t.nonpersistent_bytes), (1, 0, 0));
    one_of_each(&env, "np");
    let mut app = App::connect(&env);
    let id = app.begin(None).unwrap();
    assert_eq!(app.take_body("Q"), "p");
    env.c("ipcrm -f -y QS").ok();
    let e = app.commit().unwrap_err();
    assert_eq!(e.diagnostic, qm_common::Diagnostic::Tran);
    assert_eq!(
        e.message,
        format!(
            "Transaction {id} has ended: the queue space was closed (ipcrm or reconfiguration)"
        )
    );
    let m = app.take("Q");
    assert_eq!((m.body.as_slice(), m.retries), (&b"p"[..], 0));
    assert_eq!(app.drain("Q"), ["p"]);
    // A waiting dequeue learns at once that the queue space was closed under it.
    let dev = env.device.clone();
    let waiter = std::thread::spawn(move || {
        let mut app = App::connect_to(&dev);
        let wait = DequeueCtl { wait_ms: Some(60_000), ..DequeueCtl::default() };
        app.dequeue("Q", &wait)
    });
    waiting(&daemon, 1);
    env.c("ipcrm -f -y QS").ok();
    let e = waiter.join().unwrap().unwrap_err();
    assert_eq!(
        (e.diagnostic, e.message.as_str()),
        (qm_common::Diagnostic::NotOpen, "Queue space QS was closed")
    );
}

/// `qaddext` and `qspacechange` reset the queue space's memory with a WARN: the
/// non-persistent messages are lost, the persistent ones stay.
#[test]
fn lost_at_qaddext_and_qspacechange() {
    let env = space(&[FIFO_Q]);
    one_of_each(&env, "np");
    env.c("qaddext QS 20").ok().stderr_has(
        "WARN: In-memory state of queue space QS was reset: its non-persistent messages are lost",
    );
    let t = total(&env);
    assert_eq!((t.persistent_messages, t.nonpersistent_messages), (1, 0));
    one_of_each(&env, "np");
    env.c("qspacechange QS 40001 4 16 1000 ERRQ n 16")
        .ok()
        .stderr_has("WARN: In-memory state of queue space QS was reset");
    let t = total(&env);
    assert_eq!((t.persistent_messages, t.nonpersistent_messages), (2, 0));
    assert_eq!(App::connect(&env).drain("Q"), ["p", "p"]);
}

/// A daemon restart loses the non-persistent messages and keeps the persistent ones.
#[test]
fn lost_at_restart() {
    let env = space(&[FIFO_Q]);
    one_of_each(&env, "np");
    env.stop_daemon();
    let t = total(&env);
    assert_eq!((t.persistent_messages, t.nonpersistent_messages), (1, 0));
    assert_eq!(App::connect(&env).drain("Q"), ["p"]);
}
