//! Several queue managers: the profile's lookup order (QM_MANAGER, the user's, the host's),
//! priority routing of enqueues with failover of producers, full names
//! MANAGER/QSPACE/QUEUE, `qmadmin managers`, and a manager's name where qmadmin takes a
//! device or an address.

use crate::app::{ERRQ, FIFO_Q, PARAMS, setup};
use crate::support::{Env, QMADMIN, Run};
use qm_common::Diagnostic;
use qm_common::managers::Managers;
use qm_common::message::{DequeueCtl, EnqueueCtl};
use qm_common::profile::Profile;
use qm_common::protocol::ClientKind;
use std::path::PathBuf;
use std::process::Command;

/// Three managers' devices: `high` and `low` serve QS, `other` serves OTHER only; with a
/// user's profile and a host's profile naming them.
struct Site {
    high: Env,
    low: Env,
    other: Env,
    home: tempfile::TempDir,
    host: PathBuf,
}

impl Site {
    fn new() -> Site {
        let (high, low, other) = (Env::new(), Env::new(), Env::new());
        setup(&high, "", PARAMS, &[ERRQ, FIFO_Q]);
        setup(&low, "", PARAMS, &[ERRQ, FIFO_Q]);
        other
            .c(&format!(
                "crdl {} 0 2000; qspc OTHER 40001 200 8 4 16 1000 '' n 16; qopen OTHER; qcreate \
                 Q2 fifo none 0 0 100% 0% ''",
                other.dev()
            ))
            .ok();
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".config/qm");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("profile.toml"),
            format!(
                "# the user's\n[manager.other]\ndevice = \"{}\"\npriority = 20\n\n\
                 [manager.high]\ndevice = \"{}\"\npriority = 10\n\n\
                 [manager.low]\ndevice = \"{}\"\npriority = 1\n",
                other.dev(),
                high.dev(),
                low.dev()
            ),
        )
        .unwrap();
        let host = home.path().join("host-profile.toml");
        std::fs::write(
            &host,
            format!(
                "[manager.high]\ndevice = \"/hidden/by/the/user\"\npriority = 99\n\n\
                 [manager.hostonly]\ndevice = \"{}\"\n",
                other.dev()
            ),
        )
        .unwrap();
        Site { high, low, other, home, host }
    }

    fn user_profile(&self) -> PathBuf {
        self.home.path().join(".config/qm/profile.toml")
    }

    fn profile(&self) -> Profile {
        Profile::from_files(Some(&self.user_profile()), Some(&self.host), None).unwrap()
    }

    /// `qmadmin ARGS` with this site's profiles, no QMCONFIG, and `vars`.
    fn qmadmin(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(QMADMIN);
        cmd.args(args)
            .env_remove("QMCONFIG")
            .env_remove("QM_MANAGER")
            .env_remove("QM_CONNECT")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", self.home.path())
            .env("QM_HOST_PROFILE", &self.host)
            .env("PAGER", "cat")
            .envs(vars.iter().copied());
        self.high.run_stdin(cmd, "")
    }
}

/// Takes one message from Q of QS on `env`'s daemon; `None` when there is none.
fn take(env: &Env, queue: &str) -> Option<String> {
    let run =
        env.c(&format!("qopen {}; qdequeue {queue}", if queue == "Q2" { "OTHER" } else { "QS" }));
    let out = run.stdout.clone();
    if run.status != 0 {
        assert!(run.stderr.contains("QMENOMSG") || run.stderr.contains("no message"), "{run:?}");
        return None;
    }
    Some(out)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Enqueues go to the reachable manager of highest priority that serves the queue space;
/// when it stops, to the next; when it is back, to it again. A full name picks its manager.
#[test]
fn enqueues_go_to_the_reachable_manager_of_highest_priority() {
    let site = Site::new();
    let rt = runtime();
    let mut managers = Managers::new(site.profile(), "e2e-managers", ClientKind::Application);
    let ctl = EnqueueCtl::default();
    let put = |m: &mut Managers, name: &str, body: &str| {
        rt.block_on(m.enqueue(name, body.as_bytes(), &ctl)).map(|r| r.manager)
    };
    // `other` has the highest priority but no QS.
    assert_eq!(put(&mut managers, "QS/Q", "one").unwrap(), "high");
    assert_eq!(put(&mut managers, "low/QS/Q", "named").unwrap(), "low");
    assert_eq!(put(&mut managers, "OTHER/Q2", "elsewhere").unwrap(), "other");
    site.high.stop_daemon();
    assert_eq!(put(&mut managers, "QS/Q", "two").unwrap(), "low");
    let e = put(&mut managers, "high/QS/Q", "nowhere").unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::NotFound, "{e}");
    assert!(e.message.contains("high is unreachable"), "{e}");
    site.high.c("daemon status").ok(); // qmadmin starts it again
    assert_eq!(put(&mut managers, "QS/Q", "three").unwrap(), "high");
    let e = put(&mut managers, "NOSUCH/Q", "x").unwrap_err();
    assert!(
        e.message.contains("other does not serve NOSUCH")
            && e.message.contains("high does not serve NOSUCH")
            && e.message.contains("low does not serve NOSUCH"),
        "{e}"
    );
    let e = put(&mut managers, "Q", "x").unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::Inval, "{e}");
    let got = rt.block_on(managers.dequeue("low/QS/Q", &DequeueCtl::default())).unwrap();
    assert_eq!((got.manager.as_str(), got.value.body.as_slice()), ("low", &b"named"[..]));

    // Dequeues without a manager take from the first that has a message, in priority
    // order: what producers left on `low` while `high` was away is taken too.
    let mut taken = Vec::new();
    loop {
        match rt.block_on(managers.dequeue("QS/Q", &DequeueCtl::default())) {
            Ok(m) => taken.push((m.manager, String::from_utf8(m.value.body).unwrap())),
            Err(e) => {
                assert_eq!(e.diagnostic, Diagnostic::NoMsg, "{e}");
                break;
            }
        }
    }
    let by = |m: &str, b: &str| (m.to_string(), b.to_string());
    assert_eq!(taken, [by("high", "one"), by("high", "three"), by("low", "two")]);
    assert_eq!(take(&site.high, "Q"), None);
    assert_eq!(take(&site.low, "Q"), None);
    assert!(take(&site.other, "Q2").unwrap().contains("elsewhere"));

    // One that waits and finds none anywhere waits at the first, for as long as it asked.
    let started = std::time::Instant::now();
    let ctl = DequeueCtl { wait_ms: Some(1_000), ..DequeueCtl::default() };
    let e = rt.block_on(managers.dequeue("QS/Q", &ctl)).unwrap_err();
    assert_eq!(e.diagnostic, Diagnostic::NoMsg, "{e}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "it did not wait");
    // A message enqueued while it waits (or before it looked) is its answer.
    let waiter = std::thread::spawn({
        let profile = site.profile();
        move || {
            let rt = runtime();
            let mut managers = Managers::new(profile, "e2e-waiter", ClientKind::Application);
            let ctl = DequeueCtl { wait_ms: Some(30_000), ..DequeueCtl::default() };
            rt.block_on(managers.dequeue("QS/Q", &ctl)).map(|m| m.manager)
        }
    });
    assert_eq!(put(&mut managers, "QS/Q", "awaited").unwrap(), "high");
    assert_eq!(waiter.join().unwrap().unwrap(), "high");
}

/// A manager's name where the client takes a device or an address: a reconnecting client
/// to that manager; without a name, the first manager of the profiles that answers.
#[test]
fn the_client_takes_a_manager_name() {
    use qm_common::failover::Failover;
    let site = Site::new();
    let rt = runtime();
    let profile = site.profile();
    let mut low =
        Failover::to_manager(&profile, Some("low"), "e2e", ClientKind::Application).unwrap();
    rt.block_on(low.enqueue("QS", "Q", b"to low", &EnqueueCtl::default())).unwrap();
    assert!(take(&site.low, "Q").unwrap().contains("to low"));
    // `other` comes first by priority and answers.
    let mut first = Failover::to_manager(&profile, None, "e2e", ClientKind::Application).unwrap();
    rt.block_on(first.enqueue("OTHER", "Q2", b"to the first", &EnqueueCtl::default())).unwrap();
    assert!(take(&site.other, "Q2").unwrap().contains("to the first"));
    let e = Failover::to_manager(&profile, Some("nobody"), "e2e", ClientKind::Application);
    assert!(e.err().unwrap().contains("no profile names a queue manager nobody"));
}

/// The lookup order: QM_MANAGER first (a name, an address or a device), then the user's
/// profile, then the host's (whose `high` the user's hides); `qmadmin managers` lists them
/// in the order applications try them, with their state and queue spaces.
#[test]
fn qmadmin_managers_shows_the_lookup_order() {
    let site = Site::new();
    site.low.stop_daemon();
    let run = site.qmadmin(&["managers"], &[]);
    run.ok();
    let rows: Vec<&str> = run.stdout.lines().skip(2).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.split('|').next().unwrap().trim()).collect();
    assert_eq!(names, ["other", "high", "low", "hostonly"], "{}", run.stdout);
    assert!(rows[0].contains("OTHER") && rows[0].contains("user"), "{}", rows[0]);
    assert!(rows[1].contains(&site.high.dev()) && rows[1].contains(" QS"), "{}", rows[1]);
    assert!(rows[2].contains("down"), "{}", rows[2]);
    assert!(rows[3].contains("host"), "{}", rows[3]);

    let json = site.qmadmin(&["managers", "--json"], &[("QM_MANAGER", "low")]);
    let states: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    let first = &states[0];
    assert_eq!((first["name"].as_str(), first["chosen"].as_bool()), (Some("low"), Some(true)));
    assert_eq!(first["up"].as_bool(), Some(false));
    assert_eq!(states.as_array().unwrap().len(), 4);

    // A manager's name where a device or an address goes; QM_MANAGER when none is given.
    site.qmadmin(&["high", "-c", "qopen QS; qinfo Q"], &[]).ok().stdout_has("Q");
    site.qmadmin(&["--connect", "other", "-c", "qopen OTHER"], &[]).ok();
    let status = site.qmadmin(&["-c", "daemon status"], &[("QM_MANAGER", "other")]);
    status.ok().stdout_has(&site.other.dev());
    let direct = format!("unix:{}.sock", site.high.dev());
    let status = site.qmadmin(&["-c", "daemon status"], &[("QM_MANAGER", &direct)]);
    status.ok().stdout_has(&site.high.dev());
    // Without QM_MANAGER, the first that answers in priority order: `other`.
    site.qmadmin(&["-c", "daemon status"], &[]).ok().stdout_has(&site.other.dev());
    site.qmadmin(&["-c", "daemon status"], &[("QM_MANAGER", "nobody")])
        .failed()
        .stderr_has("QM_MANAGER=nobody");
    site.qmadmin(&["--connect", "nobody", "-c", "daemon status"], &[])
        .failed()
        .stderr_has("nor a queue manager");
}

/// qmadmin's qenqueue and qdequeue take MANAGER/QSPACE/QUEUE: another manager's queue,
/// reached on a connection of its own, never inside this session's transaction; a name
/// whose first part is no manager stays a queue (or alias) of the open queue space.
#[test]
fn qmadmin_moves_messages_of_a_manager_named_in_full() {
    let site = Site::new();
    let at_high = ["high", "-c", "qopen QS; qenqueue low/QS/Q 'for low'; qenqueue Q 'for high'"];
    site.qmadmin(&at_high, &[]).ok();
    assert!(take(&site.low, "Q").unwrap().contains("for low"));
    assert!(take(&site.high, "Q").unwrap().contains("for high"));
    site.qmadmin(&["high", "-c", "qenqueue other/OTHER/Q2 'no qopen needed'"], &[]).ok();
    let got = site.qmadmin(&["low", "-c", "qdequeue -B other/OTHER/Q2"], &[]);
    assert_eq!(got.ok().stdout.trim_end(), "no qopen needed");
    site.qmadmin(&["high", "-c", "qopen QS; begin; qenqueue low/QS/Q x"], &[])
        .failed()
        .stderr_has("cannot take part in")
        .stderr_has("QMETRAN");
    site.qmadmin(&["high", "-c", "qopen QS; qenqueue nobody/QS/Q x"], &[])
        .failed()
        .stderr_has("QMEBADQUEUE");
    assert_eq!(take(&site.low, "Q"), None);
}

/// A profile others may change decides where messages go: it is refused, saying why; so is
/// an entry that names no place.
#[test]
fn profiles_others_may_change_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let path = site.user_profile();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    site.qmadmin(&["managers"], &[]).failed().stderr_has(&path.display().to_string());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "[manager.x]\npriority = 3\n").unwrap();
    site.qmadmin(&["managers"], &[])
        .failed()
        .stderr_has("[manager.x]: give either device or address");
}
