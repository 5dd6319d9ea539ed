//! Start-up and the accept loop: lock the device, bind the control socket, serve sessions
//! until SIGTERM, SIGINT or a stop request, then clean up.

use crate::detach;
use crate::net::NetFace;
use crate::options::Options;
use crate::session;
use crate::state::Daemon;
use crate::storage::fence;
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
    crate::storage::files::set_cache_size(u64::from(options.cache_mib) << 20);
    crate::storage::journal::set_checkpoint_bytes(options.checkpoint_mib << 20);
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
    let network_only = options.network_only_options();
    if !network_only.is_empty() {
        eprintln!(
            "qmd: {} only apply to the network face, which is off: give -p PORT or -i ADDR{}",
            network_only.join(", "),
            if options.http.is_some() { " (-w opens only the HTTP face)" } else { "" }
        );
        return 2;
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
        socket_mode: options.socket_mode(),
        net: network_options(&options),
        local_only: options.local_only,
        tls: tls_options(&options),
        policy: crate::net::NetPolicy {
            persistent: options.persistent,
            burst: options.max_events,
            round_robin: options.round_robin,
        },
        http,
        standby: options.standby,
    };
    match runtime.block_on(serve_with(device, socket, settings)) {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// The network face the options ask for, if any.
fn network_options(options: &Options) -> Option<crate::net::NetOptions> {
    options.wants_network().then(|| crate::net::NetOptions {
        address: options.listen_address.clone(),
        port: options.port,
        max_connections: options.max_connections.unwrap_or(1024) as usize,
        idle: options.idle_timeout.map(|s| Duration::from_secs(u64::from(s))),
        persistent: options.persistent,
        connection_file: options.connection_file.as_deref().map(qm_common::paths::absolute),
    })
}

/// The TLS files (`-k`, `-a`, or their environment variables) when the network face is on
/// and a certificate is given.
fn tls_options(options: &Options) -> Option<(PathBuf, Vec<String>)> {
    if !options.wants_network() && options.http.is_none() {
        return None;
    }
    let cert_key = options.cert_key.clone().or_else(|| {
        std::env::var_os(crate::tls::SERVER_CERT_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })?;
    let absolute = |p: &str| qm_common::paths::absolute(Path::new(p)).display().to_string();
    let cas = crate::tls::ca_list(options.ca_chains.as_deref());
    Some((qm_common::paths::absolute(&cert_key), cas.iter().map(|c| absolute(c)).collect()))
}

/// The network face a `[listen]` table asks for; relative paths are taken from the
/// configuration file's directory.
#[allow(clippy::type_complexity)]
fn listen_options(
    listen: &qm_common::config::ListenConfig,
    base: Option<&Path>,
) -> Result<(Option<crate::net::NetOptions>, Option<(PathBuf, Vec<String>)>), String> {
    let resolve = |p: &Path| match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => qm_common::paths::absolute(p),
    };
    let bad = |field: &str, range: &str| format!("[listen] {field} must be {range}");
    if listen.port == Some(0) {
        return Err(bad("port", "1 to 65535"));
    }
    if listen.max_connections.is_some_and(|n| n == 0 || n > 1_000_000) {
        return Err(bad("max_connections", "1 to 1000000"));
    }
    if listen.idle_timeout == Some(0) {
        return Err(bad("idle_timeout", "at least 1 second"));
    }
    let net = crate::net::NetOptions {
        address: listen.address.clone(),
        port: listen.port,
        max_connections: listen.max_connections.unwrap_or(1024) as usize,
        idle: listen.idle_timeout.map(|s| Duration::from_secs(u64::from(s))),
        persistent: listen.persistent,
        connection_file: listen.connection_file.as_deref().map(resolve),
    };
    let cas = listen.ca_chains.iter().map(|c| resolve(Path::new(c)).display().to_string());
    let tls = listen.cert_key.as_deref().map(|k| (resolve(k), cas.collect()));
    Ok((Some(net), tls))
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
pub(crate) fn lock_device(device: &Path) -> Result<File, String> {
    let file = open_lock(device)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| held_by_another(device, &file))?;
    Ok(file)
}

/// Opens (creating) the device's lock file, as every user of it does.
fn open_lock(device: &Path) -> Result<File, String> {
    let path = qm_common::paths::lock_path(device);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true).mode(0o600);
    let file = trust::open_no_follow(&path, &mut options, "lock file")?;
    let meta = file.metadata().map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    // Read and write, a FIFO opens without a reader: say what it is.
    if let Some(kind) = trust::not_regular(&meta) {
        return Err(format!(
            "lock file {} is {kind}, not a regular file; remove it (qmd creates its own)",
            path.display()
        ));
    }
    // Another user's lock file was planted: whoever owns it could hold it (and every qmd
    // would take the device for served) or remove it while we hold it.
    trust::check_owner(&file, &path, "lock file")?;
    Ok(file)
}

fn held_by_another(device: &Path, lock: &File) -> String {
    let holder = fence::read(lock).unwrap_or_default();
    format!(
        "another qmd already serves {} (lock {} is held{})",
        device.display(),
        qm_common::paths::lock_path(device).display(),
        if holder.pid != 0 { format!(" by pid {}", holder.pid) } else { String::new() },
    )
}

/// `--standby`: takes the device's lock, waiting for the daemon that holds it to stop or
/// die. Says that it waits (the ready line of a detached standby); returns the lock and
/// whether it said so.
async fn take_over(device: &Path) -> Result<(File, bool), String> {
    let file = open_lock(device)?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        return Ok((file, false));
    }
    let active = fence::read(&file).unwrap_or_default();
    let line = format!(
        "pid {} standby for {}: waiting for the active qmd{} to stop",
        std::process::id(),
        device.display(),
        if active.pid != 0 { format!(" (pid {})", active.pid) } else { String::new() }
    );
    // SIGHUP (a reload) would end a waiting standby: it has nothing to reload yet. The
    // handler stays for the process's life; the accept loop listens to it later. Before
    // the line that says it waits: whoever reads it may send one at once.
    let _reload = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tracing::info!("{line}");
    announce(&line);
    let file = tokio::task::spawn_blocking(move || {
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("cannot wait for the lock: {e}")),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    tracing::info!("the active qmd let go of {}: taking over", device.display());
    Ok((file, true))
}

/// Raises the device's generation and holds it: from now on, a commit after someone else
/// raised it stops this daemon ([`fence`]).
fn fence_device(device: &Path, lock: &File) -> Result<fence::Fence, String> {
    let explain = |e: std::io::Error| {
        format!(
            "cannot write the fencing generation to {}: {e}",
            qm_common::paths::lock_path(device).display()
        )
    };
    let holder = fence::advance(lock, std::process::id()).map_err(explain)?;
    tracing::info!("serving {} as generation {}", device.display(), holder.generation);
    fence::Fence::hold(device, lock, holder).map_err(explain)
}

/// `qmd --fence`: raises the device's generation, so that a daemon still serving it stops
/// before its next write; returns what to tell the user.
pub fn fence_only(device: &Path) -> Result<String, String> {
    let lock = open_lock(device)?;
    let before = fence::read(&lock).unwrap_or_default();
    let held = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockShared).is_err();
    let after = fence::advance(&lock, 0)
        .map_err(|e| format!("cannot write the fencing generation: {e}; nothing was fenced"))?;
    Ok(match (held, before.pid) {
        (true, pid) if pid != 0 => format!(
            "{} fenced at generation {}: the qmd serving it (pid {pid}) stops before its next \
             write, within a second",
            device.display(),
            after.generation
        ),
        _ => format!(
            "{} fenced at generation {}; no qmd holds it now",
            device.display(),
            after.generation
        ),
    })
}

/// `qmd --end-orphans`: ends the services and threshold commands that a qmd of `device`
/// killed on this machine left running (the next qmd would, but a cluster may start it on
/// another node); returns what to tell the user. Refuses while a qmd serves the device
/// here, since those processes are then its own.
pub fn end_orphans_only(device: &Path) -> Result<String, String> {
    let path = qm_common::paths::lock_path(device);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // No lock file: no qmd ever served the device from this directory.
    let lock = match trust::open_no_follow(&path, &mut options, "lock file") {
        Ok(file) => {
            trust::check_owner(&file, &path, "lock file")?;
            Some(file)
        }
        Err(_) if std::fs::symlink_metadata(&path).is_err() => None,
        Err(e) => return Err(e),
    };
    // Held (shared) while the processes are ended, so that no qmd starts its own meanwhile.
    let free = lock.as_ref().is_none_or(|l| {
        rustix::fs::flock(l, rustix::fs::FlockOperation::NonBlockingLockShared).is_ok()
    });
    if let Some(lock) = lock.as_ref().filter(|_| !free) {
        let holder = fence::read(lock).unwrap_or_default();
        if let Some(why) = served_here(lock, holder.pid) {
            return Err(format!("{why}; nothing was ended"));
        }
    }
    let orphans = crate::command::end_orphans(device);
    let mut ended = Vec::new();
    if orphans.services > 0 {
        ended.push(format!("{} service process group(s)", orphans.services));
    }
    if !orphans.thresholds.is_empty() {
        let n = orphans.thresholds.len();
        ended.push(format!("{n} threshold command(s) (queues {})", orphans.queues()));
    }
    Ok(match ended.is_empty() {
        true => format!("no process of a killed qmd of {} is left here", device.display()),
        false => {
            format!("ended {} left by a killed qmd of {}", ended.join(" and "), device.display())
        }
    })
}

/// Why the lock `lock`, held, may be held by a qmd on this machine (whose services are not
/// orphans): `pid` (from the lock file) is a process here with the file open, or cannot be
/// looked at. None when the holder is elsewhere (a qmd on another node sharing the file).
fn served_here(lock: &File, pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if pid == 0 {
        return Some(
            "a qmd holds the device's lock and the lock file names no pid (it was fenced): \
             wait until that qmd stops"
                .into(),
        );
    }
    let meta = lock.metadata().ok()?;
    let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(format!(
                "cannot tell whether qmd pid {pid}, which holds the device's lock, runs on \
                 this machine (/proc/{pid}/fd: {e})"
            ));
        }
    };
    let holds = fds.flatten().any(|fd| {
        std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    });
    holds.then(|| format!("qmd pid {pid} serves the device on this machine and ends its own"))
}

/// Says the line that tells whoever started qmd that it serves (or waits, as a standby):
/// the ready line of a detached daemon, or a line on standard output.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A reader that went away is no reason to stop.
    let _ = match detach::is_detached_child() {
        true => writeln!(out, "{}: {line}", detach::READY),
        false => writeln!(out, "qmd: {line}"),
    };
    let _ = out.flush();
}

/// Binds the control socket with permissions `mode` (owner-only unless `--socket-mode` said
/// otherwise); a stale socket file is replaced. A socket in the private fallback directory
/// needs that directory to be ours alone, and cannot be shared.
fn bind(socket: &Path, device: &Path, mode: u32) -> Result<UnixListener, String> {
    if mode & 0o066 != 0 && socket.parent() == Some(qm_common::paths::private_dir().as_path()) {
        return Err(format!(
            "--socket-mode {mode:04o} lets other users connect, but the socket {} is in the \
             private directory {}, which only you may enter; give the socket a path they can \
             reach with --socket",
            socket.display(),
            qm_common::paths::private_dir().display()
        ));
    }
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
    // Created with its mode by the umask, rather than changed by path afterwards: a chmod
    // by path could be diverted to another file through a link put in its place, and a
    // socket open to others for a moment could be connected to. Nothing else creates files
    // while qmd starts.
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(!mode & 0o777));
    let listener = UnixListener::bind(socket);
    rustix::process::umask(umask);
    listener.map_err(|e| format!("cannot bind {}: {e}", socket.display()))
}

/// Warns, in the log and where whoever started qmd sees it, about a directory of device
/// files that others may write. `stderr_has_warnings`: the log goes to standard error at a
/// level that shows warnings, so it is said there once already.
fn warn_about_directory(dir: &Path, stderr_has_warnings: bool) {
    if let Some(warning) = trust::open_directory_warning(dir) {
        warn_at_start(&warning, stderr_has_warnings);
    }
}

/// Says a warning at start in the log and where whoever started qmd sees it.
fn warn_at_start(warning: &str, stderr_has_warnings: bool) {
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
    /// Permissions of the control socket; with group or other bits, other users may
    /// connect (and their rights decide).
    pub socket_mode: u32,
    /// The network face, when asked for.
    pub net: Option<crate::net::NetOptions>,
    /// No network face, whatever the configuration says.
    pub local_only: bool,
    /// TLS for the network face: certificate and key file, CA chain files or patterns.
    pub tls: Option<(PathBuf, Vec<String>)>,
    /// How sessions are served.
    pub policy: crate::net::NetPolicy,
    /// The HTTP face (`-w`), if asked for.
    pub http: Option<crate::http::HttpFace>,
    /// Wait for the device as a standby when another daemon serves it.
    pub standby: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            txn_timeout: Duration::from_secs(30),
            frame_limit: FRAME_LIMIT,
            config: None,
            stderr_has_warnings: false,
            socket_mode: crate::options::SOCKET_MODE_DEFAULT,
            net: None,
            local_only: false,
            tls: None,
            policy: crate::net::NetPolicy::default(),
            http: None,
            standby: false,
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
    let (lock, waited) = match settings.standby {
        true => take_over(&device).await?,
        false => (lock_device(&device)?, false),
    };
    let fenced = fence_device(&device, &lock)?;
    let daemon = Arc::new(Daemon::new(device.clone(), socket.clone()));
    daemon.set_txn_timeout(settings.txn_timeout);
    daemon.set_frame_limit(settings.frame_limit);
    let default_config = qm_common::paths::config_path(&device);
    daemon.set_config_path(
        settings.config.or_else(|| default_config.exists().then_some(default_config)),
    );
    let config = daemon.reload().map_err(|e| e.message)?;
    if let Some(problem) = daemon.startup_problem() {
        return Err(problem);
    }
    for dir in entry_directories(&daemon) {
        warn_about_directory(&dir, settings.stderr_has_warnings);
    }
    let mut policy = settings.policy;
    let (net_options, tls) = match (settings.net, &config.listen) {
        (Some(net), _) => (Some(net), settings.tls),
        (None, Some(_)) if settings.local_only => {
            tracing::info!("--local-only: the configuration's [listen] table is not used");
            (None, None)
        }
        (None, Some(listen)) => {
            let base = daemon.config_dir();
            policy.persistent |= listen.persistent;
            listen_options(listen, base.as_deref())?
        }
        (None, None) => (None, None),
    };
    daemon.set_net_policy(policy);
    let net = open_network(&daemon, net_options.as_ref(), tls).await?;
    if net.is_some() {
        warn_about_anonymous_admin(&daemon, settings.stderr_has_warnings);
    }
    // Before the control socket, which a failure here would leave behind.
    let http_listener = match &settings.http {
        Some(face) => Some(crate::http::bind(face, listen_ip(net_options.as_ref())?).await?),
        None => None,
    };
    if let (Some(net), Some(listener)) = (&net, &http_listener) {
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let face = settings.http.as_ref().expect("bound");
        let scheme = if daemon.tls.get().is_some() { "https" } else { "http" };
        net.set_http(port, format!("{scheme}://{}:{port}/{}", net.host, face.url_path));
        net.write_connection_file(&daemon)?;
    }
    let listener = bind(&socket, &device, settings.socket_mode)?;
    if settings.socket_mode & 0o066 != 0 {
        daemon.set_socket_shared(true);
        tracing::info!(
            "control socket mode {:04o}: other local users may connect; their rights decide",
            settings.socket_mode
        );
    }
    let mut line =
        format!("pid {} serving {} on {}", std::process::id(), device.display(), socket.display());
    if let Some(net) = &net {
        line.push_str(&format!(" and {}", net.describe()));
    }
    tracing::info!("{line}");
    // A detached standby said it was ready when it began to wait; nobody reads on now.
    if !(waited && detach::is_detached_child()) {
        announce(&line);
    }
    end_orphans(&daemon);
    boot_forwarders(&daemon);
    let handshake = daemon.tls.get().map(|tls| https_handshake(tls.clone()));
    let http = settings.http.zip(http_listener).map(|(face, listener)| {
        tokio::spawn(crate::http::serve(daemon.clone(), listener, face, handshake))
    });
    let result = accept_loop(&daemon, listener, net.as_ref()).await;
    // Before the socket and the lock go: whoever waits for those finds no worker left.
    daemon.forwarders.stop_workers().await;
    if let Some(http) = http {
        let _ = http.await;
    }
    if let Some(net) = &net {
        net.remove_connection_file();
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
    // The fence holds the lock's file open too: both must go for the lock to.
    drop(fenced);
    drop(lock);
    tracing::info!("stopped");
    result
}

/// Opens the network face when asked: TLS material loaded and checked, port bound,
/// connection file written.
async fn open_network(
    daemon: &Arc<Daemon>,
    options: Option<&crate::net::NetOptions>,
    tls: Option<(PathBuf, Vec<String>)>,
) -> Result<Option<NetFace>, String> {
    let Some(options) = options else { return Ok(None) };
    let tls = match tls {
        Some((cert_key, cas)) => {
            let face = Arc::new(crate::tls::TlsFace::load(cert_key, cas)?);
            let _ = daemon.tls.set(face.clone());
            Some(face)
        }
        None => None,
    };
    let net = NetFace::bind(daemon, options, tls).await?;
    let _ = daemon.network.set(net.describe());
    net.write_connection_file(daemon)?;
    Ok(Some(net))
}

/// Warns loudly when anybody who reaches the network face without a client certificate
/// may administer: `anonymous` was granted `admin` somewhere.
fn warn_about_anonymous_admin(daemon: &Arc<Daemon>, stderr_has_warnings: bool) {
    let certified = daemon.tls.get().is_some_and(|t| t.requires_client_certificates());
    let scopes = match crate::rights::anonymous_admin(daemon) {
        Ok(scopes) if !scopes.is_empty() && !certified => scopes,
        _ => return,
    };
    let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
    warn_at_start(
        &format!(
            "anonymous holds admin on {}: anyone who can reach {} without a client \
             certificate may create, change and destroy there (qrevoke anonymous admin ... to \
             end it)",
            scopes.join(", "),
            daemon.network.get().map_or("the network face", String::as_str)
        ),
        stderr_has_warnings,
    );
}

/// The address the HTTP face listens on: `-i`'s (or `[listen]`'s), else every interface.
fn listen_ip(net: Option<&crate::net::NetOptions>) -> Result<std::net::IpAddr, String> {
    match net.and_then(|n| n.address.as_deref()) {
        None | Some("*") => Ok(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        Some(a) => a.parse().map_err(|_| {
            format!("-i '{a}': the HTTP face needs an IP address (such as 127.0.0.1 or ::1), or *")
        }),
    }
}

/// The HTTPS handshake of the HTTP face: the network face's TLS settings as they are at
/// each connection (a reload applies to new ones), the principal from the client's
/// certificate.
fn https_handshake(tls: Arc<crate::tls::TlsFace>) -> crate::http::Handshake {
    Arc::new(move |stream| {
        let acceptor = tls.acceptor();
        Box::pin(async move {
            let stream =
                acceptor.accept(stream).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
            let principal = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(cert) => crate::tls::principal_of(cert.as_ref())?,
                None => qm_common::principal::Principal::anonymous(),
            };
            Ok((Box::new(stream) as Box<dyn crate::http::Stream>, principal))
        })
    })
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
        tracing::warn!(
            "killed {} threshold command(s) left running by a previous qmd (queues {})",
            orphans.thresholds.len(),
            orphans.queues()
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

async fn accept_loop(
    daemon: &Arc<Daemon>,
    listener: UnixListener,
    net: Option<&NetFace>,
) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut reloading: Option<tokio::task::JoinHandle<()>> = None;
    let mut fingerprint = daemon.tls.get().map(|t| t.fingerprint());
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
            accepted = async { net.expect("guarded").accept().await }, if net.is_some() && resume.is_none() => match accepted {
                Ok(stream) => {
                    failures.recovered();
                    sessions.spawn(net.expect("guarded").serve(daemon.clone(), stream));
                }
                Err(e) => resume = Some(Instant::now() + failures.failed(&e)),
            },
            _ = hup.recv() => {
                if reloading.as_ref().is_none_or(|r| r.is_finished()) {
                    let d = daemon.clone();
                    reloading = Some(tokio::task::spawn_blocking(move || reload_on_hangup(&d)));
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = stop.wait_for(|s| *s) => { tracing::info!("stop requested: shutting down"); break; }
            _ = check.tick() => {
                if let Some(net) = net {
                    if net.idle_expired() {
                        tracing::info!("no network connection for the -t time: shutting down");
                        break;
                    }
                    // A reload may have brought a new certificate: clients must learn it.
                    let now = daemon.tls.get().map(|t| t.fingerprint());
                    if now != fingerprint {
                        fingerprint = now;
                        if let Err(e) = net.write_connection_file(daemon) {
                            tracing::error!("{e}");
                        }
                    }
                }
                // A daemon that writes nothing would never meet the fence otherwise.
                if let Err(e) = fence::check() {
                    tracing::error!("cannot read the fencing generation: {e}");
                }
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

/// SIGHUP: the configuration and the TLS files are read again, as by `daemon reload`.
fn reload_on_hangup(daemon: &Arc<Daemon>) {
    match daemon.reload() {
        Ok(_) => {
            tracing::info!("SIGHUP: configuration re-read ({})", daemon.config_path_text());
            for line in daemon.forwarders.apply(daemon) {
                tracing::info!("{line}");
            }
        }
        Err(e) => tracing::warn!("SIGHUP: nothing reloaded: {}", e.message),
    }
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
