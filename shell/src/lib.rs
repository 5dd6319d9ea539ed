//! qmadmin, the administration shell of qm. It speaks Tuxedo's qmadmin grammar (commands,
//! abbreviations, prompts and defaults) so that old scripts run unchanged, and sends what
//! they ask for to the daemon.
//!
//! # Layout
//! * [`grammar`]: the nom parser for one input line and for `-c` scripts.
//! * [`catalog`]: the command table; [`commands`]: the commands, one module per family;
//!   [`manual`]: how `help` explains one.
//! * [`shell`]: the running shell: daemon calls, prompting, output.
//! * [`repl`]: the command loop; [`input`]: terminal (rustyline) or stream input;
//!   [`complete`]: completion and hints.
//! * [`interrupt`]: Ctrl-C while a command runs.
//! * [`getopt`]: dash options; [`render`]: tables and JSON; [`pager`]: paging.
//! * [`connect`]: finding (and starting) the daemon.

pub mod catalog;
pub mod commands;
pub mod complete;
pub mod connect;
pub mod getopt;
pub mod grammar;
pub mod input;
pub mod interrupt;
pub mod manager;
pub mod manual;
pub mod options;
pub mod pager;
pub mod progress;
pub mod render;
pub mod repl;
pub mod shell;
pub mod table;

use input::{Input, NoInput, StdinInput, TtyInput};
use options::Options;
use std::io::IsTerminal;

/// Runs qmadmin; returns the exit status: 0 when every command succeeded, 1 otherwise.
pub fn main(options: Options) -> i32 {
    let names = std::sync::Arc::default();
    let input: Box<dyn Input> = if std::io::stdin().is_terminal() {
        match TtyInput::new(complete::Helper { names: std::sync::Arc::clone(&names) }) {
            Ok(t) => Box::new(t),
            Err(_) => Box::new(StdinInput::new(false)),
        }
    } else if options.commands.is_some() {
        // With -c, standard input carries message bodies, never answers to prompts.
        Box::new(NoInput)
    } else {
        // Not a lock held for the whole session: `qenqueue` may read a body from stdin.
        // Under --json standard output carries JSON only: no prompts.
        Box::new(StdinInput::new(options.json))
    };
    run(options, input, names)
}

/// Runs qmadmin on a given input (commands and prompt answers come from it unless
/// `options.commands` is set).
pub fn run(
    mut options: Options,
    input: Box<dyn Input>,
    names: std::sync::Arc<std::sync::Mutex<qm_common::protocol::Names>>,
) -> i32 {
    if options.device.as_deref() == Some(std::path::Path::new(MANAGERS)) {
        return run_managers(&options);
    }
    if let Err(e) = manager::resolve(&mut options) {
        eprintln!("ERROR: {}", qm_common::error::shown_lines(&e));
        return 1;
    }
    if options.connect.is_some() || options.connect_file.is_some() {
        return run_remote(options, input, names);
    }
    let device = match options.device.clone().or_else(|| {
        std::env::var_os(qm_common::paths::QMCONFIG_ENV).filter(|v| !v.is_empty()).map(Into::into)
    }) {
        // As in Tuxedo: a relative device would be created under one name and named another
        // way by crdl, which stores absolute paths only.
        Some(d) if std::path::Path::new(&d).is_relative() => {
            let what = if options.device.is_some() { "The device" } else { "QMCONFIG" };
            eprintln!(
                "ERROR: {what} must be an absolute path name ('{}' is relative)",
                qm_common::error::shown(&d.to_string_lossy())
            );
            return 1;
        }
        Some(d) => qm_common::paths::absolute(&d),
        None => {
            eprintln!(
                "ERROR: QMCONFIG not set (give the device as an argument or set QMCONFIG; or \
                 name a queue manager with QM_MANAGER or a profile: help managers)"
            );
            return 1;
        }
    };
    let Some(runtime) = new_runtime() else { return 1 };
    // Starting a daemon only to stop it would be work for nothing (and a log line).
    let only_stop = options.commands.as_deref().is_some_and(only_stops);
    let autostart = !options.no_start && !only_stop;
    let connected =
        runtime.block_on(connect::connect(&device, options.socket.as_deref(), autostart));
    let client = match connected {
        Ok(c) => c,
        Err(e) if only_stop && e.starts_with("no qmd answers") => {
            let text = format!("INFO: no qmd serves {}: nothing to stop", device.display());
            if options.json {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
            return 0;
        }
        Err(e) => {
            eprintln!("ERROR: {}", qm_common::error::shown_lines(&e));
            return 1;
        }
    };
    let mut sh = shell::Shell::new(runtime, client, device.clone(), input);
    let socket = options.socket.clone();
    sh.reconnect = Some(Box::new(move |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(connect::connect(&device, socket.as_deref(), false))
    }));
    start(sh, &options, names)
}

/// `qmadmin managers`: the word where a device would be.
const MANAGERS: &str = "managers";

/// `qmadmin managers [--json]`: lists the profile's managers without a daemon of its own.
fn run_managers(options: &Options) -> i32 {
    if options.commands.is_some() {
        eprintln!("ERROR: qmadmin managers takes no -c: it only lists the queue managers");
        return 1;
    }
    let Some(runtime) = new_runtime() else { return 1 };
    match commands::managers::listing(&runtime, options.json) {
        Ok((text, _)) => {
            println!("{}", text.trim_end());
            0
        }
        Err(e) => {
            eprintln!("ERROR: {}", qm_common::error::shown_lines(&e));
            1
        }
    }
}

/// Runs qmadmin against a daemon reached by address or connection file: nothing is started,
/// and the device is the one the daemon says it serves.
fn run_remote(
    options: Options,
    input: Box<dyn Input>,
    names: std::sync::Arc<std::sync::Mutex<qm_common::protocol::Names>>,
) -> i32 {
    let Some(runtime) = new_runtime() else { return 1 };
    let kind = qm_common::protocol::ClientKind::Admin;
    let (connected, to) = match (&options.connect_file, &options.connect) {
        (Some(file), _) => (
            runtime.block_on(qm_common::client::Client::connect_file(file, "qmadmin", kind)),
            format!("connection file {}", file.display()),
        ),
        (None, Some(text)) => match qm_common::address::Address::parse_list(text) {
            Ok(addresses) => {
                let connected = runtime.block_on(connect::connect_first(&addresses));
                let to = match &connected {
                    Ok((i, _)) => addresses[*i].to_string(),
                    Err(_) => text.clone(),
                };
                (connected.map(|(_, c)| c), to)
            }
            Err(e) => {
                eprintln!("ERROR: --connect: {e}");
                return 1;
            }
        },
        (None, None) => unreachable!("checked by the caller"),
    };
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR: {} ({to})", qm_common::error::shown_lines(&e.message));
            return 1;
        }
    };
    let device = std::path::PathBuf::from(&client.welcome().device);
    let mut sh = shell::Shell::new(runtime, client, device, input);
    sh.remote = Some(to);
    let (file, connect) = (options.connect_file.clone(), options.connect.clone());
    sh.reconnect = Some(Box::new(move |runtime: &tokio::runtime::Runtime| {
        let client = match (&file, &connect) {
            (Some(file), _) => {
                runtime.block_on(qm_common::client::Client::connect_file(file, "qmadmin", kind))
            }
            (None, Some(text)) => {
                let addresses = qm_common::address::Address::parse_list(text)?;
                runtime.block_on(connect::connect_first(&addresses)).map(|(_, c)| c)
            }
            (None, None) => unreachable!("checked by the caller"),
        };
        client.map_err(|e| e.message)
    }));
    start(sh, &options, names)
}

/// Runs the command loop of a connected shell.
fn start(
    mut sh: shell::Shell,
    options: &Options,
    names: std::sync::Arc<std::sync::Mutex<qm_common::protocol::Names>>,
) -> i32 {
    let device = sh.device.clone();
    sh.names = names;
    sh.json = options.json;
    sh.script_mode = options.commands.is_some();
    let script = options.commands.as_deref().map(|c| grammar::split_script(c).into());
    if script.is_none() {
        let banner = format!(
            "qmadmin - qm {}: administration of queue spaces and queues\nQMCONFIG={}",
            env!("CARGO_PKG_VERSION"),
            device.display()
        );
        // Under --json standard output carries JSON only.
        if options.json {
            eprintln!("{banner}");
        } else {
            println!("{banner}");
        }
        if sh.input.interactive() {
            sh.refresh_names();
        }
    }
    repl::run(&mut sh, script)
}

/// Whether a `-c` script is just `daemon stop`.
fn only_stops(script: &str) -> bool {
    let lines: Vec<grammar::Line> =
        grammar::split_script(script).iter().filter_map(|l| grammar::parse_line(l).ok()).collect();
    let commands: Vec<&grammar::Line> =
        lines.iter().filter(|l| matches!(l, grammar::Line::Command { .. })).collect();
    matches!(commands.as_slice(), [grammar::Line::Command { name, args }]
        if name == "daemon" && args.len() == 1 && args[0] == "stop")
}

/// The runtime a session's requests run on; `None` (said on standard error) when it cannot
/// be made.
fn new_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("ERROR: cannot start: {e}");
            None
        }
    }
}
