//! Fencing: the generation number that keeps a daemon which lost its device from writing.
//!
//! The device's lock file says who serves the device: one line, `generation G pid P`. A qmd
//! that starts serving (at once, or as a standby taking over) raises G by one, writes its
//! pid, syncs, and keeps its own G. Before the first write of every commit (the first write
//! to a file since its last sync: a journal record, a redb commit of any file of the device)
//! it reads the line again, and when G is no longer its own it stops at once, writing
//! nothing more: another qmd took the device over, or `qmd --fence` said it must stop.
//!
//! The lock alone would do on one machine: a qmd that holds it cannot be displaced, even
//! when paused. It does not do where the lock lives on a shared filesystem that may give it
//! away (an NFS lease that expired while the node was cut off or paused), nor under a
//! cluster manager that starts the daemon elsewhere believing this node dead. The check
//! narrows the window to the time between a read and a write; closing it is the cluster's
//! fencing (docs/ha.md).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The exit status of a daemon that finds itself fenced.
pub const FENCED_EXIT: i32 = 75;

pub use qm_common::lockfile::Holder;
use qm_common::lockfile::LINE_LEN;

/// Reads what the lock file `file` says.
pub fn read(file: &File) -> std::io::Result<Holder> {
    Holder::read(file)
}

/// Raises the generation in the lock file `file` and names `pid` as its holder; returns
/// the new line. Synced before it returns: a generation that a crash could take back would
/// be given out twice.
pub fn advance(file: &File, pid: u32) -> std::io::Result<Holder> {
    let holder = Holder { generation: read(file)?.generation + 1, pid };
    file.write_all_at(&holder.line(), 0)?;
    file.set_len(LINE_LEN as u64)?;
    file.sync_data()?;
    Ok(holder)
}

/// One device served by this process, with the generation it holds.
#[derive(Debug)]
struct Held {
    device: PathBuf,
    file: File,
    generation: u64,
}

/// The devices this process serves (one for `qmd`; tests and examples may run more).
static HELD: RwLock<Vec<Arc<Held>>> = RwLock::new(Vec::new());

/// The fence of one device, kept while the daemon serves it; dropping it ends the checks.
#[derive(Debug)]
pub struct Fence(Arc<Held>);

impl Fence {
    /// Takes generation `holder` of `device` (lock file `lock`, held by us) as ours: from now
    /// on every commit checks it.
    pub fn hold(device: &Path, lock: &File, holder: Holder) -> std::io::Result<Fence> {
        let held = Arc::new(Held {
            device: device.to_path_buf(),
            file: lock.try_clone()?,
            generation: holder.generation,
        });
        HELD.write().unwrap_or_else(|p| p.into_inner()).push(held.clone());
        Ok(Fence(held))
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        HELD.write().unwrap_or_else(|p| p.into_inner()).retain(|h| !Arc::ptr_eq(h, &self.0));
    }
}

/// Called before the first write of a commit: stops the process, before anything is
/// written, when a device it serves has a generation other than its own. A lock file that
/// cannot be read stops the writes too (the commit fails), since nothing says they are
/// still ours.
pub fn check() -> std::io::Result<()> {
    let held = HELD.read().unwrap_or_else(|p| p.into_inner());
    for device in held.iter() {
        let now = read(&device.file)?;
        if now.generation != device.generation {
            fenced(device, now);
        }
    }
    Ok(())
}

/// Says why, where it will be read, and stops without another write.
fn fenced(device: &Held, now: Holder) -> ! {
    let why = format!(
        "fenced: the generation of {} is now {} (held by pid {}), not ours ({}): another qmd \
         took the device over, or qmd --fence was run; stopping at once without writing",
        device.device.display(),
        now.generation,
        now.pid,
        device.generation
    );
    tracing::error!("{why}");
    eprintln!("qmd: {why}");
    std::process::exit(FENCED_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.path().join("d.lock"))
            .unwrap();
        assert_eq!(advance(&file, 7).unwrap(), Holder { generation: 1, pid: 7 });
        assert_eq!(advance(&file, 8).unwrap(), Holder { generation: 2, pid: 8 });
        assert_eq!(read(&file).unwrap(), Holder { generation: 2, pid: 8 });
    }

    /// Set in the copy of the test binary that [`a_length_change_checks_the_fence_first`]
    /// starts: the directory to work in.
    const CHILD: &str = "QM_TEST_FENCE_CHILD";

    /// Growing or cutting a file is a write like any other: a daemon whose generation was
    /// raised stops before it changes a file's length (with the fenced exit status), even
    /// when that is the first thing it does since its last sync. Checked in a child
    /// process, since the check ends the process.
    #[test]
    fn a_length_change_checks_the_fence_first() {
        use redb::StorageBackend;
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = std::path::PathBuf::from(dir);
            let lock = File::options().read(true).write(true).open(dir.join("d.lock")).unwrap();
            let ours = advance(&lock, std::process::id()).unwrap();
            let _fence = Fence::hold(&dir.join("d"), &lock, ours).unwrap();
            let data = File::options().read(true).write(true).open(dir.join("d")).unwrap();
            let backend = crate::storage::fault::backend(data).unwrap();
            backend.set_len(4096).unwrap();
            // Ours still: the length changed. Then another qmd takes the device.
            advance(&lock, 1).unwrap();
            let _ = backend.set_len(8192);
            // Not reached: the check ended the process.
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["d.lock", "d"] {
            File::create(dir.path().join(name)).unwrap();
        }
        let test = "storage::fence::tests::a_length_change_checks_the_fence_first";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FENCED_EXIT), "{said}");
        assert!(said.contains("fenced: the generation of"), "{said}");
        let len = std::fs::metadata(dir.path().join("d")).unwrap().len();
        assert_eq!(len, 4096, "the fenced process changed the length: {len}");
    }
}
