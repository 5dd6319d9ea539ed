//! An echo worker in Rust: started once by qmd for a `mode = "worker"` service, it answers
//! every request with its body, using the helper `qm_common::worker::serve`.
//!
//! ```toml
//! [service.ECHO]
//! command = "/path/to/target/release/examples/echo_worker"
//! mode = "worker"
//! ```
//!
//! Build with `cargo build --release --example echo_worker`.

use qm_common::worker::{Reply, serve};

fn main() {
    // Returns when qmd closes our input (it stops or replaces us).
    if let Err(e) = serve(|request| Reply::success(request.body)) {
        eprintln!("echo_worker: {e}");
        std::process::exit(1);
    }
}
