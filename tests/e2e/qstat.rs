//! `qstat`: the live view of a queue space, as a script or a program reads it (`--once`,
//! `--json`): counts of ready, waiting, retrying and held messages, the threshold state,
//! the forwarders running, rates, and a refusal for a queue space that is not loaded.

use crate::app::{App, PARAMS, setup};
use crate::support::Env;
use qm_common::message::{DequeueCtl, EnqueueCtl, TimeSpec};
use std::os::unix::fs::PermissionsExt;

/// Every column tells what it says: three ready messages (one then taken by an open
/// transaction), one not available for an hour, one in its retry delay, a fired threshold,
/// a forwarder idle on its queue.
#[test]
fn qstat_counts_what_holds_messages() {
    let env = Env::new();
    setup(
        &env,
        "",
        PARAMS,
        &[
            "ERRQ fifo none 0 0 100% 0% ''",
            "Q fifo none 2 3600 3m 0m 'true'",
            "LATER fifo none 0 0 100% 0% ''",
            "W fifo none 0 0 100% 0% ''",
        ],
    );
    env.stop_daemon();
    let config = env.path("QUE.toml");
    let forwarder = "[[forwarder]]\nid = 7\nqspace = \"QS\"\nclopt = \"-- -i 60 -q W\"\nboot = true\n\n[service.W]\ncommand = \"cat\"\n";
    std::fs::write(&config, forwarder).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    for body in ["a", "b", "c", "d"] {
        app.put("Q", body);
    }
    // One back after a rolled-back dequeue: an hour of retry delay.
    app.begin(None).unwrap();
    app.take("Q");
    app.abort().unwrap();
    // One held by a transaction still open.
    app.begin(None).unwrap();
    app.take("Q");
    let later = EnqueueCtl { available: Some(TimeSpec::Relative(3600)), ..Default::default() };
    // Another session: the open transaction would hold this enqueue uncommitted.
    App::connect(&env).put_with("LATER", "not yet", later);
    let view: serde_json::Value = env.json("qstat --json QS");
    let queue = |name: &str| {
        view["queues"].as_array().unwrap().iter().find(|q| q["queue"] == name).cloned().unwrap()
    };
    let q = queue("Q");
    assert_eq!((q["messages"].as_u64(), q["ready"].as_u64()), (Some(4), Some(2)), "{q}");
    assert_eq!((q["waiting"].as_u64(), q["retrying"].as_u64()), (Some(1), Some(1)), "{q}");
    assert_eq!(q["held"], 1, "{q}");
    assert!(q["threshold"].as_str().unwrap().starts_with("fired at "), "{q}");
    assert!(q["enqueued_per_sec"].is_number() && q["dequeued_per_sec"].is_number(), "{q}");
    let later = queue("LATER");
    assert_eq!((later["waiting"].as_u64(), later["retrying"].as_u64()), (Some(1), Some(0)));
    assert_eq!(later["threshold"], "armed");
    assert_eq!(queue("W")["forwarders"], serde_json::json!([7]));
    assert!(view["sessions"].as_u64().unwrap() >= 2, "{view}");
    // The table, piped.
    let table = env.c("qopen QS; qstat").ok().stdout.clone();
    assert!(
        table.contains("QS at ") && table.contains("held") && table.contains("forwarders"),
        "{table}"
    );
    let row = table.lines().find(|l| l.trim_start().starts_with("Q ")).expect("a row for Q");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[..2], ["Q", "4"], "{row}");
    assert_eq!(&cells[6..9], ["1", "1", "1"], "{row}");
    app.commit().unwrap();
}

/// A queue space nothing has loaded has nothing moving: qstat says so and how to watch it.
#[test]
fn qstat_of_a_space_not_loaded_says_so() {
    let env = Env::new();
    setup(&env, "", PARAMS, &["ERRQ fifo none 0 0 100% 0% ''"]);
    env.c("qspc OTHER 40001 100 4 4 4 100 '' n 16").ok();
    env.c("qstat OTHER").failed().stderr_has("Queue space OTHER is not loaded");
    env.c("qstat").failed().stderr_has("Queue space must be opened first (qopen)");
    env.c("qstat NOSUCH").failed().stderr_has("NOSUCH");
}

/// Reading one message leaves it where it is (browse is all qstat needs).
#[test]
fn qstat_moves_nothing() {
    let env = Env::new();
    setup(&env, "", PARAMS, &["ERRQ fifo none 0 0 100% 0% ''", "Q fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("Q", "stay");
    env.c("qopen QS; qstat --once").ok().stdout_has("Q ");
    assert_eq!(app.dequeue("Q", &DequeueCtl::default()).unwrap().body, b"stay");
}
