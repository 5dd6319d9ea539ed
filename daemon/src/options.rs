//! Command-line options of `qmd`.

use clap::Parser;
use std::path::PathBuf;

/// qmd: the qm queue manager daemon. Owns one device (a redb file) and serves qmadmin and
/// applications over a control socket that only its owner may use.
#[derive(Debug, Clone, Parser)]
#[command(name = "qmd", version)]
pub struct Options {
    /// Device file; defaults to $QMCONFIG. It need not exist yet: the first crdl creates it.
    #[arg(value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// Control socket path (default: DEVICE.sock; also set by QM_SOCKET).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

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

    /// HTTP face: POST and GET messages at /URLPATH/QSPACE/QUEUE, with /metrics and
    /// /healthz, on PORT (0: any free port), at most MAXCONN connections at once.
    #[arg(short = 'w', num_args = 3, value_names = ["PORT", "MAXCONN", "URLPATH"])]
    pub http: Option<Vec<String>>,
}

impl Options {
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
