//! The HTTP face (`qmd -w PORT MAXCONN URLPATH`): enqueue and dequeue over HTTP/1.1, with
//! `/metrics` for Prometheus and `/healthz`.
//!
//! Every HTTP connection is a session, as a socket connection is: it is registered (so
//! `ipcs` shows it), speaks for a principal (`anonymous` over plain HTTP, the client
//! certificate's identity over HTTPS) and runs its requests through [`crate::data::handle`],
//! so the rights checks and the TPQCTL semantics are the very same.
//!
//! * [`routes`]: which request goes where, and the answers.
//! * [`params`]: query parameters to enqueue and dequeue controls.
//! * [`metrics`]: the Prometheus text exposition.
//!
//! TLS is plugged in from outside: [`serve`] takes an optional [`Handshake`] that turns an
//! accepted TCP stream into an encrypted stream and the principal it proved.

pub mod metrics;
pub mod params;
pub mod routes;

use crate::data::SessionData;
use crate::server::AcceptFailures;
use crate::session::Peer;
use crate::state::Daemon;
use crate::storage::records::now_secs;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use qm_common::principal::{Face, Principal};
use qm_common::protocol::ClientKind;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a TLS handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// How long open HTTP connections get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most connections at once, as `-w` takes it.
pub const MAX_CONNECTIONS: usize = 100_000;

/// What `-w PORT MAXCONN URLPATH` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFace {
    /// 0: any free port (the log says which).
    pub port: u16,
    pub max_connections: usize,
    /// The path messages are under, without a leading or trailing `/` (`report/result`).
    pub url_path: String,
}

impl HttpFace {
    /// Checks the three values of `-w`; the error names the one that is wrong.
    pub fn parse(port: &str, max_connections: &str, url_path: &str) -> Result<HttpFace, String> {
        let port = port.parse::<u16>().map_err(|_| {
            format!("-w PORT: '{port}' is not a port number; give 1 to 65535 (0: any free port)")
        })?;
        let max_connections = max_connections
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
            .ok_or_else(|| {
                format!(
                    "-w MAXCONN: '{max_connections}' is invalid; give the most HTTP connections \
                     at once, 1 to {MAX_CONNECTIONS}"
                )
            })?;
        let url_path = check_url_path(url_path)?;
        Ok(HttpFace { port, max_connections, url_path })
    }
}

/// `URLPATH` without its outer slashes: segments of letters, digits and `-._~`, none empty
/// and none `.` or `..`.
fn check_url_path(text: &str) -> Result<String, String> {
    let trimmed = text.trim_matches('/');
    let bad = |why: &str| {
        Err(format!(
            "-w URLPATH: '{}' is invalid: {why} (for example: result or report/result)",
            qm_common::error::shown(text)
        ))
    };
    if trimmed.is_empty() {
        return bad("it is empty");
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() {
            return bad("it has an empty segment (//)");
        }
        if segment == "." || segment == ".." {
            return bad("'.' and '..' segments are not allowed");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            return bad("use letters, digits, '-', '.', '_' and '~' between the slashes");
        }
    }
    Ok(trimmed.to_string())
}

/// A stream the HTTP face can serve: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// What a TLS handshake gives: the encrypted stream and the principal its client
/// certificate proved; an error says why the client was turned away.
pub type Handshaken =
    Pin<Box<dyn Future<Output = Result<(Box<dyn Stream>, Principal), String>> + Send>>;

/// Turns an accepted TCP stream into a TLS stream (HTTPS); `None` to [`serve`] is plain HTTP.
pub type Handshake = Arc<dyn Fn(TcpStream) -> Handshaken + Send + Sync>;

/// Binds the HTTP face's port on `addr`.
pub async fn bind(face: &HttpFace, addr: IpAddr) -> Result<TcpListener, String> {
    let at = SocketAddr::new(addr, face.port);
    TcpListener::bind(at).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another program uses it: choose another port with -w"
        } else {
            ""
        };
        format!("cannot listen for HTTP on {at}: {e}{hint}")
    })
}

/// What every connection's requests share.
pub struct Shared {
    pub daemon: Arc<Daemon>,
    pub face: HttpFace,
    /// Free connection slots (MAXCONN of them).
    pub slots: Arc<Semaphore>,
}

impl Shared {
    /// HTTP connections open now (within the limit).
    pub fn connections(&self) -> usize {
        self.face.max_connections.saturating_sub(self.slots.available_permits())
    }
}

/// Serves the HTTP face on `listener` until the daemon stops; then lets open connections
/// finish their requests for a moment.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    face: HttpFace,
    handshake: Option<Handshake>,
) {
    if let Ok(at) = listener.local_addr() {
        let tls = if handshake.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!(
            "HTTP face listening on {at} ({tls}): messages under /{}/QSPACE/QUEUE, at most {} \
             connections",
            face.url_path,
            face.max_connections
        );
    }
    let slots = Arc::new(Semaphore::new(face.max_connections));
    let shared = Arc::new(Shared { daemon: daemon.clone(), face, slots });
    let mut stop = daemon.shutdown_signal();
    let mut connections = JoinSet::new();
    let mut failures = AcceptFailures::default();
    let mut resume: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept(), if resume.is_none() => match accepted {
                Ok((stream, addr)) => {
                    failures.recovered();
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    // HTTP clients keep a daemon with -t up as much as TCP ones.
                    let activity = crate::net::Activity::begin(&daemon.network_quiet);
                    match shared.slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let conn = connection(shared, stream, addr, handshake.clone(), slot);
                            connections.spawn(async move { conn.await; drop(activity) });
                        }
                        Err(_) => {
                            let refusal = routes::refuse_over_limit(shared, stream, addr);
                            connections.spawn(async move { refusal.await; drop(activity) });
                        }
                    }
                }
                Err(e) => resume = Some(Instant::now() + failures.failed(&e)),
            },
            _ = tokio::time::sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {
                resume = None;
            }
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// One connection within the limit: TLS first if asked for, then a session for its requests.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    handshake: Option<Handshake>,
    _slot: OwnedSemaphorePermit,
) {
    match handshake {
        None => session(shared, stream, addr, Principal::anonymous()).await,
        Some(handshake) => match tokio::time::timeout(HANDSHAKE_LIMIT, handshake(stream)).await {
            Ok(Ok((stream, principal))) => session(shared, stream, addr, principal).await,
            Ok(Err(why)) => tracing::warn!("HTTPS client {addr} refused: {why}"),
            Err(_) => tracing::warn!(
                "HTTPS client {addr} refused: no TLS handshake within {} s",
                HANDSHAKE_LIMIT.as_secs()
            ),
        },
    }
}

/// What a connection's requests share: its session.
pub struct Conn {
    pub shared: Arc<Shared>,
    pub session: u64,
    /// The session's data-plane state; a request takes it for its run.
    pub data: Arc<tokio::sync::Mutex<SessionData>>,
}

/// Serves the requests of one connection as a session of `principal`.
async fn session<S: Stream>(
    shared: Arc<Shared>,
    stream: S,
    addr: SocketAddr,
    principal: Principal,
) {
    let daemon = shared.daemon.clone();
    let program = format!("http {addr}");
    let id = daemon.sessions.register(
        None,
        principal.clone(),
        Face::Http,
        program.clone(),
        ClientKind::Application,
        now_secs(),
    );
    tracing::debug!(session = id, %principal, "HTTP session started for {addr}");
    let peer = Peer { principal, face: Face::Http, pid: None };
    let data = Arc::new(tokio::sync::Mutex::new(SessionData::new(None, program, peer)));
    let conn = Arc::new(Conn { shared, session: id, data: data.clone() });
    let service = service_fn(move |request| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(routes::answer(&conn, request).await) }
    });
    let mut builder = http1::Builder::new();
    // The frame time limit bounds the request head and, between requests, how long an idle
    // keep-alive connection holds its slot.
    builder.timer(TokioTimer::new()).header_read_timeout(daemon.frame_limit());
    let mut served = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
    let mut stop = daemon.shutdown_signal();
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = stopping(&mut stop) => {
            served.as_mut().graceful_shutdown();
            served.as_mut().await
        }
    };
    // Dropping the connection drops a request it was serving when its client went away,
    // which tells a waiting dequeue to give up.
    drop(served);
    if let Err(e) = result {
        tracing::debug!(session = id, "HTTP connection from {addr} ended: {e}");
    }
    // A request still running (a dequeue giving up its wait) holds the session's state
    // until it is done.
    data.lock().await.end().await;
    daemon.sessions.unregister(id);
    tracing::debug!(session = id, "HTTP session ended");
}

/// Returns once the daemon is asked to stop.
pub async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths() {
        assert_eq!(check_url_path("result").unwrap(), "result");
        assert_eq!(check_url_path("/report/result/").unwrap(), "report/result");
        for bad in ["", "/", "a//b", "a/../b", "./a", "a b", "a?b", "a%20b"] {
            assert!(check_url_path(bad).unwrap_err().contains("-w URLPATH"), "{bad}");
        }
    }

    #[test]
    fn face_values() {
        assert!(HttpFace::parse("x", "1", "r").unwrap_err().contains("-w PORT"));
        assert!(HttpFace::parse("70000", "1", "r").unwrap_err().contains("-w PORT"));
        assert!(HttpFace::parse("80", "0", "r").unwrap_err().contains("-w MAXCONN"));
        assert!(HttpFace::parse("80", "many", "r").unwrap_err().contains("-w MAXCONN"));
        let face = HttpFace::parse("53001", "1024", "result").unwrap();
        assert_eq!((face.port, face.max_connections), (53001, 1024));
    }
}
