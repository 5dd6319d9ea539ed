//! The client: one connection to `qmd`, over its control socket, TCP or TLS, one request
//! at a time.

use crate::address::{Address, ConnectionFile};
use crate::error::{Diagnostic, QmError, QmResult};
use crate::frame::{Connection, FrameError};
use crate::protocol::{
    ClientKind, Hello, Note, PROTOCOL_VERSION, Progress, Reply, Request, Response, Welcome,
};
use crate::tls::ClientTlsFiles;
use crate::trust;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The reading half of a connection, whatever carries it.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, whatever carries it.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// How long connecting (and the TLS handshake) to a network address may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// A successful reply with the notes that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub reply: Reply,
    pub notes: Vec<Note>,
}

/// A connected, greeted session with the daemon.
pub struct Client {
    conn: Connection<Reader, Writer>,
    welcome: Welcome,
    /// A request could not go out, or its answer did not come: the connection is gone.
    lost: bool,
    /// The socket under the connection, when this client made it.
    socket: Option<RawFd>,
    /// Whether that socket is a Unix stream: there, a write to a connection the daemon
    /// closed fails at once (`EPIPE`) and delivers nothing, so the write itself tells what
    /// a look at the socket before it would (see [`Client::peer_gone`]).
    unix: bool,
}

fn lost(e: FrameError) -> QmError {
    QmError::new(Diagnostic::Os, format!("{LOST}: {e}"))
}

/// How an error saying the connection was lost begins.
const LOST: &str = "connection to qmd lost";
/// The error of a connection the daemon closed.
const CLOSED: &str = "qmd closed the connection";
/// Said of a request that never left because the connection was closed already.
const BEFORE: &str = "before this request was sent";

/// Connects to the daemon's socket and checks who listens there, before anything is sent:
/// a daemon of our own user or root, or of the user who alone may have bound the socket
/// where it is (see [`trust::listener_dir_problem`]: another user's daemon that shares its
/// socket with `--socket-mode`). Anyone else who could bind the path first (a
/// world-writable directory, a predictable name) would otherwise receive our requests and
/// messages. A refusal is [`Diagnostic::Denied`]; "nobody listens" is [`Diagnostic::Os`].
pub async fn connect_trusted(socket: &Path) -> QmResult<UnixStream> {
    crate::paths::prepare_socket_dir(socket).map_err(|e| QmError::new(Diagnostic::Denied, e))?;
    let stream = UnixStream::connect(socket).await.map_err(|e| connect_error(socket, &e))?;
    let listener = stream.peer_cred().map_err(|e| {
        QmError::new(
            Diagnostic::Denied,
            format!("cannot tell who listens on {} ({e}); nothing was sent", socket.display()),
        )
    })?;
    let owner = listener.uid();
    if trust::is_trusted_user(owner) {
        return Ok(stream);
    }
    if let Some(problem) = trust::listener_dir_problem(socket, owner) {
        let you = match trust::euid() {
            0 => format!("you ({})", trust::describe_user(0)),
            me => format!("you ({}) or root", trust::describe_user(me)),
        };
        return Err(QmError::new(
            Diagnostic::Denied,
            format!(
                "refusing the qmd on {}: it runs as {}, not as {you}, so it may be another \
                 user's daemon posing as yours ({problem}); nothing was sent to it. If that \
                 socket is not yours, remove it and keep the device in a directory only you \
                 may write, or give your daemon a socket of its own with --socket or QM_SOCKET",
                socket.display(),
                trust::describe_user(owner),
            ),
        ));
    }
    Ok(stream)
}

/// Why connecting failed. Not being allowed to is a refusal ([`Diagnostic::Denied`]): a
/// daemon may be there, of another user, and starting one in its place would not help.
fn connect_error(socket: &Path, e: &std::io::Error) -> QmError {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return QmError::new(
            Diagnostic::Os,
            format!("cannot connect to {}: {e}", socket.display()),
        );
    }
    let whose = match std::fs::symlink_metadata(socket) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            format!(
                "the socket belongs to {}, mode {}",
                trust::describe_user(meta.uid()),
                trust::mode_text(meta.mode())
            )
        }
        Err(_) => "a directory on its path is closed to you".to_string(),
    };
    QmError::new(
        Diagnostic::Denied,
        format!(
            "cannot connect to {}: permission denied: {whose}; a qmd serves only its own user \
             and root unless its owner shares the socket (qmd --socket-mode), so this device is \
             another user's",
            socket.display()
        ),
    )
}

impl Client {
    /// Connects and greets; fails if nobody listens, if the listener is not to be trusted
    /// (see [`connect_trusted`]) or if the daemon refuses us.
    pub async fn connect(socket: &Path, program: &str, kind: ClientKind) -> QmResult<Client> {
        let stream = connect_trusted(socket).await?;
        Client::greet(stream, program, kind).await
    }

    /// Greets the daemon on a connection made by [`connect_trusted`].
    pub async fn greet(stream: UnixStream, program: &str, kind: ClientKind) -> QmResult<Client> {
        let fd = stream.as_raw_fd();
        let (r, w) = crate::unix_stream::split_tokio(stream).map_err(|e| {
            QmError::new(Diagnostic::Os, format!("cannot use the connection to qmd: {e}"))
        })?;
        let client = Client::greet_on(Box::new(r), Box::new(w), program, kind).await?;
        Ok(Client { unix: true, ..client.on_socket(fd) })
    }

    /// Connects to `address` and greets the daemon there. Over TLS the server is verified
    /// first (see [`crate::tls::client_config`]); a socket's listener is checked as
    /// [`connect_trusted`] does.
    /// TLS settings come from the environment ([`ClientTlsFiles::from_env`]).
    pub async fn connect_addr(
        address: &Address,
        program: &str,
        kind: ClientKind,
    ) -> QmResult<Client> {
        let files = ClientTlsFiles::from_env();
        Client::connect_verified(address, None, &files, program, kind).await
    }

    /// Like [`Client::connect_addr`], with TLS settings given rather than from the
    /// environment.
    pub async fn connect_addr_with(
        address: &Address,
        files: &ClientTlsFiles,
        program: &str,
        kind: ClientKind,
    ) -> QmResult<Client> {
        Client::connect_verified(address, None, files, program, kind).await
    }

    /// Connects with what a connection file (`qmd -c`) says, believing the server whose
    /// certificate it names.
    /// A client certificate comes from the environment.
    pub async fn connect_file(path: &Path, program: &str, kind: ClientKind) -> QmResult<Client> {
        Client::connect_file_with(path, &ClientTlsFiles::from_env(), program, kind).await
    }

    /// Like [`Client::connect_file`], with the client certificate given (the file's
    /// fingerprint verifies the server, whatever `files` says about CA and name).
    pub async fn connect_file_with(
        path: &Path,
        files: &ClientTlsFiles,
        program: &str,
        kind: ClientKind,
    ) -> QmResult<Client> {
        let file = ConnectionFile::read(path).map_err(QmError::inval)?;
        let pinned = file.fingerprint_bytes().map_err(QmError::inval)?;
        if file.tls && pinned.is_none() {
            return Err(QmError::inval(format!(
                "connection file {} says TLS but names no certificate fingerprint",
                path.display()
            )));
        }
        Client::connect_verified(&file.address(), pinned, files, program, kind).await
    }

    async fn connect_verified(
        address: &Address,
        pinned: Option<[u8; 32]>,
        files: &ClientTlsFiles,
        program: &str,
        kind: ClientKind,
    ) -> QmResult<Client> {
        let (host, port) = match address {
            Address::Unix(socket) => return Client::connect(socket, program, kind).await,
            Address::Tcp { host, port } | Address::Tls { host, port } => (host, *port),
        };
        let tcp = tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| {
                QmError::new(
                    Diagnostic::Os,
                    format!(
                        "cannot connect to {address}: no answer within {} s",
                        CONNECT_LIMIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                QmError::new(Diagnostic::Os, format!("cannot connect to {address}: {e}"))
            })?;
        // Requests are small and each waits for its answer: sending at once matters.
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        if let Address::Tcp { .. } = address {
            let (r, w) = tcp.into_split();
            return Ok(Client::greet_on(Box::new(r), Box::new(w), program, kind)
                .await?
                .on_socket(fd));
        }
        let tls = crate::tls::client_config(host, pinned, files)
            .map_err(|e| QmError::new(Diagnostic::Denied, e))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config);
        let stream = tokio::time::timeout(CONNECT_LIMIT, connector.connect(tls.server_name, tcp))
            .await
            .map_err(|_| {
                QmError::new(
                    Diagnostic::Os,
                    format!(
                        "TLS handshake with {address} did not finish within {} s",
                        CONNECT_LIMIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                QmError::new(
                    Diagnostic::Denied,
                    format!("TLS handshake with {address} failed: {e}; nothing was sent"),
                )
            })?;
        let (r, w) = tokio::io::split(stream);
        Ok(Client::greet_on(Box::new(r), Box::new(w), program, kind).await?.on_socket(fd))
    }

    /// Greets the daemon over an established connection.
    pub async fn greet_on(
        r: Reader,
        w: Writer,
        program: &str,
        kind: ClientKind,
    ) -> QmResult<Client> {
        let mut conn = Connection::new(r, w);
        let hello = Hello { version: PROTOCOL_VERSION, program: program.to_string(), kind };
        if let Err(e) = conn.write_frame(&Request::Hello(hello)).await {
            // The daemon may have refused us and closed already: its reason is waiting.
            return match conn.read_frame::<Response>().await {
                Ok(Some(Response::Failed(refusal))) => Err(refusal),
                _ => Err(lost(e)),
            };
        }
        match conn.read_frame::<Response>().await.map_err(lost)? {
            Some(Response::Welcome(welcome)) => {
                Ok(Client { conn, welcome, lost: false, socket: None, unix: false })
            }
            Some(Response::Failed(e)) => Err(e),
            Some(other) => Err(QmError::system(format!("unexpected greeting from qmd: {other:?}"))),
            None => Err(QmError::new(Diagnostic::Os, CLOSED)),
        }
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Whether the connection is gone (a request could not go out, or its answer did not
    /// come): the next request needs a new connection.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// [`Client::is_lost`], or the daemon closed the connection since the last exchange
    /// (it stopped, died, or a standby took over): looked at now, without waiting.
    pub fn gone(&mut self) -> bool {
        self.lost |= self.peer_gone();
        self.lost
    }

    /// Whether the daemon closed the connection (or it failed), looked at on the socket
    /// without waiting and without taking anything from it. Between two exchanges a
    /// daemon sends nothing; a closed connection seen before a request is written means
    /// the request can still go elsewhere, where one written into it would be lost with
    /// its outcome unknown. Bytes waiting (a TLS record, say) are left to the next read.
    fn peer_gone(&self) -> bool {
        let Some(fd) = self.socket else { return false };
        let mut byte = 0u8;
        // SAFETY: `fd` is the socket this client's connection owns, open while it lives;
        // one byte is peeked into a local.
        let n = unsafe {
            libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => !matches!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }

    /// Notes the socket under a connection made here, for [`Client::gone`].
    fn on_socket(mut self, fd: RawFd) -> Client {
        self.socket = Some(fd);
        self
    }

    /// Sends a request and waits for its reply, ignoring progress.
    pub async fn call(&mut self, request: Request) -> QmResult<Done> {
        self.call_with_progress(request, |_| {}).await
    }

    /// Sends a request and waits for its reply, passing progress frames to `on_progress`.
    pub async fn call_with_progress(
        &mut self,
        request: Request,
        on_progress: impl FnMut(Progress),
    ) -> QmResult<Done> {
        let unasked = |_| Err(QmError::system("qmd sent exported messages nobody asked for"));
        self.call_streaming(request, on_progress, unasked).await
    }

    /// Sends a request and waits for its reply, passing progress frames to `on_progress`
    /// and what an export sends to `on_batch`. When `on_batch` fails, the rest of the
    /// answer is read and dropped (the connection stays usable) and its error returned.
    pub async fn call_streaming(
        &mut self,
        request: Request,
        on_progress: impl FnMut(Progress),
        on_batch: impl FnMut(crate::export::ExportBatch) -> QmResult<()>,
    ) -> QmResult<Done> {
        self.exchange_watched(&request, on_progress, on_batch)
            .await
            .map_err(CallFailure::into_error)
    }

    /// Sends a request and waits for its reply, telling apart how it failed: for callers
    /// that may send it again elsewhere ([`crate::failover`]).
    pub async fn call_telling(&mut self, request: &Request) -> Result<Done, CallFailure> {
        let unasked = |_| Err(QmError::system("qmd sent exported messages nobody asked for"));
        self.exchange_watched(request, |_| {}, unasked).await
    }

    /// [`Client::exchange`], noting a connection that is gone.
    async fn exchange_watched(
        &mut self,
        request: &Request,
        on_progress: impl FnMut(Progress),
        on_batch: impl FnMut(crate::export::ExportBatch) -> QmResult<()>,
    ) -> Result<Done, CallFailure> {
        let result = self.exchange(request, on_progress, on_batch).await;
        self.lost |= matches!(result, Err(CallFailure::Unsent(_) | CallFailure::Interrupted(_)));
        result
    }

    async fn exchange(
        &mut self,
        request: &Request,
        mut on_progress: impl FnMut(Progress),
        mut on_batch: impl FnMut(crate::export::ExportBatch) -> QmResult<()>,
    ) -> Result<Done, CallFailure> {
        let mut failed: Option<QmError> = None;
        // A body over the limit would make a frame the daemon cannot take (and lose the
        // connection): refuse it here with the daemon's own message.
        if let Request::Data(DataRequest::Enqueue { body, .. }) = request {
            check_body(body.len()).map_err(CallFailure::Refused)?;
        }
        let closed_before = || {
            CallFailure::Unsent(QmError::new(Diagnostic::Os, format!("{LOST}: {CLOSED} {BEFORE}")))
        };
        // On a Unix socket the write finds out for itself, a system call fewer per request.
        if !self.unix && self.peer_gone() {
            return Err(closed_before());
        }
        let unix = self.unix;
        self.conn.write_frame(request).await.map_err(|e| match e {
            FrameError::Io(e) if unix && e.kind() == std::io::ErrorKind::BrokenPipe => {
                closed_before()
            }
            e => CallFailure::Unsent(lost(e)),
        })?;
        let interrupted = |e: QmError| CallFailure::Interrupted(e);
        loop {
            let frame =
                self.conn.read_frame::<Response>().await.map_err(|e| interrupted(lost(e)))?;
            match frame {
                Some(Response::Progress(p)) => on_progress(p),
                Some(Response::Exported(batch)) => {
                    if failed.is_none()
                        && let Err(e) = on_batch(*batch)
                    {
                        failed = Some(e);
                    }
                }
                Some(Response::Done { reply, notes }) => {
                    return match failed {
                        Some(e) => Err(CallFailure::Refused(e)),
                        None => Ok(Done { reply, notes }),
                    };
                }
                Some(Response::Failed(e)) => return Err(CallFailure::Refused(failed.unwrap_or(e))),
                Some(Response::Welcome(_)) => {
                    return Err(CallFailure::Refused(QmError::system(
                        "unexpected second greeting from qmd",
                    )));
                }
                None => {
                    return Err(interrupted(QmError::new(Diagnostic::Os, CLOSED)));
                }
            }
        }
    }
}

/// How a call that did not succeed ended.
#[derive(Debug)]
pub enum CallFailure {
    /// The request did not go out whole: the daemon did not receive it.
    Unsent(QmError),
    /// The request went out and the connection was lost before its answer came: whether
    /// it took effect is unknown.
    Interrupted(QmError),
    /// The daemon (or the client's own checks) refused it.
    Refused(QmError),
}

impl CallFailure {
    pub fn into_error(self) -> QmError {
        match self {
            CallFailure::Unsent(e) | CallFailure::Interrupted(e) | CallFailure::Refused(e) => e,
        }
    }
}

use crate::message::{DequeueCtl, EnqueueCtl, Message, MsgId, check_body};
use crate::protocol::DataRequest;

/// The data plane: `tpenqueue`/`tpdequeue` and transactions, with the TPQCTL vocabulary.
impl Client {
    /// Connects as an application to the daemon serving `device`.
    pub async fn connect_device(device: &Path, program: &str) -> QmResult<Client> {
        let socket = crate::paths::resolve_socket(device, None);
        Client::connect(&socket, program, ClientKind::Application).await
    }

    /// Enqueues `body` on `queue` of `qspace`; returns the new message's id. Outside a
    /// transaction the message is on disk (if persistent) when this returns. A body over
    /// [`BODY_MAX`](crate::message::BODY_MAX) bytes is refused (QMEINVAL) before it is sent.
    pub async fn enqueue(
        &mut self,
        qspace: &str,
        queue: &str,
        body: &[u8],
        ctl: &EnqueueCtl,
    ) -> QmResult<MsgId> {
        check_body(body.len())?;
        let request = DataRequest::enqueue(qspace, queue, body, ctl);
        self.call(Request::Data(request)).await?.reply.into_msgid()
    }

    /// Dequeues (or, with `ctl.peek`, reads) a message from `queue` of `qspace`.
    pub async fn dequeue(
        &mut self,
        qspace: &str,
        queue: &str,
        ctl: &DequeueCtl,
    ) -> QmResult<Message> {
        let request = DataRequest::dequeue(qspace, queue, ctl);
        self.call(Request::Data(request)).await?.reply.into_message()
    }

    /// Begins a transaction on `qspace`; later calls join it until commit or abort.
    pub async fn begin(&mut self, qspace: &str, timeout_secs: Option<u32>) -> QmResult<u64> {
        let request = DataRequest::Begin { qspace: Some(qspace.to_string()), timeout_secs };
        self.call(Request::Data(request)).await?.reply.into_transaction()
    }

    /// Commits the open transaction: durable when this returns.
    pub async fn commit(&mut self) -> QmResult<()> {
        self.call(Request::Data(DataRequest::Commit)).await.map(|_| ())
    }

    /// Rolls back the open transaction.
    pub async fn abort(&mut self) -> QmResult<()> {
        self.call(Request::Data(DataRequest::Abort)).await.map(|_| ())
    }
}
