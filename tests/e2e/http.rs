//! The HTTP face (`qmd -w PORT MAXCONN URLPATH`) with a real HTTP client: enqueue and
//! dequeue with TPQCTL fields, waits, errors, the connection limit, `/metrics`, `/healthz`.

use crate::app::{ERRQ, FIFO_Q, PARAMS, setup, waiting};
use crate::support::{Daemon, Env, run_limited, wait_until};
use qm_common::message::BODY_MAX;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

const QMD: &str = env!("CARGO_BIN_EXE_qmd");

/// A queue space QS (queues ERRQ, Q, and `queues`) served by a traced qmd with an HTTP face
/// on a port the system picked.
struct Face {
    env: Env,
    daemon: Daemon,
    port: u16,
    agent: ureq::Agent,
    url_path: String,
}

impl Face {
    fn start(max_connections: usize, url_path: &str, queues: &[&str]) -> Face {
        let env = Env::new();
        let daemon = env.start_traced_daemon(&["-w", "0", &max_connections.to_string(), url_path]);
        let mut all = vec![ERRQ, FIFO_Q];
        all.extend_from_slice(queues);
        setup(&env, "-n 16B", PARAMS, &all);
        // Plain HTTP is anonymous, which holds nothing until granted.
        env.c("qgrant anonymous enqueue,dequeue,browse QS").ok();
        let port = http_port(&daemon);
        Face { env, daemon, port, agent: agent(), url_path: url_path.to_string() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The URL of queue `queue` of QS, with a query.
    fn queue(&self, queue: &str, query: &str) -> String {
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        self.url(&format!("/{}/QS/{queue}{q}", self.url_path))
    }

    fn post(&self, queue: &str, query: &str, body: &[u8]) -> Answer {
        Answer::of(self.agent.post(self.queue(queue, query)).send(body))
    }

    fn get(&self, queue: &str, query: &str) -> Answer {
        Answer::of(self.agent.get(self.queue(queue, query)).call())
    }

    fn get_path(&self, path: &str) -> Answer {
        Answer::of(self.agent.get(self.url(path)).call())
    }

    /// Enqueues `body` and returns its msgid.
    #[track_caller]
    fn put(&self, queue: &str, query: &str, body: &[u8]) -> String {
        let answer = self.post(queue, query, body);
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["msgid"].as_str().expect("a msgid").to_string()
    }

    /// `/metrics`, each sample by its name and labels as written.
    #[track_caller]
    fn metrics(&self) -> Metrics {
        let answer = self.get_path("/metrics");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.header("content-type").starts_with("text/plain; version=0.0.4"));
        Metrics::parse(&answer.text())
    }
}

/// The port of the HTTP face, from the line its daemon logs once it listens.
fn http_port(daemon: &Daemon) -> u16 {
    daemon.wait_log(&["HTTP face listening on"], 1);
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("HTTP face listening on")).expect("the line");
    let at = line.split("listening on ").nth(1).and_then(|r| r.split(' ').next()).expect("addr");
    at.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// An HTTP client that hands back error statuses as answers, keeping connections alive.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// What a request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    #[track_caller]
    fn of(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("an HTTP answer");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect();
        let body = response.body_mut().read_to_vec().expect("the body");
        Answer { status: response.status().as_u16(), headers, body }
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), "application/json", "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts an error answer: its status, and the JSON naming the diagnostic and saying
    /// `why`.
    #[track_caller]
    fn refused(&self, status: u16, diagnostic: &str, why: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["diagnostic"], diagnostic, "{json}");
        let message = json["message"].as_str().expect("a message");
        assert!(message.contains(why), "{message:?} lacks {why:?}");
    }
}

/// `/metrics` parsed: `name{labels}` to value, and the names with HELP and TYPE lines.
struct Metrics {
    samples: HashMap<String, f64>,
    described: Vec<String>,
    text: String,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = HashMap::new();
        let mut helped = Vec::new();
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if let Some((key, value)) = line.rsplit_once(' ') {
                samples.insert(key.to_string(), value.parse().expect("a number"));
            }
        }
        let described = helped.into_iter().filter(|n| typed.contains(n)).collect();
        Metrics { samples, described, text: text.to_string() }
    }

    /// A queue's sample of `name`.
    #[track_caller]
    fn queue(&self, name: &str, queue: &str) -> f64 {
        let key = format!("{name}{{qspace=\"QS\",queue=\"{queue}\"}}");
        *self.samples.get(&key).unwrap_or_else(|| panic!("no {key} in\n{}", self.text))
    }

    #[track_caller]
    fn daemon(&self, name: &str) -> f64 {
        *self.samples.get(name).unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }
}

/// A request written by hand on a connection of its own, for what a client library would
/// not do (hold a connection, send a head without its body, go away mid-request).
struct Raw(TcpStream);

impl Raw {
    fn connect(port: u16) -> Raw {
        Raw(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    fn send(&mut self, head: &str) {
        self.0.write_all(head.as_bytes()).expect("write");
    }

    /// Reads one answer: its status line, headers and `Content-Length` body.
    fn answer(&mut self) -> (u16, String, String) {
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut byte).expect("read");
            assert_eq!(n, 1, "connection closed after {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let status = head[9..12].parse().expect("a status");
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().expect("a length"));
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).expect("the body");
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }

    /// True once the daemon closed the connection.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.0.read_to_end(&mut rest), Ok(0) | Err(_))
    }
}

/// Enqueue with every TPQCTL field as a parameter, peek, then dequeue: the body and the
/// properties come back as `Qm-*` headers; then the queue answers 204.
#[test]
fn enqueue_and_dequeue_with_properties() {
    let face = Face::start(8, "result", &[]);
    let body = b"render job 17 \x00\xff done";
    let query = "priority=7&corrid=job%2017&reply_queue=ERRQ&failure_queue=ERRQ\
                 &delivery=nonpersistent&reply_qos=persistent&expiration=+3600&urcode=-5";
    let before = qm_common::time::now_secs();
    let msgid = face.put("Q", query, body);

    let peeked = face.get("Q", "peek=1");
    assert_eq!(peeked.status, 200, "{peeked:?}");
    assert_eq!(peeked.body, body);
    let taken = face.get("Q", "");
    assert_eq!(taken.status, 200, "{taken:?}");
    assert_eq!(taken.body, body);
    for m in [&peeked, &taken] {
        assert_eq!(m.header("content-type"), "application/octet-stream");
        assert_eq!(m.header("qm-msgid"), msgid);
        assert_eq!(m.header("qm-priority"), "7");
        assert_eq!(m.header("qm-corrid"), "job\\2017", "as qmadmin writes it");
        assert_eq!(m.header("qm-reply-queue"), "ERRQ");
        assert_eq!(m.header("qm-failure-queue"), "ERRQ");
        assert_eq!(m.header("qm-delivery"), "nonpersist");
        assert_eq!(m.header("qm-reply-qos"), "persist");
        assert_eq!(m.header("qm-urcode"), "-5");
        assert_eq!(m.header("qm-retries"), "0");
        let enqueued: u64 = m.header("qm-enqueued").parse().expect("seconds");
        let expires: u64 = m.header("qm-expiration").parse().expect("seconds");
        assert!(enqueued >= before && expires >= enqueued + 3600, "{m:?}");
    }
    let none = face.get("Q", "");
    assert_eq!((none.status, none.body.len()), (204, 0), "{none:?}");

    // A message enqueued over HTTP is the same message for qmadmin.
    let msgid = face.put("Q", "priority=9", b"seen-by-qmadmin");
    face.env.c(&format!("qopen QS; qdequeue -m {msgid} Q")).ok().stdout_has("seen-by-qmadmin");
}

/// `msgid=` and `corrid=` select the message a dequeue takes; an availability time in the
/// future keeps a message back.
#[test]
fn dequeue_selects_by_msgid_and_corrid() {
    let face = Face::start(8, "result", &[]);
    face.put("Q", "corrid=a", b"one");
    face.put("Q", "corrid=b", b"two");
    let third = face.put("Q", "corrid=c", b"three");
    face.put("Q", "available=+3600", b"later");
    assert_eq!(face.get("Q", "corrid=b").body, b"two");
    assert_eq!(face.get("Q", &format!("msgid={third}")).body, b"three");
    assert_eq!(face.get("Q", &format!("msgid={third}")).status, 204);
    assert_eq!(face.get("Q", "").body, b"one");
    assert_eq!(face.get("Q", "").status, 204, "the later message is not available yet");
}

/// A waiting GET is answered by a POST that comes while it waits.
#[test]
fn waiting_dequeue_gets_a_later_message() {
    let face = Face::start(8, "result", &[]);
    let url = face.queue("Q", "wait=60");
    let waiter = std::thread::spawn(move || Answer::of(agent().get(url).call()));
    waiting(&face.daemon, 1);
    face.put("Q", "", b"arrived");
    let answer = waiter.join().expect("the waiting client");
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"arrived"[..]), "{answer:?}");

    // A wait that nothing answers ends with 204 (not before its time).
    let started = std::time::Instant::now();
    assert_eq!(face.get("Q", "wait=1").status, 204);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// A client that goes away while its GET waits is not handed the message that arrives
/// afterwards: the next client gets it.
#[test]
fn client_gone_while_waiting_is_not_handed_the_message() {
    let face = Face::start(8, "result", &[]);
    let mut raw = Raw::connect(face.port);
    raw.send("GET /result/QS/Q?wait=120 HTTP/1.1\r\nHost: qm\r\n\r\n");
    waiting(&face.daemon, 1);
    drop(raw);
    // The session ends once its dequeue has given up.
    face.daemon.wait_log(&["HTTP session ended"], 1);
    face.put("Q", "", b"for whoever asks next");
    assert_eq!(face.get("Q", "").body, b"for whoever asks next");
}

/// Failures are JSON naming the QME* diagnostic and the sentence, with the status that
/// fits: 404, 405, 400, 507; nothing is enqueued by a refused request.
#[test]
fn errors_are_json_with_their_status() {
    let face = Face::start(8, "result", &[]);
    // Rights are checked first: without them, a missing space would be a 403 (and tell
    // nothing about what exists).
    face.env.c("qgrant anonymous enqueue,dequeue,browse '*'").ok();
    face.post("NOPE", "", b"x").refused(404, "QMEBADQUEUE", "Queue NOPE does not exist");
    face.get("NOPE", "").refused(404, "QMEBADQUEUE", "Queue NOPE does not exist");
    let other = face.url("/result/NOSUCH/Q");
    Answer::of(face.agent.post(other).send(&b"x"[..])).refused(
        404,
        "QMENOENT",
        "Queue space NOSUCH does not exist",
    );
    face.get_path("/nowhere").refused(404, "QMENOENT", "/result/QSPACE/QUEUE");
    face.get_path("/result/QS").refused(404, "QMENOENT", "No such path");
    let put = Answer::of(face.agent.put(face.queue("Q", "")).send(&b"x"[..]));
    put.refused(405, "QMEINVAL", "PUT is not served");
    assert_eq!(put.header("allow"), "GET, POST");
    Answer::of(face.agent.post(face.url("/metrics")).send(&b""[..])).refused(
        405,
        "QMEINVAL",
        "POST is not served at /metrics",
    );
    face.post("Q", "priority=0", b"x").refused(400, "QMEINVAL", "priority: '0' is invalid");
    face.post("Q", "colour=red", b"x").refused(400, "QMEINVAL", "colour");
    face.post("Q", "delivery=sometimes", b"x").refused(400, "QMEINVAL", "Delivery mode");
    face.post("Q", "available=tomorrow", b"x").refused(400, "QMEINVAL", "available");
    face.post("Q", "expiration=soon", b"x").refused(400, "QMEINVAL", "Expiration time");
    face.get("Q", "wait=forever").refused(400, "QMEINVAL", "wait: 'forever' is invalid");
    face.get("Q", "msgid=a&corrid=b").refused(400, "QMEINVAL", "cannot be combined");
    face.get("Q", &format!("msgid={}", "x".repeat(33))).refused(400, "QMEBADMSGID", "32 bytes");
    // Non-persistent memory is 16 blocks: a larger non-persistent message has no room.
    let big = vec![b'x'; 64 * 1024];
    face.post("Q", "delivery=nonpersistent", &big).refused(
        507,
        "QMENOSPACE",
        "non-persistent memory",
    );
    assert_eq!(face.get("Q", "").status, 204, "nothing was enqueued");
}

/// A body over the message size limit is refused with 413 from its declared length, before
/// it is sent, and the connection is closed.
#[test]
fn too_large_body_is_refused_before_it_is_read() {
    let face = Face::start(8, "result", &[]);
    let mut raw = Raw::connect(face.port);
    raw.send(&format!(
        "POST /result/QS/Q HTTP/1.1\r\nHost: qm\r\nContent-Length: {}\r\n\r\n",
        BODY_MAX + 1
    ));
    let (status, head, body) = raw.answer();
    assert_eq!(status, 413, "{head}{body}");
    assert!(head.contains("connection: close"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["diagnostic"], "QMEINVAL");
    assert!(json["message"].as_str().unwrap_or("").contains("over the limit"), "{json}");
    assert!(raw.closed());
    assert_eq!(face.get("Q", "").status, 204, "nothing was enqueued");
}

/// MAXCONN connections are served with keep-alive; one more gets a 503 with a JSON body and
/// is closed; once a connection closes, a new one is served again.
#[test]
fn one_connection_over_maxconn_is_refused() {
    let face = Face::start(2, "result", &[]);
    let health = "GET /healthz HTTP/1.1\r\nHost: qm\r\n\r\n";
    let mut held: Vec<Raw> = (0..2).map(|_| Raw::connect(face.port)).collect();
    for raw in &mut held {
        raw.send(health);
        assert_eq!(raw.answer().0, 200);
    }
    let mut extra = Raw::connect(face.port);
    extra.send(health);
    let (status, head, body) = extra.answer();
    assert_eq!(status, 503, "{head}{body}");
    assert!(head.contains("connection: close"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["diagnostic"], "QMENOSPACE");
    assert!(json["message"].as_str().unwrap_or("").contains("at most 2 HTTP connections"));
    assert!(extra.closed());
    // The held connections still serve (keep-alive), one request after another.
    for raw in &mut held {
        raw.send(health);
        assert_eq!(raw.answer().0, 200);
    }
    held.pop();
    let served = wait_until(Duration::from_secs(15), || {
        let mut again = Raw::connect(face.port);
        again.send(health);
        again.answer().0 == 200
    });
    assert!(served, "a connection was served again once one closed");
}

/// An HTTP connection is a session: `ipcs` shows it attached to the queue space it used.
#[test]
fn http_connection_is_a_session() {
    let face = Face::start(8, "result", &[]);
    let mut raw = Raw::connect(face.port);
    raw.send("POST /result/QS/Q HTTP/1.1\r\nHost: qm\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(raw.answer().0, 201);
    let list: Vec<qm_common::qspace::Attachment> = face.env.json("ipcs --json QS");
    let local = raw.0.local_addr().expect("address");
    assert!(
        list.iter().any(|a| a.program == format!("http {local}") && a.pid.is_none()),
        "{list:?}"
    );
}

/// URLPATH may have several segments; only the paths under it carry messages.
#[test]
fn url_path_with_segments() {
    let face = Face::start(8, "report/result", &[]);
    face.put("Q", "", b"deep");
    assert_eq!(face.get("Q", "").body, b"deep");
    face.get_path("/result/QS/Q").refused(404, "QMENOENT", "/report/result/QSPACE/QUEUE");
}

/// `/metrics` follows the messages: depth, bytes, age, enqueues, dequeues, retries, moves
/// to the error queue, expiry, threshold firings, sessions and commits.
#[test]
fn metrics_follow_the_messages() {
    // T fires its threshold at 2 messages.
    let face = Face::start(8, "result", &["T fifo none 0 0 2m 1m ''"]);
    let first = face.metrics();
    for name in [
        "qm_queue_depth",
        "qm_queue_bytes",
        "qm_queue_oldest_message_age_seconds",
        "qm_queue_enqueued_total",
        "qm_queue_dequeued_total",
        "qm_queue_retried_total",
        "qm_queue_moved_to_error_queue_total",
        "qm_queue_expired_total",
        "qm_queue_threshold_firings_total",
        "qm_forwarder_state",
        "qm_sessions",
        "qm_http_connections",
        "qm_commits_total",
        "qm_journal_sync_seconds",
    ] {
        assert!(first.described.iter().any(|n| n == name), "no HELP/TYPE for {name}");
    }
    assert_eq!(first.queue("qm_queue_depth", "Q"), 0.0);
    let commits = first.daemon("qm_commits_total");
    let syncs = first.daemon("qm_journal_sync_seconds_count");

    face.put("Q", "", b"12345");
    face.put("Q", "", b"1234567890");
    face.put("Q", "", b"x");
    assert_eq!(face.get("Q", "").body, b"12345");
    let m = face.metrics();
    assert_eq!(m.queue("qm_queue_depth", "Q"), 2.0);
    assert_eq!(m.queue("qm_queue_bytes", "Q"), 11.0);
    assert_eq!(m.queue("qm_queue_enqueued_total", "Q"), 3.0);
    assert_eq!(m.queue("qm_queue_dequeued_total", "Q"), 1.0);
    assert!(m.queue("qm_queue_oldest_message_age_seconds", "Q") >= 0.0);
    assert!(m.daemon("qm_commits_total") >= commits + 4.0, "{}", m.text);
    // Each of those groups was one journal record, its sync timed.
    let count = m.daemon("qm_journal_sync_seconds_count");
    assert!(count >= syncs + 4.0, "{}", m.text);
    assert_eq!(m.daemon("qm_journal_sync_seconds_bucket{le=\"+Inf\"}"), count);
    assert!(m.daemon("qm_journal_sync_seconds_sum") > first.daemon("qm_journal_sync_seconds_sum"));
    assert!(m.daemon("qm_sessions") >= 1.0);
    assert!(m.daemon("qm_http_connections") >= 1.0);

    // A rolled-back dequeue: Q allows no retries, so the message moves to ERRQ.
    face.env.c("qopen QS; begin; qdequeue Q; abort").ok();
    let m = face.metrics();
    assert_eq!(m.queue("qm_queue_retried_total", "Q"), 1.0);
    assert_eq!(m.queue("qm_queue_moved_to_error_queue_total", "Q"), 1.0);
    assert_eq!(m.queue("qm_queue_depth", "Q"), 1.0);
    assert_eq!(m.queue("qm_queue_depth", "ERRQ"), 1.0);

    // The oldest message's age grows (not before a second has passed).
    let age = m.queue("qm_queue_oldest_message_age_seconds", "ERRQ");
    face.put("T", "expiration=+1", b"short-lived");
    let expired = wait_until(Duration::from_secs(30), || {
        face.metrics().queue("qm_queue_expired_total", "T") == 1.0
    });
    assert!(expired, "the message on T expired");
    let m = face.metrics();
    assert!(m.queue("qm_queue_oldest_message_age_seconds", "ERRQ") >= age + 1.0, "{}", m.text);
    assert_eq!(m.queue("qm_queue_depth", "T"), 0.0);

    face.put("T", "", b"1");
    assert_eq!(face.metrics().queue("qm_queue_threshold_firings_total", "T"), 0.0);
    face.put("T", "", b"2");
    assert_eq!(face.metrics().queue("qm_queue_threshold_firings_total", "T"), 1.0);
}

/// `/healthz` is 200 `ok` while the device is usable, 503 with why while there is none.
#[test]
fn healthz_says_whether_the_device_is_usable() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&["-w", "0", "4", "result"]);
    let port = http_port(&daemon);
    let agent = agent();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let answer = Answer::of(agent.get(&url).call());
    answer.refused(503, "QMENOENT", "no device at");
    env.with_device();
    let answer = Answer::of(agent.get(&url).call());
    assert_eq!((answer.status, answer.text().as_str()), (200, "ok\n"), "{answer:?}");
}

/// `-w` checks each of its values and names the one that is wrong; a port in use is
/// refused at start.
#[test]
fn bad_w_values_are_refused() {
    let env = Env::new();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(QMD);
        cmd.arg(&env.device).args(args).env_remove("QM_SOCKET");
        run_limited(cmd, Duration::from_secs(30))
    };
    run(&["-w", "http", "4", "result"]).failed().stderr_has("-w PORT: 'http'");
    run(&["-w", "80", "0", "result"]).failed().stderr_has("-w MAXCONN: '0'");
    run(&["-w", "80", "4", "a/../b"]).failed().stderr_has("-w URLPATH");
    run(&["-w", "80", "4", "a//b"]).failed().stderr_has("empty segment");
    run(&["-w", "80", "4"]).failed().stderr_has("PORT");
    let taken = TcpListener::bind("0.0.0.0:0").expect("a port");
    let port = taken.local_addr().expect("address").port().to_string();
    run(&["-w", &port, "4", "result"]).failed().stderr_has("cannot listen for HTTP");
    assert!(!env.socket().exists(), "nothing is left behind");
}

/// The start script of seed 000, as written: `qmd $QMCONFIG -s -p 53000 -n 1024 -l 2 -w
/// 53001 1024 result`. Farm jobs post results over HTTP, qmadmin reaches the TCP port, and
/// the persistent service refuses to be stopped from the network.
#[test]
fn seed_start_script() {
    // The seed's fixed ports: no scanning test may hold them meanwhile.
    let _ports = crate::network::PORTS.write().unwrap_or_else(|p| p.into_inner());
    let env = Env::new();
    setup(&env, "-n 16B", PARAMS, &[ERRQ, FIFO_Q]);
    env.c("qgrant anonymous enqueue,dequeue QS").ok();
    env.stop_daemon();
    // The fixed ports may be held for a moment by another test's daemon that just ended.
    for port in [53000, 53001] {
        let free =
            wait_until(Duration::from_secs(60), || TcpListener::bind(("0.0.0.0", port)).is_ok());
        assert!(free, "port {port} stayed in use");
    }
    let args = ["-s", "-p", "53000", "-n", "1024", "-l", "2", "-w", "53001", "1024", "result"];
    let _daemon = Daemon::start_with_env(&env.device, &args, &[("QMCONFIG", &env.dev())]);
    let agent = agent();
    let url = "http://127.0.0.1:53001/result/QS/Q";
    let posted = Answer::of(agent.post(url).send(&b"frame-0001-rendered"[..]));
    assert_eq!(posted.status, 201, "{posted:?}");
    let remote = |commands: &str| {
        let mut cmd = std::process::Command::new(crate::support::QMADMIN);
        cmd.env_remove("QMCONFIG").args(["--connect", "tcp://127.0.0.1:53000", "-c", commands]);
        env.run_stdin(cmd, "")
    };
    remote("qopen QS; qdequeue Q").ok().stdout_has("frame-0001-rendered");
    env.c("qgrant anonymous admin").ok();
    remote("daemon stop").failed().stderr_has("persistent service");
    env.c("qrevoke anonymous admin").ok();
}

/// Without a grant, an anonymous HTTP client is refused with 403 and the QMEPERM sentence.
#[test]
fn rights_hold_on_the_http_face() {
    let face = Face::start(8, "result", &[]);
    face.env.c("qrevoke anonymous enqueue,dequeue,browse QS; qgrant anonymous enqueue QS/Q").ok();
    assert_eq!(face.post("Q", "", b"allowed").status, 201);
    let refused = face.get("Q", "");
    assert_eq!(refused.status, 403, "{refused:?}");
    let json = refused.json();
    assert_eq!(json["diagnostic"], "QMEPERM");
    assert_eq!(json["message"], "QMEPERM: anonymous may not dequeue from QS/Q");
    let elsewhere = face.post("ERRQ", "", b"no");
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");
    // Peeking is browsing: refused until browse is granted; then the message stays.
    let peek = face.get("Q", "peek=1");
    assert_eq!(peek.json()["message"], "QMEPERM: anonymous may not browse QS/Q", "{peek:?}");
    face.env.c("qgrant anonymous browse QS/Q").ok();
    assert_eq!(face.get("Q", "peek=1").body, b"allowed");
    assert_eq!(face.get("Q", "").status, 403, "browse does not give dequeue");
    face.env.c("qgrant anonymous dequeue QS/Q").ok();
    assert_eq!(face.get("Q", "").body, b"allowed");
}

/// Requests one after another share one keep-alive connection.
#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let face = Face::start(8, "result", &[]);
    for n in 0..20 {
        face.put("Q", "", format!("message {n}").as_bytes());
    }
    for n in 0..20 {
        assert_eq!(face.get("Q", "").text(), format!("message {n}"));
    }
    assert_eq!(face.metrics().daemon("qm_http_connections"), 1.0);
}

/// A daemon asked to stop answers a waiting GET with 503 and stops.
#[test]
fn stop_ends_a_waiting_dequeue_with_503() {
    let mut face = Face::start(8, "result", &[]);
    let url = face.queue("Q", "wait=600");
    let waiter = std::thread::spawn(move || Answer::of(agent().get(url).call()));
    waiting(&face.daemon, 1);
    face.env.c("daemon stop").ok();
    let answer = waiter.join().expect("the waiting client");
    answer.refused(503, "QMESYSTEM", "qmd is stopping");
    assert_eq!(face.daemon.wait().status, 0);
}
