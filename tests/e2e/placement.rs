//! Queue spaces on another file: an entry on another disk holds the space when entry 0 is
//! too small; that file is a redb database of its own; entries holding extents cannot be
//! destroyed; `chdl` follows a moved file; a missing file is reported, never recreated.

use crate::support::Env;
use qm_common::device::{DeviceListing, VtocEntry};
use qm_common::qspace::QueueSpaceInfo;
use qm_common::queue::QueueListing;

/// Entry 0 of 100 pages (65 free) and entry 1 of 600 pages on `FS`; queue space QS of 200
/// pages with queues A and B. Returns the other file's path.
fn on_other_file(env: &Env) -> String {
    let fs = env.path("FS").display().to_string();
    env.c(&format!("crdl {} 0 100; crdl {fs} 0 600", env.dev())).ok();
    env.c("qspc QS 40000 200 4 2 2 100 \"\" n 16").ok();
    env.c("qopen QS; qcr A fifo none 0 0 100% 0% \"\"; qcr B lifo none 0 0 100% 0% \"\"").ok();
    fs
}

fn queue_names(env: &Env) -> Vec<String> {
    let listing: QueueListing = env.json("qopen QS; qinfo");
    listing.queues.into_iter().map(|q| q.def.name).collect()
}

/// The space goes to the other file; that file exists and is a redb database; `lidl`
/// shows where its pages went.
#[test]
fn space_lives_in_the_other_file() {
    let env = Env::new();
    let fs = on_other_file(&env);
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(info.file, fs, "the queue space lives in the other file");
    assert_eq!(info.extents.len(), 1);
    assert_eq!((info.extents[0].device, info.extents[0].offset), (1, 0));
    let bytes = std::fs::read(&fs).expect("the other file exists");
    assert!(bytes.starts_with(b"redb"), "the other file is a redb database");
    let listing: DeviceListing = env.json("lidl");
    let free: Vec<u64> =
        listing.entries.iter().map(|e| e.free.iter().map(|r| r.size).sum()).collect();
    assert_eq!(free, [65, 400], "entry 0 untouched, 200 pages taken from entry 1");
    assert_eq!(queue_names(&env), ["A", "B"]);
    let vtoc: Vec<VtocEntry> = env.json("livtoc");
    assert_eq!(vtoc.iter().filter(|t| t.device == 1).count(), 1);
}

/// `dsdl` refuses while an entry holds extents (confirmed or not), and works once the
/// space is gone; the other file is removed with its last entry.
#[test]
fn dsdl_refuses_while_extents_remain() {
    let env = Env::new();
    let fs = on_other_file(&env);
    env.c("dsdl -y 1")
        .failed()
        .stderr_has("Device list entry 1 holds extents of queue space QS; destroy them first");
    env.script("dsdl 1\ny\n").failed().stderr_has("holds extents of queue space QS");
    env.c("dsdl -y 0")
        .failed()
        .stderr_has("Device list entry 0 can be destroyed only after every other entry");
    assert_eq!(env.json::<DeviceListing>("lidl").entries.len(), 2);
    assert_eq!(queue_names(&env), ["A", "B"]);
    env.c("qspds -y QS; dsdl -y 1").ok().stdout_has("Device list entry 1 (");
    assert!(!std::path::Path::new(&fs).exists(), "the other file went with its last entry");
    env.c("dsdl -y 0").ok();
    assert!(!env.device.exists());
    env.c("lidl").failed().stderr_has("Device list not initialized");
}

/// `chdl`: entry 0 must keep naming the device; an entry with extents may not be renamed
/// to a file that is not there; after moving the file, renaming the entry makes the space
/// usable again with its queues.
#[test]
fn chdl_follows_a_moved_file() {
    let env = Env::new();
    let fs = on_other_file(&env);
    let before: DeviceListing = env.json("lidl");
    let moved = env.path("FS2").display().to_string();
    env.c(&format!("chdl 0 {moved}")).failed().stderr_has(&format!(
        "New device name: '{moved}' is invalid; entry 0 must name the device itself ({})",
        env.dev()
    ));
    env.c(&format!("chdl 1 {moved}")).failed().stderr_has(&format!(
        "{moved} does not exist; entry 1 holds queue space QS whose file must be there"
    ));
    env.c("chdl 1 relative")
        .failed()
        .stderr_has("Device name: 'relative' is invalid; it must be an absolute path");
    assert_eq!(env.json::<DeviceListing>("lidl"), before, "refused renames change nothing");

    std::fs::rename(&fs, &moved).unwrap();
    // Without chdl the space's file is missing: reported, and not created again empty.
    env.c("qopen QS; qinfo").failed().stderr_has(&format!("{fs} is missing"));
    assert!(!std::path::Path::new(&fs).exists(), "a missing file is never recreated");
    // chdl prints the current name and prompts for the new one.
    env.script(&format!("chdl 1\n{moved}\n"))
        .ok()
        .stdout_has(&format!("Current device name: {fs}"))
        .stdout_has(&format!("Device list entry 1 renamed to {moved}"));
    let info: QueueSpaceInfo = env.json("qspl QS");
    assert_eq!(info.file, moved);
    assert_eq!(queue_names(&env), ["A", "B"], "the queues moved with the file");
    env.c("qopen QS; qcr C fifo none 0 0 100% 0% \"\"").ok();
    assert_eq!(queue_names(&env), ["A", "B", "C"]);
    assert!(!std::path::Path::new(&fs).exists());
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries[1].entry.name, moved);

    // Renaming an entry that holds nothing needs no file there.
    let other = env.path("EMPTY").display().to_string();
    env.c(&format!("crdl {other} 0 50; chdl 2 {}", env.path("EMPTY2").display())).ok();
}

/// A daemon restarted after the other file moved sees it missing, and `chdl` repairs it.
#[test]
fn moved_file_after_restart() {
    let env = Env::new();
    let fs = on_other_file(&env);
    env.stop_daemon();
    let moved = env.path("FS2").display().to_string();
    std::fs::rename(&fs, &moved).unwrap();
    env.c("qspl QS").failed().stderr_has(&format!("{fs} is missing"));
    assert!(!std::path::Path::new(&fs).exists());
    env.c(&format!("chdl 1 {moved}")).ok();
    assert_eq!(queue_names(&env), ["A", "B"]);
}

/// A queue space whose file has two entries (the second added by `qaddext`): after moving
/// the file, one `chdl` renames both entries, says so, and the space works again.
#[test]
fn chdl_moves_every_entry_on_the_file() {
    let env = Env::new();
    let fs = on_other_file(&env);
    // Entry 2 is a second page range on the same file; the first has only 400 pages left.
    env.c(&format!("crdl {fs} 600 500; qaddext QS 480")).ok();
    let info: QueueSpaceInfo = env.json("qspl QS");
    let devices: Vec<u8> = info.extents.iter().map(|t| t.device).collect();
    assert_eq!(devices, [1, 2], "the space has extents on both entries of its file");
    env.stop_daemon();
    let moved = env.path("FS2").display().to_string();
    std::fs::rename(&fs, &moved).unwrap();
    env.c(&format!("chdl 2 {moved}"))
        .ok()
        .stdout_has(&format!("Device list entries 1, 2 (all on {fs}, which holds queue space QS)"));
    let listing: DeviceListing = env.json("lidl");
    let names: Vec<&str> = listing.entries.iter().map(|e| e.entry.name.as_str()).collect();
    assert_eq!(names, [env.dev().as_str(), moved.as_str(), moved.as_str()]);
    assert_eq!(queue_names(&env), ["A", "B"], "the space is usable from its new place");
    // An entry on a file without queue spaces is renamed alone.
    let a = env.path("A").display().to_string();
    env.c(&format!("crdl {a} 0 50; crdl {a} 50 50; chdl 3 {}", env.path("B").display()))
        .ok()
        .stdout_has("Device list entry 3 renamed to");
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.entries[4].entry.name, a, "entry 4 stays on its file");
    // A rename onto pages another entry of the new file holds is refused, naming both.
    let c = env.path("C").display().to_string();
    env.c(&format!("crdl {c} 0 100; chdl 4 {c}")).failed().stderr_has(&format!(
        "New device name: '{c}' is invalid; entry 4 (pages 50..100) would overlap entry 5 on that file (pages 0..100)"
    ));
}
