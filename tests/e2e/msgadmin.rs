//! Message administration from qmadmin: qset, qscan (every criterion), qlist (columns,
//! verbose, the two "no messages" lines), qdeletemsg, qchangeprio, qchangetime,
//! qchangeexp, qchangequeue; messages held by a transaction are left alone.

use crate::app::{App, ERRQ, FIFO_Q, count, qlist, space, tuxedo_time};
use crate::support::Env;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Qos, TimeSpec};

/// The msgids `qlist` selects with `criteria` (qscan options) on queue Q.
#[track_caller]
fn scan(env: &Env, criteria: &str) -> Vec<String> {
    let run = env.c(&format!("qopen QS; qset Q; qscan {criteria}; qlist"));
    run.ok();
    if run.stdout.contains("Queue list - no messages") {
        return Vec::new();
    }
    run.stdout
        .lines()
        .map(|l| l.split('|').next().unwrap().trim())
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// `qset` sets and prints the target queue; message commands refuse without it.
#[test]
fn qset_target_queue() {
    let env = space(&[FIFO_Q]);
    env.c("qopen QS; qset; qset Q; qset")
        .ok()
        .stdout_has("No queue name is set\nQueue name is Q\n");
    env.c("qopen QS; qlist; qdeletemsg -y; qchangeprio -y 5").failed().errors_are(&[
        "Queue name must be set with qset",
        "Queue name must be set with qset",
        "Queue name must be set with qset",
    ]);
    // qset checks the queue exists; the setting stays as it was.
    env.c("qopen QS; qset NOPE; qset; qset Q; qset NOPE; qset")
        .failed()
        .errors_are(&[
            "Queue NOPE does not exist in queue space QS",
            "Queue NOPE does not exist in queue space QS",
        ])
        .stdout_has("No queue name is set\nQueue name is Q\n");
    env.c("qset Q").failed().stderr_has("Queue space must be opened first (qopen)");
    // The queue and the selection are forgotten at qclose and at the next qopen.
    env.c("qopen QS; qset Q; qscan -p 5; qclose; qopen QS; qset; qscan")
        .ok()
        .stdout_has("No queue name is set\nNo scan criteria are set");
    env.c("qopen QS; qset Q; qopen QS; qlist")
        .failed()
        .stderr_has("Queue name must be set with qset");
    env.c("qlist").failed().stderr_has("Queue space must be opened first (qopen)");
}

/// An option given twice is refused naming it, and the earlier setting stays.
#[test]
fn repeated_option_refused() {
    let env = space(&[FIFO_Q]);
    App::connect(&env).put("Q", "kept");
    env.c("qopen QS; qset Q; qscan -p 5; qscan -p 10 -p 20; qscan -p10 -p 20; qdeletemsg -y -y; qscan")
        .failed()
        .errors_are(&[
            "option -p is given more than once",
            "option -p is given more than once",
            "option -y is given more than once",
        ])
        .stdout_has("5")
        .stdout_lacks("20");
    assert_eq!(count(&env, "Q"), 1);
}

/// qaborttrans and qcommittrans check the transaction index before they ask for
/// confirmation, so in a script the next line is not taken as the answer.
#[test]
fn unknown_transaction_index_before_confirmation() {
    let env = space(&[FIFO_Q]);
    let mut owner = App::connect(&env);
    owner.begin(None).unwrap();
    owner.put("Q", "pending");
    let run = env.script("qopen QS\nqaborttrans 99\nqset Q\nqcommittrans 98\nqset\n");
    run.failed()
        .errors_are(&[
            "Transaction 99 is not open in queue space QS",
            "Transaction 98 is not open in queue space QS",
        ])
        .stdout_lacks("Are you sure")
        .stdout_has("Queue name is Q");
    owner.commit().expect("the open transaction is untouched");
    assert_eq!(count(&env, "Q"), 1);
}

/// Each qscan criterion selects its messages, criteria combine, `qscan` alone prints
/// them and `qscan none` clears them.
#[test]
fn qscan_criteria() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let base = crate::app::now() - 1000;
    let at = |t: u64| Some(TimeSpec::Absolute(base + t));
    let ids: Vec<String> = [
        EnqueueCtl {
            priority: Some(5),
            available: at(0),
            corrid: b"one".to_vec(),
            ..Default::default()
        },
        EnqueueCtl {
            priority: Some(50),
            available: at(100),
            corrid: b"t w o".to_vec(),
            delivery: Some(Qos::NonPersistent),
            expiration: Some(Expiry::Absolute(base + 5000)),
            ..Default::default()
        },
        EnqueueCtl {
            priority: Some(95),
            available: at(200),
            expiration: Some(Expiry::Absolute(base + 9000)),
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, ctl)| app.put_with("Q", &format!("m{i}"), ctl).to_string())
    .collect();
    let t = |s: u64| tuxedo_time(base + s);
    assert_eq!(scan(&env, ""), ids);
    assert_eq!(scan(&env, &format!("-t {}-{}", t(0), t(100))), ids[..2]);
    assert_eq!(scan(&env, &format!("-t {}", t(200))), ids[2..]);
    assert_eq!(scan(&env, "-p 1-50"), ids[..2]);
    assert_eq!(scan(&env, "-p 95"), ids[2..]);
    assert_eq!(scan(&env, &format!("-m {}", ids[1])), ids[1..2]);
    assert_eq!(scan(&env, "-i 't\\20w\\20o'"), ids[1..2]);
    assert_eq!(scan(&env, "-d persist"), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(scan(&env, "-d nonpersist"), ids[1..2]);
    assert_eq!(scan(&env, &format!("-e {}-{}", t(4000), t(6000))), ids[1..2]);
    assert_eq!(scan(&env, &format!("-e {}-{}", t(0), t(10000))), ids[1..]);
    assert_eq!(scan(&env, "-p 40-100 -d persist"), ids[2..]);
    assert_eq!(scan(&env, "-p 40-100 -i one"), Vec::<String>::new());
    // Printing, replacing and clearing criteria within one session.
    let run = env.c(&format!(
        "qopen QS; qset Q; qscan; qscan -p 10-20 -i 'a\\20b' -d nonpersist -m {}; qscan; qscan none; qscan; qlist",
        ids[0]
    ));
    run.ok()
        .stdout_has("No scan criteria are set (every message is selected)")
        .stdout_has("priority   10-20")
        .stdout_has(&format!("msgid      {}", ids[0]))
        .stdout_has("corrid     a\\20b")
        .stdout_has("delivery   nonpersist");
    assert_eq!(run.stdout.matches("No scan criteria are set").count(), 2);
    assert_eq!(
        run.stdout.lines().filter(|l| l.contains(&ids[2])).count(),
        1,
        "cleared: qlist lists all"
    );
    // Bad criteria are refused and leave the current ones.
    env.c("qopen QS; qscan -p 0; qscan -p 20-10; qscan -t 5013; qscan -d fast; qscan maybe")
        .failed()
        .errors_are(&[
            "Priority: '0' is invalid",
            "Priority: '20-10' is invalid; the range is empty",
            "Time: '5013' is invalid",
            "Delivery mode: 'fast' is invalid",
            "qscan: 'maybe' is invalid; give options or none",
        ]);
}

/// `qlist` shows msgid, priority, retries, length, delivery and reply QoS, state,
/// availability and expiration; verbose adds corrid, enqueue time, origin, reply and
/// failure queues and urcode. An empty queue and an empty selection say so differently.
#[test]
fn qlist_columns_and_empty_lines() {
    let env = space(&[FIFO_Q]);
    env.c("qopen QS; qset Q; qlist").ok().stdout_has("INFO: Queue list - no messages Q\n");
    env.c("qopen QS; qenqueue -p 7 -i cid -r RQ -f FQ -q nonpersist -u 3 -e +600 Q hello").ok();
    let run = env.c("qopen QS; qset Q; qlist");
    run.ok().stdout_has(
        " msgid            | prio | retries | length | delivery | reply qos  | state | available | expiration\n",
    );
    let row = run.stdout.lines().nth(2).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[1..7], ["7", "0", "5", "persist", "nonpersist", "ready"]);
    assert_eq!(cells[7], "-");
    assert!(cells[8].starts_with("20"), "a local time: {row}");
    let run = env.c("qopen QS; qset Q; verbose; qlist");
    run.ok().stdout_has(
        "| corrid | enqueued            | origin queue | reply queue | failure queue | urcode\n",
    );
    let row = run.stdout.lines().find(|l| l.starts_with(" 0000")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[9..], ["cid", cells[10], "-", "RQ", "FQ", "3"]);
    env.c("qopen QS; qset Q; qscan -p 1-5; qlist")
        .ok()
        .stdout_has("INFO: Queue list - no messages matched on Q\n");
}

/// `qdeletemsg` asks for confirmation (n keeps, y deletes) unless -y; it deletes only the
/// selected messages.
#[test]
fn qdeletemsg_confirms() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let ids: Vec<String> = (0..4).map(|i| app.put("Q", &format!("m{i}")).to_string()).collect();
    env.script("qopen QS\nqset Q\nqdeletemsg\nn\n")
        .ok()
        .stdout_has("Are you sure? [y, n] ")
        .stderr_has("WARN: Messages not deleted");
    assert_eq!(count(&env, "Q"), 4);
    env.script(&format!("qopen QS\nqset Q\nqscan -m {}\nqdeletemsg\ny\n", ids[1]))
        .ok()
        .stdout_has("1 message deleted\n");
    env.c("qopen QS; qset Q; qscan -p 50; qdeletemsg -y; qdeletemsg -y")
        .ok()
        .stdout_has("3 messages deleted\n")
        .stdout_has("0 messages deleted\n");
    assert_eq!(count(&env, "Q"), 0);
    let info = crate::app::qinfo(&env);
    assert_eq!((info.total.blocks, info.total.messages()), (0, 0));
}

/// `qchangeprio` re-orders a priority queue; `qchangetime +0` makes a waiting message
/// available now and an absolute future time makes a ready one wait, and on a time-ordered
/// queue a new time re-sorts; without criteria they ask for confirmation.
#[test]
fn qchangeprio_and_qchangetime() {
    let env = space(&["P priority none 0 0 100% 0% ''", FIFO_Q, "T time none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    let prio = |p: u8| EnqueueCtl { priority: Some(p), ..EnqueueCtl::default() };
    let a = app.put_with("P", "a", prio(10));
    app.put_with("P", "b", prio(50));
    env.c(&format!("qopen QS; qset P; qscan -m {a}; qchangeprio 90"))
        .ok()
        .stdout_has("1 message changed\n");
    assert_eq!(qlist(&env, "P").iter().map(|m| m.priority).collect::<Vec<_>>(), [90, 50]);
    env.script("qopen QS\nqset P\nqchangeprio 20\nn\n")
        .ok()
        .stderr_has("WARN: Priority not changed");
    env.c("qopen QS; qset P; qchangeprio 101")
        .failed()
        .stderr_has("Priority: '101' is invalid; it must be a whole number from 1 to 100");
    assert_eq!(app.drain("P"), ["a", "b"]);

    let later = app.put_with(
        "Q",
        "later",
        EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..EnqueueCtl::default() },
    );
    let now_ready = app.put("Q", "now");
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    assert_eq!(app.dequeue("Q", &peek).unwrap().body, b"now");
    env.c(&format!("qopen QS; qset Q; qscan -m {later}; qchangetime +0"))
        .ok()
        .stdout_has("1 message changed\n");
    assert_eq!(qlist(&env, "Q")[0].state, "ready");
    assert_eq!(app.dequeue("Q", &peek).unwrap().body, b"later", "available now, first in fifo");
    let future = crate::app::now() + 3600;
    env.c(&format!("qopen QS; qset Q; qscan -m {now_ready}; qchangetime {}", tuxedo_time(future)))
        .ok();
    let listed = qlist(&env, "Q");
    assert_eq!((listed[0].state.as_str(), listed[1].state.as_str()), ("ready", "waiting"));
    assert_eq!(listed[1].available, Some(future));
    env.script("qopen QS\nqset Q\nqchangetime +0\nn\n").ok().stderr_has("WARN: Time not changed");
    assert_eq!(app.drain("Q"), ["later"]);
    env.c("qopen QS; qset Q; qchangetime -y 2513").failed().stderr_has("Time: '2513' is invalid");

    // On a queue ordered by time, a new time re-sorts the message.
    let base = crate::app::now() - 1000;
    let at = |s: u64| EnqueueCtl {
        available: Some(TimeSpec::Absolute(base + s)),
        ..EnqueueCtl::default()
    };
    let a = app.put_with("T", "a", at(0));
    app.put_with("T", "b", at(10));
    app.put_with("T", "c", at(20));
    env.c(&format!("qopen QS; qset T; qscan -m {a}; qchangetime {}", tuxedo_time(base + 15)))
        .ok()
        .stdout_has("1 message changed\n");
    assert_eq!(app.drain("T"), ["b", "a", "c"]);
}

/// Messages held by a transaction (dequeued or enqueued in it) are not deleted, moved or
/// changed; the rest are.
#[test]
fn held_messages_are_left_alone() {
    let env = space(&[ERRQ, "Q fifo none 5 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("Q", "held");
    app.put("Q", "free");
    let mut owner = App::connect(&env);
    owner.begin(None).unwrap();
    assert_eq!(owner.take_body("Q"), "held");
    owner.put("Q", "uncommitted");
    let held = "1 message changed; 2 messages left alone: held by a transaction\n";
    let run =
        env.c("qopen QS; qset Q; qchangeprio -y 99; qchangetime -y +3600; qchangeexp -y +3600");
    assert_eq!(run.ok().stdout.matches(held).count(), 3, "{}", run.stdout);
    let listed = qlist(&env, "Q");
    let summary: Vec<(String, u8, bool)> =
        listed.iter().map(|m| (m.state.clone(), m.priority, m.expiration.is_some())).collect();
    assert_eq!(
        summary,
        [
            ("locked".into(), 50, false),
            ("waiting".into(), 99, true),
            ("uncommitted".into(), 50, false)
        ]
    );
    env.c("qopen QS; qset Q; qchangequeue -y R; qdeletemsg -y")
        .ok()
        .stdout_has("1 message moved; 2 messages left alone: held by a transaction\n")
        .stdout_has("0 messages deleted; 2 messages left alone: held by a transaction\n");
    // Only the held message selected: one left alone.
    let locked = qlist(&env, "Q")[0].msgid.clone();
    env.c(&format!("qopen QS; qset Q; qscan -m {locked}; qdeletemsg -y"))
        .ok()
        .stdout_has("0 messages deleted; 1 message left alone: held by a transaction\n");
    owner.abort().unwrap();
    let listed = qlist(&env, "Q");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].priority, listed[0].retries, listed[0].expiration), (50, 1, None));
    assert_eq!(count(&env, "R"), 1);
    env.c("qopen QS; qset Q; qchangequeue -y Q")
        .ok()
        .stderr_has("WARN: Queue change - new queue name Q matches old queue name");
    env.c("qopen QS; qset Q; qchangequeue -y NOPE")
        .failed()
        .stderr_has("Queue NOPE does not exist in queue space QS");
    assert_eq!((count(&env, "Q"), count(&env, "R")), (1, 1));
}

/// A change to every message of a deep queue goes 1,024 messages at a time, each step
/// durable on its own, so that other work goes on between the steps (one step of all of
/// them held every writer up for seconds at 100,000 messages). Held after its first step
/// (`QM_FAULT=gatedadmin:PATH`), `qdeletemsg -y` of 2,100 stored messages has deleted
/// 1,024; enqueues and dequeues on the queue go on meanwhile; a message taken meanwhile is
/// not counted, and one enqueued meanwhile is not deleted: the command deletes what the
/// queue held when it began. In verbose mode it shows its progress as it goes: 9 of 20
/// dots after the first step (1,024 of 2,099 messages), all 20 at the end.
#[test]
fn changes_to_many_messages_go_a_step_at_a_time() {
    use crate::support::{Output, wait_until, wait_with_timeout};
    use std::process::Stdio;
    use std::time::Duration;
    let env = Env::new();
    let (_daemon, gate) = deep_and_gated(&env, &[FIFO_Q, ERRQ]);
    assert_eq!(scan(&env, "-p 1-100").len(), 2100, "qlist of every message, in steps");
    std::fs::write(&gate, "").unwrap();
    let mut deleting = env.qmadmin_cmd();
    deleting.arg("-c").arg("qopen QS; qset Q; v; qdeletemsg -y");
    deleting.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut deleting = deleting.spawn().expect("spawn qmadmin");
    let out = Output::of(deleting.stdout.take().unwrap());
    let stepped = wait_until(Duration::from_secs(60), || count(&env, "Q") == 2100 - 1024);
    assert!(stepped, "no step of 1,024 deletions showed alone: {} left", count(&env, "Q"));
    let dots = |text: &str| text.matches('.').count();
    let told = wait_until(Duration::from_secs(10), || dots(&out.text()) == 9);
    assert!(told, "no progress after the first step: {:?}", out.text());
    let mut app = App::connect(&env);
    app.put("Q", "late");
    assert_eq!(app.take_body("Q"), "m1024", "the oldest message the first step left");
    assert_eq!(count(&env, "Q"), 2100 - 1024);
    assert!(deleting.try_wait().unwrap().is_none(), "qdeletemsg went on while it was held");
    std::fs::remove_file(&gate).unwrap();
    let ended = wait_with_timeout(deleting, "qdeletemsg", Duration::from_secs(60));
    assert_eq!(ended.status, 0, "{}", ended.stderr);
    let printed = out.text();
    assert!(printed.contains(&format!("{}\n2099 messages deleted\n", ".".repeat(20))), "{printed}");
    assert_eq!(app.drain("Q"), ["late"]);
    // Not in verbose mode (and not on a terminal): no dots, as scripts expect.
    let mut app = App::connect(&env);
    for i in 0..1100 {
        app.put("Q", &format!("n{i}"));
    }
    env.c("qopen QS; qset Q; qdeletemsg -y")
        .ok()
        .stdout_lacks(".")
        .stdout_has("1100 messages deleted\n");
    env.c("qverify").ok().stdout_has("No problem found.");
}

/// A change that fails after some of its steps keeps them, and says how many messages
/// they changed: `qchangequeue` of 2,100 messages to a queue destroyed after its first
/// step moved 1,024, and the other 1,076 stay where they were.
#[test]
fn a_change_failing_after_some_steps_keeps_them_and_says_how_many() {
    use crate::support::wait_until;
    use std::time::Duration;
    let env = Env::new();
    let (_daemon, gate) = deep_and_gated(&env, &[FIFO_Q, ERRQ, "T fifo none 0 0 100% 0% ''"]);
    std::fs::write(&gate, "").unwrap();
    std::thread::scope(|s| {
        let moving = s.spawn(|| env.c("qopen QS; qset Q; qchangequeue -y T"));
        let stepped = wait_until(Duration::from_secs(60), || count(&env, "T") == 1024);
        assert!(stepped, "no step of 1,024 moves showed alone: {} moved", count(&env, "T"));
        env.c("qopen QS; qdestroy -f -y T").ok();
        std::fs::remove_file(&gate).unwrap();
        moving.join().unwrap().failed().stderr_has(
            "Queue T does not exist in queue space QS (1024 messages were changed before it)",
        );
    });
    assert_eq!(count(&env, "Q"), 2100 - 1024);
    assert_eq!(App::connect(&env).take_body("Q"), "m1024");
    env.c("qverify").ok().stdout_has("No problem found.");
}

/// Queue space QS with `queues` and 2,100 messages `m0`, `m1`, ... on Q, stored on disk
/// alone (qmd started again since), served by a qmd that holds the steps of a change to
/// many messages after the first while the returned gate file exists.
fn deep_and_gated(env: &Env, queues: &[&str]) -> (crate::support::Daemon, std::path::PathBuf) {
    let mut commands = format!(
        "crdl {} 0 6000; qspc -n 16B QS 40000 5000 8 4 16 5000 ERRQ n 16; qopen QS",
        env.dev()
    );
    for q in queues {
        commands += &format!("; qcreate {q}");
    }
    env.c(&commands).ok();
    let mut app = App::connect(env);
    for i in 0..2100 {
        app.put("Q", &format!("m{i}"));
    }
    drop(app);
    crate::faults::stop_and_wait(env);
    let gate = env.path("gate");
    let fault = format!("gatedadmin:{}", gate.display());
    let daemon =
        crate::support::Daemon::start_with_env(&env.device, &[], &[("QM_FAULT", fault.as_str())]);
    (daemon, gate)
}
