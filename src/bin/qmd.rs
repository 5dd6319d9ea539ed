//! `qmd`: the qm daemon. Parses the command line and hands over to `qm_daemon::server`.

use clap::Parser;

fn main() {
    let options = qm_daemon::options::Options::parse();
    std::process::exit(qm_daemon::server::main(options));
}
