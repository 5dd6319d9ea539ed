//! Commands about the shell itself: echo, help, paginate, quit, verbose, and the daemon.

use super::on_off;
use crate::catalog::{COMMANDS, lookup};
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Shell};
use qm_common::protocol::{DaemonRequest, Reply, Request};
use std::io::IsTerminal;

fn toggle(current: bool, args: &Args) -> Result<bool, String> {
    match args.positionals.first() {
        None => Ok(!current),
        Some(v) => on_off(v).map_err(|e| e.message),
    }
}

fn mode(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub fn echo(sh: &mut Shell, args: Args) -> CmdResult {
    sh.echo = toggle(sh.echo, &args)?;
    sh.info(&format!("Echo mode is now {}", mode(sh.echo)));
    Ok(())
}

pub fn verbose(sh: &mut Shell, args: Args) -> CmdResult {
    sh.verbose = toggle(sh.verbose, &args)?;
    sh.info(&format!("Verbose mode is now {}", mode(sh.verbose)));
    Ok(())
}

pub fn paginate(sh: &mut Shell, args: Args) -> CmdResult {
    let on = toggle(sh.paginate, &args)?;
    if on && !(sh.input.interactive() && std::io::stdout().is_terminal()) {
        return Err("paginate can be turned on only when input and output are terminals".into());
    }
    sh.paginate = on;
    sh.info(&format!("Paginate mode is now {}", mode(on)));
    Ok(())
}

pub fn quit(_sh: &mut Shell, _args: Args) -> CmdResult {
    Ok(())
}

/// A line form's explanation, wrapped as a command's is.
fn indented(text: &str) -> String {
    crate::manual::paragraph(text, render::terminal_width())
}

/// Lines that are not commands, for `help !`, `help !!`, `help #` and `help all`.
const LINE_FORMS: [(&str, &str); 4] = [
    ("!!", "Runs the last shell command again."),
    (
        "! [shellcommand]",
        "Runs shellcommand with sh -c; a bare ! starts a shell (terminal only). When the \
         commands come from a script or -c, the command gets no standard input. Only a command \
         that cannot be started fails; a non-zero exit status is reported as a warning.",
    ),
    ("# comment", "A line starting with # is ignored."),
    (
        "<CR>",
        "At a terminal, an empty line runs the last command again, except after Ctrl-C; in a script it does nothing.",
    ),
];

/// A command or line form as `help` gives it under `--json`.
#[derive(serde::Serialize)]
struct HelpEntry<'a> {
    name: &'a str,
    abbreviation: Option<&'a str>,
    usage: String,
    /// Left out of the plain `help` list, as in its text.
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
    /// A command's options and arguments, when explained (line forms have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Vec<OptionEntry<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    example: Option<&'a str>,
}

/// One option or argument of a command, as `help` lists it.
#[derive(serde::Serialize)]
struct OptionEntry<'a> {
    name: &'a str,
    meaning: &'a str,
}

impl<'a> HelpEntry<'a> {
    fn command(spec: &'a crate::catalog::CommandSpec, explained: bool) -> Self {
        let options = spec.arguments.iter().map(|&(name, meaning)| OptionEntry { name, meaning });
        HelpEntry {
            name: spec.name,
            abbreviation: spec.abbrev,
            usage: spec.usage(),
            help: explained.then_some(spec.help),
            options: explained.then(|| options.collect()),
            example: explained.then_some(spec.example),
        }
    }

    fn line_form((usage, text): &'a (&'a str, &'a str)) -> Self {
        let name = usage.split_whitespace().next().unwrap_or(usage);
        HelpEntry {
            name,
            abbreviation: None,
            usage: usage.to_string(),
            help: Some(text),
            options: None,
            example: None,
        }
    }
}

/// `help` under `--json`: the same answers as JSON.
fn help_json(topic: Option<&str>) -> Result<String, String> {
    let mut sorted: Vec<_> = COMMANDS.iter().collect();
    sorted.sort_by_key(|c| c.name);
    Ok(match topic {
        None => {
            render::json(&sorted.iter().map(|c| HelpEntry::command(c, false)).collect::<Vec<_>>())
        }
        Some("all") => {
            let mut all: Vec<HelpEntry> =
                sorted.iter().map(|c| HelpEntry::command(c, true)).collect();
            all.extend(LINE_FORMS.iter().map(HelpEntry::line_form));
            render::json(&all)
        }
        Some(word)
            if let Some(form) =
                LINE_FORMS.iter().find(|f| f.0.split_whitespace().next() == Some(word)) =>
        {
            render::json(&HelpEntry::line_form(form))
        }
        Some(name) => match lookup(name) {
            Some(spec) => render::json(&HelpEntry::command(spec, true)),
            None => return Err(format!("Command {name} not found")),
        },
    })
}

pub fn help(sh: &mut Shell, args: Args) -> CmdResult {
    if sh.json_now {
        let text = help_json(args.positionals.first().map(String::as_str))?;
        sh.output(&text);
        return Ok(());
    }
    let text = match args.positionals.first().map(String::as_str) {
        None => {
            let mut out = String::from(
                "Commands (abbreviation in parentheses); 'help command' explains one:\n",
            );
            let mut sorted: Vec<_> = COMMANDS.iter().collect();
            sorted.sort_by_key(|c| c.name);
            for c in sorted {
                out += &format!("  {}\n", c.usage());
            }
            out + "  ! shellcommand, !! (repeat it), # comment, <CR> (repeat the last command; terminal only)\n"
        }
        Some("all") => {
            let mut all: Vec<String> = COMMANDS.iter().map(crate::manual::describe).collect();
            all.extend(
                LINE_FORMS.iter().map(|(usage, text)| format!("{usage}\n{}\n", indented(text))),
            );
            all.join("\n")
        }
        Some(word)
            if let Some((usage, text)) =
                LINE_FORMS.iter().find(|f| f.0.split_whitespace().next() == Some(word)) =>
        {
            format!("{usage}\n{}\n", indented(text))
        }
        Some(name) => match lookup(name) {
            Some(spec) => crate::manual::describe(spec),
            None => return Err(format!("Command {name} not found")),
        },
    };
    sh.output(&text);
    Ok(())
}

pub fn daemon(sh: &mut Shell, args: Args) -> CmdResult {
    match args.positionals.first().map(String::as_str) {
        None | Some("status") => {
            let done = sh.call(Request::Daemon(DaemonRequest::Status))?;
            if let Reply::Status(s) = done.reply {
                let text =
                    if sh.wants_json(args.json) { render::json(&s) } else { render::status(&s) };
                sh.output(&text);
            }
            Ok(())
        }
        Some("stop") => {
            sh.call(Request::Daemon(DaemonRequest::Stop))?;
            if let Some(address) = &sh.remote {
                // Its lock is on its machine: all there is to know is that it agreed.
                sh.info(&format!("qmd at {address} is stopping"));
                return Ok(());
            }
            // qmd answers before it is gone: wait until it let go of the device, so that a
            // qmadmin run right after this can start a new one.
            use crate::connect::Exit;
            let pid = sh.daemon_pid();
            let limit = std::time::Duration::from_secs(10);
            match crate::connect::wait_for_exit_of(&sh.device, pid, limit)? {
                Exit::Free => sh.info("qmd stopped"),
                Exit::TakenOver(standby) => sh.info(&format!(
                    "qmd stopped; the standby qmd (pid {standby}) serves the device now"
                )),
                Exit::Held => return Err("qmd was asked to stop but still holds the device".into()),
            }
            Ok(())
        }
        Some("reload") => {
            sh.call(Request::Automation(qm_common::protocol::AutomationRequest::Reload))?;
            Ok(())
        }
        Some(other) => Err(format!("daemon: '{other}' is invalid; use status, stop or reload")),
    }
}
