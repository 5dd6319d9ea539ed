//! The queue space lifecycle: create, list, change, add extents, destroy, and what the
//! device list and VTOC say after each step.

use crate::support::Env;
use qm_common::device::{DeviceListing, FreeRun, VtocEntry};
use qm_common::qspace::{MemorySize, MemoryUnit, QueueSpaceInfo, QueueSpaceState};

/// The queue-space extents in the VTOC: (name, extent, device, offset, pages).
fn extents(env: &Env) -> Vec<(String, u32, u8, u64, u64)> {
    let vtoc: Vec<VtocEntry> = env.json("livtoc");
    let (tables, extents): (Vec<_>, Vec<_>) = vtoc.into_iter().partition(|t| t.extent.is_none());
    let names: Vec<(&str, u8, u64, u64)> =
        tables.iter().map(|t| (t.name.as_str(), t.device, t.offset, t.pages)).collect();
    assert_eq!(names, [("VTOC", 0, 0, 7), ("UDL", 0, 7, 28)], "the VTOC and UDL never move");
    extents.into_iter().map(|t| (t.name, t.extent.unwrap(), t.device, t.offset, t.pages)).collect()
}

fn free(env: &Env, index: usize) -> Vec<FreeRun> {
    let listing: DeviceListing = env.json("lidl");
    listing.entries[index].free.clone()
}

fn free_run(addr: u64, size: u64) -> FreeRun {
    FreeRun { addr, size }
}

fn ext(
    name: &str,
    extent: u32,
    device: u8,
    offset: u64,
    pages: u64,
) -> (String, u32, u8, u64, u64) {
    (name.to_string(), extent, device, offset, pages)
}

/// Pages round down to a multiple of 4; spaces are placed first-fit, so a small space
/// created after a destroy reuses the hole and a large one goes after the others.
#[test]
fn create_rounds_pages_and_places_first_fit() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 500", env.dev())).ok();
    env.c("qspc A 40000 50 4 2 2 100 \"\" n 16").ok().stderr_lacks("ERROR");
    let a: QueueSpaceInfo = env.json("qspl A");
    assert_eq!((a.params.pages, a.total_pages), (48, 48), "50 pages round down to 48");
    env.c("qspc B 40001 102 4 2 2 100 \"\" n 16").ok();
    assert_eq!(extents(&env), [ext("A", 0, 0, 35, 48), ext("B", 0, 0, 83, 100)]);
    assert_eq!(free(&env, 0), [free_run(183, 317)]);

    env.c("qspds -y A").ok().stdout_has("Queue space A destroyed");
    assert_eq!(free(&env, 0), [free_run(35, 48), free_run(183, 317)], "A's pages are free again");
    env.c("qspc C 40002 20 4 2 2 100 \"\" n 16; qspc D 40003 40 4 2 2 100 \"\" n 16").ok();
    assert_eq!(
        extents(&env),
        [ext("C", 0, 0, 35, 20), ext("B", 0, 0, 83, 100), ext("D", 0, 0, 183, 40)],
        "C fits in A's hole (and takes its VTOC slot), D (40 pages) does not fit in the 28 left and goes after B"
    );
    assert_eq!(free(&env, 0), [free_run(55, 28), free_run(223, 277)]);
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries.len(), 1);
    // The table listing says the same.
    env.c("livtoc")
        .ok()
        .stdout_has(&format!("Volume Table of Contents on {}", env.dev()))
        .stdout_has("     2 | C     |      0 |      0 |     35 |    20\n");
}

/// `qspacelist` reports parameters, extents, file, sizes and state, by name or for the
/// open space.
#[test]
fn qspacelist_contents() {
    let env = Env::new();
    env.with_device();
    env.c("qspc -n 2000b -A 3 -o 4096 QS 88945 200 10 5 6 300 ERRQ n 8").ok();
    let info: QueueSpaceInfo = env.json("qspl QS");
    let p = &info.params;
    assert_eq!(p.name, "QS");
    assert_eq!(p.ipc_key, 88945);
    assert_eq!((p.pages, p.queues, p.transactions, p.processes, p.messages), (200, 10, 5, 6, 300));
    assert_eq!((p.error_queue.as_str(), p.initialize, p.blocking), ("ERRQ", false, 8));
    assert_eq!(p.nonpersistent, MemorySize { value: 2000, unit: MemoryUnit::Bytes });
    assert_eq!(info.nonpersistent_bytes, 1024, "2000 bytes round down to one 1024-byte page");
    assert_eq!((p.actions, p.overflow), (3, 4096));
    assert_eq!(info.file, env.dev());
    assert_eq!(info.page_size, 1024);
    assert_eq!(info.total_pages, 200);
    assert_eq!(info.overhead_pages, 11);
    assert_eq!(info.state, QueueSpaceState::Inactive);
    assert_eq!((info.queues_defined, info.messages, info.blocks_used), (0, 0, None));
    assert_eq!(info.extents.len(), 1);
    assert_eq!((info.extents[0].offset, info.extents[0].pages), (35, 200));

    // With an empty answer, the open queue space; with none open, a clear error.
    let open: QueueSpaceInfo =
        env.json("qopen QS; qcr ERRQ fifo none 0 0 100% 0% \"\"; qcr Q1 fifo none 0 0 100% 0% \"\"; qspl \"\"");
    assert_eq!(open.params.name, "QS");
    assert_eq!(open.queues_defined, 2);
    assert_eq!(open.state, QueueSpaceState::Active, "the listing session itself is attached");
    let after: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(after.state, QueueSpaceState::Open, "loaded in the daemon, nobody attached");
    env.c("qspl \"\"")
        .failed()
        .stderr_has("No queue space is currently open; give a queue space name");
    env.c("qspl NOPE").failed().stderr_has("Queue space NOPE does not exist");
    env.c("qspl QS")
        .ok()
        .stdout_has("Queue space QS")
        .stdout_has("2 of 10")
        .stdout_has("2000b = 1024 bytes");
}

/// `qspacechange` offers the current values as defaults: empty answers keep them; given
/// values change them; options change only when given.
#[test]
fn qspacechange_keeps_defaults_and_changes_values() {
    let env = Env::new();
    env.with_device();
    env.c("qspc -n 10 -A 2 QS 40000 100 4 3 3 50 ERRQ n 16").ok();
    let before: QueueSpaceInfo = env.json("qspl QS");
    let run = env.script("qspacechange QS\n\n\n\n\n\n\n\nlivtoc\n");
    run.ok()
        .stdout_has("IPC Key for queue space [default=40000]: ")
        .stdout_has("Number of concurrent transactions in queue space [default=3]: ")
        .stdout_has("Number of concurrent processes in queue space [default=3]: ")
        .stdout_has("Number of messages in queue space [default=50]: ")
        .stdout_has("Error queue name [default=ERRQ]: ")
        .stdout_has("Blocking factor [default=16]: ")
        .stdout_has("Volume Table of Contents");
    let kept: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(kept, before, "empty answers keep every value");

    // Some answers typed, the rest left at their defaults.
    env.script("qspch QS\n40100\n\n7\n\n\n\n4\n").ok();
    let changed: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(changed.params.ipc_key, 40100);
    assert_eq!(changed.params.transactions, 3);
    assert_eq!(changed.params.processes, 7);
    assert_eq!(changed.params.blocking, 4);
    assert_eq!(changed.params.error_queue, "ERRQ");

    // All positional, with options; pages and queues are not qspacechange's to change.
    env.c("qspch -n 20B -A 5 QS 40200 9 8 500 \"\" n 32").ok();
    let p = env.json::<QueueSpaceInfo>("qspl QS").params;
    assert_eq!((p.ipc_key, p.transactions, p.processes, p.messages), (40200, 9, 8, 500));
    assert_eq!((p.error_queue.as_str(), p.blocking, p.actions), ("", 32, 5));
    assert_eq!(p.nonpersistent, MemorySize { value: 20, unit: MemoryUnit::Blocks });
    assert_eq!((p.pages, p.queues), (100, 4));

    // A bad answer fails the change and changes nothing.
    env.c("qspch QS 32768").failed().stderr_has("IPC Key for queue space: '32768' is invalid");
    env.c("qspc OTHER 40300 20 2 2 2 10 \"\" n 16").ok();
    env.c("qspch QS 40300 9 8 500 \"\" n 32")
        .failed()
        .stderr_has("IPC Key for queue space: 40300 is already used by queue space OTHER");
    assert_eq!(env.json::<QueueSpaceInfo>("qspl QS").params, p);
}

/// `qaddext` adds an extent from free space on the queue space's file, rounded down to a
/// multiple of 4, and refuses when no run there is large enough.
#[test]
fn qaddext_on_the_device() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 300", env.dev())).ok();
    env.c("qspc QS 40000 100 4 2 2 100 \"\" n 16; qspc T 40001 40 4 2 2 100 \"\" n 16").ok();
    env.c("qaddext QS 50")
        .ok()
        .stdout_has("Added extent of 48 pages to queue space QS (device 0, offset 175)");
    assert_eq!(
        extents(&env),
        [ext("QS", 0, 0, 35, 100), ext("T", 0, 0, 135, 40), ext("QS", 1, 0, 175, 48)]
    );
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(info.total_pages, 148);
    assert_eq!(info.extents.len(), 2);
    // 300 - 223 = 77 pages are left.
    env.c("qaddext QS 80").failed().stderr_has(&format!(
        "Number of pages: 80 pages do not fit; the largest free run on {} is 77 pages",
        env.dev()
    ));
    env.c("qaddext QS 3").failed().stderr_has("at least 4 pages are needed");
    env.c("qaddext NOPE 8").failed().stderr_has("Queue space NOPE does not exist");
    // Prompted: the name and the number of pages.
    env.script("qaddext\nT\n8\n").ok().stdout_has("Number of pages: ");
    assert_eq!(env.json::<QueueSpaceInfo>("qspl QS").total_pages, 148);
    assert_eq!(env.json::<QueueSpaceInfo>("qspl T").total_pages, 48);
    // Destroying a space frees all its extents.
    env.c("qspds -y QS").ok();
    assert_eq!(extents(&env), [ext("T", 0, 0, 135, 40), ext("T", 1, 0, 223, 8)]);
    assert_eq!(free(&env, 0), [free_run(35, 100), free_run(175, 48), free_run(231, 69)]);
}

/// A space on another file takes its extensions only from entries on that file, and a
/// space on the device only from the device: each refuses although the other file has room.
#[test]
fn qaddext_stays_on_the_spaces_file() {
    let env = Env::new();
    let fs = env.path("FS").display().to_string();
    env.c(&format!("crdl {} 0 100; crdl {fs} 0 300", env.dev())).ok();
    // Entry 0 has 65 free pages: 200 go to the other file.
    env.c("qspc BIG 40000 200 4 2 2 100 \"\" n 16; qspc SMALL 40001 20 4 2 2 100 \"\" n 16").ok();
    assert_eq!(extents(&env), [ext("BIG", 0, 1, 0, 200), ext("SMALL", 0, 0, 35, 20)]);
    env.c("qaddext BIG 40").ok().stdout_has("(device 1, offset 200)");
    // FS has 60 pages left, the device 45.
    env.c("qaddext BIG 64")
        .failed()
        .stderr_has(&format!("the largest free run on {fs} is 60 pages"));
    env.c("qaddext SMALL 60")
        .failed()
        .stderr_has(&format!("the largest free run on {} is 45 pages", env.dev()));
    // A second entry on the same file counts as that file.
    env.c(&format!("crdl {fs} 1000 100")).ok();
    env.c("qaddext BIG 64").ok().stdout_has("(device 2, offset 1000)");
    assert_eq!(
        extents(&env),
        [
            ext("BIG", 0, 1, 0, 200),
            ext("SMALL", 0, 0, 35, 20),
            ext("BIG", 1, 1, 200, 40),
            ext("BIG", 2, 2, 1000, 64)
        ]
    );
    let big: QueueSpaceInfo = env.json("qspl BIG");
    assert_eq!((big.file.as_str(), big.total_pages), (fs.as_str(), 304));
}

/// `qspacedestroy` asks for confirmation: `n` (or anything but y) keeps the space and
/// warns; `y` or `-y` destroys it; the name may be prompted for.
#[test]
fn qspacedestroy_confirmation() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 \"\" n 16; qspc T 40001 100 4 2 2 100 \"\" n 16").ok();
    let run = env.script("qspds QS\nn\nqspacedestroy QS\nyes\nqspds\nQS\nN\n");
    run.ok().stdout_has("Are you sure? [y, n] ");
    assert_eq!(run.stderr.matches("WARN: Queue space not destroyed").count(), 3);
    run.stdout_lacks("destroyed");
    assert_eq!(extents(&env).len(), 2, "nothing was destroyed");

    env.script("qspds\nQS\ny\n")
        .ok()
        .stdout_has("Queue space name: Are you sure? [y, n] Queue space QS destroyed");
    env.c("qspds -y T").ok().stdout_has("Queue space T destroyed");
    assert!(extents(&env).is_empty());
    assert_eq!(free(&env, 0), [free_run(35, 1965)]);
    env.c("qspds -y T").failed().stderr_has("Queue space T does not exist");
    // -f with nothing in the way destroys as well.
    env.c("qspc U 40002 100 4 2 2 100 \"\" n 16; qopen U; qcr Q fifo none 0 0 100% 0% \"\"").ok();
    env.c("qspds -f -y U").ok().stdout_has("Queue space U destroyed");
    env.c("qspl U").failed().stderr_has("Queue space U does not exist");
    assert!(extents(&env).is_empty());
}

/// The VTOC holds 100 tables: after 98 extents, creating a space or an extent is refused;
/// destroying the space frees every slot.
#[test]
fn vtoc_full() {
    let env = Env::new();
    env.with_device();
    let mut script = vec!["qspc QS 40000 4 1 1 1 10 \"\" n 16".to_string()];
    script.extend((0..97).map(|_| "qaddext QS 4".to_string()));
    env.c(&script.join("; ")).ok();
    let vtoc: Vec<VtocEntry> = env.json("livtoc");
    assert_eq!(vtoc.len(), 100);
    assert_eq!(vtoc.last().map(|t| (t.extent, t.offset)), Some((Some(97), 35 + 97 * 4)));
    env.c("qaddext QS 4; qspc T 40001 4 1 1 1 10 \"\" n 16").failed().errors_are(&[
        "The VTOC is full: at most 100 tables",
        "The VTOC is full: at most 100 tables",
    ]);
    assert_eq!(env.json::<Vec<VtocEntry>>("livtoc").len(), 100);
    assert_eq!(env.json::<QueueSpaceInfo>("qspl QS").total_pages, 98 * 4);
    env.c("livtoc").ok().stdout_has("    99 | QS    |     97 |      0 |    423 |     4");
    env.c("qspds -y QS").ok();
    assert_eq!(env.json::<Vec<VtocEntry>>("livtoc").len(), 2);
    env.c("qspc T 40001 4 1 1 1 10 \"\" n 16").ok();
}

/// `Initialize extents: y` shows 20 progress dots in verbose mode and is recorded (the disk
/// it takes: diskfull.rs).
#[test]
fn initialize_extents() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 3000", env.dev())).ok();
    env.c("qspc I 40000 1000 4 2 2 100 \"\" y 16").ok().stdout_lacks(".....");
    assert!(env.json::<QueueSpaceInfo>("qspl I").params.initialize);
    let run = env.c("v; qspc J 40001 200 4 2 2 100 \"\" y 16");
    run.ok().stdout_has(&format!("\n{}\n", ".".repeat(20)));
    let j: QueueSpaceInfo = env.json("qspl J");
    assert!(j.params.initialize);
    // Not initialized at creation, initialized by qspacechange.
    env.c("qspc K 40002 100 4 2 2 100 \"\" n 16").ok();
    assert!(!env.json::<QueueSpaceInfo>("qspl K").params.initialize);
    env.c("qspch K 40002 2 2 100 \"\" y 16").ok();
    assert!(env.json::<QueueSpaceInfo>("qspl K").params.initialize);
}

/// `qspacechange` refuses a message limit below what the space holds, naming the field
/// and the count, and changes nothing; `qspacelist` shows blocks used only once the space
/// is loaded (after a restart it is not, until `qopen`).
#[test]
fn message_limit_and_blocks_used() {
    let env = Env::new();
    env.with_device();
    env.c("qspc QS 40000 100 4 2 2 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''").ok();
    env.c("qopen QS; qenqueue Q one; qenqueue Q two; qenqueue Q three").ok();
    env.c("qspch QS 40000 2 2 2 '' n 16").failed().stderr_has(
        "Number of messages in queue space: 2 is below the 3 persistent messages queue space QS holds now",
    );
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(
        (info.params.messages, info.messages),
        (100, 3),
        "the refused change changed nothing"
    );
    env.c("qspch QS 40000 2 2 3 '' n 16").ok();
    env.stop_daemon();
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!((info.params.messages, info.messages, info.blocks_used), (3, 3, None));
    env.c("qspl QS").ok().stdout_has("counted when the queue space is opened");
    let info: QueueSpaceInfo = env.json("qopen QS; qspl QS");
    assert_eq!(info.blocks_used, Some(3), "one block per small message once loaded");
}

/// As in Tuxedo, only y initializes extents: another answer is taken as n, with a warning.
#[test]
fn initialize_answer_other_than_y_is_no() {
    let env = Env::new();
    env.with_device();
    env.c("qspc M 40002 100 2 2 2 10 '' maybe 16")
        .ok()
        .stderr_has("WARN: Initialize extents: 'maybe' is taken as n (only y answers yes)");
    let info: QueueSpaceInfo = env.json("qspl M");
    assert!(!info.params.initialize);
    env.c("qspc Y 40003 100 2 2 2 10 '' Y 16").ok().stderr_lacks("WARN");
    let info: QueueSpaceInfo = env.json("qspl Y");
    assert!(info.params.initialize);
}

/// `qspacedestroy` refuses a queue space that holds messages, persistent or not, saying how
/// many, and changes nothing; emptied queues do not block it; `-f` destroys one that holds
/// messages, and a queue space created again under the name starts empty.
#[test]
fn qspacedestroy_refuses_a_space_holding_messages() {
    use crate::app::App;
    use qm_common::message::{EnqueueCtl, Qos};
    let env = Env::new();
    env.with_device();
    let create =
        "qspc -n 8 QS 40000 100 4 2 8 100 '' n 16; qopen QS; qcr Q fifo none 0 0 100% 0% ''";
    env.c(create).ok();
    let mut app = App::connect(&env);
    app.put("Q", "persistent");
    let np = EnqueueCtl { delivery: Some(Qos::NonPersistent), ..EnqueueCtl::default() };
    app.put_with("Q", "memory", np);
    drop(app);
    crate::app::detached(&env);
    let before = (extents(&env), free(&env, 0), crate::app::qinfo(&env));
    env.c("qspds -y QS")
        .failed()
        .errors_are(&["Queue space QS holds 2 messages; use -f to destroy it anyway"]);
    assert_eq!(App::connect(&env).take_body("Q"), "persistent");
    crate::app::detached(&env);
    // A non-persistent message alone blocks it as well.
    env.c("qspds -y QS")
        .failed()
        .errors_are(&["Queue space QS holds 1 message; use -f to destroy it anyway"]);
    let after = (extents(&env), free(&env, 0));
    assert_eq!(after, (before.0.clone(), before.1.clone()), "nothing was destroyed");
    // Emptied: destroyed without -f.
    assert_eq!(App::connect(&env).take_body("Q"), "memory");
    crate::app::detached(&env);
    env.c("qspds -y QS").ok().stdout_has("Queue space QS destroyed");
    assert!(extents(&env).is_empty());

    // -f with messages in it; the new queue space of the same name holds none of them.
    env.c(create).ok();
    App::connect(&env).put("Q", "doomed");
    crate::app::detached(&env);
    env.c("qspds -f -y QS").ok().stdout_has("Queue space QS destroyed");
    assert_eq!(free(&env, 0), [free_run(35, 1965)]);
    env.c(create).ok();
    assert_eq!(crate::app::qinfo(&env).total.messages(), 0);
    env.stop_daemon();
    assert_eq!(crate::app::qinfo(&env).total.messages(), 0, "nor after a restart");
}

/// `qsize` estimates the daemon memory of a queue space of the given sizes: the same
/// figure `qspacelist` shows for a queue space created with them (with or without `-n`
/// memory), growing with each size; semaphores are always 0; it creates nothing; its
/// sizes can be prompted for; a bad size is refused naming it.
#[test]
fn qsize_estimates_what_qspacelist_shows() {
    use qm_common::qspace::SizeEstimate;
    let env = Env::new();
    env.c(&format!("crdl {} 0 5000", env.dev())).ok();
    let sizes = ["200 8 4 16 1000", "100 2 2 2 10", "400 20 30 40 5000"];
    for (n, sizes) in sizes.iter().enumerate() {
        for memory in ["", "-n 16", "-n 3000b"] {
            let est: SizeEstimate = env.json(&format!("qsize {memory} {sizes}"));
            let name = format!("S{n}{}", memory.len());
            let key = 40000 + n * 10 + memory.len();
            env.c(&format!("qspc {memory} {name} {key} {sizes} '' n 16")).ok();
            let info: QueueSpaceInfo = env.json(&format!("qspl {name}"));
            assert_eq!(est.total_bytes, info.memory_estimate, "{memory} {sizes}");
            assert_eq!(est.nonpersistent_bytes, info.nonpersistent_bytes, "{memory} {sizes}");
            assert_eq!(est.total_bytes, est.system_bytes + est.nonpersistent_bytes);
            assert_eq!(est.semaphores, 0);
        }
    }
    // Each size counts.
    let base: SizeEstimate = env.json("qsize 100 5 5 5 100");
    for more in ["100 6 5 5 100", "100 5 6 5 100", "100 5 5 6 100", "100 5 5 5 101"] {
        let bigger: SizeEstimate = env.json(&format!("qsize {more}"));
        assert!(bigger.total_bytes > base.total_bytes, "{more}: {bigger:?} vs {base:?}");
    }
    let text = env.c("qsize 100 5 5 5 100");
    text.ok().stdout_has("total memory").stdout_has(&base.total_bytes.to_string());
    // Prompted, as in a script; nothing was created by any of it.
    let vtoc = extents(&env);
    let run = env.script("qsize\n100\n5\n5\n5\n100\n");
    run.ok()
        .stdout_has("Size of queue space in disk pages: ")
        .stdout_has(&base.total_bytes.to_string());
    assert_eq!(extents(&env), vtoc);
    env.c("qsize 100 5 5 5 x").failed().stderr_has("'x' is invalid");
    env.c("qsize 0 5 5 5 100").failed().stderr_has("Size of queue space in disk pages: '0'");
}

/// A prompt whose current value is empty says `none` rather than an empty `[default=]`, and
/// an empty answer keeps it empty.
#[test]
fn an_empty_default_says_none() {
    let env = Env::new();
    env.c(&format!("crdl {} 0 300; qspc QS 40000 100 4 2 2 100 '' n 16", env.dev())).ok();
    let run = env.script("qspacechange QS\n\n\n\n\n\n\n\n");
    run.ok().stdout_has("Error queue name [default=none]: ").stdout_lacks("[default=]");
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(info.params.error_queue, "");
}
