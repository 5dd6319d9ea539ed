//! Start-up and the accept loop: lock the device, bind the control socket, serve sessions
//! until SIGTERM, SIGINT or a stop request, then clean up.

use crate::detach;
use crate::options::Options;
use crate::session;
use crate::state::Daemon;
use qm_common::trust;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

/// How often the daemon checks, unprompted, that its device file is still there.
const DEVICE_CHECK: Duration = Duration::from_secs(1);
/// How long sessions get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long closing the device's files may take at a stop.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Runs `qmd` with parsed options; returns the process exit status.
pub fn main(options: Options) -> i32 {
    let device = match options.device_path() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("qmd: {e}");
            return 2;
        }
    };
    if options.detach && !detach::is_detached_child() {
        let log = options.log_file.clone().unwrap_or_else(|| qm_common::paths::log_path(&device));
        return detach::spawn_background(&log);
    }
    let log_file = options
        .log_file
        .clone()
        .or_else(|| detach::is_detached_child().then(|| qm_common::paths::log_path(&device)));
    if let Err(e) = crate::logging::init(options.log_level, log_file.as_deref()) {
        return fail(&e);
    }
    warn_about_directory(&device, log_file.is_none() && options.log_level >= 2);
    let socket = qm_common::paths::resolve_socket(&device, options.socket.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let settings = Settings {
        txn_timeout: Duration::from_secs(u64::from(options.transaction_timeout)),
        config: options.config.clone().map(|c| qm_common::paths::absolute(&c)),
    };
    match runtime.block_on(serve_with(device, socket, settings)) {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// Reports a start-up failure where the starter will see it.
fn fail(message: &str) -> i32 {
    if detach::is_detached_child() {
        tracing::error!("{message}");
        println!("error: {message}");
    } else {
        // The log may be standard error itself: say it once.
        eprintln!("qmd: {message}");
    }
    1
}

/// Takes the device's lock file; held for the daemon's life. A symbolic link in its place
/// is refused (nothing is created at its target), and so is anything but a regular file.
fn lock_device(device: &Path) -> Result<File, String> {
    let path = qm_common::paths::lock_path(device);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true).mode(0o600);
    let file = trust::open_no_follow(&path, &mut options, "lock file")?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!(
            "lock file {} is not a regular file; remove it (qmd creates its own)",
            path.display()
        ));
    }
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            format!(
                "another qmd already serves {} (lock {} is held)",
                device.display(),
                path.display()
            )
        },
    )?;
    Ok(file)
}

/// Binds the control socket, owner-only; a stale socket file is replaced. A socket in the
/// private fallback directory needs that directory to be ours alone.
fn bind(socket: &Path, device: &Path) -> Result<UnixListener, String> {
    qm_common::paths::prepare_socket_dir(socket)?;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; qmd does not replace it (remove it or choose \
                 another socket with --socket)",
                socket.display()
            ));
        }
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => {
                return Err(format!(
                    "another qmd is listening on {} (device {})",
                    socket.display(),
                    device.display()
                ));
            }
            // Nobody listens: a socket left by a daemon that was killed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(format!(
                    "cannot tell whether a daemon listens on {} ({e}); remove it if none does",
                    socket.display()
                ));
            }
        }
        std::fs::remove_file(socket)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", socket.display()))?;
    }
    // Created owner read-write (0600) by the umask, rather than changed by path afterwards:
    // a chmod by path could be diverted to another file through a link put in its place.
    // Nothing else creates files while qmd starts.
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(socket);
    rustix::process::umask(umask);
    listener.map_err(|e| format!("cannot bind {}: {e}", socket.display()))
}

/// Warns, in the log and where whoever started qmd sees it, about a device directory that
/// others may write. `stderr_has_warnings`: the log goes to standard error at a level that
/// shows warnings, so it is said there once already.
fn warn_about_directory(device: &Path, stderr_has_warnings: bool) {
    let Some(warning) = device.parent().and_then(trust::open_directory_warning) else { return };
    tracing::warn!("{warning}");
    if detach::is_detached_child() {
        // The parent relays it before the ready line.
        println!("{}: {warning}", detach::WARNING);
    } else if !stderr_has_warnings {
        eprintln!("qmd: WARN: {warning}");
    }
}

/// Daemon settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time-out of transactions that set none.
    pub txn_timeout: Duration,
    /// Configuration file; `None`: `DEVICE.toml` when it exists.
    pub config: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { txn_timeout: Duration::from_secs(30), config: None }
    }
}

/// Serves `device` on `socket` until SIGTERM, SIGINT or a stop request, with default
/// settings.
pub async fn serve(device: PathBuf, socket: PathBuf) -> Result<(), String> {
    serve_with(device, socket, Settings::default()).await
}

/// Serves `device` on `socket` with `settings`.
pub async fn serve_with(
    device: PathBuf,
    socket: PathBuf,
    settings: Settings,
) -> Result<(), String> {
    // Everything qmd creates (device files, socket, lock, logs) is for its owner only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _lock = lock_device(&device)?;
    let daemon = Arc::new(Daemon::new(device.clone(), socket.clone()));
    daemon.set_txn_timeout(settings.txn_timeout);
    let default_config = qm_common::paths::config_path(&device);
    daemon.set_config_path(
        settings.config.or_else(|| default_config.exists().then_some(default_config)),
    );
    daemon.reload().map_err(|e| e.message)?;
    if let Some(problem) = daemon.startup_problem() {
        return Err(problem);
    }
    let listener = bind(&socket, &device)?;
    let line =
        format!("pid {} serving {} on {}", std::process::id(), device.display(), socket.display());
    tracing::info!("{line}");
    if detach::is_detached_child() {
        println!("{}: {line}", detach::READY);
    } else {
        println!("qmd: {line}");
    }
    let orphans = crate::service::kill_orphans(&device);
    if orphans > 0 {
        tracing::warn!("killed {orphans} service process group(s) left by a previous qmd");
    }
    boot_forwarders(&daemon);
    let result = accept_loop(&daemon, listener).await;
    // Closed files open at the next start without a repair. Not waited for forever: a
    // file left open is only repaired then.
    let closing = tokio::task::spawn_blocking({
        let daemon = daemon.clone();
        move || daemon.close_storage()
    });
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    result
}

/// Boots the forwarders the configuration marks `boot = true`.
fn boot_forwarders(daemon: &Arc<Daemon>) {
    for id in daemon.forwarders.boot_list() {
        let d = daemon.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = d.forwarders.clone().boot(&d, id) {
                tracing::error!("{}", e.message);
            }
        });
    }
}

async fn accept_loop(daemon: &Arc<Daemon>, listener: UnixListener) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut stop = daemon.shutdown_signal();
    let mut check = tokio::time::interval(DEVICE_CHECK);
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { sessions.spawn(session::serve(daemon.clone(), stream)); }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = stop.wait_for(|s| *s) => { tracing::info!("stop requested: shutting down"); break; }
            _ = check.tick() => {
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || drop(d.store())).await;
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    daemon.request_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
