//! Which request goes where, and the answers: messages under `/URLPATH/QSPACE/QUEUE`,
//! `/metrics`, `/healthz`; errors as JSON naming the QME* diagnostic.

use super::{Conn, Shared, params};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use qm_common::message::{BODY_MAX, Message, escape_bytes};
use qm_common::protocol::{DataRequest, Reply};
use qm_common::{Diagnostic, QmError, QmResult};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub type Answer = Response<Full<Bytes>>;

/// Answers one request of a connection.
pub async fn answer(conn: &Conn, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match path.as_str() {
        "/metrics" if method == Method::GET => super::metrics::answer(&conn.shared).await,
        "/healthz" if method == Method::GET => healthz(&conn.shared).await,
        "/metrics" | "/healthz" => wrong_method(&method, &path, "GET"),
        _ => match message_path(&conn.shared.face.url_path, &path) {
            Some((qspace, queue)) if method == Method::POST => {
                enqueue(conn, qspace, queue, request).await
            }
            Some((qspace, queue)) if method == Method::GET => {
                dequeue(conn, qspace, queue, request.uri().query()).await
            }
            Some(_) => wrong_method(&method, &path, "GET, POST"),
            None => failure(
                StatusCode::NOT_FOUND,
                Diagnostic::NotFound.name(),
                format!(
                    "No such path: {}; messages are under /{}/QSPACE/QUEUE, and there are \
                     /metrics and /healthz",
                    qm_common::error::shown(&path),
                    conn.shared.face.url_path
                ),
            ),
        },
    }
}

/// `QSPACE` and `QUEUE` of `/URLPATH/QSPACE/QUEUE`.
fn message_path<'a>(url_path: &str, path: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix('/')?.strip_prefix(url_path)?.strip_prefix('/')?;
    let (qspace, queue) = rest.split_once('/')?;
    (!qspace.is_empty() && !queue.is_empty() && !queue.contains('/')).then_some((qspace, queue))
}

fn names(qspace: &str, queue: &str) -> QmResult<(String, String)> {
    qm_common::names::check_qspace_name(qspace)?;
    qm_common::names::check_queue_name(queue)?;
    Ok((qspace.to_string(), queue.to_string()))
}

/// `POST /URLPATH/QSPACE/QUEUE`: enqueues the body; 201 with the msgid.
async fn enqueue(conn: &Conn, qspace: &str, queue: &str, request: Request<Incoming>) -> Answer {
    let checked = names(qspace, queue)
        .and_then(|names| Ok((names, params::enqueue_ctl(request.uri().query())?)));
    let ((qspace, queue), ctl) = match checked {
        Ok(c) => c,
        // The body is not read: the connection cannot carry another request.
        Err(e) => return closing(error(&e)),
    };
    let body = match read_body(conn, request).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let request = DataRequest::Enqueue { qspace: Some(qspace), queue, ctl, body };
    match run(conn, request, None).await {
        Ok(Reply::Enqueued(id)) => {
            json(StatusCode::CREATED, &serde_json::json!({ "msgid": id.to_string() }))
        }
        Ok(_) => error(&QmError::system("unexpected reply to an enqueue")),
        Err(e) => error(&e),
    }
}

/// The request body, refused (413) past the message size limit before it is read further,
/// and (408) when it does not arrive within the frame time limit.
async fn read_body(conn: &Conn, request: Request<Incoming>) -> Result<Vec<u8>, Answer> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > BODY_MAX as u64) {
        let e = qm_common::message::check_body(len as usize)
            .err()
            .unwrap_or_else(|| QmError::inval("Message body is too large"));
        return Err(closing(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            e.diagnostic.name(),
            e.message,
        )));
    }
    let limit = conn.shared.daemon.frame_limit();
    let body = Limited::new(request.into_body(), BODY_MAX);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(collected)) => Ok(Vec::from(collected.to_bytes())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(closing(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            Diagnostic::Inval.name(),
            format!("Message body: more than the limit of {BODY_MAX} bytes"),
        ))),
        Ok(Err(e)) => Err(closing(failure(
            StatusCode::BAD_REQUEST,
            Diagnostic::Proto.name(),
            format!("cannot read the request body: {e}"),
        ))),
        Err(_) => Err(closing(failure(
            StatusCode::REQUEST_TIMEOUT,
            Diagnostic::Proto.name(),
            format!("the request body did not arrive within {} s", limit.as_secs()),
        ))),
    }
}

/// Tells a dequeue waiting for a message to give up, when its client is gone (hyper drops
/// the request's future) or the daemon stops.
struct GiveUp(watch::Sender<bool>);

impl Drop for GiveUp {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// `GET /URLPATH/QSPACE/QUEUE`: dequeues (or peeks); 200 with the message, 204 when none.
async fn dequeue(conn: &Conn, qspace: &str, queue: &str, query: Option<&str>) -> Answer {
    let checked = names(qspace, queue).and_then(|n| Ok((n, params::dequeue_ctl(query)?)));
    let ((qspace, queue), ctl) = match checked {
        Ok(c) => c,
        Err(e) => return error(&e),
    };
    let (give_up, gone) = watch::channel(false);
    let give_up = GiveUp(give_up);
    let request = DataRequest::Dequeue { qspace: Some(qspace), queue, ctl };
    let task = spawn(conn, request, Some(gone));
    tokio::pin!(task);
    let mut stop = conn.shared.daemon.shutdown_signal();
    let (result, stopped) = tokio::select! {
        r = &mut task => (r, false),
        () = super::stopping(&mut stop) => {
            drop(give_up);
            (task.await, true)
        }
    };
    match flatten(result) {
        Ok(Reply::Message(m)) => message(*m),
        Ok(_) => error(&QmError::system("unexpected reply to a dequeue")),
        Err(e) if e.diagnostic == Diagnostic::NoMsg => no_content(),
        Err(_) if stopped => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            Diagnostic::System.name(),
            "qmd is stopping: the dequeue gave up its wait".into(),
        ),
        Err(e) => error(&e),
    }
}

/// Runs a data request of the connection's session on a task of its own: once begun, it
/// ends as the engine decides (a dequeue told to give up stops waiting), even if the client
/// goes away and hyper drops the request.
fn spawn(
    conn: &Conn,
    request: DataRequest,
    gone: Option<watch::Receiver<bool>>,
) -> tokio::task::JoinHandle<QmResult<Reply>> {
    let daemon = conn.shared.daemon.clone();
    let (session, data) = (conn.session, conn.data.clone());
    tokio::spawn(async move {
        let mut sd = data.lock_owned().await;
        sd.gone = gone;
        crate::data::handle(&daemon, session, &mut sd, qm_common::protocol::Request::Data(request))
            .await
    })
}

async fn run(
    conn: &Conn,
    request: DataRequest,
    gone: Option<watch::Receiver<bool>>,
) -> QmResult<Reply> {
    flatten(spawn(conn, request, gone).await)
}

fn flatten(result: Result<QmResult<Reply>, tokio::task::JoinError>) -> QmResult<Reply> {
    result.unwrap_or_else(|e| {
        tracing::error!("HTTP request handler failed: {e}");
        Err(QmError::system("internal error while serving the request; see the qmd log"))
    })
}

/// The message: its body, and its properties as `Qm-*` headers.
fn message(m: Message) -> Answer {
    let mut headers: Vec<(&str, String)> = vec![
        ("qm-msgid", m.msgid.to_string()),
        ("qm-priority", m.priority.to_string()),
        ("qm-delivery", m.delivery.to_string()),
        ("qm-retries", m.retries.to_string()),
        ("qm-urcode", m.urcode.to_string()),
        ("qm-enqueued", m.enqueued.to_string()),
    ];
    if !m.corrid.is_empty() {
        headers.push(("qm-corrid", escape_bytes(&m.corrid)));
    }
    let optional = [
        ("qm-reply-queue", m.reply_queue.as_deref()),
        ("qm-failure-queue", m.failure_queue.as_deref()),
        ("qm-origin-queue", m.origin_queue.as_deref()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            headers.push((name, escape_bytes(v.as_bytes())));
        }
    }
    if let Some(qos) = m.reply_qos {
        headers.push(("qm-reply-qos", qos.to_string()));
    }
    if let Some(at) = m.expiration {
        headers.push(("qm-expiration", at.to_string()));
    }
    let mut answer = Response::new(Full::new(Bytes::from(m.body)));
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    for (name, value) in headers {
        // Escaped to printable ASCII above: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    answer
}

fn no_content() -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = StatusCode::NO_CONTENT;
    answer
}

/// `GET /healthz`: 200 `ok` while the daemon serves a device it can use, else 503 and why.
async fn healthz(shared: &Shared) -> Answer {
    let daemon = shared.daemon.clone();
    let problem = tokio::task::spawn_blocking(move || {
        if daemon.stopping() {
            return Some((Diagnostic::System, "qmd is stopping".to_string()));
        }
        let store = daemon.store();
        match (&store.device, &store.open_error) {
            (Some(_), _) => None,
            (None, Some(why)) => Some((Diagnostic::System, why.clone())),
            (None, None) => Some((
                Diagnostic::NotFound,
                format!(
                    "no device at {} (qmadmin's crdl creates it)",
                    daemon.device_path.display()
                ),
            )),
        }
    })
    .await
    .unwrap_or_else(|e| Some((Diagnostic::System, format!("the health check failed: {e}"))));
    match problem {
        None => {
            let mut answer = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            answer
        }
        Some((diagnostic, why)) => failure(StatusCode::SERVICE_UNAVAILABLE, diagnostic.name(), why),
    }
}

/// The HTTP status of a failure: not found 404, bad input 400, not allowed 403, no space
/// 507, anything else 500.
pub fn status_of(e: &QmError) -> StatusCode {
    match e.diagnostic {
        Diagnostic::NotFound | Diagnostic::BadQueue | Diagnostic::NotOpen => StatusCode::NOT_FOUND,
        Diagnostic::Inval | Diagnostic::BadMsgid | Diagnostic::Proto => StatusCode::BAD_REQUEST,
        Diagnostic::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Diagnostic::Denied => StatusCode::FORBIDDEN,
        // The queue refuses the operation for now: like a full queue, worth trying later.
        Diagnostic::EnqueueDisabled | Diagnostic::DequeueDisabled => StatusCode::CONFLICT,
        d if d.name() == "QMEPERM" => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(e: &QmError) -> Answer {
    failure(status_of(e), e.diagnostic.name(), e.message.clone())
}

/// An error answer: `{"diagnostic": "QME...", "message": "..."}`.
pub fn failure(status: StatusCode, diagnostic: &str, message: String) -> Answer {
    json(status, &serde_json::json!({ "diagnostic": diagnostic, "message": message }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(value.to_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// Closes the connection after this answer (a request body left unread).
fn closing(mut answer: Answer) -> Answer {
    answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

fn wrong_method(method: &Method, path: &str, allowed: &'static str) -> Answer {
    let mut answer = closing(failure(
        StatusCode::METHOD_NOT_ALLOWED,
        Diagnostic::Inval.name(),
        format!("{method} is not served at {}; use {allowed}", qm_common::error::shown(path)),
    ));
    answer.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
    answer
}

/// A connection over MAXCONN: its request is read (so that the client sees the answer
/// rather than a reset) and answered 503, and it is closed.
pub async fn refuse_over_limit(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let max = shared.face.max_connections;
    tracing::debug!("HTTP client {addr} refused: {max} connections are open, the limit");
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| async move {
        let mut answer = closing(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            Diagnostic::NoSpace.name(),
            format!(
                "qmd serves at most {max} HTTP connections at once (-w MAXCONN) and all are \
                 in use; try again later"
            ),
        ));
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, std::convert::Infallible>(answer)
    });
    let limit = shared.daemon.frame_limit();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limit).keep_alive(false);
    let served = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(limit, served).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_paths() {
        assert_eq!(message_path("result", "/result/QS/Q"), Some(("QS", "Q")));
        assert_eq!(message_path("report/result", "/report/result/QS/Q"), Some(("QS", "Q")));
        for bad in ["/result/QS", "/result/QS/", "/result//Q", "/result/QS/Q/x", "/resultX/QS/Q"] {
            assert_eq!(message_path("result", bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses() {
        let status = |d| status_of(&QmError::new(d, ""));
        assert_eq!(status(Diagnostic::BadQueue), StatusCode::NOT_FOUND);
        assert_eq!(status(Diagnostic::Inval), StatusCode::BAD_REQUEST);
        assert_eq!(status(Diagnostic::NoSpace), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(status(Diagnostic::Denied), StatusCode::FORBIDDEN);
        assert_eq!(status(Diagnostic::System), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
