//! `qmadmin`: the qm administration shell. Parses the command line and hands over to
//! `qm_shell`.

use clap::Parser;

fn main() {
    // Like any Unix filter, qmadmin ends quietly when its reader goes away (`qmadmin ... |
    // head`) instead of failing on every later write.
    // SAFETY: restoring the default action of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let options = qm_shell::options::Options::parse();
    std::process::exit(qm_shell::main(options));
}
