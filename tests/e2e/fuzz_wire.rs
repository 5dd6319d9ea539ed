//! Random input from outside, on real processes: a few hundred random frames sent to `qmd`
//! after the greeting, and random lines fed to `qmadmin`; both must go on serving (the
//! daemon) or end normally (the shell), never panic. Then the fixes that fuzzing led to,
//! each as a user meets it: lines that are not UTF-8, white space other than blanks, `-:`,
//! completion after a wide blank, message ids spelled another way.
//!
//! The random input is seeded, so a failure reproduces. The daemons here run with an empty
//! `PATH`: random lines may well set a threshold command, and it must not find anything to
//! run.

use crate::app::{ERRQ, FIFO_Q, PARAMS, setup};
use crate::support::{Daemon, Env, QMADMIN, Run, wait_with_timeout};
use qm_common::frame::MAX_FRAME;
use qm_common::message::{DequeueCtl, EnqueueCtl, Expiry, Placement, Qos, Select, TimeSpec};
use qm_common::protocol::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small seeded generator (splitmix64): the same seed gives the same input every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Starts `qmd` for `env` with an empty `PATH`; its standard error (where a panic would
/// show) goes to a file, as for every daemon the harness starts.
fn start_qmd(env: &Env) -> Daemon {
    let empty = env.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    Daemon::start_with_env(&env.device, &[], &[("PATH", empty.to_str().expect("UTF-8 path"))])
}

/// The daemon is the same process, still running, with nothing in its log that says a
/// request crashed; and a normal client gets a message through it.
#[track_caller]
fn still_serving(env: &Env, daemon: &mut Daemon) {
    let child = daemon.child.as_mut().expect("daemon");
    assert!(child.try_wait().unwrap().is_none(), "qmd has exited");
    let status: DaemonStatus = env.json("daemon status");
    assert_eq!(status.pid, daemon.pid);
    env.c("qopen QS; qenqueue -i fuzzcheck Q still-here; qdequeue -i fuzzcheck Q")
        .ok()
        .stdout_has("still-here");
    let log = std::fs::read_to_string(format!("{}.qmd-stderr", env.dev())).unwrap();
    for sign in ["panicked", "request handler failed"] {
        assert!(!log.contains(sign), "the qmd log has {sign:?}:\n{log}");
    }
}

/// A raw connection speaking frames.
struct Raw(UnixStream);

impl Raw {
    fn connect(env: &Env) -> Raw {
        let s = UnixStream::connect(env.socket()).expect("connect");
        // Only a daemon that stopped answering meets this.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut raw = Raw(s);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            program: "fuzz".into(),
            kind: ClientKind::Application,
        };
        raw.frame(&postcard::to_stdvec(&Request::Hello(hello)).unwrap());
        assert!(matches!(raw.recv(), Some(Response::Welcome(_))));
        raw
    }

    fn frame(&mut self, payload: &[u8]) {
        self.0.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        self.0.write_all(payload).unwrap();
    }

    /// The next frame, or `None` once the daemon closed the connection.
    fn recv(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        if let Err(e) = self.0.read_exact(&mut len) {
            use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
            assert!(matches!(e.kind(), UnexpectedEof | ConnectionReset), "reading from qmd: {e}");
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        Some(postcard::from_bytes(&body).expect("a response frame"))
    }

    /// The answer to one request: progress frames, then `Done` or `Failed`.
    fn answer(&mut self) -> Option<Response> {
        loop {
            match self.recv() {
                Some(Response::Progress(_)) => continue,
                other => return other,
            }
        }
    }
}

/// Requests worth mutating: each kind the data plane and the read-only admin plane take.
fn templates() -> Vec<Request> {
    let ctl = EnqueueCtl {
        priority: Some(7),
        available: Some(TimeSpec::Relative(0)),
        expiration: Some(Expiry::Relative(3600)),
        placement: Placement::Ordered,
        corrid: b"c1".to_vec(),
        reply_queue: Some("Q".into()),
        failure_queue: None,
        delivery: Some(Qos::Persistent),
        reply_qos: None,
        urcode: 3,
        wait_ms: Some(100),
    };
    vec![
        Request::Daemon(DaemonRequest::Status),
        Request::Daemon(DaemonRequest::Names),
        Request::QueueSpace(QueueSpaceRequest::Open { name: "QS".into() }),
        Request::QueueSpace(QueueSpaceRequest::List { name: Some("QS".into()) }),
        Request::QueueSpace(QueueSpaceRequest::Ipcs { name: None }),
        Request::QueueSpace(QueueSpaceRequest::Size {
            pages: 100,
            queues: 3,
            transactions: 2,
            processes: 2,
            messages: 10,
            nonpersistent: qm_common::qspace::MemorySize::ZERO,
        }),
        Request::Queue(QueueRequest::Info { name: None }),
        Request::Queue(QueueRequest::Get { name: "Q".into() }),
        Request::Data(DataRequest::Begin { qspace: None, timeout_secs: Some(5) }),
        Request::Data(DataRequest::Commit),
        Request::Data(DataRequest::Abort),
        Request::Data(DataRequest::Enqueue {
            qspace: Some("QS".into()),
            queue: "Q".into(),
            ctl,
            body: b"fuzz body".to_vec(),
        }),
        Request::Data(DataRequest::Dequeue {
            qspace: None,
            queue: "Q".into(),
            ctl: DequeueCtl { select: Select::Corrid(b"c1".to_vec()), peek: true, wait_ms: None },
        }),
        Request::Message(MessageRequest::List { queue: "Q".into(), criteria: Default::default() }),
        Request::Message(MessageRequest::Transactions),
        Request::Automation(AutomationRequest::Servers),
        Request::Automation(AutomationRequest::ThresholdLog { queue: None }),
        Request::Rights(RightsRequest::List { principal: None }),
        Request::Rights(RightsRequest::WhoAmI),
    ]
}

/// Whether a frame that decodes is one this test may send: nothing that stops the daemon,
/// changes the device or queue definitions, runs a command or waits long. Frames that do
/// not decode are always sent.
fn harmless(request: &Request) -> bool {
    match request {
        Request::Hello(_) | Request::Message(_) => true,
        Request::Daemon(r) => !matches!(r, DaemonRequest::Stop),
        Request::Device(r) => matches!(
            r,
            DeviceRequest::List { .. }
                | DeviceRequest::Vtoc
                | DeviceRequest::Rename { new_name: None, .. }
        ),
        Request::QueueSpace(r) => matches!(
            r,
            QueueSpaceRequest::List { .. }
                | QueueSpaceRequest::Open { .. }
                | QueueSpaceRequest::Close
                | QueueSpaceRequest::Size { .. }
                | QueueSpaceRequest::Ipcs { .. }
        ),
        Request::Queue(r) => matches!(r, QueueRequest::Info { .. } | QueueRequest::Get { .. }),
        Request::Data(DataRequest::Dequeue { ctl, .. }) => ctl.wait_ms.is_none_or(|w| w <= 200),
        Request::Data(_) => true,
        Request::Automation(r) => {
            matches!(r, AutomationRequest::Servers | AutomationRequest::ThresholdLog { .. })
        }
        Request::Rights(r) => matches!(r, RightsRequest::List { .. } | RightsRequest::WhoAmI),
    }
}

/// A random payload: bytes, or a template changed, cut short, grown or left whole.
fn payload(rng: &mut Rng, templates: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = rng.pick(templates).clone();
    match rng.below(6) {
        0 => return rng.bytes(64),
        1 => {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
        }
        2 => bytes.truncate(rng.below(bytes.len())),
        3 => bytes.extend(rng.bytes(16)),
        4 => {
            let i = rng.below(bytes.len() + 1);
            bytes.insert(i, rng.next() as u8);
        }
        _ => {}
    }
    bytes
}

/// Four hundred random frames after the greeting, with a length over the limit and a half
/// frame now and then: every frame is answered (an error names what was wrong), only an
/// over-long length closes the connection, and afterwards qmd still serves everyone.
#[test]
fn random_frames_leave_qmd_serving() {
    let env = Env::new();
    let mut daemon = start_qmd(&env);
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    let templates: Vec<Vec<u8>> =
        templates().iter().map(|r| postcard::to_stdvec(r).unwrap()).collect();
    let mut rng = Rng(0x5eed_f00d_2026_0008);
    let mut raw = Raw::connect(&env);
    let (mut sent, mut malformed, mut skipped) = (0, 0, 0);
    for i in 0..400 {
        match rng.below(40) {
            0 => {
                let len = MAX_FRAME as u32 + 1 + rng.below(1 << 20) as u32;
                raw.0.write_all(&len.to_be_bytes()).unwrap();
                match raw.answer() {
                    Some(Response::Failed(e)) => {
                        assert!(e.message.contains("over the limit"), "{e}")
                    }
                    other => panic!("frame {i}: an over-long length got {other:?}"),
                }
                assert!(raw.recv().is_none(), "the connection is closed after an over-long length");
                raw = Raw::connect(&env);
                continue;
            }
            1 => {
                let bytes = payload(&mut rng, &templates);
                raw.0.write_all(&(bytes.len() as u32 + 10).to_be_bytes()).unwrap();
                raw.0.write_all(&bytes).unwrap();
                raw = Raw::connect(&env);
                continue;
            }
            _ => {}
        }
        let bytes = payload(&mut rng, &templates);
        if let Ok(request) = postcard::from_bytes::<Request>(&bytes)
            && !harmless(&request)
        {
            skipped += 1;
            continue;
        }
        raw.frame(&bytes);
        sent += 1;
        match raw.answer() {
            Some(Response::Done { .. }) => {}
            Some(Response::Failed(e)) => {
                assert!(!e.message.trim().is_empty(), "frame {i} ({bytes:?}): an empty error");
                malformed += usize::from(e.message.contains("malformed request frame"));
            }
            other => panic!("frame {i} ({bytes:?}) got {other:?}"),
        }
    }
    eprintln!("{sent} frames sent ({malformed} malformed), {skipped} harmful ones left out");
    assert!(malformed > 50 && sent - malformed > 50, "the mix was not random enough");
    raw.frame(&postcard::to_stdvec(&Request::Daemon(DaemonRequest::Status)).unwrap());
    assert!(matches!(raw.answer(), Some(Response::Done { reply: Reply::Status(_), .. })));
    drop(raw);
    still_serving(&env, &mut daemon);
}

/// Words random lines are made of: commands, options, values right and wrong, quotes,
/// control characters. Paths stay in the test's directory, numbers are too small to fill a
/// disk, and nothing stops the daemon or runs a shell.
/// What random lines are made of: the commands (names and abbreviations), and every word.
struct Vocabulary {
    commands: Vec<String>,
    words: Vec<String>,
}

fn vocabulary(env: &Env) -> Vocabulary {
    let commands: Vec<String> = qm_shell::catalog::COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.abbrev))
        .filter(|w| !matches!(*w, "quit" | "q" | "shutdown"))
        .map(String::from)
        .collect();
    let mut words = commands.clone();
    words.extend(
        [
            "-y",
            "-f",
            "-p",
            "-d",
            "-n",
            "-e",
            "-t",
            "-i",
            "-m",
            "-k",
            "-B",
            "-T",
            "-b",
            "-r",
            "-q",
            "-u",
            "-A",
            "-o",
            "-fy",
            "-n16B",
            "--json",
            "--",
            "-",
            "-:",
            "-x",
            "QS",
            "Q",
            "ERRQ",
            "QS2",
            "Q2",
            "0",
            "1",
            "2",
            "3",
            "7",
            "16",
            "50",
            "100",
            "101",
            "200",
            "512",
            "1024",
            "2000",
            "32768",
            "32769",
            "262144",
            "-1",
            "+0",
            "+30",
            "+99999999999",
            "18446744073709551615",
            "18446744073709551616",
            "1099511627777",
            "251123",
            "3801",
            "80%",
            "10%",
            "5m",
            "0m",
            "100b",
            "1B",
            "none",
            "fifo",
            "lifo",
            "priority,time",
            "top,msgid",
            "persist",
            "nonpersist",
            "y",
            "n",
            "yes",
            "on",
            "off",
            "all",
            "status",
            "reload",
            "''",
            "\"\"",
            "\"a b\"",
            "'x\"y'",
            "\"unclosed",
            "'",
            "\\",
            "a\\20b",
            "\\zz",
            "#",
            ";",
            "1-5",
            "5-1",
            "\u{e9}t\u{e9}",
            "\u{7}",
            "\u{1b}[A",
            "\u{0}",
        ]
        .map(String::from),
    );
    words.push(env.dev());
    words.push(env.path("other").display().to_string());
    words.push("relative/path".into());
    Vocabulary { commands, words }
}

const SEPARATORS: &[&str] = &[" ", " ", " ", "  ", "\t", "\u{b}", "\u{c}", "\r", "\u{a0}"];

/// One random line as bytes, mostly starting with a command; some are not UTF-8, some are
/// very long.
fn random_line(rng: &mut Rng, vocabulary: &Vocabulary) -> Vec<u8> {
    let mut line = String::new();
    if rng.below(4) != 0 {
        line += rng.pick(&vocabulary.commands).as_str();
        line += *rng.pick(SEPARATORS);
    }
    let count = if rng.below(5) == 0 { rng.below(9) } else { rng.below(4) };
    for _ in 0..count {
        line += rng.pick(&vocabulary.words).as_str();
        line += *rng.pick(SEPARATORS);
    }
    if rng.below(25) == 0 {
        line = line.repeat(1 + 4000 / line.len().max(1));
    }
    let mut bytes = line.into_bytes();
    if rng.below(12) == 0 {
        let i = rng.below(bytes.len() + 1);
        bytes.insert(i, *rng.pick(&[0xff, 0xc3, 0x80, 0xfe]));
    }
    bytes
}

/// Whether `line` may be fed to qmadmin here: no shell escape, nothing that stops the
/// daemon.
fn allowed(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    !text.trim().starts_with('!') && !text.contains("stop")
}

/// Runs `qmadmin` on `input` with an empty `PATH`.
fn qmadmin_on(env: &Env, input: Vec<u8>) -> Run {
    let mut cmd = env.qmadmin_cmd();
    cmd.env("PATH", env.path("empty-path"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn qmadmin");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let run = wait_with_timeout(child, "qmadmin fed random lines", Duration::from_secs(120));
    let _ = writer.join();
    run
}

/// Random lines (commands, options, quotes, control characters, very long lines, bytes
/// that are not UTF-8, prompt answers) to a real qmadmin: it exits 0 or 1, never panics,
/// every error says something, and the daemon goes on serving.
#[test]
fn random_lines_leave_qmadmin_exiting_normally() {
    let env = Env::new();
    let mut daemon = start_qmd(&env);
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    let vocabulary = vocabulary(&env);
    let mut rng = Rng(0x5eed_0000_2026_0020);
    for round in 0..4 {
        // Most commands act on the open queue space.
        let mut input = b"qopen QS\n".to_vec();
        while input.iter().filter(|b| **b == b'\n').count() < 150 {
            let line = random_line(&mut rng, &vocabulary);
            if allowed(&line) {
                input.extend(line);
                input.push(b'\n');
            }
        }
        let run = qmadmin_on(&env, input.clone());
        let shown = String::from_utf8_lossy(&input);
        assert!(
            run.status == 0 || run.status == 1,
            "round {round}: qmadmin exited with {}\n--- input\n{shown}\n--- stderr\n{}",
            run.status,
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "round {round}: {}\n--- input\n{shown}",
            run.stderr
        );
        for error in run.stderr.lines().filter(|l| l.starts_with("ERROR:")) {
            assert!(error.len() > "ERROR: ".len() + 5, "round {round}: an empty error {error:?}");
        }
        // Lines that are not UTF-8 were refused one by one, not taken for the end of input.
        let not_text = input.split(|b| *b == b'\n').filter(|l| std::str::from_utf8(l).is_err());
        if not_text.count() > 0 {
            assert!(run.stderr.contains("is not UTF-8 text"), "round {round}: {}", run.stderr);
        }
    }
    still_serving(&env, &mut daemon);
}

/// A line that is not UTF-8, as a command or as a prompt answer: refused with an error
/// that says so, and the lines after it still run.
#[test]
fn lines_that_are_not_utf8_are_refused_and_the_script_goes_on() {
    let env = Env::new();
    env.with_device();
    let run = qmadmin_on(&env, b"lidl\xff 0\nqopen\nQS\xc3\nlidl\n".to_vec());
    run.failed();
    run.errors_are(&[
        "'lidl\u{fffd} 0' is not UTF-8 text (byte 5 is 0xff)",
        "'QS\u{fffd}' is not UTF-8 text",
    ]);
    assert_eq!(run.stdout.matches("Device list on").count(), 1, "{}", run.stdout);
}

/// The issue's Latin-1 script: the line that is not UTF-8 is named by its number and fails,
/// the lines after it run, the exit status is 1. A `qenqueue` body in Latin-1 is enqueued
/// with its bytes as they are; such bytes anywhere else refuse the line.
#[test]
fn latin1_lines_are_named_by_number_and_bodies_kept_as_bytes() {
    let env = Env::new();
    env.with_device();
    let run = qmadmin_on(&env, b"lidl\n\xff\xfe bad\nfoo\nlidl\n".to_vec());
    run.failed();
    run.errors_are(&["Input line 2 '\u{fffd}\u{fffd} bad' is not UTF-8 text", "Command foo"]);
    assert_eq!(run.stdout.matches("Device list on").count(), 2, "{}", run.stdout);

    env.c("qspc QS 40001 100 5 5 5 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    let script = b"qopen QS\nqenqueue Q 'caf\xe9 cr\xe8me'\nqenqueue Q\xe9 x\nqenqueue -i \xe9 Q x\nqdequeue Q\n";
    let run = qmadmin_on(&env, script.to_vec());
    run.failed();
    run.errors_are(&["Input line 3 ", "Input line 4 "]);
    run.stdout_has("\ncaf\\e9 cr\\e8me\n");
}

/// White space of any kind separates words: a tab, a form feed, a vertical tab or a
/// no-break space (pasted from a document), also after a quoted word.
#[test]
fn any_white_space_separates_words() {
    let env = Env::new();
    env.with_device();
    env.c("echo\u{a0}on; verbose\u{c}on; echo\u{b}'off'\t")
        .ok()
        .stdout_has("Echo mode is now on")
        .stdout_has("Verbose mode is now on")
        .stdout_has("Echo mode is now off");
}

/// `-:` is an invalid option for every command, also for one whose options take values.
#[test]
fn colon_is_not_an_option() {
    let env = Env::new();
    env.with_device();
    env.c("begin -:").failed().errors_are(&["invalid option -:"]);
}

/// A line that starts with an empty quoted word says the command name is empty.
#[test]
fn empty_command_name() {
    let env = Env::new();
    env.with_device();
    env.c("'' lidl").failed().errors_are(&["Command name is empty"]);
}

/// Tab completion right after a wide blank (here an ideographic space) at a terminal:
/// the word after it completes, and the line runs.
#[test]
fn completion_after_a_wide_blank() {
    use rexpect::session::spawn_command;
    let env = Env::new();
    env.with_device();
    let mut cmd = Command::new(QMADMIN);
    cmd.env("QMCONFIG", &env.device)
        .env("TERM", "xterm")
        .env("QM_HISTORY", env.path("history"))
        .env_remove("QM_SOCKET")
        .current_dir(env.dir.path());
    let mut session = spawn_command(cmd, Some(10_000)).expect("spawn qmadmin on a pty");
    session.exp_string("> ").expect("prompt");
    session.send("help\u{3000}ab\t").unwrap();
    session.flush().unwrap();
    session.exp_string("abort ").expect("abort completed");
    session.send_line("").unwrap();
    session.exp_string("Rolls back the session's transaction").expect("help abort ran");
    session.exp_string("> ").expect("prompt again");
    session.send_line("quit").unwrap();
    session.exp_eof().expect("qmadmin exits");
    match session.process().wait() {
        Ok(rexpect::process::WaitStatus::Exited(_, 0)) => {}
        other => panic!("qmadmin ended with {other:?}"),
    }
}

/// A message id names one message: another spelling of the same number (a sign, capital
/// hex digits) is not that message.
#[test]
fn message_ids_are_matched_exactly() {
    let env = crate::app::space(&[ERRQ, FIFO_Q]);
    let id = env.c("qopen QS; qenqueue Q body").ok().stdout.trim().to_string();
    assert_eq!(id.len(), 16, "a msgid: {id:?}");
    let signed = format!("+{}", &id[1..]);
    env.c(&format!("qopen QS; qdequeue -m {signed} Q")).failed().stderr_has("QMENOMSG");
    env.c(&format!("qopen QS; qdequeue -m {id} Q")).ok().stdout_has("body");
}
