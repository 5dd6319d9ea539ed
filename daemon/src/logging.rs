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

/// Opens a log for appending, creating it owner-only. Logs sit at predictable paths
/// (`DEVICE.log`), so a symbolic link there is refused rather than followed, and so is a
/// file another user planted (qmd would otherwise write into it, maybe as root).
pub fn open_log(path: &Path) -> Result<std::fs::File, String> {
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.create(true).append(true), 0o600);
    let file = qm_common::trust::open_no_follow(path, &mut options, "log file")?;
    qm_common::trust::check_owner(&file, path, "log file")?;
    Ok(file)
}

/// Sends logs to `file` (appending) or to standard error.
pub fn init(log_level: u8, file: Option<&Path>) -> Result<(), String> {
    // A log that cannot be written (its disk is full) is not reported on standard error:
    // that would panic the thread logging when standard error is on the same full disk.
    let builder = tracing_subscriber::fmt()
        .with_max_level(level(log_level))
        .with_target(false)
        .log_internal_errors(false);
    match file {
        Some(path) => {
            let f = open_log(path)?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init();
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).with_writer(std::io::stderr).init()
        }
    }
    Ok(())
}
