//! `qmd --detach`: start the daemon in the background and return once it serves.
//!
//! The parent starts itself again without `--detach`, in its own process group, with the
//! child's standard output on a pipe. The child prints one line when it is ready (or why it
//! cannot start) and the parent relays that line and exits accordingly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Environment variable telling a child it was started by `--detach`.
pub const DETACHED_ENV: &str = "QMD_DETACHED";
/// First word of the line a detached child prints when it serves.
pub const READY: &str = "ready";

/// Starts the background daemon and waits for its first line; returns the exit status.
pub fn spawn_background(log: &std::path::Path) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("qmd: cannot find own executable: {e}");
            return 1;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--detach").collect();
    let stderr = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().create(true).append(true),
        0o600,
    )
    .open(log);
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.map(Stdio::from).unwrap_or_else(|_| Stdio::null()));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qmd: cannot start the daemon: {e}");
            return 1;
        }
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match line.strip_prefix(READY) {
        Some(rest) => {
            println!("qmd{}", rest.trim_end());
            0
        }
        None => {
            let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(1);
            let why = line.trim();
            eprintln!(
                "qmd: {}",
                if why.is_empty() { "the daemon exited before it was ready" } else { why }
            );
            if status == 0 { 1 } else { status }
        }
    }
}

/// True in a child started by `--detach`.
pub fn is_detached_child() -> bool {
    std::env::var_os(DETACHED_ENV).is_some()
}
