//! Quickstart: a daemon on a temporary device and a qmadmin session against it.
//!
//! Run with `cargo run --release --example quickstart`. The daemon and the shell run in
//! this process (the same code as `qmd` and `qmadmin`) and talk over a real control
//! socket; the device is a real redb file in a temporary directory, removed at the end.

use qm_shell::input::StreamInput;
use qm_shell::options::Options;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

fn session(device: &str) -> String {
    format!(
        "echo on
# Lay out storage: entry 0 is the device itself, 2000 pages of 1 KiB.
crdl {device} 0 2000
# A queue space of 200 pages for up to 8 queues, with an error queue.
qspacecreate DEMO 40000 200 8 4 8 1000 ERRQ n 16
qopen DEMO
qcreate ERRQ fifo none 0 0 100% 0% \"\"
qcreate ORDERS priority,fifo top,msgid 3 10 80% 10% \"echo orders filling up\"
qcreate -d nonpersist -e +3600 NOTICES fifo none 0 0 100m 0m \"\"
verbose on
lidl
qspacelist DEMO
qinfo
livtoc
ipcs DEMO
daemon stop
"
    )
}

fn main() {
    let dir =
        tempfile::Builder::new().prefix("qm-quickstart-").tempdir().expect("temporary directory");
    let device: PathBuf = dir.path().join("QUE");
    let socket = qm_common::paths::socket_path(&device);
    println!("== qm quickstart: device {} ==\n", device.display());

    let (d, s) = (device.clone(), socket.clone());
    let daemon = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(qm_daemon::server::serve(d, s))
    });
    while !socket.exists() && !daemon.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
    }

    let options = Options {
        device: Some(device.clone()),
        commands: None,
        no_start: true,
        socket: None,
        json: false,
        connect: None,
        connect_file: None,
    };
    let input = StreamInput::new(Cursor::new(session(&device.display().to_string())), false);
    let status = qm_shell::run(options, Box::new(input), Default::default());

    match daemon.join() {
        Ok(Ok(())) => println!("\n== daemon stopped; qmadmin exit status {status} =="),
        Ok(Err(e)) => println!("\n== daemon failed: {e} =="),
        Err(_) => println!("\n== daemon thread panicked =="),
    }
    // `exit` runs no destructors: the temporary directory goes first.
    drop(dir);
    std::process::exit(status);
}
