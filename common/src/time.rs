//! Times as qm shows and takes them: seconds since the Unix epoch inside, local time
//! `YYYY-MM-DD HH:MM:SS` for people.

use chrono::{Local, TimeZone};

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Local time of `secs`, e.g. `2026-11-23 07:31:58`.
pub fn format_local(secs: u64) -> String {
    match Local.timestamp_opt(secs as i64, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => secs.to_string(),
    }
}
