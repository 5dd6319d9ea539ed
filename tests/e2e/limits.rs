//! A queue space's limits on who uses it at once: its concurrent processes (attached
//! sessions of applications, qmadmin and forwarders) and its waiting dequeues (processes
//! plus `-A` actions).

use crate::app::{App, FIFO_Q, refused, setup, waiting};
use crate::support::{Env, wait_with_timeout};
use qm_common::Diagnostic;
use qm_common::message::DequeueCtl;
use qm_common::qspace::Attachment;
use std::time::Duration;

/// Two processes: two applications attach; a third, and a qmadmin `qopen`, are refused
/// with the limit and who holds it, and nothing changes; once one detaches, the third gets
/// in.
#[test]
fn the_process_limit_refuses_one_session_more() {
    let env = Env::new();
    setup(&env, "", "40000 100 4 4 2 100 '' n 16", &[FIFO_Q]);
    let mut a = App::connect(&env);
    let mut b = App::connect(&env);
    a.put("Q", "a");
    b.put("Q", "b");
    let mut c = App::connect(&env);
    let e = refused(c.dequeue("Q", &DequeueCtl::default()), Diagnostic::NoSpace);
    let who = format!("e2e-app pid {}", std::process::id());
    assert!(
        e.message.starts_with(&format!(
            "Queue space QS has 2 processes attached, its limit (qspacechange can raise it): {who}"
        )),
        "{e}"
    );
    env.c("qopen QS").failed().stderr_has("Queue space QS has 2 processes attached, its limit");
    let attached: Vec<Attachment> = env.json("ipcs QS");
    assert_eq!(attached.iter().filter(|s| s.program == "e2e-app").count(), 2, "{attached:?}");
    assert_eq!(attached.len(), 2, "{attached:?}");
    drop(a);
    crate::app::eventually("one detached", || env.json::<Vec<Attachment>>("ipcs QS").len() == 1);
    assert_eq!(c.take_body("Q"), "a", "the refused dequeue took nothing");
    assert_eq!(c.take_body("Q"), "b");
}

/// Waiting dequeues are limited to processes plus `-A` actions (here 2 + 1). Each session
/// makes one request at a time and attached sessions are limited to the processes, so
/// waits outnumber them only when a session waits in a transaction after it closed the
/// queue space (`qclose`): the only way to reach this limit today. Past it a waiting
/// dequeue is refused saying so, while one that does not wait goes through, and so does
/// the next wait once a waiter got its message.
#[test]
fn waiting_dequeues_are_limited_to_processes_plus_actions() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, "-A 1", "40000 100 4 4 2 100 '' n 16", &[FIFO_Q]);
    let closed_waiter = |n: usize| {
        let mut cmd = env.qmadmin_cmd();
        cmd.arg("-c").arg("qopen QS; begin; qclose; qdequeue -w 60 Q; commit");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("spawn qmadmin");
        waiting(&daemon, n);
        child
    };
    let closed = [closed_waiter(1), closed_waiter(2)];
    let attached: Vec<Attachment> = env.json("ipcs QS");
    assert!(attached.iter().all(|s| s.program == "qmd"), "they closed QS: {attached:?}");
    let wait = DequeueCtl { wait_ms: Some(60_000), ..DequeueCtl::default() };
    let dev = env.device.clone();
    let ctl = wait.clone();
    let attached_waiter = std::thread::spawn(move || {
        let mut app = App::connect_to(&dev);
        app.dequeue("Q", &ctl).map(|m| String::from_utf8(m.body).unwrap())
    });
    waiting(&daemon, 3);
    let mut app = App::connect(&env);
    let e = refused(app.dequeue("Q", &wait), Diagnostic::System);
    assert_eq!(
        e.message,
        "No action available for a waiting dequeue: 3 are waiting already (processes plus -A actions of queue space QS)"
    );
    refused(app.dequeue("Q", &DequeueCtl::default()), Diagnostic::NoMsg);
    // A waiter gets a message and ends: a wait fits again (and runs its course).
    app.put("Q", "x");
    // Taken by a waiter before this session asks (on a busy machine its request could
    // otherwise come first).
    let peek = DequeueCtl { peek: true, ..DequeueCtl::default() };
    crate::app::eventually("a waiter took x", || app.dequeue("Q", &peek).is_err());
    let short = DequeueCtl { wait_ms: Some(100), ..DequeueCtl::default() };
    crate::app::eventually("a wait fits again", || match app.dequeue("Q", &short) {
        Err(e) if e.diagnostic == Diagnostic::System => false,
        Err(e) => e.message == "No message arrived on queue Q within 100 ms",
        Ok(m) => panic!("x went to the wrong dequeue: {m:?}"),
    });
    app.put("Q", "y");
    app.put("Q", "z");
    let mut got = vec![attached_waiter.join().unwrap().expect("the attached waiter")];
    for child in closed {
        let run = wait_with_timeout(child, "a waiting qmadmin", Duration::from_secs(60));
        run.ok();
        // The body is the line after qdequeue's msgid line.
        let mut lines = run.stdout.lines().skip_while(|l| !l.starts_with("msgid="));
        got.push(lines.nth(1).unwrap_or_else(|| panic!("no body in {run:?}")).to_string());
    }
    got.sort();
    assert_eq!(got, ["x", "y", "z"]);
}
