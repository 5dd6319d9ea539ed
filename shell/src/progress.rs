//! Progress dots for long work, as Tuxedo's qmadmin prints them in verbose mode: 20 in all,
//! one per 5 %, then a new line. They go to standard output, or to standard error while
//! standard output carries the command's JSON or an export stream.

use std::io::Write;

/// The dots of one command.
pub struct Dots {
    on: bool,
    to_err: bool,
    shown: u64,
    /// Whether any progress came: work too short to tell any shows no dots at all.
    told: bool,
}

impl Dots {
    /// Dots shown only when `on`; on standard error when `to_err`.
    pub fn new(on: bool, to_err: bool) -> Dots {
        Dots { on, to_err, shown: 0, told: false }
    }

    /// `done` of `total` is done: the dots up to there (never past the 20th, for a total
    /// that was only an estimate).
    pub fn tell(&mut self, done: u64, total: u64) {
        self.told = true;
        if !self.on || total == 0 {
            return;
        }
        let due = (done.saturating_mul(20) / total).min(20);
        if due > self.shown {
            self.emit(&".".repeat((due - self.shown) as usize));
            self.shown = due;
        }
    }

    /// The work ended: when it succeeded after telling progress, the dots left up to 20;
    /// then the line ends if any dot was shown.
    pub fn finish(&mut self, ok: bool) {
        if self.on && self.told && ok && self.shown < 20 {
            self.emit(&".".repeat(20 - self.shown as usize));
            self.shown = 20;
        }
        if self.shown > 0 {
            self.emit("\n");
            self.shown = 0;
        }
    }

    fn emit(&self, text: &str) {
        if self.to_err {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}
