//! Errors as both planes report them: a Tuxedo `QME*` diagnostic plus a sentence for people.
//!
//! The data plane hands the diagnostic to programs (`QMENOMSG`, `QMENOSPACE`, ...); the admin
//! plane prints the sentence (`ERROR: ...`). One type carries both so that a failure keeps its
//! meaning whichever side shows it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `text` for a message, with its control characters, and the invisible ones that reorder
/// text, written as escapes (`\u{1b}`): what someone typed or a file held must not drive the
/// terminal the message is shown on. Newlines and tabs are escaped too, so that a value
/// stays on its line.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            let hidden = c.is_control() || is_invisible(c);
            if hidden { c.escape_unicode().to_string() } else { c.to_string() }
        })
        .collect()
}

/// Invisible formatting characters: bidirectional overrides and isolates, zero-width
/// characters, the soft hyphen, the byte-order mark. Shown raw, they would let a text look
/// like another (or like nothing).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// A message for the terminal: [`shown`] line by line, so that its own line breaks stay.
pub fn shown_lines(text: &str) -> String {
    text.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

/// The Tuxedo /Q diagnostic codes (`TPQCTL.diagnostic`), with their historical values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Diagnostic {
    /// An argument or flag is invalid.
    Inval,
    /// The queue space is not open (or no longer exists).
    NotOpen,
    /// A transaction problem: none active, already finished, or timed out.
    Tran,
    /// The message identifier is invalid or names no message.
    BadMsgid,
    /// An internal or storage failure; details are in the daemon log.
    System,
    /// An operating-system failure (file, socket, process).
    Os,
    /// The operation was aborted, e.g. the transaction was rolled back meanwhile.
    Aborted,
    /// The operation is not allowed in the current protocol state.
    Proto,
    /// The queue does not exist.
    BadQueue,
    /// No message is available.
    NoMsg,
    /// The object is in use by others (attached processes, locked messages).
    InUse,
    /// Out of space: pages, memory, message slots or transaction slots.
    NoSpace,
    /// The object does not exist (device entry, queue space, transaction, forwarder).
    NotFound,
    /// The object already exists.
    Exists,
    /// The peer may not use this daemon.
    Denied,
    /// The session's principal lacks the right for this request (see `rights`).
    Perm,
    /// The queue's enqueue attribute is off (`qchange -E off`).
    EnqueueDisabled,
    /// The queue's dequeue attribute is off (`qchange -D off`).
    DequeueDisabled,
}

impl Diagnostic {
    /// The Tuxedo name, for programs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Diagnostic::Inval => "QMEINVAL",
            Diagnostic::NotOpen => "QMENOTOPEN",
            Diagnostic::Tran => "QMETRAN",
            Diagnostic::BadMsgid => "QMEBADMSGID",
            Diagnostic::System => "QMESYSTEM",
            Diagnostic::Os => "QMEOS",
            Diagnostic::Aborted => "QMEABORTED",
            Diagnostic::Proto => "QMEPROTO",
            Diagnostic::BadQueue => "QMEBADQUEUE",
            Diagnostic::NoMsg => "QMENOMSG",
            Diagnostic::InUse => "QMEINUSE",
            Diagnostic::NoSpace => "QMENOSPACE",
            Diagnostic::NotFound => "QMENOENT",
            Diagnostic::Exists => "QMEEXISTS",
            Diagnostic::Denied => "QMEDENIED",
            Diagnostic::Perm => "QMEPERM",
            Diagnostic::EnqueueDisabled => "QMEENQDISABLED",
            Diagnostic::DequeueDisabled => "QMEDEQDISABLED",
        }
    }

    /// The numeric value Tuxedo programs compare against (qm-only codes are below -100).
    pub fn code(self) -> i32 {
        match self {
            Diagnostic::Inval => -1,
            Diagnostic::NotOpen => -3,
            Diagnostic::Tran => -4,
            Diagnostic::BadMsgid => -5,
            Diagnostic::System => -6,
            Diagnostic::Os => -7,
            Diagnostic::Aborted => -8,
            Diagnostic::Proto => -9,
            Diagnostic::BadQueue => -10,
            Diagnostic::NoMsg => -11,
            Diagnostic::InUse => -12,
            Diagnostic::NoSpace => -13,
            Diagnostic::NotFound => -101,
            Diagnostic::Exists => -102,
            Diagnostic::Denied => -103,
            Diagnostic::Perm => -104,
            Diagnostic::EnqueueDisabled => -105,
            Diagnostic::DequeueDisabled => -106,
        }
    }
}

/// A failure with its diagnostic and a message that names the field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmError {
    pub diagnostic: Diagnostic,
    pub message: String,
}

impl QmError {
    pub fn new(diagnostic: Diagnostic, message: impl Into<String>) -> Self {
        QmError { diagnostic, message: message.into() }
    }

    /// An invalid value: `field` is what the user typed it for, `allowed` says what would do.
    pub fn invalid(field: &str, value: impl fmt::Display, allowed: &str) -> Self {
        let value = shown(&value.to_string());
        QmError::new(Diagnostic::Inval, format!("{field}: '{value}' is invalid; {allowed}"))
    }

    pub fn inval(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::Inval, message)
    }

    pub fn system(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::System, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::NotFound, message)
    }

    pub fn in_use(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::InUse, message)
    }

    pub fn no_space(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::NoSpace, message)
    }

    pub fn exists(message: impl Into<String>) -> Self {
        QmError::new(Diagnostic::Exists, message)
    }
}

impl fmt::Display for QmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QmError {}

impl From<std::io::Error> for QmError {
    fn from(e: std::io::Error) -> Self {
        QmError::new(Diagnostic::Os, e.to_string())
    }
}

pub type QmResult<T> = Result<T, QmError>;
