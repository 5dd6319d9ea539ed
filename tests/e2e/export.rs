//! qexport and qimport: a round trip keeps order, msgids and every property; a repeated
//! import adds nothing; messages whose msgids another queue space holds get new ones and
//! keep their place; `-q` and `-t` select; a stream that is cut short or damaged is
//! refused where it goes wrong; `-` pipes one qmadmin into another.

use crate::app::{App, Listed, admin_on as admin, all, qlist, varied};
use crate::support::{Env, QMADMIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A device with queue space `qspace` (key `key`) and, when `queues`, queues P
/// (priority,fifo) and Q (fifo).
fn device(device: &Path, qspace: &str, key: u32, queues: bool) {
    let mut cmds = format!(
        "crdl {} 0 40000; qspc -n 200B {qspace} {key} 30000 12 20 20 50000 '' n 16; qopen {qspace}",
        device.display()
    );
    if queues {
        cmds += "; qcreate P priority,fifo none 0 0 100% 0% ''; qcreate Q fifo none 0 0 100% 0% ''";
    }
    admin(device, &cmds).ok();
}

#[test]
fn a_round_trip_keeps_order_msgids_and_properties_and_a_second_import_adds_nothing() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    varied(&mut app, 400, Some(11));
    for i in 0..30 {
        app.put("Q", &format!("fifo {i}"));
    }
    let stream = env.path("all.qmx");
    env.c(&format!("qopen QS; qexport {}", stream.display()))
        .ok()
        .stdout_has("Exported 431 messages")
        .stdout_has("2 queue definitions")
        .stdout_lacks("....");
    // In verbose mode, progress dots: by messages exported, by bytes of the file imported.
    let dots = format!("{}\n", ".".repeat(20));
    let verbose = env.path("verbose.qmx");
    env.c(&format!("v; qopen QS; qexport {}", verbose.display())).ok().stdout_has(&dots);
    // Not over a file that exists.
    env.c(&format!("qopen QS; qexport {}", stream.display()))
        .failed()
        .stderr_has("never overwrites");

    let other = env.path("other/QUE");
    std::fs::create_dir(env.path("other")).unwrap();
    device(&other, "QS", 40000, false);
    admin(&other, &format!("qopen QS; qimport {}", stream.display()))
        .ok()
        .stdout_has("431 messages imported into queue space QS, 0 already there")
        .stdout_has("queues created: P, Q");
    admin(&other, &format!("v; qopen QS; qimport {}", verbose.display()))
        .ok()
        .stdout_has(&format!("{dots}0 messages imported into queue space QS, 431 already there"));
    let mut copy = App::connect_to(&other);
    for queue in ["P", "Q"] {
        assert_eq!(all(&mut copy, queue), all(&mut app, queue), "queue {queue}: every property");
    }
    // The one not available yet came too, with its time.
    admin(&other, "qopen QS; qset Q; qlist").ok().stdout_has("waiting");
    admin(&other, "daemon stop").ok();
}

#[test]
fn msgids_held_by_other_messages_are_renumbered_once_and_keep_their_place() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    for i in 0..20 {
        app.put("Q", &format!("m{i}"));
    }
    let stream = env.path("q.qmx");
    env.c(&format!("qopen QS; qexport -q Q {}", stream.display())).ok();
    // Another queue space whose msgids 1 to 5 are its own messages'.
    env.c("qspc QT 40001 2000 12 20 20 5000 '' n 16; qopen QT; qcreate Q fifo none 0 0 100% 0% ''")
        .ok();
    let mut theirs = Vec::new();
    for i in 0..5 {
        theirs.push(env.c(&format!("qopen QT; qenqueue Q own{i}")).ok().stdout.trim().to_string());
    }
    env.c("qopen QT; qset Q; qdequeue Q").ok();
    for _ in 0..2 {
        env.c(&format!("qopen QT; qimport {}", stream.display())).ok();
    }
    let listed = env.c("qopen QT; qset Q; qlist").ok().stdout.clone();
    let rows = listed.lines().filter(|l| l.contains("| persist")).count();
    assert_eq!(rows, 24, "4 of its own and 20 imported once: {listed}");
    env.c(&format!("qopen QT; qimport -q Q {}", stream.display()))
        .ok()
        .stdout_has("0 messages imported")
        .stdout_has("20 already there");
    // Each once, in their order; the queue space's own too.
    let mut bodies = Vec::new();
    loop {
        let run = env.c("qopen QT; qdequeue Q");
        if run.status != 0 {
            break;
        }
        bodies.push(run.stdout.lines().nth(1).unwrap_or_default().to_string());
    }
    let imported: Vec<&String> = bodies.iter().filter(|b| b.starts_with('m')).collect();
    let own: Vec<&String> = bodies.iter().filter(|b| b.starts_with("own")).collect();
    assert_eq!(
        imported,
        (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    assert_eq!(
        own,
        (1..5).map(|i| format!("own{i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    assert_eq!(theirs.len(), 5);
}

#[test]
fn selections_pipes_and_broken_streams() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    app.put("P", "p one");
    app.put("Q", "q one");
    app.put("Q", "q two");
    // -q: one queue; -t: enqueued in a time range (this year's, and none in 1999).
    let only_q = env.path("q.qmx");
    env.c(&format!("qopen QS; qexport -q Q {}", only_q.display()))
        .ok()
        .stdout_has("Exported 2 messages")
        .stdout_has("1 queue definition");
    env.c(&format!("qopen QS; qexport -t 99 {}", env.path("none.qmx").display()))
        .ok()
        .stdout_has("Exported 0 messages");
    env.c("qopen QS; qexport -q NOPE x.qmx").failed().stderr_has("Queue NOPE does not exist");

    // One qmadmin's standard output into another's standard input.
    let other = env.path("other/QUE");
    std::fs::create_dir(env.path("other")).unwrap();
    device(&other, "QS", 40001, false);
    let mut export = Command::new(QMADMIN);
    export
        .env("QMCONFIG", &env.device)
        .env_remove("QM_SOCKET")
        .arg("-c")
        .arg("qopen QS; qexport -")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut export = export.spawn().unwrap();
    let mut import = Command::new(QMADMIN);
    import
        .env("QMCONFIG", &other)
        .arg("-c")
        .env_remove("QM_SOCKET")
        .arg("qopen QS; qimport -q Q -")
        .stdin(export.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let import = import.spawn().unwrap();
    let import = crate::support::wait_with_timeout(import, "qimport", Duration::from_secs(60));
    let exported = export.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&exported.stderr).to_string();
    assert!(exported.status.success(), "{said}");
    assert!(said.contains("Exported 3 messages"), "{said}");
    import.ok().stdout_has("2 messages imported into queue space QS");
    let mut copy = App::connect_to(&other);
    let bodies: Vec<Vec<u8>> = all(&mut copy, "Q").into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, [b"q one".to_vec(), b"q two".to_vec()]);
    drop(copy);

    // A stream cut short, or with a byte changed, is refused where it goes wrong.
    let whole = std::fs::read(&only_q).unwrap();
    let cut = env.path("cut.qmx");
    std::fs::write(&cut, &whole[..whole.len() - 30]).unwrap();
    admin(&other, &format!("qopen QS; qimport {}", cut.display()))
        .failed()
        .stderr_has("cut short")
        .stderr_has("a repeated import adds only what is missing");
    let damaged = env.path("damaged.qmx");
    let mut bytes = whole.clone();
    let at = bytes.windows(5).position(|w| w == b"q two").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&damaged, &bytes).unwrap();
    admin(&other, &format!("qopen QS; qimport {}", damaged.display()))
        .failed()
        .stderr_has("fails its checksum");
    admin(&other, "daemon stop").ok();
}

/// `qexport -x` moves: the stream holds the messages and the queue no longer does, except
/// a message a transaction holds; a session that goes away before its stream is written
/// leaves every message where it was.
#[test]
fn a_move_takes_the_messages_out_only_once_the_stream_is_written() {
    use qm_common::client::Client;
    use qm_common::protocol::{MessageRequest, QueueSpaceRequest, Request};
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    for i in 0..10 {
        app.put("Q", &format!("moved {i}"));
    }
    // A session that asks for a move and goes away before ending it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = Client::connect_device(&env.device, "e2e-move").await.unwrap();
        let open = Request::QueueSpace(QueueSpaceRequest::Open { name: "QS".into() });
        client.call(open).await.unwrap();
        let export = MessageRequest::Export { queue: Some("Q".into()), enqueued: None, take: true };
        let mut sent = 0;
        client
            .call_streaming(
                Request::Message(export),
                |_| {},
                |b| {
                    sent += b.messages.len();
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!(sent, 10);
    });
    drop(rt);
    crate::app::eventually("the held messages to come back", || {
        env.c("qopen QS; qinfo Q").ok().stdout.contains(" 10 |")
    });
    // One held by a transaction stays where it is.
    let mut holder = App::connect(&env);
    holder.begin(None).unwrap();
    let held = holder.take("Q");
    let stream = env.path("moved.qmx");
    env.c(&format!("qopen QS; qexport -x -q Q {}", stream.display()))
        .ok()
        .stdout_has("Exported 9 messages")
        .stdout_has("and took 9 messages out of it");
    env.c(&format!("qopen QS; qexport -k -x {}", env.path("no.qmx").display()))
        .failed()
        .stderr_has("give one");
    // Only the held one is left, still held.
    assert!(all(&mut app, "Q").is_empty());
    env.c("qopen QS; qinfo Q").ok().stdout_has(" 1 |");
    holder.commit().unwrap();
    assert!(held.body.starts_with(b"moved "));
    // The stream holds the nine, ready to go in elsewhere.
    env.c("qspc QT 40001 2000 12 20 20 5000 '' n 16").ok();
    env.c(&format!("qopen QT; qimport {}", stream.display()))
        .ok()
        .stdout_has("9 messages imported into queue space QT");
}

/// `qexport -x` of more stored messages than one step of message administration locks
/// (1,024) takes every one out, in the queue's order, in one move.
#[test]
fn a_move_of_many_stored_messages_takes_them_all_in_order() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    let bodies: Vec<String> = (0..2100).map(|i| format!("m{i}")).collect();
    for body in &bodies {
        app.put("Q", body);
    }
    drop(app);
    // Started again, the messages are on disk alone.
    crate::faults::stop_and_wait(&env);
    let stream = env.path("moved.qmx");
    env.c(&format!("qopen QS; qexport -x -q Q {}", stream.display()))
        .ok()
        .stdout_has("Exported 2100 messages")
        .stdout_has("and took 2100 messages out of it");
    env.c("qopen QS; qinfo Q").ok().stdout_has(" 0 |");
    env.c(&format!("qopen QS; qimport {}", stream.display()))
        .ok()
        .stdout_has("2100 messages imported into queue space QS");
    assert_eq!(App::connect(&env).drain("Q"), bodies);
}

/// A stream whose message says what qm never stores (here a priority of 0) is refused,
/// naming the message and what is wrong, and its batch adds nothing.
#[test]
fn a_stream_with_an_impossible_message_changes_nothing() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let bytes = stream_of([hand_made(7, 50, 1), hand_made(8, 0, 1)]);
    let stream = env.path("bad.qmx");
    std::fs::write(&stream, bytes).unwrap();
    env.c(&format!("qopen QS; qimport {}", stream.display()))
        .failed()
        .stderr_has("imported message 0000000000000008: its priority 0 is not 1 to 100");
    env.c("qopen QS; qinfo Q").ok().stdout_has(" 0 |");
}

/// A message of queue Q made by hand, as a stream from elsewhere would carry it, with
/// `time` for each of its times and "hand made" for its body.
pub(crate) fn hand_made(msgid: u64, priority: u8, time: u64) -> qm_common::export::ExportedMessage {
    use qm_common::export::{ExportedMessage, Properties};
    ExportedMessage {
        props: Properties {
            msgid: format!("{msgid:016x}"),
            queue: "Q".into(),
            corrid: String::new(),
            priority,
            enqueued_us: time,
            available_us: time,
            order_time_us: time,
            expires_us: None,
            retries: 0,
            delivery: qm_common::message::Qos::Persistent,
            reply_queue: None,
            failure_queue: None,
            reply_qos: None,
            urcode: 0,
            origin_queue: None,
            placement: None,
        },
        body: b"hand made".to_vec(),
    }
}

/// The stream of `messages`, from queue space QS of a device elsewhere.
pub(crate) fn stream_of(
    messages: impl IntoIterator<Item = qm_common::export::ExportedMessage>,
) -> Vec<u8> {
    use qm_common::export::{Header, VERSION, Writer};
    let header = Header {
        version: VERSION,
        qm_version: "test".into(),
        created: 0,
        device: "elsewhere".into(),
        qspace: "QS".into(),
    };
    let mut w = Writer::new(Vec::new(), &header).unwrap();
    for m in messages {
        w.message(&m).unwrap();
    }
    w.finish().unwrap().0
}

/// A stream of `n` messages of queue Q (fifo), in the order the queue holds them: msgids 1
/// to `n`, each enqueued at its msgid's microsecond.
fn many(n: u64) -> Vec<u8> {
    stream_of((1..=n).map(|msgid| hand_made(msgid, 50, msgid)))
}

/// An import of many batches sends several at once, on connections of its own: the queue
/// still holds them in the stream's order, and when the queue space fills up part way, the
/// count said is what the queue holds, every batch sent before the failure answered.
#[test]
fn an_import_in_batches_sent_side_by_side_keeps_the_order_and_counts_true() {
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let n = 9_000;
    let stream = env.path("many.qmx");
    std::fs::write(&stream, many(n)).unwrap();
    env.c(&format!("qopen QS; qimport {}", stream.display()))
        .ok()
        .stdout_has("9000 messages imported into queue space QS, 0 already there");
    let listed: Vec<String> = qlist(&env, "Q").into_iter().map(|m| m.msgid).collect();
    let expected: Vec<String> = (1..=n).map(|m| format!("{m:016x}")).collect();
    assert!(listed == expected, "the queue's order is not the stream's: {:?}", &listed[..20]);

    // Room for 5,000 messages only.
    let small = env.path("small/QUE");
    std::fs::create_dir(env.path("small")).unwrap();
    admin(
        &small,
        &format!(
            "crdl {} 0 40000; qspc -n 200B QS 40001 30000 12 20 20 5000 '' n 16; qopen QS; \
             qcreate Q fifo none 0 0 100% 0% ''",
            small.display()
        ),
    )
    .ok();
    let run = admin(&small, &format!("qopen QS; qimport {}", stream.display()));
    let said = run.failed().stderr.clone();
    let before = said.split(" messages imported").next().unwrap_or_default();
    let digits: String = before.chars().rev().take_while(char::is_ascii_digit).collect();
    let held: u64 = digits.chars().rev().collect::<String>().parse().expect(&said);
    let listed = admin(&small, "qopen QS; qset Q; qlist --json").json::<Vec<Listed>>();
    assert_eq!(listed.len() as u64, held, "{said}");
    assert!(held > 0 && held <= 5000, "{said}");
    admin(&small, "daemon stop").ok();
}

/// A message imported from elsewhere keeps its enqueue time, older than the message
/// enqueued here before it: it is the queue's oldest, also when both are read from disk
/// after a restart (an import is never taken for a message enqueued in sequence here,
/// whose age its number gives).
#[test]
fn an_imported_message_older_than_the_queue_is_its_oldest() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let env = Env::new();
    device(&env.device, "QS", 40000, true);
    let mut app = App::connect(&env);
    app.put("Q", "enqueued here");
    drop(app);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    let stream = env.path("old.qmx");
    std::fs::write(&stream, stream_of([hand_made(1000, 50, now - 3_600_000_000)])).unwrap();
    env.c(&format!("qopen QS; qimport {}", stream.display())).ok();
    crate::faults::stop_and_wait(&env);
    let _daemon = env.start_daemon(&[]);
    let view: serde_json::Value = env.json("qopen QS; qstat --json QS");
    let rows = view["queues"].as_array().expect("queues");
    let q = rows.iter().find(|r| r["queue"] == "Q").expect("Q");
    assert_eq!(q["messages"], 2, "{q}");
    let oldest = q["oldest_age_ms"].as_u64().expect("oldest_age_ms");
    assert!(oldest >= 3_600_000, "the imported message is an hour old: {oldest} ms");
    env.c("qverify QS").ok().stdout_has("No problem found.");
}
