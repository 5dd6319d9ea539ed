//! Attachments: long-lived `qmadmin` sessions holding `qopen`, what `ipcs` shows of them,
//! and the commands that need a queue space inactive.

use crate::support::Env;
use qm_common::qspace::{Attachment, QueueSpaceInfo, QueueSpaceState};

/// A device with queue space QS (and queue Q in it).
fn setup() -> Env {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 \"\" n 16; qopen QS; qcr Q fifo none 0 0 100% 0% \"\"").ok();
    env
}

/// `ipcs QS` lists both attached sessions with their pids; a session that closes or ends
/// drops out; a loaded space nobody holds shows as qmd's.
#[test]
fn ipcs_lists_attached_sessions() {
    let env = setup();
    let mut a = env.session();
    let mut b = env.session();
    a.run("qopen QS").ok();
    b.run("qopen QS").ok();
    let list: Vec<Attachment> = a.run("ipcs --json QS").ok().json();
    let mut pids: Vec<Option<u32>> = list.iter().map(|x| x.pid).collect();
    pids.sort();
    let mut expected = vec![Some(a.pid()), Some(b.pid())];
    expected.sort();
    assert_eq!(pids, expected, "both sessions, with their pids: {list:?}");
    for x in &list {
        assert_eq!((x.qspace.as_str(), x.ipc_key, x.state), ("QS", 40000, QueueSpaceState::Active));
        assert_eq!((x.program.as_str(), x.kind.as_str()), ("qmadmin", "admin"));
    }
    // The table names them too.
    let table = b.run("ipcs QS").ok().stdout.clone();
    assert!(
        table.contains(&a.pid().to_string()) && table.contains(&b.pid().to_string()),
        "{table}"
    );
    assert_eq!(env.json::<QueueSpaceInfo>("qspl QS").state, QueueSpaceState::Active);

    // qopen of another space closes this one.
    env.c("qspc T 40001 100 4 2 2 100 \"\" n 16").ok();
    b.run("qopen T").ok();
    let list: Vec<Attachment> = a.run("ipcs --json QS").ok().json();
    assert_eq!(list.iter().map(|x| x.pid).collect::<Vec<_>>(), [Some(a.pid())]);
    let list: Vec<Attachment> = a.run("ipcs --json T").ok().json();
    assert_eq!(list.iter().map(|x| x.pid).collect::<Vec<_>>(), [Some(b.pid())]);
    b.run("qclose").ok();
    let list: Vec<Attachment> = a.run("ipcs --json T").ok().json();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].program.as_str(), list[0].pid), ("qmd", None), "closed: held by qmd");
    assert_eq!(a.finish().status, 0);
    // Both gone: the space stays loaded, held by the daemon.
    let list: Vec<Attachment> = b.run("ipcs --json QS").ok().json();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].program.as_str(), list[0].pid, list[0].state),
        ("qmd", None, QueueSpaceState::Open)
    );
    // An empty answer lists every queue space.
    b.run("ipcs\n\n").ok().stdout_has("Queue space name: ").stdout_has("qmd");
}

/// While another session is attached, qaddext, qspacechange, ipcrm and qspacedestroy
/// refuse and name it; nothing changes; the attached session keeps working.
#[test]
fn inactive_commands_refuse_while_others_attached() {
    let env = setup();
    let mut a = env.session();
    a.run("qopen QS").ok();
    let before: QueueSpaceInfo = env.json("qspl QS");
    let who = format!("qmadmin pid {} (session", a.pid());
    env.c("qaddext QS 8")
        .failed()
        .stderr_has(&format!("Queue space QS is active; attached: {who}"));
    env.c("qspch QS 40001 2 2 100 \"\" n 16")
        .failed()
        .stderr_has(&format!("Queue space QS is active; attached: {who}"));
    env.c("ipcrm QS")
        .failed()
        .stderr_has(&format!("ipcrm - processes attached to queue space QS: {who}"))
        .stderr_has("use -f to remove anyway");
    env.c("qspds -y QS")
        .failed()
        .stderr_has(&format!("Queue space QS is active; attached: {who}"))
        .stderr_has("use -f to destroy it anyway");
    let after: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(after, before, "refused commands change nothing");
    // The attached session did not notice.
    a.run("qinfo Q").ok().stdout_has("Q ");
}

/// `ipcrm -f -y` detaches everyone: their queue commands then need `qopen` again.
#[test]
fn ipcrm_force_detaches_everyone() {
    let env = setup();
    let mut a = env.session();
    let mut b = env.session();
    a.run("qopen QS").ok();
    b.run("qopen QS").ok();
    env.c("ipcrm -f -y QS").ok().stdout_has("IPC resources of queue space QS removed");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
    b.run("qinfo").failed().stderr_has("Queue space must be opened first");
    let list: Vec<Attachment> = env.json("ipcs QS");
    assert!(list.is_empty(), "nobody attached, nothing loaded: {list:?}");
    assert_eq!(env.json::<QueueSpaceInfo>("qspl QS").state, QueueSpaceState::Inactive);
    // Now inactive, qaddext works.
    env.c("qaddext QS 8").ok();
    a.run("qopen QS\nqinfo").ok();
}

/// `ipcrm -f` asks for confirmation unless -y is given; `n` keeps everyone attached.
#[test]
fn ipcrm_force_confirmation() {
    let env = setup();
    let mut a = env.session();
    a.run("qopen QS").ok();
    env.script("ipcrm -f QS\nn\n").ok().stderr_has("WARN: IPC resources not removed");
    a.run("qinfo").ok();
    env.script("ipcrm -f QS\ny\n").ok().stdout_has("IPC resources of queue space QS removed");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
}

/// `qspacedestroy -f` destroys a space others are attached to; they lose it.
#[test]
fn qspacedestroy_force_while_attached() {
    let env = setup();
    let mut a = env.session();
    a.run("qopen QS").ok();
    env.c("qspds -f -y QS").ok().stdout_has("Queue space QS destroyed");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
    a.run("qopen QS").failed().stderr_has("Queue space QS does not exist");
}

/// A command that needs the space inactive closes the session's own open space and says
/// so; the session's later queue commands need `qopen` again.
#[test]
fn own_open_space_is_closed_and_said_so() {
    let env = setup();
    let mut a = env.session();
    a.run("qopen QS").ok();
    a.run("qaddext QS 8")
        .ok()
        .stdout_has("Queue space QS closed")
        .stdout_has("Added extent of 8 pages");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
    a.run("qopen QS").ok();
    a.run("qspch QS 40001 2 2 100 \"\" n 16").ok().stdout_has("Queue space QS closed");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
    a.run("qopen QS").ok();
    a.run("ipcrm QS").ok().stdout_has("IPC resources of queue space QS removed");
    a.run("qinfo").failed().stderr_has("Queue space must be opened first");
    a.run("qopen QS").ok();
    a.run("qspds -y QS")
        .ok()
        .stdout_has("Queue space QS closed")
        .stdout_has("Queue space QS destroyed");
    // All in one -c session, too.
    let env = setup();
    env.c("qopen QS; qaddext QS 8; qinfo")
        .failed()
        .errors_are(&["Queue space must be opened first"])
        .stdout_has("Queue space QS closed");
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!((info.total_pages, info.params.ipc_key), (108, 40000));
}
