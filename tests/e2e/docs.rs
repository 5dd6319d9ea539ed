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

/// The README's demo (`cargo run --release --example quickstart`) runs its session to the
/// end and leaves nothing in the temporary directory it used.
#[test]
fn the_readme_demo_runs_and_cleans_up() {
    let env = Env::new();
    // Cargo builds the examples beside the test binaries, in `<profile>/examples`.
    let exe = std::env::current_exe().unwrap();
    let demo = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples/quickstart");
    assert!(demo.exists(), "{} was not built", demo.display());
    let tmp = env.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut cmd = Command::new(&demo);
    cmd.env("TMPDIR", &tmp);
    run_limited(cmd, Duration::from_secs(120))
        .ok()
        .stdout_has("Queue space DEMO created")
        .stdout_has("qmadmin exit status 0");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}
