//! Tab completion and hints for the interactive shell.
//!
//! At the command prompt the first word completes to command names and abbreviations;
//! the command's first argument (after its dash options) to queue space or queue names as
//! the command takes them (from a cache the shell refreshes after every command). A command
//! word followed by a blank hints at the command's syntax. At a command's own prompt (`Queue space name: `, `Queue name: `) the
//! answer completes to the names that prompt asks for, and nothing is hinted.

use crate::catalog::{COMMANDS, Complete, lookup};
use crate::getopt;
use crate::repl::PROMPT;
use qm_common::protocol::Names;
use rustyline::Context;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

pub struct Helper {
    pub names: Arc<Mutex<Names>>,
}

impl Helper {
    /// What a word at the command prompt may be, given the words before it: a command, or
    /// the command's first argument. Dash options and their values are skipped; nothing is
    /// offered for an option's value or for later arguments (`qaddext QS <TAB>` asks for
    /// pages, not another queue space).
    fn candidates(&self, words_before: &[&str]) -> Vec<String> {
        let Some((first, rest)) = words_before.split_first() else {
            return COMMANDS
                .iter()
                .flat_map(|c| std::iter::once(c.name).chain(c.abbrev))
                .map(String::from)
                .collect();
        };
        let Some(spec) = lookup(first) else { return Vec::new() };
        let rest: Vec<String> = rest.iter().map(|w| w.to_string()).collect();
        match getopt::parse(&rest, spec.options) {
            Ok(args) if args.positionals.is_empty() => self.names_of(spec.complete),
            _ => Vec::new(),
        }
    }

    /// What the answer to a command's prompt may be.
    fn answers(&self, prompt: &str) -> Vec<String> {
        match prompt.trim() {
            "Queue space name:" => self.names_of(Complete::QueueSpace),
            "Queue name:" => self.names_of(Complete::Queue),
            _ => Vec::new(),
        }
    }

    fn names_of(&self, kind: Complete) -> Vec<String> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            Complete::QueueSpace => names.qspaces.clone(),
            Complete::Queue => names.queues.clone(),
            Complete::Command => {
                COMMANDS.iter().map(|c| c.name.to_string()).chain(["all".into()]).collect()
            }
            Complete::Nothing => Vec::new(),
        }
    }
}

/// The rustyline helper: [`Helper`]'s names, used as the prompt on screen asks.
pub struct LineHelper {
    helper: Helper,
    prompt: String,
}

impl LineHelper {
    pub fn new(helper: Helper) -> Self {
        LineHelper { helper, prompt: PROMPT.to_string() }
    }

    /// Tells the helper which prompt the next line answers.
    pub fn set_prompt(&mut self, prompt: &str) {
        prompt.clone_into(&mut self.prompt);
    }

    fn at_command_prompt(&self) -> bool {
        self.prompt == PROMPT
    }
}

impl Completer for LineHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // The word starts after the last white space, which may be wider than one byte.
        let start = before
            .char_indices()
            .rfind(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let candidates = if self.at_command_prompt() {
            self.helper.candidates(&words)
        } else {
            self.helper.answers(&self.prompt)
        };
        let mut matches: Vec<String> =
            candidates.into_iter().filter(|c| c.starts_with(word)).collect();
        matches.sort();
        matches.dedup();
        let pairs = matches
            .into_iter()
            .map(|m| Pair { display: m.clone(), replacement: format!("{m} ") })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for LineHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if !self.at_command_prompt() || pos != line.len() || !line.ends_with(' ') {
            return None;
        }
        let mut words = line.split_whitespace();
        let spec = lookup(words.next()?)?;
        (words.next().is_none() && !spec.syntax.is_empty()).then(|| spec.syntax.to_string())
    }
}

impl Highlighter for LineHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }
}

impl Validator for LineHelper {}

impl rustyline::Helper for LineHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> Helper {
        let names = Names { qspaces: vec!["QS1".into()], queues: vec!["Q1".into()] };
        Helper { names: Arc::new(Mutex::new(names)) }
    }

    #[test]
    fn first_argument_after_options() {
        let h = helper();
        assert!(h.candidates(&[]).contains(&"qspacelist".to_string()));
        assert_eq!(h.candidates(&["qopen"]), ["QS1"]);
        assert_eq!(h.candidates(&["qinfo"]), ["Q1"]);
        assert_eq!(h.candidates(&["qdestroy", "-p", "-y"]), ["Q1"]);
        assert_eq!(h.candidates(&["qcreate", "-d", "persist"]), ["Q1"]);
        assert_eq!(h.candidates(&["ipcrm", "-fy"]), ["QS1"]);
        // An option's value, a later argument, an unknown command or option: nothing.
        assert!(h.candidates(&["qcreate", "-d"]).is_empty());
        assert!(h.candidates(&["qaddext", "QS1"]).is_empty());
        assert!(h.candidates(&["qopen", "QS1"]).is_empty());
        assert!(h.candidates(&["nosuch"]).is_empty());
        assert!(h.candidates(&["qopen", "-x"]).is_empty());
        assert!(h.candidates(&["help"]).contains(&"all".to_string()));
    }

    #[test]
    fn answers_by_prompt() {
        let h = helper();
        assert_eq!(h.answers("Queue space name: "), ["QS1"]);
        assert_eq!(h.answers("Queue name: "), ["Q1"]);
        assert!(h.answers("Error queue name: ").is_empty());
        assert!(h.answers("IPC Key for queue space: ").is_empty());
    }
}
