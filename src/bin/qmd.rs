//! `qmd`: the qm daemon. Parses the command line and hands over to `qm_daemon::server`.

use clap::Parser;

/// mimalloc: the daemon allocates and frees a buffer or two per message on several threads,
/// where glibc's allocator spent a tenth of the time at 64 clients (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let options = qm_daemon::options::Options::parse();
    std::process::exit(qm_daemon::server::main(options));
}
