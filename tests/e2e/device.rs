//! The universal device list: entries, free-space maps, the VTOC, renames, other files.

use crate::support::Env;
use qm_common::device::{DeviceListing, FreeRun, VtocEntry};

#[test]
fn first_entry_must_be_the_device() {
    let env = Env::new();
    let other = env.path("other");
    env.c(&format!("crdl {} 0 100", other.display()))
        .failed()
        .stderr_has("the first entry must be the device itself");
    env.c(&format!("crdl {} 5 100", env.dev())).failed().stderr_has("must start at offset 0");
    env.c(&format!("crdl {} 0 20", env.dev())).failed().stderr_has("needs at least 35 pages");
    env.c("crdl relative/path 0 100").failed().stderr_has("absolute path");
    assert!(!env.device.exists(), "refused commands create nothing");
    env.c("lidl").failed().stderr_has("Device list not initialized");
}

#[test]
fn entries_free_maps_and_vtoc() {
    let env = Env::new();
    let dev = env.dev();
    let other = env.path("FS").display().to_string();
    env.c(&format!("crdl {dev} 0 1000; crdl {other} 0 600; crdl {dev} 2000 500")).ok();
    // Overlap on the same file is refused; a gap is fine.
    env.c(&format!("crdl {dev} 2400 200")).failed().stderr_has("overlap entry 2");
    env.c(&format!("crdl {other} 100 10")).failed().stderr_has("overlap entry 1");
    let listing: DeviceListing = env.json("lidl");
    assert_eq!(listing.page_size, 1024);
    let free: Vec<Vec<FreeRun>> = listing.entries.iter().map(|e| e.free.clone()).collect();
    assert_eq!(free[0], [FreeRun { addr: 35, size: 965 }]);
    assert_eq!(free[1], [FreeRun { addr: 0, size: 600 }]);
    assert_eq!(free[2], [FreeRun { addr: 2000, size: 500 }]);
    assert!(env.path("FS").exists(), "an entry on another file puts it under qm");
    let vtoc: Vec<VtocEntry> = env.json("livtoc");
    assert_eq!(vtoc.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["VTOC", "UDL"]);
    // Verbose lidl shows the free-space maps.
    env.c("v; lidl 1")
        .ok()
        .stdout_has("universal device index 1: free space map (1 entry used, 47 available)");
}
