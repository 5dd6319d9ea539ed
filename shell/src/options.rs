//! Command-line options of `qmadmin`.

use clap::Parser;
use std::path::PathBuf;

const EXAMPLES: &str = "Examples:
  qmadmin /app/QUE                      an interactive session on a device
  qmadmin /app/QUE -c 'qopen QS; qinfo' one session from the command line
  qmadmin /app/QUE <<EOF                a Tuxedo script, prompts answered line by line
  qmadmin --connect tls+tcp://host:53000 -c 'qopen QS; qenqueue Q hello'
                                        a remote daemon (QM_CLIENT_CERT_KEY, QM_CLIENT_CA_CHAIN)
  qmadmin --connect-file conn.json      the daemon a connection file (qmd -c) names
  qmadmin --connect tcp://a:53000,tcp://b:53000
                                        an active daemon or its standby, whichever answers
  qmadmin managers                      the queue managers of ~/.config/qm/profile.toml and
                                        /etc/qm/profile.toml, and whether they answer
  qmadmin east -c 'qopen QS; qinfo'     the manager a profile calls east";

/// qmadmin: administration shell of qm, with the commands and prompts of Tuxedo's qmadmin.
/// Reads commands from the terminal, from standard input (scripts, here-documents), or
/// from -c. Starts a daemon for the device when none answers.
#[derive(Debug, Clone, Parser)]
#[command(name = "qmadmin", version, after_long_help = EXAMPLES)]
pub struct Options {
    /// Device file; defaults to $QMCONFIG. A name without '/' that a profile gives a queue
    /// manager stands for that manager; `managers` lists the profiles' managers.
    #[arg(value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// Run these commands (separated by ';' or newlines) as one session, then exit.
    #[arg(short = 'c', value_name = "COMMANDS")]
    pub commands: Option<String>,

    /// Do not start a daemon when none answers.
    #[arg(long)]
    pub no_start: bool,

    /// Control socket of the daemon (default: DEVICE.sock; also set by QM_SOCKET).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Reach a daemon at ADDR instead of a device's socket: unix:PATH, tcp://HOST:PORT or
    /// tls+tcp://HOST:PORT (also QM_CONNECT); several, separated by commas (an active
    /// daemon and its standby), are tried in order; or a queue manager's name from a
    /// profile. Without a device, QMCONFIG or --connect: QM_MANAGER's manager, else the
    /// profiles' managers in priority order. TLS clients read QM_CLIENT_CERT_KEY,
    /// QM_CLIENT_SERVER_NAME and QM_CLIENT_CA_CHAIN.
    #[arg(long, value_name = "ADDR", env = "QM_CONNECT", conflicts_with_all = ["device", "socket"])]
    pub connect: Option<String>,

    /// Reach the daemon a connection file (qmd -c) describes, believing the server
    /// certificate it names.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["device", "socket", "connect"])]
    pub connect_file: Option<PathBuf>,

    /// Print every listing as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Options {
    /// A non-interactive session on `device`'s daemon at `socket` running `commands`, never
    /// starting a daemon: for programs that drive qmadmin in-process (examples, benchmarks).
    pub fn script(device: &std::path::Path, socket: &std::path::Path, commands: &str) -> Options {
        Options {
            device: Some(device.to_path_buf()),
            commands: Some(commands.to_string()),
            no_start: true,
            socket: Some(socket.to_path_buf()),
            json: false,
            connect: None,
            connect_file: None,
        }
    }
}
