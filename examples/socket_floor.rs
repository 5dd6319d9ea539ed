//! The fastest a durable queue reached through a socket can be on this machine: a server
//! with nothing in it but the durable write, measured against issue 11's disk limit.
//!
//! A client process and a server process talk over a Unix stream socket, as `bench_peers`
//! and `qmd` do. Each "pair" is two requests, as a qm enqueue + dequeue: a 1 KiB request
//! answered with 16 bytes, then a 16-byte request answered with 1 KiB. For every request
//! the server writes one durable 1 KiB record to a preallocated file before it answers, and
//! does nothing else: no decoding, no index, no allocation. What is left between its rate
//! and the disk's limit is what the two processes' wake-ups and socket calls cost.
//!
//! ```text
//! cargo run --release --example socket_floor -- [DIR [SECS [WAIT [WRITE]]]]
//!   DIR    where its directory of files is made (default /tmp); removed at the end
//!   SECS   how long each measurement runs (default 3)
//!   WAIT   block: both sides sleep in recv; spin: both sides poll their socket; tokio: both
//!          on Tokio's multi-thread runtime, as qmd and `bench_peers` (the server writes in
//!          place, as qmd's lone session does); tokio-server: the server on Tokio, the client
//!          sleeping in recv; tokio-client: the client on Tokio, the server sleeping in recv
//!          (default block)
//!   WRITE  sync: pwrite + fdatasync; direct: one O_DIRECT | O_DSYNC pwrite of the 4 KiB
//!          block the record lies in (default sync)
//! ```
//!
//! It prints the disk's limit (as `disk_limit` measures it: the p50 of a 1 KiB overwrite +
//! fdatasync, one pair per two of them), measured just before and just after, then the
//! floor's pairs/s and its share of the mean limit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod disk;

use disk::{PREALLOCATED, RECORD, overwrite_fdatasync, pairs_per_second, preallocated};

/// The alignment of a direct write.
const BLOCK: usize = 4096;
/// A small request or answer.
const SMALL: usize = 16;

/// Reads exactly `buf.len()` bytes, sleeping in `recv` or polling for them.
fn receive(stream: &mut UnixStream, buf: &mut [u8], spin: bool) -> bool {
    let mut got = 0;
    while got < buf.len() {
        let n = if spin {
            // SAFETY: a read into the unfilled part of `buf`, on the stream's own socket.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    std::hint::spin_loop();
                    continue;
                }
                return false;
            }
            n as usize
        } else {
            match stream.read(&mut buf[got..]) {
                Ok(n) => n,
                Err(_) => return false,
            }
        };
        if n == 0 {
            return false;
        }
        got += n;
    }
    true
}

/// The durable record writer: buffered + fdatasync, or direct and synchronous.
enum Journal {
    Sync(File),
    Direct(File, Vec<u8>),
}

impl Journal {
    fn open(path: &Path, direct: bool) -> Journal {
        let file = preallocated(path);
        if !direct {
            return Journal::Sync(file);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .expect("open with O_DIRECT (not on tmpfs)");
        Journal::Direct(file, vec![0u8; 2 * BLOCK])
    }

    fn write(&mut self, n: u64, record: &[u8]) {
        match self {
            Journal::Sync(file) => {
                file.write_all_at(record, (n * RECORD as u64) % PREALLOCATED).expect("write");
                file.sync_data().expect("fdatasync");
            }
            Journal::Direct(file, buf) => {
                // As a journal does: the record at the next 1 KiB of the file, written with
                // the block it lies in (so four records in turn rewrite one block).
                let at = (n * RECORD as u64) % PREALLOCATED;
                let (start, within) = (at - at % BLOCK as u64, (at % BLOCK as u64) as usize);
                let skip = buf.as_ptr().align_offset(BLOCK);
                let block = &mut buf[skip..skip + BLOCK];
                block[within..within + record.len()].copy_from_slice(record);
                file.write_all_at(block, start).expect("direct write");
            }
        }
    }
}

fn serve(socket: &Path, journal: &Path, spin: bool, direct: bool) {
    let listener = UnixListener::bind(socket).expect("bind");
    let mut journal = Journal::open(journal, direct);
    println!("ready");
    std::io::stdout().flush().ok();
    let (mut stream, _) = listener.accept().expect("accept");
    let (mut request, big, small) = (vec![0u8; RECORD], vec![b'y'; RECORD], [0u8; SMALL]);
    let mut n = 0u64;
    loop {
        // An enqueue: 1 KiB in, written, 16 bytes out.
        if !receive(&mut stream, &mut request, spin) {
            return;
        }
        journal.write(n, &request);
        n += 1;
        if stream.write_all(&small).is_err() {
            return;
        }
        // A dequeue: 16 bytes in, a record written, 1 KiB out.
        if !receive(&mut stream, &mut request[..SMALL], spin) {
            return;
        }
        journal.write(n, &request[..SMALL]);
        n += 1;
        if stream.write_all(&big).is_err() {
            return;
        }
    }
}

/// [`serve`] on Tokio, as a task on a two-thread runtime as qmd's sessions are: it waits
/// in epoll, and its write blocks its worker, as a lone session's journal write does.
fn serve_tokio(socket: &Path, journal: &Path, direct: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut journal = Journal::open(journal, direct);
    let listener = runtime.block_on(async { tokio::net::UnixListener::bind(socket) });
    println!("ready");
    std::io::stdout().flush().ok();
    runtime.block_on(async move {
        let (mut stream, _) = listener.expect("bind").accept().await.expect("accept");
        let session = tokio::spawn(async move {
            let (mut request, big, small) = (vec![0u8; RECORD], vec![b'y'; RECORD], [0u8; SMALL]);
            for n in (0u64..).step_by(2) {
                // An enqueue, then a dequeue, as in `serve`.
                if stream.read_exact(&mut request).await.is_err() {
                    return;
                }
                journal.write(n, &request);
                if stream.write_all(&small).await.is_err() {
                    return;
                }
                if stream.read_exact(&mut request[..SMALL]).await.is_err() {
                    return;
                }
                journal.write(n + 1, &request[..SMALL]);
                if stream.write_all(&big).await.is_err() {
                    return;
                }
            }
        });
        session.await.ok();
    })
}

/// [`client`] as `bench_peers` runs one: a task on a two-thread Tokio runtime.
fn client_tokio(socket: &Path, secs: f64) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let socket = socket.to_path_buf();
    runtime.block_on(async move {
        let task = tokio::spawn(async move {
            let mut stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
            let (body, mut answer) = (vec![b'x'; RECORD], vec![0u8; RECORD]);
            let mut pairs = 0u64;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                stream.write_all(&body).await.expect("send");
                stream.read_exact(&mut answer[..SMALL]).await.expect("server gone");
                stream.write_all(&body[..SMALL]).await.expect("send");
                stream.read_exact(&mut answer).await.expect("server gone");
                pairs += 1;
            }
            pairs as f64 / start.elapsed().as_secs_f64()
        });
        task.await.expect("client task")
    })
}

fn client(socket: &Path, secs: f64, spin: bool) -> f64 {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let (body, mut answer) = (vec![b'x'; RECORD], vec![0u8; RECORD]);
    let mut pairs = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        stream.write_all(&body).expect("send");
        assert!(receive(&mut stream, &mut answer[..SMALL], spin), "server gone");
        stream.write_all(&body[..SMALL]).expect("send");
        assert!(receive(&mut stream, &mut answer, spin), "server gone");
        pairs += 1;
    }
    pairs as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let [_, socket, journal, wait, write] = &args[..] else { panic!("serve arguments") };
        let (socket, journal, direct) = (Path::new(socket), Path::new(journal), write == "direct");
        return match wait.as_str() {
            "tokio" | "tokio-server" => serve_tokio(socket, journal, direct),
            _ => serve(socket, journal, wait == "spin", direct),
        };
    }
    // Its files go in a directory of its own made there, never straight into DIR: in a
    // shared directory such as /tmp another user could have put a link at their names.
    let parent = args.first().map_or("/tmp", String::as_str);
    let work = tempfile::Builder::new()
        .prefix("socket-floor-")
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("cannot make a directory in {parent}: {e}"));
    let dir: PathBuf = work.path().to_path_buf();
    let secs: f64 = args.get(1).map_or(3.0, |s| s.parse().expect("SECS: a number"));
    let wait = args.get(2).map_or("block", String::as_str);
    let write = args.get(3).map_or("sync", String::as_str);
    assert!(
        matches!(wait, "block" | "spin" | "tokio" | "tokio-server" | "tokio-client"),
        "WAIT: block, spin, tokio, tokio-server or tokio-client"
    );
    assert!(matches!(write, "sync" | "direct"), "WRITE: sync or direct");

    let before = pairs_per_second(&overwrite_fdatasync(&dir, 2.0));
    let socket = dir.join("floor.sock");
    let mut server = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["serve"])
        .arg(&socket)
        .arg(dir.join("journal"))
        .args([wait, write])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut ready = [0u8; 6];
    server.stdout.as_mut().expect("stdout").read_exact(&mut ready).expect("server ready");
    let rate = match wait {
        "tokio" | "tokio-client" => client_tokio(&socket, secs),
        _ => client(&socket, secs, wait == "spin"),
    };
    server.wait().expect("server exit");
    std::thread::sleep(Duration::from_millis(100));
    let after = pairs_per_second(&overwrite_fdatasync(&dir, 2.0));
    let limit = (before + after) / 2.0;
    println!(
        "disk limit {before:.0} and {after:.0} pairs/s; floor ({wait}, {write}) {rate:.0} pairs/s: \
         {:.2} of the limit",
        rate / limit
    );
}
