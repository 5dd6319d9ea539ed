//! Where lines come from: a terminal (rustyline, with history and completion) or a stream
//! (here-documents, pipes, programs writing to our stdin).
//!
//! On a stream the prompts are still printed, as Tuxedo's qmadmin prints them, so a
//! transcript of a script reads like the interactive session it replaces.

use crate::complete::{Helper, LineHelper};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// What reading a line produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// A line that is not text: `why` says so, for the error message; `bytes` is the line as
    /// read (empty when it was not read whole).
    NotText {
        why: String,
        bytes: Vec<u8>,
    },
    /// Ctrl-C at a terminal.
    Interrupted,
    Eof,
}

/// A source of lines.
pub trait Input {
    fn read_line(&mut self, prompt: &str) -> Read;
    /// True for a terminal: prompts may be repeated and `<CR>` repeats the last command.
    fn interactive(&self) -> bool;
    fn add_history(&mut self, _line: &str) {}
}

/// No answers at all: prompts meet the end of input at once (required values fail, optional
/// ones take their defaults). For `-c` when standard input is not a terminal: it carries
/// message bodies, which must never be taken as answers.
pub struct NoInput;

impl Input for NoInput {
    fn read_line(&mut self, _prompt: &str) -> Read {
        Read::Eof
    }

    fn interactive(&self) -> bool {
        false
    }
}

/// Longest line read from a stream: room for a command carrying a message body of the
/// largest size written with escapes. A longer line means the input is no script (a binary
/// file, `/dev/zero`): it is refused and the rest of the input is not read.
pub const LINE_MAX: usize = 4 * qm_common::message::BODY_MAX;

/// Lines from a stream; prompts go to stdout unless `quiet`.
pub struct StreamInput<R> {
    reader: R,
    pub quiet: bool,
    place: Place,
}

impl<R: BufRead> StreamInput<R> {
    pub fn new(reader: R, quiet: bool) -> Self {
        StreamInput { reader, quiet, place: Place::default() }
    }
}

/// How far a stream has been read.
#[derive(Debug, Default)]
struct Place {
    /// Lines read so far, to name a line in an error.
    lines: u64,
    /// A line over [`LINE_MAX`] was met: the input is read no further.
    ended: bool,
}

/// Prints `prompt` (unless `quiet`) and reads one line of at most [`LINE_MAX`] bytes from
/// `reader`. A line that is not UTF-8 is read whole and reported, so that the lines after
/// it are still read (rather than the rest of a script being dropped as if it had ended).
/// A line over the limit is reported and sets `ended`: from then on, the input has ended.
fn prompted_line(prompt: &str, quiet: bool, place: &mut Place, reader: impl BufRead) -> Read {
    if place.ended {
        return Read::Eof;
    }
    if !quiet {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
    }
    let mut bytes = Vec::new();
    match reader.take(LINE_MAX as u64 + 1).read_until(b'\n', &mut bytes) {
        Ok(0) | Err(_) => Read::Eof,
        Ok(n) if n > LINE_MAX => {
            place.ended = true;
            let why = format!(
                "Input line {} is longer than {LINE_MAX} bytes: this input is not a script of \
                 commands, and the rest of it is not read",
                place.lines + 1
            );
            Read::NotText { why, bytes: Vec::new() }
        }
        Ok(_) => {
            place.lines += 1;
            let end = bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
            bytes.truncate(end);
            match String::from_utf8(bytes) {
                Ok(line) => Read::Line(line),
                Err(e) => {
                    let why = not_text(place.lines, e.as_bytes(), e.utf8_error().valid_up_to());
                    Read::NotText { why, bytes: e.into_bytes() }
                }
            }
        }
    }
}

/// Why line `number` that is not UTF-8 was refused: where, and what to do.
fn not_text(number: u64, line: &[u8], valid: usize) -> String {
    let shown: String = String::from_utf8_lossy(line).chars().take(60).collect();
    format!(
        "Input line {number} '{shown}' is not UTF-8 text (byte {} is 0x{:02x}); write commands \
         and answers in UTF-8 (only a qenqueue body may hold other bytes)",
        valid + 1,
        line[valid]
    )
}

/// Where the bytes of a line that is not UTF-8 are kept as characters: byte `b` becomes
/// `RAW_BASE + b`, in the last private use plane, which no script's text uses. The line can
/// then be parsed as any other, and a message body taken back to its bytes exactly.
const RAW_BASE: u32 = 0x10_FF00;

/// A line that is not UTF-8 as text: its UTF-8 parts as they are, every other byte as a
/// stand-in character (see [`raw_bytes`]).
pub fn raw_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.extend(char::from_u32(RAW_BASE + u32::from(*b)));
        }
    }
    text
}

/// Whether `text` holds a stand-in for a byte that is not UTF-8.
pub fn has_raw(text: &str) -> bool {
    text.chars().any(|c| (RAW_BASE..=RAW_BASE + 0xff).contains(&u32::from(c)))
}

/// The bytes a word of a [`raw_text`] line stands for.
pub fn raw_bytes(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c).checked_sub(RAW_BASE) {
            Some(b) if b <= 0xff => bytes.push(b as u8),
            _ => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    bytes
}

impl<R: BufRead> Input for StreamInput<R> {
    fn read_line(&mut self, prompt: &str) -> Read {
        prompted_line(prompt, self.quiet, &mut self.place, &mut self.reader)
    }

    fn interactive(&self) -> bool {
        false
    }
}

/// Lines from the process's standard input. Standard input is locked for one line at a
/// time only, so that a command may read the rest of it (`qenqueue` takes a message body
/// from it when the commands come from `-c`) without deadlocking on a lock held here.
pub struct StdinInput {
    pub quiet: bool,
    place: Place,
}

impl StdinInput {
    pub fn new(quiet: bool) -> Self {
        StdinInput { quiet, place: Place::default() }
    }
}

impl Input for StdinInput {
    fn read_line(&mut self, prompt: &str) -> Read {
        prompted_line(prompt, self.quiet, &mut self.place, std::io::stdin().lock())
    }

    fn interactive(&self) -> bool {
        false
    }
}

/// Lines from a terminal through rustyline.
pub struct TtyInput {
    editor: Editor<LineHelper, DefaultHistory>,
    history: Option<PathBuf>,
}

/// Where interactive history is kept: `$QM_HISTORY`, else `~/.qmadmin_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QM_HISTORY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".qmadmin_history"))
}

impl TtyInput {
    pub fn new(helper: Helper) -> Result<TtyInput, String> {
        // Tab completes what is common to the candidates and lists them all, as bash does,
        // rather than cycling through them one by one.
        let config = Config::builder()
            .completion_type(rustyline::CompletionType::List)
            .auto_add_history(false)
            .history_ignore_dups(true)
            .map_err(|e| e.to_string())?
            .build();
        let mut editor = Editor::with_config(config).map_err(|e| e.to_string())?;
        editor.set_helper(Some(LineHelper::new(helper)));
        let history = history_path();
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        Ok(TtyInput { editor, history })
    }
}

impl Input for TtyInput {
    fn read_line(&mut self, prompt: &str) -> Read {
        if let Some(helper) = self.editor.helper_mut() {
            helper.set_prompt(prompt);
        }
        match self.editor.readline(prompt) {
            Ok(line) => Read::Line(line),
            Err(ReadlineError::Interrupted) => Read::Interrupted,
            Err(_) => Read::Eof,
        }
    }

    fn interactive(&self) -> bool {
        true
    }

    /// Adds a line to the history and appends it to the history file at once. Appending
    /// (not rewriting the file from this session's memory) keeps the lines of other
    /// sessions that share the file.
    fn add_history(&mut self, line: &str) {
        let _ = self.editor.add_history_entry(line);
        if let Some(h) = &self.history {
            let _ = self.editor.append_history(h);
        }
    }
}
