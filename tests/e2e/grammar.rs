//! The line grammar and the session: comments, shell escapes, echo, `-c` sessions, exit
//! status, help, and confirmations answered by the next line of a script.

use crate::support::Env;
use qm_common::device::DeviceListing;
use qm_common::queue::QueueListing;

/// `help CMD` piped: the usage line, the explanation, then each option and argument on one
/// line of its own with its meaning, then an example that really runs. `--json` gives the
/// same list and example; `help all` has every command's example.
#[test]
fn help_lists_options_and_an_example() {
    let env = Env::new();
    let spec = qm_shell::catalog::lookup("qspacecreate").unwrap();
    let run = env.c("help qspacecreate");
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], spec.usage());
    assert!(lines[1].starts_with("    Creates a queue space of PAGES pages"), "{}", run.stdout);
    assert_eq!(lines[2], "    Options:");
    let listed = |name: &str, meaning: &str| {
        lines.iter().any(|l| {
            l.strip_prefix("      ")
                .and_then(|l| l.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with("  ") && rest.trim_start() == meaning)
        })
    };
    for (name, meaning) in spec.arguments {
        assert!(listed(name, meaning), "{name} is not one line of its own:\n{}", run.stdout);
    }
    assert!(listed(
        "-n nonpersistent_msg_memory[b,B]",
        "memory for non-persistent messages: N or NB blocks, Nb bytes rounded down to whole pages (default 0: non-persistent enqueues are refused)"
    ));
    assert!(listed(
        "blocking",
        "Tuxedo's blocking factor in pages, 1 to 4096 (default 16): kept and shown by qspacelist, with no other effect"
    ));
    let arguments = lines.iter().position(|l| *l == "    Arguments:").expect("an argument list");
    assert!(lines[arguments + 1].starts_with("      queue_space_name  "), "{}", run.stdout);
    let example = lines.iter().position(|l| *l == "    Example:").expect("an example");
    assert_eq!(lines.len(), example + 2, "the example ends the help: {}", run.stdout);
    let line = lines[example + 1].strip_prefix("      ").expect("the example, indented");
    assert_eq!(line, "qspacecreate QSPACE 62062 5000 10 20 20 10000 ERRQ y 16");
    // The example is a real command line.
    env.c(&format!("crdl {} 0 6000; {line}", env.dev())).ok();
    let run = env.c("qspl QSPACE --json");
    let info: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(info["params"]["ipc_key"], 62062);

    let run = env.c("help --json qspc");
    let help: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(help["example"], line);
    let options = help["options"].as_array().expect("options");
    assert_eq!(options.len(), spec.arguments.len());
    assert_eq!(options[0]["name"], "-A actions");
    assert_eq!(options[0]["meaning"], spec.arguments[0].1);
    assert_eq!(options.last().unwrap()["name"], "blocking");
    // A command without options or arguments has an empty list and still an example.
    let run = env.c("help --json abort");
    let help: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(
        (help["options"].as_array().map(Vec::len), &help["example"]),
        (Some(0), &"abort".into())
    );
    env.c("help abort")
        .ok()
        .stdout_lacks("Options:")
        .stdout_lacks("Arguments:")
        .stdout_has("    Example:\n      abort\n");

    let all = env.c("help all");
    for spec in qm_shell::catalog::COMMANDS {
        all.stdout_has(&format!("    Example:\n      {}\n", spec.example));
    }
}

/// `# comments` are ignored; `!cmd` runs a shell command and `!!` repeats it.
#[test]
fn comments_and_shell_escapes() {
    let env = Env::new();
    env.with_device();
    let marker = env.path("ran");
    let run = env.script(&format!(
        "# a comment: lidl would list the device\n   # indented comment\n!echo hi\n!!\n!echo again >> {m}\n!!\nlivtoc\n",
        m = marker.display()
    ));
    run.ok().stdout_lacks("Device list on").stdout_has("Volume Table of Contents");
    assert_eq!(run.stdout.matches("hi\n").count(), 2, "{}", run.stdout);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "again\nagain\n");
    env.script("!!\n").failed().stderr_has("No previous shell command to repeat");
}

/// `echo` on puts each command line in the transcript after its prompt; off stops it.
#[test]
fn echo_shows_command_lines() {
    let env = Env::new();
    env.with_device();
    let run = env.script("echo\nlidl\necho off\nlivtoc\ne on\nv\n");
    run.ok()
        .stdout_has("Echo mode is now on")
        .stdout_has("> lidl\nDevice list on")
        .stdout_has("> echo off\nEcho mode is now off")
        .stdout_lacks("> livtoc\n")
        .stdout_has("> v\nVerbose mode is now on");
    // Without echo nothing is repeated.
    env.script("lidl\n").ok().stdout_lacks("> lidl\n");
}

/// `-c` runs its commands as one session: the space opened first stays open.
#[test]
fn c_is_one_session() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 \"\" n 16").ok();
    env.c("qopen QS; qcr Q1 fifo none 0 0 100% 0% \"\"; qcr Q2 fifo none 0 0 100% 0% \"\"; qinfo")
        .ok()
        .stdout_has("Q1")
        .stdout_has("Q2");
    let listing: QueueListing = env.json("qopen QS; qinfo");
    assert_eq!(listing.qspace, "QS");
    assert_eq!(listing.queues.len(), 2);
    // Each -c is a new session: nothing is open at its start.
    env.c("qinfo").failed().stderr_has("Queue space must be opened first");
    // Quoted semicolons do not split commands.
    env.c("qopen QS; qcr Q3 fifo none 0 0 100% 0% \"echo a; echo b\"").ok();
    let listing: QueueListing = env.json("qopen QS; qinfo Q3");
    assert_eq!(listing.queues[0].def.threshold.command, "echo a; echo b");
}

/// Exit status 0 only when every command succeeded; a failure anywhere makes it 1, and
/// the commands after it still run.
#[test]
fn exit_status() {
    let env = Env::new();
    env.with_device();
    env.c("lidl; livtoc").ok();
    env.script("lidl\nlivtoc\nquit\n").ok();
    env.c("lidl; nosuch; livtoc").failed().stdout_has("Volume Table of Contents");
    env.c("nosuch; lidl").failed().stdout_has("Device list on");
    env.script("lidl\nlidl 7\nlivtoc\n")
        .failed()
        .errors_are(&["Device list entry 7 does not exist"])
        .stdout_has("Volume Table of Contents");
    // quit ends the script: later lines do not run.
    env.script("quit\nnosuch\n").ok();
    // A warning is not a failure.
    env.script("qclose\n").ok().stderr_has("WARN: No queue space is currently open");
}

/// `help` lists every command's syntax; `help CMD` (name or abbreviation) explains one;
/// `help all` explains all; an unknown command fails.
#[test]
fn help() {
    let env = Env::new();
    let run = env.c("help");
    run.ok().stdout_has("'help command' explains one");
    for spec in qm_shell::catalog::COMMANDS {
        run.stdout_has(&spec.usage());
    }
    run.stdout_has("qspacecreate (qspc) [-A actions]").stdout_has("! shellcommand, !!");
    env.c("help qcr")
        .ok()
        .stdout_has("qcreate (qcr) [-d persist|nonpersist]")
        .stdout_has("Creates a queue in the open queue space");
    env.c("h qspds").ok().stdout_has("qspacedestroy (qspds) [-f] [-y] [queue_space_name]");
    env.c("help daemon").ok().stdout_has("daemon [status|stop|reload]");
    let all = env.c("help all");
    all.ok()
        .stdout_has("Creates a queue in the open queue space")
        .stdout_has("Destroys a queue space");
    assert!(all.stdout.lines().count() > run.stdout.lines().count());
    env.c("help nosuch").failed().stderr_has("ERROR: Command nosuch not found");
    // Commands Tuxedo does not abbreviate have no abbreviation here either.
    env.c("help qi").failed().stderr_has("Command qi not found");
}

/// Confirmation prompts (dsdl, qdestroy, ipcrm -f) take the next line of a script: `n`
/// keeps things and warns, `y` goes ahead; the answers never run as commands.
#[test]
fn confirmations_read_the_next_line() {
    let env = Env::new();
    env.with_device();
    let fs = env.path("FS").display().to_string();
    env.c(&format!("crdl {fs} 0 100; qspc QS 40000 100 4 2 2 100 \"\" n 16")).ok();
    let run = env.script(
        "dsdl 1\nn\nqopen QS\nqcr Q fifo none 0 0 100% 0% \"\"\nqds Q\nn\nipcrm -f QS\nn\nqinfo Q\n",
    );
    run.ok()
        .stderr_has("WARN: Device not destroyed")
        .stderr_has("WARN: Queue not destroyed")
        .stderr_has("WARN: IPC resources not removed")
        .stderr_lacks("Command n not found");
    assert_eq!(run.stdout.matches("Are you sure? [y, n] ").count(), 3);
    assert_eq!(env.json::<DeviceListing>("lidl").entries.len(), 2);
    assert_eq!(env.json::<QueueListing>("qopen QS; qinfo").queues.len(), 1);
    assert!(std::path::Path::new(&fs).exists());

    let run = env.script("dsdl 1\ny\nqopen QS\nqds Q\ny\nipcrm -f QS\nY\nqinfo\n");
    run.failed()
        .errors_are(&["Queue space must be opened first"])
        .stdout_has("Device list entry 1 (")
        .stdout_has("IPC resources of queue space QS removed")
        .stderr_lacks("Command y not found");
    assert_eq!(env.json::<DeviceListing>("lidl").entries.len(), 1);
    assert!(env.json::<QueueListing>("qopen QS; qinfo").queues.is_empty());
    assert!(!std::path::Path::new(&fs).exists());
    // Prompted values and the confirmation in one go.
    env.script("qspds\nQS\ny\n").ok().stdout_has("Queue space QS destroyed");
    env.c("qspl QS").failed().stderr_has("Queue space QS does not exist");
}

/// In a script a shell escape cannot read the script's lines, a bare `!` is refused, and a
/// failing shell command is only warned about; `help` explains these line forms.
#[test]
fn shell_escapes_in_scripts() {
    let env = Env::new();
    env.with_device();
    env.script("!cat\nlivtoc\n").ok().stdout_has("Volume Table of Contents");
    env.script("!\nlivtoc\n")
        .failed()
        .stderr_has("! needs a command when the commands do not come from a terminal")
        .stdout_has("Volume Table of Contents");
    // As in Tuxedo, a shell command's exit status does not fail the script.
    env.c("!exit 3; livtoc")
        .ok()
        .stderr_has("WARN: Shell command 'exit 3' exited with status 3")
        .stdout_has("Volume Table of Contents");
    env.c("!true").ok();
    env.c("help !").ok().stdout_has("Runs shellcommand with sh -c");
    env.c("help !!").ok().stdout_has("Runs the last shell command again");
    env.c("help '#'").ok().stdout_has("is ignored");
    env.c("help all").ok().stdout_has("Runs shellcommand").stdout_has("qspacecreate");
}

/// With `--json`, standard output is exactly one JSON document per listing: notes such as
/// "not open" or "no queues defined" and mode changes go to standard error.
#[test]
fn json_output_is_only_json() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QN 40000 100 4 2 2 100 '' n 16").ok();
    let mut cmd = env.qmadmin_cmd();
    cmd.arg("--json").arg("-c").arg("ipcs QN");
    env.run_stdin(cmd, "").stderr_has("No IPC resources: queue space QN is not open");
    for commands in [
        "ipcs QN",
        "qopen QN; qinfo",
        "v; lidl",
        "qopen QN; qinfo --json",
        // Initializing extents shows progress dots: on standard error here.
        "v; qspc QX 40100 100 3 2 2 10 '' y 16; qspl QX",
    ] {
        let mut cmd = env.qmadmin_cmd();
        if !commands.ends_with("--json") {
            cmd.arg("--json");
        }
        cmd.arg("-c").arg(commands);
        let run = env.run_stdin(cmd, "");
        run.ok();
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&run.stdout);
        assert!(parsed.is_ok(), "{commands}: stdout is not one JSON document: {:?}", run.stdout);
    }
}

/// Optional prompts left at the end of a one-line command or script take their defaults;
/// required ones still fail.
#[test]
fn end_of_input_takes_defaults_of_optional_prompts() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS3 32769 100 3 3 3 12").ok();
    let info: qm_common::qspace::QueueSpaceInfo = env.json("qspl QS3");
    assert_eq!((info.params.error_queue.as_str(), info.params.blocking), ("", 16));
    env.c("qspc QS4 32770 100")
        .failed()
        .stderr_has("end of input while waiting for: Number of queues in queue space:");
    env.c("qspl QS4").failed().stderr_has("Queue space QS4 does not exist");
}

/// A reader that goes away early (`qmadmin ... | head -1`) ends qmadmin quietly, without
/// a panic message.
#[test]
fn closed_output_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    env.with_device();
    let mut cmd = env.qmadmin_cmd();
    // Far more than a pipe holds, so that qmadmin is still writing when the reader goes.
    cmd.arg("-c").arg(vec!["help all"; 40].join("; "));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn qmadmin");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).unwrap();
    // The reader is dropped here: the rest of the output has nowhere to go.
    let run = crate::support::wait_with_timeout(
        child,
        "qmadmin -c 'help all' x 40",
        std::time::Duration::from_secs(30),
    );
    assert!(!first.is_empty());
    run.stderr_lacks("panicked");
}

/// A relative device (QMCONFIG or the argument) is refused before anything is started.
#[test]
fn relative_device_is_refused() {
    let env = Env::new();
    let mut cmd = env.qmadmin_cmd();
    cmd.env("QMCONFIG", "QUE").arg("-c").arg("lidl");
    env.run_stdin(cmd, "")
        .failed()
        .stderr_has("QMCONFIG must be an absolute path name ('QUE' is relative)");
    let mut cmd = env.qmadmin_cmd();
    cmd.arg("sub/QUE").arg("-c").arg("lidl");
    env.run_stdin(cmd, "")
        .failed()
        .stderr_has("The device must be an absolute path name ('sub/QUE' is relative)");
    assert!(!env.socket().exists() && !env.path("QUE.log").exists(), "no daemon was started");
}
