//! The interactive shell on a pseudo-terminal: prompt, exit, tab completion, history,
//! `<CR>` repeat, prompting and hints, as a person at a terminal sees them.
//!
//! rustyline redraws the line it edits (prompt included) and wraps output in escape
//! sequences, so these tests match substrings, consume the newline rustyline prints when a
//! line is accepted before looking for the next prompt, and never type ahead of a prompt.

use crate::support::{Env, QMADMIN};
use qm_common::qspace::QueueSpaceInfo;
use rexpect::process::WaitStatus;
use rexpect::session::{PtySession, spawn_command};
use std::path::PathBuf;
use std::process::Command;

/// How long any one expectation may wait.
const TIMEOUT_MS: u64 = 10_000;
/// The command prompt.
const PROMPT: &str = "> ";
const UP: &str = "\x1b[A";

/// A qmadmin session on a pty, gluon style: send a line, expect its output, expect the
/// prompt again.
struct Repl {
    session: PtySession,
    history: PathBuf,
}

impl Repl {
    /// Starts `qmadmin` for `env`'s device with history in `env`'s directory, and waits for
    /// the banner and the first prompt.
    fn start(env: &Env) -> Repl {
        Repl::start_with_pager(env, "cat")
    }

    /// Like [`Repl::start`], with `pager` as `$PAGER`.
    fn start_with_pager(env: &Env, pager: &str) -> Repl {
        Repl::start_in(env, Command::new(QMADMIN), pager)
    }

    /// Like [`Repl::start`], on a terminal `cols` columns wide.
    fn start_with_width(env: &Env, cols: u16) -> Repl {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(format!("stty cols {cols} rows 50 && exec \"$0\"")).arg(QMADMIN);
        Repl::start_in(env, sh, "cat")
    }

    fn start_in(env: &Env, mut cmd: Command, pager: &str) -> Repl {
        let history = env.path("history");
        cmd.env("QMCONFIG", &env.device)
            .env("TERM", "xterm")
            .env("PAGER", pager)
            .env("QM_HISTORY", &history)
            .env_remove("QM_SOCKET")
            .current_dir(env.dir.path());
        let session = spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn qmadmin on a pty");
        let mut repl = Repl { session, history };
        repl.expect("qmadmin - qm ");
        repl.expect(&format!("QMCONFIG={}", env.dev()));
        repl.prompt();
        repl
    }

    /// Waits for `text`; returns what came before it.
    #[track_caller]
    fn expect(&mut self, text: &str) -> String {
        match self.session.exp_string(text) {
            Ok(before) => before,
            Err(e) => panic!("waiting for {text:?}: {e}"),
        }
    }

    /// Waits for the command prompt; returns what came before it.
    #[track_caller]
    fn prompt(&mut self) -> String {
        self.expect(PROMPT)
    }

    /// Sends keys without Enter (completion, arrows) and makes sure they are delivered.
    #[track_caller]
    fn keys(&mut self, keys: &str) {
        self.session.send(keys).expect("send keys");
        self.session.flush().expect("flush keys");
    }

    /// Presses Enter on what is on the line, or answers a prompt with `text`, then expects
    /// each of `outputs` in order. The redrawn input line is skipped first (rustyline
    /// prints a newline when it accepts a line), so an expected prompt is a new one.
    #[track_caller]
    fn answer(&mut self, text: &str, outputs: &[&str]) -> String {
        self.session.send_line(text).expect("send line");
        self.expect("\n");
        let mut seen = String::new();
        for out in outputs {
            seen += &self.expect(out);
            seen += out;
        }
        seen
    }

    /// Runs a command line: expects each of `outputs`, then the prompt again; returns the
    /// whole output of the command.
    #[track_caller]
    fn run(&mut self, line: &str, outputs: &[&str]) -> String {
        let mut seen = self.answer(line, outputs);
        seen += &self.prompt();
        seen
    }

    /// Sends a control character (`'c'` for Ctrl-C).
    #[track_caller]
    fn control(&mut self, c: char) {
        self.session.send_control(c).expect("send control character");
    }

    /// Waits for the end of the session and returns qmadmin's exit status.
    #[track_caller]
    fn exit_status(mut self) -> i32 {
        if let Err(e) = self.session.exp_eof() {
            panic!("waiting for qmadmin to exit: {e}");
        }
        match self.session.process().wait().expect("wait for qmadmin") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("qmadmin did not exit normally: {other:?}"),
        }
    }
}

/// An environment with a device and a running daemon (started by a first `qmadmin -c`).
fn env_with_device() -> Env {
    let env = Env::new();
    env.with_device();
    env
}

/// Creates queue space `name` (100 pages) with `ipc_key`.
fn create_space(env: &Env, name: &str, ipc_key: u32) {
    env.c(&format!("qspacecreate {name} {ipc_key} 100 5 5 5 100 '' n 16")).ok();
}

/// The banner and the `> ` prompt appear; `quit` exits with status 0, and so does Ctrl-D
/// at the prompt.
#[test]
fn banner_prompt_quit_and_ctrl_d() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.run("verbose", &["Verbose mode is now on"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);

    let mut repl = Repl::start(&env);
    repl.control('d');
    assert_eq!(repl.exit_status(), 0);
}

/// Tab completes command names, queue-space names after `qopen` and queue names after
/// `qinfo` once a queue space is open, and a queue space name at the `Queue space name: `
/// prompt.
#[test]
fn tab_completion() {
    let env = env_with_device();
    create_space(&env, "ZEBRA", 40001);
    create_space(&env, "ALPHA", 40002);
    env.c("qopen ZEBRA; qcreate ORDERS fifo none 0 0 100% 0% \"\"").ok();
    let mut repl = Repl::start(&env);

    // A command name: `qspacel` is only `qspacelist`.
    repl.keys("qspacel\t");
    repl.expect("qspacelist");
    repl.answer("", &["Queue space name: "]);
    repl.run("ZEBRA", &["Queue space ZEBRA", "IPC key"]);

    // A queue space name after qopen; qinfo then works on it.
    repl.keys("qopen ZE\t");
    repl.expect("ZEBRA");
    let out = repl.run("", &[]);
    assert!(!out.contains("ERROR"), "qopen failed: {out:?}");

    // A queue name of the open queue space after qinfo.
    repl.keys("qinfo OR\t");
    repl.expect("ORDERS");
    let out = repl.run("", &["ORDERS"]);
    assert!(!out.contains("ERROR"), "qinfo failed: {out:?}");
    assert!(!out.contains("(total)"), "one queue has no total row: {out:?}");

    // The answer to a command's prompt completes to what the prompt asks for.
    repl.run("qclose", &[]);
    repl.answer("qopen", &["Queue space name: "]);
    repl.keys("AL\t");
    repl.expect("ALPHA");
    let out = repl.run("", &[]);
    assert!(!out.contains("ERROR"), "qopen failed: {out:?}");
    // An empty answer lists the open queue space: ALPHA.
    repl.answer("qspacelist", &["Queue space name: "]);
    repl.run("", &["Queue space ALPHA", "state"]);

    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// The Up arrow recalls earlier lines, also a shell escape and a line that did not parse
/// (to correct it); the history file holds them after quitting, and a new session recalls a
/// line of the previous one.
#[test]
fn history_recall_and_file() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.run("lidl", &["Device list on"]);
    repl.run("verbose", &["Verbose mode is now on"]);
    // Up twice is lidl (Up once would be verbose, and an empty line would repeat verbose):
    // verbose lidl shows the free-space maps.
    repl.keys(UP);
    repl.expect("verbose");
    repl.keys(UP);
    repl.expect("lidl");
    repl.run("", &["Device list on", "free space map"]);
    repl.run("!echo shell-escape-ran", &["shell-escape-ran"]);
    // A missing quote: recall the line, add the quote, run it.
    repl.run("echo \"on", &["ERROR: No matching double quote"]);
    repl.keys(UP);
    repl.expect("echo \"on");
    repl.keys("\"");
    repl.run("", &["Echo mode is now on"]);
    let history = repl.history.clone();
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 1, "the line that did not parse failed");

    let text = std::fs::read_to_string(&history).expect("history file written");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        ["lidl", "verbose", "lidl", "!echo shell-escape-ran", "echo \"on", "echo \"on\"", "quit"],
        "history file: {text:?}"
    );

    // A new session starts with that history: Up is quit, Up again the corrected echo.
    let mut repl = Repl::start(&env);
    repl.keys(UP);
    repl.expect("quit");
    repl.keys(UP);
    repl.expect("echo \"on\"");
    repl.run("", &["Echo mode is now on"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// Two sessions at once share the history file: each one's lines are kept, neither
/// overwrites the other's.
#[test]
fn history_of_concurrent_sessions() {
    let env = env_with_device();
    let mut first = Repl::start(&env);
    let mut second = Repl::start(&env);
    first.run("lidl", &["Device list on"]);
    second.run("livtoc", &["VTOC"]);
    first.run("verbose", &["Verbose mode is now on"]);
    first.answer("quit", &[]);
    assert_eq!(first.exit_status(), 0);
    second.answer("quit", &[]);
    assert_eq!(second.exit_status(), 0);

    let text = std::fs::read_to_string(env.path("history")).expect("history file written");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["lidl", "livtoc", "verbose", "quit"], "history file: {text:?}");
}

/// An empty line at the prompt repeats the last command; after Ctrl-C at the prompt it
/// does not.
#[test]
fn empty_line_repeats_last_command() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.run("echo", &["Echo mode is now on"]);
    repl.run("", &["Echo mode is now off"]);
    repl.run("", &["Echo mode is now on"]);

    // Ctrl-C forgets the last command: an empty line now does nothing.
    repl.control('c');
    repl.expect("\n");
    repl.prompt();
    let out = repl.run("", &[]);
    assert!(!out.contains("Echo mode"), "an empty line after Ctrl-C repeated: {out:?}");
    // Echo is still on, so toggling turns it off.
    repl.run("echo", &["Echo mode is now off"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// `qspacecreate` without arguments prompts for each value; an empty answer to a required
/// prompt is warned about and asked again; an invalid IPC key is reported with the field and
/// its range, and asked again.
#[test]
fn prompts_ask_again() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.answer("qspacecreate", &["Queue space name: "]);
    repl.answer("", &["WARN: Queue space name must be specified", "Queue space name: "]);
    repl.answer("PROMPTED", &["IPC Key for queue space: "]);
    repl.answer(
        "12",
        &[
            "ERROR: IPC Key for queue space: '12' is invalid; it must be a whole number from 32769 to 262143",
            "IPC Key for queue space: ",
        ],
    );
    repl.answer("40001", &["Size of queue space in disk pages: "]);
    repl.answer("", &["WARN: Size of queue space in disk pages must be specified"]);
    repl.expect("Size of queue space in disk pages: ");
    repl.answer("102", &["Number of queues in queue space: "]);
    repl.answer("5", &["Number of concurrent transactions in queue space: "]);
    repl.answer("4", &["Number of concurrent processes in queue space: "]);
    repl.answer("3", &["Number of messages in queue space: "]);
    repl.answer("200", &["Error queue name: "]);
    repl.answer("", &["Initialize extents (y, n [default=n]): "]);
    repl.answer("", &["Blocking factor [default=16]: "]);
    let out = repl.run("", &[]);
    assert!(!out.contains("ERROR"), "qspacecreate failed: {out:?}");
    repl.answer("quit", &[]);
    // The session's status counts only failed commands, not answers asked again.
    assert_eq!(repl.exit_status(), 0);

    let info: QueueSpaceInfo = env.json("qspacelist PROMPTED");
    assert_eq!(info.params.ipc_key, 40001);
    assert_eq!(info.total_pages, 100, "102 pages round down to a multiple of 4");
    assert_eq!((info.params.queues, info.params.transactions), (5, 4));
    assert_eq!((info.params.processes, info.params.messages), (3, 200));

    // In a script the same invalid answer fails the command (once its answers are read)
    // instead of asking again.
    env.script("qspacecreate\nSCRIPTED\n12\n100\n4\n4\n4\n100\n\n\n\n")
        .failed()
        .stderr_has("IPC Key for queue space: '12' is invalid");
    env.c("qspacelist SCRIPTED").failed().stderr_has("Queue space SCRIPTED does not exist");
}

/// Typing a command and a blank shows the command's syntax as a hint.
#[test]
fn hint_shows_syntax() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.keys("qcreate ");
    repl.expect("[-d persist|nonpersist]");
    // Ctrl-C drops the line; the prompt comes back and nothing ran.
    repl.control('c');
    repl.expect("\n");
    let out = repl.prompt();
    assert!(!out.contains("ERROR"), "{out:?}");
    repl.keys("qopen ");
    repl.expect("[queue_space_name]");
    repl.control('c');
    repl.expect("\n");
    repl.prompt();
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// At a terminal, `qcreate` on a full queue space is refused before its prompts.
#[test]
fn qcreate_on_a_full_space_refused_before_prompting() {
    let env = env_with_device();
    env.c("qspc F 40002 100 1 2 2 10 '' n 16; qopen F; qcr A fifo none 0 0 100% 0% ''").ok();
    let mut repl = Repl::start(&env);
    repl.run("qopen F", &[]);
    let out = repl.run("qcreate", &["no more queue entries (max = 1)"]);
    assert!(!out.contains("Queue name:"), "no prompt before the refusal: {out:?}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 1);
}

/// At a terminal, paginate is on: output longer than 20 lines goes through `$PAGER`, shorter
/// output does not; `paginate` toggles it, `paginate off`/`on` set it. In a script it cannot
/// be turned on, and nothing is ever paged.
#[test]
fn paginate_pages_long_output_at_a_terminal_only() {
    let env = env_with_device();
    let pager = "sed 's/^/paged: /'";
    let mut repl = Repl::start_with_pager(&env, pager);
    let out = repl.run("help all", &["paged: "]);
    assert!(out.contains("paged: qspacecreate"), "{out:?}");
    let out = repl.run("help qopen", &["qopen"]);
    assert!(!out.contains("paged: "), "short output is not paged: {out:?}");
    repl.run("paginate", &["Paginate mode is now off"]);
    let out = repl.run("help all", &["qspacecreate"]);
    assert!(!out.contains("paged: "), "{out:?}");
    repl.run("paginate on", &["Paginate mode is now on"]);
    repl.run("help all", &["paged: qspacecreate"]);
    repl.run("paginate off", &["Paginate mode is now off"]);
    repl.run("paginate", &["Paginate mode is now on"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);

    // A script: never paged, and paginate cannot be turned on.
    let mut cmd = env.qmadmin_cmd();
    cmd.env("PAGER", pager);
    let run = env.run_stdin(cmd, "help all\npaginate on\npaginate\npaginate off\n");
    let why = "paginate can be turned on only when input and output are terminals";
    run.failed().errors_are(&[why, why]).stdout_has("qspacecreate").stdout_lacks("paged: ");
    run.stdout_has("Paginate mode is now off");
}

/// At a terminal `qstat` redraws in place every second until Ctrl-C, which ends the view
/// and gives the prompt back with the queue space still open.
#[test]
fn qstat_is_live_until_ctrl_c() {
    let env = env_with_device();
    create_space(&env, "QS", 40000);
    env.c("qopen QS; qcreate Q fifo none 0 0 100% 0% ''").ok();
    let mut repl = Repl::start(&env);
    repl.run("qopen QS", &[]);
    repl.answer("qstat", &["Ctrl-C to stop", "Ctrl-C to stop"]);
    repl.control('c');
    repl.prompt();
    repl.run("qinfo Q", &["Q"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// `quit` or Ctrl-D with a transaction open asks first: `n` goes back to the prompt (the
/// transaction stays open and can be committed), `y` rolls it back, warns and exits 1.
#[test]
fn quitting_with_an_open_transaction_asks_first() {
    let env = env_with_device();
    env.c("qspc QS 40001 100 5 5 5 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    let mut repl = Repl::start(&env);
    repl.run("qopen QS", &[]);
    repl.run("begin", &["begun"]);
    repl.run("qenqueue Q first", &[]);
    repl.answer("quit", &["is open: quit and roll it back? [y, n] "]);
    repl.run("n", &[]);
    repl.control('d');
    repl.expect("is open: quit and roll it back? [y, n] ");
    repl.run("n", &[]);
    repl.run("commit", &["Transaction committed"]);
    repl.run("begin", &["begun"]);
    repl.run("qenqueue Q second", &[]);
    repl.answer("q", &["is open: quit and roll it back? [y, n] "]);
    repl.answer("y", &["WARN: transaction ", " rolled back"]);
    assert_eq!(repl.exit_status(), 1);
    let listing: qm_common::queue::QueueListing = env.json("qopen QS; qinfo Q");
    assert_eq!(listing.queues[0].usage.persistent_messages, 1, "only the committed message");
}

/// A change that cannot be made is refused before `Are you sure?` is asked: `dsdl` of an
/// entry holding extents, `qcq` to a queue that does not exist, `qdestroy` of one; a change
/// that can be made is still confirmed.
#[test]
fn refusals_come_before_the_confirmation() {
    let env = env_with_device();
    env.c("qspc QS 40001 100 5 5 5 100 '' n 16; qopen QS; qcr PQ fifo none 0 0 100% 0% ''").ok();
    env.c("qopen QS; qenqueue PQ one").ok();
    let mut repl = Repl::start(&env);
    let out = repl.run("dsdl 0", &["holds extents of queue space QS"]);
    assert!(!out.contains("Are you sure"), "asked before refusing: {out:?}");
    repl.run("qopen QS", &[]);
    repl.run("qset PQ", &[]);
    let out = repl.run("qcq NOSUCH", &["ERROR: ", "NOSUCH"]);
    assert!(!out.contains("Are you sure"), "asked before refusing: {out:?}");
    let out = repl.run("qdestroy NOSUCH", &["ERROR: ", "NOSUCH"]);
    assert!(!out.contains("Are you sure"), "asked before refusing: {out:?}");
    repl.answer("qdestroy -p PQ", &["Are you sure? [y, n] "]);
    repl.run("n", &["Queue not destroyed"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 1);
}

/// `qdequeue -B` at a terminal ends the body's line, so the next prompt does not wipe it
/// out; piped, the body is written exactly as enqueued, with no newline added.
#[test]
fn raw_body_at_a_terminal_ends_its_line() {
    let env = env_with_device();
    env.c("qspc QS 40001 100 5 5 5 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    env.c("qopen QS; qenqueue Q 'no newline at the end'; qenqueue Q piped").ok();
    let mut repl = Repl::start(&env);
    repl.run("qopen QS", &[]);
    let out = repl.run("qdequeue -B Q", &["no newline at the end"]);
    assert!(out.contains("no newline at the end\r\n"), "the body's line is not ended: {out:?}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
    let run = env.c("qopen QS; qdequeue -B Q");
    assert_eq!(run.ok().stdout, "piped", "piped bodies are left as they are");
}

/// A `$PAGER` that cannot run or fails is reported, and the output is printed directly
/// instead of being lost; the session goes on.
#[test]
fn a_bad_pager_falls_back_to_printing() {
    let env = env_with_device();
    let mut repl = Repl::start_with_pager(&env, "no-such-pager-qm");
    let out =
        repl.run("help all", &["WARN: $PAGER 'no-such-pager-qm' was not found", "qspacecreate"]);
    assert!(out.contains("the output follows unpaged"), "{out:?}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);

    let mut repl = Repl::start_with_pager(&env, "exit 3");
    repl.run("help all", &["exited with status 3", "qspacecreate"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// Ctrl-C while a command runs ends that command only: a dequeue waiting for a message stops
/// waiting and the session keeps its open queue space and its `qset`; a shell escape's
/// command is ended and qmadmin re-prompts. The message enqueued afterwards is not taken by
/// the abandoned wait.
#[test]
fn ctrl_c_ends_the_running_command_only() {
    let (env, daemon) = crate::app::traced_space(&[crate::app::ERRQ, crate::app::FIFO_Q]);
    let mut repl = Repl::start(&env);
    repl.run("qopen QS", &[]);
    repl.run("qset Q", &[]);
    repl.answer("qdequeue -w 30 Q", &[]);
    crate::app::waiting(&daemon, 1);
    repl.control('c');
    repl.expect("ERROR: interrupted (Ctrl-C)");
    repl.prompt();
    repl.run("qenqueue Q after-the-break", &[]);
    // Still open, still set: qlist lists the message the abandoned wait did not take.
    let out = repl.run("qlist", &[]);
    assert!(!out.contains("ERROR") && !out.contains("no messages"), "{out:?}");
    repl.run("qdequeue Q", &["after-the-break"]);

    repl.answer("!echo started; sleep 30", &["started"]);
    repl.control('c');
    repl.expect("was killed by a signal");
    repl.prompt();
    repl.run("qinfo Q", &["Q"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 1, "the interrupted dequeue failed");
}

/// Ctrl-C at a command's prompt cancels the command, and an empty line afterwards does not
/// run it again (Tuxedo: `<CR>` repeats the last command "except after a BREAK"); neither
/// does it after Ctrl-C at a confirmation.
#[test]
fn empty_line_after_a_break_in_prompts_repeats_nothing() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.run("echo", &["Echo mode is now on"]);
    repl.answer("qopen", &["Queue space name: "]);
    repl.control('c');
    repl.expect("command cancelled");
    repl.prompt();
    let out = repl.run("", &[]);
    assert!(!out.contains("Queue space name") && !out.contains("Echo mode"), "{out:?}");

    repl.answer("dsdl 0", &["Are you sure? [y, n] "]);
    repl.control('c');
    repl.expect("Device not destroyed");
    repl.prompt();
    let out = repl.run("", &[]);
    assert!(!out.contains("Are you sure"), "{out:?}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 1, "the cancelled qopen failed");
}

/// A value that only another answer makes wrong is asked again at a terminal, the other
/// answers kept: qcreate's low limit against its high limit, crdl's size for the device
/// itself (entry 0 holds the VTOC and UDL).
#[test]
fn cross_field_errors_ask_the_field_again() {
    let env = Env::new();
    let mut repl = Repl::start(&env);
    repl.answer("crdl", &["Device name: "]);
    repl.answer(&env.dev(), &["Device offset: "]);
    repl.answer("0", &["Device size: "]);
    repl.answer("10", &["needs at least 35 pages", "Device size: "]);
    repl.run("1000", &["Created device"]);
    repl.run("qspc QS 40001 100 5 5 5 100 '' n 16", &[]);
    repl.run("qopen QS", &[]);
    repl.answer("qcreate", &["Queue name: "]);
    repl.answer("CROSS", &["queue order"]);
    repl.answer("fifo", &["out-of-ordering"]);
    repl.answer("", &["retries"]);
    repl.answer("", &["retry delay"]);
    repl.answer("", &["High limit"]);
    repl.answer("3m", &["Reset (low) limit"]);
    repl.answer("3", &["must be less than the high limit (3m)", "Reset (low) limit"]);
    repl.answer("1", &["queue capacity command: "]);
    repl.run("", &["Queue 'CROSS' created"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0, "nothing failed: the fields were asked again");
    let listing: qm_common::queue::QueueListing = env.json("qopen QS; qinfo CROSS");
    assert_eq!(listing.queues[0].def.threshold.low.to_string(), "1m");
}

/// Tab with several candidates lists them all, as bash does, instead of cycling through
/// them one at a time.
#[test]
fn tab_lists_the_candidates() {
    let env = env_with_device();
    let mut repl = Repl::start(&env);
    repl.keys("qspace\t\t");
    repl.expect("qspacechange");
    repl.expect("qspacelist");
    repl.control('u');
    repl.run("", &[]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// `qenqueue Q` without a body at a terminal asks for it rather than enqueueing an empty
/// message unseen.
#[test]
fn qenqueue_asks_for_a_missing_body() {
    let env = env_with_device();
    create_space(&env, "QS", 40000);
    env.c("qopen QS; qcreate Q fifo none 0 0 100% 0% ''").ok();
    let mut repl = Repl::start(&env);
    repl.run("qopen QS", &[]);
    repl.answer("qenqueue Q", &["Message body: "]);
    repl.run("typed at the prompt", &["0000000000000001"]);
    repl.run("qdequeue Q", &["typed at the prompt"]);
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// `help CMD` at a terminal wraps its explanation at word boundaries to the terminal's
/// width, under the usage line; no word is cut.
#[test]
fn help_wraps_at_words_to_the_terminal() {
    let env = env_with_device();
    let mut repl = Repl::start_with_width(&env, 60);
    let out = repl.run("help qthtest", &["qthtest [-n] [queue_name]", "non-persistent"]);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("    ")).collect();
    assert!(lines.len() > 2, "not wrapped: {out}");
    for line in &lines {
        assert!(line.chars().count() <= 60, "wider than the terminal: {line:?}");
    }
    let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
    let help = "Runs a queue's threshold command now, in the environment a real crossing gives it";
    assert_eq!(words[..14].join(" "), help, "words were cut: {out}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// `help CMD` at a terminal 60 columns wide: the usage line, the explanation and the list of
/// options and arguments, whose meanings wrap at words under a hanging indent (a name too
/// long for the name column stands alone above its meaning), then the example. Only the usage
/// line and the example, command lines, are left whole.
#[test]
fn help_lists_options_and_an_example_at_the_terminal() {
    let env = env_with_device();
    let spec = qm_shell::catalog::lookup("qspacecreate").unwrap();
    let mut repl = Repl::start_with_width(&env, 60);
    let out = repl.run("help qspacecreate", &["Example:", spec.example]);
    let lines = visible_lines(&out);
    let at = |text: &str| {
        lines.iter().position(|l| l == text).unwrap_or_else(|| panic!("no line {text:?}: {out}"))
    };
    let (usage, options, arguments, example) =
        (at(&spec.usage()), at("    Options:"), at("    Arguments:"), at("    Example:"));
    assert!(usage < options && options < arguments && arguments < example, "{out}");
    assert_eq!(lines[example + 1], format!("      {}", spec.example));
    for line in &lines[usage + 1..example] {
        assert!(line.chars().count() <= 60, "wider than the terminal: {line:?}");
    }
    // Where the meanings start: after the first option's name.
    let (name, meaning) = spec.arguments[0];
    let first = lines.iter().find(|l| l.starts_with(&format!("      {name} "))).unwrap();
    let hang = first.find(meaning.split(' ').next().unwrap()).unwrap();
    // Each entry's words, in order, none cut, continuation lines under the meaning.
    for (name, meaning) in spec.arguments {
        let start = lines[options..].iter().position(|l| l.starts_with(&format!("      {name}")));
        let start = options + start.unwrap_or_else(|| panic!("{name} is not listed: {out}"));
        let continued = lines[start + 1..].iter().take_while(|l| {
            l.len() > hang && l[..hang].trim().is_empty() && !l[hang..].starts_with(' ')
        });
        let mut words: Vec<&str> =
            lines[start]["      ".len() + name.len()..].split_whitespace().collect();
        words.extend(continued.flat_map(|l| l.split_whitespace()));
        assert_eq!(words.join(" "), *meaning, "{name}: {out}");
    }
    let long = at("      -n nonpersistent_msg_memory[b,B]");
    assert!(lines[long + 1].starts_with(&format!("{:hang$}memory for", "")), "{out}");
    assert!(lines[long + 2].starts_with(&" ".repeat(hang)), "not wrapped: {out}");
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}

/// What a person sees of `text` on the terminal: no carriage returns, no escape sequences.
fn visible_lines(text: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => plain.push(c),
        }
    }
    plain.lines().map(str::to_string).collect()
}

/// A queue space whose listings are wide: a failing forwarder with a long last error, a
/// threshold command of many words that has fired, a message with its reply queues.
fn wide_listings() -> Env {
    use crate::auto::{App, eventually, server, setup, wait_firings, write_config};
    let env = Env::new();
    write_config(
        &env,
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n\
         [service.SVC]\ncommand = 'echo the service could not reach its database >&2; exit 3'\n",
    );
    let long = "'echo queue SVC is filling up and somebody should look at the forwarder soon'";
    setup(
        &env,
        200,
        &[&format!("SVC fifo none 5 60 100% 0% {long}"), "R fifo none 0 0 100% 0% ''"],
    );
    let ctl = qm_common::message::EnqueueCtl {
        reply_queue: Some("R".into()),
        failure_queue: Some("R".into()),
        corrid: b"order-4711".to_vec(),
        ..Default::default()
    };
    App::connect(&env).put_with("SVC", b"a request body", ctl);
    env.c("qopen QS; qthtest SVC").ok();
    wait_firings(&env, "SVC", 1);
    env.c("boot -i 1").ok();
    eventually("a failed call", || server(&env, 1).failures >= 1);
    env
}

/// At 80 columns no line of qlist, psr, qthlog or verbose qinfo is wider than the
/// terminal, and nothing is lost: the msgid is whole, every word of the command is there.
/// At 200 columns the same listings are plain one-line-per-row tables.
#[test]
fn tables_fit_the_terminal() {
    let env = wide_listings();
    let msgid = env.c("qopen QS; qset SVC; verbose; qlist").ok().stdout.clone();
    let msgid = msgid.lines().find_map(|l| l.split_whitespace().find(|w| w.len() == 16)).unwrap();
    let command_words =
        "echo queue SVC is filling up and somebody should look at the forwarder soon";

    let mut repl = Repl::start_with_width(&env, 80);
    repl.run("qopen QS", &[]);
    repl.run("qset SVC", &[]);
    repl.run("verbose", &["Verbose mode is now on"]);
    for (line, expected) in [
        ("qlist", msgid),
        ("qinfo", "somebody"),
        ("psr", "database"),
        ("qthlog", "somebody"),
        ("qlist", "order-4711"),
    ] {
        let out = visible_lines(&repl.run(line, &[expected]));
        for l in &out {
            assert!(l.chars().count() <= 80, "{line}: wider than 80 columns: {l:?}\n{out:#?}");
            assert_eq!(l.trim_end(), l, "{line}: trailing blanks: {l:?}");
        }
        if line != "psr" && line != "qlist" {
            let words: String = out.join(" ");
            let words: Vec<&str> = words.split_whitespace().collect();
            assert!(
                words.windows(14).any(|w| w.join(" ") == command_words),
                "{line}: the command lost words: {out:#?}"
            );
        }
    }
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);

    let mut repl = Repl::start_with_width(&env, 200);
    repl.run("qopen QS", &[]);
    repl.run("verbose", &["Verbose mode is now on"]);
    let out = visible_lines(&repl.run("qinfo", &["somebody"]));
    assert!(
        out.iter().any(|l| l.contains(" | ") && l.contains(command_words)),
        "at 200 columns qinfo is not a one-line-per-row table: {out:#?}"
    );
    repl.answer("quit", &[]);
    assert_eq!(repl.exit_status(), 0);
}
