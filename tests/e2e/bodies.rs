//! Message bodies in body segments beside their redb file (the default; `QM_BODY_LOG=0` keeps
//! them in redb): stored there once redb holds their messages, read back after a restart by
//! a qmd that does not write them, removed once nothing points at them, and checked by
//! `qverify`.

use crate::auto::{App, setup};
use crate::faults::stop_and_wait;
use crate::support::{Daemon, Env, QMD, run_limited, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LOG: &[(&str, &str)] = &[("QM_BODY_LOG", "1")];

/// The body segments of the device file, in number order.
fn segments(env: &Env) -> Vec<PathBuf> {
    let prefix = format!("{}.bodies.", env.device.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(env.device.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, env.path(&name)))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn body(i: usize) -> Vec<u8> {
    format!("body {i:05} ").repeat(200).into_bytes()
}

/// Enqueues `n` messages with the body log on and stops cleanly, so that redb holds them.
fn stored_in_segments(env: &Env, n: usize) {
    stored_with(env, n, LOG);
}

/// Enqueues `n` messages to a qmd with `vars` in its environment and stops it cleanly.
fn stored_with(env: &Env, n: usize, vars: &[(&str, &str)]) {
    setup(env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(env);
    let daemon = Daemon::start_with_env(&env.device, &[], vars);
    let mut app = App::connect(env);
    for i in 0..n {
        app.put("Q", &body(i));
    }
    drop(app);
    stop_and_wait(env);
    drop(daemon);
}

#[test]
fn bodies_live_in_segments_until_nothing_points_at_them() {
    let env = Env::new();
    stored_in_segments(&env, 300);
    let held = segments(&env);
    assert!(!held.is_empty(), "the bodies are in segments beside the device file");
    let bytes: u64 = held.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(bytes >= 300 * body(0).len() as u64, "{bytes} bytes in {held:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&held[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "made for its owner only");

    // A qmd that keeps bodies in redb reads them all the same, in order.
    let daemon = Daemon::start_with_env(&env.device, &[], &[("QM_BODY_LOG", "0")]);
    let mut app = App::connect(&env);
    drained_whole(&mut app, 300);
    drop(app);
    env.c("qopen QS; qverify QS").ok().stdout_has("No problem found.");
    stop_and_wait(&env);
    drop(daemon);
    assert_eq!(segments(&env), Vec::<PathBuf>::new(), "nothing points at them any more");
}

#[test]
fn a_damaged_body_in_a_segment_is_found_by_qverify() {
    let env = Env::new();
    stored_in_segments(&env, 3);
    let segment = segments(&env).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let needle = b"body 00001";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("stored");
    bytes[at + 3] ^= 1;
    std::fs::write(&segment, bytes).unwrap();
    let _daemon = Daemon::start_with_env(&env.device, &[], LOG);
    let found = env.c("qopen QS; qverify QS");
    found.failed().stdout_has("fails its CRC").stderr_has("qverify found 1 problem");
    assert!(found.stdout.contains(&segment.display().to_string()), "{}", found.stdout);
}

/// A device file moved or copied without its body segments is refused with the reason,
/// and left as it is; put back, they are served again.
#[test]
fn a_file_without_its_body_segments_is_refused() {
    let env = Env::new();
    stored_in_segments(&env, 3);
    let held = segments(&env);
    let aside = env.path("aside");
    std::fs::create_dir(&aside).unwrap();
    for p in &held {
        std::fs::rename(p, aside.join(p.file_name().unwrap())).unwrap();
    }
    let before = std::fs::read(&env.device).unwrap();
    let mut cmd = Command::new(QMD);
    cmd.arg(&env.device).env_remove("QM_SOCKET").env_remove("QM_FAULT");
    let run = run_limited(cmd, Duration::from_secs(60));
    assert_ne!(run.status, 0, "qmd served it: {run:?}");
    assert!(run.stderr.contains(&held[0].display().to_string()), "{}", run.stderr);
    assert!(run.stderr.contains(".bodies.*) with it"), "{}", run.stderr);
    assert!(std::fs::read(&env.device).unwrap() == before, "left unchanged");
    for p in &held {
        std::fs::rename(aside.join(p.file_name().unwrap()), p).unwrap();
    }
    let _daemon = Daemon::start(&env.device, &[]);
    let mut app = App::connect(&env);
    assert_eq!(app.drain("Q").len(), 3);
}

/// The segments of the file at `path`.
fn segments_of(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let file = p.file_name().unwrap().to_str().unwrap();
            file.strip_prefix(&name).is_some_and(|rest| rest.starts_with(".bodies."))
        })
        .collect();
    found.sort();
    found
}

#[track_caller]
fn drained_whole(app: &mut App, n: usize) {
    let taken = app.drain("Q");
    assert_eq!(taken.len(), n);
    for (i, m) in taken.iter().enumerate() {
        assert!(m.body == body(i), "message {i} came back with another body");
    }
}

/// `qbackup` copies the segments the snapshot points into (listed, with their checksums),
/// and `qrestore` puts them beside the restored file, whose messages then read whole.
#[test]
fn a_backup_carries_the_segments_and_a_restore_puts_them_back() {
    let env = Env::new();
    stored_in_segments(&env, 50);
    let _daemon = Daemon::start_with_env(&env.device, &[], LOG);
    let backup = env.path("backup");
    env.c(&format!("qbackup -y {}", backup.display())).ok().stdout_has("QUE.bodies.");
    assert!(!segments_of(&backup.join("device.qm")).is_empty(), "copied beside the file");
    let restored = env.path("restored");
    env.c(&format!("qrestore {} {}", backup.display(), restored.display())).ok();
    stop_and_wait(&env);
    assert_eq!(segments_of(&restored).len(), segments_of(&backup.join("device.qm")).len());
    let _restored = Daemon::start(&restored, &[]);
    drained_whole(&mut App::connect_to(&restored), 50);
}

/// `qspacemove` to another file gives the moved messages bodies in that file's segments.
#[test]
fn a_moved_queue_space_takes_its_bodies_along() {
    let env = Env::new();
    stored_in_segments(&env, 50);
    let _daemon = Daemon::start_with_env(&env.device, &[], LOG);
    let other = env.path("OTHER");
    env.c(&format!("crdl {} 0 3000; qspacemove QS 1", other.display())).ok();
    assert!(!segments_of(&other).is_empty(), "the bodies went along");
    env.c("qverify").ok().stdout_has("No problem found.");
    drained_whole(&mut App::connect(&env), 50);
}

/// Body segments of 16 KiB, compacted past 64 KiB of dead bytes (tests only).
const SMALL_SEGMENTS: &[(&str, &str)] = &[("QM_BODY_LOG", "1"), ("QM_FAULT", "smallsegments")];

/// A device with queue space QS and its queues Q and T, its daemon stopped.
fn q_and_t(env: &Env) {
    setup(env, 1500, &["Q fifo none 0 0 100% 0% ''", "T fifo none 0 0 100% 0% ''"]);
    stop_and_wait(env);
}

/// Enqueues 300 messages, one in ten to Q (they stay) and the rest to T (to be drained), so
/// that every segment ends up mostly dead once T is.
fn one_in_ten_to_q(app: &mut App) {
    for i in 0..300 {
        app.put(if i % 10 == 0 { "Q" } else { "T" }, &body(i));
    }
}

/// Segments that only a few live bodies keep are emptied: those bodies are copied forward
/// and the segments removed, so a few long-lived messages do not keep dead bytes on disk.
/// (`QM_FAULT=smallsegments`: segments of 16 KiB, compacted past 64 KiB of dead bytes.)
#[test]
fn mostly_dead_segments_are_emptied_and_removed() {
    let env = Env::new();
    q_and_t(&env);
    let _daemon = Daemon::start_with_env(&env.device, &[], SMALL_SEGMENTS);
    let mut app = App::connect(&env);
    one_in_ten_to_q(&mut app);
    let stored = |env: &Env| segments(env).len();
    assert!(wait_until(Duration::from_secs(30), || stored(&env) >= 30), "{}", stored(&env));
    let before = stored(&env);
    assert_eq!(app.drain("T").len(), 270);
    let emptied = wait_until(Duration::from_secs(30), || stored(&env) * 4 < before);
    assert!(emptied, "{before} segments, then {}", stored(&env));
    let kept = app.drain("Q");
    assert_eq!(kept.len(), 30);
    for (n, m) in kept.iter().enumerate() {
        assert!(m.body == body(n * 10), "kept message {n} came back with another body");
    }
    env.c("qverify").ok().stdout_has("No problem found.");
}

/// A dequeue reads a body where the queue's head last saw it, without looking its record
/// up again; once a compaction has moved it and removed that segment, the record says
/// where it went. Here Q's head is read (its first message taken) before T's messages
/// die and the segments they share with Q's are emptied.
#[test]
fn a_body_moved_after_its_head_was_read_is_found_through_its_record() {
    let env = Env::new();
    q_and_t(&env);
    let daemon = Daemon::start_with_env(&env.device, &[], SMALL_SEGMENTS);
    let mut app = App::connect(&env);
    one_in_ten_to_q(&mut app);
    drop(app);
    // Restarted, so that every message is read from disk, Q's with its head.
    stop_and_wait(&env);
    drop(daemon);
    let log = env.path("qmd.log");
    let args = ["-l", "3", "-g", log.to_str().unwrap()];
    let _daemon = Daemon::start_with_env(&env.device, &args, SMALL_SEGMENTS);
    let logged = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    let mut app = App::connect(&env);
    let stored = |env: &Env| segments(env).len();
    assert!(stored(&env) >= 30, "{}", stored(&env));
    assert!(app.take("Q").body == body(0));
    let before = stored(&env);
    assert_eq!(app.drain("T").len(), 270);
    let emptied = wait_until(Duration::from_secs(30), || stored(&env) * 4 < before);
    assert!(emptied, "{before} segments, then {}", stored(&env));
    let kept = app.drain("Q");
    assert_eq!(kept.len(), 29);
    for (n, m) in kept.iter().enumerate() {
        assert!(m.body == body((n + 1) * 10), "kept message {} came back with another body", n + 1);
    }
    assert!(logged("no longer where it was seen"), "the head's places were all still there");
    env.c("qverify").ok().stdout_has("No problem found.");
}

/// Bodies are copied forward on the applier's thread, which applies the groups handed to
/// it between the copy's steps: writers go on while a compaction is held up, though the
/// journal fills several times over meanwhile. (`QM_FAULT=gatedcompaction:PATH`: as
/// `smallsegments`, and a compaction waits after each step while PATH exists.) With the
/// compaction on the writer's thread, or the applier's without the groups between its
/// steps, the writers stopped until the gate opened.
#[test]
fn writers_go_on_while_bodies_are_copied_forward() {
    let env = Env::new();
    q_and_t(&env);
    let (gate, log) = (env.path("gate"), env.path("gated.log"));
    std::fs::write(&gate, "").unwrap();
    let fault = format!("gatedcompaction:{}", gate.display());
    let vars = [("QM_BODY_LOG", "1"), ("QM_FAULT", fault.as_str())];
    let args = ["-l", "3", "-g", log.to_str().unwrap(), "--checkpoint-mib", "4"];
    let _daemon = Daemon::start_with_env(&env.device, &args, &vars);
    let logged = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    let mut app = App::connect(&env);
    one_in_ten_to_q(&mut app);
    // In segments first (not still deferred, which a dequeue would cancel), then mostly dead.
    assert!(wait_until(Duration::from_secs(30), || segments(&env).len() >= 30));
    assert_eq!(app.drain("T").len(), 270);
    let began = wait_until(Duration::from_secs(30), || logged("of live bodies forward out of"));
    assert!(began, "no compaction began:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    // 1,200 pairs of 32 KiB: the journal's two regions (8 MiB each) fill over twice.
    let (done, pairs) = std::sync::mpsc::channel();
    let mut other = App::connect(&env);
    std::thread::spawn(move || {
        let large = vec![b'x'; 32 << 10];
        for _ in 0..1200 {
            other.put("T", &large);
            assert!(other.take("T").body == large);
        }
        let _ = done.send(());
    });
    let went_on = pairs.recv_timeout(Duration::from_secs(60)).is_ok();
    let held_all_along = !logged("copied forward");
    std::fs::remove_file(&gate).unwrap();
    assert!(went_on, "the writers stopped while the compaction was held");
    assert!(held_all_along, "the compaction was not held");
    assert!(wait_until(Duration::from_secs(30), || logged("copied forward")));
    let kept = app.drain("Q");
    assert_eq!(kept.len(), 30);
    for (n, m) in kept.iter().enumerate() {
        assert!(m.body == body(n * 10), "kept message {n} came back with another body");
    }
    env.c("qverify").ok().stdout_has("No problem found.");
}

/// A stream of `n` messages of queue Q with bodies of 16 KiB, as `qexport` writes one.
fn large_stream(n: u64) -> Vec<u8> {
    use crate::export::{hand_made, stream_of};
    stream_of((1..=n).map(|msgid| {
        let mut m = hand_made(msgid, 50, msgid);
        m.body = large_body(msgid);
        m
    }))
}

fn large_body(msgid: u64) -> Vec<u8> {
    format!("message {msgid:08} ").repeat(16 * 1024 / 17).into_bytes()
}

/// An import's batches, each many bodies, are committed by redb itself with their bodies
/// written once, to the segments, rather than to the journal first and to the segments
/// when applied: the journal does not grow for them. Each batch is durable when it is
/// answered, so a `kill -9` right after the import loses none of it.
#[test]
fn an_import_writes_its_bodies_once_and_a_kill_loses_none() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    env.c(&format!(
        "crdl {} 0 40000; qspc QS 40000 30000 4 20 20 5000 '' n 16; qopen QS; \
         qcreate Q fifo none 0 0 100% 0% ''",
        env.dev()
    ))
    .ok();
    let journal = env.path("QUE.journal");
    let before = std::fs::metadata(&journal).unwrap().len();
    let n = 600;
    let stream = env.path("large.qmx");
    std::fs::write(&stream, large_stream(n)).unwrap();
    env.c(&format!("qopen QS; qimport {}", stream.display()))
        .ok()
        .stdout_has("600 messages imported into queue space QS, 0 already there");
    let after = std::fs::metadata(&journal).unwrap().len();
    assert_eq!(after, before, "the journal took the import's bodies: {before} -> {after} bytes");
    let held: u64 = segments(&env).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    let all = n * large_body(1).len() as u64;
    assert!(held >= all / 2, "most bodies are in segments already: {held} bytes of {all}");

    daemon.signal("KILL");
    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    let got = app.drain("Q");
    assert_eq!(got.len(), n as usize, "every message imported is there after the kill");
    for (i, m) in got.iter().enumerate() {
        assert!(m.body == large_body(i as u64 + 1), "message {} has its body", i + 1);
    }
}

/// A body that no segment can take, the filesystem being full for it even with the room
/// held for the file given back (`QM_FAULT=fullsegments`), goes into redb instead: every
/// message is stored, comes back after a restart with its body, and no segment is made.
#[test]
fn a_body_no_segment_can_take_goes_into_redb() {
    let env = Env::new();
    // The clean stop's checkpoint puts them all in redb.
    stored_with(&env, 300, &[("QM_FAULT", "fullsegments")]);
    assert_eq!(segments(&env), Vec::<PathBuf>::new(), "no segment was made");
    let _daemon = Daemon::start(&env.device, &[]);
    drained_whole(&mut App::connect(&env), 300);
    assert_eq!(segments(&env), Vec::<PathBuf>::new(), "and none after they were taken");
}
