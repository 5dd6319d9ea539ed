//! Bad input: every refused command names the field and what is allowed, changes nothing,
//! makes the exit status 1, and does not stop the commands after it.

use crate::support::{Env, Run};
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::qspace::QueueSpaceInfo;
use qm_common::queue::QueueListing;

/// Everything `lidl`, `livtoc` and `qspl` report, to compare before and after.
fn device_state(
    env: &Env,
    spaces: &[&str],
) -> (DeviceListing, Vec<VtocEntry>, Vec<QueueSpaceInfo>) {
    let spaces = spaces.iter().map(|s| env.json(&format!("qspl {s}"))).collect();
    (env.json("lidl"), env.json("livtoc"), spaces)
}

/// A device of 2000 pages with queue space QS (100 pages, 2 queues, IPC key 40000).
fn with_qspace() -> Env {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 2 4 4 100 \"\" n 16").ok();
    env
}

/// The last command of a script ran: `livtoc` printed its table.
#[track_caller]
fn later_commands_ran(run: &Run) {
    run.stdout_has("Volume Table of Contents on");
}

/// Out-of-range and malformed queue space parameters, in a script: one clear error each,
/// exit status 1, the final command still runs, and the device is as before.
#[test]
fn queue_space_parameters() {
    let env = with_qspace();
    let before = device_state(&env, &["QS"]);
    let long = "A".repeat(16);
    let script = format!(
        "qspc B 32768 100 2 2 2 10 \"\" n 16
qspc B 262144 100 2 2 2 10 \"\" n 16
qspc B key 100 2 2 2 10 \"\" n 16
qspc B 40000 100 2 2 2 10 \"\" n 16
qspc {long} 40001 100 2 2 2 10 \"\" n 16
qspc B 40001 5000 2 2 2 10 \"\" n 16
qspc B 40001 8 8 2 2 10 \"\" n 16
qspc B 40001 100 0 2 2 10 \"\" n 16
qspc B 40001 100 2 0 2 10 \"\" n 16
qspc B 40001 100 2 2 0 10 \"\" n 16
qspc B 40001 100 2 2 2 0 \"\" n 16
qspc B 40001 100 2 2 2 10 \"\" n 0
qspacecreate
B
32768
100
2
2
2
10



livtoc
"
    );
    let run = env.script(&script);
    run.failed().errors_are(&[
        "IPC Key for queue space: '32768' is invalid; it must be a whole number from 32769 to 262143",
        "IPC Key for queue space: '262144' is invalid; it must be a whole number from 32769 to 262143",
        "IPC Key for queue space: 'key' is invalid; it must be a whole number from 32769 to 262143",
        "IPC Key for queue space: 40000 is already used by queue space QS",
        &format!("Queue space name: '{long}' is invalid; at most 15 characters are allowed"),
        // 2000 pages minus 35 for the VTOC and UDL minus QS's 100.
        "Size of queue space in disk pages: 5000 pages do not fit; the largest free run on the device is 1865 pages",
        "Size of queue space in disk pages: '8' is invalid; it must be at least 12 (one page plus one per queue",
        "Number of queues in queue space: '0' is invalid; it must be a whole number from 1 to 65535",
        "Number of concurrent transactions in queue space: '0' is invalid; it must be a whole number from 1 to 65535",
        "Number of concurrent processes in queue space: '0' is invalid; it must be a whole number from 1 to 65535",
        "Number of messages in queue space: '0' is invalid; it must be a whole number from 1 to",
        "Blocking factor: '0' is invalid; it must be a whole number from 1 to 4096",
        // The same check when the value is answered at the prompt, once every answer is read.
        "IPC Key for queue space: '32768' is invalid",
    ]);
    later_commands_ran(&run);
    assert_eq!(device_state(&env, &["QS"]), before, "refused commands change nothing");
    env.c("qspl B").failed().stderr_has("Queue space B does not exist");
}

/// Device list entries: too long or relative paths, overlaps, a size of 0, and the 26th
/// entry.
#[test]
fn device_entries() {
    let env = Env::new();
    env.with_device();
    let fs = env.path("FS").display().to_string();
    env.c(&format!("crdl {fs} 0 10")).ok();
    let before = device_state(&env, &[]);
    let dir = env.dir.path().display().to_string();
    let long = format!("{dir}/{}", "d".repeat(64 - dir.len()));
    assert_eq!(long.len(), 65);
    let dev = env.dev();
    let run = env.script(&format!(
        "crdl {long} 0 10\ncrdl relative/path 0 10\ncrdl {dev} 1500 100\ncrdl {fs} 5 10\ncrdl {fs} 20 0\ncrdl {fs} x 10\ncrdl -p 100 {fs} 20 10\ncrdl -p 3000 {fs} 20 10\nlivtoc\n"
    ));
    run.failed().errors_are(&[
        &format!("Device name: '{long}' is invalid; at most 64 characters are allowed"),
        "Device name: 'relative/path' is invalid; it must be an absolute path",
        "Device offset: '1500' is invalid; pages 1500..1600 overlap entry 0 of the same file (pages 0..2000)",
        "Device offset: '5' is invalid; pages 5..15 overlap entry 1 of the same file (pages 0..10)",
        "Device size: '0' is invalid; it must be a whole number from 1 to",
        "Device offset: 'x' is invalid; it must be a whole number from 0 to",
        "Page size: '100' is invalid; it must be a power of two from 512 to 65536 bytes",
        "Page size: '3000' is invalid; it must be a power of two from 512 to 65536 bytes",
    ]);
    later_commands_ran(&run);
    assert_eq!(device_state(&env, &[]), before);
    assert!(!std::path::Path::new(&long).exists());

    // Entries 2..=24 fill the device list to its maximum of 25.
    let fill: Vec<String> = (1..24).map(|i| format!("crdl {fs} {} 10", i * 10)).collect();
    env.c(&fill.join("; ")).ok();
    let full = device_state(&env, &[]);
    assert_eq!(full.0.entries.len(), 25);
    let other = env.path("OTHER").display().to_string();
    env.script(&format!("crdl {fs} 1000 10\ncrdl {other} 0 10\nlivtoc\n"))
        .failed()
        .errors_are(&[
            "The device list is full: at most 25 entries",
            "The device list is full: at most 25 entries",
        ])
        .stdout_has("Volume Table of Contents on");
    assert_eq!(device_state(&env, &[]), full);
    assert!(!env.path("OTHER").exists(), "a refused entry creates no file");
}

/// Queue definitions: names, orders, out-of-order, limits, `-n`, `-e`, `-d`, duplicates
/// and the queue space's queue count.
#[test]
fn queue_definitions() {
    let env = with_qspace();
    let name = "q".repeat(128);
    let ok = "fifo none 0 0 100% 0% \"\"";
    let script = format!(
        "qopen QS
qcr {name} {ok}
qcr Q bogus none 0 0 100% 0% \"\"
qcr Q fifo,priority none 0 0 100% 0% \"\"
qcr Q fifo,lifo none 0 0 100% 0% \"\"
qcr Q fifo none,top 0 0 100% 0% \"\"
qcr Q fifo bottom 0 0 100% 0% \"\"
qcr Q fifo none 0 0 80% 10m \"\"
qcr Q fifo none 0 0 0m 0m \"\"
qcr Q fifo none 0 0 101% 0% \"\"
qcr Q fifo none 0 0 10m 10m \"\"
qcr Q fifo none 0 0 80 0 \"\"
qcr Q fifo none -1 0 100% 0% \"\"
qcr -n 10m,0m, Q {ok}
qcr -n 80% Q {ok}
qcr -e 30 Q {ok}
qcr -d disk Q {ok}
qcr Q1 {ok}
qcr Q1 {ok}
qcr Q2 {ok}
qcr Q3 {ok}
livtoc
"
    );
    let run = env.script(&script);
    run.failed().errors_are(&[
        &format!("Queue name: '{name}' is invalid; at most 127 characters are allowed"),
        "Queue order: 'bogus' is invalid; use a comma list of priority, time, expiration, with fifo or lifo only as the last element",
        "Queue order: 'fifo,priority' is invalid; fifo or lifo must be the last element",
        "Queue order: 'fifo,lifo' is invalid",
        "Out-of-ordering enqueuing: 'none,top' is invalid; none cannot be combined with top or msgid",
        "Out-of-ordering enqueuing: 'bottom' is invalid; use none, top, msgid or top,msgid",
        "Reset (low) limit: '10m' is invalid; the unit must match the high limit's unit (%)",
        "High limit: '0m' is invalid; it must be greater than 0",
        "High limit: '101%' is invalid; a percentage must be 1 to 100",
        "Reset (low) limit: '10m' is invalid; it must be less than the high limit (10m)",
        "High limit: '80' is invalid; the unit must be one of b (bytes), B (blocks), % (percent) or m (messages)",
        "Retries: '-1' is invalid; it must be a whole number from 0 to",
        "Non-persistent (-n) high limit: '10m' is invalid; the unit must be one of b (bytes), B (blocks) or % (percent)",
        "-n: '80%' is invalid; write nhigh,nlow,ncmd (the command may be empty, the commas are required)",
        "Default expiration: '30' is invalid; use +seconds (for example +3600) or none",
        "Delivery policy: 'disk' is invalid; use persist or nonpersist",
        "Create queue - duplicate queue name 'Q1'",
        "Create queue - no more queue entries (max = 2); queue space QS was created for 2 queues",
    ]);
    later_commands_ran(&run);
    let listing: QueueListing = env.json("qopen QS; qinfo");
    let names: Vec<&str> = listing.queues.iter().map(|q| q.def.name.as_str()).collect();
    assert_eq!(names, ["Q1", "Q2"], "only the valid queues exist");
}

/// Line grammar and command syntax: unknown commands and options, too many arguments,
/// unmatched quotes, `qdestroy -p -f`, and queue commands without `qopen`.
#[test]
fn commands_and_syntax() {
    let env = with_qspace();
    env.c("qopen QS; qcr Q fifo none 0 0 100% 0% \"\"").ok();
    let before = device_state(&env, &["QS"]);
    let run = env.script(
        "nosuch
qspds -x QS
qopen QS extra
qopen \"QS
qcr 'Q2 fifo
qinfo
qcr Q2 fifo none 0 0 100% 0% \"\"
qds -y Q
qchange Q none 0 0 100% 0% \"\"
qopen QS
qdestroy -p -f -y Q
livtoc
",
    );
    run.failed().errors_are(&[
        "Command nosuch not found",
        "Syntax - qspacedestroy (qspds) [-f] [-y] [queue_space_name] (invalid option -x)",
        "Syntax - qopen [queue_space_name] (too many arguments)",
        "No matching double quote",
        "No matching single quote",
        "Queue space must be opened first",
        "Queue space must be opened first",
        "Queue space must be opened first",
        "Queue space must be opened first",
        "qdestroy: -p and -f cannot be combined",
    ]);
    later_commands_ran(&run);
    assert_eq!(device_state(&env, &["QS"]), before);
    let listing: QueueListing = env.json("qopen QS; qinfo");
    assert_eq!(listing.queues.len(), 1, "queue Q is still there");
}

/// A queue command without `qopen` fails before it prompts: in a script the lines after it
/// are commands, not answers.
#[test]
fn queue_commands_without_qopen_do_not_prompt() {
    let env = with_qspace();
    let run = env.script("qcreate\nlidl\nqdestroy\nlivtoc\nqchange\nqspl QS\n");
    run.failed().errors_are(&[
        "Queue space must be opened first",
        "Queue space must be opened first",
        "Queue space must be opened first",
    ]);
    run.stdout_lacks("Queue name:")
        .stdout_has("Device list on")
        .stdout_has("Volume Table of Contents on")
        .stdout_has("Queue space QS");
}

/// Control characters in what was typed (an escape sequence that would clear the screen or
/// set the terminal's title, a bell) come back in errors and warnings as escapes, never raw:
/// an unknown command, bad values (in a script and in `-c`), a failing shell escape.
#[test]
fn control_characters_are_shown_as_escapes() {
    let env = with_qspace();
    let script = "\u{1b}[2Jfoo\nqopen QS\nqset \u{1b}]0;x\u{7}\ndaemon \u{1b}\n\
                  qenqueue -p \u{1b}[1m Q x\n!exit 3 # \u{1b}[0m\nlivtoc\n";
    let run = env.script(script);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(!run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{7}'), "{run:?}");
    run.stderr_has("ERROR: Command \\u{1b}[2Jfoo not found")
        .stderr_has("ERROR: Queue name: '\\u{1b}]0;x\\u{7}' is invalid")
        .stderr_has("ERROR: daemon: '\\u{1b}' is invalid")
        .stderr_has("ERROR: Priority: '\\u{1b}[1m' is invalid")
        .stderr_has("WARN: Shell command 'exit 3 # \\u{1b}[0m' exited with status 3");
    later_commands_ran(&run);
    let run = env.c("qopen QS; qset \u{1b}]0;x\u{7}; qcreate Q\u{9b}2J fifo");
    assert!(!run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{9b}'), "{run:?}");
    run.stderr_has("ERROR: Queue name: '\\u{1b}]0' is invalid")
        .stderr_has("ERROR: Command x\\u{7} not found")
        .stderr_has("ERROR: Queue name: 'Q\\u{9b}2J' is invalid");
}

/// Names with invisible formatting characters (a right-to-left override, a zero-width
/// space) are refused: `Q\u{202e}X` would be listed as `QX` spelled backwards, and a
/// zero-width space makes two names that look alike. Nothing is created.
#[test]
fn names_with_invisible_characters_are_refused() {
    let env = with_qspace();
    let run = env.c("qopen QS; qcreate \u{202e}Q fifo; qcreate Q\u{200b} fifo; qspc A\u{2066} 50000 100 1 1 1 10 '' n 1");
    assert!(!run.stderr.contains('\u{202e}') && !run.stderr.contains('\u{200b}'), "{run:?}");
    run.errors_are(&[
        "Queue name: '\\u{202e}Q' is invalid; invisible formatting characters are not allowed",
        "Queue name: 'Q\\u{200b}' is invalid; invisible formatting characters are not allowed",
        "Queue space name: 'A\\u{2066}' is invalid",
    ]);
    let run = env.c(&format!("crdl {}/X{}Y 0 100", env.dir.path().display(), '\u{202e}'));
    run.errors_are(&["Device name: "]).stderr_has("(found U+202E)");
    env.c("qopen QS; qinfo").ok().stdout_lacks("\u{202e}").stdout_lacks("\u{200b}");
}

/// What others put into listings (the first lines a threshold command printed, the program
/// name a client gave in its greeting) is shown with its control characters as escapes.
#[test]
fn listings_show_control_characters_as_escapes() {
    let env = Env::new();
    crate::auto::setup(&env, 200, &[r#"Q fifo none 0 0 1m 0m "printf '\\033[2Jcleared'""#]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = rt
        .block_on(qm_common::client::Client::connect_device(&env.device, "app\u{1b}]0;title\u{7}"))
        .unwrap();
    let ctl = qm_common::message::EnqueueCtl::default();
    rt.block_on(client.enqueue("QS", "Q", b"x", &ctl)).unwrap();
    crate::auto::wait_firings(&env, "Q", 1);
    let run = env.c("v; qopen QS; qthlog Q; ipcs QS");
    run.ok();
    assert!(!run.stdout.contains('\u{1b}') && !run.stdout.contains('\u{7}'), "{run:?}");
    run.stdout_has("\\u{1b}[2Jcleared").stdout_has("app\\u{1b}]0;title\\u{7}");
}

/// An input that is no script (`/dev/zero`: one endless line) is refused at the line
/// limit, rather than read until memory runs out, and is read no further. (qmadmin runs with
/// 1 GiB of address space, so that a reader without a bound fails here instead of
/// exhausting the machine.)
#[test]
fn an_endless_input_line_is_refused() {
    let env = with_qspace();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--as=1073741824").arg("--").arg(crate::support::QMADMIN);
    cmd.env("QMCONFIG", &env.device).env_remove("QM_SOCKET");
    let what = format!("{cmd:?}");
    cmd.stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("prlimit");
    let run = crate::support::wait_with_timeout(child, &what, std::time::Duration::from_secs(60));
    assert_eq!(run.status, 1, "{run:?}");
    run.errors_are(&["Input line 1 is longer than 16777216 bytes: this input is not a script"]);
}
