//! Services that stay up (`mode = "worker"`): real worker processes speaking the worker
//! protocol to a real qmd. Replies and the request's fields, one process for many messages,
//! a worker killed or overrunning its deadline (rolled back, retried, replaced), recycling
//! after `max_requests`, protocol violations, bad configuration, untrusted programs, and no
//! worker left once its forwarder or the daemon stops.

use crate::auto::{
    App, KillMarked, depth, eventually, lines, running, server, setup, sleep_marker, write_config,
};
use crate::support::{Daemon, Env, QMD, run_limited, wait_until};
use qm_common::message::{EnqueueCtl, Message};
use std::time::Duration;

/// A worker in sh speaking the protocol of docs/worker-protocol.md. For each request it runs
/// `handler` with `$body`, `$retries`, `$priority`, `$corrid` and `$deadline` set; the
/// handler writes the reply body to standard output and may set `status` (0 success, 1
/// failure) and `urcode` (0 to 255 here); file descriptor 3 is the worker's own standard
/// output, the pipe to qmd. `at_eof` runs when qmd closes its input.
fn worker_script(handler: &str, at_eof: &str) -> String {
    format!(
        r#"set -u
exec 3>&1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
num() {{ n=0; for b in $(od -An -tu1 -j "$1" -N "$2" "$work/header"); do n=$(( n * 256 + b )); done; echo $n; }}
u32() {{ printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(( ($1 >> 24) & 255 )) $(( ($1 >> 16) & 255 )) $(( ($1 >> 8) & 255 )) $(( $1 & 255 )))"; }}
printf QMW1
while set -- $(head -c 4 | od -An -tu1) && [ $# -eq 4 ]; do
    length=$(( ($1 << 24) | ($2 << 16) | ($3 << 8) | $4 ))
    head -c 80 > "$work/header"
    head -c $(( length - 80 )) > "$work/body"
    body=$(cat "$work/body")
    retries=$(num 68 4); priority=$(num 67 1); deadline=$(num 72 8)
    corrid=$(dd if="$work/header" bs=1 skip=35 count=$(num 34 1) 2>/dev/null)
    status=0; urcode=0
    {{ {handler}
    }} > "$work/reply"
    u32 $(( $(wc -c < "$work/reply") + 9 ))
    printf "$(printf '\\%03o' "$status")\000\000\000\000\000\000\000$(printf '\\%03o' "$urcode")"
    cat "$work/reply"
done
{at_eof}
"#
    )
}

/// A configuration with forwarder 1 on SVC (`-i 0`, `clopt` extra options) and service SVC
/// running `worker.sh` as a worker with `settings` (TOML lines).
fn config(clopt: &str, settings: &str) -> String {
    format!(
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0 {clopt}\"\n\n[service.SVC]\ncommand = \"sh ./worker.sh\"\nmode = \"worker\"\n{settings}\n"
    )
}

fn write_worker(env: &Env, handler: &str, at_eof: &str) {
    std::fs::write(env.path("worker.sh"), worker_script(handler, at_eof)).unwrap();
}

fn fifo(name: &str, retries: u32) -> String {
    format!("{name} fifo none {retries} 0 100% 0% ''")
}

fn reply_to(corrid: &str) -> EnqueueCtl {
    EnqueueCtl {
        reply_queue: Some("R".into()),
        corrid: corrid.as_bytes().to_vec(),
        ..EnqueueCtl::default()
    }
}

/// Replies of the echo-pid handler below: `pid retries body`.
fn fields(reply: &Message) -> (u32, u32, String) {
    let text = String::from_utf8(reply.body.clone()).unwrap();
    let mut parts = text.splitn(3, ' ');
    let pid = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("reply {text:?}"));
    let retries = parts.next().unwrap().parse().unwrap();
    (pid, retries, parts.next().unwrap_or("").to_string())
}

/// Replies `PID RETRIES BODY`, so tests see which process served which try.
const ECHO_PID: &str = r#"printf '%s %s %s' $$ "$retries" "$body""#;

fn alive(pid: u32) -> bool {
    // A zombie has ended: only its exit status is left for its parent.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

/// One worker process serves many messages; each reply has the request's corrid and
/// priority and the worker's user return code; the worker saw the msgid-free fields of the
/// request (corrid, priority, retries, a deadline in the future of the enqueue); a failure
/// reply rolls the message back, so retries and the error queue apply.
#[test]
fn one_worker_serves_many_messages() {
    let env = Env::new();
    let handler = r#"case "$body" in
      fail*) status=1; printf 'no' ;;
      *) urcode=7; printf '%s %s %s|%s|%s|%s' $$ "$retries" "$body" "$corrid" "$priority" "$deadline" ;;
    esac"#;
    write_worker(&env, handler, "");
    write_config(&env, &config("-t 1000", "min = 1\nmax = 1\ntimeout = 600"));
    setup(&env, 200, &[&fifo("SVC", 1), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let before_ms = qm_common::time::now_secs() * 1000;
    for i in 0..5 {
        let ctl = EnqueueCtl { priority: Some(60 + i), ..reply_to(&format!("c{i}")) };
        app.put_with("SVC", format!("m{i}").as_bytes(), ctl);
    }
    app.put_with("SVC", b"fail", reply_to("f"));
    eventually("five replies and the failure on the error queue", || {
        depth(&env, "R") == 5 && depth(&env, "ERRQ") == 1
    });
    let mut pids = Vec::new();
    for i in 0..5u8 {
        let reply = app.take("R");
        let (pid, retries, rest) = fields(&reply);
        let parts: Vec<&str> = rest.split('|').collect();
        assert_eq!(parts[..3], [format!("m{i}"), format!("c{i}"), format!("{}", 60 + i)]);
        // The service's 600 s timeout, counted from the call.
        let deadline: u64 = parts[3].parse().unwrap();
        assert!(deadline >= before_ms + 600_000, "{deadline} vs {before_ms}");
        assert_eq!((retries, reply.urcode, reply.priority), (0, 7, 60 + i));
        assert_eq!(reply.corrid, format!("c{i}").into_bytes());
        pids.push(pid);
    }
    assert!(pids.iter().all(|p| *p == pids[0]), "one process served them all: {pids:?}");
    assert!(alive(pids[0]));
    let failed = app.take("ERRQ");
    assert_eq!((failed.body.as_slice(), failed.retries), (b"fail".as_slice(), 2));
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (5, 2), "{s:#?}");
    assert_eq!(
        s.last_error.as_deref(),
        Some("service SVC replied failure (user return code 0)"),
        "{s:#?}"
    );
}

/// A worker killed (SIGKILL from outside) while it serves a request: the message is rolled
/// back and served again, on its retry, by a new worker; the child the dead worker left
/// (which holds its output open) is killed with it, long before the 600 s deadline.
#[test]
fn a_worker_killed_mid_request_is_replaced_and_the_message_retried() {
    let env = Env::new();
    let marker = sleep_marker(1000, 11);
    let _cleanup = KillMarked(marker.clone());
    let handler = format!(
        r#"[ "$body" = hang ] && [ "$retries" = 0 ] && {{ echo $$ > hanging.pid; {marker} >&3; }}
    {ECHO_PID}"#
    );
    write_worker(&env, &handler, "");
    write_config(&env, &config("-t 600", "min = 1\nmax = 1"));
    setup(&env, 200, &[&fifo("SVC", 3), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"first", reply_to("a"));
    eventually("the first reply", || depth(&env, "R") == 1);
    let (first_pid, _, _) = fields(&app.take("R"));
    app.put_with("SVC", b"hang", reply_to("b"));
    eventually("the worker hangs", || running(&marker));
    let hanging: u32 =
        std::fs::read_to_string(env.path("hanging.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(hanging, first_pid);
    let killed = std::process::Command::new("kill").args(["-KILL", &hanging.to_string()]).status();
    assert!(killed.unwrap().success());
    eventually("the retried reply", || depth(&env, "R") == 1);
    let (pid, retries, body) = fields(&app.take("R"));
    assert_eq!((retries, body.as_str()), (1, "hang"));
    assert_ne!(pid, first_pid, "a new worker served the retry");
    eventually("the left child is gone", || !running(&marker));
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (2, 1), "{s:#?}");
    // The worker is `sh -c` running the script: it ends with the killed script's status.
    let why = s.last_error.unwrap_or_default();
    assert!(why.contains("exited with status 137 during the request; another is started"), "{why}");
    assert_eq!((depth(&env, "SVC"), depth(&env, "ERRQ")), (0, 0));
}

/// A request that overruns the service's `timeout`: the worker's process group is killed,
/// the message rolled back and retried by a new worker; psr names the limit.
#[test]
fn a_deadline_overrun_kills_the_worker_and_rolls_back() {
    let env = Env::new();
    let marker = sleep_marker(1000, 12);
    let _cleanup = KillMarked(marker.clone());
    let handler = format!(
        r#"[ "$body" = slow ] && [ "$retries" = 0 ] && {marker}
    {ECHO_PID}"#
    );
    write_worker(&env, &handler, "");
    write_config(&env, &config("-t 600", "min = 1\nmax = 1\ntimeout = 1"));
    setup(&env, 200, &[&fifo("SVC", 3), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let started = std::time::Instant::now();
    app.put_with("SVC", b"slow", reply_to("s"));
    eventually("the retried reply", || depth(&env, "R") == 1);
    // Not before the 1 s limit.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let (_, retries, body) = fields(&app.take("R"));
    assert_eq!((retries, body.as_str()), (1, "slow"));
    eventually("the slow worker's group is gone", || !running(&marker));
    let s = server(&env, 1);
    assert_eq!((s.forwarded, s.failures), (1, 1), "{s:#?}");
    let why = s.last_error.unwrap_or_default();
    assert!(why.contains("killed after the time limit of 1 s (the service's timeout)"), "{why}");
}

/// `max_requests = 2`: every worker serves two requests and is replaced; the replaced ones
/// end.
#[test]
fn workers_are_recycled_after_max_requests() {
    let env = Env::new();
    write_worker(&env, ECHO_PID, "");
    write_config(&env, &config("", "min = 1\nmax = 1\nmax_requests = 2"));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let mut pids = Vec::new();
    for i in 0..5 {
        app.put_with("SVC", format!("m{i}").as_bytes(), reply_to("c"));
        eventually("the reply", || depth(&env, "R") == 1);
        pids.push(fields(&app.take("R")).0);
    }
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert!(pids[1] != pids[2] && pids[3] != pids[4] && pids[0] != pids[4], "{pids:?}");
    eventually("the recycled workers ended", || !alive(pids[0]) && !alive(pids[2]));
}

/// Replies that break the protocol (a bad status byte, a length over the limit) and a
/// command that is no worker (no greeting): the worker is killed, the message rolled back;
/// psr says what was wrong. A command that never greets costs no message a retry.
#[test]
fn protocol_violations_are_refused_and_the_worker_replaced() {
    let env = Env::new();
    // `bad-status` and `huge` misbehave on their first try only.
    let handler = r#"if [ "$retries" = 0 ] && [ "$body" = bad-status ]; then status=7; fi
    if [ "$retries" = 0 ] && [ "$body" = huge ]; then printf '\377\377\377\377' >&3; fi
    printf '%s %s %s' $$ "$retries" "$body""#;
    // The oversized length goes straight to the daemon, ahead of the reply.
    write_worker(&env, handler, "");
    write_config(&env, &config("", "min = 1\nmax = 1\ntimeout = 600"));
    setup(&env, 200, &[&fifo("SVC", 3), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    for (body, why) in [
        (
            "bad-status",
            "broke the worker protocol: reply status 7 is neither 0 (success) nor 1 (failure)",
        ),
        ("huge", "broke the worker protocol: a frame of 4294967295 bytes exceeds the limit"),
    ] {
        app.put_with("SVC", body.as_bytes(), reply_to(body));
        eventually("the retried reply", || depth(&env, "R") == 1);
        let (_, retries, got) = fields(&app.take("R"));
        assert_eq!((retries, got.as_str()), (1, body));
        let s = server(&env, 1);
        assert!(s.last_error.as_deref().unwrap_or("").contains(why), "{s:#?}");
    }
    // `cat` writes nothing until it reads: no greeting within the timeout. Reloaded, the
    // changed service starts its new worker; the message waits, untouched.
    let cfg = config("", "min = 1\nmax = 1\ntimeout = 1").replace("sh ./worker.sh", "cat");
    write_config(&env, &cfg);
    env.c("daemon reload").ok();
    app.put_with("SVC", b"waiting", reply_to("w"));
    eventually("the greeting failure in psr", || {
        server(&env, 1).last_error.is_some_and(|e| e.contains("wrote no greeting within 1 s"))
    });
    assert_eq!((depth(&env, "SVC"), depth(&env, "ERRQ")), (1, 0));
}

/// Out-of-range worker settings are refused by `daemon reload` (and at start) with the
/// field and the allowed range; nothing changes.
#[test]
fn bad_worker_settings_are_refused_naming_the_field() {
    let env = Env::new();
    write_worker(&env, ECHO_PID, "");
    write_config(&env, &config("", "min = 1\nmax = 2"));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    let exec = "[service.SVC]\ncommand = \"cat\"\n";
    let broken = [
        (config("", "max = 0"), vec!["service SVC: max: '0' is invalid", "1 to 64"]),
        (config("", "max = 65"), vec!["service SVC: max: '65' is invalid", "1 to 64"]),
        (config("", "min = 65"), vec!["service SVC: min: '65' is invalid", "0 to 64"]),
        (
            config("", "min = 5\nmax = 2"),
            vec!["service SVC: max: '2' is invalid", "at least min (5)"],
        ),
        (
            config("", "max_requests = 0"),
            vec!["service SVC: max_requests: '0' is invalid", "1 or more"],
        ),
        (
            config("", "timeout = 0"),
            vec!["service SVC: timeout: '0' is invalid", "1 to 86400 seconds"],
        ),
        (
            config("", "timeout = 86401"),
            vec!["service SVC: timeout: '86401'", "1 to 86400 seconds"],
        ),
        (config("", "min = -1"), vec!["min", "invalid value"]),
        (
            config("", "").replace("mode = \"worker\"", "mode = \"daemon\""),
            vec!["unknown variant `daemon`", "exec", "worker"],
        ),
        (format!("{exec}max = 3\n"), vec!["service SVC: max: applies to mode = \"worker\" only"]),
    ];
    for (text, whys) in &broken {
        write_config(&env, text);
        let run = env.c("daemon reload");
        let run = run.failed().stderr_has("QUE.toml");
        for why in whys {
            run.stderr_has(why);
        }
    }
    // The good configuration is still in effect.
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to("x"));
    eventually("the reply", || depth(&env, "R") == 1);
    assert_eq!(fields(&app.take("R")).2, "x");
}

/// A worker program that others may change is refused at reload, and when a worker is
/// started (here when its forwarder is booted again): psr says why, and the message waits
/// untouched until the program is fixed.
#[test]
fn a_worker_program_others_may_change_is_not_started() {
    let env = Env::new();
    write_worker(&env, ECHO_PID, "");
    write_config(&env, &config("", "min = 1\nmax = 1"));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"one", reply_to("1"));
    eventually("the reply", || depth(&env, "R") == 1);
    let (first, _, _) = fields(&app.take("R"));
    // Its only forwarder stopped, the service's worker ends.
    env.c("shutdown -i 1").ok();
    eventually("the worker ended", || !alive(first));
    let script = env.path("worker.sh");
    let mode = |m: u32| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(&script, mode(0o666)).unwrap();
    env.c("daemon reload").failed().stderr_has("service SVC").stderr_has("worker.sh");
    env.c("boot -i 1").ok();
    app.put_with("SVC", b"two", reply_to("2"));
    eventually("the refusal in psr", || {
        server(&env, 1)
            .last_error
            .is_some_and(|e| e.contains("worker not started") && e.contains("mode 0666"))
    });
    assert_eq!((depth(&env, "SVC"), depth(&env, "R"), depth(&env, "ERRQ")), (1, 0, 0));
    // Fixed, the next start works and the message is served on its first try.
    std::fs::set_permissions(&script, mode(0o600)).unwrap();
    eventually("the second reply", || depth(&env, "R") == 1);
    let (_, retries, body) = fields(&app.take("R"));
    assert_eq!((retries, body.as_str()), (0, "two"));
}

/// The worker shipped in examples/workers serves messages.
#[test]
fn the_shipped_shell_worker_echoes() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workers/echo-worker.sh");
    std::fs::copy(example, env.path("worker.sh")).unwrap();
    write_config(&env, &config("", ""));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let big = vec![b'%'; 20_000];
    for body in [b"hello".to_vec(), Vec::new(), big] {
        app.put_with("SVC", &body, reply_to("c"));
        let replied = wait_until(Duration::from_secs(15), || depth(&env, "R") == 1);
        assert!(replied, "{:#?}", server(&env, 1));
        assert_eq!(app.take("R").body, body);
    }
    // Its files live in a directory of its own that mktemp made under TMPDIR (the test's
    // directory here), removed when it ends at the end of its input.
    let scratch = || {
        let entries = std::fs::read_dir(env.path("")).unwrap().flatten();
        entries.filter(|e| e.file_name().to_string_lossy().starts_with("tmp.")).count()
    };
    assert!(scratch() >= 1, "no directory of a running worker in the test's directory");
    env.c("shutdown -i 1").ok();
    assert!(wait_until(Duration::from_secs(10), || scratch() == 0), "left behind");
}

/// Workers end with their forwarder, and with the daemon: a worker that exits at end of
/// input is gone when `daemon stop` is done, and one that ignores it is killed after the
/// grace; none is left running.
#[test]
fn no_worker_outlives_its_forwarder_or_the_daemon() {
    let env = Env::new();
    let marker = sleep_marker(1000, 13);
    let _cleanup = KillMarked(marker.clone());
    write_worker(&env, ECHO_PID, "echo \"$$ saw the end of its input\" >> eof.txt");
    // Service B's workers note the end of their input, then ignore it.
    let stubborn = format!("echo \"$$ saw the end of its input\" >> eof.txt; {marker}");
    std::fs::write(env.path("stubborn.sh"), worker_script(ECHO_PID, &stubborn)).unwrap();
    let text = format!(
        "{}\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nclopt = \"-- -q B -i 0\"\n\n[service.B]\ncommand = \"sh ./stubborn.sh\"\nmode = \"worker\"\nmin = 2\nmax = 2\n",
        config("", "min = 1\nmax = 1")
    );
    write_config(&env, &text);
    let mut daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("B", 0), &fifo("R", 0)]);
    env.c("boot -i 1; boot -i 2").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"a", reply_to("a"));
    app.put_with("B", b"b", reply_to("b"));
    eventually("two replies", || depth(&env, "R") == 2);
    let replies = app.drain("R");
    let pid_of = |corrid: &[u8]| fields(replies.iter().find(|m| m.corrid == corrid).unwrap()).0;
    let (svc_pid, b_pid) = (pid_of(b"a"), pid_of(b"b"));
    assert!(alive(svc_pid) && alive(b_pid));
    // Forwarder 1 stops: its service's worker gets end of input and exits.
    env.c("shutdown -i 1").ok();
    eventually("the worker of the stopped forwarder ended", || !alive(svc_pid));
    assert_eq!(lines(&env, "eof.txt"), [format!("{svc_pid} saw the end of its input")]);
    assert!(alive(b_pid), "forwarder 2 still runs: its workers stay");
    drop(app);
    env.c("daemon stop").ok();
    daemon.wait();
    assert!(!alive(b_pid), "worker {b_pid} outlived the daemon");
    // Both of B's workers were told (end of input) before they were killed.
    let told = lines(&env, "eof.txt");
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(told.contains(&format!("{b_pid} saw the end of its input")), "{told:?}");
    // The daemon waited out their grace before it killed them, and only then ended.
    let killed = daemon.log_count(&["service B: worker pid", "did not end within 2 s"]);
    assert_eq!(killed, 2, "{}", daemon.log());
    assert!(!running(&marker), "the stubborn worker was killed");
    assert!(!running("stubborn.sh"), "no worker of B is left");
}

/// A reload that changes a worker service replaces its workers: the running one gets end
/// of input, the next message is served by a new one; an unchanged service keeps its own.
#[test]
fn a_reload_that_changes_the_service_replaces_its_workers() {
    let env = Env::new();
    write_worker(&env, ECHO_PID, "echo \"$$ saw the end of its input\" >> eof.txt");
    let other = "\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nclopt = \"-- -q B -i 0\"\n\n[service.B]\ncommand = \"sh ./worker.sh\"\nmode = \"worker\"\n";
    write_config(&env, &format!("{}{other}", config("", "min = 1\nmax = 1")));
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("B", 0), &fifo("R", 0)]);
    env.c("boot -i 1; boot -i 2").ok();
    let mut app = App::connect(&env);
    let mut serve = |queue: &str| {
        app.put_with(queue, b"x", reply_to(queue));
        eventually("the reply", || depth(&env, "R") == 1);
        fields(&app.take("R")).0
    };
    let (before, b_before) = (serve("SVC"), serve("B"));
    write_config(&env, &format!("{}{other}", config("", "min = 1\nmax = 1\nmax_requests = 100")));
    env.c("daemon reload").ok();
    eventually("the old worker was told", || !lines(&env, "eof.txt").is_empty());
    assert_eq!(lines(&env, "eof.txt"), [format!("{before} saw the end of its input")]);
    let after = serve("SVC");
    assert_ne!(after, before);
    assert!(!alive(before));
    assert_eq!(serve("B"), b_before, "service B did not change: same worker");
}

/// `qmd --end-orphans` on the test's device.
fn end_orphans(env: &Env) -> crate::support::Run {
    let mut cmd = std::process::Command::new(QMD);
    cmd.arg("--end-orphans").arg(&env.device);
    run_limited(cmd, Duration::from_secs(30))
}

/// `qmd --end-orphans` trusts no lock file it did not make: one that is a symbolic link is
/// refused, saying so, and nothing is ended.
#[test]
fn end_orphans_refuses_a_lock_file_that_is_a_link() {
    let env = Env::new();
    let lock = env.path("QUE.lock");
    std::os::unix::fs::symlink(env.path("elsewhere"), &lock).unwrap();
    let run = end_orphans(&env);
    assert_eq!(run.status, 2, "{run:?}");
    run.stderr_has("is a symbolic link");
    assert!(std::fs::symlink_metadata(&lock).unwrap().file_type().is_symlink());
}

/// A daemon whose service SVC has one worker, which runs `marker` when its input ends and
/// so outlives the daemon; the worker's pid, from its reply to a first message.
fn serving_a_stubborn_worker(env: &Env, marker: &str) -> (Daemon, u32) {
    write_worker(env, ECHO_PID, marker);
    write_config(env, &config("", "min = 1\nmax = 1"));
    let daemon = env.start_daemon(&[]);
    setup(env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(env);
    app.put_with("SVC", b"x", reply_to("x"));
    eventually("the reply", || depth(env, "R") == 1);
    let (pid, _, _) = fields(&app.take("R"));
    (daemon, pid)
}

/// Workers of a qmd killed outright (`kill -9`) see their input end; one that ignores it is
/// killed by the next qmd of the device when it starts.
#[test]
fn the_next_daemon_kills_workers_a_killed_one_left() {
    let env = Env::new();
    let marker = sleep_marker(1000, 14);
    let _cleanup = KillMarked(marker.clone());
    let (mut daemon, pid) = serving_a_stubborn_worker(&env, &marker);
    daemon.signal("KILL");
    eventually("the orphaned worker ignores its end of input", || running(&marker));
    assert!(alive(pid));
    let _daemon = env.start_daemon(&[]);
    eventually("the orphan is gone", || !running(&marker) && !alive(pid));
}

/// `qmd --end-orphans DEVICE`, for a machine where the next qmd will not start: while a qmd
/// serves the device it refuses and its worker goes on; once that qmd was killed outright,
/// it ends the worker it left (which ignores its end of input), and says so.
#[test]
fn end_orphans_ends_a_killed_daemons_workers_and_spares_a_serving_ones() {
    let env = Env::new();
    let marker = sleep_marker(1000, 26);
    let _cleanup = KillMarked(marker.clone());
    let (mut daemon, pid) = serving_a_stubborn_worker(&env, &marker);
    let refused = end_orphans(&env);
    assert_eq!(refused.status, 2, "{refused:?}");
    refused.stderr_has(&format!("qmd pid {} serves the device on this machine", daemon.pid));
    refused.stderr_has("nothing was ended");
    assert!(alive(pid), "the serving daemon's worker was ended");
    env.c("qopen QS; qinfo SVC").ok();

    daemon.signal("KILL");
    eventually("the orphaned worker ignores its end of input", || running(&marker));
    let ended = end_orphans(&env);
    assert_eq!(ended.status, 0, "{ended:?}");
    ended.stdout_has(&format!(
        "ended 1 service process group(s) left by a killed qmd of {}",
        env.device.display()
    ));
    eventually("the orphan is gone", || !running(&marker) && !alive(pid));
    end_orphans(&env).stdout_has("no process of a killed qmd of");
    // It ran no daemon.
    env.c_no_start("lidl").failed();
}

/// With the forwarder's `-d`, a worker's failure reply with a body goes to the failure queue
/// with its user return code and the request is deleted; a failure without a body is
/// retried, then goes to the error queue.
#[test]
fn delete_on_failure_sends_a_worker_failure_reply_to_the_failure_queue() {
    let env = Env::new();
    let handler = r#"status=1; [ "$body" = reject ] && { urcode=42; printf 'rejected on try %s' "$retries"; }"#;
    write_worker(&env, handler, "");
    write_config(&env, &config("-d", "min = 1\nmax = 1"));
    setup(&env, 200, &[&fifo("SVC", 1), &fifo("R", 0), &fifo("FAILQ", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let ctl = |c: &str| EnqueueCtl { failure_queue: Some("FAILQ".into()), ..reply_to(c) };
    app.put_with("SVC", b"reject", ctl("r"));
    app.put_with("SVC", b"empty", ctl("e"));
    eventually("the failure reply and the error queue", || {
        depth(&env, "FAILQ") == 1 && depth(&env, "ERRQ") == 1
    });
    let failure = app.take("FAILQ");
    assert_eq!(failure.body, b"rejected on try 0");
    assert_eq!((failure.urcode, failure.corrid.as_slice()), (42, b"r".as_slice()));
    let failed = app.take("ERRQ");
    assert_eq!((failed.body.as_slice(), failed.retries), (b"empty".as_slice(), 2));
    assert_eq!((depth(&env, "SVC"), depth(&env, "R")), (0, 0));
}

/// A forwarder waiting for a worker (the only one is busy with a request that hangs) stops
/// at once on `shutdown`; the busy one is not disturbed.
#[test]
fn a_forwarder_waiting_for_a_busy_worker_stops_on_shutdown() {
    let env = Env::new();
    let marker = sleep_marker(1000, 15);
    let _cleanup = KillMarked(marker.clone());
    let handler = format!(r#"[ "$body" = hang ] && {marker}; {ECHO_PID}"#);
    write_worker(&env, &handler, "");
    let second = "\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n";
    write_config(&env, &format!("{}{second}", config("-t 3600", "min = 1\nmax = 1")));
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&fifo("SVC", 0), &fifo("R", 0)]);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"hang", reply_to("h"));
    eventually("the worker hangs", || running(&marker));
    env.c("boot -i 2").ok();
    daemon.wait_log(&["service SVC: no worker is free (max = 1); waiting for one"], 1);
    env.c("shutdown -i 2").ok();
    assert_eq!(server(&env, 2).state, "stopped");
    assert_eq!(server(&env, 1).state, "running");
    assert!(running(&marker));
}
