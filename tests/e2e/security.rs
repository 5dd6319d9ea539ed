//! Trust against a hostile neighbour: a client talks only to a daemon of its own user (or
//! root); sockets of long device paths live in a private directory; qmd acts on no
//! configuration others may change, follows no link planted as its lock or log, and warns
//! about a device directory others may write. The hostile user is a real second user.

use crate::auto::{App, depth, eventually, setup, wait_firings, write_config};
use crate::support::{Env, QMD, Run};
use crate::users::{self, User};
use qm_common::message::EnqueueCtl;
use qm_common::protocol::DaemonStatus;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, user: &User) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).expect("chown");
}

/// `uid N (name)`, as qm names a user.
fn named(user: &User) -> String {
    format!("uid {} ({})", user.uid, user.name)
}

/// Queue space QS with queue Q on `device`, made by `user`'s qmadmin (`args` before -c).
fn queue_space(user: &User, device: &Path, args: &[&str]) {
    let commands = format!(
        "crdl {} 0 2000; qspc -n 16B QS 40000 200 12 20 20 1000 ERRQ n 16; qopen QS; \
         qcreate ERRQ fifo none 0 0 100% 0% ''; qcreate Q fifo none 0 0 100% 0% ''",
        device.display()
    );
    user.qmadmin(device, args, &commands).ok();
}

/// Whether `user`'s daemon holds no message on Q.
fn q_is_empty(user: &User, device: &Path, args: &[&str]) -> bool {
    let run = user.qmadmin(device, args, "qopen QS; qset Q; qlist");
    run.ok();
    assert!(!run.stdout.contains("secret"), "{}", run.stdout);
    run.stdout.contains("Queue list - no messages")
}

/// A device name whose socket path is too long for a Unix socket (over 107 bytes) in a
/// device path short enough for crdl (at most 64 characters): 30 three-byte characters.
fn long_name() -> String {
    "€".repeat(30)
}

/// Runs `qmd ARGS` as ourselves to its end (a daemon that starts is killed at the harness
/// limit: the tests below expect a refusal).
fn qmd(args: &[&std::ffi::OsStr]) -> Run {
    let mut cmd = Command::new(QMD);
    cmd.args(args).env_remove("QM_SOCKET");
    users::run(cmd)
}

/// Another user gets to the device's socket first, with a real qmd serving a device of
/// theirs at our device path (a world-writable directory lets them). Our qmadmin and our
/// application client refuse it, naming the socket and its owner, and send nothing: our
/// message never reaches their queue, and no second daemon is started.
#[test]
fn another_users_daemon_on_our_socket_is_refused() {
    let env = Env::new();
    let other = User::create();
    chmod(env.dir.path(), 0o1777);
    let theirs = other.start_qmd(&env.device, &[]);
    queue_space(&other, &env.device, &[]);

    let socket = env.socket().display().to_string();
    for run in [env.c("qopen QS; qenqueue Q secret"), env.c_no_start("qopen QS; qenqueue Q secret")]
    {
        assert_eq!(run.status, 1, "{run:?}");
        run.stderr_has(&format!("refusing the qmd on {socket}: it runs as {}", named(&other)))
            .stderr_has("not as you (uid 0 (root)), so it may be another user's daemon")
            .stderr_has("nothing was sent")
            .stderr_lacks("started qmd")
            .stdout_lacks("msgid");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = rt.block_on(qm_common::client::Client::connect_device(&env.device, "e2e"));
    let refused = app.err().expect("the application client refuses their daemon");
    assert_eq!(refused.diagnostic, qm_common::Diagnostic::Denied);
    assert!(refused.message.contains(&named(&other)), "{refused}");

    assert!(q_is_empty(&other, &env.device, &[]), "our message reached their daemon");
    let run = other.qmadmin(&env.device, &["--json"], "daemon status");
    let status: DaemonStatus = run.ok().json();
    assert_eq!(status.pid, theirs.pid, "still their one daemon");
}

/// The socket of a device path too long for a Unix socket lives in the user's private
/// directory `/tmp/qm-<uid>` (mode 0700, made by whoever needs it first). When another user
/// made that directory (and listens there with a real qmd), when it is a symbolic link, or
/// when it is open to others, qmadmin and qmd refuse it and say why; nothing reaches the
/// other user's daemon.
#[test]
fn the_private_socket_directory_is_ours_alone() {
    let env = Env::new();
    let victim = User::create();
    let other = User::create();
    chmod(env.dir.path(), 0o755);
    let home = env.path("victim");
    std::fs::create_dir(&home).unwrap();
    chown(&home, &victim);
    let device = home.join(long_name());
    let private = PathBuf::from(format!("/tmp/qm-{}", victim.uid));
    let _ = std::fs::remove_dir_all(&private);

    // Made by the victim's own qmadmin (and daemon) at first use.
    queue_space(&victim, &device, &[]);
    let status: DaemonStatus = victim.qmadmin(&device, &["--json"], "daemon status").ok().json();
    let socket = PathBuf::from(&status.socket);
    assert_eq!(socket.parent(), Some(private.as_path()), "{}", status.socket);
    let meta = std::fs::symlink_metadata(&private).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (victim.uid, 0o700));
    victim.qmadmin(&device, &[], "daemon stop").ok();

    // The other user made the directory first and listens on the victim's socket path.
    std::fs::remove_dir_all(&private).unwrap();
    other.sh(&format!("mkdir -m 0777 {}", private.display())).ok();
    let theirs_dir = env.path("other");
    std::fs::create_dir(&theirs_dir).unwrap();
    chown(&theirs_dir, &other);
    let theirs = theirs_dir.join("QUE");
    let at_socket = ["--socket", &status.socket];
    let _their_qmd = other.start_qmd(&theirs, &at_socket);
    queue_space(&other, &theirs, &at_socket);
    let refused =
        format!("refusing directory {}: it belongs to {}", private.display(), named(&other));
    let run = victim.qmadmin(&device, &[], "qopen QS; qenqueue Q secret");
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&refused).stderr_has("mode 0700").stderr_lacks("started qmd");
    assert!(q_is_empty(&other, &theirs, &at_socket), "the message reached the other daemon");
    let run = users::run({
        let mut c = victim.command(QMD);
        c.arg(&device);
        c
    });
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&refused);
    drop(_their_qmd);

    // A link, even to a private directory, and a directory open to others.
    std::fs::remove_dir_all(&private).unwrap();
    std::os::unix::fs::symlink(&home, &private).unwrap();
    victim
        .qmadmin(&device, &[], "lidl")
        .failed()
        .stderr_has(&format!("refusing directory {}: it is a symbolic link", private.display()));
    std::fs::remove_file(&private).unwrap();
    victim.sh(&format!("mkdir -m 0755 {}", private.display())).ok();
    victim
        .qmadmin(&device, &[], "lidl")
        .failed()
        .stderr_has("its mode 0755 lets group or others use it");
}

/// With `XDG_RUNTIME_DIR` naming a directory of the user, the private directory is `qm`
/// in it; someone else's `XDG_RUNTIME_DIR` (as after `sudo`) is not used.
#[test]
fn the_private_directory_follows_xdg_runtime_dir_when_it_is_ours() {
    let env = Env::new();
    let user = User::create();
    chmod(env.dir.path(), 0o755);
    let home = env.path("user");
    std::fs::create_dir(&home).unwrap();
    chown(&home, &user);
    let device = home.join(long_name());
    let runtime = home.join("run");
    user.sh(&format!("mkdir -m 0700 {}", runtime.display())).ok();
    let socket_with = |xdg: &Path| {
        let mut cmd = user.command(crate::support::QMADMIN);
        cmd.env("XDG_RUNTIME_DIR", xdg).args(["--json", "-c", "daemon status; daemon stop"]);
        let run = users::run({
            cmd.arg(&device);
            cmd
        });
        let status: DaemonStatus = run.ok().json();
        PathBuf::from(status.socket)
    };
    let socket = socket_with(&runtime);
    assert_eq!(socket.parent(), Some(runtime.join("qm").as_path()));
    let meta = std::fs::symlink_metadata(runtime.join("qm")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (user.uid, 0o700));
    // Root's runtime directory is not this user's.
    let roots = env.path("root-run");
    std::fs::create_dir(&roots).unwrap();
    let socket = socket_with(&roots);
    let private = PathBuf::from(format!("/tmp/qm-{}", user.uid));
    assert_eq!(socket.parent(), Some(private.as_path()));
}

/// The socket path limit counts bytes (a Unix socket address holds 107 and a NUL): with a
/// device path of two-byte characters, a socket path of exactly 107 bytes is used next to
/// the device, and one of 108 bytes moves to the private directory. Counted in characters,
/// both would seem short.
#[test]
fn the_socket_path_limit_counts_bytes() {
    let env = Env::new();
    let runtime = env.path("run");
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o700);
    let base = env.dir.path().as_os_str().len() + 1;
    for (socket_bytes, next_to_device) in [(107, true), (108, false)] {
        let name_bytes = socket_bytes - ".sock".len() - base;
        let name = format!("{}{}", "x".repeat(name_bytes % 2), "é".repeat(name_bytes / 2));
        let device = env.path(&name);
        let wanted = PathBuf::from(format!("{}.sock", device.display()));
        assert_eq!(wanted.as_os_str().len(), socket_bytes);
        assert!(wanted.to_str().unwrap().chars().count() < 100);
        let mut cmd = env.qmadmin_cmd();
        cmd.env("QMCONFIG", &device).env("XDG_RUNTIME_DIR", &runtime).args([
            "--json",
            "-c",
            "daemon status; daemon stop",
        ]);
        let run = env.run_stdin(cmd, "");
        let status: DaemonStatus = run.ok().json();
        let socket = PathBuf::from(&status.socket);
        if next_to_device {
            assert_eq!(socket, wanted);
        } else {
            assert_eq!(socket.parent(), Some(runtime.join("qm").as_path()), "{socket:?}");
        }
    }
}

/// A configuration qmd would act on (it names commands to run, as root here) but that
/// another user owns, or that others may write, is refused at start and at `daemon
/// reload`, with the file, its owner and mode and the fix; a link to such a file too.
/// The planted forwarder never runs.
#[test]
fn a_configuration_others_may_change_is_refused() {
    let env = Env::new();
    let other = User::create();
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''"]);
    App::connect(&env).put("SVC", b"x");
    env.stop_daemon();
    chmod(env.dir.path(), 0o1777);
    let marker = env.path("marker");
    let planted = format!(
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\nboot = true\n\n\
         [service.SVC]\ncommand = \"touch {}\"\n",
        marker.display()
    );
    let toml = env.path("QUE.toml");
    let shown = toml.display().to_string();
    std::fs::write(&toml, &planted).unwrap();
    chown(&toml, &other);
    chmod(&toml, 0o644);
    let owner =
        format!("refusing configuration {shown}: it belongs to {} (mode 0644)", named(&other));
    let run = qmd(&[env.device.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&owner).stderr_has(&format!("`chown root {shown}`"));
    env.c("psr").failed().stderr_has(&owner);

    // Ours, but others may write it.
    std::os::unix::fs::chown(&toml, Some(0), Some(0)).unwrap();
    for (mode, who) in [(0o664, "its group"), (0o646, "all other users")] {
        chmod(&toml, mode);
        let run = qmd(&[env.device.as_os_str()]);
        assert_eq!(run.status, 1, "{run:?}");
        run.stderr_has(&format!("refusing configuration {shown}: its mode 0{mode:o} lets {who}"))
            .stderr_has(&format!("`chmod go-w {shown}`"));
    }

    // A link to the other user's file; the same file given with --config.
    let theirs = env.path("theirs.toml");
    std::fs::write(&theirs, &planted).unwrap();
    chown(&theirs, &other);
    std::fs::remove_file(&toml).unwrap();
    std::os::unix::fs::symlink(&theirs, &toml).unwrap();
    let run = qmd(&[env.device.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("{shown} (a link to {})", theirs.display()));
    std::fs::remove_file(&toml).unwrap();
    let run = qmd(&[env.device.as_os_str(), "--config".as_ref(), theirs.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("refusing configuration {}: it belongs to", theirs.display()));

    // Planted while the daemon runs: `daemon reload` refuses it and nothing changes.
    let mut daemon = env.start_daemon(&[]);
    std::fs::write(&toml, &planted).unwrap();
    chown(&toml, &other);
    env.c("daemon reload").failed().stderr_has(&owner);
    env.c("psr").ok().stdout_has("No forwarders are configured");
    env.c("daemon stop").ok();
    daemon.wait();
    assert!(!marker.exists(), "the planted service ran");
    // The daemon's log (its standard error) keeps a trace of the refusal.
    let log = daemon.stderr_text();
    assert!(log.contains(&format!("WARN configuration not reloaded: {owner}")), "{log}");
}

/// A link another user planted at DEVICE.toml is refused even when it leads to a good
/// configuration of ours: whoever made the link chose which of our files qmd acts on. At
/// start and at `daemon reload`; our own link is followed. A file that cannot be a
/// configuration (the device itself, a file far too large) is refused, not loaded.
#[test]
fn a_configuration_link_another_user_made_is_refused() {
    let env = Env::new();
    let other = User::create();
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''"]);
    env.stop_daemon();
    chmod(env.dir.path(), 0o1777);
    // Ours and good, written for some other purpose: a forwarder booted with the daemon.
    let ours = env.path("ours.toml");
    let marker = env.path("marker");
    std::fs::write(
        &ours,
        format!(
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\nboot = true\n\n\
             [service.SVC]\ncommand = \"touch {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    chmod(&ours, 0o600);
    let toml = env.path("QUE.toml");
    let plant = || {
        other.sh(&format!("ln -s {} {}", ours.display(), toml.display())).ok();
    };
    plant();
    let refused = format!(
        "refusing configuration {} (a link to {}): the link belongs to {}",
        toml.display(),
        ours.display(),
        named(&other)
    );
    let run = qmd(&[env.device.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&refused).stderr_has("not to uid 0 (root), and").stderr_has("remove the link");

    std::fs::remove_file(&toml).unwrap();
    let mut daemon = env.start_daemon(&[]);
    plant();
    env.c("daemon reload").failed().stderr_has(&refused);
    env.c("psr").ok().stdout_has("No forwarders are configured");
    env.c("daemon stop").ok();
    daemon.wait();
    assert!(!marker.exists(), "the file the link leads to was acted on");

    // Our own link to it is ours to make.
    std::fs::remove_file(&toml).unwrap();
    std::os::unix::fs::symlink(&ours, &toml).unwrap();
    let _daemon = env.start_daemon(&[]);
    env.c("psr").ok().stdout_lacks("No forwarders are configured");
    env.stop_daemon();
    std::fs::remove_file(&toml).unwrap();

    // The device given as the configuration by mistake, and a file over the size limit
    // (sparse: its length is what counts).
    let device = env.device.as_os_str();
    let run = qmd(&[device, "--config".as_ref(), device]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("refusing configuration {}: it is not text", env.dev()));
    let big = env.path("big.toml");
    std::fs::File::create(&big).unwrap().set_len(4 << 30).unwrap();
    let run = qmd(&[device, "--config".as_ref(), big.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!(
        "refusing configuration {}: it is 4294967296 bytes long, and a configuration is at \
         most 1048576 bytes",
        big.display()
    ));
}

/// A symbolic link planted as the lock or the log is refused, naming the file, and nothing
/// is created or written at its target: qmd in the foreground (lock, `-g`), `--detach` and
/// qmadmin's auto-start (DEVICE.log), a dangling link too.
#[test]
fn lock_and_log_links_are_refused() {
    let env = Env::new();
    let dev = env.device.as_os_str();
    let lock = env.path("QUE.lock");
    let target = env.path("made-by-lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let run = qmd(&[dev]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("lock file {} is a symbolic link", lock.display()));
    assert!(std::fs::symlink_metadata(&target).is_err(), "the lock's target was created");
    std::fs::remove_file(&lock).unwrap();

    let precious = env.path("precious");
    std::fs::write(&precious, "precious\n").unwrap();
    let log = env.path("QUE.log");
    let link_refused = format!("log file {} is a symbolic link", log.display());
    std::os::unix::fs::symlink(&precious, &log).unwrap();
    let run = qmd(&["--detach".as_ref(), dev]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&link_refused);
    env.c("lidl").failed().stderr_has(&link_refused);
    let g = env.path("g.log");
    std::os::unix::fs::symlink(&precious, &g).unwrap();
    let run = qmd(&[dev, "-g".as_ref(), g.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("log file {} is a symbolic link", g.display()));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious\n");

    std::fs::remove_file(&log).unwrap();
    let nowhere = env.path("made-by-log");
    std::os::unix::fs::symlink(&nowhere, &log).unwrap();
    let run = qmd(&["--detach".as_ref(), dev]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&link_refused);
    assert!(std::fs::symlink_metadata(&nowhere).is_err(), "the log's target was created");
    assert!(!env.socket().exists());
}

/// What another user planted as the lock is refused, saying what it is: their own lock
/// file (which they could hold, so that qmd would take the device for served, or remove
/// while qmd holds it), a FIFO, a directory. A FIFO given as the log, too.
#[test]
fn a_lock_planted_by_another_user_is_refused() {
    let env = Env::new();
    let other = User::create();
    chmod(env.dir.path(), 0o1777);
    let lock = env.path("QUE.lock");
    let shown = lock.display();
    other.sh(&format!("touch {shown}; chmod 666 {shown}")).ok();
    let run = qmd(&[env.device.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("lock file {shown} belongs to {}", named(&other)))
        .stderr_lacks("another qmd");
    std::fs::remove_file(&lock).unwrap();

    for (make, kind) in [("mkfifo -m 666", "a FIFO"), ("mkdir -m 777", "a directory")] {
        other.sh(&format!("{make} {shown}")).ok();
        let run = qmd(&[env.device.as_os_str()]);
        assert_eq!(run.status, 1, "{run:?}");
        run.stderr_has(&format!("lock file {shown} is {kind}"))
            .stderr_has("not a regular file; remove it");
        other.sh(&format!("rm -rf {shown}")).ok();
    }
    let fifo = env.path("log.fifo");
    other.sh(&format!("mkfifo -m 666 {}", fifo.display())).ok();
    let run = qmd(&[env.device.as_os_str(), "-g".as_ref(), fifo.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    run.stderr_has(&format!("log file {} is a FIFO", fifo.display()));
    assert!(!env.socket().exists());
}

/// A log another user planted at DEVICE.log is not written to (qmd may run as root).
#[test]
fn a_log_planted_by_another_user_is_refused() {
    let env = Env::new();
    let other = User::create();
    chmod(env.dir.path(), 0o1777);
    let log = env.path("QUE.log");
    other.sh(&format!("echo theirs > {0}; chmod 666 {0}", log.display())).ok();
    let run = qmd(&["--detach".as_ref(), env.device.as_os_str()]);
    assert_eq!(run.status, 1, "{run:?}");
    // We are root: root is not named twice.
    run.stderr_has(&format!(
        "log file {} belongs to {}, not to uid 0 (root), so",
        log.display(),
        named(&other)
    ));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "theirs\n");
}

/// `daemon stop` waits for the lock without following a link put in its place (here to a
/// FIFO, which would block the open forever): it says what it found.
#[test]
fn daemon_stop_does_not_follow_a_replaced_lock() {
    let env = Env::new();
    let mut daemon = env.start_daemon(&[]);
    let lock = env.path("QUE.lock");
    let fifo = env.path("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&fifo, &lock).unwrap();
    env.c("daemon stop")
        .failed()
        .stderr_has(&format!("lock file {} is a symbolic link", lock.display()));
    daemon.wait();
}

/// A device directory others may write gets a warning naming it and its mode: from `crdl`
/// (for the device and for an entry on another file), from qmd at start in the foreground
/// and with `--detach` (relayed by qmadmin's auto-start). None for a private directory.
#[test]
fn a_device_directory_others_may_write_is_warned_about() {
    for (mode, writers) in [
        (0o777, "its group and all other users"),
        (0o1777, "its group and all other users"),
        (0o770, "its group"),
    ] {
        let env = Env::new();
        chmod(env.dir.path(), mode);
        let warning = format!(
            "directory {} (mode {mode:04o}) may be written by {writers}",
            env.dir.path().display()
        );
        // crdl's own note, and the starting daemon's warning relayed by the auto-start.
        let run = env.c(&format!("crdl {} 0 2000", env.dev()));
        run.ok()
            .stderr_has(&format!("\nWARN: {warning}"))
            .stderr_has(&format!("qmd: WARN: {warning}"));
        let other = env.path("other.dat");
        let run = env.c(&format!("crdl {} 0 100", other.display()));
        assert!(run.ok().stderr.starts_with(&format!("WARN: {warning}")), "{run:?}");
        env.stop_daemon();
        // The foreground daemon's log is its standard error.
        let mut qmd = Command::new(QMD);
        qmd.arg(&env.device).env_remove("QM_SOCKET");
        let daemon = users::Qmd::start(qmd);
        env.c("daemon stop").ok();
        let out = daemon.finish();
        assert!(out.contains(&warning) && out.contains("WARN"), "{out}");
        let run = qmd_detached(&env);
        run.ok().stderr_has(&format!("qmd: WARN: {warning}"));
        env.stop_daemon();
        let log = std::fs::read_to_string(env.path("QUE.log")).unwrap();
        assert!(log.contains(&warning), "{log}");
    }
    let env = Env::new();
    chmod(env.dir.path(), 0o755);
    env.c(&format!("crdl {} 0 2000", env.dev())).ok().stderr_lacks("WARN");
    env.stop_daemon();
    qmd_detached(&env).ok().stderr_lacks("WARN");
}

/// When qmadmin's auto-start fails, its ERROR line gives the daemon's reason (once
/// labelled), and the daemon's warnings come as warnings: here a device others may write
/// in a directory others may write.
#[test]
fn a_refused_auto_start_says_why_on_its_error_line() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 2000", env.dev())).ok();
    env.stop_daemon();
    chmod(env.dir.path(), 0o1777);
    chmod(&env.device, 0o660);
    let run = env.c("lidl");
    run.errors_are(&[&format!("ERROR: qmd: {} has mode 0660", env.dev())])
        .stderr_lacks("error: ")
        .stderr_lacks("ERROR: qmd: WARN");
    let warning = format!("qmd: WARN: directory {} (mode 1777)", env.dir.path().display());
    assert!(run.stderr.starts_with(&warning), "{run:?}");
}

/// The files of the device list's other entries are device files too: a directory of theirs
/// that others may write is warned about when qmd starts (in the foreground and with
/// `--detach`), as at `crdl`, even when the device's own directory is private.
#[test]
fn an_entry_directory_others_may_write_is_warned_about_at_start() {
    let env = Env::new();
    chmod(env.dir.path(), 0o700);
    let open = env.path("shared");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o1777);
    let warning = format!("directory {} (mode 1777) may be written by", open.display());
    let entry = open.join("E");
    env.c(&format!("crdl {} 0 2000; crdl {} 0 100", env.dev(), entry.display()))
        .ok()
        .stderr_has(&format!("WARN: {warning}"));
    env.stop_daemon();
    let run = qmd_detached(&env);
    run.ok().stderr_has(&format!("qmd: WARN: {warning}"));
    let private = format!("directory {} ", env.dir.path().display());
    run.stderr_lacks(&private);
    env.stop_daemon();
    let mut qmd = Command::new(QMD);
    qmd.arg(&env.device).arg("-l").arg("1").env_remove("QM_SOCKET");
    let daemon = users::Qmd::start(qmd);
    env.c("daemon stop").ok();
    let out = daemon.finish();
    assert!(out.contains(&format!("qmd: WARN: {warning}")), "{out}");
}

fn qmd_detached(env: &Env) -> Run {
    let mut cmd = Command::new(QMD);
    cmd.arg("--detach").arg(&env.device).env_remove("QM_SOCKET");
    users::run(cmd)
}

/// A service's return-code file is in the user's private directory, not at a predictable
/// path in /tmp where another user could plant a return code (read back as the service's)
/// or a link for the service to write through.
#[test]
fn a_planted_return_code_is_not_read() {
    let env = Env::new();
    let other = User::create();
    let service = r#"cat >/dev/null; printf '%s' "$QM_URCODE_FILE""#;
    crate::auto::write_config(
        &env,
        &format!(
            "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n\
             [service.SVC]\ncommand = '''{service}'''\n"
        ),
    );
    setup(&env, 200, &["SVC fifo none 0 0 100% 0% ''", "R fifo none 0 0 100% 0% ''"]);
    let status: DaemonStatus = env.json("daemon status");
    // Where qm used to put them: /tmp/qm-urcode-<qmd pid>-<call number>.
    for n in 0..4 {
        other.sh(&format!("echo 77 > /tmp/qm-urcode-{}-{n}", status.pid)).ok();
    }
    env.c("boot -i 1").ok();
    let mut app = App::connect(&env);
    let ctl = EnqueueCtl { reply_queue: Some("R".into()), ..EnqueueCtl::default() };
    app.put_with("SVC", b"x", ctl);
    eventually("the reply", || depth(&env, "R") == 1);
    let reply = app.take("R");
    for n in 0..4 {
        let _ = std::fs::remove_file(format!("/tmp/qm-urcode-{}-{n}", status.pid));
    }
    assert_eq!(reply.urcode, 0, "a planted return code was read");
    let file = PathBuf::from(String::from_utf8(reply.body).unwrap());
    let dir = std::fs::symlink_metadata(file.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o700), "{}", file.display());
}

/// A program or script that others may change is never run as qmd's user: a threshold
/// command naming one fails to start (and says why) at every firing, and a configuration
/// whose service runs one is refused; once the file is the owner's alone, both run.
#[test]
fn programs_others_may_change_are_not_run() {
    let env = Env::new();
    let script = |name: &str, ran: &str| {
        let path = env.path(name);
        std::fs::write(&path, format!("#!/bin/sh\ntouch {ran}\n")).unwrap();
        chmod(&path, 0o777);
        path
    };
    let th = script("th.sh", "th-ran");
    let svc = script("svc.sh", "svc-ran");
    setup(&env, 200, &["TQ fifo none 0 0 1m 0m ./th.sh", "SVC fifo none 0 0 100% 0% ''"]);
    let mut app = App::connect(&env);
    app.put("TQ", b"x");
    let refused = format!("refusing program {}: its mode 0777 lets", th.display());
    let fired = wait_firings(&env, "TQ", 1);
    assert!(fired[0].outcome.starts_with("cannot start: "), "{fired:?}");
    assert!(fired[0].outcome.contains(&refused), "{fired:?}");
    assert!(!env.path("th-ran").exists(), "the script others may change ran");
    // The owner's alone: the next crossing runs it.
    chmod(&th, 0o755);
    app.take("TQ");
    app.put("TQ", b"y");
    let fired = wait_firings(&env, "TQ", 2);
    assert_eq!(fired[1].outcome, "exit 0", "{fired:?}");
    assert!(env.path("th-ran").exists());

    // A service given to an interpreter: its script is checked too.
    write_config(
        &env,
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n\
         [service.SVC]\ncommand = \"sh ./svc.sh\"\n",
    );
    chmod(&env.path("QUE.toml"), 0o644);
    env.c("daemon reload").failed().stderr_has(&format!(
        "service SVC: refusing program {}: its mode 0777 lets",
        svc.display()
    ));
    chmod(&svc, 0o700);
    env.c("daemon reload").ok();
    assert!(!env.path("svc-ran").exists());

    // A bare script name is the working directory's file as well (`sh svc.sh`).
    write_config(
        &env,
        "[[forwarder]]\nid = 1\nqspace = \"QS\"\nclopt = \"-- -q SVC -i 0\"\n\n\
         [service.SVC]\ncommand = \"sh svc.sh\"\n",
    );
    chmod(&env.path("QUE.toml"), 0o644);
    chmod(&svc, 0o777);
    env.c("daemon reload").failed().stderr_has(&format!(
        "service SVC: refusing program {}: its mode 0777 lets",
        svc.display()
    ));
    chmod(&svc, 0o700);
    env.c("daemon reload").ok();
}
