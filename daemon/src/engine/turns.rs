//! Round robin among the waiting dequeues of one program (`qmd -r`).
//!
//! Without it, a message that arrives wakes every waiting dequeue of its queue and the first
//! to get there takes it, so one fast worker among many can take nearly all. With it, the
//! waiting dequeues of clients with the same program name form a line per queue: a message
//! goes to the one that has waited longest, and a worker that comes back for more joins the
//! end of the line. Clients of other programs are not affected.

use std::collections::{HashMap, VecDeque};

/// The lines of waiting dequeues, per queue and program.
#[derive(Debug, Default)]
pub struct Turns {
    lines: HashMap<(String, String), VecDeque<u64>>,
    next: u64,
}

impl Turns {
    /// Joins the end of the line of `program` on `queue`; returns the place taken.
    pub fn join(&mut self, queue: &str, program: &str) -> u64 {
        self.next += 1;
        let line = self.lines.entry((queue.to_string(), program.to_string())).or_default();
        line.push_back(self.next);
        self.next
    }

    /// Whether `ticket` is at the head of its line (or in none: nothing holds it back).
    pub fn is_first(&self, queue: &str, program: &str, ticket: u64) -> bool {
        let key = (queue.to_string(), program.to_string());
        self.lines.get(&key).and_then(|l| l.front()).is_none_or(|first| *first == ticket)
    }

    /// Leaves the line, whether served or not.
    pub fn leave(&mut self, queue: &str, program: &str, ticket: u64) {
        let key = (queue.to_string(), program.to_string());
        if let Some(line) = self.lines.get_mut(&key) {
            line.retain(|t| *t != ticket);
            if line.is_empty() {
                self.lines.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served_per_program() {
        let mut turns = Turns::default();
        let a = turns.join("Q", "worker");
        let b = turns.join("Q", "worker");
        let other = turns.join("Q", "other");
        assert!(turns.is_first("Q", "worker", a));
        assert!(!turns.is_first("Q", "worker", b));
        assert!(turns.is_first("Q", "other", other));
        turns.leave("Q", "worker", a);
        assert!(turns.is_first("Q", "worker", b));
        let a2 = turns.join("Q", "worker");
        assert!(!turns.is_first("Q", "worker", a2));
        turns.leave("Q", "worker", b);
        turns.leave("Q", "worker", a2);
        assert!(turns.lines.len() == 1);
    }
}
