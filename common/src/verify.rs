//! What `qverify` (and `qmd --verify`) report: what was checked and every problem found.

use serde::{Deserialize, Serialize};

/// The problems found, each with the place it was found in. Past [`Problems::MAX`] they
/// are only counted, so that a badly damaged device gives a readable report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problems {
    pub listed: Vec<Problem>,
    /// How many more were found than are listed.
    pub more: u64,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where: a file, the UDL, the VTOC, a queue space, a message.
    pub place: String,
    pub what: String,
}

impl Problems {
    pub const MAX: usize = 200;

    pub fn add(&mut self, place: &str, what: impl Into<String>) {
        if self.listed.len() < Self::MAX {
            self.listed.push(Problem { place: place.to_string(), what: what.into() });
        } else {
            self.more += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.listed.len() as u64 + self.more
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// One queue space as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceChecked {
    pub name: String,
    /// The file it lives in.
    pub file: String,
    pub messages: u64,
    /// Bytes of message bodies.
    pub bytes: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The device file checked.
    pub device: String,
    /// Files of the device that were opened and identified.
    pub files: Vec<String>,
    pub udl_entries: u32,
    pub vtoc_entries: u32,
    pub qspaces: Vec<SpaceChecked>,
    pub problems: Problems,
}
