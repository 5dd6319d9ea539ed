//! Who a session speaks for, and through which face of the daemon it came.
//!
//! A principal is what rights are granted to: on the control socket the peer's Unix user
//! (`unix:alice`), over TLS the identity in the client's certificate (`cert:render-17`),
//! and over plain TCP or plain HTTP nobody in particular (`anonymous`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The principal of a session, in its written form (`unix:alice`, `cert:render-17`,
/// `anonymous`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Principal(String);

/// The principal of a peer that proved nothing about itself.
pub const ANONYMOUS: &str = "anonymous";

impl Principal {
    /// A local user, by name when the system knows one, else by number.
    pub fn unix(uid: u32) -> Principal {
        let name = crate::trust::user_name(uid).unwrap_or_else(|| uid.to_string());
        Principal(format!("unix:{name}"))
    }

    /// The holder of a client certificate whose identity is `id`.
    pub fn cert(id: &str) -> Principal {
        Principal(format!("cert:{id}"))
    }

    pub fn anonymous() -> Principal {
        Principal(ANONYMOUS.to_string())
    }

    /// Takes a principal as an operator wrote it; `None` unless it has one of the three
    /// forms (`unix:NAME`, `cert:ID`, `anonymous`) or contains a `*` pattern.
    pub fn parse(text: &str) -> Option<Principal> {
        let ok = text == ANONYMOUS
            || text.contains('*')
            || ["unix:", "cert:"]
                .iter()
                .any(|p| text.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        ok.then(|| Principal(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_anonymous(&self) -> bool {
        self.0 == ANONYMOUS
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The way a session reached the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Face {
    /// The local control socket.
    Socket,
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Tls,
    /// The HTTP face (plain or HTTPS).
    Http,
}

impl Face {
    pub fn label(self) -> &'static str {
        match self {
            Face::Socket => "socket",
            Face::Tcp => "tcp",
            Face::Tls => "tls",
            Face::Http => "http",
        }
    }

    /// Whether the session came from another machine's reach (anything but the socket).
    pub fn is_network(self) -> bool {
        self != Face::Socket
    }
}
