//! Manual pages and shell completions: `qm-docs install PREFIX` writes them from the
//! programs' own command-line definitions.

use crate::support::{Env, run_limited};
use std::process::Command;
use std::time::Duration;

const QM_DOCS: &str = env!("CARGO_BIN_EXE_qm-docs");

/// Every page and script lands where man and the shells look, and names the options the
/// programs really have.
#[test]
fn install_writes_man_pages_and_completions() {
    let env = Env::new();
    let prefix = env.path("prefix");
    let mut cmd = Command::new(QM_DOCS);
    cmd.arg("install").arg(&prefix);
    run_limited(cmd, Duration::from_secs(60)).ok();
    let read = |path: &str| {
        std::fs::read_to_string(prefix.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let qmd = read("share/man/man1/qmd.1");
    assert!(qmd.contains(".TH qmd 1") && qmd.contains("\\-\\-socket\\-mode"), "{qmd}");
    assert!(qmd.contains("53000"), "the man page lacks the examples");
    let qmadmin = read("share/man/man1/qmadmin.1");
    assert!(qmadmin.contains("\\-\\-connect\\-file"), "{qmadmin}");
    // Every command as `help` explains it: usage, options and arguments, example.
    assert!(qmadmin.contains(".SH COMMANDS"), "{qmadmin}");
    for spec in qm_shell::catalog::COMMANDS {
        let roff = spec.example.replace('-', "\\-").replace('\'', "\\*(Aq");
        let example = format!("\\fB{roff}\\fR");
        assert!(qmadmin.contains(&example), "the man page lacks {example}");
    }
    assert!(qmadmin.contains("\\fB\\-n nonpersistent_msg_memory[b,B]\\fR\nmemory for non"));
    for (path, option) in [
        ("share/bash-completion/completions/qmadmin", "--connect-file"),
        ("share/bash-completion/completions/qmd", "--socket-mode"),
        ("share/zsh/site-functions/_qmadmin", "--connect-file"),
        ("share/fish/vendor_completions.d/qmd.fish", "socket-mode"),
    ] {
        assert!(read(path).contains(option), "{path} lacks {option}");
    }
    // A prefix that cannot be written is refused with the path.
    std::fs::write(env.path("file"), "").unwrap();
    let mut cmd = Command::new(QM_DOCS);
    cmd.arg("install").arg(env.path("file"));
    run_limited(cmd, Duration::from_secs(60)).failed().stderr_has("cannot write");
}
