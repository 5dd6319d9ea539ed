//! Backups (`qbackup`, `qrestore`): what a backup directory's manifest records, and what
//! the commands report.

use crate::verify::SpaceChecked;
use serde::{Deserialize, Serialize};

/// The manifest's name in a backup directory. It is written last: a directory without it
/// holds a backup that did not finish.
pub const MANIFEST: &str = "manifest.json";

/// The manifest format this qm writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// What a backup holds, written as JSON into the backup directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The qm release that made it.
    pub qm_version: String,
    /// When the snapshot was taken, seconds since the epoch.
    pub taken: u64,
    /// The device backed up, as its daemon named it.
    pub device: String,
    pub page_size: u32,
    /// The files, the device file first.
    pub files: Vec<BackedUpFile>,
    /// The queue spaces and what they held, as checked in the backup.
    pub qspaces: Vec<SpaceChecked>,
    /// The longest time writers were held while the snapshot was taken, microseconds.
    pub longest_pause_us: u64,
    /// The longest any writer paused from the snapshot to the manifest, microseconds: one
    /// group of writes made durable (a slow disk sync included) with the checkpoint work
    /// after it, which requests arriving meanwhile waited for. Not in manifests of qm
    /// before it (read as 0).
    #[serde(default)]
    pub longest_writer_pause_us: u64,
}

/// One file of the device, as backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedUpFile {
    /// Its path in the device (the device file's path for the device file).
    pub original: String,
    /// Its name in the backup directory.
    pub name: String,
    pub bytes: u64,
    /// CRC-32 of the whole file, as 8 hex digits.
    pub crc32: String,
    /// Records copied (every table's), and journal groups applied on top.
    pub records: u64,
    pub journal_groups: u64,
    /// Its body segments, copied beside it as `NAME.bodies.N`. Not in manifests of qm
    /// before them (read as none).
    #[serde(default)]
    pub segments: Vec<BackedUpSegment>,
}

impl BackedUpFile {
    /// Bytes of its copy and of its body segments' copies.
    pub fn total_bytes(&self) -> u64 {
        self.bytes + self.segments.iter().map(|s| s.bytes).sum::<u64>()
    }
}

/// One body segment of a file, as backed up: the part of it the snapshot points into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedUpSegment {
    /// Its number, the `N` of `NAME.bodies.N`.
    pub number: u32,
    /// Its name in the backup directory.
    pub name: String,
    pub bytes: u64,
    /// CRC-32 of the whole copy, as 8 hex digits.
    pub crc32: String,
}

/// What `qbackup` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// The backup directory, absolute.
    pub dir: String,
    pub manifest: Manifest,
    /// How long it took, snapshot to verified manifest, in milliseconds.
    pub millis: u64,
}

/// What `qrestore` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub device: String,
    /// Each file: where it was, where it is now.
    pub files: Vec<(String, String)>,
    pub qspaces: Vec<SpaceChecked>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest written before writers' pauses were measured still reads, as 0.
    #[test]
    fn a_manifest_without_the_writers_pause_reads_as_zero() {
        let old = r#"{"format":1,"qm_version":"0.1.0","taken":1,"device":"/d","page_size":4096,
            "files":[],"qspaces":[],"longest_pause_us":1500}"#;
        let manifest: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!((manifest.longest_pause_us, manifest.longest_writer_pause_us), (1500, 0));
    }
}
