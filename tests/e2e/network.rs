//! The network face: TCP and TLS listeners with mqserver's options (-i -p -n -t -s -c -k -a),
//! client certificates, certificate reload, and clients reaching qmd by address or
//! connection file. Certificates are made here, by rcgen.

use crate::app::{App, ERRQ, FIFO_Q, PARAMS, QS, setup};
use crate::rights::{assert_identity, check_right, refused_with};
use crate::support::{Daemon, Env, QMD, wait_until};
use qm_common::address::{Address, ConnectionFile};
use qm_common::client::Client;
use qm_common::protocol::ClientKind;
use qm_common::rights::Right;
use qm_common::tls::ClientTlsFiles;
use qm_common::{Diagnostic, QmResult};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that signs server and client certificates into PEM files.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
}

impl Ca {
    /// A new CA, its certificate written to `dir/NAME.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("qm test CA {name}"));
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        write_private(&pem, &cert.pem());
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate with `sans` (DNS names or IP addresses) and common name `cn`, with its
    /// key, in `dir/FILE`.
    pub fn issue(&self, dir: &Path, file: &str, cn: &str, sans: Vec<SanType>) -> PathBuf {
        self.issue_with(dir, file, cn, sans, |_| {})
    }

    pub fn issue_with(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        sans: Vec<SanType>,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> PathBuf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let path = dir.join(file);
        write_private(&path, &format!("{}{}", cert.pem(), key.serialize_pem()));
        path
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, dir: &Path, file: &str) -> PathBuf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ];
        self.issue(dir, file, "qmd", sans)
    }

    /// A client certificate naming `id` by a URI.
    pub fn client(&self, dir: &Path, file: &str, id: &str) -> PathBuf {
        self.issue(dir, file, "ignored", vec![SanType::URI(id.try_into().unwrap())])
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Tests that let qmd scan for a port from 53000 share the range; the one test that takes
/// the seed's fixed ports 53000 and 53001 has it alone.
pub static PORTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shares the scanned port range for the rest of the test.
pub fn scanning() -> std::sync::RwLockReadGuard<'static, ()> {
    PORTS.read().unwrap_or_else(|p| p.into_inner())
}

/// A device with queue space QS (ERRQ, Q) served by a qmd listening on 127.0.0.1 (first
/// free port from 53000) with `extra` options, writing `conn.json`. Hold [`scanning`] while
/// it runs.
pub fn listening(extra: &[&str]) -> (Env, Daemon, ConnectionFile) {
    let env = Env::new();
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    env.stop_daemon();
    let conn = env.path("conn.json");
    let mut args = vec!["-i", "127.0.0.1", "-c", conn.to_str().unwrap()];
    args.extend_from_slice(extra);
    let daemon = env.start_daemon(&args);
    let file = ConnectionFile::read(&conn).expect("connection file");
    (env, daemon, file)
}

/// A TLS client's files: a client certificate (or none), verifying by CA.
fn tls_files(cert_key: Option<&Path>, ca: Option<&Path>) -> ClientTlsFiles {
    ClientTlsFiles {
        cert_key: cert_key.map(Path::to_path_buf),
        server_name: None,
        ca_chain: ca.map(Path::to_path_buf),
    }
}

fn connect(address: &Address, files: &ClientTlsFiles) -> QmResult<App> {
    App::connect_by(|| {
        Client::connect_addr_with(address, files, "e2e-net", ClientKind::Application)
    })
}

fn connect_file(path: &Path, files: &ClientTlsFiles) -> QmResult<App> {
    App::connect_by(|| Client::connect_file_with(path, files, "e2e-net", ClientKind::Application))
}

/// Gives a principal enqueue, dequeue and browse on QS through the control socket.
pub fn grant_data(env: &Env, principal: &str) {
    env.c(&format!("qgrant {principal} enqueue,dequeue,browse {QS}")).ok();
}

/// A `qmadmin` reaching a daemon over the network: no device, none of the client
/// variables of the test's own environment, `vars` set.
fn remote_qmadmin(env: &Env, vars: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(crate::support::QMADMIN);
    cmd.env_remove("QMCONFIG")
        .env_remove("QM_CONNECT")
        .env_remove("QM_CLIENT_CERT_KEY")
        .env_remove("QM_CLIENT_CA_CHAIN")
        .env_remove("QM_CLIENT_SERVER_NAME")
        .env("PAGER", "cat")
        .current_dir(env.dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// `qmadmin --connect ADDR -c COMMANDS` with `vars` in its environment.
fn qmadmin_at(
    env: &Env,
    address: &str,
    vars: &[(&str, &Path)],
    commands: &str,
) -> crate::support::Run {
    let mut cmd = remote_qmadmin(env, vars);
    cmd.args(["--connect", address, "-c", commands]);
    env.run_stdin(cmd, "")
}

/// Plain TCP: a client reaches qmd by address and by connection file; what it enqueues is
/// what the socket's clients see. The port was found by scanning from 53000.
#[test]
fn plain_tcp_serves_the_data_plane() {
    let _ports = scanning();
    let (env, _daemon, file) = listening(&[]);
    assert!(file.port >= 53000, "scanned from 53000: {}", file.port);
    assert!(!file.tls && file.fingerprint.is_none());
    assert_eq!(file.device, env.dev());
    grant_data(&env, "anonymous");
    let address = file.address();
    let mut app = connect(&address, &ClientTlsFiles::default()).unwrap();
    app.put("Q", "over tcp");
    let mut local = App::connect(&env);
    assert_eq!(local.take_body("Q"), "over tcp");
    let status = env.c("daemon status").ok().stdout.clone();
    assert!(status.contains(&format!("tcp://127.0.0.1:{}", file.port)), "{status}");
    let mut by_file = connect_file(&env.path("conn.json"), &ClientTlsFiles::default()).unwrap();
    by_file.put("Q", "by file");
    assert_eq!(app.take_body("Q"), "by file");
}

/// With -i and no -p, a taken port is skipped: the next free one is used and written to
/// the connection file.
#[test]
fn a_taken_port_is_skipped() {
    let _ports = scanning();
    let (_env1, _d1, first) = listening(&[]);
    let (_env2, _d2, second) = listening(&[]);
    assert_ne!(first.port, second.port);
    assert!(second.port >= 53000);
}

/// The network face is off unless asked for: a qmd started by qmadmin opens no port, and
/// options of the face without it are refused.
#[test]
fn the_network_face_is_off_unless_asked_for() {
    let env = Env::new();
    let run = env.c(&format!("crdl {} 0 2000", env.dev()));
    run.ok().stderr_has("started qmd").stderr_lacks("tcp://");
    env.c("daemon status").ok().stdout_has("(off: control socket only)");
    env.stop_daemon();
    for options in
        [&["-n", "5"][..], &["-t", "3"], &["-k", "x.pem"], &["-a", "ca.pem"], &["-c", "c.json"]]
    {
        let out = Command::new(QMD).arg(&env.device).args(options).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{options:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(options[0]) && err.contains("network face"), "{err}");
    }
}

/// -n: one connection over the limit is told why and closed; once one closes, a new one is
/// served.
#[test]
fn connections_over_the_limit_are_refused_with_a_reason() {
    let _ports = scanning();
    let (env, _daemon, file) = listening(&["-n", "2"]);
    grant_data(&env, "anonymous");
    let address = file.address();
    let plain = ClientTlsFiles::default();
    let first = connect(&address, &plain).unwrap();
    let _second = connect(&address, &plain).unwrap();
    let Err(e) = connect(&address, &plain) else { panic!("a third connection was served") };
    assert_eq!(e.diagnostic, Diagnostic::NoSpace, "{}", e.message);
    assert!(e.message.contains("at most 2"), "{}", e.message);
    drop(first);
    let served = wait_until(Duration::from_secs(15), || connect(&address, &plain).is_ok());
    assert!(served, "a connection was refused after one of two closed");
}

/// -t: qmd stops by itself once no network connection has been open for that long (not
/// while one is), and removes its connection file.
#[test]
fn idle_timeout_stops_the_daemon() {
    let _ports = scanning();
    let started = std::time::Instant::now();
    let (env, mut daemon, file) = listening(&["-t", "1", "-w", "0", "8", "result"]);
    grant_data(&env, "anonymous");
    let mut app = connect(&file.address(), &ClientTlsFiles::default()).unwrap();
    app.put("Q", "x");
    // Held open past the idle time: the daemon is still there to serve it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.take_body("Q"), "x");
    // An HTTP connection keeps it up as well.
    let http = std::net::TcpStream::connect(("127.0.0.1", file.http_port.expect("http port")));
    drop(app);
    std::thread::sleep(Duration::from_secs(2));
    let running = daemon.child.as_mut().expect("child").try_wait().unwrap().is_none();
    assert!(running, "qmd stopped while an HTTP connection was open");
    drop(http);
    let run = daemon.wait();
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(started.elapsed() >= Duration::from_secs(5), "stopped before its idle time");
    assert!(!env.path("conn.json").exists(), "the connection file outlived the daemon");
}

/// -s: `daemon stop` from the network is refused; from the control socket it works.
#[test]
fn a_persistent_service_refuses_stop_from_the_network() {
    let _ports = scanning();
    let (env, mut daemon, file) = listening(&["-s", "-t", "1"]);
    env.c("qgrant anonymous admin").ok();
    let run = qmadmin_at(&env, &file.address().to_string(), &[], "daemon stop");
    run.failed().stderr_has("persistent service");
    env.c("daemon stop").ok();
    assert_eq!(daemon.wait().status, 0);
}

/// TLS with client certificates: the certificate's identity is the principal; no
/// certificate, one of another CA and an expired one are refused; the client verifies the
/// server by CA (and its name) or by the connection file's fingerprint.
#[test]
fn tls_requires_a_valid_client_certificate() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, _daemon, file) = tls_daemon(&env);
    let dir = env.dir.path();
    let other = Ca::new(dir, "other");
    let good = ca.client(dir, "render.pem", "spiffe://farm/render-17");
    let foreign = other.client(dir, "foreign.pem", "spiffe://farm/render-17");
    let expired = ca.issue_with(dir, "expired.pem", "old", vec![], |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    assert!(file.tls);
    let fingerprint = file.fingerprint.clone().expect("fingerprint");
    assert_eq!(fingerprint.len(), 64);
    grant_data(&env, "cert:spiffe://farm/render-17");
    let conn = env.path("conn.json");

    // By connection file (fingerprint) and by CA (and the name localhost).
    let mut app = connect_file(&conn, &tls_files(Some(&good), None)).unwrap();
    app.put("Q", "by fingerprint");
    let localhost = Address::parse(&format!("tls+tcp://localhost:{}", file.port)).unwrap();
    let mut by_ca = connect(&localhost, &tls_files(Some(&good), Some(&ca.pem))).unwrap();
    assert_eq!(by_ca.take_body("Q"), "by fingerprint");

    // qmadmin over TLS: the principal is the certificate's URI.
    let vars = [("QM_CLIENT_CERT_KEY", good.as_path()), ("QM_CLIENT_CA_CHAIN", ca.pem.as_path())];
    let run = qmadmin_at(&env, &localhost.to_string(), &vars, "whoami");
    run.ok().stdout_has("cert:spiffe://farm/render-17");

    // Refused clients.
    for (why, files) in [
        ("no certificate", tls_files(None, Some(&ca.pem))),
        ("another CA's certificate", tls_files(Some(&foreign), Some(&ca.pem))),
        ("an expired certificate", tls_files(Some(&expired), Some(&ca.pem))),
    ] {
        let result =
            connect(&localhost, &files).and_then(|mut a| a.enqueue("Q", b"x", &Default::default()));
        assert!(result.is_err(), "{why} was served");
    }
    // A client that cannot verify the server goes no further.
    let e = connect(&localhost, &tls_files(Some(&good), None)).err().expect("unverified server");
    assert!(e.message.contains("never goes on unverified"), "{}", e.message);
    let e = connect(&localhost, &tls_files(Some(&good), Some(&other.pem))).err().expect("wrong CA");
    assert_eq!(e.diagnostic, Diagnostic::Denied, "{}", e.message);
    // The name must match the certificate.
    let mut files = tls_files(Some(&good), Some(&ca.pem));
    files.server_name = Some("elsewhere.example".into());
    assert!(connect(&localhost, &files).is_err(), "a server of another name was believed");
}

/// A new certificate takes effect at SIGHUP (and `daemon reload`) for new connections; a
/// connection made before goes on. The connection file names the new fingerprint, and the
/// old one is no longer believed.
#[test]
fn certificates_reload_without_dropping_connections() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, daemon, _) = tls_daemon_with(&env, false, &[]);
    let (dir, conn, server) = (env.dir.path(), env.path("conn.json"), env.path("server.pem"));
    grant_data(&env, "anonymous");
    let old = ConnectionFile::read(&conn).unwrap();
    std::fs::copy(&conn, env.path("old.json")).unwrap();
    let mut before = connect_file(&conn, &ClientTlsFiles::default()).unwrap();
    ca.server(dir, "server.pem");
    daemon.signal_only("HUP");
    let changed = wait_until(Duration::from_secs(15), || {
        ConnectionFile::read(&conn).is_ok_and(|f| f.fingerprint != old.fingerprint)
    });
    assert!(changed, "the connection file still names the old certificate");
    before.put("Q", "same connection");
    let mut after = connect_file(&conn, &ClientTlsFiles::default()).unwrap();
    assert_eq!(after.take_body("Q"), "same connection");
    assert!(
        connect_file(&env.path("old.json"), &ClientTlsFiles::default()).is_err(),
        "the old certificate is still served"
    );
    // A certificate file that cannot be used is refused and the one in use stays.
    std::fs::write(&server, "not a certificate").unwrap();
    env.c("daemon reload").failed().stderr_has("TLS not reloaded");
    connect_file(&conn, &ClientTlsFiles::default()).unwrap().put("Q", "still served");
}

/// TLS files others could change or read are refused at start, with a reason.
#[test]
fn tls_files_others_may_change_are_refused() {
    let _ports = scanning();
    let env = Env::new();
    let dir = env.dir.path();
    let ca = Ca::new(dir, "ca");
    let server = ca.server(dir, "server.pem");
    env.with_device();
    env.stop_daemon();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(QMD)
        .arg(&env.device)
        .args(["-i", "127.0.0.1", "-k"])
        .arg(&server)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may be read or changed by others") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(QMD)
        .arg(&env.device)
        .args(["-i", "127.0.0.1", "-k"])
        .arg(&server)
        .args(["-a", &format!("{}/nothing-*.pem", dir.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no file"));
    // A CA file of another user: its owner could add a CA of their own, so it is refused.
    let other = crate::users::User::create();
    std::os::unix::fs::chown(&ca.pem, Some(other.uid), None).unwrap();
    let out = Command::new(QMD)
        .arg(&env.device)
        .args(["-i", "127.0.0.1", "-k"])
        .arg(&server)
        .arg("-a")
        .arg(&ca.pem)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("belongs to uid {}", other.uid)), "{err}");
}

/// -r: waiting dequeues of one program are served in the order they began waiting, and a
/// worker that comes back joins the end of the line.
#[test]
fn round_robin_serves_waiting_dequeues_in_turn() {
    let env = Env::new();
    let daemon = env.start_traced_daemon(&["-r"]);
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    let device = env.device.clone();
    let mut producer = App::connect(&env);
    // Each round: the workers begin waiting in the given order, then as many messages come.
    let rounds = [
        ["A", "B", "C", "D", "E", "F"],
        ["F", "E", "D", "C", "B", "A"],
        ["C", "F", "A", "E", "B", "D"],
    ];
    for order in rounds {
        let mut workers = Vec::new();
        for name in order {
            let before = daemon.log_count(&["dequeue waiting for a message"]);
            let device = device.clone();
            workers.push(std::thread::spawn(move || {
                let mut app = App::connect_to(&device);
                let ctl =
                    qm_common::message::DequeueCtl { wait_ms: Some(60_000), ..Default::default() };
                let body = app.dequeue("Q", &ctl).expect("a message").body;
                (name, String::from_utf8(body).unwrap())
            }));
            // Logged again whenever a dequeue goes back to waiting: counted from here.
            crate::app::waiting(&daemon, before + 1);
        }
        for (i, _) in order.iter().enumerate() {
            producer.put("Q", &format!("m{i}"));
        }
        let mut got: Vec<(&str, String)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        let served: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(served, order, "messages m0, m1, ... went to {served:?}");
    }
}

/// A `[listen]` table in the configuration file opens the network face as the options
/// would; its relative paths are the configuration file's neighbours.
#[test]
fn a_listen_table_opens_the_network_face() {
    let _ports = scanning();
    let env = Env::new();
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    env.stop_daemon();
    let config = env.path("QUE.toml");
    std::fs::write(&config, "[listen]\naddress = \"127.0.0.1\"\nconnection_file = \"conn.json\"\n")
        .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _daemon = env.start_daemon(&[]);
    let file = ConnectionFile::read(&env.path("conn.json")).expect("the connection file");
    assert!(file.port >= 53000 && !file.tls);
    grant_data(&env, "anonymous");
    connect(&file.address(), &ClientTlsFiles::default()).unwrap().put("Q", "via [listen]");
    // A daemon that qmadmin starts by itself opens no port, [listen] or not.
    env.stop_daemon();
    assert!(!env.path("conn.json").exists(), "the connection file outlived a clean stop");
    let run = env.c("daemon status");
    run.ok().stderr_has("started qmd").stdout_has("(off: control socket only)");
    assert!(!env.path("conn.json").exists(), "an auto-started daemon opened the network face");
    std::fs::write(&config, "[listen]\nport = 0\n").unwrap();
    env.stop_daemon();
    let out = Command::new(QMD).arg(&env.device).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[listen] port must be 1 to 65535"));
}

/// A TLS daemon with client certificates, its CA and connection file, in `env`.
pub fn tls_daemon(env: &Env) -> (Ca, Daemon, ConnectionFile) {
    tls_daemon_with(env, true, &[])
}

/// A daemon over queue space QS (ERRQ, Q) speaking TLS with a certificate of a new CA (and,
/// with `client_certificates`, wanting clients' certificates of that CA), listening on
/// 127.0.0.1, with `extra` options and a connection file.
pub fn tls_daemon_with(
    env: &Env,
    client_certificates: bool,
    extra: &[&str],
) -> (Ca, Daemon, ConnectionFile) {
    let dir = env.dir.path();
    let ca = Ca::new(dir, "ca");
    let server = ca.server(dir, "server.pem");
    setup(env, "", PARAMS, &[ERRQ, FIFO_Q]);
    env.stop_daemon();
    let conn = env.path("conn.json");
    let mut args =
        vec!["-i", "127.0.0.1", "-c", conn.to_str().unwrap(), "-k", server.to_str().unwrap()];
    if client_certificates {
        args.extend(["-a", ca.pem.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let daemon = env.start_daemon(&args);
    (ca, daemon, ConnectionFile::read(&conn).unwrap())
}

/// qmadmin over TLS works as over the socket, prompts included: a here-document answers
/// qcreate's prompts line by line.
#[test]
fn qmadmin_over_tls_answers_prompts() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, _daemon, file) = tls_daemon(&env);
    let ops = ca.client(env.dir.path(), "ops.pem", "spiffe://farm/ops");
    env.c("qgrant cert:spiffe://farm/ops admin QS").ok();
    let vars = [("QM_CLIENT_CERT_KEY", ops.as_path()), ("QM_CLIENT_CA_CHAIN", ca.pem.as_path())];
    let mut cmd = remote_qmadmin(&env, &vars);
    cmd.env("QM_CONNECT", format!("tls+tcp://localhost:{}", file.port));
    let script = "qopen QS\nqcreate\nservice1\nfifo\nnone\n2\n30\n80%\n10%\necho full\nq\n";
    env.run_stdin(cmd, script)
        .ok()
        .stdout_has(&format!("QMCONFIG={}", env.dev()))
        .stdout_has("Reset (low) limit for queue capacity warning")
        .stdout_has("Queue 'service1' created");
    let listing: qm_common::queue::QueueListing = env.json("qopen QS; qinfo service1");
    let def = &listing.queues[0].def;
    assert_eq!((def.retries, def.retry_delay), (2, 30));
    assert_eq!(def.threshold.command, "echo full");
}

/// Over plain TCP a client is `anonymous`: each right is refused until granted, allowed
/// after, refused once revoked; a `*` pattern never gives it admin; a daemon that starts
/// with anonymous holding admin says so loudly.
#[test]
fn rights_hold_on_the_tcp_face() {
    let _ports = scanning();
    let (env, daemon, file) = listening(&[]);
    let address = file.address().to_string();
    let admin = |c: &str| env.c(c);
    let peer = |c: &str| qmadmin_at(&env, &address, &[], c);
    assert_identity(&peer, "anonymous", "tcp", false);
    for right in [Right::Enqueue, Right::Dequeue, Right::Browse, Right::Admin] {
        check_right(&admin, &peer, "anonymous", right);
    }
    env.c("qgrant '*' admin; qgrant anonymous browse QS").ok();
    refused_with(
        &peer("qopen QS; qset Q; qchangeprio -y 9"),
        "QMEPERM: anonymous may not administer QS/Q",
    );
    assert!(!daemon.stderr_text().contains("anonymous holds admin"));
    env.c("qrevoke '*' admin; qrevoke anonymous browse QS; qgrant anonymous admin QS").ok();
    drop(daemon);
    let conn = env.path("conn.json");
    let restarted = env.start_daemon(&["-i", "127.0.0.1", "-c", conn.to_str().unwrap()]);
    let warned = restarted.stderr_text();
    assert!(warned.contains("WARN") && warned.contains("anonymous holds admin on QS"), "{warned}");
}

/// Over TLS the principal is the client certificate's identity, and rights hold as on the
/// socket.
#[test]
fn rights_hold_on_the_tls_face() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, _daemon, file) = tls_daemon(&env);
    let cert = ca.issue(env.dir.path(), "cn.pem", "render-17", vec![]);
    let address = format!("tls+tcp://localhost:{}", file.port);
    let admin = |c: &str| env.c(c);
    let vars = [("QM_CLIENT_CERT_KEY", cert.as_path()), ("QM_CLIENT_CA_CHAIN", ca.pem.as_path())];
    let peer = |c: &str| qmadmin_at(&env, &address, &vars, c);
    // No name in the certificate but its common name: that is the identity.
    assert_identity(&peer, "cert:render-17", "tls", false);
    for right in [Right::Enqueue, Right::Dequeue, Right::Browse, Right::Admin] {
        check_right(&admin, &peer, "cert:render-17", right);
    }
    refused_with(&peer("daemon stop"), "QMEPERM: cert:render-17 may not administer this qmd");
}

/// A ureq agent presenting `cert_key` (PEM chain and key) and believing `ca`.
fn https_agent(cert_key: Option<&Path>, ca: &Path) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let root = Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = cert_key.map(|path| {
        let pem = std::fs::read(path).unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        ClientCert::new_with_certs(&[cert], PrivateKey::from_pem(&pem).unwrap())
    });
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![root])))
        .client_cert(client)
        .build();
    ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into()
}

/// With -k and -a the HTTP face speaks HTTPS and wants a client certificate, whose identity
/// is the principal rights are checked against; the connection file names the HTTPS URL.
#[test]
fn the_http_face_speaks_https_with_client_certificates() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, _daemon, file) = tls_daemon_with(&env, true, &["-w", "0", "8", "result"]);
    let dir = env.dir.path();
    let render = ca.client(dir, "render.pem", "spiffe://farm/render-17");
    let other = ca.client(dir, "other.pem", "spiffe://farm/other");
    env.c("qgrant cert:spiffe://farm/render-17 enqueue,dequeue QS/Q").ok();
    let port = file.http_port.expect("the HTTP port");
    assert_eq!(file.http_url.as_deref(), Some(format!("https://127.0.0.1:{port}/result").as_str()));
    let url = format!("https://localhost:{port}/result/QS/Q");
    let agent = https_agent(Some(&render), &ca.pem);
    let posted = agent.post(&url).send(&b"over https"[..]).unwrap();
    assert_eq!(posted.status(), 201);
    let mut got = agent.get(&url).call().unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body_mut().read_to_string().unwrap(), "over https");
    // Another certificate of the same CA: served, but holds no right.
    let mut refused = https_agent(Some(&other), &ca.pem).get(&url).call().unwrap();
    assert_eq!(refused.status(), 403);
    let text = refused.body_mut().read_to_string().unwrap();
    assert!(text.contains("QMEPERM: cert:spiffe://farm/other may not dequeue from QS/Q"), "{text}");
    // No certificate: the handshake fails, nothing is served.
    assert!(https_agent(None, &ca.pem).get(&url).call().is_err(), "served without a certificate");
}

/// The TLS files can come from the environment, as mqserver's do: `QM_SERVER_CERT_KEY` and
/// `QM_SERVER_CA_CHAINS` (colon-separated, glob patterns allowed).
#[test]
fn tls_files_from_the_environment() {
    let _ports = scanning();
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::create_dir(dir.join("ca")).unwrap();
    let ca = Ca::new(&dir.join("ca"), "one");
    let extra = Ca::new(dir, "extra");
    let server = ca.server(dir, "server.pem");
    let from_extra = extra.client(dir, "extra-client.pem", "spiffe://farm/extra");
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    env.c("qgrant cert:spiffe://farm/extra enqueue QS").ok();
    env.stop_daemon();
    let conn = env.path("conn.json");
    let chains = format!("{}/ca/*.pem:{}", dir.display(), extra.pem.display());
    let vars = [
        ("QM_SERVER_CERT_KEY", server.to_str().unwrap()),
        ("QM_SERVER_CA_CHAINS", chains.as_str()),
    ];
    let args = ["-i", "127.0.0.1", "-c", conn.to_str().unwrap()];
    let _daemon = Daemon::start_with_env(&env.device, &args, &vars);
    let file = ConnectionFile::read(&conn).unwrap();
    assert!(file.tls, "QM_SERVER_CERT_KEY did not turn TLS on");
    // A certificate of the second chain is accepted; none at all is not.
    connect_file(&conn, &tls_files(Some(&from_extra), None)).unwrap().put("Q", "from extra");
    let bare = connect_file(&conn, &tls_files(None, None))
        .and_then(|mut a| a.enqueue("Q", b"x", &Default::default()));
    assert!(bare.is_err(), "a client without a certificate was served");
}

/// A peer that connects and says nothing is let go: the TLS handshake and the greeting each
/// have 10 s; the connection is closed, not held.
#[test]
fn silent_peers_are_let_go() {
    use std::io::Read;
    let _ports = scanning();
    let (_env, _daemon, plain) = listening(&[]);
    let env = Env::new();
    let (_ca, _tls_daemon, tls) = tls_daemon(&env);
    let started = std::time::Instant::now();
    let waits: Vec<_> = [plain.port, tls.port]
        .into_iter()
        .map(|port| {
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut buf = [0u8; 64];
                // The daemon closes its end: end of stream, not a time-out of ours.
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for wait in waits {
        wait.join().unwrap().expect("the daemon closed the silent connection");
    }
    assert!(started.elapsed() >= Duration::from_secs(10), "closed before its 10 s");
}

/// -m takes a positive count; anything else is refused with the option's name.
#[test]
fn burst_option_is_checked() {
    let env = Env::new();
    for bad in ["0", "2000000", "lots"] {
        let out = Command::new(QMD).arg(&env.device).args(["-m", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "-m {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("-m"), "-m {bad}");
    }
}

/// The certificate's identity: its first URI, else DNS name, else email address, else its
/// common name; `qmadmin --connect-file` reaches the daemon with the connection file alone.
#[test]
fn the_principal_is_the_certificates_first_name() {
    let _ports = scanning();
    let env = Env::new();
    let (ca, _daemon, _file) = tls_daemon(&env);
    let dir = env.dir.path();
    let dns = SanType::DnsName("render-17.farm.example".try_into().unwrap());
    let email = SanType::Rfc822Name("render@farm.example".try_into().unwrap());
    let uri = SanType::URI("spiffe://farm/render-17".try_into().unwrap());
    let cases = [
        ("all.pem", vec![email.clone(), dns.clone(), uri], "cert:spiffe://farm/render-17"),
        ("dns.pem", vec![email.clone(), dns], "cert:render-17.farm.example"),
        ("email.pem", vec![email], "cert:render@farm.example"),
        ("cn.pem", vec![], "cert:just-a-name"),
    ];
    let conn = env.path("conn.json");
    for (file, sans, principal) in cases {
        let cert = ca.issue(dir, file, "just-a-name", sans);
        let mut cmd = remote_qmadmin(&env, &[("QM_CLIENT_CERT_KEY", cert.as_path())]);
        cmd.args(["--connect-file", conn.to_str().unwrap(), "-c", "whoami"]);
        env.run_stdin(cmd, "").ok().stdout_has(principal).stdout_has("tls");
    }
}

/// A connection file decides which server is believed: a symbolic link is not followed, and
/// another user's file in a directory that is not theirs alone is refused, saying why.
#[test]
fn connection_files_others_could_plant_are_refused() {
    let _ports = scanning();
    let (env, _daemon, _file) = listening(&[]);
    grant_data(&env, "anonymous");
    let conn = env.path("conn.json");
    let link = env.path("link.json");
    std::os::unix::fs::symlink(&conn, &link).unwrap();
    let e = connect_file(&link, &ClientTlsFiles::default()).err().expect("a link was followed");
    assert!(e.message.contains("is a symbolic link"), "{}", e.message);
    let planted = env.path("planted.json");
    std::fs::copy(&conn, &planted).unwrap();
    let other = crate::users::User::create();
    std::os::unix::fs::chown(&planted, Some(other.uid), None).unwrap();
    let e = connect_file(&planted, &ClientTlsFiles::default()).err().expect("a planted file");
    assert!(e.message.contains(&format!("belongs to uid {}", other.uid)), "{}", e.message);
    connect_file(&conn, &ClientTlsFiles::default()).unwrap().put("Q", "the daemon's own file");
}
