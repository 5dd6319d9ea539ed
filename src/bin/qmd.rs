//! `qmd`: the qm daemon. Parses the command line and hands over to `qm_daemon::server`.

use clap::Parser;

/// mimalloc: the daemon allocates and frees a buffer or two per message on several threads,
/// where glibc's allocator spent a tenth of the time at 64 clients (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (number 15 in both its v2 and v3 headers): memory
/// freed goes back to the system at once, not at a later allocation, which an idle daemon
/// may never make (a test holds qmd to giving large request buffers back).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // SAFETY: sets a process-wide option of the allocator before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    let options = qm_daemon::options::Options::parse();
    std::process::exit(qm_daemon::server::main(options));
}
