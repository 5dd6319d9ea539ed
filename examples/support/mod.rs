//! What the examples share: a daemon in this process on a temporary device, a qmadmin on
//! PATH for threshold commands (this very binary, started with `--as-qmadmin`), and
//! running qmadmin commands.

#![allow(dead_code)]

use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs as qmadmin when the example binary is started through the wrapper; returns
/// whether it did (the caller then exits).
pub fn act_as_qmadmin() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-qmadmin") {
        args.remove(1);
        let options = qm_shell::options::Options::parse_from(args);
        std::process::exit(qm_shell::main(options));
    }
}

/// A temporary directory with a device, a config file, and a daemon serving it.
pub struct Demo {
    pub dir: tempfile::TempDir,
    pub device: PathBuf,
}

impl Demo {
    /// Writes `config` next to the device, puts a `qmadmin` on PATH, starts the daemon.
    pub fn start(prefix: &str, config: &str) -> Demo {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temporary directory");
        let device = dir.path().join("QUE");
        std::fs::write(qm_common::paths::config_path(&device), config).expect("config");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let wrapper = bin.join("qmadmin");
        let exe = std::env::current_exe().expect("own path");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec '{}' --as-qmadmin \"$@\"\n", exe.display()),
        )
        .expect("wrapper");
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        // Safe: set before any other thread starts.
        unsafe { std::env::set_var("PATH", path) };
        let socket = qm_common::paths::socket_path(&device);
        let (d, s) = (device.clone(), socket.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            if let Err(e) = rt.block_on(qm_daemon::server::serve(d, s)) {
                eprintln!("daemon: {e}");
            }
        });
        while !socket.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Demo { dir, device }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs qmadmin commands as one session; returns what they printed.
    pub fn qmadmin(&self, commands: &str) -> String {
        let out = std::process::Command::new(self.path("bin/qmadmin"))
            .arg("--no-start")
            .arg("-c")
            .arg(commands)
            .arg(&self.device)
            .output()
            .expect("qmadmin");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }

    /// A queue's message count from `qinfo --json`.
    pub fn depth(&self, qspace: &str, queue: &str) -> u64 {
        let text = self.qmadmin(&format!("qopen {qspace}; qinfo --json {queue}"));
        let json = text.find('{').map(|i| &text[i..]).unwrap_or("{}");
        let listing: Result<qm_common::queue::QueueListing, _> = serde_json::from_str(json);
        listing.ok().and_then(|l| l.queues.first().map(|q| q.usage.messages())).unwrap_or(0)
    }

    pub fn stop(&self) {
        self.qmadmin("daemon stop");
    }
}

/// Prints a heading.
pub fn step(text: &str) {
    println!("\n== {text}");
}

pub fn device_text(p: &Path) -> String {
    p.display().to_string()
}
