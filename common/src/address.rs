//! Where a daemon is reached: one address form for every client, and the connection file a
//! listening daemon writes for its clients.
//!
//! `unix:PATH` is a control socket on this machine, `tcp://HOST:PORT` plain TCP,
//! `tls+tcp://HOST:PORT` TCP with TLS. A connection file (`qmd -c FILE`) says the same in
//! JSON, with the fingerprint of the server's certificate, so a client holding only that
//! file can reach and verify the daemon.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// How to reach a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
}

/// The forms an address may take, for messages.
pub const ADDRESS_FORMS: &str = "unix:PATH, tcp://HOST:PORT or tls+tcp://HOST:PORT";

impl Address {
    /// Reads an address as a user wrote it; the error names the accepted forms.
    pub fn parse(text: &str) -> Result<Address, String> {
        let bad =
            |why: &str| format!("address '{}' {why}; use {ADDRESS_FORMS}", text.escape_debug());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("names no socket"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = if let Some(rest) = text.strip_prefix("tls+tcp://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            (false, rest)
        } else {
            return Err(bad("has no known scheme"));
        };
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("needs HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("has a port outside 1 to 65535"))?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("has no valid host"));
        }
        let host = host.to_string();
        Ok(if tls { Address::Tls { host, port } } else { Address::Tcp { host, port } })
    }

    /// Reads several addresses separated by commas (an active daemon and its standby),
    /// tried in that order; the error names the one at fault.
    pub fn parse_list(text: &str) -> Result<Vec<Address>, String> {
        let list: Vec<Address> =
            text.split(',').map(|a| Address::parse(a.trim())).collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(format!("no address given; use {ADDRESS_FORMS}"));
        }
        Ok(list)
    }

    /// `HOST:PORT` of a network address, as the resolver takes it.
    pub fn host_port(&self) -> Option<(String, u16)> {
        match self {
            Address::Unix(_) => None,
            Address::Tcp { host, port } | Address::Tls { host, port } => {
                Some((host.clone(), *port))
            }
        }
    }
}

/// `HOST:PORT`, with `[v6]:PORT` for IPv6 literals.
fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = text.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host_of = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_string() };
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp { host, port } => write!(f, "tcp://{}:{port}", host_of(host)),
            Address::Tls { host, port } => write!(f, "tls+tcp://{}:{port}", host_of(host)),
        }
    }
}

/// What `qmd -c FILE` writes when it listens on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionFile {
    /// Where clients should connect: the listen address, or this machine's name when the
    /// daemon listens on every interface.
    pub host: String,
    pub port: u16,
    /// The port speaks TLS.
    pub tls: bool,
    /// SHA-256 of the server certificate (DER), lowercase hex; with TLS only.
    pub fingerprint: Option<String>,
    /// The HTTP face, when there is one.
    pub http_port: Option<u16>,
    pub http_url: Option<String>,
    pub pid: u32,
    pub device: String,
}

/// Largest connection file read: a few hundred bytes are expected.
const CONNECTION_FILE_MAX: u64 = 64 * 1024;

impl ConnectionFile {
    /// The address it describes.
    pub fn address(&self) -> Address {
        let (host, port) = (self.host.clone(), self.port);
        if self.tls { Address::Tls { host, port } } else { Address::Tcp { host, port } }
    }

    /// Reads a connection file. It tells a client which server certificate to believe, so
    /// one that others could have changed (writable by group or others) is refused.
    pub fn read(path: &Path) -> Result<ConnectionFile, String> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let shown = path.display();
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        // A link could aim us at a file of anyone's choosing.
        let file = crate::trust::open_no_follow(path, &mut options, "connection file")?;
        let meta = file.metadata().map_err(|e| format!("connection file {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("connection file {shown} is not a regular file"));
        }
        // Another user's file counts only where only that user could have put it: in a
        // directory of theirs nobody else may write (a daemon's owner sharing it with its
        // clients), never in a place open to all.
        if !crate::trust::is_trusted_user(meta.uid())
            && let Some(problem) = crate::trust::listener_dir_problem(path, meta.uid())
        {
            return Err(format!(
                "connection file {shown} belongs to {} and may have been put there by someone \
                 else: {problem}; it decides which server is believed, so it is not used",
                crate::trust::describe_user(meta.uid())
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "connection file {shown} may be changed by others (mode {}): it decides which \
                 server is believed, so it is not used; make it writable by its owner only",
                crate::trust::mode_text(meta.mode())
            ));
        }
        let mut text = String::new();
        file.take(CONNECTION_FILE_MAX)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read connection file {shown}: {e}"))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("connection file {shown} is not a qm connection file: {e}"))
    }

    /// The fingerprint as bytes, when it is well formed.
    pub fn fingerprint_bytes(&self) -> Result<Option<[u8; 32]>, String> {
        self.fingerprint.as_deref().map(parse_fingerprint).transpose()
    }
}

/// Reads a SHA-256 fingerprint in hex, with or without `:` between bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad =
        || format!("fingerprint '{}' is not 64 hexadecimal digits (SHA-256)", text.escape_debug());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A fingerprint in the form connection files use.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(Address::parse("unix:/a/b.sock").unwrap(), Address::Unix("/a/b.sock".into()));
        assert_eq!(
            Address::parse("tcp://h:53000").unwrap(),
            Address::Tcp { host: "h".into(), port: 53000 }
        );
        assert_eq!(
            Address::parse("tls+tcp://[::1]:7").unwrap(),
            Address::Tls { host: "::1".into(), port: 7 }
        );
        assert_eq!(Address::parse("tls+tcp://[::1]:7").unwrap().to_string(), "tls+tcp://[::1]:7");
        for bad in ["", "unix:", "http://h:1", "tcp://h", "tcp://h:0", "tcp://h:70000", "tcp://:5"]
        {
            let e = Address::parse(bad).unwrap_err();
            assert!(e.contains(ADDRESS_FORMS), "{e}");
        }
    }

    #[test]
    fn lists() {
        let list = Address::parse_list("tcp://a:1, tcp://b:2").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "tcp://b:2");
        let e = Address::parse_list("tcp://a:1,b").unwrap_err();
        assert!(e.contains("'b'"), "{e}");
    }

    #[test]
    fn fingerprints() {
        let bytes: Vec<u8> = (0..32).collect();
        let text = format_fingerprint(&bytes);
        assert_eq!(parse_fingerprint(&text).unwrap().to_vec(), bytes);
        let colons: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap().to_vec(), bytes);
        assert!(parse_fingerprint("abc").is_err());
    }
}
