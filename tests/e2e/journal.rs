//! The write-ahead journal beside each redb file: refused when it is not qm's or not safe
//! to use, and never applied to a file it does not continue.

use crate::auto::{App, setup};
use crate::faults::stop_and_wait;
use crate::support::{Daemon, Env, QMD, run_limited, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn journal_of(env: &Env) -> PathBuf {
    let mut name = env.device.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Runs `qmd` on `device` in the foreground and expects it to refuse to serve it.
fn qmd_refuses(device: &Path) -> String {
    let mut cmd = Command::new(QMD);
    cmd.arg(device).env_remove("QM_SOCKET").env_remove("QM_FAULT");
    let run = run_limited(cmd, Duration::from_secs(60));
    assert_ne!(run.status, 0, "qmd served {}: {run:?}", device.display());
    run.stderr
}

/// A journal that is not a qm journal, a symbolic link, or one others may write is
/// refused with the reason, and left as it is.
#[test]
fn a_journal_qm_cannot_trust_is_refused() {
    let env = Env::new();
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(&env);
    let journal = journal_of(&env);
    assert!(journal.exists(), "the device has its journal");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "made for its owner only");

    let saved = env.path("saved.journal");
    std::fs::rename(&journal, &saved).unwrap();
    std::fs::write(&journal, vec![7u8; 8192]).unwrap();
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = qmd_refuses(&env.device);
    assert!(err.contains("is not the journal of its redb file"), "{err}");
    assert!(err.contains(&journal.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&journal).unwrap(), vec![7u8; 8192], "left unchanged");

    std::fs::remove_file(&journal).unwrap();
    std::os::unix::fs::symlink(&saved, &journal).unwrap();
    let err = qmd_refuses(&env.device);
    assert!(err.contains("symbolic link"), "{err}");

    std::fs::remove_file(&journal).unwrap();
    std::fs::rename(&saved, &journal).unwrap();
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o622)).unwrap();
    let err = qmd_refuses(&env.device);
    assert!(err.contains("mode 0622") && err.contains("chmod go-w"), "{err}");

    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.c("qopen QS; qinfo Q").ok();
}

/// A device file put back from a copy is not rolled forward by the journal the daemon
/// wrote after the copy was taken: the journal carries a generation the copy does not
/// know, so its records are not applied.
#[test]
fn a_copy_put_back_is_not_rolled_forward_by_a_later_journal() {
    let env = Env::new();
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qenqueue Q before-the-copy").ok();
    stop_and_wait(&env);
    let copy = std::fs::read(&env.device).unwrap();

    let mut daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    for i in 0..20 {
        app.put("Q", format!("after the copy {i}").as_bytes());
    }
    drop(app);
    daemon.signal("KILL");
    std::fs::write(&env.device, &copy).unwrap();

    let _daemon = env.start_daemon(&[]);
    let out = env.c("qopen QS; qset Q; qlist").ok().stdout.clone();
    assert_eq!(
        out.lines().filter(|l| l.starts_with(' ') && l.contains("| ready")).count(),
        1,
        "{out}"
    );
    env.c("qopen QS; qdequeue Q").ok().stdout_has("before-the-copy");
}

/// A journal the qm before two regions wrote (format 2: records in the front region, their
/// CRC without the journal's id) is replayed, and goes on in this qm's format.
#[test]
fn a_journal_of_format_2_is_replayed() {
    let env = Env::new();
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(&env);
    // Nothing applied to redb by itself: after kill -9 the journal holds the messages.
    let mut daemon = Daemon::start_with_env(&env.device, &[], &[("QM_FAULT", "defer")]);
    let mut app = App::connect(&env);
    for i in 0..20 {
        app.put("Q", format!("message {i}").as_bytes());
    }
    drop(app);
    daemon.signal("KILL");
    drop(daemon);
    let journal = journal_of(&env);
    let mut bytes = std::fs::read(&journal).unwrap();
    let generation = bytes[24..32].to_vec();
    let crc = |parts: &[&[u8]]| {
        let mut h = crc32fast::Hasher::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().to_le_bytes()
    };
    let (mut at, mut records) = (4096, 0);
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (lsn, payload) = (&bytes[at + 8..at + 16], &bytes[at + 16..at + 16 + len]);
        if len == 0 || bytes[at + 4..at + 8] != crc(&[&generation, lsn, payload]) {
            break;
        }
        let old = crc(&[lsn, payload]);
        bytes[at + 4..at + 8].copy_from_slice(&old);
        (at, records) = (at + 16 + len, records + 1);
    }
    assert!(records >= 20, "the journal holds the puts ({records} records)");
    bytes[16..20].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&journal, &bytes).unwrap();

    let _daemon = env.start_daemon(&[]);
    let mut app = App::connect(&env);
    for i in 0..20 {
        assert_eq!(app.take("Q").body, format!("message {i}").as_bytes());
    }
    drop(app);
    stop_and_wait(&env);
    let header = std::fs::read(&journal).unwrap();
    assert_eq!(header[16..20], 4u32.to_le_bytes(), "it goes on in format 4");
}

/// Acknowledged writes that only the journal holds come back after `kill -9`.
#[test]
fn acknowledged_writes_come_back_from_the_journal() {
    let env = Env::new();
    kill_and_replay(&env, |_| env.start_daemon(&[]));
}

/// The same with the journal's records written through the page cache and synced
/// (`QM_JOURNAL_DIRECT=0`) rather than straight to the disk; a value of the variable other
/// than 0 or 1 is named in the log and changes nothing, as one of `QM_BODY_LOG` is.
#[test]
fn acknowledged_writes_come_back_from_a_journal_written_through_the_page_cache() {
    let env = Env::new();
    let log = env.path("qmd.log");
    let args = ["-l", "3", "-g", log.to_str().unwrap()];
    // The first daemon through the page cache, the second told a value it does not know.
    kill_and_replay(&env, |nth| {
        let vars = [
            [("QM_JOURNAL_DIRECT", "0"), ("QM_BODY_LOG", "1")],
            [("QM_JOURNAL_DIRECT", "yes"), ("QM_BODY_LOG", "on")],
        ];
        Daemon::start_with_env(&env.device, &args, &vars[nth])
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("QM_JOURNAL_DIRECT=\"yes\" is neither 0"), "{text}");
    assert!(text.contains("QM_BODY_LOG=\"on\" is neither 0 (bodies kept in redb)"), "{text}");
}

/// Queue space QS with queue Q; 200 messages enqueued on the daemon `start(0)` gives, which
/// is then killed; the daemon `start(1)` gives finds all of them, in order.
fn kill_and_replay(env: &Env, start: impl Fn(usize) -> Daemon) {
    setup(env, 400, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(env);
    let mut daemon = start(0);
    let mut app = App::connect(env);
    for i in 0..200 {
        app.put("Q", format!("message {i}").as_bytes());
    }
    drop(app);
    daemon.signal("KILL");
    let _daemon = start(1);
    assert_eq!(crate::app::count(env, "Q"), 200);
    let mut app = App::connect(env);
    for i in 0..200 {
        assert_eq!(app.take("Q").body, format!("message {i}").as_bytes());
    }
}

/// The same while every group is handed to the applier as soon as it is free: the groups
/// go to both regions of the journal in turn, and `kill -9` falls while one region's
/// groups are being applied as often as not. Each client's messages come back, in order.
#[test]
fn acknowledged_writes_come_back_from_both_regions_of_the_journal() {
    writes_in_both_regions_come_back(false);
}

/// The same from a journal the qm before this one left (format 3, which does not say where
/// its back region lies: at 8 MiB), as after an upgrade that followed a crash.
#[test]
fn acknowledged_writes_come_back_from_both_regions_of_a_journal_of_format_3() {
    writes_in_both_regions_come_back(true);
}

fn writes_in_both_regions_come_back(as_format_3: bool) {
    let env = Env::new();
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(&env);
    let steps = env.path("steps");
    let fault = format!("count:{}+checkpoints", steps.display());
    // Regions of 8 MiB: the smallest, so that a few hundred groups reach the back one.
    let small = ["--checkpoint-mib", "4"];
    let mut daemon = Daemon::start_with_env(&env.device, &small, &[("QM_FAULT", &fault)]);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let device = env.device.clone();
            std::thread::spawn(move || {
                let mut app = crate::app::App::connect_to(&device);
                for i in 0..150 {
                    app.put("Q", &format!("client {c} message {i}"));
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    daemon.signal("KILL");
    drop(daemon);
    let len = std::fs::metadata(journal_of(&env)).unwrap().len();
    assert!(len > 8 << 20, "the back region was written ({len} bytes)");
    if as_format_3 {
        let mut head = [0u8; 40];
        let file = std::fs::OpenOptions::new().read(true).write(true).open(journal_of(&env));
        let file = file.unwrap();
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head[16..20], 4u32.to_le_bytes());
        head[16..20].copy_from_slice(&3u32.to_le_bytes());
        head[32..40].fill(0);
        file.write_all_at(&head, 0).unwrap();
    }

    // Started again with the default checkpoint size: the journal's header says where its
    // back region lies (or its format does), so the records are found where they were
    // written, and the new generation has the regions asked for now.
    let _daemon = env.start_daemon(&[]);
    assert_eq!(crate::app::count(&env, "Q"), 600);
    let head = std::fs::read(journal_of(&env)).unwrap();
    assert_eq!(head[16..20], 4u32.to_le_bytes(), "it goes on in format 4");
    let back = u64::from_le_bytes(head[32..40].try_into().unwrap());
    assert_eq!(back, 64 << 20, "the back region begins at twice --checkpoint-mib's 32 MiB");
    let mut app = App::connect(&env);
    let mut next = [0; 4];
    for _ in 0..600 {
        let body = String::from_utf8(app.take("Q").body).unwrap();
        let (c, i) = body.strip_prefix("client ").unwrap().split_once(" message ").unwrap();
        let (c, i): (usize, usize) = (c.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[c], "client {c}'s messages in order");
        next[c] += 1;
    }
}

/// An applier's commit that fails (`failapply`: an I/O error at its first write) loses no
/// acknowledged write: the file is opened again and its journal, both regions, replayed.
/// A request the failure reaches is refused, not lost; the daemon goes on serving, and
/// after a restart the same messages are there, in order.
#[test]
fn a_failed_applier_commit_loses_no_acknowledged_write() {
    let env = Env::new();
    setup(&env, 1500, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(&env);
    let fault = [("QM_FAULT", "failapply+checkpoints")];
    let daemon = Daemon::start_with_env(&env.device, &[], &fault);
    let mut app = crate::app::App::connect_to(&env.device);
    let ctl = qm_common::message::EnqueueCtl::default();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        let body = format!("message {i}");
        match app.enqueue("Q", body.as_bytes(), &ctl) {
            Ok(_) => acknowledged.push(body),
            Err(_) => refused += 1,
        }
    }
    assert!(
        daemon.stderr_text().contains("the file is opened again"),
        "the applier's commit failed and said so:\n{}",
        daemon.stderr_text()
    );
    assert!(refused < 10, "{refused} enqueues refused");
    assert!(acknowledged.len() > 290, "{} acknowledged", acknowledged.len());
    app.put("Q", "after");
    acknowledged.push("after".to_string());
    assert_eq!(crate::app::count(&env, "Q"), acknowledged.len() as u64, "served meanwhile");
    drop(app);
    stop_and_wait(&env);
    drop(daemon);
    let _daemon = env.start_daemon(&[]);
    let mut app = crate::app::App::connect_to(&env.device);
    assert_eq!(app.drain("Q"), acknowledged, "every acknowledged enqueue, in order");
}

/// `--cache-mib` takes a positive number of MiB, `--checkpoint-mib` 4 to 256; anything
/// else is refused with the option's name (and the range, where a number is out of it),
/// and a daemon with a small cache and the smallest checkpoints serves as usual.
#[test]
fn cache_and_checkpoint_options_are_checked() {
    let env = Env::new();
    let bad = [
        ("--cache-mib", "0", "1..=1048576"),
        ("--cache-mib", "2000000", "1..=1048576"),
        ("--cache-mib", "lots", "invalid digit"),
        ("--checkpoint-mib", "3", "4..=256"),
        ("--checkpoint-mib", "257", "4..=256"),
        ("--checkpoint-mib", "big", "invalid digit"),
    ];
    for (option, value, says) in bad {
        let out = Command::new(QMD).arg(&env.device).args([option, value]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{option} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(option) && err.contains(says), "{option} {value}: {err}");
    }
    let _daemon = env.start_daemon(&["--cache-mib", "1", "--checkpoint-mib", "4"]);
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qenqueue Q small; qdequeue Q").ok().stdout_has("small");
}

/// What lies under the name a new journal is built under is removed only if qm left it:
/// another user's file there is refused by name and left as it was.
#[test]
fn a_planted_file_under_the_journals_temporary_name_is_refused() {
    let env = Env::new();
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    stop_and_wait(&env);
    std::fs::remove_file(journal_of(&env)).unwrap();
    let mut planted = journal_of(&env).into_os_string();
    planted.push(".qm-new");
    let planted = PathBuf::from(planted);
    std::fs::write(&planted, b"someone else's").unwrap();
    let done = Command::new("chown").arg("54321").arg(&planted).status().expect("chown");
    assert!(done.success(), "chown needs root (tests run as root)");
    let err = qmd_refuses(&env.device);
    assert!(err.contains("exists and is not a file qm left"), "{err}");
    assert_eq!(std::fs::read(&planted).unwrap(), b"someone else's");
    std::fs::remove_file(&planted).unwrap();
    env.c("qopen QS; qinfo Q").ok();
    assert!(journal_of(&env).exists(), "the journal is made again");
}

/// The journal's generation and durable LSN as the (stopped) device records them.
fn recorded(env: &Env) -> (u64, u64) {
    use redb::ReadableDatabase;
    let db = redb::Database::open(&env.device).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(redb::TableDefinition::<&str, u64>::new("qm.journal")).unwrap();
    let get = |k: &str| table.get(k).unwrap().map(|v| v.value()).unwrap_or(0);
    (get("generation"), get("lsn"))
}

/// A journal an earlier qm wrote (format 1) is taken over when it holds nothing to replay,
/// as after a clean stop; one that holds writes this qm cannot read is refused, saying what
/// to do, and left unchanged.
#[test]
fn a_journal_of_an_earlier_format_is_taken_over_only_when_empty() {
    let env = Env::new();
    setup(&env, 100, &["Q fifo none 0 0 100% 0% ''"]);
    env.c("qopen QS; qenqueue Q kept").ok();
    stop_and_wait(&env);
    let journal = journal_of(&env);
    let format = |bytes: &[u8]| u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    let mut bytes = std::fs::read(&journal).unwrap();
    assert_eq!(format(&bytes), 4);
    bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&journal, &bytes).unwrap();
    env.c("qopen QS; qdequeue Q").ok().stdout_has("kept");
    stop_and_wait(&env);
    assert_eq!(format(&std::fs::read(&journal).unwrap()), 4, "taken over in this format");

    // Format 1 again, now with a record past the device's durable point.
    let (generation, lsn) = recorded(&env);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
    bytes[24..32].copy_from_slice(&generation.to_le_bytes());
    let payload = b"written by an earlier qm";
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(lsn + 1).to_le_bytes());
    crc.update(payload);
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc.finalize().to_le_bytes());
    record.extend_from_slice(&(lsn + 1).to_le_bytes());
    record.extend_from_slice(payload);
    bytes[4096..4096 + record.len()].copy_from_slice(&record);
    std::fs::write(&journal, &bytes).unwrap();
    let err = qmd_refuses(&env.device);
    assert!(err.contains("was written by an earlier qm (journal format 1)"), "{err}");
    assert!(
        err.contains("holds 1 group of writes not yet in") && err.contains("daemon stop"),
        "{err}"
    );
    assert_eq!(std::fs::read(&journal).unwrap(), bytes, "left unchanged");
}

/// While the applier is still applying the groups of one region, the writer goes on in the
/// other only until it is three quarters full; then it waits for the applier and hands that
/// region over, rather than filling it to the end and then applying every write still
/// deferred in a commit of its own. (`QM_FAULT=gatedapply:PATH`: the applier waits before
/// each commit while PATH exists; `--checkpoint-mib 4`: regions of 8 MiB, handed over at
/// 4 MiB.) Nothing acknowledged meanwhile is lost to a `kill -9` afterwards.
#[test]
fn the_writer_waits_for_the_applier_at_three_quarters_of_a_region() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const N: usize = 1000;
    let body = |i: usize| format!("message {i:05} ").repeat(16 * 1024 / 14).into_bytes();
    let env = Env::new();
    let (gate, log) = (env.path("gate"), env.path("qmd.log"));
    std::fs::write(&gate, "").unwrap();
    let fault = format!("gatedapply:{}", gate.display());
    let args = ["-l", "3", "-g", log.to_str().unwrap(), "--checkpoint-mib", "4"];
    let mut daemon = Daemon::start_with_env(&env.device, &args, &[("QM_FAULT", &fault)]);
    crate::app::setup_pages(&env, 30000, &["Q fifo none 0 0 100% 0% ''"]);
    let logged = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    let waiting = || logged("waiting for the applier");
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let (mut app, counted) = (App::connect(&env), acknowledged.clone());
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            app.put("Q", &body(i));
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Each enqueue is a record of a little over 16 KiB: the first region is handed over
    // after about 250, three quarters of the second take about 380 more, its end 510.
    let region_full = 250 + 500;
    let stopped = wait_until(Duration::from_secs(60), || {
        waiting() || acknowledged.load(Ordering::SeqCst) >= region_full
    });
    let at_wait = acknowledged.load(Ordering::SeqCst);
    assert!(
        stopped && waiting(),
        "the writer did not wait for the applier ({at_wait} acknowledged)"
    );
    assert!(at_wait < region_full, "{at_wait} acknowledged: the region filled up before the wait");
    // Nothing more is acknowledged while the applier is held.
    std::thread::sleep(Duration::from_millis(300));
    assert!(acknowledged.load(Ordering::SeqCst) <= at_wait + 1, "the writer went on");
    std::fs::remove_file(&gate).unwrap();
    writer.join().unwrap();
    assert!(logged("ms for the applier"), "the wait's end is logged");
    daemon.signal("KILL");
    drop(daemon);
    let _daemon = env.start_daemon(&[]);
    let kept = App::connect(&env).drain("Q");
    assert_eq!(kept.len(), N, "every acknowledged enqueue after the kill");
    for (i, m) in kept.iter().enumerate() {
        assert!(m.body == body(i), "message {i} came back with another body");
    }
    env.c("qverify").ok().stdout_has("No problem found.");
}
