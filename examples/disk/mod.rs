//! What the disk benchmarks share (`disk_limit`, `socket_floor`): issue 11's disk limit,
//! timed 1 KiB overwrites + fdatasync of a preallocated file.

// Each example uses a part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One record: the size of each timed write.
pub const RECORD: usize = 1024;
/// Size of the preallocated file; the writes wrap around within it.
pub const PREALLOCATED: u64 = 64 << 20;

/// Latencies of one kind of durable write, sorted.
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn quantile(&self, q: f64) -> Duration {
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }

    pub fn millis(&self, q: f64) -> f64 {
        self.quantile(q).as_secs_f64() * 1000.0
    }
}

/// Times `write` (one durable 1 KiB write, given its sequence number) for `secs`.
pub fn time(secs: f64, mut write: impl FnMut(u64)) -> Latencies {
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
pub fn preallocated(path: &Path) -> File {
    let mut file = File::create(path).expect("create the preallocated file");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..PREALLOCATED / zeros.len() as u64 {
        file.write_all(&zeros).expect("fill the preallocated file");
    }
    file.sync_all().expect("sync the preallocated file");
    file
}

pub fn overwrite_fdatasync(dir: &Path, secs: f64) -> Latencies {
    let file = preallocated(&dir.join("preallocated"));
    let block = [b'x'; RECORD];
    time(secs, |i| {
        let offset = (i * RECORD as u64) % PREALLOCATED;
        file.write_all_at(&block, offset).expect("write");
        file.sync_data().expect("fdatasync");
    })
}

/// The single-client limit in pairs/s: one pair per two p50s of [`overwrite_fdatasync`].
pub fn pairs_per_second(overwrite: &Latencies) -> f64 {
    1.0 / (2.0 * overwrite.quantile(0.5).as_secs_f64())
}
