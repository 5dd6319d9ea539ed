//! The disk's own limit for durable queueing, as issue 11 defines it: the p50 latency of a
//! 1 KiB write + fdatasync to a preallocated file, and the single-client rate that two such
//! writes per enqueue+dequeue pair allow. Append + fsync (a growing file) is measured too,
//! for reference.
//!
//! Run with `cargo run --release --example disk_limit [-- DIR [SECS]]`: DIR is where the test
//! files go (default: a temporary directory under /tmp, the file system the benchmarks use),
//! SECS how long each kind of write is timed (default 2). `bench/peers.sh` runs it next to
//! the servers it compares.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const BLOCK: usize = 1024;
/// Size of the preallocated file; the writes wrap around within it.
const PREALLOCATED: u64 = 64 << 20;

/// Latencies of one kind of durable write, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&self, q: f64) -> Duration {
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }

    fn millis(&self, q: f64) -> f64 {
        self.quantile(q).as_secs_f64() * 1000.0
    }
}

/// Times `write` (one durable 1 KiB write, given its sequence number) for `secs`.
fn time(secs: f64, mut write: impl FnMut(u64)) -> Latencies {
    let mut all = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let one = Instant::now();
        write(all.len() as u64);
        all.push(one.elapsed());
    }
    all.sort();
    Latencies(all)
}

/// A file of [`PREALLOCATED`] bytes of zeros, written and synced. Written rather than
/// fallocated: fallocate leaves the extents "unwritten", and the first write to each would
/// make fdatasync flush an extent conversion too, which a journal reusing its file never pays.
fn preallocated(path: &Path) -> File {
    let mut file = File::create(path).expect("create the preallocated file");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..PREALLOCATED / zeros.len() as u64 {
        file.write_all(&zeros).expect("fill the preallocated file");
    }
    file.sync_all().expect("sync the preallocated file");
    file
}

fn overwrite_fdatasync(dir: &Path, secs: f64) -> Latencies {
    let file = preallocated(&dir.join("preallocated"));
    let block = [b'x'; BLOCK];
    time(secs, |i| {
        let offset = (i * BLOCK as u64) % PREALLOCATED;
        file.write_all_at(&block, offset).expect("write");
        file.sync_data().expect("fdatasync");
    })
}

fn append_fsync(dir: &Path, secs: f64) -> Latencies {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("appended"))
        .expect("create the appended file");
    let block = [b'x'; BLOCK];
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
    let limit = 1.0 / (2.0 * overwrite.quantile(0.5).as_secs_f64());
    println!(
        "  single-client limit (one pair per two p50 overwrites): {limit:.0} pairs/s; 80 %: {:.0} pairs/s",
        0.8 * limit
    );
}
