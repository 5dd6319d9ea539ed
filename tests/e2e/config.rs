//! The daemon's configuration file: CLOPT spelling and fields, `--config` and DEVICE.toml,
//! `boot = true`, `daemon reload`, and configurations with errors.

use crate::auto::{App, depth, eventually, psr, server, setup, wait_state, write_config};
use crate::support::{Env, QMD, run_limited};
use qm_common::message::EnqueueCtl;
use std::process::Command;
use std::time::Duration;

fn reply_to_r() -> EnqueueCtl {
    EnqueueCtl { reply_queue: Some("R".into()), ..EnqueueCtl::default() }
}

/// Tuxedo's CLOPT (`[servopts] -- -q ... -t -i -e -d`, with `-b` accepted) and the
/// TOML fields describe the same forwarder; fields win over CLOPT; `-t` defaults to 60 and
/// `-i` to 30.
#[test]
fn clopt_spelling_and_fields_describe_the_same_forwarder() {
    let env = Env::new();
    write_config(
        &env,
        r#"
[[forwarder]]
id = 1
qspace = "QS"
clopt = "-A -- -q A,B -t 5 -i -200 -e -d -b 4"

[[forwarder]]
id = 2
qspace = "QS"
queues = ["A", "B"]
transaction_timeout = 5
idle = -200
exit_when_empty = true
delete_on_failure = true

[[forwarder]]
id = 3
qspace = "QS"
clopt = "-- -q C"

[[forwarder]]
id = 4
qspace = "QS"
clopt = "-- -q C -t 9 -i 9 -e"
transaction_timeout = 7
exit_when_empty = false

[service.A]
command = "cat"

[service.B]
command = "cat"

[service.C]
command = "cat"
"#,
    );
    let list = psr(&env);
    let options: Vec<(u32, &str)> = list.iter().map(|f| (f.id, f.options.as_str())).collect();
    assert_eq!(
        options,
        [
            (1, "-q A,B -t 5 -i -200 -e -d"),
            (2, "-q A,B -t 5 -i -200 -e -d"),
            (3, "-q C -t 60 -i 30"),
            (4, "-q C -t 7 -i 9"),
        ]
    );
    assert_eq!(list[0].queues, ["A", "B"]);
    assert!(list.iter().all(|f| f.state == "not booted" && f.qspace == "QS"));
    env.c("psr").ok().stdout_has("not booted").stdout_has("-q A,B -t 5 -i -200 -e -d");
    env.c("printserver").ok().stdout_has("forwarded");
}

/// `boot = true` forwarders start with the daemon, from `--config FILE` or from DEVICE.toml.
#[test]
fn boot_true_forwarders_start_with_the_daemon() {
    let env = Env::new();
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    env.stop_daemon();
    let text = "[[forwarder]]\nid = 7\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\nboot = true\n\n[service.SVC]\ncommand = \"printf booted\"\n";
    // --config FILE, on a daemon in the foreground.
    let file = env.path("elsewhere.toml");
    std::fs::write(&file, text).unwrap();
    let mut daemon = env.start_daemon(&["--config", file.to_str().unwrap()]);
    eventually("forwarder 7 booted", || server(&env, 7).state == "idle");
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to_r());
    eventually("the reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"booted");
    drop(app);
    env.c("daemon stop").ok();
    daemon.wait();
    // DEVICE.toml, on a daemon qmadmin starts.
    write_config(&env, text);
    eventually("forwarder 7 booted", || server(&env, 7).state == "idle");
    env.c("ipcs QS").ok().stdout_has("TMQFORWARD 7");
}

/// `daemon reload` re-reads the file: a changed service command applies to the next
/// message (even for a running forwarder), a new forwarder can be booted, and a new
/// `command_timeout` limits threshold commands.
#[test]
fn daemon_reload_applies_new_services_forwarders_and_limits() {
    let env = Env::new();
    let marker = crate::auto::sleep_marker(30, 25);
    write_config(
        &env,
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n[service.SVC]\ncommand = \"printf v1\"\n",
    );
    setup(
        &env,
        200,
        &[
            "SVC fifo none 0 0 100% 0% ''",
            "OTHER fifo none 0 0 100% 0% ''",
            "R fifo none 0 0 100% 0% ''",
            &format!("SLOW fifo none 0 0 100% 0% '{marker}'"),
        ],
    );
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to_r());
    eventually("the v1 reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"v1");
    env.c("boot -i 2").failed().stderr_has("not defined");

    write_config(
        &env,
        "[thresholds]\ncommand_timeout = 1\n\n[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nqueues = [\"OTHER\"]\nidle = 0\n\n[service.SVC]\ncommand = \"printf v2\"\n\n[service.OTHER]\ncommand = \"printf other\"\n",
    );
    env.c("daemon reload").ok().stdout_has("Configuration re-read").stdout_has("QUE.toml");
    app.put_with("SVC", b"x", reply_to_r());
    eventually("the v2 reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"v2");
    assert_eq!(psr(&env).len(), 2);
    env.c("boot -i 2").ok();
    app.put_with("OTHER", b"x", reply_to_r());
    eventually("the other reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"other");
    let run = env.c("qopen QS; qthtest SLOW");
    run.failed().stdout_has("killed after the 1 s time limit");
    assert!(!crate::auto::running(&marker));
}

/// A file with an error: `daemon reload` fails naming the file and the problem, and the
/// configuration in use stays as it was.
#[test]
fn reload_of_a_broken_file_fails_and_keeps_the_configuration() {
    let env = Env::new();
    let good = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n[service.SVC]\ncommand = \"printf good\"\n";
    write_config(&env, good);
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    let broken = [
        ("[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -z\"\n", "unknown option -z"),
        ("[[forwarder]]\nid = 2\nqspace = \"QS\"\n", "forwarder 2: no queues"),
        ("[service.SVC]\ncommand = \"printf bad\"\nbogus = 1\n", "unknown field `bogus`"),
        ("[thresholds]\ncommand_timeout = 0\n", "command_timeout must be at least 1 second"),
        ("this is not toml", "TOML parse error"),
    ];
    for (text, why) in broken {
        write_config(&env, text);
        env.c("daemon reload").failed().stderr_has("QUE.toml").stderr_has(why);
    }
    assert_eq!(psr(&env).len(), 1);
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to_r());
    eventually("the reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"good");
}

/// qmd refuses to start on a configuration with an error, saying which file and what.
#[test]
fn qmd_refuses_to_start_with_a_broken_configuration() {
    let env = Env::new();
    let cases = [
        ("[[forwarder]]\nid = 3\nqspace = \"QS\"\nclopt = \"-- -q A -z\"\n", "forwarder 3"),
        (
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"A\"]\ntransaction_timeout = 0\n",
            "transaction_timeout",
        ),
        (
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"A\"]\n\n[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"B\"]\n",
            "forwarder 1 is defined twice",
        ),
        ("[service.A]\ncommand = \"\"\n", "service A has an empty command"),
        ("[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"A\"]\nidle = \"x\"\n", "idle"),
    ];
    let file = env.path("bad.toml");
    for (text, why) in cases {
        std::fs::write(&file, text).unwrap();
        let mut qmd = Command::new(QMD);
        qmd.arg(&env.device).arg("--config").arg(&file).env_remove("QM_SOCKET");
        let out = run_limited(qmd, Duration::from_secs(30));
        let stderr = &out.stderr;
        assert_eq!(out.status, 1, "{stderr}");
        assert!(stderr.contains("bad.toml") && stderr.contains(why), "{why}: {stderr}");
        assert!(!env.socket().exists());
    }
    let mut qmd = Command::new(QMD);
    qmd.arg(&env.device).arg("--config").arg(env.path("missing.toml")).env_remove("QM_SOCKET");
    let out = run_limited(qmd, Duration::from_secs(30));
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("cannot read configuration"), "{}", out.stderr);
    // DEVICE.toml with an error: qmadmin's auto-start reports it.
    write_config(&env, "[[forwarder]]\nid = 1\nqspace = \"QS\"\n");
    env.c("psr").failed().stderr_has("QUE.toml").stderr_has("no queues");
}

/// DEVICE.toml written after the daemon started (without one) is read by `daemon reload`.
#[test]
fn reload_reads_a_device_toml_created_after_the_start() {
    let env = Env::new();
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    env.c("psr").ok().stdout_has("No forwarders are configured");
    let toml = format!("{}.toml", env.dev());
    env.c("daemon status")
        .ok()
        .stdout_has(&format!("no configuration file; {toml} is read when present"));
    write_config(
        &env,
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0 -e\"\n\n[service.SVC]\ncommand = \"printf late\"\n",
    );
    env.c("daemon reload").ok().stdout_has("QUE.toml");
    let status: qm_common::protocol::DaemonStatus = env.json("daemon status");
    assert_eq!(status.config, toml, "daemon status names the file in use");
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to_r());
    env.c("boot -i 1").ok();
    wait_state(&env, 1, "exited (queues empty)");
    assert_eq!(app.take("R").body, b"late");
    // Removing DEVICE.toml means no configuration again, as at start.
    std::fs::remove_file(&toml).unwrap();
    env.c("daemon reload").ok();
    env.c("psr").ok().stdout_has("No forwarders are configured");
    env.c("daemon status").ok().stdout_has("no configuration file;");
}

/// What the file cannot mean is refused at load and at reload, naming the forwarder, the
/// field and what is allowed: id 0, a queue listed twice, `-q` given twice, TMQFORWARD's
/// `-n` and `-f` (qm does not support them), and a queue without a `[service.NAME]` table.
#[test]
fn forwarder_definitions_qm_cannot_run_are_refused() {
    let env = Env::new();
    let good = "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n[service.SVC]\ncommand = \"printf good\"\n";
    write_config(&env, good);
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    let svc = "\n[service.SVC]\ncommand = \"cat\"\n\n[service.B]\ncommand = \"cat\"\n";
    let broken = [
        (
            format!("[[forwarder]]\nid = 0\nqspace = \"QS\"\nqueues = [\"SVC\"]\n{svc}"),
            vec!["forwarder id: '0' is invalid", "1 to 4294967295"],
        ),
        (
            format!("[[forwarder]]\nid = 1\nqspace = \"QS\"\nqueues = [\"SVC\", \"B\", \"SVC\"]\n{svc}"),
            vec!["forwarder 1", "queue SVC is listed twice"],
        ),
        (
            format!("[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC,SVC\"\n{svc}"),
            vec!["forwarder 1", "queue SVC is listed twice"],
        ),
        (
            format!("[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -q B\"\n{svc}"),
            vec!["forwarder 1", "-q is given more than once"],
        ),
        (
            format!("[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -n\"\n{svc}"),
            vec!["forwarder 1", "-n is not supported by qm"],
        ),
        (
            format!("[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -f 5\"\n{svc}"),
            vec!["forwarder 1", "-f is not supported by qm"],
        ),
        (
            "[[forwarder]]\nid = 4\nqspace = \"QS\"\nqueues = [\"SVC\", \"NOSVC\"]\n\n[service.SVC]\ncommand = \"cat\"\n".to_string(),
            vec!["forwarder 4 serves queue NOSVC", "no service NOSVC is defined", "[service.NOSVC]"],
        ),
    ];
    for (text, whys) in &broken {
        write_config(&env, text);
        let run = env.c("daemon reload");
        let run = run.failed().stderr_has("QUE.toml");
        for why in whys {
            run.stderr_has(why);
        }
    }
    // Nothing changed: the good forwarder is still the only one, and works.
    let list = psr(&env);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].options, "-q SVC -t 60 -i 0");
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    app.put_with("SVC", b"x", reply_to_r());
    eventually("the reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"good");
    drop(app);
    // And qmd does not start with one of them.
    env.c("daemon stop").ok();
    let file = env.path("bad.toml");
    std::fs::write(&file, &broken[0].0).unwrap();
    let mut qmd = Command::new(QMD);
    qmd.arg(&env.device).arg("--config").arg(&file).env_remove("QM_SOCKET");
    let out = run_limited(qmd, Duration::from_secs(30));
    let stderr = &out.stderr;
    assert_eq!(out.status, 1, "{stderr}");
    assert!(stderr.contains("1 to 4294967295"), "{stderr}");
}

/// `daemon reload` makes running forwarders follow the file: one removed from it stops
/// (psr no longer lists it, ipcs no longer shows it), one whose definition changed restarts
/// with the new options (psr shows what is in effect), an unchanged one keeps running; the
/// reply says what was done.
#[test]
fn reload_stops_removed_and_restarts_changed_running_forwarders() {
    let env = Env::new();
    let services = "\n[service.A]\ncommand = \"printf a\"\n\n[service.B]\ncommand = \"printf b\"\n\n[service.C]\ncommand = \"printf c\"\n";
    write_config(
        &env,
        &format!(
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q A -i 0\"\n\n[[forwarder]]\nid = 2\nqspace = \"QS\"\nclopt = \"-- -q B -i 0\"\n\n[[forwarder]]\nid = 3\nqspace = \"QS\"\nclopt = \"-- -q C -i 0\"\n{services}"
        ),
    );
    setup(
        &env,
        200,
        &[
            "A fifo none 0 0 100% 0% ''",
            "B fifo none 0 0 100% 0% ''",
            "C fifo none 0 0 100% 0% ''",
            "R fifo none 0 0 100% 0% ''",
        ],
    );
    env.c("boot -i 1; boot -i 2; boot -i 3").ok();
    env.c("ipcs QS").ok().stdout_has("TMQFORWARD 2");
    // 1 unchanged (only boot = true added), 2 removed, 3 changed (-e -t 9).
    write_config(
        &env,
        &format!(
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q A -i 0\"\nboot = true\n\n[[forwarder]]\nid = 3\nqspace = \"QS\"\nclopt = \"-- -q C -i 0 -t 9 -d\"\n{services}"
        ),
    );
    env.c("daemon reload")
        .ok()
        .stdout_has("Forwarder 2 was removed from the configuration: stopped")
        .stdout_has("Forwarder 3 restarted with its new definition (-q C -t 9 -i 0 -d)")
        .stdout_lacks("Forwarder 1");
    let list = psr(&env);
    let ids: Vec<u32> = list.iter().map(|f| f.id).collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(list[1].options, "-q C -t 9 -i 0 -d");
    assert!(list.iter().all(|f| f.state == "idle" || f.state == "running"), "{list:#?}");
    env.c("ipcs QS").ok().stdout_lacks("TMQFORWARD 2").stdout_has("TMQFORWARD 3");
    let mut app = App::connect(&env);
    app.put_with("B", b"x", reply_to_r());
    app.put_with("C", b"x", reply_to_r());
    eventually("the C reply", || depth(&env, "R") == 1);
    assert_eq!(app.take("R").body, b"c");
    // Forwarder 2 had ended (ipcs no longer lists it) before B's message came, and C's,
    // enqueued after B's, has been forwarded: the one on B is still there.
    assert_eq!(depth(&env, "B"), 1, "nothing serves B any more");
}

/// A forwarder with `boot = true` whose queue space does not exist yet when the daemon
/// starts: psr shows the failed boot and why, not just "not booted".
#[test]
fn a_failed_boot_at_daemon_start_shows_in_psr() {
    let env = Env::new();
    setup(&env, 200, &[]);
    env.stop_daemon();
    write_config(
        &env,
        "[[forwarder]]\nid = 5\nqspace = \"LATER\"\nclopt = \"-- -q SVC -i 0\"\nboot = true\n\n[service.SVC]\ncommand = \"cat\"\n",
    );
    eventually("the failed boot", || server(&env, 5).state == "boot failed");
    let s = server(&env, 5);
    let why = s.last_error.clone().unwrap_or_default();
    assert!(why.contains("LATER"), "{s:#?}");
    env.c("psr").ok().stdout_has("boot failed").stdout_has("LATER");
}
