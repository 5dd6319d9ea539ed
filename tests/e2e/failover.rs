//! Failover to a standby: `qmd --standby` waiting on the device's lock, taking over when the
//! active daemon is killed under load from 64 clients that know both addresses; fencing
//! with `qmd --fence`; qmadmin with several addresses.

use crate::app::{ERRQ, FIFO_Q, QS, setup};
use crate::support::{Daemon, Env, QMD, wait_until};
use qm_common::address::Address;
use qm_common::client::{CallFailure, Client};
use qm_common::failover::Failover;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use qm_common::protocol::{ClientKind, DataRequest, Request};
use qm_common::{Diagnostic, QmError};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nobody listens on now (the kernel's choice of a free one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What the device's lock file says: (generation, pid).
fn holder(env: &Env) -> (u64, u32) {
    let text = std::fs::read_to_string(format!("{}.lock", env.dev())).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!((words[0], words[2]), ("generation", "pid"), "{text:?}");
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

/// `qspc` parameters for 64 clients and more: 1000 pages, 8 queues, 80 transactions, 100
/// processes, 5000 messages.
const PARAMS: &str = "40000 1000 8 80 100 5000 ERRQ n 16";

/// A device with QS (ERRQ, Q) whose queues anonymous network clients may use; no daemon.
fn device() -> Env {
    let env = Env::new();
    setup(&env, "", PARAMS, &[ERRQ, FIFO_Q]);
    env.c("qgrant anonymous enqueue,dequeue,browse QS").ok();
    env.stop_daemon();
    env
}

/// An active daemon and a standby on one device, each on a TCP port of its own, and the
/// two addresses a client is given (the active's first).
fn active_and_standby(env: &Env) -> (Daemon, Daemon, Vec<Address>) {
    let (a, b) = (free_port(), free_port());
    let active = env.start_daemon(&["-i", "127.0.0.1", "-p", &a.to_string()]);
    let standby = Daemon::start_standby(&env.device, &["-i", "127.0.0.1", "-p", &b.to_string()]);
    let addresses = vec![
        Address::Tcp { host: "127.0.0.1".into(), port: a },
        Address::Tcp { host: "127.0.0.1".into(), port: b },
    ];
    (active, standby, addresses)
}

/// Whether something accepts connections at a TCP `address`.
fn listens(address: &Address) -> bool {
    let Address::Tcp { host, port } = address else { return false };
    std::net::TcpStream::connect((host.as_str(), *port)).is_ok()
}

/// What the clients saw, shared by all of them.
#[derive(Default)]
struct Seen {
    /// Bodies whose enqueue was acknowledged.
    enqueued: Vec<String>,
    /// Bodies whose enqueue failed with its outcome unknown.
    maybe_enqueued: Vec<String>,
    /// Bodies acknowledged as dequeued.
    dequeued: Vec<String>,
    /// Dequeues whose outcome is unknown (a message may have gone with each).
    maybe_dequeued: usize,
}

/// Whether an error says the request's outcome is unknown (its answer was lost).
fn unknown_outcome(e: &QmError) -> bool {
    e.diagnostic == Diagnostic::Os && e.message.contains("is unknown")
}

/// One closed-loop client: enqueue a body of its own, dequeue one, until told to stop.
async fn client(
    n: usize,
    addresses: Vec<Address>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    kill: Arc<Mutex<Option<Instant>>>,
    first_after_kill: Arc<AtomicU64>,
) {
    let standby = addresses[1].clone();
    let mut app = Failover::new(addresses, "e2e-failover", ClientKind::Application)
        .with_patience(Duration::from_secs(30));
    // Only answers from the standby: one from the active may arrive after the kill began.
    let note_success = |on_standby: bool| {
        if !on_standby {
            return;
        }
        if let Some(at) = *kill.lock().unwrap() {
            let ms = at.elapsed().as_millis() as u64;
            first_after_kill.fetch_min(ms, Ordering::Relaxed);
        }
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = format!("c{n}-{i}");
        let enqueued = app.enqueue(QS, "Q", body.as_bytes(), &EnqueueCtl::default()).await;
        let on_standby = app.address() == Some(&standby);
        match enqueued {
            Ok(_) => {
                note_success(on_standby);
                seen.lock().unwrap().enqueued.push(body);
            }
            Err(e) if unknown_outcome(&e) => seen.lock().unwrap().maybe_enqueued.push(body),
            Err(e) => panic!("client {n}: enqueue failed otherwise: {e}"),
        }
        let dequeued = app.dequeue(QS, "Q", &DequeueCtl::default()).await;
        let on_standby = app.address() == Some(&standby);
        match dequeued {
            Ok(m) => {
                note_success(on_standby);
                seen.lock().unwrap().dequeued.push(String::from_utf8(m.body).unwrap());
            }
            Err(e) if e.diagnostic == Diagnostic::NoMsg => {}
            Err(e) if unknown_outcome(&e) => seen.lock().unwrap().maybe_dequeued += 1,
            Err(e) => panic!("client {n}: dequeue failed otherwise: {e}"),
        }
    }
}

/// Takes every message left on Q.
async fn drain(address: &Address) -> Vec<String> {
    let mut c = Client::connect_addr(address, "e2e-drain", ClientKind::Application).await.unwrap();
    let mut left = Vec::new();
    loop {
        match c.dequeue(QS, "Q", &DequeueCtl::default()).await {
            Ok(m) => left.push(String::from_utf8(m.body).unwrap()),
            Err(e) if e.diagnostic == Diagnostic::NoMsg => return left,
            Err(e) => panic!("draining: {e}"),
        }
    }
}

/// Active and standby on one device, 64 clients given both addresses, `kill -9` of the
/// active under load: the standby serves within 5 s, every acknowledged enqueue is there
/// exactly once (dequeued or left on the queue), nothing acknowledged as dequeued comes
/// back, and nothing appears that no client sent.
#[test]
fn standby_takes_over_under_load() {
    let env = device();
    let (a, b) = (free_port(), free_port());
    let mut active = env.start_daemon(&["-i", "127.0.0.1", "-p", &a.to_string()]);
    let (generation, pid) = holder(&env);
    assert_eq!(pid, active.pid);
    let standby = Daemon::start_standby(&env.device, &["-i", "127.0.0.1", "-p", &b.to_string()]);
    // A reload signal sent to every qmd must not end a standby that has nothing to reload.
    standby.signal_only("HUP");
    assert_eq!(holder(&env), (generation, active.pid), "a waiting standby changes nothing");
    let addresses = vec![
        Address::Tcp { host: "127.0.0.1".into(), port: a },
        Address::Tcp { host: "127.0.0.1".into(), port: b },
    ];

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let kill = Arc::new(Mutex::new(None));
    let first_after_kill = Arc::new(AtomicU64::new(u64::MAX));
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            runtime.spawn(client(
                n,
                addresses.clone(),
                seen.clone(),
                stop.clone(),
                kill.clone(),
                first_after_kill.clone(),
            ))
        })
        .collect();
    let count = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        s.enqueued.len() + s.dequeued.len()
    };
    assert!(
        wait_until(Duration::from_secs(60), || count(&seen) >= 2000),
        "the clients made no headway on the active daemon"
    );
    *kill.lock().unwrap() = Some(Instant::now());
    let before = count(&seen);
    active.signal("KILL");
    assert!(
        wait_until(Duration::from_secs(30), || count(&seen) >= before + 2000),
        "the clients made no headway after the kill"
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
    let took = Duration::from_millis(first_after_kill.load(Ordering::Relaxed));
    assert!(took < Duration::from_secs(5), "the standby served only {took:?} after the kill");
    assert_eq!(holder(&env), (generation + 1, standby.pid), "the standby took the device");

    let left = runtime.block_on(drain(&addresses[1]));
    let seen = seen.lock().unwrap();
    let mut taken = HashSet::new();
    for body in seen.dequeued.iter().chain(&left) {
        assert!(taken.insert(body.as_str()), "{body} was dequeued twice (or dequeued and left)");
    }
    let sent: HashSet<&str> =
        seen.enqueued.iter().chain(&seen.maybe_enqueued).map(String::as_str).collect();
    for body in &taken {
        assert!(sent.contains(body), "{body} was never sent");
    }
    let missing: Vec<&String> =
        seen.enqueued.iter().filter(|b| !taken.contains(b.as_str())).collect();
    assert!(
        missing.len() <= seen.maybe_dequeued,
        "{} acknowledged messages are gone, more than the {} dequeues whose answer was lost: \
         {missing:?}",
        missing.len(),
        seen.maybe_dequeued
    );
    eprintln!(
        "failover: served again after {took:?}; {} enqueued, {} dequeued, {} left; outcome \
         unknown: {} enqueues, {} dequeues",
        seen.enqueued.len(),
        seen.dequeued.len(),
        left.len(),
        seen.maybe_enqueued.len(),
        seen.maybe_dequeued
    );
}

/// A transaction open when its daemon dies was rolled back: the reconnecting client says so
/// for every request made in it until `abort` or `begin`, and never runs them outside it.
#[test]
fn a_transaction_lost_with_its_daemon_is_reported_rolled_back() {
    let env = device();
    let (mut active, _standby, addresses) = active_and_standby(&env);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut app = Failover::new(addresses.clone(), "e2e-txn", ClientKind::Application);
        app.enqueue(QS, "Q", b"before", &EnqueueCtl::default()).await.unwrap();
        assert_eq!(app.address(), Some(&addresses[0]));
        app.begin(QS, None).await.unwrap();
        app.enqueue(QS, "Q", b"in the transaction", &EnqueueCtl::default()).await.unwrap();
        active.signal("KILL");
        let e = app.enqueue(QS, "Q", b"after", &EnqueueCtl::default()).await.unwrap_err();
        assert_eq!(e.diagnostic, Diagnostic::Aborted, "{e}");
        assert!(e.message.contains("rolled back"), "{e}");
        let e = app.commit().await.unwrap_err();
        assert_eq!(e.diagnostic, Diagnostic::Aborted, "{e}");
        app.abort().await.unwrap();
        app.enqueue(QS, "Q", b"outside", &EnqueueCtl::default()).await.unwrap();
        assert_eq!(app.address(), Some(&addresses[1]));
    });
    let left = runtime.block_on(drain(&addresses[1]));
    assert_eq!(left, ["before", "outside"]);
}

/// `qmd --fence`: the daemon serving the device stops before it writes again, even one that
/// was paused when the fence went up; what it committed before stays. A standby started
/// with nothing to wait for serves at once, and `--detach --standby` returns while waiting.
#[test]
fn a_fenced_daemon_stops_without_writing() {
    let env = device();
    let port = free_port();
    let mut active = env.start_daemon(&["-i", "127.0.0.1", "-p", &port.to_string()]);
    let address = Address::Tcp { host: "127.0.0.1".into(), port };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut app = runtime
        .block_on(Client::connect_addr(&address, "e2e-fence", ClientKind::Application))
        .unwrap();
    runtime.block_on(app.enqueue(QS, "Q", b"kept", &EnqueueCtl::default())).unwrap();
    let (generation, _) = holder(&env);

    active.pause();
    let out = Command::new(QMD).arg("--fence").arg(&env.device).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains(&format!("fenced at generation {}", generation + 1))
            && said.contains(&format!("pid {}", active.pid)),
        "{said}"
    );
    active.signal_only("CONT");
    let refused = runtime.block_on(app.enqueue(QS, "Q", b"lost", &EnqueueCtl::default()));
    assert!(refused.is_err(), "a fenced daemon acknowledged an enqueue");
    let ended = active.wait();
    assert_eq!(ended.status, 75, "{}", ended.stderr);
    assert!(ended.stderr.contains("fenced"), "{}", ended.stderr);

    // Nothing holds the device now: a standby serves at once, from the next generation.
    let mut standby = Command::new(QMD);
    standby.arg(&env.device).arg("--standby").env_remove("QM_SOCKET");
    let standby = Daemon::start_command(standby, &env.device);
    assert_eq!(holder(&env), (generation + 2, standby.pid));
    let out = Command::new(QMD)
        .arg(&env.device)
        .args(["--standby", "--detach", "--socket"])
        .arg(env.path("second.sock"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("standby for"), "{said}");
    assert!(said.contains(&format!("waiting for the active qmd (pid {})", standby.pid)), "{said}");
    let waiting = holder(&env);
    let socket = env.socket();
    let connecting = Client::connect(&socket, "e2e-fence", ClientKind::Application);
    let mut left = runtime.block_on(connecting).unwrap();
    let m = runtime.block_on(left.dequeue(QS, "Q", &DequeueCtl::default())).unwrap();
    assert_eq!(m.body, b"kept");
    assert_eq!(holder(&env), waiting, "the detached standby still waits");
    // Stopping the active hands the device to the detached standby, on its own socket;
    // `daemon stop` does not take the standby's hold for the stopped daemon's.
    let stopped = env.c_no_start("daemon stop");
    stopped.ok().stdout_has("qmd stopped");
    let second = env.path("second.sock");
    assert!(wait_until(Duration::from_secs(15), || second.exists()), "the standby never served");
    assert_eq!(holder(&env).0, generation + 3);
    let mut stop = Command::new(crate::support::QMADMIN);
    stop.args(["--no-start", "--socket"])
        .arg(&second)
        .arg("-c")
        .arg("daemon stop")
        .arg(&env.device);
    env.run_stdin(stop, "").ok();
}

/// `qmadmin --connect` with several addresses uses the first that answers.
#[test]
fn qmadmin_takes_the_first_address_that_answers() {
    let env = device();
    let _daemon = env.start_daemon(&[]);
    let nobody = env.path("nobody.sock");
    let list = format!("unix:{},unix:{}", nobody.display(), env.socket().display());
    let mut cmd = Command::new(crate::support::QMADMIN);
    cmd.env_remove("QMCONFIG").args(["--connect", &list, "-c", "qopen QS; qinfo Q"]);
    env.run_stdin(cmd, "").ok().stdout_has("Q");
    let mut cmd = Command::new(crate::support::QMADMIN);
    let none = format!("unix:{}", nobody.display());
    cmd.env_remove("QMCONFIG").args(["--connect", &format!("{none},{none}"), "-c", "qopen QS"]);
    env.run_stdin(cmd, "").failed().stderr_has(&nobody.display().to_string());
}

/// A qmadmin session whose daemon dies carries on with the standby that took over: the
/// next command sees the closed connection before it sends anything, connects again
/// (saying so), opens its queue space again, reports its transaction rolled back, and runs.
#[test]
fn a_qmadmin_session_carries_on_with_the_standby() {
    let env = device();
    let mut active = env.start_daemon(&[]);
    let standby = Daemon::start_standby(&env.device, &[]);
    let mut session = env.session();
    session.run("qopen QS\nbegin\nqenqueue Q 'in the lost transaction'\n").ok();
    active.signal("KILL");
    let socket = env.socket();
    assert!(
        wait_until(Duration::from_secs(15), || {
            holder(&env).1 == standby.pid
                && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "the standby never took over"
    );
    session
        .run("qinfo Q\n")
        .ok()
        .stderr_has("WARN: transaction 1 rolled back: its connection to qmd was lost")
        .stderr_has(&format!("connected again, now pid {}", standby.pid));
    session.run("qenqueue Q 'after the takeover'\n").ok();
    session.finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let connecting = Client::connect(&socket, "e2e-session", ClientKind::Application);
    let mut app = runtime.block_on(connecting).unwrap();
    let m = runtime.block_on(app.dequeue(QS, "Q", &DequeueCtl::default())).unwrap();
    assert_eq!(m.body, b"after the takeover");
}

/// A request made after the daemon closed the connection (a clean stop, the standby taking
/// over) never reached it: the client sees the closed connection before sending, and sends
/// the request to the standby, where it succeeds, instead of reporting its outcome unknown.
#[test]
fn a_request_after_a_clean_stop_goes_to_the_standby() {
    let env = device();
    let (mut active, standby, addresses) = active_and_standby(&env);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut app = Failover::new(addresses.clone(), "e2e-stop", ClientKind::Application);
        app.enqueue(QS, "Q", b"before", &EnqueueCtl::default()).await.unwrap();
        assert_eq!(app.address(), Some(&addresses[0]));
        active.signal("TERM").ok();
        assert!(
            wait_until(Duration::from_secs(15), || {
                holder(&env).1 == standby.pid && listens(&addresses[1])
            }),
            "the standby never took over"
        );
        app.enqueue(QS, "Q", b"after", &EnqueueCtl::default()).await.unwrap();
        assert_eq!(app.address(), Some(&addresses[1]));
    });
    let left = runtime.block_on(drain(&addresses[1]));
    assert_eq!(left, ["before", "after"]);
}

/// On qmd's own Unix socket, a request made after the daemon stopped is known never to have
/// left (so it may go elsewhere), not of unknown outcome: there the client learns it from
/// the write itself rather than from a look at the socket before it.
#[test]
fn a_request_on_the_socket_after_a_stop_is_known_unsent() {
    let env = device();
    let mut daemon = env.start_daemon(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let kind = ClientKind::Application;
        let mut app = Client::connect(&env.socket(), "e2e-unsent", kind).await.unwrap();
        app.enqueue(QS, "Q", b"before", &EnqueueCtl::default()).await.unwrap();
        daemon.signal("TERM").ok();
        // Larger than the socket's buffer, so that no part of it could have gone out unseen.
        let body = vec![b'x'; 512 * 1024];
        let request = Request::Data(DataRequest::enqueue(QS, "Q", &body, &EnqueueCtl::default()));
        match app.call_telling(&request).await {
            Err(CallFailure::Unsent(e)) => assert!(
                e.message.contains("qmd closed the connection before this request was sent"),
                "{e}"
            ),
            other => panic!("expected the request to be known unsent, got {other:?}"),
        }
        assert!(app.is_lost());
    });
    let _daemon = env.start_daemon(&[]);
    let left = runtime.block_on(drain(&Address::Unix(env.socket())));
    assert_eq!(left, ["before"]);
}

/// A commit whose answer never comes (its daemon paused, then killed) is reported as of
/// unknown outcome, not as rolled back nor as done; the client goes on with the standby.
#[test]
fn a_commit_whose_answer_was_lost_is_of_unknown_outcome() {
    let env = device();
    let (mut active, _standby, addresses) = active_and_standby(&env);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut app = Failover::new(addresses.clone(), "e2e-commit", ClientKind::Application);
        app.begin(QS, None).await.unwrap();
        app.enqueue(QS, "Q", b"committed or not", &EnqueueCtl::default()).await.unwrap();
        active.pause();
        let e = {
            let commit = app.commit();
            tokio::pin!(commit);
            let waited = tokio::time::timeout(Duration::from_millis(300), &mut commit).await;
            assert!(waited.is_err(), "a paused daemon answered the commit");
            active.signal("KILL");
            commit.await.unwrap_err()
        };
        assert_eq!(e.diagnostic, Diagnostic::Os, "{e}");
        assert!(e.message.contains("whether the commit took effect is unknown"), "{e}");
        // Not a transaction any more: the next request runs on its own, on the standby.
        app.enqueue(QS, "Q", b"next", &EnqueueCtl::default()).await.unwrap();
        assert_eq!(app.address(), Some(&addresses[1]));
    });
    let left = runtime.block_on(drain(&addresses[1]));
    assert_eq!(left, ["next"], "the commit never reached the daemon, which was paused");
}
