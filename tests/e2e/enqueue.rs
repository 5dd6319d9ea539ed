//! Every TPQCTL field through enqueue and dequeue, by the client API and by `qenqueue` /
//! `qdequeue`: priority, availability, expiration, correlation id, reply and failure queues,
//! delivery and reply QoS, user return code; dequeue by msgid and corrid, peek, wait;
//! out-of-order placement; msgids never reused.

use crate::app::{
    App, ERRQ, FIFO_Q, Listed, count, nothing_on, now, qlist, refused, space, timed, traced_space,
    tuxedo_time, waiting,
};
use qm_common::Diagnostic;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Placement, Qos, Select, TimeSpec};
use std::time::Duration;

fn ctl() -> EnqueueCtl {
    EnqueueCtl::default()
}

/// The `qenqueue` output: the new msgid.
#[track_caller]
fn qenqueue(env: &crate::support::Env, args: &str) -> String {
    let run = env.c(&format!("qopen QS; qenqueue {args}"));
    run.ok();
    run.stdout.trim().to_string()
}

/// Priority defaults to 50; 1 and 100 are accepted; 0 and 101 are refused with QMEINVAL
/// (client) or an error naming the range (qmadmin), and nothing is enqueued.
#[test]
fn priority_default_and_range() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "default");
    app.put_with("Q", "one", EnqueueCtl { priority: Some(1), ..ctl() });
    app.put_with("Q", "hundred", EnqueueCtl { priority: Some(100), ..ctl() });
    for p in [0, 101] {
        let e = refused(
            app.enqueue("Q", b"bad", &EnqueueCtl { priority: Some(p), ..ctl() }),
            Diagnostic::Inval,
        );
        assert_eq!(e.message, format!("Priority: '{p}' is invalid; it must be 1 to 100"));
    }
    env.c("qopen QS; qenqueue -p 0 Q bad; qenqueue -p 101 Q bad; qenqueue -p high Q bad")
        .failed()
        .errors_are(&[
            "Priority: '0' is invalid; it must be a whole number from 1 to 100",
            "Priority: '101' is invalid; it must be a whole number from 1 to 100",
            "Priority: 'high' is invalid",
        ]);
    qenqueue(&env, "-p 77 Q seventy-seven");
    let prios: Vec<u8> = qlist(&env, "Q").iter().map(|m| m.priority).collect();
    assert_eq!(prios, [50, 1, 100, 77], "only the accepted messages, fifo");
    let got: Vec<u8> = (0..4).map(|_| app.take("Q").priority).collect();
    assert_eq!(got, [50, 1, 100, 77], "the priority comes back with the message");
}

/// Availability times, relative and absolute, by client and qmadmin: not dequeueable
/// before (QMENOMSG, qlist shows it waiting with its time), dequeueable after; a waiting
/// dequeue is woken when the time comes; a time in the past is available at once.
#[test]
fn availability_time() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let start = now();
    app.put_with("Q", "rel", EnqueueCtl { available: Some(TimeSpec::Relative(2)), ..ctl() });
    app.put_with(
        "Q",
        "abs",
        EnqueueCtl { available: Some(TimeSpec::Absolute(start + 3)), ..ctl() },
    );
    qenqueue(&env, "-t +2 Q script-rel");
    qenqueue(&env, &format!("-t {} Q script-abs", tuxedo_time(start + 3)));
    qenqueue(&env, "-t 700101 Q past");
    let listed = qlist(&env, "Q");
    let states: Vec<(&str, &str)> =
        listed.iter().map(|m| (m.state.as_str(), m.msgid.as_str())).collect();
    assert_eq!(states.len(), 5, "{states:?}");
    for m in &listed[..4] {
        assert_eq!(m.state, "waiting", "{m:?}");
        let at = m.available.expect("qlist shows the availability");
        assert!((start + 2..=start + 4).contains(&at), "available at {at}, start {start}");
    }
    assert_eq!((listed[4].state.as_str(), listed[4].available), ("ready", None));
    assert_eq!(listed[1].available, Some(start + 3), "an absolute time is kept exactly");
    env.c("qopen QS; qset Q; qlist")
        .ok()
        .stdout_has("waiting")
        .stdout_has(&format!("{} ", qm_common::time::format_local(start + 3)));
    // Only the message whose time has passed is there now.
    assert_eq!(app.take_body("Q"), "past");
    nothing_on(&mut app, "Q");
    // A waiting dequeue is woken as each time comes.
    let wait = DequeueCtl { wait_ms: Some(5000), ..DequeueCtl::default() };
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = app.dequeue("Q", &wait).expect("available once its time came");
        got.push(String::from_utf8(m.body).unwrap());
    }
    got.sort();
    assert_eq!(got, ["abs", "rel", "script-abs", "script-rel"]);
    assert!(now() >= start + 3, "the absolute ones waited until {}", start + 3);
}

/// Expiration: relative, absolute and never, by client and qmadmin; a queue's default
/// (`qcreate -e +N`) applies when none is given and an explicit never overrides it.
#[test]
fn expiration_kinds_and_queue_default() {
    let env = space(&[FIFO_Q, "-e +3600 D fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let start = now();
    app.put_with("Q", "rel", EnqueueCtl { expiration: Some(Expiry::Relative(600)), ..ctl() });
    app.put_with(
        "Q",
        "abs",
        EnqueueCtl { expiration: Some(Expiry::Absolute(start + 900)), ..ctl() },
    );
    app.put_with("Q", "never", EnqueueCtl { expiration: Some(Expiry::Never), ..ctl() });
    app.put("Q", "plain");
    app.put("D", "default");
    app.put_with("D", "never", EnqueueCtl { expiration: Some(Expiry::Never), ..ctl() });
    app.put_with("D", "rel", EnqueueCtl { expiration: Some(Expiry::Relative(60)), ..ctl() });
    qenqueue(&env, "-e +120 Q script-rel");
    qenqueue(&env, &format!("-e {} Q script-abs", tuxedo_time(start + 1000)));
    qenqueue(&env, "-e none D script-none");
    qenqueue(&env, "D script-default");

    let near = |exp: Option<u64>, secs: u64| {
        let e = exp.expect("an expiration");
        assert!((start + secs..=start + secs + 3).contains(&e), "expires {e}, want ~{secs}");
    };
    let q = qlist(&env, "Q");
    near(q[0].expiration, 600);
    assert_eq!(q[1].expiration, Some(start + 900));
    assert_eq!((q[2].expiration, q[3].expiration), (None, None));
    near(q[4].expiration, 120);
    assert_eq!(q[5].expiration, Some(start + 1000));
    let d = qlist(&env, "D");
    near(d[0].expiration, 3600);
    assert_eq!(d[1].expiration, None, "an explicit never overrides the queue default");
    near(d[2].expiration, 60);
    assert_eq!(d[3].expiration, None);
    near(d[4].expiration, 3600);
    // The dequeued message carries the same expiration.
    let m = app.take("Q");
    assert_eq!(m.expiration, q[0].expiration);
    let m = app.take("D");
    assert_eq!((m.body.as_slice(), m.expiration), (&b"default"[..], d[0].expiration));
}

/// Dequeue by correlation id takes the first message with it in queue order (not the
/// first enqueued); `\xx` escapes in qmadmin give any bytes; an unknown corrid is QMENOMSG.
#[test]
fn corrid_selects_first_in_queue_order() {
    let env = space(&["P priority,fifo none 0 0 100% 0% ''", FIFO_Q]);
    let mut app = App::connect(&env);
    let with = |c: &str, p: u8| EnqueueCtl { corrid: c.into(), priority: Some(p), ..ctl() };
    app.put_with("P", "a-low", with("A", 10));
    app.put_with("P", "b-high", with("B", 90));
    app.put_with("P", "a-high-1", with("A", 90));
    app.put_with("P", "a-high-2", with("A", 90));
    let by = |c: &[u8]| DequeueCtl { select: Select::Corrid(c.to_vec()), ..DequeueCtl::default() };
    let bodies: Vec<String> = (0..3)
        .map(|_| String::from_utf8(app.dequeue("P", &by(b"A")).unwrap().body).unwrap())
        .collect();
    assert_eq!(bodies, ["a-high-1", "a-high-2", "a-low"]);
    refused(app.dequeue("P", &by(b"A")), Diagnostic::NoMsg);
    refused(app.dequeue("P", &by(b"nobody")), Diagnostic::NoMsg);
    let m = app.take("P");
    assert_eq!((m.corrid.as_slice(), m.body.as_slice()), (&b"B"[..], &b"b-high"[..]));

    // Escapes: a blank, a backslash, a NUL and 0xff, enqueued by qmadmin.
    qenqueue(&env, "-i 'a\\20b' Q first");
    qenqueue(&env, "-i 'x\\5c\\00\\ff' Q binary");
    qenqueue(&env, "-i 'a\\20b' Q second");
    assert_eq!(qlist(&env, "Q")[1].corrid, "x\\5c\\00\\ff", "qlist writes bytes escaped");
    let m = app.dequeue("Q", &by(b"x\\\x00\xff")).unwrap();
    assert_eq!(m.body, b"binary");
    env.c("qopen QS; qdequeue -i 'a\\20b' Q")
        .ok()
        .stdout_has("corrid=a\\20b")
        .stdout_has("\nfirst");
    let m = app.dequeue("Q", &by(b"a b")).unwrap();
    assert_eq!((m.corrid.as_slice(), m.body.as_slice()), (&b"a b"[..], &b"second"[..]));
}

/// Reply queue, failure queue, reply QoS and user return code come back with the message,
/// from the client and from `qdequeue` (text and JSON); absent ones come back absent.
#[test]
fn reply_failure_qos_urcode_round_trip() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let full = EnqueueCtl {
        corrid: b"c1".to_vec(),
        reply_queue: Some("REPLYQ".into()),
        failure_queue: Some("FAILQ".into()),
        reply_qos: Some(Qos::NonPersistent),
        urcode: -42,
        ..ctl()
    };
    let id = app.put_with("Q", "full", full);
    app.put("Q", "bare");
    let m = app.take("Q");
    assert_eq!(m.msgid, id);
    assert_eq!(m.reply_queue.as_deref(), Some("REPLYQ"));
    assert_eq!(m.failure_queue.as_deref(), Some("FAILQ"));
    assert_eq!(m.reply_qos, Some(Qos::NonPersistent));
    assert_eq!((m.urcode, m.retries, m.priority), (-42, 0, 50));
    assert_eq!((m.delivery, m.origin_queue.as_deref()), (Qos::Persistent, None));
    let m = app.take("Q");
    assert_eq!((m.reply_queue, m.failure_queue, m.reply_qos, m.urcode), (None, None, None, 0));

    // The same through qmadmin.
    qenqueue(&env, "-r RQ -f FQ -q persist -u 7 -i corr Q text");
    let listed: Vec<Listed> = qlist(&env, "Q");
    let l = &listed[0];
    assert_eq!(l.length, 4);
    assert!((now() - 5..=now()).contains(&l.enqueued), "enqueued {}", l.enqueued);
    assert_eq!((l.reply_queue.as_deref(), l.failure_queue.as_deref()), (Some("RQ"), Some("FQ")));
    assert_eq!((l.reply_qos.as_deref(), l.urcode, l.corrid.as_str()), (Some("persist"), 7, "corr"));
    let json: serde_json::Value = env.json("qopen QS; qdequeue -k Q");
    assert_eq!(json["reply_queue"], "RQ");
    assert_eq!(json["failure_queue"], "FQ");
    assert_eq!(json["reply_qos"], "persist");
    assert_eq!(json["urcode"], 7);
    assert_eq!(json["body"], "text");
    env.c("qopen QS; qdequeue -k Q").ok().stdout_has(
        "priority=50 corrid=corr retries=0 urcode=7 delivery=persist reply_queue=RQ \
         failure_queue=FQ reply_qos=persist\ntext",
    );
    // A script that dequeues gets what it needs to reply: -B the raw body alone.
    let raw = env.c("qopen QS; qdequeue -B Q");
    assert_eq!(raw.ok().stdout, "text", "-B prints the raw body only");
    // Unset ones are left out; the body's text shows as it is, its control characters and
    // backslashes escaped.
    qenqueue(&env, r"Q 'a b\\'");
    app.put("Q", "line\n");
    let run = env.c("qopen QS; qdequeue Q; qdequeue Q");
    run.ok()
        .stdout_has("urcode=0 delivery=persist\na b\\5c\n")
        .stdout_has("delivery=persist\nline\\0a\n")
        .stdout_lacks("reply_queue=")
        .stdout_lacks("reply_qos=");
    qenqueue(&env, "-r RQ Q only-reply");
    env.c("qopen QS; qdequeue Q")
        .ok()
        .stdout_has("delivery=persist reply_queue=RQ\nonly-reply")
        .stdout_lacks("failure_queue=");
    // A bad reply or failure queue name is refused.
    let long = EnqueueCtl { reply_queue: Some("R".repeat(200)), ..ctl() };
    let e = refused(app.enqueue("Q", b"x", &long), Diagnostic::Inval);
    assert!(e.message.starts_with("Reply queue:"), "{}", e.message);
    env.c("qopen QS; qenqueue -q loud Q x")
        .failed()
        .stderr_has("Delivery mode: 'loud' is invalid; use persist, nonpersist or default");
    assert_eq!(count(&env, "Q"), 0);
}

/// Delivery QoS: persistent, non-persistent, and the queue's default (`qcreate -d`);
/// qinfo counts each kind, and the dequeued message says which it was.
#[test]
fn delivery_qos_and_queue_default() {
    let env = space(&[FIFO_Q, "-d nonpersist N fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let qos = |q: Option<Qos>| EnqueueCtl { delivery: q, ..ctl() };
    app.put_with("Q", "p-default", qos(None));
    app.put_with("Q", "p-default2", qos(Some(Qos::Default)));
    app.put_with("Q", "np", qos(Some(Qos::NonPersistent)));
    app.put_with("N", "np-default", qos(None));
    app.put_with("N", "p", qos(Some(Qos::Persistent)));
    qenqueue(&env, "-d nonpersist Q np-script");
    qenqueue(&env, "-d persist N p-script");
    qenqueue(&env, "N np-script-default");
    let info = crate::app::qinfo(&env);
    let q = &info.queues.iter().find(|q| q.def.name == "Q").unwrap().usage;
    let n = &info.queues.iter().find(|q| q.def.name == "N").unwrap().usage;
    assert_eq!((q.persistent_messages, q.nonpersistent_messages), (2, 2));
    assert_eq!((n.persistent_messages, n.nonpersistent_messages), (2, 2));
    assert_eq!(q.nonpersistent_bytes, 2 + 9);
    assert_eq!(q.persistent_bytes, 9 + 10);
    let kinds: Vec<String> = qlist(&env, "N").into_iter().map(|m| m.delivery).collect();
    assert_eq!(kinds, ["nonpersist", "persist", "persist", "nonpersist"]);
    let got: Vec<(String, Qos)> = (0..4)
        .map(|_| {
            let m = app.take("Q");
            (String::from_utf8(m.body).unwrap(), m.delivery)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("p-default".into(), Qos::Persistent),
            ("p-default2".into(), Qos::Persistent),
            ("np".into(), Qos::NonPersistent),
            ("np-script".into(), Qos::NonPersistent),
        ]
    );
    env.c("qopen QS; qdequeue N").ok().stdout_has("delivery=nonpersist\nnp-default");
}

/// Dequeue by msgid takes exactly that message; an unknown msgid is QMENOMSG; a peek
/// (first, by msgid, by corrid) leaves the message where it was.
#[test]
fn dequeue_by_msgid_and_peek() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let a = app.put("Q", "a");
    let b = app.put_with("Q", "b", EnqueueCtl { corrid: b"cb".to_vec(), ..ctl() });
    let c = app.put("Q", "c");
    let peek = |select: Select| DequeueCtl { select, peek: true, ..DequeueCtl::default() };
    for _ in 0..2 {
        assert_eq!(app.dequeue("Q", &peek(Select::First)).unwrap().msgid, a);
        assert_eq!(app.dequeue("Q", &peek(Select::Msgid(c.clone()))).unwrap().body, b"c");
        assert_eq!(app.dequeue("Q", &peek(Select::Corrid(b"cb".to_vec()))).unwrap().msgid, b);
    }
    assert_eq!(count(&env, "Q"), 3, "peeks take nothing");
    env.c(&format!("qopen QS; qdequeue -k -m {b} Q")).ok().stdout_has("\nb");
    let m = app.take_id("Q", &b).unwrap();
    assert_eq!((m.msgid, m.body.as_slice()), (b.clone(), &b"b"[..]));
    refused(app.take_id("Q", &b), Diagnostic::NoMsg);
    let unknown = qm_common::message::MsgId(b"no such message".to_vec());
    refused(app.take_id("Q", &unknown), Diagnostic::NoMsg);
    env.c(&format!("qopen QS; qdequeue -m {c} Q")).ok().stdout_has(&format!("msgid={c} "));
    assert_eq!(app.drain("Q"), ["a"]);
}

/// A dequeue with a wait is woken by a message another client enqueues while it waits (it
/// gets the message: a wait that ran out would have answered QMENOMSG); with nothing coming
/// it fails with QMENOMSG, not before the wait time (client and `qdequeue -w`).
#[test]
fn wait_for_a_message() {
    let (env, daemon) = traced_space(&[FIFO_Q]);
    let dev = env.device.clone();
    let waiter = std::thread::spawn(move || {
        let mut app = App::connect_to(&dev);
        let wait = DequeueCtl { wait_ms: Some(60_000), ..DequeueCtl::default() };
        app.dequeue("Q", &wait)
    });
    waiting(&daemon, 1);
    let mut app = App::connect(&env);
    app.put("Q", "meanwhile");
    let got = waiter.join().unwrap();
    assert_eq!(got.expect("the waiter gets the message").body, b"meanwhile");

    let wait = DequeueCtl { wait_ms: Some(1000), ..DequeueCtl::default() };
    let (result, took) = timed(|| app.dequeue("Q", &wait));
    let e = refused(result, Diagnostic::NoMsg);
    assert_eq!(e.message, "No message arrived on queue Q within 1 second");
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    let (run, took) = timed(|| env.c("qopen QS; qdequeue -w 1 Q"));
    run.failed().stderr_has("No message arrived on queue Q within 1 second");
    assert!(took >= Duration::from_millis(1000), "{took:?}");
}

/// `TPQTOP` / `-T` puts a message first, the newest top first; `TPQBEFOREMSGID` / `-b`
/// right before its target; the order survives a restart, and a top placed after it still
/// comes first.
#[test]
fn out_of_order_placement() {
    let env = space(&["T fifo top 0 0 100% 0% ''", "M lifo msgid 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("T", "a");
    app.put("T", "b");
    app.put_with("T", "top1", EnqueueCtl { placement: Placement::Top, ..ctl() });
    qenqueue(&env, "-T T top2");
    app.put("T", "c");
    // lifo: c b a; then before b, before b again, before the first one placed.
    let a = app.put("M", "a");
    let b = app.put("M", "b");
    app.put("M", "c");
    let x = app.put_with("M", "x", EnqueueCtl { placement: Placement::Before(b.clone()), ..ctl() });
    qenqueue(&env, &format!("-b {b} M y"));
    app.put_with("M", "z", EnqueueCtl { placement: Placement::Before(x), ..ctl() });
    app.put_with("M", "before-a", EnqueueCtl { placement: Placement::Before(a), ..ctl() });
    let order = |env: &crate::support::Env, q: &str| -> Vec<String> {
        qlist(env, q).into_iter().map(|m| m.msgid).collect()
    };
    let t_before = order(&env, "T");
    let m_before = order(&env, "M");
    env.stop_daemon();
    env.c("qopen QS").ok();
    assert_eq!(order(&env, "T"), t_before, "placement survives a restart");
    assert_eq!(order(&env, "M"), m_before);
    let mut app = App::connect(&env);
    app.put_with("T", "top3", EnqueueCtl { placement: Placement::Top, ..ctl() });
    assert_eq!(app.drain("T"), ["top3", "top2", "top1", "a", "b", "c"], "newest top first");
    assert_eq!(app.drain("M"), ["c", "z", "x", "y", "b", "before-a", "a"]);
}

/// Placement the queue does not allow is refused (none, top-only, msgid-only), and
/// before an unknown message is QMEBADMSGID; nothing is enqueued.
#[test]
fn placement_refused() {
    let env = space(&[
        FIFO_Q,
        "T fifo top 0 0 100% 0% ''",
        "M fifo msgid 0 0 100% 0% ''",
        "B fifo top,msgid 0 0 100% 0% ''",
    ]);
    let mut app = App::connect(&env);
    let target = app.put("Q", "target");
    let m_target = app.put("M", "target");
    let top = EnqueueCtl { placement: Placement::Top, ..ctl() };
    let before = |id: &qm_common::message::MsgId| EnqueueCtl {
        placement: Placement::Before(id.clone()),
        ..ctl()
    };
    let e = refused(app.enqueue("Q", b"x", &top), Diagnostic::Inval);
    assert_eq!(
        e.message,
        "Queue Q does not allow top-of-queue enqueuing (its out-of-order setting is none)"
    );
    let e = refused(app.enqueue("Q", b"x", &before(&target)), Diagnostic::Inval);
    assert_eq!(
        e.message,
        "Queue Q does not allow enqueuing before a message id (its out-of-order setting is none)"
    );
    refused(app.enqueue("M", b"x", &top), Diagnostic::Inval);
    let e = refused(app.enqueue("T", b"x", &before(&target)), Diagnostic::Inval);
    assert!(e.message.contains("its out-of-order setting is top"), "{}", e.message);
    // Before a message that does not exist, or is on another queue.
    let unknown = qm_common::message::MsgId(b"00000000000000ff".to_vec());
    let e = refused(app.enqueue("M", b"x", &before(&unknown)), Diagnostic::BadMsgid);
    assert_eq!(e.message, "Message 00000000000000ff is not on queue M");
    refused(app.enqueue("B", b"x", &before(&m_target)), Diagnostic::BadMsgid);
    refused(
        app.enqueue("M", b"x", &before(&qm_common::message::MsgId(b"zz".to_vec()))),
        Diagnostic::BadMsgid,
    );
    env.c(&format!(
        "qopen QS; qenqueue -T Q x; qenqueue -b {target} Q x; qenqueue -T M x; qenqueue -b {target} T x; qenqueue -b 00000000000000ff M x"
    ))
    .failed()
    .errors_are(&[
        "Queue Q does not allow top-of-queue enqueuing (its out-of-order setting is none)",
        "Queue Q does not allow enqueuing before a message id (its out-of-order setting is none)",
        "Queue M does not allow top-of-queue enqueuing (its out-of-order setting is msgid)",
        "Queue T does not allow enqueuing before a message id (its out-of-order setting is top)",
        "Message 00000000000000ff is not on queue M",
    ]);
    for q in ["Q", "T", "M", "B"] {
        assert_eq!(count(&env, q), u64::from(q == "Q" || q == "M"), "queue {q}");
    }
}

/// Msgids are never reused: after messages of every kind (persistent, non-persistent,
/// transactional, rolled back, expired at once) are drained and the daemon restarts, a
/// new msgid is greater than every earlier one. The same holds after `ipcrm`.
#[test]
fn msgids_never_reused() {
    let env = space(&[ERRQ, FIFO_Q]);
    let mut seen = Vec::new();
    for round in 0..3 {
        let mut app = App::connect(&env);
        let first = app.put("Q", "persistent");
        if let Some(last) = seen.last() {
            assert!(first > *last, "round {round}: {first} after {last}");
        }
        seen.push(first);
        let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..ctl() };
        seen.push(app.put_with("Q", "np", np.clone()));
        app.begin(None).unwrap();
        seen.push(app.put("Q", "committed"));
        app.commit().unwrap();
        app.begin(None).unwrap();
        seen.push(app.put("Q", "rolled back"));
        app.abort().unwrap();
        seen.push(app.put_with(
            "Q",
            "expired",
            EnqueueCtl { expiration: Some(Expiry::Relative(0)), ..ctl() },
        ));
        seen.push(app.put_with("Q", "np last", np));
        assert_eq!(app.drain("Q"), ["persistent", "np", "committed", "np last"]);
        drop(app);
        crate::app::detached(&env);
        match round {
            0 => {
                env.stop_daemon();
                env.c("qopen QS").ok();
            }
            _ => {
                env.c("ipcrm -y QS").ok();
            }
        }
    }
    let mut app = App::connect(&env);
    let last = app.put("Q", "after");
    assert!(seen.iter().all(|id| *id < last), "{last} must be above {seen:?}");
    let sorted = {
        let mut s = seen.clone();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(sorted, seen, "msgids only grow");
}

/// Runs qmadmin with `args`, `input` on standard input, and a time limit: a qmadmin that
/// hangs fails the test instead of blocking it.
#[track_caller]
fn with_stdin(env: &crate::support::Env, args: &[&str], input: &[u8]) -> crate::support::Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = env.qmadmin_cmd();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn qmadmin");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let run = crate::support::wait_with_timeout(
        child,
        &format!("qmadmin {args:?}"),
        Duration::from_secs(15),
    );
    let _ = writer.join();
    run
}

/// With `-c` the body may come from standard input, read to its end (with or without
/// `-F -`); when the commands themselves come from standard input, `-F -` is refused with
/// an error saying how to give the body, nothing is enqueued, and the script goes on.
#[test]
fn body_from_standard_input() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let body = b"hi\nsecond line\n\x00\xff";
    with_stdin(&env, &["-c", "qopen QS; qenqueue Q"], body).ok();
    assert_eq!(app.take("Q").body, body);
    with_stdin(&env, &["-c", "qopen QS; qenqueue -F - -p 7 Q"], b"from -F -").ok();
    let m = app.take("Q");
    assert_eq!((m.body.as_slice(), m.priority), (&b"from -F -"[..], 7));
    // Standard input holds one body: a second qenqueue reading it is refused.
    with_stdin(&env, &["-c", "qopen QS; qenqueue Q; qenqueue Q"], b"once")
        .failed()
        .stderr_has("standard input was read for an earlier message body");
    assert_eq!(app.drain("Q"), ["once"]);
    // With -c, prompts never take their answers from standard input: qchange keeps its
    // current limits and command, and the whole input is the body.
    let before = crate::app::qinfo(&env);
    with_stdin(&env, &["-c", "qopen QS; qchange Q none 2 3; qenqueue Q"], b"50%\n10%\ncmd\n").ok();
    assert_eq!(app.take("Q").body, b"50%\n10%\ncmd\n");
    let after = crate::app::qinfo(&env);
    let threshold = |l: &qm_common::queue::QueueListing| l.queues[0].def.threshold.clone();
    assert_eq!(threshold(&after), threshold(&before));
    assert_eq!(after.queues[0].def.retries, 2);
    // qcreate's optional answers take their defaults; the piped "lifo" is not one of them.
    with_stdin(&env, &["-c", "qopen QS; qcreate NEWQ"], b"lifo\n").ok();
    let listing = crate::app::qinfo(&env);
    let newq = listing.queues.iter().find(|q| q.def.name == "NEWQ").expect("NEWQ");
    assert_eq!(newq.def.order.to_string(), "fifo");

    let refused = "the body cannot be read from standard input when the commands come from it: \
                   give the body as an argument or with -F FILE";
    let script = "qopen QS\nqenqueue -F - Q\nnot a body\nqenqueue Q after\n";
    with_stdin(&env, &[], script.as_bytes()).failed().errors_are(&[refused, "not found"]);
    assert_eq!(app.drain("Q"), ["after"], "nothing enqueued from standard input");
}

/// Under `--json` the new msgid is on standard output as `{"msgid": ...}`.
#[test]
fn qenqueue_json_prints_the_msgid() {
    let env = space(&[FIFO_Q]);
    let v: serde_json::Value = env.json("qopen QS; qenqueue Q hello");
    let id = v["msgid"].as_str().expect("msgid").to_string();
    assert_eq!(id.len(), 16, "{v}");
    let mut app = App::connect(&env);
    assert_eq!(app.take("Q").msgid.to_string(), id);
    let plain = env.c("qopen QS; qenqueue Q again");
    assert_eq!(plain.ok().stdout.trim().len(), 16, "{}", plain.stdout);
}

/// Bodies show as the text they are: UTF-8 as it is (only control characters and the
/// backslash escaped); in JSON the text itself, or base64 for bytes that are not UTF-8,
/// with `body_encoding` saying which.
#[test]
fn bodies_show_as_text_and_json_says_how() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "héllo wörld ✓\tdone");
    app.enqueue("Q", &[0xff, 0x01, b'a'], &EnqueueCtl::default()).unwrap();
    env.c("qopen QS; qdequeue -k Q").ok().stdout_has("\nhéllo wörld ✓\\09done\n");
    let json: serde_json::Value = env.json("qopen QS; qdequeue Q");
    assert_eq!(
        (json["body"].as_str(), json["body_encoding"].as_str()),
        (Some("héllo wörld ✓\tdone"), Some("utf-8"))
    );
    let json: serde_json::Value = env.json("qopen QS; qdequeue Q");
    assert_eq!(
        (json["body"].as_str(), json["body_encoding"].as_str()),
        (Some("/wFh"), Some("base64"))
    );
}
