//! The command loop: read a line, parse it, run it, keep count of failures.

use crate::catalog::lookup;
use crate::getopt;
use crate::grammar::{Line, parse_line};
use crate::input::Read;
use crate::shell::Shell;
use std::collections::VecDeque;
use std::io::Write;

/// The command prompt.
pub const PROMPT: &str = "> ";

/// What running a line did.
enum Flow {
    Done,
    Failed,
    Quit,
}

/// Prints an error; control characters in it (what was typed, what a file held) are shown
/// as escapes.
fn error(text: &str) {
    let _ = std::io::stdout().flush();
    eprintln!("ERROR: {}", qm_common::error::shown_lines(text));
}

/// The command a parsed line names, with its arguments read against its options: what a
/// line must pass before anything runs.
pub fn prepare(
    name: &str,
    words: &[String],
) -> Result<(&'static crate::catalog::CommandSpec, getopt::Args), String> {
    let Some(spec) = lookup(name) else {
        if name.is_empty() {
            return Err("Command name is empty: a line cannot start with '' or \"\"".into());
        }
        return Err(format!("Command {name} not found"));
    };
    let args = getopt::parse(words, spec.options)
        .map_err(|why| format!("Syntax - {} ({why})", spec.usage()))?;
    if args.positionals.len() > spec.max_args {
        return Err(format!("Syntax - {} (too many arguments)", spec.usage()));
    }
    Ok((spec, args))
}

/// Runs a parsed command.
fn execute(sh: &mut Shell, name: &str, words: Vec<String>) -> Flow {
    let (spec, args) = match prepare(name, &words) {
        Ok(prepared) => prepared,
        Err(why) => {
            error(&why);
            return Flow::Failed;
        }
    };
    if spec.name == "quit" {
        return Flow::Quit;
    }
    sh.json_now = sh.json || args.json;
    sh.deferred = None;
    sh.interrupted = false;
    let result = (spec.run)(sh, args);
    // A bad answer held back until the command had read all its answers is the failure to
    // report, also when checks on the placeholder it carried on with failed first.
    match (sh.deferred.take(), result) {
        (None, Ok(())) => Flow::Done,
        (Some(e), _) | (None, Err(e)) => {
            error(&e);
            Flow::Failed
        }
    }
}

/// `!command`: run it with `sh -c`, output straight to the terminal. A bare `!` starts a
/// shell at a terminal. When the commands come from a script the escape gets no standard
/// input, so that it cannot swallow the lines after it.
fn shell_escape(command: &str, interactive: bool) -> Flow {
    let _ = std::io::stdout().flush();
    let mut child = if command.is_empty() {
        if !interactive {
            error("! needs a command when the commands do not come from a terminal");
            return Flow::Failed;
        }
        std::process::Command::new(std::env::var_os("SHELL").unwrap_or_else(|| "sh".into()))
    } else {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    };
    if !interactive {
        child.stdin(std::process::Stdio::null());
    }
    match child.status() {
        Ok(status) if status.success() => Flow::Done,
        Ok(status) => {
            let why = status.code().map_or_else(
                || "was killed by a signal".into(),
                |c| format!("exited with status {c}"),
            );
            // As in Tuxedo, only a command that cannot be started fails the script (scripts
            // run `!tmshutdown ...` and the like, which may well exit non-zero).
            let _ = std::io::stdout().flush();
            eprintln!("WARN: Shell command '{}' {why}", qm_common::error::shown(command));
            Flow::Done
        }
        Err(e) => {
            error(&format!("Failed to execute command, errno = {}", e.raw_os_error().unwrap_or(0)));
            Flow::Failed
        }
    }
}

/// A line that is not UTF-8 is run only when it is a `qenqueue` whose bytes that are not
/// UTF-8 are all in its last word, the body (a Latin-1 script's message); returns it as text
/// (see [`crate::input::raw_text`]). Any other such line is refused.
fn body_in_other_bytes(bytes: &[u8]) -> Option<String> {
    let line = crate::input::raw_text(bytes);
    let Ok(Line::Command { name, args }) = parse_line(&line) else {
        return None;
    };
    let (body, others) = args.split_last()?;
    let enqueue = lookup(&name).is_some_and(|spec| spec.name == "qenqueue");
    let only_body =
        !crate::input::has_raw(&name) && !others.iter().any(|w| crate::input::has_raw(w));
    (enqueue && only_body && !body.starts_with('-')).then_some(line)
}

/// Reads and runs commands until `quit` or the end of input; returns the exit status.
pub fn run(sh: &mut Shell, mut script: Option<VecDeque<String>>) -> i32 {
    let interactive = script.is_none() && sh.input.interactive();
    let mut failures = 0u32;
    let mut last_command: Option<String> = None;
    let mut last_shell: Option<String> = None;
    loop {
        sh.raw_line = false;
        let line = match &mut script {
            Some(lines) => match lines.pop_front() {
                Some(l) => l,
                None => break,
            },
            None => match sh.input.read_line(PROMPT) {
                Read::Line(l) => l,
                Read::NotText { why, bytes } => match body_in_other_bytes(&bytes) {
                    Some(line) => {
                        sh.raw_line = true;
                        line
                    }
                    None => {
                        error(&why);
                        failures += 1;
                        continue;
                    }
                },
                Read::Interrupted => {
                    last_command = None;
                    continue;
                }
                Read::Eof if may_quit(sh, interactive) => break,
                Read::Eof => continue,
            },
        };
        if sh.echo && !interactive {
            let shown = match sh.raw_line {
                true => String::from_utf8_lossy(&crate::input::raw_bytes(&line)).into_owned(),
                false => line.clone(),
            };
            // Under --json standard output carries JSON only.
            if sh.json {
                eprintln!("{shown}");
            } else {
                println!("{shown}");
            }
        }
        // Every line typed at the prompt can be recalled, also one that did not parse (to
        // correct it) and shell escapes; an empty line (a repeat) adds nothing.
        if interactive && !line.trim().is_empty() {
            sh.input.add_history(&line);
        }
        let flow = match parse_line(&line) {
            Err(e) => {
                error(&e.to_string());
                Flow::Failed
            }
            Ok(Line::Blank) => match last_command.clone().filter(|_| interactive) {
                Some(previous) => match parse_line(&previous) {
                    Ok(Line::Command { name, args }) => execute(sh, &name, args),
                    _ => Flow::Done,
                },
                None => Flow::Done,
            },
            Ok(Line::Comment) => Flow::Done,
            Ok(Line::Shell(command)) => {
                last_shell = Some(command.clone());
                shell_escape(&command, interactive)
            }
            Ok(Line::ShellRepeat) => match last_shell.clone() {
                Some(command) => shell_escape(&command, interactive),
                None => {
                    error("No previous shell command to repeat");
                    Flow::Failed
                }
            },
            Ok(Line::Command { name, args }) => {
                last_command = Some(line.clone());
                execute(sh, &name, args)
            }
        };
        // As in Tuxedo, an empty line repeats the last command "except after a BREAK".
        if std::mem::take(&mut sh.interrupted) {
            last_command = None;
        }
        match flow {
            Flow::Done => {}
            Flow::Failed => failures += 1,
            Flow::Quit if may_quit(sh, interactive) => break,
            Flow::Quit => {}
        }
        if interactive {
            sh.refresh_names();
        }
    }
    if roll_back_on_quit(sh) {
        failures += 1;
    }
    i32::from(failures > 0)
}

/// Whether to quit: at a terminal, with a transaction open, only if the operator says so.
fn may_quit(sh: &mut Shell, interactive: bool) -> bool {
    let Some(id) = sh.transaction.filter(|_| interactive) else {
        return true;
    };
    let question = format!("Transaction {id} is open: quit and roll it back? [y, n] ");
    // The end of input at the question leaves no other way out.
    sh.ask_yes(&question).unwrap_or(true)
}

/// Rolls back the transaction left open at quitting and warns about it; returns whether
/// there was one (the session then failed: what it did in it is undone).
fn roll_back_on_quit(sh: &mut Shell) -> bool {
    let Some(id) = sh.transaction.take() else {
        return false;
    };
    // Rolled back here rather than left to qmd noticing the closed connection, so that it is
    // undone when qmadmin has exited.
    let _ = sh.call(qm_common::protocol::Request::Data(qm_common::protocol::DataRequest::Abort));
    sh.warn(&format!("transaction {id} rolled back: it was still open when qmadmin quit"));
    true
}
