//! The client side of `bench/peers.sh`: closed-loop clients making durable enqueue+dequeue
//! pairs of 1 KiB bodies against a server already running in a process of its own (qmd,
//! Redis or PostgreSQL), printing the pairs per second they made together.
//!
//! ```text
//! bench_peers qm SOCKET CLIENTS SECS         qmd's control socket, queue BENCH/Q
//! bench_peers redis PORT CLIENTS SECS        LPUSH + RPOP on list q (AOF appendfsync always)
//! bench_peers postgres PORT CLIENTS SECS     INSERT + DELETE … FOR UPDATE SKIP LOCKED on table q
//! bench_peers free-port                      prints a free TCP port of 127.0.0.1
//! ```
//!
//! Every client has a connection of its own and runs as a task on a two-thread runtime, the
//! same for the three servers. Redis and PostgreSQL are spoken to by hand (RESP, and the
//! PostgreSQL protocol's extended query with trust authentication): each needs a few dozen
//! lines for the two commands used here, where a client crate would bring in a dozen crates.
//! PostgreSQL runs each statement as its own transaction, committed (WAL flushed) before it
//! answers; Redis with `appendfsync always` fsyncs its log before it answers.

mod load;

use load::Pairs;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn local(port: &str) -> String {
    format!("127.0.0.1:{port}")
}

/// A Redis connection speaking RESP2.
struct Redis(BufReader<TcpStream>);

impl Redis {
    async fn connect(port: &str) -> Redis {
        let stream = TcpStream::connect(local(port)).await.expect("connect to Redis");
        stream.set_nodelay(true).expect("nodelay");
        Redis(BufReader::new(stream))
    }

    /// Sends one command; returns the reply's bulk string, if it is one (`None` for nil,
    /// an integer or a status).
    async fn command(&mut self, words: &[&[u8]]) -> Option<Vec<u8>> {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            out.extend_from_slice(w);
            out.extend_from_slice(b"\r\n");
        }
        self.0.get_mut().write_all(&out).await.expect("send to Redis");
        let mut head = String::new();
        self.0.read_line(&mut head).await.expect("read from Redis");
        match head.as_bytes().first() {
            Some(b'$') if !head.starts_with("$-1") => {
                let len: usize = head[1..].trim_end().parse().expect("bulk length");
                let mut bulk = vec![0; len + 2];
                self.0.read_exact(&mut bulk).await.expect("read from Redis");
                bulk.truncate(len);
                Some(bulk)
            }
            Some(b'$' | b':' | b'+') => None,
            _ => panic!("Redis answered {head:?}"),
        }
    }
}

impl Pairs for Redis {
    async fn pair(&mut self, body: &[u8]) {
        self.command(&[b"LPUSH", b"q", body]).await;
        // Another client may take the message this one just pushed; there is then always
        // another, as no client dequeues more than it has enqueued.
        loop {
            if let Some(got) = self.command(&[b"RPOP", b"q"]).await {
                assert_eq!(got.len(), body.len(), "Redis returned a body of another size");
                break;
            }
        }
    }
}

/// A PostgreSQL connection (protocol 3.0), speaking the extended query protocol.
struct Postgres {
    stream: BufReader<TcpStream>,
}

const ENQUEUE: &str = "INSERT INTO q (body) VALUES ($1)";
const DEQUEUE: &str = "DELETE FROM q WHERE id = \
     (SELECT id FROM q ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING body";
const SCHEMA: &str = "DROP TABLE IF EXISTS q; \
     CREATE TABLE q (id bigserial PRIMARY KEY, body bytea NOT NULL)";

/// A frontend message: its type byte, its length and its body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The human-readable message (field M) of an ErrorResponse.
fn error_message(body: &[u8]) -> String {
    let field = body.split(|b| *b == 0).find(|f| f.first() == Some(&b'M'));
    String::from_utf8_lossy(field.map_or(body, |f| &f[1..])).into_owned()
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

impl Postgres {
    /// Connects as user `bench` (trust authentication) to database `postgres`.
    async fn connect(port: &str) -> Postgres {
        let stream = TcpStream::connect(local(port)).await.expect("connect to PostgreSQL");
        stream.set_nodelay(true).expect("nodelay");
        let mut pg = Postgres { stream: BufReader::new(stream) };
        let mut startup = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
        for s in ["user", "bench", "database", "postgres", ""] {
            cstr(&mut startup, s);
        }
        let mut first = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        first.extend_from_slice(&startup);
        pg.send(&first).await;
        pg.until_ready().await;
        pg
    }

    /// Prepares the queue's two statements, once table q is there.
    async fn prepare(mut self) -> Postgres {
        let mut prepare = Vec::new();
        for (name, sql) in [("enqueue", ENQUEUE), ("dequeue", DEQUEUE)] {
            let mut parse = Vec::new();
            cstr(&mut parse, name);
            cstr(&mut parse, sql);
            parse.extend_from_slice(&0u16.to_be_bytes()); // parameter types from the table
            prepare.extend(message(b'P', &parse));
        }
        prepare.extend(message(b'S', &[]));
        self.send(&prepare).await;
        self.until_ready().await;
        self
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("send to PostgreSQL");
    }

    /// Reads messages up to ReadyForQuery; returns the first column of the last data row.
    async fn until_ready(&mut self) -> Option<Vec<u8>> {
        let mut row = None;
        loop {
            let kind = self.stream.read_u8().await.expect("read from PostgreSQL");
            let len = self.stream.read_u32().await.expect("read from PostgreSQL") as usize;
            let mut body = vec![0; len - 4];
            self.stream.read_exact(&mut body).await.expect("read from PostgreSQL");
            match kind {
                b'Z' => return row,
                b'E' => panic!("PostgreSQL: {}", error_message(&body)),
                b'R' if body[..4] != [0; 4] => panic!("PostgreSQL asks for a password: give trust"),
                // DataRow: column count (2 bytes), then the first column's length and bytes.
                b'D' => {
                    let n = i32::from_be_bytes(body[2..6].try_into().unwrap());
                    row = (n >= 0).then(|| body[6..6 + n as usize].to_vec());
                }
                _ => {}
            }
        }
    }

    /// Runs prepared statement `name` with `params` (binary), results in binary; with Sync,
    /// so that the statement is its own committed transaction.
    async fn execute(&mut self, name: &str, params: &[&[u8]]) -> Option<Vec<u8>> {
        let mut bind = Vec::new();
        cstr(&mut bind, "");
        cstr(&mut bind, name);
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&1u16.to_be_bytes()); // every parameter binary
        bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            bind.extend_from_slice(&(p.len() as u32).to_be_bytes());
            bind.extend_from_slice(p);
        }
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&1u16.to_be_bytes()); // every result column binary
        let mut execute = Vec::new();
        cstr(&mut execute, "");
        execute.extend_from_slice(&0u32.to_be_bytes());
        let mut out = message(b'B', &bind);
        out.extend(message(b'E', &execute));
        out.extend(message(b'S', &[]));
        self.send(&out).await;
        self.until_ready().await
    }

    /// Makes table q anew, empty, with the simple query protocol.
    async fn create_queue(&mut self) {
        let mut query = Vec::new();
        cstr(&mut query, SCHEMA);
        self.send(&message(b'Q', &query)).await;
        self.until_ready().await;
    }
}

impl Pairs for Postgres {
    async fn pair(&mut self, body: &[u8]) {
        self.execute("enqueue", &[body]).await;
        // SKIP LOCKED may pass over every row another client holds: then try again.
        loop {
            if let Some(got) = self.execute("dequeue", &[]).await {
                assert_eq!(got.len(), body.len(), "PostgreSQL returned a body of another size");
                break;
            }
        }
    }
}

async fn run(kind: &str, target: &str, clients: usize, secs: f64) -> f64 {
    match kind {
        "qm" => {
            let mut all = Vec::new();
            for _ in 0..clients {
                let app = qm_common::protocol::ClientKind::Application;
                let socket = std::path::Path::new(target);
                let c = qm_common::client::Client::connect(socket, "bench", app).await;
                all.push(c.expect("connect to qmd"));
            }
            load::client_pairs(all, secs).await
        }
        "redis" => {
            let mut all = Vec::new();
            for _ in 0..clients {
                all.push(Redis::connect(target).await);
            }
            all[0].command(&[b"DEL", b"q"]).await;
            load::closed_loop(all, secs).await
        }
        "postgres" => {
            Postgres::connect(target).await.create_queue().await;
            let mut all = Vec::new();
            for _ in 0..clients {
                all.push(Postgres::connect(target).await.prepare().await);
            }
            load::closed_loop(all, secs).await
        }
        _ => panic!("unknown server {kind:?}: qm, redis or postgres"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("free-port") {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        return println!("{}", listener.local_addr().expect("address").port());
    }
    let [kind, target, clients, secs] = &args[..] else {
        eprintln!("usage: bench_peers qm|redis|postgres SOCKET|PORT CLIENTS SECS | free-port");
        std::process::exit(2);
    };
    let clients = clients.parse().expect("CLIENTS: a number");
    let secs = secs.parse().expect("SECS: a number of seconds");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("{:.0}", rt.block_on(run(kind, target, clients, secs)));
}
