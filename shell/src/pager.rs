//! Paging long output through `$PAGER` (default `less -FRX`, which passes short output
//! straight through), as Tuxedo pages through `pg`.

use std::io::Write;
use std::process::{Command, Stdio};

pub fn page(text: &str) -> std::io::Result<()> {
    let pager = std::env::var("PAGER")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "less -FRX".into());
    let mut child = Command::new("sh").arg("-c").arg(&pager).stdin(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait()?;
    Ok(())
}
