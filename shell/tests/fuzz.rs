//! Fuzzing of what qmadmin reads: command lines (grammar, dash options, the option parsers
//! of each command), answers to its prompts, the lines of an input stream, its own command
//! line, and what tab completion is given.
//!
//! Each property feeds random input and asserts no panic and, on failure, an error that says
//! what was wrong. `QM_FUZZ_SECS` makes them run longer (see `fuzz_support`).

#[path = "../../common/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use clap::Parser;
use fuzz_support::check;
use proptest::prelude::*;
use proptest::sample::Index;
use qm_common::QmResult;
use qm_common::device::ENTRY_MAX_PAGES;
use qm_common::order::{OutOfOrder, QueueOrder};
use qm_common::protocol::Names;
use qm_common::qspace::{BLOCKING_MAX, COUNT_MAX, MESSAGES_MAX};
use qm_common::queue::{RETRIES_MAX, RETRY_DELAY_MAX};
use qm_common::threshold::{Limit, LimitSet, LimitUnit, parse_high, parse_low};
use qm_common::time::parse_time_spec;
use qm_shell::catalog::{COMMANDS, lookup};
use qm_shell::commands::{automation, device, message, msgadmin, number, on_off, qspace, queue};
use qm_shell::complete::{Helper, LineHelper};
use qm_shell::getopt;
use qm_shell::grammar::{GrammarError, Line, parse_line, split_script};
use qm_shell::input::{Input, Read, StreamInput};
use qm_shell::options::Options;
use qm_shell::repl::PROMPT;
use rustyline::completion::Completer;
use rustyline::hint::Hinter;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::{Arc, Mutex};

/// Cases per property in a normal `cargo test`.
const CASES: u32 = 256;

/// White space of every kind, as it may separate words.
const BLANKS: &[&str] = &[" ", "  ", "\t", "\u{b}", "\u{c}", "\r", "\u{a0}", "\u{3000}", " \t "];

fn blank() -> impl Strategy<Value = String> {
    prop::sample::select(BLANKS).prop_map(String::from)
}

/// One word of a command line: a command, an option, a value, or something odd.
fn word() -> BoxedStrategy<String> {
    let commands: Vec<String> = COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.abbrev))
        .map(String::from)
        .collect();
    let options = prop::sample::select(vec![
        "-y", "-f", "-p", "-d", "-n", "-e", "-t", "-i", "-m", "-k", "-w", "-B", "-T", "-b", "-r",
        "-q", "-u", "-F", "-A", "-o", "-fy", "-yy", "-n100B", "-p10", "--", "--json", "-", "-:",
        "-x", "-\u{e9}",
    ]);
    let values = prop::sample::select(vec![
        "QS",
        "Q",
        "q1",
        "ERR",
        "0",
        "1",
        "100",
        "101",
        "32769",
        "88945",
        "262144",
        "-1",
        "+30",
        "+99999999999",
        "251123",
        "3801",
        "80%",
        "10%",
        "5m",
        "100b",
        "none",
        "fifo",
        "priority,lifo",
        "top,msgid",
        "persist",
        "nonpersist",
        "y",
        "n",
        "on",
        "off",
        "all",
        "status",
        "/tmp/qm-fuzz-device",
        "rel/path",
        "a\\20b",
        "\\zz",
        "18446744073709551616",
        "1-5",
        "5-1",
        "2511-2512",
    ]);
    prop_oneof![
        3 => prop::sample::select(commands),
        3 => options.prop_map(String::from),
        4 => values.prop_map(String::from),
        2 => "[^\\s\"']{1,10}",
        1 => "[\"'][^\"']{0,6}[\"']",
        1 => "[\"'\\\\]{1,3}",
        1 => any::<String>(),
    ]
    .boxed()
}

/// A line as an operator or a script may give it.
fn line() -> BoxedStrategy<String> {
    let words = prop::collection::vec((word(), blank()), 0..8)
        .prop_map(|parts| parts.into_iter().map(|(w, b)| w + &b).collect::<String>());
    prop_oneof![
        6 => (blank(), words).prop_map(|(b, w)| b + &w),
        1 => any::<String>(),
        1 => "[\\x00-\\x1f\\x7f #!;\"'a-z]{0,40}",
        1 => (word(), 1000usize..20_000).prop_map(|(w, n)| w.repeat(n / w.len().max(1) + 1)),
    ]
    .boxed()
}

/// Whether `line` has a quote followed right away by something other than white space.
fn quote_touches_next_word(line: &str) -> bool {
    let chars: Vec<char> = line.chars().collect();
    chars.windows(2).any(|w| (w[0] == '"' || w[0] == '\'') && !w[1].is_whitespace())
}

/// Any line: parsed, or refused with an error that is true of the line. A line without
/// quotes is never refused, whatever white space separates its words.
#[test]
fn fuzz_grammar_lines() {
    check(CASES * 2, line(), |line| {
        let quoted = line.contains(['"', '\'']);
        match parse_line(&line) {
            Ok(Line::Command { name, args }) => {
                if !quoted {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    prop_assert_eq!(&words[..1], &[name.as_str()]);
                    prop_assert_eq!(&words[1..], &args[..]);
                }
            }
            Ok(Line::Blank) => prop_assert!(quoted || line.trim().is_empty()),
            Ok(_) => {}
            Err(e) => {
                prop_assert!(quoted, "a line without quotes was refused: {}", e);
                let text = e.to_string();
                match e {
                    GrammarError::UnmatchedQuote(q) => {
                        prop_assert!(line.contains(q));
                        prop_assert!(text.contains("quote"), "{}", text);
                    }
                    GrammarError::NoSpaceAfterQuote => {
                        prop_assert!(quote_touches_next_word(&line), "{:?}", line);
                        prop_assert!(text.contains("white space"), "{}", text);
                    }
                }
            }
        }
        for piece in split_script(&line) {
            prop_assert!(!piece.is_empty() && piece == piece.trim());
        }
        Ok(())
    });
}

/// Quotes `word` with `quote`, escaping what the grammar unescapes.
fn quote_word(word: &str, quote: char) -> String {
    let mut out = String::from(quote);
    for c in word.chars() {
        if c == quote || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
    out
}

/// Any words, quoted and separated by any white space, come back exactly.
#[test]
fn fuzz_quoted_words_round_trip() {
    let words = prop::collection::vec((any::<String>(), any::<bool>(), blank()), 1..6);
    check(CASES, (blank(), words), |(lead, words)| {
        let mut line = lead;
        for (w, double, sep) in &words {
            line += &quote_word(w, if *double { '"' } else { '\'' });
            line += sep;
        }
        let want: Vec<String> = words.iter().map(|(w, ..)| w.clone()).collect();
        match parse_line(&line) {
            Ok(Line::Command { name, args }) => {
                prop_assert_eq!(&name, &want[0]);
                prop_assert_eq!(&args[..], &want[1..]);
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", line, other),
        }
        Ok(())
    });
}

/// A `-c` script without quotes splits at every `;` and newline.
#[test]
fn fuzz_scripts_split() {
    check(CASES, "[a-z ;\\n\\t\u{a0}#!-]{0,60}", |script| {
        let want: Vec<String> = script
            .split([';', '\n'])
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        prop_assert_eq!(split_script(&script), want);
        Ok(())
    });
}

/// Dash options against every command's spec: parsed into letters the spec has, or refused
/// naming the option and why.
#[test]
fn fuzz_dash_options() {
    let spec = prop::sample::select(COMMANDS.iter().map(|c| c.options).collect::<Vec<_>>());
    // Clusters of the spec's own characters (its ':' included) and a few strangers.
    let cases = spec.prop_flat_map(|spec| {
        let letters: Vec<char> = spec.chars().chain(['x', '?', '-', '\u{e9}']).collect();
        let cluster = prop::collection::vec(prop::sample::select(letters), 1..4)
            .prop_map(|cs| std::iter::once('-').chain(cs).collect::<String>());
        let word = prop_oneof![2 => cluster, 1 => word()];
        (Just(spec), prop::collection::vec(word, 0..8))
    });
    check(CASES * 2, cases, |(spec, words)| {
        match getopt::parse(&words, spec) {
            Ok(args) => {
                for c in words.iter().flat_map(|w| w.chars()) {
                    if args.flag(c) {
                        prop_assert!(c != ':' && spec.contains(c), "-{} accepted by {:?}", c, spec);
                    }
                    if args.value(c).is_some() {
                        prop_assert!(spec.contains(&format!("{c}:")), "-{} took a value", c);
                    }
                }
                prop_assert_eq!(args.json, words.iter().any(|w| w == "--json"));
            }
            Err(e) => {
                let named = e.starts_with("invalid option -")
                    || (e.starts_with("option -")
                        && (e.ends_with("needs a value")
                            || e.ends_with("is given more than once")));
                prop_assert!(named, "{:?}", e);
            }
        }
        Ok(())
    });
}

/// Asserts that a refusal is not empty.
fn says_why(e: &str) -> Result<(), TestCaseError> {
    prop_assert!(!e.trim().is_empty(), "an empty error");
    Ok(())
}

/// Whole command lines, as far as qmadmin goes before it calls the daemon: grammar, command
/// lookup, dash options, argument count and the command's own option parsers.
#[test]
fn fuzz_command_lines() {
    check(CASES * 2, line(), |line| {
        let Ok(Line::Command { name, args }) = parse_line(&line) else { return Ok(()) };
        let Some(spec) = lookup(&name) else { return Ok(()) };
        let args = match getopt::parse(&args, spec.options) {
            Ok(a) => a,
            Err(e) => return says_why(&e),
        };
        let outcome: Result<(), String> = match spec.name {
            "qenqueue" => message::enqueue_ctl(&args).map(drop),
            "qdequeue" => message::dequeue_ctl(&args).map(drop),
            "qscan" => msgadmin::parse_criteria(&args).map(drop),
            "boot" | "shutdown" => automation::server_id(&args).map(drop),
            "qspacecreate" | "qspacechange" | "qsize" => qspace::memory_option(&args)
                .and_then(|_| qspace::option_number(&args, 'A', "-A actions", 0..=COUNT_MAX))
                .and_then(|_| qspace::option_number(&args, 'o', "-o overflow", 0..=u64::MAX))
                .map(drop),
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            says_why(&e)?;
        }
        Ok(())
    });
}

/// An answer as typed at a prompt (or given as an argument in its place).
fn answer() -> BoxedStrategy<String> {
    prop_oneof![
        2 => word(),
        2 => "[0-9+%bBmy, \\-]{0,12}",
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
    .boxed()
}

type Parse = Box<dyn Fn(&str) -> QmResult<()>>;

/// Every prompt of every command, with the field its errors must name.
fn prompts() -> Vec<(&'static str, Parse)> {
    fn p<T>(f: impl Fn(&str) -> QmResult<T> + 'static) -> Parse {
        Box::new(move |s| f(s).map(drop))
    }
    const PAGES: &str = "Size of queue space in disk pages";
    let high = Limit { value: 80, unit: LimitUnit::Percent };
    vec![
        ("Queue space name", p(qspace::qspace_name)),
        ("IPC Key for queue space", p(qspace::ipc_key)),
        (PAGES, p(|s| number(PAGES, s, 1..=u64::from(u32::MAX)))),
        (
            "Number of queues in queue space",
            p(qspace::count("Number of queues in queue space", COUNT_MAX)),
        ),
        (
            "Number of messages in queue space",
            p(qspace::count("Number of messages in queue space", MESSAGES_MAX)),
        ),
        ("Blocking factor", p(qspace::count("Blocking factor", BLOCKING_MAX))),
        ("Error queue name", p(qspace::error_queue)),
        ("Initialize extents", p(|s| qm_shell::commands::yes_no("Initialize extents", s))),
        ("Number of pages", p(|s| number("Number of pages", s, 1..=u64::from(u32::MAX)))),
        ("Device name", p(device::device_name)),
        ("Device offset", p(|s| number("Device offset", s, 0..=ENTRY_MAX_PAGES))),
        ("Device size", p(|s| number("Device size", s, 1..=ENTRY_MAX_PAGES))),
        ("Device list index", p(device::dl_index)),
        ("Queue name", p(queue::queue_name)),
        ("Queue order", p(|s| s.parse::<QueueOrder>())),
        ("Out-of-ordering enqueuing", p(|s| s.parse::<OutOfOrder>())),
        ("Retries", p(|s| number("Retries", s, 0..=RETRIES_MAX))),
        ("Retry delay in seconds", p(|s| number("Retry delay in seconds", s, 0..=RETRY_DELAY_MAX))),
        ("High limit", p(|s| parse_high(s, LimitSet::Persistent))),
        ("Reset (low) limit", p(move |s| parse_low(s, high))),
        ("Queue capacity command", p(queue::command)),
        ("Priority", p(|s| number("Priority", s, 1..=100u8))),
        ("Time", p(|s| parse_time_spec("Time", s))),
        ("Expiration time", p(message::parse_expiry)),
        ("Transaction index", p(|s| number("Transaction index", s, 1..=u64::MAX))),
        ("Mode", p(on_off)),
    ]
}

/// Every prompt's answer: taken, or refused naming the prompt's field. Numbers that are
/// taken are within the range the refusal would have named.
#[test]
fn fuzz_prompt_answers() {
    let prompts = prompts();
    let which = 0..prompts.len();
    check(CASES * 4, (which, answer()), |(i, text)| {
        let (field, parse) = &prompts[i];
        if let Err(e) = parse(&text) {
            prop_assert!(
                e.message.starts_with(field) && e.message.len() > field.len() + 2,
                "{} refused {:?} with {:?}",
                field,
                text,
                e.message
            );
        }
        if let Ok(v) = number("Priority", &text, 1..=100u8) {
            prop_assert!((1..=100).contains(&v));
        }
        Ok(())
    });
}

/// Bytes on standard input: read line by line (line ends and carriage returns removed),
/// each line that is not UTF-8 refused on its own with a message saying so.
#[test]
fn fuzz_input_streams() {
    let chunk = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"\xc3".to_vec()),
        Just("\u{e9}".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
        "[a-z #]{0,8}".prop_map(String::into_bytes),
    ];
    check(CASES, prop::collection::vec(chunk, 0..12), |chunks| {
        let bytes: Vec<u8> = chunks.concat();
        let mut want: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        if want.last().is_some_and(Vec::is_empty) {
            want.pop();
        }
        let mut input = StreamInput::new(std::io::Cursor::new(bytes.clone()), true);
        for mut line in want {
            while line.last() == Some(&b'\r') {
                line.pop();
            }
            match (input.read_line(PROMPT), String::from_utf8(line)) {
                (Read::Line(got), Ok(line)) => prop_assert_eq!(got, line),
                (Read::NotText { why, bytes }, Err(e)) => {
                    prop_assert!(why.contains("not UTF-8"), "{}", why);
                    prop_assert_eq!(bytes, e.into_bytes(), "the line's bytes as read");
                }
                (got, line) => prop_assert!(false, "read {:?} for {:?}", got, line),
            }
        }
        prop_assert_eq!(input.read_line(PROMPT), Read::Eof);
        Ok(())
    });
}

/// qmadmin's own arguments, including ones that are not UTF-8: parsed, or refused by clap
/// with a message.
#[test]
fn fuzz_qmadmin_arguments() {
    let arg = prop_oneof![
        prop::sample::select(vec![
            "-c",
            "--json",
            "--no-start",
            "--socket",
            "--socket=/tmp/x.sock",
            "-V",
            "--help",
            "/tmp/qm-fuzz-device",
            "--",
            "-x",
            "qopen QS; qinfo",
        ])
        .prop_map(|a| a.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..10),
    ];
    check(CASES, prop::collection::vec(arg, 0..5), |args| {
        let argv = std::iter::once(OsString::from("qmadmin"))
            .chain(args.into_iter().map(OsString::from_vec));
        if let Err(e) = Options::try_parse_from(argv) {
            prop_assert!(!e.render().to_string().trim().is_empty());
        }
        Ok(())
    });
}

/// Tab completion and hints at any cursor position of any line, at the command prompt and
/// at a command's prompts: no panic, and what is offered completes the word at the cursor.
#[test]
fn fuzz_completion() {
    let names = Names { qspaces: vec!["QS".into(), "Q\u{e9}".into()], queues: vec!["q1".into()] };
    let prompts = vec![PROMPT, "Queue space name: ", "Queue name: ", "Device name: "];
    let history = rustyline::history::DefaultHistory::new();
    let ctx = rustyline::Context::new(&history);
    check(
        CASES * 2,
        (line(), any::<Index>(), prop::sample::select(prompts)),
        |(line, at, prompt)| {
            let mut helper = LineHelper::new(Helper { names: Arc::new(Mutex::new(names.clone())) });
            helper.set_prompt(prompt);
            let boundaries: Vec<usize> =
                line.char_indices().map(|(i, _)| i).chain([line.len()]).collect();
            let pos = boundaries[at.index(boundaries.len())];
            let (start, pairs) = helper.complete(&line, pos, &ctx).expect("completion");
            prop_assert!(start <= pos && line.is_char_boundary(start));
            let typed = &line[start..pos];
            for pair in pairs {
                prop_assert!(
                    pair.display.starts_with(typed),
                    "{:?} offered for {:?}",
                    pair.display,
                    typed
                );
            }
            let _ = helper.hint(&line, pos, &ctx);
            Ok(())
        },
    );
}
