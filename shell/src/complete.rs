//! Tab completion and hints for the interactive shell.
//!
//! The first word completes to command names and abbreviations; after a command, queue
//! space or queue names as the command takes them (from a cache the shell refreshes after
//! every command). A command word followed by a blank hints at the command's syntax.

use crate::catalog::{COMMANDS, Complete, lookup};
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
    fn candidates(&self, words_before: &[&str]) -> Vec<String> {
        let Some(first) = words_before.first() else {
            return COMMANDS
                .iter()
                .flat_map(|c| std::iter::once(c.name).chain(c.abbrev))
                .map(String::from)
                .collect();
        };
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        match lookup(first).map(|c| c.complete) {
            Some(Complete::QueueSpace) => names.qspaces.clone(),
            Some(Complete::Queue) => names.queues.clone(),
            Some(Complete::Command) => {
                COMMANDS.iter().map(|c| c.name.to_string()).chain(["all".into()]).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> =
            before[..start].split_whitespace().filter(|w| !w.starts_with('-')).collect();
        let mut matches: Vec<String> =
            self.candidates(&words).into_iter().filter(|c| c.starts_with(word)).collect();
        matches.sort();
        matches.dedup();
        let pairs = matches
            .into_iter()
            .map(|m| Pair { display: m.clone(), replacement: format!("{m} ") })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Helper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos != line.len() || !line.ends_with(' ') {
            return None;
        }
        let mut words = line.split_whitespace();
        let spec = lookup(words.next()?)?;
        (words.next().is_none() && !spec.syntax.is_empty()).then(|| spec.syntax.to_string())
    }
}

impl Highlighter for Helper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }
}

impl Validator for Helper {}

impl rustyline::Helper for Helper {}
