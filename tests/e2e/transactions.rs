//! Transactions: enqueues invisible and dequeues locked until commit; commit durable,
//! abort returning messages; time-outs (per transaction and `qmd --transaction-timeout`);
//! a client that disconnects; the administrator's qprinttrans, qcommittrans and
//! qaborttrans; the queue space's transaction limit; begin and commit out of turn.

use crate::app::{
    App, ERRQ, PARAMS, count, eventually, nothing_on, qlist, refused, setup, space, space_with,
    timed, traced_space, waiting,
};
use crate::support::Env;
use qm_common::Diagnostic;
use qm_common::message::TransactionInfo;
use std::time::Duration;

/// Queue Q with 5 retries and no delay, so a rolled-back dequeue is back at once.
const RQ: &str = "Q fifo none 5 0 100% 0% ''";

/// The state `qlist` shows for each message of `queue`, with its retries.
fn states(env: &Env, queue: &str) -> Vec<(String, u32)> {
    qlist(env, queue).into_iter().map(|m| (m.state, m.retries)).collect()
}

/// Enqueues of a transaction are invisible to everyone (other clients, and the
/// transaction's own dequeues) until commit; `qlist` shows them uncommitted and `qinfo`
/// does not count them. Abort makes them vanish.
#[test]
fn enqueues_invisible_until_commit() {
    let env = space(&[ERRQ, RQ]);
    let mut a = App::connect(&env);
    let mut b = App::connect(&env);
    a.begin(None).unwrap();
    a.put("Q", "one");
    a.put("Q", "two");
    nothing_on(&mut b, "Q");
    nothing_on(&mut a, "Q");
    assert_eq!(states(&env, "Q"), [("uncommitted".into(), 0), ("uncommitted".into(), 0)]);
    assert_eq!(count(&env, "Q"), 0, "qinfo counts committed messages");
    a.commit().unwrap();
    assert_eq!(count(&env, "Q"), 2);
    assert_eq!(b.drain("Q"), ["one", "two"]);

    a.begin(None).unwrap();
    a.put("Q", "gone");
    a.abort().unwrap();
    nothing_on(&mut b, "Q");
    assert!(qlist(&env, "Q").is_empty());

    // The same from a qmadmin script.
    env.c("qopen QS; begin; qenqueue Q s1; qenqueue Q s2; commit; begin; qenqueue Q s3; abort")
        .ok()
        .stdout_has("Transaction 3 begun\n")
        .stdout_has("Transaction committed\n")
        .stdout_has("Transaction rolled back\n");
    assert_eq!(b.drain("Q"), ["s1", "s2"]);
}

/// A dequeue in a transaction locks its message: others skip it, `qlist` shows it locked;
/// abort returns it (one retry counted), commit removes it for good.
#[test]
fn dequeues_locked_until_commit() {
    let env = space(&[ERRQ, RQ]);
    let mut a = App::connect(&env);
    let mut b = App::connect(&env);
    a.put("Q", "first");
    a.put("Q", "second");
    a.begin(None).unwrap();
    assert_eq!(a.take_body("Q"), "first");
    assert_eq!(states(&env, "Q"), [("locked".into(), 0), ("ready".into(), 0)]);
    env.c("qopen QS; qset Q; qlist").ok().stdout_has("locked");
    assert_eq!(count(&env, "Q"), 2, "a locked message still counts");
    b.begin(None).unwrap();
    assert_eq!(b.take_body("Q"), "second", "the locked message is skipped");
    nothing_on(&mut b, "Q");
    b.commit().unwrap();
    a.abort().unwrap();
    assert_eq!(states(&env, "Q"), [("ready".into(), 1)]);
    let m = b.take("Q");
    assert_eq!((m.body.as_slice(), m.retries), (&b"first"[..], 1));

    a.put("Q", "third");
    a.begin(None).unwrap();
    a.take("Q");
    a.commit().unwrap();
    assert!(qlist(&env, "Q").is_empty());
    nothing_on(&mut b, "Q");
    // Within one transaction, a dequeue does not see the transaction's own enqueue.
    a.begin(None).unwrap();
    a.put("Q", "mine");
    nothing_on(&mut a, "Q");
    a.commit().unwrap();
    assert_eq!(b.drain("Q"), ["mine"]);
}

/// A commit is durable: after SIGKILL and a restart the committed work is there, while an
/// uncommitted enqueue is gone and an uncommitted dequeue's message is back.
#[test]
fn commit_survives_a_crash() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    setup(&env, "-n 16B", PARAMS, &[ERRQ, RQ]);
    let mut a = App::connect(&env);
    for body in ["consumed", "taken", "untouched"] {
        a.put("Q", body);
    }
    a.begin(None).unwrap();
    a.put("Q", "committed");
    assert_eq!(a.take_body("Q"), "consumed");
    a.commit().unwrap();
    // Now leave work open.
    let mut b = App::connect(&env);
    b.begin(None).unwrap();
    assert_eq!(b.take_body("Q"), "taken");
    b.put("Q", "uncommitted");
    daemon.signal("KILL");
    let _daemon = env.start_daemon(&[]);
    let mut c = App::connect(&env);
    let mut bodies = c.drain("Q");
    bodies.sort();
    assert_eq!(bodies, ["committed", "taken", "untouched"]);
    // The rolled-back client learns its connection is gone.
    let e = b.commit().unwrap_err();
    assert!(e.message.contains("connection to qmd lost") || e.message.contains("closed"), "{e}");
}

/// A transaction with a 1-second time-out is rolled back by the daemon: its enqueue
/// vanishes, its dequeued message comes back with a retry counted, and the owner's commit
/// fails with QMETRAN saying it timed out. The same with `begin -t 1` in qmadmin.
#[test]
fn transaction_time_out() {
    let env = space(&[ERRQ, RQ]);
    let mut a = App::connect(&env);
    a.put("Q", "work");
    let (id, took) = timed(|| {
        let id = a.begin(Some(1)).unwrap();
        a.take("Q");
        a.put("Q", "result");
        eventually("the daemon rolls the transaction back", || {
            states(&env, "Q") == [("ready".to_string(), 1)]
        });
        id
    });
    assert!(took >= Duration::from_millis(900), "rolled back after {took:?}");
    let e = refused(a.commit(), Diagnostic::Tran);
    assert_eq!(
        e.message,
        format!("Transaction {id} has ended: it timed out after 1 s and was rolled back")
    );
    let m = a.take("Q");
    assert_eq!((m.body.as_slice(), m.retries), (&b"work"[..], 1));
    nothing_on(&mut a, "Q");

    // qmadmin: begin -t 1, dequeue, wait, commit.
    a.put("Q", "script-work");
    let mut s = env.session();
    s.run("qopen QS\nbegin -t 1\nqdequeue Q").ok().stdout_has("script-work");
    eventually("rolled back", || states(&env, "Q") == [("ready".to_string(), 1)]);
    s.run("commit").failed().stderr_has("has ended: it timed out after 1 s and was rolled back");
    s.run("qdequeue Q").ok().stdout_has("retries=1");
}

/// `qmd --transaction-timeout 1` rolls back transactions that set no time-out of their own.
#[test]
fn daemon_transaction_timeout_option() {
    let env = Env::new();
    let _daemon = env.start_daemon(&["--transaction-timeout", "1"]);
    setup(&env, "", PARAMS, &[ERRQ, RQ]);
    let mut a = App::connect(&env);
    a.put("Q", "work");
    let id = a.begin(None).unwrap();
    a.take("Q");
    eventually("rolled back after a second", || states(&env, "Q") == [("ready".to_string(), 1)]);
    let e = refused(a.commit(), Diagnostic::Tran);
    assert!(e.message.starts_with(&format!("Transaction {id} has ended: it timed out")), "{e}");
    // A longer time-out of its own wins over the daemon's: it outlives a transaction
    // begun after it with the daemon's time-out.
    a.begin(Some(60)).unwrap();
    a.take("Q");
    let mut b = App::connect(&env);
    b.put("Q", "later");
    b.begin(None).unwrap();
    b.take("Q");
    eventually("the later transaction rolled back", || {
        states(&env, "Q") == [("locked".to_string(), 1), ("ready".to_string(), 1)]
    });
    refused(b.commit(), Diagnostic::Tran);
    a.commit().expect("its own time-out had not passed");
    assert_eq!(b.take_body("Q"), "later");
    assert!(qlist(&env, "Q").is_empty());
}

/// A client that disconnects mid-transaction is rolled back: its dequeued message is
/// back (retry counted) and its enqueues never appear. A qmadmin session that ends with
/// its transaction open is rolled back too.
#[test]
fn disconnect_rolls_back() {
    let env = space(&[ERRQ, RQ]);
    let mut a = App::connect(&env);
    a.put("Q", "work");
    a.begin(None).unwrap();
    a.take("Q");
    a.put("Q", "never seen");
    assert_eq!(states(&env, "Q").len(), 2);
    drop(a);
    eventually("rolled back on disconnect", || states(&env, "Q") == [("ready".to_string(), 1)]);
    env.c("qopen QS; begin; qdequeue Q; qenqueue Q also-never").failed().stderr_has("rolled back");
    eventually("the session's transaction too", || states(&env, "Q") == [("ready".to_string(), 2)]);
    let mut b = App::connect(&env);
    assert_eq!(b.drain("Q"), ["work"]);
}

/// `qprinttrans` lists another client's open transaction; `qaborttrans` rolls it back and
/// `qcommittrans` commits it (after confirmation, or with -y); the owner's later commit
/// fails with QMETRAN saying the administrator ended it.
#[test]
fn administrator_completes_transactions() {
    let env = space(&[ERRQ, RQ]);
    env.c("qopen QS; qprinttrans").ok().stdout_has("No transactions are open");
    let mut a = App::connect(&env);
    a.put("Q", "work");
    let id = a.begin(Some(600)).unwrap();
    a.take("Q");
    a.put("Q", "result");
    let list: Vec<TransactionInfo> = env.json("qopen QS; qprinttrans");
    assert_eq!(list.len(), 1);
    let t = &list[0];
    assert_eq!((t.id, t.qspace.as_str(), t.program.as_str()), (id, "QS", "e2e-app"));
    assert_eq!((t.enqueued, t.dequeued), (1, 1));
    assert!((590..=600).contains(&t.timeout_in), "{t:?}");
    env.c("qopen QS; qprinttrans")
        .ok()
        .stdout_has("timeout in (s)")
        .stdout_has(&format!(" {id} "))
        .stdout_has("e2e-app");
    // Declined, unknown, then done.
    env.script(&format!("qopen QS\nqaborttrans {id}\nn\n"))
        .ok()
        .stdout_has("Are you sure? [y, n] ")
        .stderr_has("WARN: Transaction not aborted");
    env.c("qopen QS; qaborttrans -y 999")
        .failed()
        .stderr_has("Transaction 999 is not open in queue space QS");
    assert_eq!(states(&env, "Q"), [("locked".into(), 0), ("uncommitted".into(), 0)]);
    env.c(&format!("qopen QS; qaborttrans -y {id}"))
        .ok()
        .stdout_has(&format!("Transaction {id} rolled back"));
    assert_eq!(states(&env, "Q"), [("ready".into(), 1)]);
    let e = refused(a.commit(), Diagnostic::Tran);
    assert_eq!(
        e.message,
        format!("Transaction {id} has ended: it was rolled back by the administrator")
    );

    let id = a.begin(Some(600)).unwrap();
    a.take("Q");
    a.put("Q", "result");
    env.script(&format!("qopen QS\nqcommittrans {id}\ny\n"))
        .ok()
        .stdout_has(&format!("Transaction {id} committed"));
    let e = refused(a.commit(), Diagnostic::Tran);
    assert_eq!(
        e.message,
        format!("Transaction {id} has ended: it was committed by the administrator")
    );
    assert_eq!(a.drain("Q"), ["result"]);
    env.c("qopen QS; qprinttrans").ok().stdout_has("No transactions are open");
}

/// The queue space's `Number of concurrent transactions` limits open transactions
/// (QMENOSPACE); begin while one is open, commit or abort without one, and a time-out
/// outside 1 s to a day are refused.
#[test]
fn transaction_limits_and_protocol() {
    let env = space_with("", "40000 200 8 2 16 1000 ERRQ n 16", &[ERRQ, RQ]);
    let mut a = App::connect(&env);
    let mut b = App::connect(&env);
    let mut c = App::connect(&env);
    let ta = a.begin(None).unwrap();
    b.begin(None).unwrap();
    let e = refused(c.begin(None), Diagnostic::NoSpace);
    assert_eq!(
        e.message,
        "Queue space QS has 2 transactions open, its limit (qspacechange can raise it)"
    );
    let e = refused(a.begin(None), Diagnostic::Proto);
    assert_eq!(e.message, format!("Transaction {ta} is open already; commit or abort it first"));
    a.commit().unwrap();
    c.begin(None).expect("a slot is free again");
    for e in [a.commit().unwrap_err(), a.abort().unwrap_err()] {
        assert_eq!(e.diagnostic, Diagnostic::Proto);
        assert_eq!(e.message, "No transaction is open (begin one first)");
    }
    env.c("qopen QS; begin")
        .failed()
        .stderr_has("Queue space QS has 2 transactions open, its limit");
    env.c("qopen QS; commit; abort").failed().errors_are(&[
        "No transaction is open (begin one first)",
        "No transaction is open (begin one first)",
    ]);
    b.abort().unwrap();
    c.abort().unwrap();
    env.c("qopen QS; begin; begin; commit").failed().errors_are(&["is open already"]);
    // A time-out must be 1 s to a day, as `begin -t` takes it.
    for t in [0, 86_401] {
        let e = refused(a.begin(Some(t)), Diagnostic::Inval);
        assert_eq!(
            e.message,
            format!(
                "Transaction time-out: '{t}' is invalid; it must be 1 to 86400 seconds (none: the daemon's default)"
            )
        );
    }
    env.c("qopen QS; begin -t 0").failed().stderr_has(
        "Transaction time-out: '0' is invalid; it must be a whole number from 1 to 86400",
    );
    a.begin(Some(86_400)).unwrap();
    a.commit().unwrap();
}

/// A dequeue waiting inside a transaction ends when the transaction does: at its time-out
/// (QMETRAN, not before the second; a wait that ran its whole course would answer
/// QMENOMSG), or when the administrator rolls it back while it waits.
#[test]
fn waiting_dequeue_ends_with_its_transaction() {
    let (env, daemon) = traced_space(&[ERRQ, RQ]);
    let mut a = App::connect(&env);
    let id = a.begin(Some(1)).unwrap();
    let wait = qm_common::message::DequeueCtl { wait_ms: Some(8000), ..Default::default() };
    let (result, took) = timed(|| a.dequeue("Q", &wait));
    let e = refused(result, Diagnostic::Tran);
    assert_eq!(
        e.message,
        format!("Transaction {id} has ended: it timed out after 1 s and was rolled back")
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    refused(a.commit(), Diagnostic::Tran);

    let id = a.begin(Some(600)).unwrap();
    let waiter = std::thread::spawn(move || a.dequeue("Q", &wait));
    waiting(&daemon, 2);
    assert_eq!(env.json::<Vec<TransactionInfo>>("qopen QS; qprinttrans").len(), 1);
    env.c(&format!("qopen QS; qaborttrans -y {id}")).ok();
    let e = refused(waiter.join().unwrap(), Diagnostic::Tran);
    assert!(e.message.ends_with("it was rolled back by the administrator"), "{e}");
    assert!(qlist(&env, "Q").is_empty());
}

/// A client killed while its dequeue waits takes nothing: a message enqueued afterwards
/// goes to the next consumer (plain wait), and is not charged a retry (wait in a
/// transaction).
#[test]
fn killed_waiter_takes_nothing() {
    let (env, daemon) = traced_space(&[ERRQ, RQ]);
    for (n, commands) in
        ["qopen QS; qdequeue -w 30 Q", "qopen QS; begin; qdequeue -w 30 Q"].into_iter().enumerate()
    {
        let mut cmd = env.qmadmin_cmd();
        cmd.arg("-c").arg(commands);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // Once it waits, kill it.
        waiting(&daemon, n + 1);
        child.kill().unwrap();
        child.wait().unwrap();
        crate::app::detached(&env);
        let mut a = App::connect(&env);
        a.put("Q", "precious");
        let m = a.take("Q");
        assert_eq!((m.body.as_slice(), m.retries), (&b"precious"[..], 0), "{commands}");
    }
}
