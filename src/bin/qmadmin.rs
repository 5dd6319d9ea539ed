//! `qmadmin`: the qm administration shell. Parses the command line and hands over to
//! `qm_shell`.

use clap::Parser;

fn main() {
    let options = qm_shell::options::Options::parse();
    std::process::exit(qm_shell::main(options));
}
