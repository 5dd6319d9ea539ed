//! Paging long output through `$PAGER` (default `less -FRX`, which passes short output
//! straight through), as Tuxedo pages through `pg`. A pager that cannot run or fails is
//! reported, and the caller prints the output directly rather than losing it.

use std::io::Write;
use std::process::{Command, Stdio};

/// Shows `text` through the pager; says why when the pager could not show it.
pub fn page(text: &str) -> Result<(), String> {
    let pager = std::env::var("PAGER")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "less -FRX".into());
    let shown = qm_common::error::shown(&pager);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&pager)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start $PAGER '{shown}': {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A pager that is gone (not found, or quit early) must not take qmadmin with it:
        // its exit status says which it was.
        let _ = without_sigpipe(|| stdin.write_all(text.as_bytes()));
    }
    let status = child.wait().map_err(|e| format!("$PAGER '{shown}': {e}"))?;
    if status.success() {
        return Ok(());
    }
    let why = match status.code() {
        Some(127) => "was not found".to_string(),
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(format!("$PAGER '{shown}' {why}"))
}

/// Runs `f` with SIGPIPE ignored, so that writing to a pager that has exited fails with an
/// error instead of ending qmadmin (which restores SIGPIPE's default action at start).
fn without_sigpipe<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: signal(2) with a valid signal and handler; the previous action is put back.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let result = f();
    // SAFETY: as above, restoring what was there.
    unsafe { libc::signal(libc::SIGPIPE, previous) };
    result
}
