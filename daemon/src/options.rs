//! Command-line options of `qmd`.

use clap::Parser;
use std::path::PathBuf;

const EXAMPLES: &str = "Examples:
  qmd $QMCONFIG                         serve the device on its control socket only
  qmd $QMCONFIG --detach                the same, in the background (log in DEVICE.log)
  qmd $QMCONFIG -s -p 53000 -n 1024 -l 2 -w 53001 1024 result
                                        mqserver's start script: TCP on 53000, HTTP on 53001
  qmd $QMCONFIG -i 10.0.0.5 -c conn.json -k server.pem -a 'ca/*.pem'
                                        TLS with client certificates, first free port from
                                        53000, connection file for clients
  qmd $QMCONFIG --standby -s -p 53000    on a second machine sharing the device: wait,
                                        and take over when the active qmd stops or dies
  qmd --fence $QMCONFIG                 make a qmd that lost the device stop before its
                                        next write (docs/ha.md)
  qmd --end-orphans $QMCONFIG           after kill -9 of qmd: end the workers and threshold
                                        commands it left running on this machine";

/// qmd: the qm queue manager daemon. Owns one device (a redb file) and serves qmadmin and
/// applications over a control socket that only its owner may use (unless --socket-mode
/// shares it) and, when asked (-p, -i, -w or a [listen] table), over TCP, TLS and HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "qmd", version, after_long_help = EXAMPLES)]
pub struct Options {
    /// Device file; defaults to $QMCONFIG. It need not exist yet: the first crdl creates it.
    #[arg(value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// Control socket path (default: DEVICE.sock; also set by QM_SOCKET).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Check a stopped device as qmadmin's qverify checks a running one (the device list,
    /// VTOC, extents, free space, files, and every message), print what is wrong, and exit:
    /// 0 when nothing is, 1 when something is, 2 when it cannot be checked.
    #[arg(long)]
    pub verify: bool,

    /// Standby: when another qmd serves DEVICE, wait until it stops or dies, then take
    /// over (the device must be on a filesystem whose locks die with their holder; see
    /// docs/ha.md). With nothing serving it, serve at once. With --detach, returns once
    /// waiting.
    #[arg(long, conflicts_with = "verify")]
    pub standby: bool,

    /// Raise DEVICE's fencing generation and exit: a qmd still serving it (one paused, or
    /// on a node cut off from a shared disk) stops before its next write.
    #[arg(long, conflicts_with_all = ["verify", "standby"])]
    pub fence: bool,

    /// End the services and threshold commands that a qmd of DEVICE, killed on this
    /// machine, left running, and exit (a cluster's stop runs it after a kill -9; the next
    /// qmd here would do it at its start). Refused while a qmd serves DEVICE here.
    #[arg(long = "end-orphans", conflicts_with_all = ["verify", "standby", "fence"])]
    pub end_orphans: bool,

    /// Log level: 0 none, 1 errors, 2 warnings, 3 all (4 also traces every storage commit).
    #[arg(short = 'l', value_name = "LEVEL", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(0..=4))]
    pub log_level: u8,

    /// Log file (default: standard error; DEVICE.log when detached).
    #[arg(short = 'g', value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Configuration file (forwarders, services, threshold command time limit); default:
    /// DEVICE.toml when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Run in the background: return once the daemon accepts connections.
    #[arg(long)]
    pub detach: bool,

    /// Seconds after which the daemon rolls back a transaction that set no time-out of its
    /// own (Tuxedo TMQUEUE -t; -t itself is kept for the mqserver-style idle time-out).
    #[arg(long = "transaction-timeout", value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub transaction_timeout: u32,

    /// Seconds a client has to finish sending a request it has begun; a connection that
    /// stalls mid-request is told so and closed (the time between requests is not limited).
    #[arg(long = "frame-timeout", value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub frame_timeout: u32,

    /// MiB of memory redb may use to cache each open file's pages (default 64). More
    /// keeps more of a deep queue in memory; the daemon's own index is not counted here.
    #[arg(long = "cache-mib", value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub cache_mib: u32,

    /// MiB of journal records between two checkpoints of a file (4 to 256, default 32).
    /// More makes a deep queue faster (fewer, larger commits to redb) at the price of more
    /// memory (several times this per busy file: two sets of records, the messages they
    /// hold, and redb's pages for the commit) and a longer replay after a crash.
    /// Where the filesystem cannot hold disk room ahead (no `fallocate`), 4 is used.
    #[arg(long = "checkpoint-mib", value_name = "MIB",
          default_value_t = crate::storage::journal::DEFAULT_CHECKPOINT_MIB,
          value_parser = clap::value_parser!(u64).range(crate::storage::journal::CHECKPOINT_MIB))]
    pub checkpoint_mib: u64,

    /// Network face: listen address (`*`: every interface). Without -p, the first free
    /// port from 53000 up is taken.
    #[arg(short = 'i', value_name = "ADDR")]
    pub listen_address: Option<String>,

    /// Network face: TCP port.
    #[arg(short = 'p', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Most network connections at once (default 1024); one more is told so and closed.
    #[arg(short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,

    /// Stop after SECS with no network connection open (not with -s).
    #[arg(short = 't', value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
    pub idle_timeout: Option<u32>,

    /// Persistent service: never stops for idleness, and refuses `daemon stop` from the
    /// network (the control socket may still stop it).
    #[arg(short = 's')]
    pub persistent: bool,

    /// Requests of one connection served in a row before others get their turn.
    #[arg(short = 'm', value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_events: u32,

    /// Waiting dequeues of clients with the same program name get messages in turn (round
    /// robin) rather than whoever asks first.
    #[arg(short = 'r')]
    pub round_robin: bool,

    /// Write a connection file (JSON: host, port, tls, certificate fingerprint, http, pid,
    /// device) once listening; removed at a clean stop.
    #[arg(short = 'c', value_name = "FILE")]
    pub connection_file: Option<PathBuf>,

    /// PEM file with the server's certificate chain and private key: the network face
    /// speaks TLS (also QM_SERVER_CERT_KEY).
    #[arg(short = 'k', value_name = "FILE")]
    pub cert_key: Option<PathBuf>,

    /// CA chain files (comma-separated, glob patterns allowed) that client certificates
    /// must chain to; clients without one are refused (also QM_SERVER_CA_CHAINS,
    /// colon-separated).
    #[arg(short = 'a', value_name = "LIST")]
    pub ca_chains: Option<String>,

    /// Permissions of the control socket, in octal (default 0600: the owner only, and root).
    /// With group or other bits (0660, 0666) other local users may connect: they are served
    /// as unix:<name> and hold only the rights granted to them (qgrant).
    #[arg(long = "socket-mode", value_name = "MODE", value_parser = parse_socket_mode)]
    pub socket_mode: Option<u32>,

    /// Serve the control socket only: no network face, whatever the configuration file's
    /// [listen] says (qmadmin starts daemons so).
    #[arg(long = "local-only", conflicts_with_all = ["listen_address", "port", "http"])]
    pub local_only: bool,

    /// HTTP face: POST and GET messages at /URLPATH/QSPACE/QUEUE, with /metrics and
    /// /healthz, on PORT (0: any free port), at most MAXCONN connections at once.
    #[arg(short = 'w', num_args = 3, value_names = ["PORT", "MAXCONN", "URLPATH"])]
    pub http: Option<Vec<String>>,
}

/// The mode of the control socket when `--socket-mode` is not given.
pub const SOCKET_MODE_DEFAULT: u32 = 0o600;

/// `--socket-mode`: octal read and write bits, the owner's both (the owner must reach its
/// daemon), nothing else: execute bits mean nothing on a socket, and the special bits less.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let forms = "give octal permission bits such as 0600 (the owner only), 0660 (and the \
                 socket's group) or 0666 (every local user)";
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = match u32::from_str_radix(digits, 8) {
        Ok(m) if (1..=4).contains(&digits.len()) => m,
        _ => {
            return Err(format!(
                "'{}' is not an octal mode; {forms}",
                qm_common::error::shown(text)
            ));
        }
    };
    if mode & !0o666 != 0 {
        return Err(format!(
            "{mode:04o} has bits other than read and write (execute or special bits); {forms}"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{mode:04o} does not let the owner read and write the socket, and the owner must \
             reach its daemon; {forms}"
        ));
    }
    Ok(mode)
}

impl Options {
    /// The mode the control socket is created with.
    pub fn socket_mode(&self) -> u32 {
        self.socket_mode.unwrap_or(SOCKET_MODE_DEFAULT)
    }

    /// Whether the network face was asked for.
    pub fn wants_network(&self) -> bool {
        self.port.is_some() || self.listen_address.is_some()
    }

    /// Options that mean nothing without the network face, when given without it.
    pub fn network_only_options(&self) -> Vec<&'static str> {
        let any_face = self.wants_network() || self.http.is_some();
        let given = [
            ("-n", self.max_connections.is_some(), self.wants_network()),
            ("-t", self.idle_timeout.is_some(), self.wants_network()),
            ("-c", self.connection_file.is_some(), self.wants_network()),
            ("-k", self.cert_key.is_some(), any_face),
            ("-a", self.ca_chains.is_some(), any_face),
        ];
        given.iter().filter(|(_, given, face)| *given && !face).map(|(o, ..)| *o).collect()
    }

    /// The HTTP face `-w` asks for, its three values checked.
    pub fn http_face(&self) -> Result<Option<crate::http::HttpFace>, String> {
        match self.http.as_deref() {
            Some([port, max, path]) => crate::http::HttpFace::parse(port, max, path).map(Some),
            Some(_) => Err("-w takes three values: PORT MAXCONN URLPATH".into()),
            None => Ok(None),
        }
    }

    /// The device path: the argument, else $QMCONFIG, made absolute.
    pub fn device_path(&self) -> Result<PathBuf, String> {
        let path = match &self.device {
            Some(p) => p.clone(),
            None => match std::env::var_os(qm_common::paths::QMCONFIG_ENV) {
                Some(v) if !v.is_empty() => PathBuf::from(v),
                _ => return Err("no device given and QMCONFIG is not set".into()),
            },
        };
        Ok(qm_common::paths::absolute(&path))
    }
}

/// A switch read from qmd's environment, on by default: whether `name` leaves it on (unset
/// or 1). Any other value but 0 leaves it on too, with a warning that names the variable
/// and what 0 (`off`) and 1 (`on`) mean.
pub fn env_switch(name: &str, off: &str, on: &str) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") => false,
        Ok("1") | Err(_) => true,
        Ok(other) => {
            tracing::warn!(
                "{name}={other:?} is neither 0 ({off}) nor 1 ({on}, the default): left on"
            );
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_socket_mode;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("666"), Ok(0o666));
        assert_eq!(parse_socket_mode("0o600"), Ok(0o600));
        for bad in ["0770", "0661", "4660", "0460", "rw", "", "06600", "9"] {
            assert!(parse_socket_mode(bad).is_err(), "{bad}");
        }
    }
}
