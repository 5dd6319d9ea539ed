//! Finding the daemon: connect to the device's socket, and start `qmd` when none answers.

use qm_common::client::{self, Client};
use qm_common::frame::Connection;
use qm_common::protocol::{ClientKind, Response};
use qm_common::{Diagnostic, QmError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `qmd` next to this executable, else the one on `PATH`.
fn qmd_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("qmd"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("qmd"))
}

/// Starts `qmd --detach` for `device`; returns the one line to tell the user.
fn start_daemon(device: &Path, socket: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new(qmd_program());
    // A daemon started on the side opens no port, whatever the configuration file says:
    // only its owner's qmadmin asked for it.
    cmd.arg("--detach").arg("--local-only").arg(device);
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    let out = cmd.output().map_err(|e| format!("cannot start qmd: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What a starting daemon has to say (its warnings) is for the user too, as it said it;
    // the rest of what a daemon that failed to start said is why.
    let (warnings, why): (Vec<&str>, Vec<&str>) =
        stderr.lines().filter(|l| !l.trim().is_empty()).partition(|l| l.starts_with("qmd: WARN"));
    for warning in warnings {
        eprintln!("{warning}");
    }
    if !out.status.success() {
        return Err(if why.is_empty() { stdout } else { why.join("\n") });
    }
    let log = qm_common::paths::log_path(device);
    Ok(format!("started qmd {} (log {})", stdout.trim_start_matches("qmd: "), log.display()))
}

/// How long to wait for a daemon that another qmadmin is starting, or that is shutting
/// down, at the same moment.
const RACE_WAIT: Duration = Duration::from_secs(10);

/// Connects to the daemon serving `device`, starting one when allowed and needed. A
/// listener that is not ours (another user's daemon) is refused before anything is sent,
/// and then no daemon is started either: the socket is taken.
pub async fn connect(
    device: &Path,
    socket: Option<&Path>,
    autostart: bool,
) -> Result<Client, String> {
    let path = qm_common::paths::resolve_socket(device, socket);
    let client = match client::connect_trusted(&path).await {
        Ok(stream) => greet(stream, &path).await?,
        Err(e) if e.diagnostic != Diagnostic::Os => return Err(e.message),
        Err(e) if !autostart => return Err(format!("no qmd answers on {} ({e})", path.display())),
        Err(_) => start_or_join(device, socket, &path).await?,
    };
    let serves = &client.welcome().device;
    if Path::new(serves) != device {
        return Err(format!(
            "the qmd on {} serves {serves}, not {}",
            path.display(),
            device.display()
        ));
    }
    Ok(client)
}

/// Greets a daemon we trust; says so when it turns us away.
async fn greet(stream: tokio::net::UnixStream, path: &Path) -> Result<Client, String> {
    match Client::greet(stream, "qmadmin", ClientKind::Admin).await {
        Ok(c) => Ok(c),
        // A daemon answered and turned us away (another protocol, a user it does not
        // serve): say so, and do not try to start a second one.
        Err(e) if e.diagnostic != Diagnostic::Os => Err(refused(path, &e)),
        // Accepted, then lost: the daemon may have refused us and closed before our
        // greeting went out (which then fails as a broken pipe). Ask again, listening only.
        Err(e) => match refusal(path).await {
            Some(r) => Err(refused(path, &r)),
            None => Err(e.message),
        },
    }
}

fn refused(path: &Path, e: &QmError) -> String {
    format!("qmd on {} refused the connection: {}", path.display(), e.message)
}

/// The refusal a daemon sends, unasked, to a peer it turns away (another user); `None` if
/// it sends nothing within a moment (it waits for a greeting, as for anyone it serves).
async fn refusal(path: &Path) -> Option<QmError> {
    let (r, w) = client::connect_trusted(path).await.ok()?.into_split();
    let mut conn = Connection::new(r, w);
    let first = tokio::time::timeout(Duration::from_millis(500), conn.read_frame::<Response>());
    match first.await {
        Ok(Ok(Some(Response::Failed(e)))) => Some(e),
        _ => None,
    }
}

/// Starts a daemon for `device`. When another one holds the device (one that another
/// qmadmin is starting at this moment, or one still shutting down), waits for it to answer
/// or to go away, and tries again.
async fn start_or_join(
    device: &Path,
    socket: Option<&Path>,
    path: &Path,
) -> Result<Client, String> {
    let deadline = tokio::time::Instant::now() + RACE_WAIT;
    loop {
        match start_daemon(device, socket) {
            Ok(line) => {
                eprintln!("qmadmin: {line}");
                return Client::connect(path, "qmadmin", ClientKind::Admin)
                    .await
                    .map_err(|e| e.message);
            }
            Err(why) if why.contains("another qmd") => {
                let retry = tokio::time::Instant::now() + Duration::from_millis(500);
                while tokio::time::Instant::now() < retry.min(deadline) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match Client::connect(path, "qmadmin", ClientKind::Admin).await {
                        Ok(c) => return Ok(c),
                        Err(e) if e.diagnostic == Diagnostic::Denied => return Err(e.message),
                        Err(_) => {}
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(why);
                }
            }
            Err(why) => return Err(why),
        }
    }
}

/// How a daemon asked to stop let go of its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nobody holds the device.
    Free,
    /// A standby (this pid) took it over.
    TakenOver(u32),
    /// The daemon `pid` still holds it after the time allowed.
    Held,
}

/// Waits until the daemon `pid` does not hold `device`'s lock any more: nobody holds it,
/// or another daemon (a standby) does. The lock file is opened as qmd opens it (no
/// symbolic link followed, no wait on a FIFO), so that a file planted in its place cannot
/// hang us or aim us elsewhere.
pub fn wait_for_exit_of(device: &Path, pid: u32, limit: Duration) -> Result<Exit, String> {
    let lock = qm_common::paths::lock_path(device);
    let deadline = std::time::Instant::now() + limit;
    loop {
        // Who holds it first: a standby waiting on the lock gets it the moment it is let go.
        let mut read = std::fs::OpenOptions::new();
        read.read(true);
        if let Ok(file) = qm_common::trust::open_no_follow(&lock, &mut read, "lock file") {
            let holder = qm_common::lockfile::Holder::read(&file).unwrap_or_default();
            if holder.pid != 0 && holder.pid != pid {
                return Ok(Exit::TakenOver(holder.pid));
            }
        }
        if wait_for_exit(device, Duration::ZERO)? {
            return Ok(Exit::Free);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Exit::Held);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until no daemon holds `device`'s lock any more; `Ok(false)` if one still does
/// after `limit`. The lock file is opened as qmd opens it (no symbolic link followed, no
/// wait on a FIFO), so that a file planted in its place cannot hang us or aim us elsewhere.
pub fn wait_for_exit(device: &Path, limit: Duration) -> Result<bool, String> {
    let lock = qm_common::paths::lock_path(device);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut read = std::fs::OpenOptions::new();
        read.read(true);
        let file = match qm_common::trust::open_no_follow(&lock, &mut read, "lock file") {
            Ok(f) => f,
            Err(_) if !lock.exists() && !lock.is_symlink() => return Ok(true),
            Err(why) => return Err(why),
        };
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(_) => return Ok(true),
        }
    }
}

/// Connects as qmadmin to the first of `addresses` that answers (an active daemon or its
/// standby), each tried once.
pub async fn connect_first(
    addresses: &[qm_common::address::Address],
) -> Result<(usize, Client), QmError> {
    let files = qm_common::tls::ClientTlsFiles::from_env();
    let who = ("qmadmin", ClientKind::Admin);
    qm_common::failover::connect_first(addresses, &files, who, Duration::ZERO).await
}
