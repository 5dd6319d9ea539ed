//! The disk's own limit for durable queueing, as issue 11 defines it: the p50 latency of a
//! 1 KiB write + fdatasync to a preallocated file, and the single-client rate that two such
//! writes per enqueue+dequeue pair allow. Append + fsync (a growing file) is measured too,
//! for reference.
//!
//! Run with `cargo run --release --example disk_limit [-- DIR [SECS]]`: DIR is where the test
//! files go (default: a temporary directory under /tmp, the file system the benchmarks use),
//! SECS how long each kind of write is timed (default 2). `bench/peers.sh` runs it next to
//! the servers it compares.

mod disk;

use disk::{Latencies, RECORD, overwrite_fdatasync, pairs_per_second, time};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

fn append_fsync(dir: &Path, secs: f64) -> Latencies {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("appended"))
        .expect("create the appended file");
    let block = [b'x'; RECORD];
    time(secs, |_| {
        file.write_all(&block).expect("append");
        file.sync_all().expect("fsync");
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let temporary;
    let dir = match args.first() {
        Some(d) => Path::new(d),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("qm-disk-limit-")
                .tempdir_in("/tmp")
                .expect("temporary directory under /tmp");
            temporary.path()
        }
    };
    let secs: f64 = args.get(1).map_or(2.0, |s| s.parse().expect("SECS: a number of seconds"));
    let work = tempfile::Builder::new()
        .prefix("disk-limit-")
        .tempdir_in(dir)
        .unwrap_or_else(|e| panic!("cannot make a directory in {}: {e}", dir.display()));
    let overwrite = overwrite_fdatasync(work.path(), secs);
    let append = append_fsync(work.path(), secs);
    println!("disk limit in {} ({secs} s per kind of write):", dir.display());
    for (label, l) in [
        ("1 KiB overwrite + fdatasync, preallocated file", &overwrite),
        ("1 KiB append + fsync (reference)", &append),
    ] {
        println!(
            "  {label:<47} p50 {:.3} ms  p99 {:.3} ms  ({} writes)",
            l.millis(0.5),
            l.millis(0.99),
            l.0.len()
        );
    }
    let limit = pairs_per_second(&overwrite);
    println!(
        "  single-client limit (one pair per two p50 overwrites): {limit:.0} pairs/s; 80 %: {:.0} pairs/s",
        0.8 * limit
    );
}
