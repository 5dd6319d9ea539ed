//! The network face: a TCP listener (TLS with `-k`), its connection limit (`-n`), the stop
//! after a time without network activity (`-t`), and the connection file (`-c`).
//!
//! The accept loop in [`crate::server`] takes connections from here; everything a
//! connection costs beyond `accept` (the TLS handshake, a refusal) runs in its own task.

use crate::session::{self, Peer};
use crate::state::Daemon;
use crate::tls::TlsFace;
use qm_common::Diagnostic;
use qm_common::address::{ConnectionFile, format_fingerprint};
use qm_common::frame::Connection;
use qm_common::principal::{Face, Principal};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first port tried when `-i` is given without `-p`.
pub const FIRST_PORT: u16 = 53000;
/// How long a TLS handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Connections over the limit that are told so at the same time; beyond, they are closed
/// without a word.
const REFUSALS_AT_ONCE: usize = 64;

/// What the command line asks of the network face.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Listen address; `*` (or none) for every interface.
    pub address: Option<String>,
    pub port: Option<u16>,
    pub max_connections: usize,
    pub idle: Option<Duration>,
    pub persistent: bool,
    pub connection_file: Option<PathBuf>,
}

/// How sessions behave that the network face (and its options) affects.
#[derive(Debug, Clone, Copy)]
pub struct NetPolicy {
    /// `-s`: `daemon stop` is refused from the network.
    pub persistent: bool,
    /// `-m`: requests served in a row before other connections get their turn.
    pub burst: u32,
    /// `-r`: waiting dequeues of the same program are served in turn.
    pub round_robin: bool,
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy { persistent: false, burst: 50, round_robin: false }
    }
}

/// A listening network face.
pub struct NetFace {
    listener: TcpListener,
    pub port: u16,
    tls: Option<Arc<TlsFace>>,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    max_connections: usize,
    idle: Option<Duration>,
    /// Since when no network connection is open.
    quiet: Arc<Quiet>,
    connection_file: Option<PathBuf>,
    /// Where clients should connect.
    pub host: String,
    /// The HTTP face's port and URL, for the connection file.
    http: Mutex<Option<(u16, String)>>,
}

impl NetFace {
    /// Binds the listener: the given port, or the first free one from [`FIRST_PORT`] up.
    pub async fn bind(
        daemon: &Daemon,
        options: &NetOptions,
        tls: Option<Arc<TlsFace>>,
    ) -> Result<NetFace, String> {
        let host = match options.address.as_deref() {
            None | Some("*") => "0.0.0.0".to_string(),
            Some(a) => a.to_string(),
        };
        let listener = match options.port {
            Some(port) => TcpListener::bind((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot listen on {host} port {port}: {e}"))?,
            None => scan(&host).await?,
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let client_host = if host == "0.0.0.0" || host == "::" { this_host() } else { host };
        Ok(NetFace {
            listener,
            port,
            tls,
            slots: Arc::new(Semaphore::new(options.max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            max_connections: options.max_connections,
            idle: if options.persistent { None } else { options.idle },
            quiet: daemon.network_quiet.clone(),
            connection_file: options.connection_file.clone(),
            host: client_host,
            http: Mutex::new(None),
        })
    }

    /// What the ready line says about the face.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "tls+tcp" } else { "tcp" };
        let addr = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        format!("{scheme}://{addr}")
    }

    pub async fn accept(&self) -> std::io::Result<TcpStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    /// Whether the daemon has been without network activity for its `-t` time.
    pub fn idle_expired(&self) -> bool {
        let Some(idle) = self.idle else { return false };
        self.quiet.since().is_some_and(|since| since.elapsed() >= idle)
    }

    /// Serves one accepted connection: a slot if one is free (else a refusal), the TLS
    /// handshake, then a session.
    pub fn serve(
        &self,
        daemon: Arc<Daemon>,
        stream: TcpStream,
    ) -> impl Future<Output = ()> + Send + use<> {
        let _ = stream.set_nodelay(true);
        let slot = self.slots.clone().try_acquire_owned().ok();
        let refusal =
            if slot.is_none() { self.refusals.clone().try_acquire_owned().ok() } else { None };
        let tls = self.tls.clone();
        let max = self.max_connections;
        let activity = Activity::begin(&self.quiet);
        async move {
            let _activity = activity;
            match (slot, refusal) {
                (Some(slot), _) => serve_connection(daemon, stream, tls, slot).await,
                (None, Some(_refusal)) => {
                    let why = format!(
                        "too many connections: this qmd serves at most {max} at a time (-n); \
                         try again later"
                    );
                    tracing::warn!("refusing a network connection: {why}");
                    refuse(stream, tls, why).await;
                }
                (None, None) => {}
            }
        }
    }

    /// Writes the connection file, atomically; again after the certificate changed.
    pub fn write_connection_file(&self, daemon: &Daemon) -> Result<(), String> {
        let Some(path) = &self.connection_file else { return Ok(()) };
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let file = ConnectionFile {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.is_some(),
            fingerprint: self.tls.as_ref().map(|t| format_fingerprint(&t.fingerprint())),
            http_port: http.as_ref().map(|(port, _)| *port),
            http_url: http.map(|(_, url)| url),
            pid: std::process::id(),
            device: daemon.device_path.display().to_string(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
        write_atomically(path, text.as_bytes())
            .map_err(|e| format!("cannot write connection file {}: {e}", path.display()))
    }

    /// Names the HTTP face in the connection file from now on.
    pub fn set_http(&self, port: u16, url: String) {
        *self.http.lock().unwrap_or_else(|p| p.into_inner()) = Some((port, url));
    }

    /// Removes the connection file at a clean stop.
    pub fn remove_connection_file(&self) {
        if let Some(path) = &self.connection_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Network connections open (TCP, TLS and HTTP), and since when none is: what `-t`
/// measures.
pub struct Quiet {
    open: AtomicUsize,
    since: Mutex<Option<Instant>>,
}

impl Default for Quiet {
    fn default() -> Self {
        Quiet { open: AtomicUsize::new(0), since: Mutex::new(Some(Instant::now())) }
    }
}

impl Quiet {
    fn since(&self) -> Option<Instant> {
        *self.since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a network connection as activity from its start to its end.
pub struct Activity(Arc<Quiet>);

impl Activity {
    pub fn begin(quiet: &Arc<Quiet>) -> Activity {
        quiet.open.fetch_add(1, Ordering::SeqCst);
        *quiet.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Activity(quiet.clone())
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        let mut since = self.0.since.lock().unwrap_or_else(|p| p.into_inner());
        // The last open connection ends: the quiet time begins.
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Some(Instant::now());
        }
    }
}

async fn serve_connection(
    daemon: Arc<Daemon>,
    stream: TcpStream,
    tls: Option<Arc<TlsFace>>,
    _slot: OwnedSemaphorePermit,
) {
    let Some(tls) = tls else {
        let (r, w) = stream.into_split();
        let peer = Peer { principal: Principal::anonymous(), face: Face::Tcp, pid: None };
        session::serve(daemon, Connection::new(r, w), peer).await;
        return;
    };
    let Some(stream) = handshake(&tls, stream).await else { return };
    let (_, state) = stream.get_ref();
    let principal = match state.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => crate::tls::principal_of(cert.as_ref()),
        None => Ok(Principal::anonymous()),
    };
    let (r, w) = tokio::io::split(stream);
    let mut conn = Connection::new(r, w);
    match principal {
        Ok(principal) => {
            let peer = Peer { principal, face: Face::Tls, pid: None };
            session::serve(daemon, conn, peer).await;
        }
        Err(why) => session::turn_away(&mut conn, Diagnostic::Denied, why).await,
    }
}

/// The TLS handshake, within its time limit; `None` (logged) when it failed.
async fn handshake(
    tls: &TlsFace,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    match tokio::time::timeout(HANDSHAKE_LIMIT, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!("TLS handshake with {peer} failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "TLS handshake with {peer} did not finish within {} s",
                HANDSHAKE_LIMIT.as_secs()
            );
            None
        }
    }
}

/// Tells a connection over the limit why it is closed (after its TLS handshake, so that it
/// can read the reason).
async fn refuse(stream: TcpStream, tls: Option<Arc<TlsFace>>, why: String) {
    match tls {
        None => {
            let (r, w) = stream.into_split();
            session::turn_away(&mut Connection::new(r, w), Diagnostic::NoSpace, why).await;
        }
        Some(tls) => {
            if let Some(stream) = handshake(&tls, stream).await {
                let (r, w) = tokio::io::split(stream);
                session::turn_away(&mut Connection::new(r, w), Diagnostic::NoSpace, why).await;
            }
        }
    }
}

/// Binds the first free port from [`FIRST_PORT`] up.
async fn scan(host: &str) -> Result<TcpListener, String> {
    for port in FIRST_PORT..=u16::MAX {
        match TcpListener::bind((host, port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(format!("cannot listen on {host} port {port}: {e}")),
        }
    }
    Err(format!("no free port on {host} from {FIRST_PORT} up"))
}

/// This machine's name, for clients of a daemon listening on every interface.
fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    if ok && !name.is_empty() { name } else { "localhost".to_string() }
}

/// Writes `bytes` to `path` through a new file beside it and a rename, so that a reader
/// sees the old file or the new one, never a part; readable by all (it holds no secret and
/// is meant for clients), writable by the owner only.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp =
        path.with_file_name(format!(".{}.{}.new", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    // The daemon's umask (077) would take the read bits away.
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o644))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
