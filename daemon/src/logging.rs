//! Logging through tracing, at mqserver's levels: 0 none, 1 errors, 2 warnings, 3 all.

use std::path::Path;
use tracing_subscriber::filter::LevelFilter;

fn level(l: u8) -> LevelFilter {
    match l {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Sends logs to `file` (appending) or to standard error.
pub fn init(log_level: u8, file: Option<&Path>) -> Result<(), String> {
    let builder = tracing_subscriber::fmt().with_max_level(level(log_level)).with_target(false);
    match file {
        Some(path) => {
            let f = std::os::unix::fs::OpenOptionsExt::mode(
                std::fs::OpenOptions::new().create(true).append(true),
                0o600,
            )
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init();
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).with_writer(std::io::stderr).init()
        }
    }
    Ok(())
}
