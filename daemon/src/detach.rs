//! `qmd --detach`: start the daemon in the background and return once it serves.
//!
//! The parent starts itself again without `--detach`, in its own process group, with the
//! child's standard output on a pipe. The child prints one line when it is ready (or why it
//! cannot start), after any warnings, and the parent relays them and exits accordingly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Environment variable telling a child it was started by `--detach`.
pub const DETACHED_ENV: &str = "QMD_DETACHED";
/// First word of the line a detached child prints when it serves.
pub const READY: &str = "ready";
/// First word of a warning line a detached child prints before it is ready.
pub const WARNING: &str = "warning";

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
    // The child's standard error goes to its log, opened as the child opens it.
    let stderr = match crate::logging::open_log(log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("qmd: {e}");
            return 1;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
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
        let mut out = BufReader::new(out);
        while out.read_line(&mut line).is_ok_and(|n| n > 0) {
            match line.strip_prefix(WARNING) {
                Some(warning) => eprintln!("qmd: WARN{}", warning.trim_end()),
                None => break,
            }
            line.clear();
        }
    }
    match line.strip_prefix(READY) {
        Some(rest) => {
            println!("qmd{}", rest.trim_end());
            0
        }
        None => {
            let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(1);
            // The child says `error: ...`; ours is the one `qmd:` in front.
            let why = line.trim();
            let why = why.strip_prefix("error: ").unwrap_or(why);
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
