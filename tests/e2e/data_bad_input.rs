//! Bad input to the data plane: unknown queues and queue spaces, malformed times, bad
//! msgid escapes, identifiers over 32 bytes, unknown delivery modes, conflicting options.
//! Every error is clear, the script goes on, and nothing changes.

use crate::app::{App, FIFO_Q, QS, qinfo, qlist, refused, space};
use qm_common::Diagnostic;
use qm_common::client::Client;
use qm_common::message::{
    BODY_MAX, DequeueCtl, EnqueueCtl, Expiry, MsgId, Placement, Select, TimeSpec,
};

/// qenqueue and qdequeue refuse bad options one clear error each; the script carries
/// on to its last command and the queue space is as before.
#[test]
fn qmadmin_bad_options() {
    let env = space(&[FIFO_Q]);
    env.c("qopen QS; qenqueue Q keep").ok();
    let before = (qinfo(&env), qlist(&env, "Q").len());
    let long = "x".repeat(33);
    let script = format!(
        "qenqueue Q x
qopen QS
qenqueue NOPE x
qdequeue NOPE
qenqueue -t 5013 Q x
qenqueue -t 25133 Q x
qenqueue -t +x Q x
qenqueue -t 251332 Q x
qenqueue -e +x Q x
qenqueue -e never Q x
qdequeue -m abc\\zz Q
qenqueue -b abc\\zz Q x
qenqueue -i {long} Q x
qdequeue -i {long} Q
qdequeue -m {long} Q
qenqueue -d fast Q x
qenqueue -q slow Q x
qenqueue -T -b 0000000000000001 Q x
qdequeue -m 0000000000000001 -i c Q
qdequeue -w soon Q
qenqueue -p 0 Q x
qenqueue -u abc Q x
qenqueue -r 'bad name' Q x
qenqueue -F {missing} Q
qset Q
qlist
",
        missing = env.path("missing").display()
    );
    let run = env.script(&script);
    run.failed().errors_are(&[
        "No queue space is open: name one, or qopen it first",
        "Queue NOPE does not exist in queue space QS",
        "Queue NOPE does not exist in queue space QS",
        "Availability time: '5013' is invalid; years 38 to 69 cannot be written",
        "Availability time: '25133' is invalid; write +seconds or YY[MM[DD[HH[MM[SS]]]]]",
        "Availability time: '+x' is invalid; write +seconds or YY[MM[DD[HH[MM[SS]]]]]",
        "Availability time: '251332' is invalid; no such date or time",
        "Expiration time: '+x' is invalid; write +seconds, YY[MM[DD[HH[MM[SS]]]]] or none",
        "Expiration time: 'never' is invalid; write +seconds, YY[MM[DD[HH[MM[SS]]]]] or none",
        "Message id: 'abc\\zz' is invalid; a backslash must be followed by two hex digits",
        "Message id: 'abc\\zz' is invalid; a backslash must be followed by two hex digits",
        "Correlation id: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is invalid; at most 32 bytes are allowed",
        "Correlation id: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is invalid; at most 32 bytes are allowed",
        "Message id: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is invalid; at most 32 bytes are allowed",
        "Delivery mode: 'fast' is invalid; use persist, nonpersist or default",
        "Delivery mode: 'slow' is invalid; use persist, nonpersist or default",
        "-T (top of queue) and -b (before a message) cannot be combined",
        "-m (by message id) and -i (by correlation id) cannot be combined",
        "Wait seconds: 'soon' is invalid; it must be a whole number from 0 to 86400",
        "Priority: '0' is invalid; it must be a whole number from 1 to 100 (QMEINVAL)",
        "User return code: 'abc' is invalid",
        "Reply queue: Queue name: 'bad name' is invalid",
        "No such file or directory (os error 2) (QMEINVAL)",
    ]);
    run.stdout_has(" msgid ");
    assert_eq!((qinfo(&env), qlist(&env, "Q").len()), before, "nothing changed");
    assert_eq!(App::connect(&env).drain("Q"), ["keep"]);
}

/// The client gets the right diagnostic for each bad call, and nothing changes: unknown
/// queue (QMEBADQUEUE), unknown queue space, msgids over 32 bytes or empty (QMEBADMSGID),
/// corrids over 32 bytes (QMEINVAL), a transaction naming another queue space.
#[test]
fn client_bad_calls() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    app.put("Q", "keep");
    let before = qinfo(&env);
    let e = refused(app.enqueue("NOPE", b"x", &EnqueueCtl::default()), Diagnostic::BadQueue);
    assert_eq!(e.message, "Queue NOPE does not exist in queue space QS");
    refused(app.dequeue("NOPE", &DequeueCtl::default()), Diagnostic::BadQueue);
    let ctl = DequeueCtl { wait_ms: Some(100), ..DequeueCtl::default() };
    refused(app.dequeue("NOPE", &ctl), Diagnostic::BadQueue);
    let e = refused(
        app.enqueue("Q", b"x", &EnqueueCtl { corrid: vec![b'c'; 33], ..EnqueueCtl::default() }),
        Diagnostic::Inval,
    );
    assert!(e.message.contains("at most 32 bytes"), "{e}");
    let long_id = MsgId(vec![b'0'; 33]);
    let e = refused(
        app.enqueue(
            "Q",
            b"x",
            &EnqueueCtl { placement: Placement::Before(long_id.clone()), ..EnqueueCtl::default() },
        ),
        Diagnostic::BadMsgid,
    );
    assert_eq!(
        e.message,
        format!("Message id: '{long_id}' is invalid; at most 32 bytes are allowed")
    );
    let by = |select: Select| DequeueCtl { select, ..DequeueCtl::default() };
    refused(app.dequeue("Q", &by(Select::Msgid(long_id))), Diagnostic::BadMsgid);
    let e = refused(app.dequeue("Q", &by(Select::Msgid(MsgId(Vec::new())))), Diagnostic::BadMsgid);
    assert_eq!(e.message, "Message id must not be empty");
    let e = refused(app.dequeue("Q", &by(Select::Corrid(vec![b'c'; 33]))), Diagnostic::Inval);
    assert!(e.message.starts_with("Correlation id: "), "{e}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Client::connect_device(&env.device, "e2e-bad").await.unwrap();
        let e = c.enqueue("NOSPACE", "Q", b"x", &EnqueueCtl::default()).await.unwrap_err();
        assert!(e.message.contains("NOSPACE"), "{e}");
        c.begin(QS, None).await.unwrap();
        let e = c.enqueue("OTHER", "Q", b"x", &EnqueueCtl::default()).await.unwrap_err();
        assert_eq!(e.diagnostic, Diagnostic::Inval);
        assert!(e.message.contains("it cannot include queue space OTHER"), "{e}");
        c.abort().await.unwrap();
    });
    assert_eq!(qinfo(&env), before);
    assert_eq!(app.drain("Q"), ["keep"]);
}

/// A body far over the limit is refused by the client before it is framed, with the same
/// message as one byte over; the connection stays usable (client and qmadmin alike) and
/// nothing is enqueued.
#[test]
fn body_far_over_the_limit() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let limit = "bytes is over the limit of 4194304 bytes";
    for size in [BODY_MAX + 1, 5_000_000] {
        let e =
            refused(app.enqueue("Q", &vec![b'x'; size], &EnqueueCtl::default()), Diagnostic::Inval);
        assert_eq!(e.message, format!("Message body: {size} {limit}"));
    }
    app.put("Q", "still connected");
    let file = env.path("big");
    std::fs::write(&file, vec![b'x'; 5_000_000]).unwrap();
    env.c(&format!("qopen QS; qenqueue -F {} Q; qenqueue Q after", file.display()))
        .failed()
        .errors_are(&[&format!("Message body: 5000000 {limit}")])
        .stderr_lacks("connection to qmd lost");
    assert_eq!(app.drain("Q"), ["still connected", "after"]);
}

/// A body from a source without end (standard input or `-F` on `/dev/zero`) is refused as
/// soon as it passes the limit, rather than read until memory runs out; the commands after
/// it run. (qmadmin runs with 1 GiB of address space, so that a reader without a bound
/// fails here instead of exhausting the machine.)
#[test]
fn a_body_without_end_is_refused_at_the_limit() {
    let env = space(&[FIFO_Q]);
    let over = "holds more than the limit of 4194304 bytes (QMEINVAL)";
    for (commands, from_stdin) in [
        ("qopen QS; qenqueue Q; qenqueue Q after", true),
        ("qopen QS; qenqueue -F /dev/zero Q; qenqueue Q after", false),
    ] {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg("--as=1073741824").arg("--").arg(crate::support::QMADMIN);
        cmd.env("QMCONFIG", &env.device).env_remove("QM_SOCKET").args(["-c", commands]);
        let what = format!("{cmd:?}");
        let stdin = std::fs::File::open("/dev/zero").unwrap();
        cmd.stdin(stdin).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("prlimit");
        let run =
            crate::support::wait_with_timeout(child, &what, std::time::Duration::from_secs(60));
        let source = if from_stdin { "standard input" } else { "-F /dev/zero" };
        run.failed().errors_are(&[&format!("Message body: {source} {over}")]);
    }
    assert_eq!(App::connect(&env).drain("Q"), ["after", "after"]);
}

/// Relative times are bounded so that they end by the end of 2037, as absolute times do:
/// -t and -e of qenqueue, qchangetime and qchangeexp, and the client's TPQCTL. A malformed
/// time names both forms. Nothing changes.
#[test]
fn times_past_2037_refused() {
    let env = space(&[FIFO_Q]);
    let mut app = App::connect(&env);
    let id = app.put("Q", "keep");
    let summary = |env: &crate::support::Env| -> Vec<(String, Option<u64>, Option<u64>)> {
        qlist(env, "Q").into_iter().map(|m| (m.msgid, m.available, m.expiration)).collect()
    };
    let before = summary(&env);
    let range = "+seconds must be 0 to ";
    env.c("qopen QS; qenqueue -t +99999999999 Q x; qenqueue -e +99999999999 Q x; \
           qenqueue -t +99999999999999999999999 Q x; qenqueue -t garbage Q x; \
           qset Q; qchangetime -y +99999999999; qchangeexp -y +99999999999; qchangetime -y junk")
        .failed()
        .errors_are(&[
            &format!("Availability time: '+99999999999' is invalid; {range}"),
            &format!("Expiration time: '+99999999999' is invalid; {range}"),
            &format!("Availability time: '+99999999999999999999999' is invalid; {range}"),
            "Availability time: 'garbage' is invalid; write +seconds or YY[MM[DD[HH[MM[SS]]]]]",
            &format!("Time: '+99999999999' is invalid; {range}"),
            &format!("Expiration time: '+99999999999' is invalid; {range}"),
            "Time: 'junk' is invalid; write +seconds or YY[MM[DD[HH[MM[SS]]]]]",
        ])
        .stderr_has("(times end at 2037-12-31 23:59:59)");
    // A year's worth is fine.
    env.c("qopen QS; qset Q; qchangeexp -y +31536000; qchangeexp -y none").ok();
    let e = refused(
        app.enqueue(
            "Q",
            b"x",
            &EnqueueCtl {
                available: Some(TimeSpec::Relative(99_999_999_999)),
                ..EnqueueCtl::default()
            },
        ),
        Diagnostic::Inval,
    );
    assert!(e.message.starts_with("Availability time: '+99999999999' is invalid; +seconds"), "{e}");
    let e = refused(
        app.enqueue(
            "Q",
            b"x",
            &EnqueueCtl { expiration: Some(Expiry::Absolute(u64::MAX)), ..EnqueueCtl::default() },
        ),
        Diagnostic::Inval,
    );
    assert!(e.message.contains("times end at 2037-12-31 23:59:59"), "{e}");
    assert_eq!(summary(&env), before);
    assert_eq!(app.take("Q").msgid, id);
}
