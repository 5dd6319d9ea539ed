//! Old qmadmin scripts, as operators feed them: here-documents answering prompts line by
//! line, positional one-liners, and many short `echo ... | qmadmin` sessions in a row.

use crate::support::Env;
use qm_common::device::DeviceListing;
use qm_common::order::{SortKey, Tiebreak};
use qm_common::qspace::QueueSpaceInfo;
use qm_common::queue::QueueListing;
use qm_common::threshold::LimitUnit;

/// The manual's session: crdl, verbose lidl, qspacecreate answered prompt by prompt,
/// qopen and qcreate answered prompt by prompt, then the state checked through JSON.
#[test]
fn prompt_answer_here_document() {
    let env = Env::new();
    let dev = env.dev();
    let run = env.script(&format!(
        "crdl {dev} 0 2000\nv\nlidl\nqspacecreate\nmyqueuespace\n62839\n100\n6\n4\n4\n200\nerrq\n\n\nqopen myqueuespace\nqcreate\nservice1\nfifo\ntop,msgid\n1\n30\n100m\n50\n/usr/app/bin/mailadmin myqueuespace service1\nq\n"
    ));
    run.ok()
        .stdout_has(&format!("Created device {dev}, offset 0, size 2000 on {dev}"))
        .stdout_has("Verbose mode is now on")
        .stdout_has("free space map (1 entry used, 47 available)")
        .stdout_has(
            "Queue space name: IPC Key for queue space: Size of queue space in disk pages: ",
        )
        .stdout_has("Reset (low) limit for queue capacity warning [default=0m]: ")
        .stdout_has("Queue 'service1' created");
    let info: QueueSpaceInfo = env.json("qspl myqueuespace");
    assert_eq!(info.params.ipc_key, 62839);
    assert_eq!(info.total_pages, 100);
    assert_eq!(info.params.error_queue, "errq");
    assert_eq!(info.params.blocking, 16);
    let queues: QueueListing = env.json("qopen myqueuespace; qinfo service1");
    let def = &queues.queues[0].def;
    assert_eq!(def.order.tiebreak, Tiebreak::Fifo);
    assert!(def.out_of_order.top && def.out_of_order.msgid);
    assert_eq!((def.retries, def.retry_delay), (1, 30));
    assert_eq!(def.threshold.high.to_string(), "100m");
    assert_eq!(def.threshold.low.to_string(), "50m");
    assert_eq!(def.threshold.command, "/usr/app/bin/mailadmin myqueuespace service1");
}

/// Positional one-liners as the BEA and Packt scripts write them, single quotes included.
#[test]
fn positional_one_liners() {
    let env = Env::new();
    let dev = env.dev();
    env.script(&format!(
        "crdl {dev} 0 3000\nqspacecreate QSP_BANKAPP 88945 200 20 5 5 200 Q_ERROR 'y' 16\nqopen QSP_BANKAPP\nqcr Q_ERROR time none 0 0 100% 0% ''\nqcreate Q1 priority,time,lifo msgid 3 10 80% 10% \"mail admin\"\nqcreate Q2 fifo none 0 0 5m 0m \"\"\nqcreate -d nonpersist -n \"80%,10%,echo np\" -e +60 Q3 fifo none 0 0 100% 0 ''\n"
    ))
    .ok();
    let listing: QueueListing = env.json("qopen QSP_BANKAPP; qinfo");
    let names: Vec<&str> = listing.queues.iter().map(|q| q.def.name.as_str()).collect();
    assert_eq!(names, ["Q1", "Q2", "Q3", "Q_ERROR"]);
    let q1 = &listing.queues[0].def;
    assert_eq!(q1.order.keys, [SortKey::Priority, SortKey::Time]);
    assert_eq!(q1.order.tiebreak, Tiebreak::Lifo);
    assert_eq!(q1.threshold.command, "mail admin");
    let q3 = &listing.queues[2].def;
    assert_eq!(q3.delivery.to_string(), "nonpersist");
    assert_eq!(q3.expiration.to_string(), "+60");
    assert_eq!(q3.nonpersistent_threshold.command, "echo np");
    assert_eq!(q3.threshold.low.unit, LimitUnit::Percent, "a bare low takes the high's unit");
    let space: QueueSpaceInfo = env.json("qspl QSP_BANKAPP");
    assert!(space.params.initialize, "'y' in single quotes means yes");
}

/// Each `echo ... | qmadmin` is a fresh process: the first starts the daemon, the rest
/// reuse it, and `qopen` must be repeated in every session.
#[test]
fn many_short_piped_sessions() {
    let env = Env::new();
    let dev = env.dev();
    let first = env.script(&format!("crdl {dev} 0 1000\n"));
    first.ok().stderr_has("started qmd");
    env.script("qspc QS 40000 100 10 4 4 100 \"\" n 16\n").ok().stderr_lacks("started qmd");
    for i in 0..8 {
        env.script(&format!("qopen QS\nqcr Q{i} fifo none 0 0 100% 0% \"\"\n")).ok();
    }
    // Without qopen, queue commands refuse.
    env.script("qcr QX fifo none 0 0 100% 0% \"\"\n")
        .failed()
        .stderr_has("Queue space must be opened first");
    let listing: QueueListing = env.json("qopen QS; qinfo");
    assert_eq!(listing.queues.len(), 8);
}

/// Scripts delete the device and start over; the daemon must follow the new file.
#[test]
fn device_removed_and_recreated() {
    let env = Env::new();
    let dev = env.dev();
    env.script(&format!("crdl {dev} 0 1000\nqspc QS 40000 100 10 4 4 100 \"\" n 16\n")).ok();
    let run = env.script(&format!("ipcrm -y QS\n!rm -f {dev}\ncrdl {dev} 0 500\nlidl\n"));
    run.ok();
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].entry.size, 500);
    env.c("qspl QS").failed().stderr_has("Queue space QS does not exist");

    // A session that had a space open when its device file was replaced is told why its
    // space is gone, and the new device is served.
    let script = format!(
        "qspc QS 40000 100 10 4 4 100 \"\" n 16\nqopen QS\n!rm -f {dev}\ncrdl {dev} 0 300\nqinfo\nqinfo\nlidl\n"
    );
    env.script(&script)
        .failed()
        .errors_are(&[
            "Queue space QS was closed because the device file was removed or replaced",
            "Queue space must be opened first (qopen)",
        ])
        .stdout_has("Device list on");
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries[0].entry.size, 300);
}

/// A failed command does not stop the script, and the exit status reports it.
#[test]
fn failures_do_not_stop_scripts() {
    let env = Env::new();
    let dev = env.dev();
    let run = env.script(&format!("crdl {dev} 0 1000\nnosuchcommand\nqspc QS 1 100 10 4 4 100 \"\" n 16\nqspc QS 40000 100 10 4 4 100 \"\" n 16\n"));
    run.failed().stderr_has("ERROR: Command nosuchcommand not found").stderr_has(
        "IPC Key for queue space: '1' is invalid; it must be a whole number from 32769 to 262143",
    );
    assert_eq!(run.errors(), 2);
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(info.params.ipc_key, 40000);
}

/// A bad answer in the middle of a here-document's prompt answers fails the command once,
/// after it has read the rest of its answers: none of them runs as a command, and nothing
/// is created.
#[test]
fn bad_prompt_answer_keeps_the_script_in_step() {
    let env = Env::new();
    let dev = env.dev();
    env.c(&format!("crdl {dev} 0 1000; qspc QS 40000 100 4 4 4 100 '' n 16")).ok();
    let run = env.script(
        "qopen QS\nqcreate\nBADQ\nfifo,priority\nnone\n0\n0\n80%\n0%\n\nqspacecreate\nQ2\n40001\n0\n4\n4\n4\n100\n\n\n\nlivtoc\n",
    );
    run.failed().errors_are(&[
        "Queue order: 'fifo,priority' is invalid",
        "Size of queue space in disk pages: '0' is invalid",
    ]);
    run.stdout_has("Volume Table of Contents");
    env.c("qopen QS; qinfo BADQ").failed().stderr_has("BADQ");
    env.c("qspl Q2").failed().stderr_has("Queue space Q2 does not exist");
}

/// Quitting with a transaction open (`q`, the end of the input, the end of `-c`) rolls it
/// back, says so and exits 1; a committed transaction quits quietly with 0.
#[test]
fn quitting_with_an_open_transaction_warns_and_fails() {
    let env = Env::new();
    let dev = env.dev();
    env.c(&format!("crdl {dev} 0 1000; qspc QS 40000 100 4 4 4 100 '' n 16")).ok();
    env.c("qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    for end in ["q\n", ""] {
        let run = env.script(&format!("qopen QS\nbegin\nqenqueue Q held\n{end}"));
        run.failed().stderr_has("WARN: transaction ").stderr_has(" rolled back");
        assert_eq!(run.errors(), 0, "every command succeeded: {}", run.stderr);
    }
    env.c("qopen QS; begin; qenqueue Q held").failed().stderr_has(" rolled back");
    env.c("qopen QS; begin; qenqueue Q kept; commit; q").ok().stderr_lacks("rolled back");
    let listing: QueueListing = env.json("qopen QS; qinfo Q");
    assert_eq!(listing.queues[0].usage.persistent_messages, 1, "only the committed message");
}

/// In a script, the line after a command that confirms is always its answer: also when the
/// command is refused before asking, or (`qcq` to the queue itself) has nothing to do.
#[test]
fn confirmation_answers_stay_answers_when_a_change_is_refused() {
    let env = Env::new();
    let dev = env.dev();
    env.c(&format!("crdl {dev} 0 1000; qspc QS 40000 100 4 4 4 100 '' n 16")).ok();
    env.c("qopen QS; qcr PQ fifo none 0 0 100% 0% ''; qenqueue PQ one").ok();
    let run = env.script("dsdl 0\ny\nqopen QS\nqset PQ\nqcq PQ\ny\nqcq NOSUCH\ny\nlivtoc\n");
    run.failed().errors_are(&["holds extents of queue space QS", "NOSUCH"]);
    run.stderr_has("WARN: Queue change - new queue name PQ matches old queue name");
    run.stdout_has("Volume Table of Contents");
}

/// `qmadmin --json` with commands on standard input writes JSON Lines on standard output:
/// no banner, no prompts, one document per line for each listing, `help` included; notes
/// go to standard error.
#[test]
fn json_from_standard_input_is_json_lines() {
    let env = Env::new();
    let dev = env.dev();
    env.c(&format!("crdl {dev} 0 1000; qspc QSPACE 40000 100 4 4 4 100 ERRQ n 16")).ok();
    env.c("qopen QSPACE; qcr ERRQ fifo none 0 0 100% 0% ''").ok();
    let mut cmd = env.qmadmin_cmd();
    cmd.arg("--json");
    let run = env.run_stdin(cmd, "qopen QSPACE\nqinfo ERRQ\necho\nhelp\nhelp qopen\nqspl\n\n");
    run.ok().stderr_has("QMCONFIG=").stderr_has("Echo mode is now on");
    let docs: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert_eq!(docs.len(), 4, "one line per listing: {}", run.stdout);
    assert_eq!(docs[0]["queues"][0]["def"]["name"], "ERRQ");
    assert!(docs[1].as_array().is_some_and(|a| a.iter().any(|c| c["name"] == "qcreate")));
    assert_eq!(docs[2]["name"], "qopen");
    assert!(docs[2]["help"].is_string(), "{}", docs[2]);
    assert_eq!(docs[3]["params"]["name"], "QSPACE");
}
