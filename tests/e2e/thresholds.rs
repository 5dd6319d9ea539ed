//! Capacity thresholds: each unit and limit set, exactly one firing per crossing (across
//! fill/drain cycles and restarts), the command's environment, time limit, and record.

use crate::auto::{
    App, KillMarked, assert_crossings, crossings, eventually, firings, lines, running, setup,
    sleep_marker, wait_firings, wait_lines, write_config,
};
use crate::support::Env;
use std::collections::BTreeMap;

/// What every test command appends to `fired.txt`: one line per firing.
const LOG: &str = r#"'echo "$QM_QUEUE $QM_LIMITS $QM_LIMIT $QM_USAGE $QM_EVENT" >> fired.txt'"#;

/// A queue `name` with the persistent limits `high low` and the [`LOG`] command.
fn queue(name: &str, high: &str, low: &str) -> String {
    format!("{name} fifo none 0 0 {high} {low} {LOG}")
}

/// A queue `name` with the non-persistent limits `-n high,low,LOG` and no persistent command.
fn np_queue(name: &str, high: &str, low: &str) -> String {
    let cmd = LOG.trim_matches('\'');
    format!("-n '{high},{low},{cmd}' {name} fifo none 0 0 100% 0% ''")
}

fn body(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

/// Fill/drain cycles on a `5m`/`2m` queue: one firing per cycle, by the commit that
/// reaches the mark; more messages above the high mark, or a drain that stops above the low
/// mark, do not fire; exactly the low mark re-arms.
#[test]
fn fires_exactly_once_per_crossing_over_many_cycles() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "5m", "2m")]);
    let mut app = App::connect(&env);
    let cycles = 12;
    for cycle in 1..=cycles {
        // From 2 (re-armed, or empty at first) to the high mark: only the last put fires.
        let start = if cycle == 1 { 0 } else { 2 };
        for _ in start..4 {
            app.put("Q", b"m");
        }
        assert_crossings(&daemon, "Q", cycle - 1);
        app.put("Q", b"m");
        assert_crossings(&daemon, "Q", cycle);
        wait_lines(&env, "fired.txt", cycle);
        // Further above the high mark: not re-armed, nothing fires.
        app.put("Q", b"m");
        app.put("Q", b"m");
        // Drain only to 3 and refill past the high mark: still not re-armed.
        for _ in 0..4 {
            app.take("Q");
        }
        for _ in 0..3 {
            app.put("Q", b"m");
        }
        // Drain to exactly the low mark: re-arms (nothing fires on the way down).
        for _ in 0..4 {
            app.take("Q");
        }
        assert_crossings(&daemon, "Q", cycle);
        assert_eq!(crate::auto::depth(&env, "Q"), 2);
    }
    // Every crossing's command has finished: the file holds all that ever ran.
    let log = wait_firings(&env, "Q", cycles);
    assert!(log.iter().all(|r| r.usage == "5m" && r.exit == Some(0) && !r.test), "{log:#?}");
    let fired = lines(&env, "fired.txt");
    assert_eq!(fired, vec!["Q persistent 5m 5m high"; cycles], "{fired:#?}");
}

/// `m` counts persistent and non-persistent messages alike.
#[test]
fn messages_unit_counts_persistent_and_nonpersistent() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "5m", "0m")]);
    let mut app = App::connect(&env);
    app.put("Q", b"p1");
    app.put_np("Q", b"n1");
    app.put("Q", b"p2");
    app.put_np("Q", b"n2");
    assert_crossings(&daemon, "Q", 0);
    app.put_np("Q", b"n3");
    assert_crossings(&daemon, "Q", 1);
    assert_eq!(wait_lines(&env, "fired.txt", 1), ["Q persistent 5m 5m high"]);
}

/// `b` counts the bodies of persistent messages only.
#[test]
fn bytes_unit_counts_persistent_body_bytes() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "1000b", "100b")]);
    let mut app = App::connect(&env);
    // Non-persistent bytes do not count toward the persistent set.
    app.put_np("Q", &body(5000));
    app.put("Q", &body(600));
    app.put("Q", &body(399));
    assert_crossings(&daemon, "Q", 0);
    app.put("Q", &body(1));
    assert_crossings(&daemon, "Q", 1);
    assert_eq!(wait_lines(&env, "fired.txt", 1), ["Q persistent 1000b 1000b high"]);
    // Down to 100 bytes re-arms; the next crossing reports the usage that crossed.
    app.take("Q");
    app.take("Q");
    app.take("Q");
    app.take("Q");
    app.put("Q", &body(1200));
    assert_eq!(wait_lines(&env, "fired.txt", 2)[1], "Q persistent 1000b 1200b high");
}

/// `B` counts `ceil((128 + body) / page size)` blocks per persistent message.
#[test]
fn blocks_unit_counts_pages_per_message() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "4B", "0B")]);
    let mut app = App::connect(&env);
    // 128 + 896 = 1024: one block; 128 + 897: two blocks.
    app.put("Q", &body(896));
    app.put("Q", &body(897));
    app.put_np("Q", &body(3000));
    assert_crossings(&daemon, "Q", 0);
    app.put("Q", &body(0));
    assert_crossings(&daemon, "Q", 1);
    assert_eq!(wait_lines(&env, "fired.txt", 1), ["Q persistent 4B 4B high"]);
}

/// `%` is the queue's blocks out of all the queue space's pages.
#[test]
fn percent_unit_is_of_the_queue_space_pages() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    // 100 pages: 10 % is 10 blocks.
    setup(&env, 100, &[&queue("Q", "10%", "5%")]);
    let mut app = App::connect(&env);
    app.put("Q", &body(8 * 1024 - 128)); // 8 blocks
    app.put("Q", &body(1)); // 1 block
    assert_crossings(&daemon, "Q", 0);
    app.put("Q", &body(1));
    assert_crossings(&daemon, "Q", 1);
    assert_eq!(wait_lines(&env, "fired.txt", 1), ["Q persistent 10% 10% high"]);
    // 5 % re-arms: take the 8-block message away (2 blocks left).
    app.take("Q");
    app.put("Q", &body(8 * 1024 - 128));
    assert_eq!(wait_lines(&env, "fired.txt", 2)[1], "Q persistent 10% 10% high");
}

/// The `-n` set counts non-persistent messages only: bytes, blocks of them, and percent of
/// the queue space's non-persistent memory (16 blocks here).
#[test]
fn nonpersistent_set_counts_bytes_blocks_and_percent_of_memory() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(
        &env,
        200,
        &[
            &np_queue("NB", "1000b", "0b"),
            &np_queue("NBL", "2B", "0B"),
            &np_queue("NP", "50%", "0%"),
        ],
    );
    let mut app = App::connect(&env);
    for q in ["NB", "NBL", "NP"] {
        // Persistent messages never count toward the non-persistent set.
        app.put(q, &body(20_000));
    }
    app.put_np("NB", &body(999));
    app.put_np("NBL", &body(600));
    app.put_np("NP", &body(4000));
    let counts = |set: &str| ["NB", "NBL", "NP"].map(|q| crossings(&daemon, q, set));
    assert_eq!((counts("persistent"), counts("nonpersistent")), ([0; 3], [0; 3]));
    app.put_np("NB", &body(1));
    app.put_np("NBL", &body(600));
    app.put_np("NP", &body(8192 - 4000));
    assert_eq!((counts("persistent"), counts("nonpersistent")), ([0; 3], [1; 3]));
    wait_lines(&env, "fired.txt", 3);
    let mut fired = lines(&env, "fired.txt");
    fired.sort();
    assert_eq!(
        fired,
        [
            "NB nonpersistent 1000b 1000b high",
            "NBL nonpersistent 2B 2B high",
            "NP nonpersistent 50% 50% high",
        ]
    );
    // The persistent set of these queues has no command: nothing else was recorded.
    assert!(firings(&env, None).iter().all(|r| r.limits == "nonpersistent"));
}

/// The command runs with `sh -c` in the device's directory (`sh cmd.sh` finds it there), with QMCONFIG, QM_SOCKET and a
/// PATH that finds this build's `qmadmin` first, so it can call the daemon back.
#[test]
fn command_environment_names_the_event_and_reaches_the_daemon() {
    let env = Env::new();
    std::fs::write(
        env.path("cmd.sh"),
        "env | sort > env.txt\nqmadmin -c 'qopen QS; qenqueue OUT called-back' > back.txt 2>&1\necho done >> fired.txt\n",
    )
    .unwrap();
    setup(&env, 200, &["Q fifo none 0 0 3m 1m 'sh cmd.sh'", "OUT fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for _ in 0..3 {
        app.put("Q", b"x");
    }
    wait_lines(&env, "fired.txt", 1);
    let vars: BTreeMap<String, String> = lines(&env, "env.txt")
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let var = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("{k} unset: {vars:#?}"));
    assert_eq!(var("QMCONFIG"), env.dev());
    assert_eq!(var("QM_SOCKET"), env.socket().display().to_string());
    assert_eq!(var("QM_QSPACE"), "QS");
    assert_eq!(var("QM_QUEUE"), "Q");
    assert_eq!(var("QM_LIMITS"), "persistent");
    assert_eq!(var("QM_LIMIT"), "3m");
    assert_eq!(var("QM_USAGE"), "3m");
    assert_eq!(var("QM_EVENT"), "high");
    let qmd_dir = std::path::Path::new(crate::support::QMD).parent().unwrap();
    assert_eq!(var("PATH").split(':').next(), Some(qmd_dir.to_str().unwrap()));
    // The command's qmadmin reached this daemon.
    let back = app.take("OUT");
    assert_eq!(back.body, b"called-back", "{:?}", lines(&env, "back.txt"));
}

/// Reaches the high mark, restarts the daemon with `signal`: the queue is still above its
/// high mark but must not fire again; draining to the low mark and refilling fires.
fn no_second_firing_across_restart(signal: &str) {
    let env = Env::new();
    let mut daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "3m", "1m"), "OTHER fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    for _ in 0..4 {
        app.put("Q", b"x");
    }
    wait_lines(&env, "fired.txt", 1);
    wait_firings(&env, "Q", 1);
    // One more acknowledged commit: everything written before it is on disk.
    app.put("OTHER", b"barrier");
    drop(app);
    daemon.signal(signal);
    let mut daemon = env.start_traced_daemon(&[]);
    // Loading the queue space (4 messages, above 3m) and adding more does not fire (the
    // log is the same file across the restarts: the count is of all daemons).
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    assert_crossings(&daemon, "Q", 1);
    assert_eq!(firings(&env, Some("Q")).len(), 1, "the record of firings survives");
    // Drain to the low mark (re-arms) and refill: fires.
    for _ in 0..4 {
        app.take("Q");
    }
    app.put("Q", b"x");
    app.put("Q", b"x");
    assert_eq!(wait_lines(&env, "fired.txt", 2)[1], "Q persistent 3m 3m high");
    // The re-armed state (1 message left) also survives a restart.
    app.take("Q");
    app.take("Q");
    app.put("OTHER", b"barrier");
    drop(app);
    daemon.signal(signal);
    let daemon = env.start_traced_daemon(&[]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    assert_crossings(&daemon, "Q", 2);
    app.put("Q", b"x");
    assert_crossings(&daemon, "Q", 3);
    wait_firings(&env, "Q", 3);
    assert_eq!(lines(&env, "fired.txt").len(), 3);
}

/// Across a clean restart (SIGTERM) a crossing fires once.
#[test]
fn no_second_firing_after_sigterm_restart() {
    no_second_firing_across_restart("TERM");
}

/// Across a crash (SIGKILL) a crossing fires once.
#[test]
fn no_second_firing_after_sigkill_restart() {
    no_second_firing_across_restart("KILL");
}

/// A command that hangs never delays a commit: with a time limit of an hour, 40 commits
/// complete while the first command (and every one the crossings among them started) still
/// runs, and `qthlog` shows them all running. The daemon's stop ends them.
#[test]
fn hanging_commands_never_delay_commits() {
    let env = Env::new();
    write_config(&env, "[thresholds]\ncommand_timeout = 3600\n");
    // A unique sleep duration marks this test's processes.
    let marker = sleep_marker(1000, 16);
    let _cleanup = KillMarked(marker.clone());
    // A compound command: the sleep is the shell's child, in the command's process group.
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the command is running", || running(&marker));
    // While it hangs, every commit goes on; each crossing starts another hanging command.
    for _ in 0..20 {
        app.take("Q");
        app.put("Q", b"x");
    }
    let started = |env: &Env| firings(env, Some("Q"));
    eventually("21 commands started", || started(&env).len() == 21);
    let log = started(&env);
    assert!(log.iter().all(|r| r.outcome == "running"), "none could end yet: {log:#?}");
    assert!(running(&marker));
    env.stop_daemon();
    eventually("every hanging command is gone", || !running(&marker));
}

/// A command that hangs is killed (with its process group) once its `command_timeout` has
/// passed, not before, and its record says so.
#[test]
fn hanging_command_is_killed_after_its_limit() {
    let env = Env::new();
    write_config(&env, "[thresholds]\ncommand_timeout = 2\n");
    let marker = sleep_marker(1000, 17);
    let _cleanup = KillMarked(marker.clone());
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    app.take("Q");
    app.put("Q", b"x");
    let log = wait_firings(&env, "Q", 2);
    for r in &log {
        assert_eq!(r.outcome, "killed after the 2 s time limit", "{r:#?}");
        assert_eq!(r.exit, None);
        assert!(r.duration_ms >= 2000, "killed before its limit: {r:#?}");
    }
    eventually("the killed commands' process groups are gone", || !running(&marker));
    let table = env.c("qopen QS; qthlog Q");
    table.ok().stdout_has("killed after the 2 s time limit");
}

/// `qthlog` shows every firing: time, queue, limits, usage, command, outcome and duration,
/// and (verbose, or `--json`) the first lines of output; `qthlog QUEUE` filters.
#[test]
fn qthlog_shows_every_firing() {
    let env = Env::new();
    let noisy =
        "'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i; done; echo oops >&2; exit 3'";
    setup(&env, 200, &[&format!("NOISY fifo none 0 0 1m 0m {noisy}"), &queue("Q", "2m", "0m")]);
    let before = qm_common::time::now_secs();
    let mut app = App::connect(&env);
    app.put("NOISY", b"x");
    app.put("Q", b"x");
    app.put("Q", b"x");
    wait_firings(&env, "NOISY", 1);
    wait_firings(&env, "Q", 1);
    let all = firings(&env, None);
    assert_eq!(all.len(), 2);
    let noisy_rec = all.iter().find(|r| r.queue == "NOISY").unwrap();
    assert_eq!(noisy_rec.qspace, "QS");
    assert_eq!((noisy_rec.limits.as_str(), noisy_rec.limit.as_str()), ("persistent", "1m"));
    assert_eq!(noisy_rec.usage, "1m");
    assert_eq!(noisy_rec.exit, Some(3));
    assert_eq!(noisy_rec.outcome, "exit 3");
    assert!(noisy_rec.command.starts_with("for i in 1 2"));
    assert!(noisy_rec.started >= before && noisy_rec.started <= qm_common::time::now_secs());
    let expected: Vec<String> = (1..=10).map(|i| format!("line{i}")).collect();
    assert_eq!(noisy_rec.output, format!("{}\n...", expected.join("\n")));
    assert!(!noisy_rec.test);
    // One queue only.
    let q = firings(&env, Some("Q"));
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].usage.as_str(), q[0].outcome.as_str()), ("2m", "exit 0"));
    // The table: every column, and the output in verbose mode.
    let table = env.c("qopen QS; qthlog");
    table.ok();
    for col in ["started", "queue", "limits", "limit", "usage", "command", "outcome", "ms"] {
        table.stdout_has(col);
    }
    table.stdout_has("NOISY").stdout_has("exit 3").stdout_has("exit 0").stdout_lacks("line1");
    env.c("qopen QS; v; qthlog NOISY").ok().stdout_has("line1").stdout_lacks("| Q ");
    // Unknown queues and a closed session are refused clearly.
    env.c("qopen QS; qthlog NOSUCH").failed().stderr_has("NOSUCH");
    env.c("qthlog").failed();
}

/// `qthtest QUEUE` runs the command now in its real environment with QM_EVENT=test and
/// records it as a test; `-n` tests the non-persistent command; a queue without a command
/// (or a command that fails) is reported clearly.
#[test]
fn qthtest_runs_the_command_in_its_real_environment() {
    let env = Env::new();
    let np_cmd = "echo \"np $QM_LIMITS $QM_LIMIT $QM_USAGE $QM_EVENT\" >> fired.txt";
    setup(
        &env,
        200,
        &[
            &format!("-n '300b,0b,{np_cmd}' {}", queue("Q", "5m", "2m")),
            "PLAIN fifo none 0 0 100% 0% ''",
            "BAD fifo none 0 0 100% 0% 'echo failing; exit 4'",
        ],
    );
    let mut app = App::connect(&env);
    app.put("Q", b"one");
    app.put_np("Q", b"two");
    let run = env.c("qopen QS; qthtest Q");
    run.ok().stdout_has("(test)").stdout_has("exit 0");
    assert_eq!(lines(&env, "fired.txt"), ["Q persistent 5m 2m test"]);
    let record: qm_common::protocol::FiringRecord = env.json("qopen QS; qthtest -n Q");
    assert!(record.test);
    assert_eq!((record.limits.as_str(), record.usage.as_str()), ("nonpersistent", "3b"));
    assert_eq!(lines(&env, "fired.txt")[1], "np nonpersistent 300b 3b test");
    // Tests do not change the hysteresis: the real crossing still fires.
    for _ in 0..3 {
        app.put("Q", b"x");
    }
    assert_eq!(wait_lines(&env, "fired.txt", 3)[2], "Q persistent 5m 5m high");
    let log = firings(&env, Some("Q"));
    assert_eq!(log.iter().map(|r| r.test).collect::<Vec<_>>(), [true, true, false]);
    // No command, no queue, a failing command.
    env.c("qopen QS; qthtest PLAIN")
        .failed()
        .stderr_has("PLAIN has no persistent threshold command");
    env.c("qopen QS; qthtest -n Q2").failed().stderr_has("Q2");
    env.c("qopen QS; qthtest BAD").failed().stdout_has("failing").stderr_has("exit 4");
    assert!(firings(&env, Some("BAD"))[0].test);
}

/// The record of firings is kept on disk: it survives a restart.
#[test]
fn firing_records_survive_a_restart() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "1m", "0m")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    let before = wait_firings(&env, "Q", 1);
    env.c("qopen QS; qthtest Q").ok();
    let before_all = wait_firings(&env, "Q", 2);
    assert_eq!(before_all[0], before[0]);
    drop(app);
    daemon.signal("TERM");
    let _daemon = env.start_daemon(&[]);
    assert_eq!(firings(&env, Some("Q")), before_all);
}

/// A queue destroyed and created again under the same name starts armed, also after a
/// restart (the old queue's hysteresis state does not carry over).
#[test]
fn recreated_queue_starts_armed_after_a_restart() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "2m", "0m")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    app.put("Q", b"x");
    wait_lines(&env, "fired.txt", 1);
    drop(app);
    env.c(&format!(
        "qopen QS; qdestroy -f -y Q; qcreate {}; qenqueue Q one",
        queue("Q", "2m", "0m")
    ))
    .ok();
    // Above the low mark at the restart: only its own (armed) state may count.
    daemon.signal("TERM");
    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    assert_eq!(wait_lines(&env, "fired.txt", 2)[1], "Q persistent 2m 2m high");
}

/// Messages enqueued in a transaction count only once it commits: the commit that crosses
/// fires once, with the usage it reached; a rolled-back transaction changes nothing.
#[test]
fn only_committed_messages_count() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "3m", "0m")]);
    let run =
        env.c("qopen QS; begin; qenqueue Q a; qenqueue Q b; qenqueue Q c; qenqueue Q d; abort");
    run.ok();
    assert_crossings(&daemon, "Q", 0);
    env.c("qopen QS; begin; qenqueue Q a; qenqueue Q b; qenqueue Q c; qenqueue Q d; commit").ok();
    assert_crossings(&daemon, "Q", 1);
    wait_firings(&env, "Q", 1);
    assert_eq!(lines(&env, "fired.txt"), ["Q persistent 3m 4m high"]);
}

/// Stopping the daemon kills threshold commands still running (their whole process group):
/// none outlives the daemon by up to its time limit.
#[test]
fn daemon_stop_kills_running_commands() {
    let env = Env::new();
    let marker = sleep_marker(1000, 18);
    let _cleanup = KillMarked(marker.clone());
    // A compound command: the sleep is a grandchild of the daemon.
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the command is running", || running(&marker));
    drop(app);
    let now = firings(&env, Some("Q"));
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].outcome, "running", "qthlog shows a command while it runs");
    env.c("qopen QS; qthlog Q").ok().stdout_has("running | -\n");
    env.c("daemon stop").ok();
    eventually("the command is gone", || !running(&marker));
    // After a restart the firing is still there, marked as cut short by the daemon's end.
    let after = firings(&env, Some("Q"));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].outcome, "cut short: the daemon stopped while it ran");
    assert_eq!(after[0].command, format!("{marker}; true"));
}

/// A command that a `kill -9`ed qmd left running and that ended on its own before the next
/// qmd started is recorded as not seen to end (not as cut short by a stop that never
/// happened), with no duration.
#[test]
fn a_command_that_ended_while_no_qmd_ran_is_not_seen_to_end() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    let command = "touch started; while [ ! -e go ]; do sleep 0.05; done; touch done";
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{command}'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the command started", || env.path("started").exists());
    // Acknowledged after the firing was recorded as running: that record is on disk.
    app.put("Q", b"y");
    drop(app);
    daemon.signal("KILL");
    std::fs::write(env.path("go"), "").unwrap();
    eventually("the command ended on its own", || env.path("done").exists());
    let _daemon = env.start_daemon(&[]);
    let after = firings(&env, Some("Q"));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].outcome, qm_common::protocol::FIRING_UNSEEN);
    env.c("qopen QS; qthlog Q").ok().stdout_has("it ended before the next qmd started | -\n");
}

/// A queue space unloaded (`ipcrm -f`) while its threshold command runs: the command goes
/// on, and its record says nobody saw it end (not that a stop cut it short).
#[test]
fn a_command_running_when_its_space_is_unloaded_is_not_seen_to_end() {
    let env = Env::new();
    let marker = sleep_marker(1000, 19);
    let _cleanup = KillMarked(marker.clone());
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the command is running", || running(&marker));
    drop(app);
    env.c("ipcrm -f -y QS").ok();
    let after = firings(&env, Some("Q"));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].outcome, qm_common::protocol::FIRING_UNLOADED);
    assert!(running(&marker), "the command goes on after the unload");
}

/// The persistent and the non-persistent limits of one queue keep their own hysteresis:
/// each fires at its own crossing, and re-arming one does not re-arm the other.
#[test]
fn the_two_limit_sets_of_a_queue_are_independent() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&[]);
    let np_cmd = LOG.trim_matches('\'');
    setup(&env, 200, &[&format!("-n '100b,0b,{np_cmd}' {}", queue("Q", "300b", "0b"))]);
    let mut app = App::connect(&env);
    app.put_np("Q", &body(100));
    assert_eq!(wait_lines(&env, "fired.txt", 1), ["Q nonpersistent 100b 100b high"]);
    app.put("Q", &body(300));
    assert_eq!(wait_lines(&env, "fired.txt", 2)[1], "Q persistent 300b 300b high");
    // Taking the non-persistent message re-arms only the non-persistent set.
    app.take("Q");
    app.put("Q", &body(10));
    app.put_np("Q", &body(150));
    assert_eq!(wait_lines(&env, "fired.txt", 3)[2], "Q nonpersistent 100b 150b high");
    let counts = (crossings(&daemon, "Q", "persistent"), crossings(&daemon, "Q", "nonpersistent"));
    assert_eq!(counts, (1, 2));
    wait_firings(&env, "Q", 3);
    assert_eq!(lines(&env, "fired.txt").len(), 3);
}

/// A command that starts something in the background (`&`) holding its output open: what
/// it printed is recorded, and the record comes while the job still runs (it is not waited
/// for), the job being left running (operators may start things that way).
#[test]
fn output_is_kept_when_the_command_leaves_a_background_job() {
    let env = Env::new();
    let marker = sleep_marker(1000, 20);
    let _cleanup = KillMarked(marker.clone());
    setup(&env, 200, &[&format!("BG fifo none 0 0 100% 0% 'echo hi; {marker} &'")]);
    let record: qm_common::protocol::FiringRecord = env.json("qopen QS; qthtest BG");
    assert!(running(&marker), "the record came while the background job still ran");
    assert_eq!((record.exit, record.output.as_str()), (Some(0), "hi"), "{record:#?}");
}

/// Bad `-n` limits name the non-persistent set, and a number that is not one says what a
/// limit is: a whole number from 0 to the maximum followed by a unit. Nothing is created.
#[test]
fn bad_nonpersistent_limits_name_the_set_and_the_range() {
    let env = Env::new();
    setup(&env, 200, &[]);
    let cases = [
        (
            "-n '10m,0m,x' Q fifo none 0 0 100% 0% ''",
            "Non-persistent (-n) high limit: '10m' is invalid; the unit must be one of b (bytes), B (blocks) or % (percent)",
        ),
        (
            "-n '10b,x,' Q fifo none 0 0 100% 0% ''",
            "Non-persistent (-n) reset (low) limit: 'x' is invalid; it must be a whole number from 0 to 18446744073709551615 followed by b, B or %",
        ),
        (
            "Q fifo none 0 0 -5m 0m ''",
            "High limit: '-5m' is invalid; it must be a whole number from 0 to 18446744073709551615 followed by b, B, % or m",
        ),
        (
            "Q fifo none 0 0 99999999999999999999999m 0m ''",
            "High limit: '99999999999999999999999m' is invalid; it must be a whole number from 0 to 18446744073709551615",
        ),
    ];
    for (args, why) in cases {
        env.c(&format!("qopen QS; qcreate {args}")).failed().stderr_has(why);
    }
    let listing: qm_common::queue::QueueListing = env.json("qopen QS; qinfo");
    assert!(listing.queues.iter().all(|q| q.def.name != "Q"), "nothing was created");
}

/// Removes what qmd writes when `queue`'s persistent limit is crossed (the limit's state and
/// the firings), leaving the messages: the device as a crash between the commit that
/// crossed the limit and the commit recording it leaves it. Only with no daemon running.
fn forget_crossing(device: &std::path::Path, queue: &str) {
    use redb::ReadableTable;
    let tables = qm_daemon::storage::tables::QueueSpaceTables::new("QS");
    let db = redb::Database::open(device).expect("open the device");
    let txn = db.begin_write().unwrap();
    {
        let mut state = txn.open_table(tables.state()).unwrap();
        let key = format!("thr:{queue}:persistent");
        assert!(state.remove(key.as_str()).unwrap().is_some(), "the crossing was recorded");
        let mut firings = txn.open_table(tables.firings()).unwrap();
        let numbers: Vec<u64> = firings.iter().unwrap().map(|r| r.unwrap().0.value()).collect();
        for n in numbers {
            firings.remove(n).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A crossing the daemon could not record before it stopped (it died between the commit
/// that crossed the limit and the one recording it) fires when the queue space is next
/// loaded, exactly once: the restart after that does not fire it again.
#[test]
fn a_crossing_not_recorded_before_a_crash_fires_at_the_next_start() {
    let env = Env::new();
    let mut daemon = env.start_traced_daemon(&[]);
    setup(&env, 200, &[&queue("Q", "3m", "0m")]);
    let mut app = App::connect(&env);
    for _ in 0..3 {
        app.put("Q", b"x");
    }
    wait_firings(&env, "Q", 1);
    drop(app);
    env.c("daemon stop").ok();
    daemon.wait();
    forget_crossing(&env.device, "Q");
    // Loading the queue space finds Q above its high mark and armed: it fires. (The log
    // file is the same across restarts: its count is of every daemon.)
    let mut daemon = env.start_traced_daemon(&[]);
    env.c("qopen QS").ok();
    assert_crossings(&daemon, "Q", 2);
    let record = wait_firings(&env, "Q", 1).remove(0);
    assert_eq!((record.usage.as_str(), record.exit), ("3m", Some(0)), "{record:#?}");
    assert_eq!(lines(&env, "fired.txt"), ["Q persistent 3m 3m high"; 2]);
    // Now recorded: the next start does not fire it again.
    env.c("daemon stop").ok();
    daemon.wait();
    let daemon = env.start_traced_daemon(&[]);
    env.c("qopen QS").ok();
    assert_crossings(&daemon, "Q", 2);
    assert_eq!(firings(&env, Some("Q")).len(), 1);
}
