//! Forwarders (TMQFORWARD): replies, failures with retries and the error queue, `-d` with
//! the failure queue, `-e` with a re-boot by a threshold, service time-outs, boot/shutdown,
//! and no message lost or duplicated when services fail, hang, or the daemon crashes.

use crate::auto::{
    App, KillMarked, crossings, depth, eventually, lines, psr, running, server, setup,
    sleep_marker, wait_firings, wait_lines, wait_state, write_config,
};
use crate::support::{Env, wait_until};
use qm_common::message::EnqueueCtl;
use std::collections::BTreeMap;
use std::time::Duration;

/// A forwarder `1` on `queues` (`-i 0`, `extra` options) calling `service` for each.
fn config(queues: &str, extra: &str, services: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[thresholds]\ncommand_timeout = 5\n\n[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q {queues} -i 0 {extra}\"\n"
    );
    for (name, command) in services {
        text += &format!("\n[service.{name}]\ncommand = '''{command}'''\n");
    }
    text
}

/// A fifo queue with `retries` and no delay.
fn fifo(name: &str, retries: u32) -> String {
    format!("{name} fifo none {retries} 0 100% 0% ''")
}

fn reply_to(queue: &str, corrid: &str) -> EnqueueCtl {
    EnqueueCtl {
        reply_queue: Some(queue.into()),
        corrid: corrid.as_bytes().to_vec(),
        ..EnqueueCtl::default()
    }
}

/// Success: the reply (the service's standard output) goes to the request's reply queue
/// with its corrid and priority and the user return code the service wrote; a service
/// that prints nothing gives a zero-length reply.
#[test]
fn success_puts_the_reply_on_the_reply_queue() {
    let env = Env::new();
    let service = r#"body=$(cat); [ "$body" = quiet ] && exit 0; printf '%s' "$body" | tr a-z A-Z; echo 7 > "$QM_URCODE_FILE""#;
    write_config(&env, &config("SVC", "", &[("SVC", service)]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok().stdout_has("Forwarder 1 booted");
    let mut app = App::connect(&env);
    app.put_with("SVC", b"hello", EnqueueCtl { priority: Some(70), ..reply_to("R", "order-1") });
    app.put_with("SVC", b"quiet", reply_to("R", "order-2"));
    eventually("two replies", || depth(&env, "R") == 2);
    let loud = app.take("R");
    assert_eq!(loud.body, b"HELLO");
    assert_eq!(loud.corrid, b"order-1");
    assert_eq!((loud.urcode, loud.priority), (7, 70));
    let quiet = app.take("R");
    assert!(quiet.body.is_empty());
    assert_eq!((quiet.corrid.as_slice(), quiet.urcode), (b"order-2".as_slice(), 0));
    assert_eq!(depth(&env, "SVC"), 0);
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures, s.last_error.as_deref()), (2, 0, None));
    assert!(s.state == "idle" || s.state == "running", "{s:#?}");
}

/// A request without a reply queue, or whose reply queue does not exist, is consumed and
/// nothing is enqueued anywhere.
#[test]
fn without_a_reply_queue_the_request_is_consumed() {
    let env = Env::new();
    write_config(&env, &config("SVC", "", &[("SVC", "cat; echo served >> calls.txt")]));
    setup(&env, 200, &[&fifo("SVC", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put("SVC", b"no reply queue");
    app.put_with("SVC", b"missing reply queue", reply_to("NOSUCH", "c"));
    wait_lines(&env, "calls.txt", 2);
    eventually("both forwarded", || server(&env, 1).forwarded == 2);
    let listing: qm_common::queue::QueueListing = env.json("qopen QS; qinfo");
    assert_eq!(listing.total.messages(), 0, "{listing:#?}");
    assert_eq!(server(&env, 1).failures, 0);
}

/// A failing service rolls the transaction back: with retries 2 the service is called three
/// times, then the request is on the error queue with its origin queue, and never called
/// again (a later request's calls all come after); printserver counts the failures and
/// shows the last error.
#[test]
fn failures_are_retried_then_go_to_the_error_queue() {
    let env = Env::new();
    let service = r#"echo "call $(cat)" >> calls.txt; echo 'bad input' >&2; exit 1"#;
    write_config(&env, &config("SVC", "", &[("SVC", service)]));
    setup(&env, 200, &[&fifo("SVC", 2), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"request", reply_to("R", "c1"));
    eventually("the request reaches the error queue", || depth(&env, "ERRQ") == 1);
    assert_eq!(lines(&env, "calls.txt"), ["call request"; 3]);
    let failed = app.take("ERRQ");
    assert_eq!(failed.body, b"request");
    assert_eq!(failed.origin_queue.as_deref(), Some("SVC"));
    assert_eq!(failed.retries, 3);
    assert_eq!((depth(&env, "SVC"), depth(&env, "R")), (0, 0));
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (0, 3), "{s:#?}");
    assert_eq!(s.last_error.as_deref(), Some("service SVC exited with status 1: bad input"));
    env.c("psr").ok().stdout_has("bad input").stdout_has("last error");
    // A second request, forwarded after the first by the same forwarder: once it is on the
    // error queue, every call the first could have had is in the file before its own.
    app.put("SVC", b"later");
    eventually("the later request on the error queue", || depth(&env, "ERRQ") == 1);
    let mut expected = vec!["call request"; 3];
    expected.extend(["call later"; 3]);
    assert_eq!(lines(&env, "calls.txt"), expected);
}

/// `-d`: a failure with a non-empty reply puts the reply (with its urcode and corrid) on the
/// failure queue and deletes the request; when that failure also reaches the retry limit the
/// request goes to the error queue; a failure with an empty reply is retried as usual.
#[test]
fn delete_on_failure_sends_the_reply_to_the_failure_queue() {
    let env = Env::new();
    let reject = r#"cat >/dev/null; echo "$QM_QUEUE" >> calls.txt; echo "rejected $QM_RETRIES"; echo 42 > "$QM_URCODE_FILE"; exit 3"#;
    let late = r#"cat >/dev/null; echo "$QM_QUEUE" >> calls.txt; [ "$QM_RETRIES" -lt 2 ] && exit 1; echo "rejected late"; exit 3"#;
    let empty = r#"cat >/dev/null; echo "$QM_QUEUE" >> calls.txt; exit 1"#;
    write_config(
        &env,
        &config("SVC,LATE,EMPTY", "-d", &[("SVC", reject), ("LATE", late), ("EMPTY", empty)]),
    );
    setup(
        &env,
        200,
        &[&fifo("SVC", 2), &fifo("LATE", 2), &fifo("EMPTY", 1), &fifo("FAILQ", 0), &fifo("R", 0)],
    );
    server(&env, 1).options.contains("-d").then_some(()).expect("psr shows -d");
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let ctl =
        |corrid: &str| EnqueueCtl { failure_queue: Some("FAILQ".into()), ..reply_to("R", corrid) };
    app.put_with("SVC", b"req-svc", ctl("c-svc"));
    eventually("the failure reply", || depth(&env, "FAILQ") == 1);
    let reply = app.take("FAILQ");
    assert_eq!(reply.body, b"rejected 0\n");
    assert_eq!((reply.urcode, reply.corrid.as_slice()), (42, b"c-svc".as_slice()));
    // Deleted, not retried, not on the error queue (the last check, with a later request,
    // shows that no further call came).
    assert_eq!(lines(&env, "calls.txt"), ["SVC"]);
    assert_eq!((depth(&env, "SVC"), depth(&env, "ERRQ"), depth(&env, "R")), (0, 0, 0));

    // Empty replies on the first two attempts (rolled back), a reply on the last one: the
    // reply goes to the failure queue and the request to the error queue.
    app.put_with("LATE", b"req-late", ctl("c-late"));
    eventually("the late failure reply", || depth(&env, "FAILQ") == 1);
    eventually("the late request on the error queue", || depth(&env, "ERRQ") == 1);
    let reply = app.take("FAILQ");
    assert_eq!((reply.body.as_slice(), reply.urcode), (b"rejected late\n".as_slice(), 3));
    let failed = app.take("ERRQ");
    assert_eq!(
        (failed.body.as_slice(), failed.origin_queue.as_deref()),
        (b"req-late".as_slice(), Some("LATE"))
    );
    assert_eq!(lines(&env, "calls.txt"), ["SVC", "LATE", "LATE", "LATE"]);

    // An empty failure reply: ordinary retries, nothing on the failure queue.
    app.put_with("EMPTY", b"req-empty", ctl("c-empty"));
    eventually("the empty-reply request on the error queue", || depth(&env, "ERRQ") == 1);
    assert_eq!(app.take("ERRQ").origin_queue.as_deref(), Some("EMPTY"));
    assert_eq!(depth(&env, "FAILQ"), 0);
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (0, 6), "{s:#?}");
    // A last request, forwarded after all of them: no call came but those counted above.
    app.put_with("SVC", b"req-last", ctl("c-last"));
    eventually("the last failure reply", || depth(&env, "FAILQ") == 1);
    assert_eq!(lines(&env, "calls.txt"), ["SVC", "LATE", "LATE", "LATE", "EMPTY", "EMPTY", "SVC"]);
}

/// The reserve-forwarder scenario: `-e` forwarder 1002 exits when its queue is empty; the
/// queue's threshold command `qmadmin -c "boot -i 1002"` boots it at each crossing, and only
/// then.
#[test]
fn exit_when_empty_forwarder_is_booted_again_by_the_threshold() {
    let env = Env::new();
    let text = "[[forwarder]]\nid = 1002\nqspace = \"QS\"\nclopt = \"-- -i 0 -q ORDERS -e\"\n\n[service.ORDERS]\ncommand = \"tr a-z A-Z\"\n";
    write_config(&env, text);
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &["ORDERS fifo none 0 0 3m 0m 'qmadmin -c \"boot -i 1002\"'", &fifo("R", 0)]);
    assert_eq!(server(&env, 1002).state, "not booted");
    let mut app = App::connect(&env);
    let mut booted = 0;
    for round in 1..=3 {
        app.put_with("ORDERS", format!("order-{round}-a").as_bytes(), reply_to("R", ""));
        app.put_with("ORDERS", format!("order-{round}-b").as_bytes(), reply_to("R", ""));
        // Below the high mark: no crossing, so nothing boots it.
        assert_eq!(crossings(&daemon, "ORDERS", "persistent"), round - 1);
        let before = server(&env, 1002);
        assert_ne!(before.state, "running", "{before:#?}");
        assert_eq!(depth(&env, "ORDERS"), 2);
        app.put_with("ORDERS", format!("order-{round}-c").as_bytes(), reply_to("R", ""));
        assert_eq!(crossings(&daemon, "ORDERS", "persistent"), round);
        // The replies come from this round's boot (the last round's were taken), so the
        // state seen after them is this run's.
        eventually("the three replies", || depth(&env, "R") == 3);
        let done = wait_state(&env, 1002, "exited (queues empty)");
        assert_eq!((done.forwarded, done.failures), (3, 0), "{done:#?}");
        let at = done.booted.expect("boot time");
        assert!(at >= booted);
        booted = at;
        let log = wait_firings(&env, "ORDERS", round);
        assert!(log.iter().all(|r| r.exit == Some(0)), "{log:#?}");
        let replies: Vec<String> =
            app.drain("R").into_iter().map(|m| String::from_utf8(m.body).unwrap()).collect();
        assert_eq!(replies, ["a", "b", "c"].map(|x| format!("ORDER-{round}-{}", x.to_uppercase())));
    }
    // A forwarder that exited can also be booted by hand, and exits at once.
    env.c("boot -i 1002").ok();
    wait_state(&env, 1002, "exited (queues empty)");
}

/// A service that outlives the forwarder's `-t` is killed; the transaction rolls back, the
/// message is retried (its retry count grows) and answered exactly once.
#[test]
fn service_time_out_rolls_back_and_the_message_is_retried() {
    let env = Env::new();
    let marker = sleep_marker(5, 21);
    let service = format!(
        r#"body=$(cat); [ "$body" = slow ] && [ "$QM_RETRIES" = 0 ] && {marker}; printf '%s after %s' "$body" "$QM_RETRIES""#
    );
    write_config(&env, &config("SVC", "-t 1", &[("SVC", &service)]));
    setup(&env, 200, &[&fifo("SVC", 3), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"slow", reply_to("R", "c"));
    eventually("the service runs", || running(&marker));
    eventually("the reply", || depth(&env, "R") == 1);
    let reply = app.take("R");
    assert_eq!(reply.body, b"slow after 1");
    eventually("the hanging service is gone", || !running(&marker));
    let s = server(&env, 1);
    assert_eq!(s.forwarded, 1);
    // One failure, with the service's reason (not the rolled-back transaction's).
    assert_eq!(s.failures, 1, "{s:#?}");
    // The configured limit, not what was left of it when the service started.
    assert_eq!(
        s.last_error.as_deref(),
        Some("service SVC: killed after the 1 s time limit (the forwarder's -t)"),
        "{s:#?}"
    );
    // A request forwarded after it: its reply is the only one that came since.
    app.put_with("SVC", b"next", reply_to("R", "c2"));
    eventually("the next reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"next after 0");
    assert_eq!((depth(&env, "SVC"), depth(&env, "R"), depth(&env, "ERRQ")), (0, 0, 0));
}

/// `boot` refuses an unknown id, a forwarder whose queue or queue space does not exist, and
/// one already running; `shutdown` refuses forwarders that do not run.
#[test]
fn boot_and_shutdown_refusals_are_clear() {
    let env = Env::new();
    let text = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"SVC\"]\n\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nqueues = [\"SVC\", \"GONE\"]\n\n[[forwarder]]\nid = 3\nqspace = \"NOQS\"\nqueues = [\"SVC\"]\n\n[service.SVC]\ncommand = \"cat\"\n\n[service.GONE]\ncommand = \"cat\"\n";
    write_config(&env, text);
    setup(&env, 200, &[&fifo("SVC", 0)]);
    env.c("boot -i 9").failed().stderr_has("Forwarder 9 is not defined in the configuration");
    env.c("boot -i 2")
        .failed()
        .stderr_has("Forwarder 2 cannot boot")
        .stderr_has("queue GONE does not exist in queue space QS");
    env.c("boot -i 3").failed().stderr_has("Forwarder 3 cannot boot").stderr_has("NOQS");
    env.c("boot").failed().stderr_has("-i");
    env.c("boot -i 1").ok();
    env.c("boot -i 1").failed().stderr_has("Forwarder 1 is already running");
    env.c("shutdown -i 2").failed().stderr_has("forwarder 2 is not running");
    env.c("shutdown -q OTHER").failed().stderr_has("Shutdown: no forwarder serves queue OTHER");
    env.c("shutdown -q GONE").failed().stderr_has("no forwarder of queue GONE is running");
    env.c("shutdown -i 99")
        .failed()
        .stderr_has("Shutdown: forwarder 99 is not defined in the configuration");
    env.c("shutdown -i 1 -q SVC").failed().stderr_has("-i ID | -q QUEUE");
    assert_eq!(server(&env, 1).state, "idle", "the refused shutdown stopped nothing");
    env.c("shutdown").failed();
    // Failed boots show in psr with their reason.
    let list: BTreeMap<u32, _> = psr(&env).into_iter().map(|f| (f.id, f)).collect();
    assert_eq!(list[&2].state, "boot failed");
    assert!(list[&2].last_error.as_deref().unwrap_or("").contains("queue GONE does not exist"));
    assert_eq!(list[&3].state, "boot failed");
    assert!(list[&3].last_error.as_deref().unwrap_or("").contains("NOQS"));
    // Failed boots leave nothing attached.
    env.c("ipcs QS").ok().stdout_lacks("TMQFORWARD 2");
}

/// `shutdown -i ID` and `shutdown -q QUEUE` stop forwarders (printserver: stopped); messages
/// then stay on their queue until the forwarder is booted again.
#[test]
fn shutdown_by_id_and_by_queue_stops_forwarders() {
    let env = Env::new();
    let text = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"A\"]\nidle = 0\n\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nqueues = [\"B\"]\nidle = -50\n\n[service.A]\ncommand = \"cat\"\n\n[service.B]\ncommand = \"cat\"\n";
    write_config(&env, text);
    setup(&env, 200, &[&fifo("A", 0), &fifo("B", 0), &fifo("R", 0)]);
    env.c("boot -i 1; boot -i 2").ok();
    env.c("ipcs QS").ok().stdout_has("TMQFORWARD 1").stdout_has("TMQFORWARD 2");
    env.c("shutdown -i 1").ok().stdout_has("1 forwarder shut down");
    assert_eq!(server(&env, 1).state, "stopped");
    env.c("shutdown -q B").ok();
    assert_eq!(server(&env, 2).state, "stopped");
    env.c("psr").ok().stdout_has("stopped");
    eventually("forwarders detached", || !env.c("ipcs QS").stdout.contains("TMQFORWARD"));
    let mut app = App::connect(&env);
    app.put_with("A", b"a", reply_to("R", ""));
    app.put_with("B", b"b", reply_to("R", ""));
    assert_eq!((depth(&env, "A"), depth(&env, "B"), depth(&env, "R")), (1, 1, 0));
    env.c("boot -i 1; boot -i 2").ok();
    eventually("both forwarded", || depth(&env, "R") == 2);
    // The new runs forwarded them (their counts start at boot): nothing had served the
    // queues while the forwarders were stopped.
    assert_eq!((server(&env, 1).forwarded, server(&env, 2).forwarded), (1, 1));
    // Booting and stopping over and over, with printserver looking on, never hangs.
    for _ in 0..25 {
        env.c("shutdown -i 1; psr; boot -i 1; psr; shutdown -q B; boot -i 2").ok();
    }
    env.c("shutdown -i 1; shutdown -i 2").ok();
    assert!(psr(&env).iter().all(|f| f.state == "stopped"), "{:#?}", psr(&env));
}

/// Unique bodies through a service that fails (exit 1) or hangs past `-t` on a message's
/// first attempt: in the end every message has exactly one reply and the source and error
/// queues are empty.
#[test]
fn failing_and_hanging_service_loses_and_duplicates_nothing() {
    let env = Env::new();
    let marker = sleep_marker(5, 22);
    let service = format!(
        r#"body=$(cat); first=$([ "$QM_RETRIES" = 0 ] && echo y)
case "$body" in
  *3) [ "$first" ] && {marker} ;;
  *[13579]) [ "$first" ] && exit 1 ;;
esac
printf 'reply-%s' "$body""#
    );
    write_config(&env, &config("SVC", "-t 1", &[("SVC", &service)]));
    setup(&env, 200, &[&fifo("SVC", 3), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let n = 30;
    for i in 0..n {
        app.put_with("SVC", format!("msg-{i:02}").as_bytes(), reply_to("R", &format!("c{i}")));
    }
    let all_done =
        wait_until(Duration::from_secs(30), || depth(&env, "R") >= n && depth(&env, "SVC") == 0);
    assert!(all_done, "{:#?}", server(&env, 1));
    // One more request, forwarded after all the others: once its reply is there, every
    // reply the others could give is there too.
    app.put_with("SVC", b"msg-last", reply_to("R", "last"));
    eventually("the last reply", || depth(&env, "R") > n);
    let mut replies = app.drain("R");
    let last = replies.iter().position(|m| m.corrid == b"last").expect("the last reply");
    assert_eq!(replies.remove(last).body, b"reply-msg-last");
    let mut bodies: Vec<String> =
        replies.iter().map(|m| String::from_utf8(m.body.clone()).unwrap()).collect();
    bodies.sort();
    let expected: Vec<String> = (0..n).map(|i| format!("reply-msg-{i:02}")).collect();
    assert_eq!(bodies, expected);
    for m in &replies {
        let i: u64 = String::from_utf8_lossy(&m.body)[10..].parse().unwrap();
        assert_eq!(m.corrid, format!("c{i}").into_bytes());
    }
    assert_eq!((depth(&env, "SVC"), depth(&env, "ERRQ")), (0, 0));
    let s = server(&env, 1);
    assert_eq!(s.forwarded, n + 1);
    // 12 bodies end in 1, 5, 7 or 9; 3 end in 3.
    assert_eq!(s.failures, 15, "{s:#?}");
    eventually("no service still hangs", || !running(&marker));
}

/// A daemon killed (SIGKILL) while its forwarder works: after the restart (which boots the
/// forwarder again, `boot = true`) every request has exactly one reply.
#[test]
fn daemon_crash_during_forwarding_loses_and_duplicates_nothing() {
    let env = Env::new();
    let text = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\nboot = true\n\n[service.SVC]\ncommand = \"sleep 0.05; cat; echo >> calls.txt\"\n";
    let cfg = env.path("forward.toml");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.display().to_string();
    let mut daemon = env.start_daemon(&["--config", &cfg]);
    setup(&env, 200, &[&fifo("SVC", 5), &fifo("R", 0)]);
    let mut app = App::connect(&env);
    let n = 40;
    for i in 0..n {
        app.put_with("SVC", format!("m{i:02}").as_bytes(), reply_to("R", ""));
    }
    drop(app);
    // The forwarder was configured before the queue space existed: boot it now.
    env.c("boot -i 1").ok();
    eventually("some replies", || lines(&env, "calls.txt").len() >= 8);
    daemon.signal("KILL");
    let _daemon = env.start_daemon(&["--config", &cfg]);
    eventually("booted with the daemon", || server(&env, 1).state != "not booted");
    let done = wait_until(Duration::from_secs(30), || depth(&env, "SVC") == 0);
    assert!(done, "{:#?}", server(&env, 1));
    let mut app = App::connect(&env);
    let mut bodies: Vec<String> =
        app.drain("R").into_iter().map(|m| String::from_utf8(m.body).unwrap()).collect();
    bodies.sort();
    let expected: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    assert_eq!(bodies, expected);
    assert_eq!(depth(&env, "ERRQ"), 0);
}

/// A service still running when qmd is killed (`kill -9`) outlives it, but the next qmd of
/// the device kills it at start, before its forwarder (booted with the daemon) forwards the
/// rolled-back message again; the message is then forwarded exactly once.
#[test]
fn next_daemon_kills_services_left_by_a_killed_one() {
    let env = Env::new();
    let marker = sleep_marker(1000, 23);
    let _cleanup = KillMarked(marker.clone());
    // The first call hangs; a later one notes whether the hanging one still runs (a script
    // file, so that only the sleep itself carries the marker on its command line).
    std::fs::write(
        env.path("svc.sh"),
        format!(
            "if [ -e first ]; then\n  pgrep -f '{marker}' >/dev/null && echo orphan-alive >> calls.txt\n  cat; echo \"call $QM_RETRIES\" >> calls.txt\nelse\n  touch first; {marker}\nfi\n"
        ),
    )
    .unwrap();
    let text = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0 -t 2000\"\nboot = true\n\n[service.SVC]\ncommand = \"sh svc.sh\"\n";
    let cfg = env.path("forward.toml");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.display().to_string();
    let mut daemon = env.start_daemon(&["--config", &cfg]);
    setup(&env, 200, &[&fifo("SVC", 5), &fifo("R", 0)]);
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to("R", "x"));
    drop(app);
    // The queue space did not exist when this daemon booted its forwarders.
    env.c("boot -i 1").ok();
    eventually("the service is running", || running(&marker));
    daemon.signal("KILL");
    assert!(running(&marker), "kill -9 leaves the service running");
    let _daemon = env.start_daemon(&["--config", &cfg]);
    eventually("the reply", || depth(&env, "R") == 1);
    assert!(!running(&marker), "the orphan is gone");
    // A later request, forwarded after it: nothing else came for the first one.
    let mut app = App::connect(&env);
    app.put_with("SVC", b"y", reply_to("R", "y"));
    eventually("the later reply", || depth(&env, "R") == 2);
    let replies: Vec<Vec<u8>> = app.drain("R").into_iter().map(|m| m.body).collect();
    assert_eq!(replies, [b"x".to_vec(), b"y".to_vec()]);
    // Called once more for x, with the orphan already gone when it was.
    assert_eq!(lines(&env, "calls.txt"), ["call 0", "call 0"]);
    assert_eq!((depth(&env, "SVC"), server(&env, 1).forwarded), (0, 2));
}

/// A service that leaves a background child holding its standard output: the reply it
/// printed is delivered all the same, without waiting for the child (which would hold the
/// output for 1000 s), and the child does not outlive the call.
#[test]
fn a_service_leaving_a_background_child_still_replies() {
    let env = Env::new();
    let marker = sleep_marker(1000, 24);
    let _cleanup = KillMarked(marker.clone());
    let service = format!("b=$(cat); {marker} & printf 'bgreply %s' \"$b\"; exit 0");
    write_config(&env, &config("SVC", "", &[("SVC", &service)]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"one", reply_to("R", "c1"));
    eventually("the reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"bgreply one");
    eventually("the background child is gone", || !running(&marker));
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (1, 0), "{s:#?}");
}

/// `-e` does not exit while a message waits out its retry delay: it forwards it when it is
/// ready again, and only then exits.
#[test]
fn exit_when_empty_waits_for_a_message_in_its_retry_delay() {
    let env = Env::new();
    let service =
        r#"cat >/dev/null; echo call >> calls.txt; [ "$QM_RETRIES" = 0 ] && exit 1; printf done"#;
    write_config(&env, &config("SVC", "-e", &[("SVC", service)]));
    setup(&env, 200, &["SVC fifo none 2 1 100% 0% ''", &fifo("R", 0)]);
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to("R", "c"));
    env.c("boot -i 1").ok();
    let done = wait_state(&env, 1, "exited (queues empty)");
    assert_eq!((done.forwarded, done.failures), (1, 1), "{done:#?}");
    assert_eq!(lines(&env, "calls.txt").len(), 2);
    assert_eq!((depth(&env, "SVC"), depth(&env, "R")), (0, 1));
    assert_eq!(app.take("R").body, b"done");
}

/// A user return code the service wrote that is not one (not a number, out of range):
/// the reply carries 0, and psr's last error says what was wrong and the valid range.
#[test]
fn an_unusable_urcode_is_reported() {
    let env = Env::new();
    let service = r#"b=$(cat); printf '%s' "$b" > "$QM_URCODE_FILE"; printf ok"#;
    write_config(&env, &config("SVC", "", &[("SVC", service)]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    for (i, code) in ["notanumber", "99999999999999999999"].iter().enumerate() {
        app.put_with("SVC", code.as_bytes(), reply_to("R", "c"));
        eventually("the reply", || depth(&env, "R") == 1);
        let reply = app.take("R");
        assert_eq!((reply.body.as_slice(), reply.urcode), (b"ok".as_slice(), 0));
        let s = server(&env, 1);
        let why = s.last_error.clone().unwrap_or_default();
        assert!(why.contains(code) && why.contains("QM_URCODE_FILE"), "{s:#?}");
        assert!(why.contains("-9223372036854775808 to 9223372036854775807"), "{s:#?}");
        assert_eq!(s.forwarded, i as u64 + 1);
    }
}

/// A reply over the 4 MiB body limit fails the call with that reason (not "queue space
/// full"), and the request is retried then goes to the error queue.
#[test]
fn a_reply_over_the_body_limit_is_a_failure_saying_so() {
    let env = Env::new();
    let service = "cat >/dev/null; head -c 4194305 /dev/zero";
    write_config(&env, &config("SVC", "-d", &[("SVC", service)]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0), &fifo("FAILQ", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let ctl = EnqueueCtl { failure_queue: Some("FAILQ".into()), ..reply_to("R", "c") };
    app.put_with("SVC", b"big", ctl);
    eventually("the request on the error queue", || depth(&env, "ERRQ") == 1);
    let s = server(&env, 1);
    let why = s.last_error.clone().unwrap_or_default();
    assert!(why.contains("exceeds the message body limit"), "{s:#?}");
    assert_eq!((depth(&env, "R"), depth(&env, "FAILQ")), (0, 0));
}

/// An idle forwarder wakes as soon as a message arrives: with `-i 3600` it would look at its
/// empty queue again only after an hour, yet each message enqueued while it is idle is
/// forwarded (within the test's patience of seconds).
#[test]
fn an_arrival_wakes_an_idle_forwarder() {
    let env = Env::new();
    let text = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 3600\"\n\n[service.SVC]\ncommand = \"tr a-z A-Z\"\n";
    write_config(&env, text);
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    for (n, body) in ["first", "second"].iter().enumerate() {
        // Idle: it has looked at the empty queue and waits.
        wait_state(&env, 1, "idle");
        app.put_with("SVC", body.as_bytes(), reply_to("R", body));
        eventually("the reply", || depth(&env, "R") == 1);
        assert_eq!(app.take("R").body, body.to_uppercase().as_bytes());
        assert_eq!(server(&env, 1).forwarded, n as u64 + 1);
    }
}

/// A service's environment names the message: its msgid, correlation id (escaped as
/// qmadmin shows it), priority, retries, user return code, reply and failure queues, and
/// where it came from (`QM_QSPACE`, `QM_QUEUE`, `QM_SERVICE`, `QMCONFIG`, `QM_SOCKET`).
#[test]
fn a_service_sees_the_message_in_its_environment() {
    let env = Env::new();
    let service = r#"cat >/dev/null; env | grep '^QM' | sort > "env-$QM_MSGID.txt""#;
    write_config(&env, &config("SVC", "", &[("SVC", service)]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0), &fifo("FAILQ", 0)]);
    let mut app = App::connect(&env);
    let full = EnqueueCtl {
        priority: Some(70),
        urcode: 42,
        failure_queue: Some("FAILQ".into()),
        ..reply_to("R", "order 7\u{1}")
    };
    let with_all = app.put_with("SVC", b"a", full);
    let bare = app.put("SVC", b"b");
    env.c("boot -i 1").ok();
    eventually("both forwarded", || server(&env, 1).forwarded == 2);
    let vars = |id: &qm_common::message::MsgId| -> BTreeMap<String, String> {
        lines(&env, &format!("env-{id}.txt"))
            .iter()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    };
    let all = vars(&with_all);
    let expected = [
        ("QMCONFIG", env.dev()),
        ("QM_CORRID", "order\\207\\01".to_string()),
        ("QM_FAILURE_QUEUE", "FAILQ".into()),
        ("QM_MSGID", with_all.to_string()),
        ("QM_PRIORITY", "70".into()),
        ("QM_QSPACE", "QS".into()),
        ("QM_QUEUE", "SVC".into()),
        ("QM_REPLY_QUEUE", "R".into()),
        ("QM_RETRIES", "0".into()),
        ("QM_SERVICE", "SVC".into()),
        ("QM_SOCKET", env.socket().display().to_string()),
        ("QM_URCODE", "42".into()),
    ];
    for (k, v) in &expected {
        assert_eq!(all.get(*k), Some(v), "{k}: {all:#?}");
    }
    assert!(all.contains_key("QM_URCODE_FILE"), "{all:#?}");
    // Without a corrid, priority, reply or failure queue: empty values and the defaults.
    let none = vars(&bare);
    let get = |k: &str| none.get(k).cloned().unwrap_or_else(|| panic!("{k} unset: {none:#?}"));
    assert_eq!(get("QM_MSGID"), bare.to_string());
    assert_eq!(
        [get("QM_CORRID"), get("QM_REPLY_QUEUE"), get("QM_FAILURE_QUEUE")],
        ["", "", ""].map(String::from)
    );
    assert_eq!((get("QM_PRIORITY"), get("QM_URCODE")), ("50".to_string(), "0".to_string()));
}

/// A reply queue named by an alias: the forwarder puts the reply on the queue the alias
/// names.
#[test]
fn a_reply_queue_may_be_an_alias() {
    let env = Env::new();
    write_config(&env, &config("SVC", "", &[("SVC", "tr a-z A-Z")]));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("qopen QS; qalias R replies/svc").ok();
    env.c("boot -i 1").ok().stdout_has("Forwarder 1 booted");
    let mut app = App::connect(&env);
    app.put_with("SVC", b"hello", reply_to("replies/svc", "by-alias"));
    eventually("the reply", || depth(&env, "R") == 1);
    let reply = app.take("R");
    assert_eq!((reply.body.as_slice(), reply.corrid.as_slice()), (&b"HELLO"[..], &b"by-alias"[..]));
}
