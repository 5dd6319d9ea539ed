//! `qmd`: the qm daemon. Parses the command line and hands over to `qm_daemon::server`.

use clap::Parser;

/// mimalloc: the daemon allocates and frees a buffer or two per message on several threads,
/// where glibc's allocator spent a tenth of the time at 64 clients (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (number 15 in both its v2 and v3 headers): memory
/// freed and not used again for this many milliseconds goes back to the system. Under load
/// the daemon frees and takes again tens of MiB at every checkpoint; given back after
/// 100 ms, as before, the kernel zeroed those pages again as they were touched (5 % of
/// qmd's processor time at 64 clients) and unmapping them stalled whichever thread
/// allocated next, the writer included: the slowest pairs took 20–35 ms (BENCHMARKS.md).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

/// How often the collector looks. When no commit was made since it last looked, the daemon
/// is idle, and when its resident memory is above [`RESIDENT_HIGH`], memory counts: it then
/// gives back at once everything freed, whatever its delay (mimalloc purges at
/// allocations, which an idle daemon may never make, and a test holds qmd to giving large
/// request buffers back).
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Resident memory above which what is freed goes back every second, under load too: the
/// fill of a deep queue, with two regions' messages in memory, otherwise kept up to
/// 485 MiB resident where issue 11 allows 512 (BENCHMARKS.md).
const RESIDENT_HIGH: u64 = 256 << 20;

/// The collector: gives memory back as [`COLLECT_EVERY`] says.
fn collect() {
    let commits = || qm_daemon::engine::writer::COMMITS.load(std::sync::atomic::Ordering::Relaxed);
    let mut seen = commits();
    loop {
        std::thread::sleep(COLLECT_EVERY);
        let now = commits();
        let idle = std::mem::replace(&mut seen, now) == now;
        let force = idle || resident().is_some_and(|bytes| bytes > RESIDENT_HIGH);
        // SAFETY: asks the allocator to give back what it may; no memory is touched.
        unsafe { libmimalloc_sys::mi_collect(force) };
    }
}

/// This process's resident memory in bytes (`VmRSS`), if the system says.
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    // SAFETY: sets a process-wide option of the allocator before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    let _ = std::thread::Builder::new().name("qm-collect".into()).spawn(collect);
    let options = qm_daemon::options::Options::parse();
    if options.verify {
        std::process::exit(verify(&options));
    }
    if options.fence {
        std::process::exit(fence(&options));
    }
    if options.end_orphans {
        std::process::exit(end_orphans(&options));
    }
    std::process::exit(qm_daemon::server::main(options));
}

/// `qmd --verify`: the report as qmadmin's qverify prints it.
fn verify(options: &qm_daemon::options::Options) -> i32 {
    let device = options.device.clone().or_else(|| std::env::var_os("QMCONFIG").map(Into::into));
    let Some(device) = device else {
        eprintln!("qmd: --verify needs a device: give its path, or set QMCONFIG");
        return 2;
    };
    match qm_daemon::verify::offline(&device) {
        Ok(report) => {
            print!("{}", qm_shell::render::verify(&report));
            i32::from(!report.problems.is_empty())
        }
        Err(e) => {
            eprintln!("qmd: {e}");
            2
        }
    }
}

/// `qmd --end-orphans`: ends what a killed qmd of the device left running here.
fn end_orphans(options: &qm_daemon::options::Options) -> i32 {
    said(options.device_path().and_then(|d| qm_daemon::server::end_orphans_only(&d)))
}

/// Prints what a one-off action (`--fence`, `--end-orphans`) says; its exit status: 0 when
/// it was done, 2 when it was refused or failed.
fn said(result: Result<String, String>) -> i32 {
    match result {
        Ok(line) => {
            println!("qmd: {line}");
            0
        }
        Err(e) => {
            eprintln!("qmd: {e}");
            2
        }
    }
}

/// `qmd --fence`: raises the device's fencing generation.
fn fence(options: &qm_daemon::options::Options) -> i32 {
    said(options.device_path().and_then(|d| qm_daemon::server::fence_only(&d)))
}
