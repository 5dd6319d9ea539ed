//! How much disk a device file takes next to the pages of its queue space.
//!
//! Run with `cargo run --release --example disk_usage` (options: `--pages N`, the queue
//! space's size in pages, 25,600 by default, i.e. 100 MiB of 4 KiB pages; `--dir DIR`, where
//! the devices are made, the system's temporary directory by default). Not a timed benchmark:
//! it prints sizes.
//!
//! For each message size (small, one page, several pages, and the largest body) and with
//! and without `Initialize extents`, it makes a device holding one queue space of N pages,
//! fills that space with persistent messages until qm refuses the next one (the space is
//! full, QMENOSPACE), empties it and fills it again, and prints the disk the device file
//! and its body segments really take (allocated blocks, `st_blocks`) and their apparent
//! size, each as a multiple
//! of the queue space's pages, and how much the filesystem's use grew in all (the file plus
//! the room qmd holds beside it, see `daemon/src/storage/space.rs`; exact only on a
//! filesystem nothing else writes to, e.g. a tmpfs of its own given with `--dir`).

use qm_common::Diagnostic;
use qm_common::client::Client;
use qm_common::message::{BODY_MAX, DequeueCtl, EnqueueCtl};
use qm_common::protocol::ClientKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PAGE: u64 = qm_common::device::DEFAULT_PAGE_SIZE as u64;
const QSPACE: &str = "DU";
const QUEUE: &str = "Q";
const CLIENTS: usize = 8;

struct Daemon {
    socket: PathBuf,
    device: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(device: &Path) -> Daemon {
        let socket = qm_common::paths::socket_path(device);
        let (d, s) = (device.to_path_buf(), socket.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            if let Err(e) = rt.block_on(qm_daemon::server::serve(d, s)) {
                eprintln!("daemon: {e}");
            }
        });
        while !socket.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { socket, device: device.to_path_buf(), thread: Some(thread) }
    }

    fn admin(&self, commands: &str) {
        let options = qm_shell::options::Options::script(&self.device, &self.socket, commands);
        let input = qm_shell::input::StreamInput::new(std::io::Cursor::new(String::new()), true);
        let status = qm_shell::run(options, Box::new(input), Default::default());
        assert_eq!(status, 0, "admin: {commands}");
    }

    fn stop(mut self) {
        self.admin("daemon stop");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Enqueues `size`-byte bodies from [`CLIENTS`] clients until the queue space is full;
/// returns how many were stored.
async fn fill(socket: &Path, size: usize) -> u64 {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut c =
            Client::connect(socket, "disk_usage", ClientKind::Application).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let body = vec![b'm'; size];
            let mut stored = 0u64;
            loop {
                match c.enqueue(QSPACE, QUEUE, &body, &EnqueueCtl::default()).await {
                    Ok(_) => stored += 1,
                    Err(e) if e.diagnostic == Diagnostic::NoSpace => return stored,
                    Err(e) => panic!("enqueue: {e}"),
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total
}

/// Dequeues every message.
async fn drain(socket: &Path) {
    let mut c =
        Client::connect(socket, "disk_usage", ClientKind::Application).await.expect("connect");
    loop {
        match c.dequeue(QSPACE, QUEUE, &DequeueCtl::default()).await {
            Ok(_) => {}
            Err(e) if e.diagnostic == Diagnostic::NoMsg => return,
            Err(e) => panic!("dequeue: {e}"),
        }
    }
}

/// Apparent size and allocated bytes of a redb file and its body segments
/// (`FILE.bodies.N`, beside it), together.
fn sizes(path: &Path) -> (u64, u64) {
    let prefix = format!("{}.bodies.", path.file_name().expect("a file").to_string_lossy());
    let dir = path.parent().expect("a directory");
    let segments = std::fs::read_dir(dir)
        .expect("the device's directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path());
    std::iter::once(path.to_path_buf()).chain(segments).fold((0, 0), |(len, blocks), file| {
        let meta = std::fs::metadata(&file).expect("device file");
        (len + meta.len(), blocks + meta.blocks() * 512)
    })
}

/// Bytes in use on the filesystem holding `dir`.
fn used(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    // Safe: a valid C string, and a zeroed struct statvfs for the call to fill.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut vfs) }, 0, "statvfs {}", dir.display());
    (vfs.f_blocks - vfs.f_bfree) as u64 * vfs.f_frsize as u64
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

struct Case {
    label: &'static str,
    body: usize,
}

fn measure(dir: &Path, pages: u64, case: &Case, initialize: bool) {
    let work = tempfile::Builder::new().prefix("qm-du-").tempdir_in(dir).expect("temp dir");
    let device = work.path().join("QUE");
    let used_before = used(dir);
    let daemon = Daemon::start(&device);
    let init = if initialize { "y" } else { "n" };
    daemon.admin(&format!(
        "crdl {} 0 {}; qspc {QSPACE} 40000 {pages} 4 4 {} 10000000 '' {init}; qopen {QSPACE}; \
         qcreate {QUEUE} fifo none 0 0 100% 0% ''",
        device.display(),
        pages + 200,
        CLIENTS * 2,
    ));
    let space = pages * PAGE;
    let (created, created_blocks) = sizes(&device);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let first = rt.block_on(fill(&daemon.socket, case.body));
    let (full, full_blocks) = sizes(&device);
    let fs_used = used(dir).saturating_sub(used_before);
    rt.block_on(drain(&daemon.socket));
    let again = rt.block_on(fill(&daemon.socket, case.body));
    let (refill, refill_blocks) = sizes(&device);
    daemon.stop();
    let ratio = |b: u64| format!("{:.2}", b as f64 / space as f64);
    let _ = created;
    println!(
        "| {} | {init} | {first}/{again} | {} | {} ({}) | {} ({}) | {} ({}) | {} ({}) |",
        case.label,
        mib(created_blocks),
        mib(full_blocks),
        ratio(full_blocks),
        mib(refill_blocks),
        ratio(refill_blocks),
        mib(full.max(refill)),
        ratio(full.max(refill)),
        mib(fs_used),
        ratio(fs_used),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let pages: u64 = value("--pages").map_or(25_600, |v| v.parse().expect("--pages N"));
    let dir = value("--dir").map_or_else(std::env::temp_dir, PathBuf::from);
    let overhead = qm_common::device::MESSAGE_OVERHEAD as usize;
    let cases = [
        Case { label: "100 B", body: 100 },
        Case { label: "1 page", body: PAGE as usize - overhead },
        Case { label: "2 pages", body: 2 * PAGE as usize - overhead },
        Case { label: "4 pages", body: 4 * PAGE as usize - overhead },
        Case { label: "5 pages", body: 5 * PAGE as usize - overhead },
        Case { label: "17 pages", body: 17 * PAGE as usize - overhead },
        Case { label: "64 pages", body: 64 * PAGE as usize - overhead },
        Case { label: "4 MiB", body: BODY_MAX },
    ];
    println!(
        "queue space of {pages} pages of {PAGE} bytes ({} MiB) in {}",
        mib(pages * PAGE),
        dir.display()
    );
    println!(
        "| body | init | stored (first/second fill) | file MiB after creation | file MiB \
         full (× pages) | file MiB refilled (× pages) | apparent MiB (× pages) | filesystem \
         MiB used, full (× pages) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for case in &cases {
        for initialize in [false, true] {
            measure(&dir, pages, case, initialize);
        }
    }
}
