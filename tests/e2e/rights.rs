//! Principals and rights (seed 004): qgrant, qrevoke, qauth and whoami, grants kept in the
//! device, each right enforced on another local user through a shared control socket
//! (`qmd --socket-mode`), and the owner and root never locked out.
//!
//! [`check_right`] and [`assert_identity`] take any client (a closure running qmadmin
//! commands as the peer), so that the tests of the other faces reuse them.

use crate::support::{Env, QMADMIN, QMD, Run};
use crate::users::{self, User};
use qm_common::rights::{GrantListing, Identity, Right};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Runs qmadmin commands as some client of the daemon under test.
pub type Client<'a> = &'a dyn Fn(&str) -> Run;

/// Queue space QS with queues Q and ERRQ, made through `admin`.
pub fn rights_setup(admin: Client, device: &Path) {
    admin(&format!(
        "crdl {} 0 2000; qspc QS 40000 200 12 20 20 1000 ERRQ n 16; qopen QS; \
         qcreate ERRQ fifo none 0 0 100% 0% ''; qcreate Q fifo none 0 0 100% 0% ''",
        device.display()
    ))
    .ok();
}

/// Asserts that `run` failed, and that every error it printed is `sentence`.
#[track_caller]
pub fn refused_with(run: &Run, sentence: &str) {
    run.failed();
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("ERROR:")).collect();
    let expected = format!("ERROR: {sentence}");
    assert!(
        !errors.is_empty() && errors.iter().all(|e| *e == expected),
        "expected only {expected:?}\n--- stderr\n{}",
        run.stderr
    );
}

/// What the peer runs to use `right` on QS/Q, and the refusal it gets without it.
fn use_of(right: Right, principal: &str) -> (&'static str, String) {
    let refusal = |action: &str| format!("QMEPERM: {principal} may not {action}");
    match right {
        Right::Enqueue => ("qopen QS; qenqueue Q from-peer", refusal("enqueue to QS/Q")),
        Right::Dequeue => ("qopen QS; qdequeue Q", refusal("dequeue from QS/Q")),
        Right::Browse => ("qopen QS; qdequeue -k Q; qinfo Q", refusal("browse QS/Q")),
        Right::Admin => ("qopen QS; qset Q; qchangeprio -y 9", refusal("administer QS/Q")),
    }
}

/// Through `peer` (whose principal is `principal`), `right` on QS/Q is refused with the
/// exact QMEPERM sentence before `admin` grants it, allowed after, and refused again once
/// revoked. The peer is given another right on QS first (enqueue when browse is checked,
/// else browse), so that it may open QS and the refusal is the one of `right`; that is
/// taken back at the end: the peer holds nothing afterwards.
pub fn check_right(admin: Client, peer: Client, principal: &str, right: Right) {
    let foothold = if right == Right::Browse { "enqueue" } else { "browse" };
    admin(&format!("qgrant {principal} {foothold} QS/Q")).ok();
    let (commands, refusal) = use_of(right, principal);
    let message = || admin("qopen QS; qenqueue Q for-peer").ok().stdout.clone();
    message();
    refused_with(&peer(commands), &refusal);
    let name = right.name();
    admin(&format!("qgrant {principal} {name} QS/Q")).ok();
    let used = peer(commands);
    used.ok();
    match right {
        // The new message's id.
        Right::Enqueue => used.stdout_has("00000000"),
        Right::Dequeue | Right::Browse => used.stdout_has("msgid="),
        Right::Admin => used.stdout_has("changed"),
    };
    message();
    admin(&format!("qrevoke {principal} {name} QS/Q")).ok();
    refused_with(&peer(commands), &refusal);
    admin(&format!("qrevoke {principal} {foothold} QS/Q")).ok();
    let listing: GrantListing = admin(&format!("qauth --json {principal}")).ok().json();
    assert!(listing.grants.is_empty(), "{listing:?}");
}

/// `whoami` through `peer` names `principal` and `face` (`socket`, `tcp`, `tls`).
pub fn assert_identity(peer: Client, principal: &str, face: &str, always_admin: bool) {
    let me: Identity = peer("whoami --json").ok().json();
    assert_eq!(me.principal.as_str(), principal);
    assert_eq!(me.face.label(), face);
    assert_eq!(me.always_admin, always_admin);
    peer("whoami").ok().stdout_has(principal).stdout_has(face);
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// qmadmin as root (the test's user) on `device`, never starting a daemon.
fn as_root(device: &Path, commands: &str) -> Run {
    let mut cmd = Command::new(QMADMIN);
    cmd.args(["--no-start", "-c", commands]).arg(device).env_remove("QM_SOCKET");
    cmd.env("PAGER", "cat");
    users::run(cmd)
}

/// The owner grants, lists and revokes; `--json`; bad input is refused and changes nothing;
/// grants need a device, and survive a restart of the daemon.
#[test]
fn grants_round_trip_and_survive_a_restart() {
    let env = Env::new();
    let _daemon = env.start_daemon(&[]);
    env.c("qgrant unix:bob enqueue QS/Q")
        .failed()
        .stderr_has("Rights are kept in the device, and")
        .stderr_has("does not exist yet; create it with crdl");
    env.with_device();
    assert_identity(&|c| env.c(c), "unix:root", "socket", true);

    env.c("qgrant unix:bob enqueue,browse QS/Q; qgrant 'cert:render-*' dequeue; qgrant anonymous enqueue QS")
        .ok()
        .stdout_has("Granted enqueue,browse on QS/Q to unix:bob (it now holds enqueue,browse there)")
        .stdout_has("Granted dequeue on * to cert:render-*");
    env.c("qgrant unix:bob browse QS/Q").ok().stdout_has("unix:bob already holds browse on QS/Q");
    let before: GrantListing = env.json("qauth");
    let text: Vec<String> = before
        .grants
        .iter()
        .map(|g| format!("{} {:?} {}", g.principal, g.rights, g.scope))
        .collect();
    assert_eq!(
        text,
        ["anonymous [Enqueue] QS", "cert:render-* [Dequeue] *", "unix:bob [Enqueue, Browse] QS/Q"]
    );
    assert_eq!(before.always_admin.iter().map(|p| p.as_str()).collect::<Vec<_>>(), ["unix:root"]);
    let table = env.c("qauth");
    table.ok().stdout_has("unix:bob").stdout_has("enqueue,browse").stdout_has("QS/Q");
    table.stdout_has("* (always: the daemon's owner)");
    // A certificate principal sees the pattern grant that names it, and nothing else.
    let mine: GrantListing = env.json("qauth cert:render-17");
    assert_eq!(mine.grants.len(), 1);
    assert_eq!(mine.grants[0].principal.as_str(), "cert:render-*");

    let bad = [
        (
            "qgrant bob enqueue QS",
            "Principal: 'bob' is invalid; write unix:USER, cert:ID or anonymous",
        ),
        (
            "qgrant unix:bob read QS",
            "Right: 'read' is invalid; give enqueue, dequeue, browse or admin",
        ),
        ("qgrant unix:bob enqueue,,browse", "Right: '' is invalid"),
        ("qgrant unix:bob enqueue 'Q S'", "Scope: 'Q S' is invalid; white space"),
        ("qgrant unix:bob enqueue QS/", "Scope: 'QS/' is invalid; the queue part after / is empty"),
        ("qgrant unix:bob enqueue /Q", "Scope: '/Q' is invalid; the queue space part is empty"),
        (
            "qgrant unix:bob enqueue 0123456789abcdefX",
            "a queue space name has at most 15 characters",
        ),
        (
            "qrevoke unix:bob dequeue QS/Q",
            "unix:bob was not granted dequeue on QS/Q (it holds enqueue,browse there); nothing was revoked",
        ),
        ("qrevoke unix:bob enqueue QS", "unix:bob holds no grant on QS; nothing was revoked"),
        ("qrevoke unix:carol admin", "unix:carol holds no grant on *"),
        ("qauth bob", "Principal: 'bob' is invalid"),
    ];
    for (command, error) in bad {
        env.c(command).failed().errors_are(&[error]);
    }
    let after: GrantListing = env.json("qauth");
    assert_eq!(after, before, "refused commands changed nothing");

    env.c("qrevoke unix:bob enqueue QS/Q")
        .ok()
        .stdout_has("Revoked enqueue on QS/Q from unix:bob (it holds browse there now)");
    env.stop_daemon();
    let kept: GrantListing = env.json("qauth unix:bob");
    assert_eq!(kept.grants.len(), 1, "{kept:?}");
    assert_eq!(kept.grants[0].rights, [Right::Browse]);
    assert_eq!(kept.grants[0].scope.to_string(), "QS/Q");
}

/// A root daemon shares its socket (0666) with another local user, who holds nothing until
/// granted: each right is refused, granted, used and revoked, with the exact QMEPERM
/// sentence. Daemon-wide commands stay refused; the owner is never locked out.
#[test]
fn each_right_is_enforced_for_another_local_user() {
    let env = Env::new();
    let other = User::create();
    chmod(env.dir.path(), 0o755);
    let _daemon = env.start_daemon(&["--socket-mode", "0666"]);
    assert_eq!(std::fs::metadata(env.socket()).unwrap().mode() & 0o777, 0o666);
    let admin = |c: &str| env.c(c);
    rights_setup(&admin, &env.device);
    let principal = format!("unix:{}", other.name);
    let peer = |c: &str| other.qmadmin(&env.device, &["--no-start"], c);

    assert_identity(&peer, &principal, "socket", false);
    refused_with(
        &peer("qopen QS"),
        &format!("QMEPERM: {principal} may not open QS: it holds no right on it or its queues"),
    );
    for right in Right::ALL {
        check_right(&admin, &peer, &principal, right);
    }
    // Rights on QS/Q reach no further: not another queue, not the daemon.
    admin(&format!("qgrant {principal} admin QS/Q")).ok();
    refused_with(
        &peer("qopen QS; qenqueue ERRQ x"),
        &format!("QMEPERM: {principal} may not enqueue to QS/ERRQ"),
    );
    for (command, sentence) in [
        ("daemon stop", "administer this qmd"),
        ("lidl", "browse this qmd"),
        (&format!("qgrant {principal} admin") as &str, "administer this qmd"),
        ("qauth", "administer this qmd"),
    ] {
        refused_with(&peer(command), &format!("QMEPERM: {principal} may not {sentence}"));
    }
    // Their own grants they may see.
    let mine: GrantListing = peer(&format!("qauth --json {principal}")).ok().json();
    assert_eq!(mine.grants.len(), 1);
    // A pattern grant reaches them too.
    admin(&format!("qrevoke {principal} admin QS/Q; qgrant 'unix:*' enqueue QS")).ok();
    peer("qopen QS; qenqueue ERRQ by-pattern").ok().stdout_has("00000000");

    // The owner (root) holds admin whatever is granted or revoked, and cannot revoke it.
    admin("qrevoke unix:root admin").failed().stderr_has("unix:root holds no grant on *");
    admin("qopen QS; qset Q; qlist; lidl; qauth").ok();
    assert!(env.socket().exists(), "the peer did not stop the daemon");
}

/// A daemon of a user other than root shares its socket with its group (0660): the socket
/// sits in a directory of the daemon's user that nobody else may write, so another user
/// trusts it (and so does root), and rights decide. The same socket in a directory its group
/// may write is refused by the client before anything is sent, saying why.
#[test]
fn a_shared_socket_in_its_owners_directory_is_trusted() {
    let env = Env::new();
    let (owner, other) = (User::create(), User::create());
    chmod(env.dir.path(), 0o755);
    // The socket takes the directory's group (set-group-id): the other user's.
    let dir = env.path("shared");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner.uid), Some(other.gid)).unwrap();
    chmod(&dir, 0o2750);
    let device = dir.join("QUE");
    let _daemon = owner.start_qmd(&device, &["--socket-mode", "0660"]);
    let socket = dir.join("QUE.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, other.gid));

    let admin = |c: &str| owner.qmadmin(&device, &["--no-start"], c);
    rights_setup(&admin, &device);
    let principal = format!("unix:{}", other.name);
    let peer = |c: &str| other.qmadmin(&device, &["--no-start"], c);
    assert_identity(&peer, &principal, "socket", false);
    check_right(&admin, &peer, &principal, Right::Enqueue);
    // Root is never locked out of another user's daemon either.
    let root = |c: &str| as_root(&device, c);
    assert_identity(&root, "unix:root", "socket", true);
    root("qopen QS; qinfo Q; qauth").ok();

    // Group-writable: the other user (of that group) could have bound the socket first.
    chmod(&dir, 0o2770);
    let refused = peer("whoami");
    refused.failed().stderr_has(&format!(
        "refusing the qmd on {}: it runs as uid {} ({})",
        socket.display(),
        owner.uid,
        owner.name
    ));
    refused.stderr_has(&format!(
        "the socket's directory {} (mode 2770) may be written by its group",
        dir.display()
    ));
    refused.stderr_has("nothing was sent");
}

/// `--socket-mode` takes read and write bits only, the owner's included; a shared socket in
/// the private fallback directory, which nobody else may enter, is refused at start with a
/// pointer to --socket.
#[test]
fn socket_mode_is_checked_at_start() {
    let env = Env::new();
    for (mode, why) in [
        ("0770", "0770 has bits other than read and write"),
        ("4660", "4660 has bits other than read and write"),
        ("0060", "0060 does not let the owner read and write the socket"),
        ("rw", "'rw' is not an octal mode"),
    ] {
        let mut cmd = Command::new(QMD);
        cmd.arg(&env.device).args(["--socket-mode", mode]);
        let run = users::run(cmd);
        run.failed().stderr_has(why).stderr_has("give octal permission bits such as 0600");
    }
    // A device path too long for a socket beside it: the socket goes to /tmp/qm-0.
    let long = env.path(&"€".repeat(30));
    let mut cmd = Command::new(QMD);
    cmd.arg(&long).args(["--socket-mode", "0660"]).env_remove("QM_SOCKET");
    let run = users::run(cmd);
    run.failed()
        .stderr_has("--socket-mode 0660 lets other users connect, but the socket")
        .stderr_has("is in the private directory")
        .stderr_has("with --socket");
}
