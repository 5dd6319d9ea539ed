//! One connection: greet, check the peer, then serve requests until it closes.
//!
//! A bad frame gets an error reply and the session goes on; an oversized one, or one that
//! is begun but not finished within the frame time limit, closes the connection (the
//! stream can no longer be trusted); a failing handler never takes the daemon down with it.

use crate::admin::{self, Ctx};
use crate::data::SessionData;
use crate::state::Daemon;
use crate::storage::records::now_secs;
use qm_common::frame::{Connection, FrameError};
use qm_common::principal::{Face, Principal};
use qm_common::protocol::{
    DaemonRequest, DataRequest, Hello, PROTOCOL_VERSION, Progress, Request, Response, Welcome,
};
use qm_common::{Diagnostic, QmError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Either half of a session's stream, whatever carries it (socket, TCP, TLS).
pub trait Half: Unpin + Send + 'static {}
impl<T: Unpin + Send + 'static> Half for T {}

/// Who is at the other end of a session, as far as the daemon could tell.
#[derive(Debug, Clone)]
pub struct Peer {
    pub principal: Principal,
    pub face: Face,
    /// The peer's process, when it is on this machine (the control socket).
    pub pid: Option<u32>,
}

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long telling a peer why its connection is closed may take.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

pub async fn refuse<R: AsyncRead + Half, W: AsyncWrite + Half>(
    conn: &mut Connection<R, W>,
    diagnostic: Diagnostic,
    message: String,
) {
    tracing::warn!("refusing connection: {message}");
    let _ = conn.write_frame(&Response::Failed(QmError::new(diagnostic, message))).await;
}

/// Turns a peer away before its session begins, telling it why.
pub async fn turn_away<R: AsyncRead + Half, W: AsyncWrite + Half>(
    conn: &mut Connection<R, W>,
    diagnostic: Diagnostic,
    message: String,
) {
    // Take the greeting first, so the refusal is what the peer reads rather than a broken
    // pipe on its write.
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.read_frame::<Request>()).await;
    refuse(conn, diagnostic, message).await;
}

/// Reads the greeting; `None` when the peer must be turned away (it has been told why).
async fn greet<R: AsyncRead + Half, W: AsyncWrite + Half>(
    conn: &mut Connection<R, W>,
) -> Option<Hello> {
    match tokio::time::timeout(HELLO_TIMEOUT, conn.read_frame::<Request>()).await {
        Ok(Ok(Some(Request::Hello(hello)))) if hello.version == PROTOCOL_VERSION => Some(hello),
        Ok(Ok(Some(Request::Hello(hello)))) => {
            let msg = format!(
                "protocol version {} is not supported; this qmd speaks version {PROTOCOL_VERSION}",
                hello.version
            );
            refuse(conn, Diagnostic::Proto, msg).await;
            None
        }
        Ok(Ok(Some(_))) => {
            refuse(conn, Diagnostic::Proto, "the first frame must be a greeting".into()).await;
            None
        }
        Ok(Err(FrameError::Decode(e))) => {
            refuse(conn, Diagnostic::Proto, format!("malformed greeting: {e}")).await;
            None
        }
        _ => None,
    }
}

/// Serves a connection on the control socket: the daemon's owner and root, and, when the
/// socket's mode lets others in (`--socket-mode`), any local user as `unix:<name>`, whose
/// rights then decide.
pub async fn serve_unix(daemon: Arc<Daemon>, stream: UnixStream) {
    let cred = stream.peer_cred().ok();
    let uid = cred.map(|c| c.uid());
    let pid = cred.and_then(|c| c.pid()).and_then(|p| u32::try_from(p).ok());
    let (r, w) = match qm_common::unix_stream::split_tokio(stream) {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!("a connection on the control socket could not be served: {e}");
            return;
        }
    };
    let mut conn = Connection::new(r, w);
    let owner = rustix::process::geteuid().as_raw();
    let shared = daemon.socket_shared();
    let Some(uid) = uid.filter(|u| *u == owner || *u == 0 || shared) else {
        let who = uid.map_or("an unknown user".to_string(), |u| format!("uid {u}"));
        let msg = format!("permission denied: {who} may not use this qmd (owner is uid {owner})");
        turn_away(&mut conn, Diagnostic::Denied, msg).await;
        return;
    };
    let peer = Peer { principal: Principal::unix(uid), face: Face::Socket, pid };
    serve(daemon, conn, peer).await;
}

/// Serves one connection, whoever `peer` is, to its end.
pub async fn serve<R: AsyncRead + Half, W: AsyncWrite + Half>(
    daemon: Arc<Daemon>,
    mut conn: Connection<R, W>,
    peer: Peer,
) {
    conn.set_frame_limit(Some(daemon.frame_limit()));
    let Some(hello) = greet(&mut conn).await else { return };
    let pid = peer.pid;
    let id = daemon.sessions.register(
        pid,
        peer.principal.clone(),
        peer.face,
        hello.program.clone(),
        hello.kind,
        now_secs(),
    );
    tracing::debug!(session = id, program = %hello.program, principal = %peer.principal, ?pid, "session started");
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        daemon_pid: std::process::id(),
        device: daemon.device_path.display().to_string(),
        session: id,
    };
    let mut sd = SessionData::new(pid, hello.program.clone(), peer);
    if conn.write_frame(&Response::Welcome(welcome)).await.is_ok() {
        requests(&daemon, id, &mut conn, &mut sd).await;
    }
    sd.end().await;
    daemon.sessions.unregister(id);
    tracing::debug!(session = id, "session ended");
}

async fn requests<R: AsyncRead + Half, W: AsyncWrite + Half>(
    daemon: &Arc<Daemon>,
    id: u64,
    conn: &mut Connection<R, W>,
    sd: &mut SessionData,
) {
    let mut shutdown = daemon.shutdown_signal();
    let policy = daemon.net_policy();
    let mut in_a_row = 0u32;
    loop {
        // A connection sending request after request yields now and then (-m), so that
        // others sharing its worker thread are served too.
        in_a_row += 1;
        if in_a_row > policy.burst {
            in_a_row = 0;
            tokio::task::yield_now().await;
        }
        let frame = tokio::select! {
            f = conn.read_frame::<Request>() => f,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let request = match frame {
            Ok(Some(request)) => request,
            Ok(None) | Err(FrameError::Io(_)) => return,
            Err(FrameError::Decode(e)) => {
                let err = QmError::new(Diagnostic::Proto, format!("malformed request frame: {e}"));
                if conn.write_frame(&Response::Failed(err)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(e @ (FrameError::TooLarge(_) | FrameError::Stalled { .. })) => {
                tracing::warn!(session = id, "closing the connection: {e}");
                let why = Response::Failed(QmError::new(Diagnostic::Proto, e.to_string()));
                // A peer that neither sends nor reads must not hold the session either.
                let _ = tokio::time::timeout(REFUSAL_WRITE, conn.write_frame(&why)).await;
                return;
            }
        };
        if matches!(request, Request::Message(qm_common::protocol::MessageRequest::Export { .. })) {
            if !stream_export(daemon, id, sd, request, conn).await {
                return;
            }
            continue;
        }
        if matches!(request, Request::Data(_) | Request::Message(_)) {
            let waits = match &request {
                Request::Data(DataRequest::Dequeue { ctl, .. }) => ctl.wait_ms.is_some(),
                Request::Data(DataRequest::Enqueue { ctl, .. }) => ctl.wait_ms.is_some(),
                _ => false,
            };
            let result = if waits {
                // A client that goes away while waiting must not be handed a message.
                let (gone_tx, gone_rx) = tokio::sync::watch::channel(false);
                sd.gone = Some(gone_rx);
                let handled = crate::data::handle(daemon, id, sd, request);
                tokio::pin!(handled);
                tokio::select! {
                    r = &mut handled => r,
                    _ = conn.peer_closed() => {
                        let _ = gone_tx.send(true);
                        let _ = handled.await;
                        return;
                    }
                }
            } else if matches!(request, Request::Message(_)) {
                relay_progress(daemon, id, sd, request, conn).await
            } else {
                crate::data::handle(daemon, id, sd, request).await
            };
            let response = match result {
                Ok(reply) => Response::Done { reply, notes: std::mem::take(&mut sd.notes) },
                Err(e) => {
                    sd.notes.clear();
                    Response::Failed(e)
                }
            };
            if conn.write_frame(&response).await.is_err() {
                return;
            }
            continue;
        }
        let stop = matches!(request, Request::Daemon(DaemonRequest::Stop));
        if stop && policy.persistent && sd.peer.face.is_network() {
            let why = "this qmd is a persistent service (-s): it cannot be stopped from the \
                       network; stop it on its machine (qmadmin DEVICE, SIGTERM)";
            let refused = Response::Failed(QmError::new(Diagnostic::Denied, why));
            if conn.write_frame(&refused).await.is_err() {
                return;
            }
            continue;
        }
        let alive = respond(daemon, id, request, conn).await;
        sd.forget();
        if !alive || stop {
            return;
        }
    }
}

/// Serves a message-administration request, relaying the progress a change to many
/// messages tells as it goes (each frame before the outcome, in order).
async fn relay_progress<R: AsyncRead + Half, W: AsyncWrite + Half>(
    daemon: &Arc<Daemon>,
    id: u64,
    sd: &mut SessionData,
    request: Request,
    conn: &mut Connection<R, W>,
) -> qm_common::QmResult<qm_common::protocol::Reply> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    sd.progress = Some(tx);
    let result = {
        let handled = crate::data::handle(daemon, id, sd, request);
        tokio::pin!(handled);
        loop {
            tokio::select! {
                Some(p) = rx.recv() => { let _ = conn.write_frame(&Response::Progress(p)).await; }
                result = &mut handled => break result,
            }
        }
    };
    sd.progress = None;
    while let Ok(p) = rx.try_recv() {
        let _ = conn.write_frame(&Response::Progress(p)).await;
    }
    result
}

/// Serves `qexport`: relays the export's batches as they come, then its outcome; false if
/// the peer is gone.
async fn stream_export<R: AsyncRead + Half, W: AsyncWrite + Half>(
    daemon: &Arc<Daemon>,
    id: u64,
    sd: &mut SessionData,
    request: Request,
    conn: &mut Connection<R, W>,
) -> bool {
    // A few batches in hand: the export reads no faster than the client takes them.
    let (tx, mut rx) = mpsc::channel(4);
    let work = crate::data::export(daemon, id, sd, request, tx);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            Some(batch) = rx.recv() => {
                if conn.write_frame(&Response::Exported(Box::new(batch))).await.is_err() {
                    return false;
                }
            }
            result = &mut work => break result,
        }
    };
    while let Ok(batch) = rx.try_recv() {
        if conn.write_frame(&Response::Exported(Box::new(batch))).await.is_err() {
            return false;
        }
    }
    let response = match result {
        Ok(n) => Response::Done { reply: qm_common::protocol::Reply::Count(n), notes: Vec::new() },
        Err(e) => Response::Failed(e),
    };
    conn.write_frame(&response).await.is_ok()
}

/// Runs an admin request on a blocking thread, relaying its progress; false if the peer is gone.
async fn respond<R: AsyncRead + Half, W: AsyncWrite + Half>(
    daemon: &Arc<Daemon>,
    id: u64,
    request: Request,
    conn: &mut Connection<R, W>,
) -> bool {
    // Admin requests are few and small: at -l 3 the log tells what was done and by whom.
    tracing::debug!(session = id, ?request, "admin request");
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let d = daemon.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let progress = move |p: Progress| {
            let _ = tx.send(p);
        };
        let mut ctx = Ctx::new(&d, id, &progress);
        let result = admin::handle(&mut ctx, request);
        (result, ctx.notes)
    });
    let outcome = loop {
        tokio::select! {
            Some(p) = rx.recv() => { let _ = conn.write_frame(&Response::Progress(p)).await; }
            res = &mut task => break res,
        }
    };
    // Progress sent just before the handler finished must still go out, in order.
    while let Ok(p) = rx.try_recv() {
        let _ = conn.write_frame(&Response::Progress(p)).await;
    }
    let response = match outcome {
        Ok((Ok(reply), notes)) => Response::Done { reply, notes },
        Ok((Err(e), _)) => {
            tracing::debug!(session = id, "admin request refused: {}", e.message);
            Response::Failed(e)
        }
        Err(e) => {
            tracing::error!(session = id, "request handler failed: {e}");
            Response::Failed(QmError::system(
                "internal error while serving the request; see the qmd log",
            ))
        }
    };
    conn.write_frame(&response).await.is_ok()
}
