//! The daemon under pressure: running out of file descriptors, a long queue space
//! initialization next to other work, half-sent frames, and threshold commands left running
//! by a killed daemon.

use crate::support::{Daemon, Env, Output, QMD, wait_until};
use qm_common::protocol::{ClientKind, Hello, PROTOCOL_VERSION, Request, Response};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `qmd` for `env` logging to `log` (at level 3), with extra arguments and
/// environment variables; `nofile` sets both its limits of open files.
fn start(
    env: &Env,
    log: &Path,
    extra: &[&str],
    vars: &[(&str, &str)],
    nofile: Option<u32>,
) -> Daemon {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(QMD);
            c
        }
        None => Command::new(QMD),
    };
    cmd.arg(&env.device)
        .arg("-l")
        .arg("3")
        .arg("-g")
        .arg(log)
        .args(extra)
        .envs(vars.iter().copied())
        .env_remove("QM_SOCKET");
    // prlimit execs qmd: the child is the daemon itself.
    Daemon::start_command(cmd, &env.device)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A connection speaking raw frames.
struct Raw(UnixStream);

impl Raw {
    fn connect(env: &Env) -> Raw {
        Raw(UnixStream::connect(env.socket()).expect("connect to qmd"))
    }

    fn send(&mut self, request: &Request) {
        let body = postcard::to_stdvec(request).unwrap();
        self.0.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        self.0.write_all(&body).unwrap();
    }

    fn hello_frame(&mut self) {
        let hello =
            Hello { version: PROTOCOL_VERSION, program: "raw".into(), kind: ClientKind::Admin };
        self.send(&Request::Hello(hello));
    }

    /// Greets and waits for the welcome.
    fn greeted(env: &Env) -> Raw {
        let mut raw = Raw::connect(env);
        raw.hello_frame();
        assert!(matches!(raw.recv(), Some(Response::Welcome(_))), "no welcome");
        raw
    }

    /// The next frame, or `None` when the daemon closed the connection.
    fn recv(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        if self.0.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).ok()?;
        Some(postcard::from_bytes(&body).expect("a response frame"))
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Bytes that have arrived on the daemon's connections and that it has not read yet, and
/// how many connections it has (from `ss`).
fn unread(pid: u32) -> (u64, usize) {
    let out = Command::new("ss").arg("-xpn").output().expect("ss (iproute2) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let tag = format!("pid={pid},");
    let mut bytes = 0;
    let mut count = 0;
    for line in text.lines().filter(|l| l.contains(&tag) && l.starts_with("u_str")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Netid State Recv-Q Send-Q ...; the listening socket has state LISTEN.
        if fields.get(1) == Some(&"ESTAB") {
            bytes += fields[2].parse::<u64>().unwrap_or(0);
            count += 1;
        }
    }
    (bytes, count)
}

const MIB: u64 = 1024 * 1024;

/// Frames announced as 4 MiB that never complete: the daemon holds what arrived, not what
/// was announced, and lets go of it when the connections close.
#[test]
fn half_frames_do_not_pin_memory() {
    let env = Env::new();
    let log = env.path("qmd.log");
    // glibc fills every block it hands out (MALLOC_PERTURB_), so what the daemon allocates
    // is resident at once, as it is whenever memory freed earlier is reused.
    let daemon = start(&env, &log, &[], &[("MALLOC_PERTURB_", "165")], None);
    let idle = unread(daemon.pid).1;
    let n = 200u64;
    let mut conns: Vec<Raw> = (0..n).map(|_| Raw::greeted(&env)).collect();
    let before = rss(daemon.pid);
    for raw in &mut conns {
        raw.0.write_all(&(4 * MIB as u32).to_be_bytes()).unwrap();
        raw.0.write_all(b"sixteen bytes..!").unwrap();
    }
    // Every byte sent has been read: each frame has been begun.
    let all_read = wait_until(Duration::from_secs(30), || {
        let (bytes, count) = unread(daemon.pid);
        bytes == 0 && count >= idle + n as usize
    });
    assert!(all_read, "the daemon never read the half frames: {:?}", unread(daemon.pid));
    let announced = n * 4 * MIB;
    let held = rss(daemon.pid).saturating_sub(before);
    assert!(
        held < announced / 4,
        "{n} half frames announcing {} MiB in all grew qmd by {} MiB",
        announced / MIB,
        held / MIB
    );
    drop(conns);
    let closed = wait_until(Duration::from_secs(30), || unread(daemon.pid).1 <= idle);
    assert!(closed, "the daemon kept the connections: {:?}", unread(daemon.pid));
    let kept = rss(daemon.pid).saturating_sub(before);
    assert!(kept < announced / 4, "{} MiB still held after the connections closed", kept / MIB);
    env.c_no_start(&format!("crdl {} 0 2000", env.dev())).ok();
}

/// Half frames of megabytes (3 MiB of an announced 4 MiB each) hold what arrived while they
/// are open, and their memory goes back to the system once their connections close: in a
/// second burst too, after the allocator has seen blocks that large freed.
#[test]
fn large_half_frames_give_their_memory_back() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let daemon = start(&env, &log, &[], &[], None);
    let idle = unread(daemon.pid).1;
    let (n, sent) = (64u64, 3 * MIB);
    let chunk = vec![0u8; sent as usize];
    let before = rss(daemon.pid);
    for burst in 1..=2 {
        let mut conns: Vec<Raw> = (0..n).map(|_| Raw::greeted(&env)).collect();
        for raw in &mut conns {
            raw.0.write_all(&(4 * MIB as u32).to_be_bytes()).unwrap();
            raw.0.write_all(&chunk).unwrap();
        }
        let all_read = wait_until(Duration::from_secs(30), || {
            let (bytes, count) = unread(daemon.pid);
            bytes == 0 && count >= idle + n as usize
        });
        assert!(all_read, "burst {burst}: the daemon never read the half frames");
        drop(conns);
        let closed = wait_until(Duration::from_secs(30), || unread(daemon.pid).1 <= idle);
        assert!(closed, "burst {burst}: the daemon kept the connections");
        let bound = n * sent / 4;
        let kept = || rss(daemon.pid).saturating_sub(before);
        assert!(
            wait_until(Duration::from_secs(30), || kept() < bound),
            "burst {burst}: {} MiB still held after {n} connections that had sent {} MiB closed",
            kept() / MIB,
            n * sent / MIB
        );
    }
    env.c_no_start(&format!("crdl {} 0 2000", env.dev())).ok();
}

/// A daemon serving queue space QS of `pages` pages with one queue, Q, and an application
/// connected to it.
fn one_queue(pages: u32) -> (Env, Daemon, crate::app::App) {
    let env = Env::new();
    let daemon = start(&env, &env.path("qmd.log"), &[], &[], None);
    crate::app::setup_pages(&env, pages, &["Q fifo none 0 0 100% 0% ''"]);
    let app = crate::app::App::connect(&env);
    (env, daemon, app)
}

/// Memory freed under load stays with qmd for a while (giving it back at once made the
/// kernel unmap and zero it again at every checkpoint), but a daemon that has gone idle
/// gives back all it freed within a few seconds: here, the bodies of a transaction's
/// enqueues, held until it is rolled back.
#[test]
fn an_idle_daemon_gives_back_what_it_freed() {
    use qm_common::message::EnqueueCtl;
    let (_env, daemon, mut app) = one_queue(30000);
    let before = rss(daemon.pid);
    let (n, body) = (400u64, vec![b'm'; 64 * 1024]);
    app.begin(None).unwrap();
    for _ in 0..n {
        app.enqueue("Q", &body, &EnqueueCtl::default()).unwrap();
    }
    let held = rss(daemon.pid).saturating_sub(before);
    let sent = n * body.len() as u64;
    assert!(held > sent / 2, "{} MiB of bodies held only {} MiB", sent / MIB, held / MIB);
    app.abort().unwrap();
    let kept = || rss(daemon.pid).saturating_sub(before);
    assert!(
        wait_until(Duration::from_secs(5), || kept() < held / 2),
        "{} MiB of {} MiB still held 5 s after the rollback",
        kept() / MIB,
        held / MIB
    );
}

/// A message enqueued and dequeued before its writes reach redb lets go of its body at the
/// dequeue, not at the next checkpoint: enqueueing and dequeueing 24 MiB of bodies one
/// message at a time, less than a checkpoint's worth of journal records, grew qmd by 6 MiB
/// (by 30–32 MiB when the bodies stayed until the checkpoint).
#[test]
fn a_message_come_and_gone_does_not_hold_its_body() {
    use qm_common::message::{DequeueCtl, EnqueueCtl};
    let (_env, daemon, mut app) = one_queue(3000);
    let body = vec![b'g'; 60 * 1024];
    // A first pair, so that what any pair allocates once is there before the measure.
    app.enqueue("Q", &body, &EnqueueCtl::default()).unwrap();
    app.dequeue("Q", &DequeueCtl::default()).unwrap();
    let before = rss(daemon.pid);
    let n = 400u64;
    for _ in 0..n {
        app.enqueue("Q", &body, &EnqueueCtl::default()).unwrap();
        app.dequeue("Q", &DequeueCtl::default()).unwrap();
    }
    let grown = rss(daemon.pid).saturating_sub(before);
    let passed = n * body.len() as u64;
    assert!(
        grown < passed / 2,
        "{} MiB of bodies came and went, and qmd grew by {} MiB",
        passed / MIB,
        grown / MIB
    );
}

/// A frame begun but not finished within `--frame-timeout` is dropped: its sender is told
/// why and disconnected, the log says so, and everyone else is served throughout.
#[test]
fn a_stalled_frame_is_dropped() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let _daemon = start(&env, &log, &["--frame-timeout", "1"], &[], None);
    env.with_device();
    let mut stalled = Raw::greeted(&env);
    stalled.0.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = std::time::Instant::now();
    stalled.0.write_all(&1000u32.to_be_bytes()).unwrap();
    stalled.0.write_all(b"a beginning").unwrap();
    // A peer that is merely idle between frames is not affected.
    let mut idle = Raw::greeted(&env);
    match stalled.recv() {
        Some(Response::Failed(e)) => {
            assert!(e.message.contains("not completed within the 1 s limit"), "{}", e.message);
            assert!(e.message.contains("11 of 1000 bytes"), "{}", e.message);
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "dropped before its time limit");
    assert!(stalled.recv().is_none(), "the connection is closed");
    assert!(read(&log).contains("closing the connection: a frame was not completed"));
    idle.send(&Request::Daemon(qm_common::protocol::DaemonRequest::Status));
    assert!(matches!(idle.recv(), Some(Response::Done { .. })), "the idle session still works");
    env.c_no_start("qspacecreate QS 40000 100 4 4 4 100 '' n 16; lidl").ok();
}

/// CPU time a process has used so far (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    // The fields after the command name (in parentheses, and it may hold spaces): state
    // first, user time 12th and system time 13th (fields 14 and 15 of proc(5)).
    let rest = &stat[stat.rfind(')').expect("stat") + 1..];
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    fields[11] + fields[12]
}

fn ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK")
}

/// A daemon that has run out of file descriptors backs off instead of retrying at once: it
/// does not spin, it logs the failure a few times rather than at every attempt, the
/// sessions it already has go on, and new connections are served once descriptors are free.
#[test]
fn running_out_of_file_descriptors_does_not_spin() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let daemon = start(&env, &log, &[], &[], Some(64));
    env.c_no_start(&format!(
        "crdl {} 0 2000; qspc A 40001 100 4 4 8 100 '' n 16; qopen A; qcreate Q fifo none 0 0 100% 0% ''",
        env.dev()
    ))
    .ok();
    let mut open = env.session();
    open.run("qopen A").ok();
    // More idle clients than the daemon has descriptors: the last ones wait in the backlog.
    let idle: Vec<Raw> = (0..100)
        .map(|_| {
            let mut raw = Raw::connect(&env);
            raw.hello_frame();
            raw
        })
        .collect();
    // Lines about a failed accept (not the one saying it works again).
    let failing = |text: &str| {
        text.lines().filter(|l| l.contains("accept") && !l.contains("accepting")).count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || failing(&read(&log)) > 0),
        "the daemon never ran out of descriptors; log:\n{}",
        read(&log)
    );
    // A window to measure the CPU time the daemon uses while it cannot accept (a spinning
    // loop uses all of it; this is no synchronization).
    let window = Duration::from_secs(2);
    let (cpu_before, started) = (cpu_ticks(daemon.pid), std::time::Instant::now());
    std::thread::sleep(window);
    let busy = (cpu_ticks(daemon.pid) - cpu_before) as f64 / ticks_per_second() as f64;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(busy < 0.3 * elapsed, "qmd used {busy:.2} s of CPU in {elapsed:.2} s: it spins");
    let text = read(&log);
    assert!(failing(&text) <= 5, "{} lines about failing accepts in the log", failing(&text));
    open.run("qenqueue Q still-served\nqdequeue Q").ok().stdout_has("still-served");
    drop(idle);
    env.c_no_start("qopen A; qenqueue Q x; qdequeue Q").ok().stdout_has("x");
    assert!(read(&log).contains("accepting connections again"), "log:\n{}", read(&log));
}

/// qmd raises its soft limit of open files to the hard limit when it starts: with a soft
/// limit of 64 (and a hard one of 4096), a hundred idle clients are all greeted, with no
/// failure to accept, and the log says what the limit became.
#[test]
fn the_soft_limit_of_open_files_is_raised_at_start() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=64:4096").arg("--").arg(QMD);
    cmd.arg(&env.device).arg("-l").arg("3").arg("-g").arg(&log).env_remove("QM_SOCKET");
    let _daemon = Daemon::start_command(cmd, &env.device);
    assert!(read(&log).contains("limit of open files raised from 64 to 4096"), "{}", read(&log));
    let clients: Vec<Raw> = (0..100).map(|_| Raw::greeted(&env)).collect();
    env.c_no_start(&format!("crdl {} 0 2000", env.dev())).ok();
    let text = read(&log);
    assert!(!text.contains("cannot accept"), "{text}");
    drop(clients);
}

/// Initializing a large queue space (slowed down here: every chunk waits a second, by a
/// variable only tests set) keeps nobody else waiting: while it runs, another session
/// works on another queue space and a new connection is greeted, commands on the space
/// itself are refused with the reason, and SIGTERM stops the daemon at once. The
/// initialization is then cancelled and the space left uninitialized and usable.
#[test]
fn a_long_initialization_stalls_nobody() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let mut daemon = start(&env, &log, &[], &[("QM_TEST_INIT_CHUNK_DELAY_MS", "1000")], None);
    env.c_no_start(&format!(
        "crdl {} 0 4000; qspc A 40001 100 4 4 8 100 '' n 16; qopen A; qcreate Q fifo none 0 0 100% 0% ''",
        env.dev()
    ))
    .ok();
    // At a second per chunk, these 2,000 pages take 20 s at least.
    let mut big = env.qmadmin_cmd();
    big.arg("--no-start")
        .arg("-c")
        .arg("v; qspacecreate BIG 40002 2000 4 4 4 100 '' y 16")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut big = big.spawn().expect("spawn qmadmin");
    let (out, err) =
        (Output::of(big.stdout.take().unwrap()), Output::of(big.stderr.take().unwrap()));
    let dots = |text: &str| text.chars().filter(|c| *c == '.').count();
    let base = dots(&env.c_no_start("v").stdout);
    assert!(
        wait_until(Duration::from_secs(30), || dots(&out.text()) > base),
        "no progress from qspacecreate BIG: {} {}",
        out.text(),
        err.text()
    );

    let mut still_running = |what: &str| {
        let done = big.try_wait().unwrap();
        assert!(done.is_none(), "{what} waited for BIG's initialization: {}", out.text());
    };
    env.c_no_start("qopen A; qenqueue Q while-big; qdequeue Q").ok().stdout_has("while-big");
    still_running("work on queue space A");
    Raw::greeted(&env);
    still_running("a greeting");
    env.c_no_start("qopen BIG").failed().stderr_has("Queue space BIG is being initialized");
    still_running("qopen BIG");

    let stopped = daemon.signal("TERM");
    let big =
        crate::support::wait_with_timeout(big, "qmadmin qspacecreate BIG", Duration::from_secs(30));
    let (out, err) = (out.text(), err.text());
    assert_ne!(big.status, 0, "the initialization was not cancelled: {out}");
    assert!(err.contains("initialization of queue space BIG was cancelled"), "{out}\n{err}");
    assert!(dots(&out) < base + 20, "the initialization completed: {out}");
    assert_eq!(stopped.status, 0, "{}", read(&log));

    // A new daemon finds the space, not initialized, and can initialize it.
    let _daemon = start(&env, &log, &[], &[], None);
    let info: qm_common::qspace::QueueSpaceInfo = env.json("qspacelist BIG");
    assert!(!info.params.initialize, "BIG is marked initialized");
    env.c_no_start("qspacechange BIG 40002 4 4 100 '' y 16").ok();
    let info: qm_common::qspace::QueueSpaceInfo = env.json("qspacelist BIG");
    assert!(info.params.initialize, "BIG is not initialized");
    env.c_no_start("qopen BIG; qcreate Q fifo none 0 0 100% 0% ''; qenqueue Q b; qdequeue Q")
        .ok()
        .stdout_has("b");
}

/// The process group of the oldest process whose command line contains `marker`.
fn group_of(marker: &str) -> Option<u32> {
    let out = Command::new("pgrep").arg("-o").arg("-f").arg(marker).output().ok()?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(2)?.parse().ok()
}

/// Kills a process group when dropped, so that a failing test leaves nothing behind.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", self.0)).status();
    }
}

/// Whether any live process (not a zombie waiting to be reaped) is in process group `group`.
fn group_alive(group: u32) -> bool {
    std::fs::read_dir("/proc").expect("/proc").flatten().any(|entry| {
        let stat = read(&entry.path().join("stat"));
        let Some(end) = stat.rfind(')') else { return false };
        let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
        // State first, process group third.
        fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2] == group.to_string()
    })
}

/// A threshold command still running when qmd is killed (`kill -9`) outlives that daemon,
/// but not the next one's start: it ends the command's whole process group, and `qthlog`
/// tells what happened instead of claiming the daemon stopped it.
#[test]
fn threshold_commands_left_by_a_killed_daemon_are_ended() {
    use crate::auto::{App, eventually, firings, running, setup};
    let env = Env::new();
    let marker = format!("sleep 1037.{}", std::process::id());
    let mut daemon = env.start_daemon(&[]);
    // A compound command: the sleep is a child of the group's leader.
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the command is running", || running(&marker));
    eventually("the firing is recorded", || firings(&env, Some("Q")).len() == 1);
    // Written after the firing's record by the same writer: once this one is acknowledged,
    // the record is on disk too.
    app.put("ERRQ", b"after");
    let guard = Group(group_of(&marker).expect("the command's process group"));
    let group = guard.0;
    daemon.signal("KILL");
    assert!(group_alive(group), "kill -9 leaves the command running");

    let _daemon = env.start_daemon(&[]);
    // The daemon killed the group before it said it was ready; the kernel may take a moment.
    eventually("the command's process group is gone", || !group_alive(group));
    let log = firings(&env, Some("Q"));
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].command, format!("{marker}; true"));
    assert_eq!(
        log[0].outcome, "killed by the next qmd at its start: qmd was killed while it ran",
        "{log:#?}"
    );
    // How long it ran nobody saw: no duration is shown.
    let table = env.c("qopen QS; qthlog Q");
    let row =
        table.ok().stdout.lines().find(|l| l.contains("killed by the next qmd")).unwrap_or("");
    assert!(row.trim_end().ends_with("| -"), "{}", table.stdout);
}

/// The events each epoll set of process `pid` watches for, one entry per registration
/// (`/proc/PID/fdinfo` of its `[eventpoll]` descriptors).
fn epoll_registrations(pid: u32) -> Vec<u64> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:[eventpoll]" {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{name}")).unwrap();
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let hex = line.split_whitespace().skip_while(|w| *w != "events:").nth(1).unwrap();
            events.push(u64::from_str_radix(hex, 16).unwrap());
        }
    }
    events
}

/// Sessions on the control socket are watched for reading alone: the kernel tells a
/// socket's writer of room to write each time its reader takes a message, so a session
/// also watched for writing woke qmd once more for every answer a client read
/// (BENCHMARKS.md). Three more sessions add registrations to qmd's epoll sets, none of
/// them for room to write (`EPOLLOUT`).
#[test]
fn sessions_are_watched_for_reading_alone() {
    const EPOLLOUT: u64 = 0x4;
    let env = Env::new();
    let daemon = env.start_daemon(&[]);
    let before = epoll_registrations(daemon.pid);
    let apps: Vec<crate::app::App> = (0..3).map(|_| crate::app::App::connect(&env)).collect();
    let after = epoll_registrations(daemon.pid);
    assert!(after.len() >= before.len() + 3, "{before:x?} -> {after:x?}");
    let writing = |events: &[u64]| events.iter().filter(|e| *e & EPOLLOUT != 0).count();
    assert_eq!(writing(&after), writing(&before), "{before:x?} -> {after:x?}");
    drop(apps);
}
