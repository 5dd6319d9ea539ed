//! Benchmark of the network face against the control socket: durable enqueue+dequeue pairs
//! per second over the Unix socket, plain TCP and TLS (with client certificates) on
//! loopback, at 1, 8 and 64 clients.
//!
//! Run with `cargo run --release --example bench_net` (`-- --quick` for a short run). A
//! daemon runs in this process on a temporary device, listening on 127.0.0.1 with a
//! certificate made here (rcgen); the clients run in another process (this program again,
//! with `--clients`), each on its own connection, as applications would. Bodies are 1 KiB;
//! every enqueue and every dequeue is its own durable transaction.

use qm_common::address::Address;
use qm_common::client::Client;
use qm_common::protocol::ClientKind;
use qm_common::tls::ClientTlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod load;

use load::{BODY, QSPACE, QUEUE, admin};

/// How a client reaches the daemon.
#[derive(Clone)]
enum Way {
    Socket(PathBuf),
    Net(Address, ClientTlsFiles),
}

async fn client(way: &Way) -> Client {
    let kind = ClientKind::Application;
    match way {
        Way::Socket(s) => Client::connect(s, "bench", kind).await,
        Way::Net(a, files) => Client::connect_addr_with(a, files, "bench", kind).await,
    }
    .expect("connect")
}

/// Pairs per second with `clients` connections made `way` for `secs`.
async fn throughput(way: &Way, clients: usize, secs: f64) -> f64 {
    let mut all = Vec::new();
    for _ in 0..clients {
        all.push(client(way).await);
    }
    load::client_pairs(all, secs).await
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate `cert:bench`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca = write("ca.pem", ca_params.self_signed(&ca_key).expect("CA").pem());
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str, cn: &str, sans: Vec<SanType>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &issuer).expect("sign");
        write(name, format!("{}{}", cert.pem(), key.serialize_pem()))
    };
    let server = issue("server.pem", "qmd", vec![SanType::IpAddress("127.0.0.1".parse().unwrap())]);
    let client = issue("client.pem", "bench", vec![]);
    (ca, server, client)
}

/// Runs `clients` clients reaching the daemon `way` in a process of their own; returns
/// their pairs per second.
fn clients_process(way: &[&std::ffi::OsStr], clients: usize, secs: f64) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--clients")
        .arg(clients.to_string())
        .arg(secs.to_string())
        .args(way)
        .output()
        .expect("client process");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!("client process: {text}{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// The client process: `--clients N SECS unix SOCKET` or `--clients N SECS tls CONNFILE
/// CERTKEY CA`; prints the pairs per second.
fn run_clients(args: &[String]) {
    let (n, secs) = (args[0].parse().expect("N"), args[1].parse().expect("SECS"));
    let way = match args[2].as_str() {
        "unix" => Way::Socket(PathBuf::from(&args[3])),
        _ => {
            let conn = qm_common::address::ConnectionFile::read(Path::new(&args[3])).expect("conn");
            let files = ClientTlsFiles {
                cert_key: Some(PathBuf::from(&args[4])),
                server_name: None,
                ca_chain: Some(PathBuf::from(&args[5])),
            };
            Way::Net(conn.address(), files)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("{}", rt.block_on(throughput(&way, n, secs)));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--clients") {
        return run_clients(&args[i + 1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 1.5 } else { 5.0 };
    let dir = tempfile::Builder::new().prefix("qm-bench-net-").tempdir().expect("temp dir");
    let device = dir.path().join("QUE");
    let socket = qm_common::paths::socket_path(&device);
    let (ca, server, client_cert) = certificates(dir.path());
    let settings = qm_daemon::server::Settings {
        net: Some(qm_daemon::net::NetOptions {
            address: Some("127.0.0.1".into()),
            port: None,
            max_connections: 1024,
            idle: None,
            persistent: false,
            connection_file: Some(dir.path().join("conn.json")),
        }),
        tls: Some((server, vec![ca.display().to_string()])),
        ..Default::default()
    };
    load::start_daemon(&device, &socket, settings);
    admin(
        &device,
        &socket,
        &format!(
            "crdl {} 0 30000; qspc {QSPACE} 40000 20000 4 256 256 20000 \"\" n 16; qopen {QSPACE}; \
             qcr {QUEUE} fifo none 0 0 100% 0% \"\"; qgrant cert:bench enqueue,dequeue {QSPACE}",
            device.display()
        ),
    );
    let conn = dir.path().join("conn.json");
    let tls = [conn.as_os_str(), client_cert.as_os_str(), ca.as_os_str()];
    let ways: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        ("unix socket", vec![std::ffi::OsStr::new("unix"), socket.as_os_str()]),
        ("TLS (client certificate)", [&[std::ffi::OsStr::new("tls")][..], &tls].concat()),
    ];
    println!("qm network benchmark: durable enqueue+dequeue pairs/s, {BODY}-byte bodies, loopback");
    println!("  {:<28} {:>8} {:>8} {:>8}", "face", "1", "8", "64");
    let mut at64 = Vec::new();
    for (label, way) in &ways {
        let rates: Vec<f64> = [1, 8, 64].iter().map(|n| clients_process(way, *n, secs)).collect();
        println!("  {label:<28} {:>8.0} {:>8.0} {:>8.0}", rates[0], rates[1], rates[2]);
        at64.push(rates[2]);
    }
    println!("  TLS at 64 clients: {:.0}% of the unix socket", 100.0 * at64[1] / at64[0]);
    admin(&device, &socket, "daemon stop");
}
