//! Start-up and the accept loop: lock the device, bind the control socket, serve sessions
//! until SIGTERM, SIGINT or a stop request, then clean up.

use crate::detach;
use crate::options::Options;
use crate::session;
use crate::state::Daemon;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

/// How often the daemon checks, unprompted, that its device file is still there.
const DEVICE_CHECK: Duration = Duration::from_secs(1);
/// How long a client may take to finish a request it has begun sending, by default.
pub const FRAME_LIMIT: Duration = Duration::from_secs(30);
/// How long sessions get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

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
        return detach::spawn_background(&qm_common::paths::log_path(&device));
    }
    let log_file = options
        .log_file
        .clone()
        .or_else(|| detach::is_detached_child().then(|| qm_common::paths::log_path(&device)));
    if let Err(e) = crate::logging::init(options.log_level, log_file.as_deref()) {
        return fail(&e);
    }
    let socket = qm_common::paths::resolve_socket(&device, options.socket.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let settings = Settings {
        txn_timeout: Duration::from_secs(u64::from(options.transaction_timeout)),
        frame_limit: Duration::from_secs(u64::from(options.frame_timeout)),
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

/// Takes the device's lock file; held for the daemon's life.
fn lock_device(device: &Path) -> Result<File, String> {
    let path = qm_common::paths::lock_path(device);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
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

/// Binds the control socket, owner-only; a stale socket file is replaced.
fn bind(socket: &Path, device: &Path) -> Result<UnixListener, String> {
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "another qmd is listening on {} (device {})",
                socket.display(),
                device.display()
            ));
        }
        std::fs::remove_file(socket)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", socket.display()))?;
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", socket.display()))?;
    Ok(listener)
}

/// Daemon settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time-out of transactions that set none.
    pub txn_timeout: Duration,
    /// How long a client may take to finish a request it has begun sending.
    pub frame_limit: Duration,
    /// Configuration file; `None`: `DEVICE.toml` when it exists.
    pub config: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { txn_timeout: Duration::from_secs(30), frame_limit: FRAME_LIMIT, config: None }
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
    daemon.set_frame_limit(settings.frame_limit);
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
