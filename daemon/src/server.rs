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
use tokio::time::Instant;

/// How often the daemon checks, unprompted, that its device file is still there.
const DEVICE_CHECK: Duration = Duration::from_secs(1);
/// How long a client may take to finish a request it has begun sending, by default.
pub const FRAME_LIMIT: Duration = Duration::from_secs(30);
/// The shortest and the longest pause before accepting again after `accept` failed.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How often failures to accept are logged while they go on.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long sessions get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long closing the device's files may take at a stop.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Runs `qmd` with parsed options; returns the process exit status.
pub fn main(options: Options) -> i32 {
    return_large_blocks_when_freed();
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
    let stderr_has_warnings = log_file.is_none() && options.log_level >= 2;
    if let Some(dir) = device.parent() {
        warn_about_directory(dir, stderr_has_warnings);
    }
    let socket = qm_common::paths::resolve_socket(&device, options.socket.as_deref());
    let http = match options.http_face() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("qmd: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let settings = Settings {
        txn_timeout: Duration::from_secs(u64::from(options.transaction_timeout)),
        frame_limit: Duration::from_secs(u64::from(options.frame_timeout)),
        config: options.config.clone().map(|c| qm_common::paths::absolute(&c)),
        stderr_has_warnings,
        http,
    };
    match runtime.block_on(serve_with(device, socket, settings)) {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// glibc raises its threshold for serving a block by `mmap` to the size of the largest
/// such block freed (up to 32 MiB). From then on, the large buffers of requests (a frame
/// of megabytes, begun and dropped) come from the heap and stay resident once freed: a
/// burst of large or half-sent requests would pin that memory for the daemon's life. A
/// fixed threshold (glibc's default, 128 KiB) gives them back to the system when freed.
fn return_large_blocks_when_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread is
    // started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
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
/// is refused (nothing is created at its target), and so is anything but a regular file of
/// ours or root's.
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
    // Another user's lock file was planted: whoever owns it could hold it (and every qmd
    // would take the device for served) or remove it while we hold it.
    trust::check_owner(&file, &path, "lock file")?;
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

/// Warns, in the log and where whoever started qmd sees it, about a directory of device
/// files that others may write. `stderr_has_warnings`: the log goes to standard error at a
/// level that shows warnings, so it is said there once already.
fn warn_about_directory(dir: &Path, stderr_has_warnings: bool) {
    let Some(warning) = trust::open_directory_warning(dir) else { return };
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
    /// How long a client may take to finish a request it has begun sending.
    pub frame_limit: Duration,
    /// Configuration file; `None`: `DEVICE.toml` when it exists.
    pub config: Option<PathBuf>,
    /// The log is standard error at a level that shows warnings: start-up warnings need not
    /// be repeated there.
    pub stderr_has_warnings: bool,
    /// The HTTP face (`-w`), if asked for.
    pub http: Option<crate::http::HttpFace>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            txn_timeout: Duration::from_secs(30),
            frame_limit: FRAME_LIMIT,
            config: None,
            stderr_has_warnings: false,
            http: None,
        }
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
    raise_open_file_limit();
    let lock = lock_device(&device)?;
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
    for dir in entry_directories(&daemon) {
        warn_about_directory(&dir, settings.stderr_has_warnings);
    }
    // Before the control socket, which a failure here would leave behind. All addresses
    // until `-i` chooses one.
    let any = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let http_listener = match &settings.http {
        Some(face) => Some(crate::http::bind(face, any).await?),
        None => None,
    };
    let listener = bind(&socket, &device)?;
    let line =
        format!("pid {} serving {} on {}", std::process::id(), device.display(), socket.display());
    tracing::info!("{line}");
    if detach::is_detached_child() {
        println!("{}: {line}", detach::READY);
    } else {
        println!("qmd: {line}");
    }
    end_orphans(&daemon);
    boot_forwarders(&daemon);
    // Plain HTTP for now: an HTTPS handshake (`-k`) is the fourth argument.
    let http = settings.http.zip(http_listener).map(|(face, listener)| {
        tokio::spawn(crate::http::serve(daemon.clone(), listener, face, None))
    });
    let result = accept_loop(&daemon, listener).await;
    if let Some(http) = http {
        let _ = http.await;
    }
    // Let go of the device before the socket disappears, and of the lock last: whoever
    // waits for either (qmadmin's `daemon stop`, a new qmd) finds the device free. Closed
    // files open at the next start without a repair. Not waited for forever: a file left
    // open is only repaired then.
    let closing = tokio::task::spawn_blocking({
        let daemon = daemon.clone();
        move || daemon.close_storage()
    });
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    tracing::info!("stopped");
    result
}

/// The directories of the device list's entries on other files than the device, apart from
/// the device's own (warned about already): files there are as open to replacement.
fn entry_directories(daemon: &Daemon) -> Vec<PathBuf> {
    let udl = daemon.store().device.as_ref().and_then(|d| d.udl().ok()).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in udl {
        let dir = Path::new(&entry.name).parent().map(Path::to_path_buf);
        if let Some(dir) = dir.filter(|d| Some(d.as_path()) != daemon.device_path.parent())
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    dirs
}

/// Ends the services and threshold commands a killed qmd of this device left running, and
/// records what became of those firings; before any queue space is loaded.
fn end_orphans(daemon: &Daemon) {
    let orphans = crate::command::end_orphans(&daemon.device_path);
    if orphans.services > 0 {
        tracing::warn!(
            "killed {} service process group(s) left by a previous qmd",
            orphans.services
        );
    }
    if !orphans.thresholds.is_empty() {
        let which: Vec<String> =
            orphans.thresholds.iter().map(|o| format!("{}/{}", o.qspace, o.queue)).collect();
        tracing::warn!(
            "killed {} threshold command(s) left running by a previous qmd (queues {})",
            which.len(),
            which.join(", ")
        );
        crate::threshold::record_orphans(&daemon.store(), &orphans.thresholds);
    }
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
    let mut checking: Option<tokio::task::JoinHandle<()>> = None;
    let mut sessions = JoinSet::new();
    let mut failures = AcceptFailures::default();
    // While accepting fails, the next attempt waits until then.
    let mut resume: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept(), if resume.is_none() => match accepted {
                Ok((stream, _)) => {
                    failures.recovered();
                    sessions.spawn(session::serve_unix(daemon.clone(), stream));
                }
                Err(e) => resume = Some(Instant::now() + failures.failed(&e)),
            },
            _ = tokio::time::sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {
                resume = None;
            }
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = stop.wait_for(|s| *s) => { tracing::info!("stop requested: shutting down"); break; }
            _ = check.tick() => {
                // Not awaited: the check must never hold up accepting or signals.
                if checking.as_ref().is_none_or(|c| c.is_finished()) {
                    let d = daemon.clone();
                    checking = Some(tokio::task::spawn_blocking(move || d.refresh_if_idle()));
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    daemon.request_shutdown();
    // A check still running holds the daemon (and its device file) open: it is short.
    if let Some(check) = checking {
        let _ = check.await;
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Failures to accept a connection in a row, and how they were reported.
///
/// `accept` fails over and over while the cause lasts (no file descriptor is left, above
/// all): the listener stays ready, so retrying at once would spin. Each failure in a row
/// doubles the pause before the next attempt, up to [`ACCEPT_PAUSE_MAX`]; the log gets the
/// first failure and then one line per [`ACCEPT_LOG_EVERY`]. Open sessions are served
/// meanwhile.
#[derive(Default)]
pub(crate) struct AcceptFailures {
    pause: Duration,
    /// Failures since the run began, and since the last line in the log.
    total: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl AcceptFailures {
    /// Counts a failure, logs it if due; returns how long to wait before the next attempt.
    pub(crate) fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
        self.total += 1;
        self.unlogged += 1;
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY);
        if due {
            let cause = if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) {
                format!(
                    "all {} file descriptors this process may open are in use",
                    open_file_limit()
                )
            } else {
                e.to_string()
            };
            let earlier = match self.unlogged - 1 {
                0 => String::new(),
                n => format!(" ({n} more failures since the last report)"),
            };
            tracing::warn!(
                "cannot accept connections: {cause}{earlier}; retrying after pauses of up to \
                 {} s; open sessions are still served",
                ACCEPT_PAUSE_MAX.as_secs()
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
        self.pause
    }

    /// Accepting works (again).
    pub(crate) fn recovered(&mut self) {
        if self.total > 0 {
            let failures = qm_common::plural::count(self.total, "failure", "failures");
            tracing::warn!("accepting connections again after {failures}");
        }
        *self = AcceptFailures::default();
    }
}

/// The soft limit of open files, for messages.
fn open_file_limit() -> String {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// Raises the soft limit of open files to the hard limit: every session holds a descriptor,
/// and a daemon serving many clients should not run out at the conservative default.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit still has the kernel's ceiling on descriptors.
    let ceiling = limit.maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok())
    });
    match (limit.current, ceiling) {
        (Some(soft), Some(hard)) if soft < hard => {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), ..limit }) {
                Ok(()) => tracing::info!("limit of open files raised from {soft} to {hard}"),
                Err(e) => tracing::warn!("cannot raise the limit of open files from {soft}: {e}"),
            }
        }
        _ => tracing::info!("limit of open files: {}", open_file_limit()),
    }
}
