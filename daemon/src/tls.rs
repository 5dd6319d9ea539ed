//! The TLS side of the network face: the server's certificate and key (`-k`), the CA chains
//! client certificates must chain to (`-a`), re-read at `daemon reload` and SIGHUP without
//! touching connections already made, and the principal a client certificate names.

use glob::glob;
use qm_common::principal::Principal;
use qm_common::tls::{ca_roots, cert_and_key, fingerprint, provider};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The server's certificate and key, when not given with `-k`.
pub const SERVER_CERT_KEY_ENV: &str = "QM_SERVER_CERT_KEY";
/// The CA chains of client certificates, when not given with `-a` (colon-separated).
pub const SERVER_CA_CHAINS_ENV: &str = "QM_SERVER_CA_CHAINS";

/// The server's TLS settings and what was last loaded from them.
pub struct TlsFace {
    cert_key: PathBuf,
    /// CA chain files or glob patterns, as given; expanded at every load.
    ca_patterns: Vec<String>,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    acceptor: TlsAcceptor,
    fingerprint: [u8; 32],
}

impl TlsFace {
    /// Loads the certificate, key and CA chains; refuses with why when any is unusable.
    pub fn load(cert_key: PathBuf, ca_patterns: Vec<String>) -> Result<TlsFace, String> {
        let loaded = load(&cert_key, &ca_patterns)?;
        Ok(TlsFace { cert_key, ca_patterns, current: RwLock::new(loaded) })
    }

    /// Reads the files again. New connections use what was read; connections already made
    /// keep theirs. On a failure nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load(&self.cert_key, &self.ca_patterns)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|p| p.into_inner()).acceptor.clone()
    }

    /// SHA-256 of the server certificate now in use.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.current.read().unwrap_or_else(|p| p.into_inner()).fingerprint
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        !self.ca_patterns.is_empty()
    }
}

fn load(cert_key: &std::path::Path, ca_patterns: &[String]) -> Result<Loaded, String> {
    let (certs, key) = cert_and_key(cert_key, "server certificate and key (-k)")?;
    let fingerprint = fingerprint(&certs[0]);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if ca_patterns.is_empty() {
        builder.with_no_client_auth()
    } else {
        let files = expand(ca_patterns)?;
        let roots = ca_roots(&files, "CA chain (-a)")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("CA chains (-a): {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate and key {}: {e}", cert_key.display()))?;
    Ok(Loaded { acceptor: TlsAcceptor::from(Arc::new(config)), fingerprint })
}

/// The files `-a` names: each item a file or a glob pattern that must match at least one.
fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for pattern in patterns {
        let matches = glob(pattern)
            .map_err(|e| format!("CA chain pattern '{pattern}' (-a): {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA chain pattern '{pattern}' (-a): {e}"))?;
        if matches.is_empty() {
            return Err(format!("CA chain '{pattern}' (-a) names no file"));
        }
        files.extend(matches);
    }
    Ok(files)
}

/// Splits `-a`'s comma-separated list, or the environment's colon-separated one.
pub fn ca_list(option: Option<&str>) -> Vec<String> {
    let (text, sep) = match option {
        Some(t) => (t.to_string(), ','),
        None => match std::env::var(SERVER_CA_CHAINS_ENV) {
            Ok(t) => (t, ':'),
            Err(_) => return Vec::new(),
        },
    };
    text.split(sep).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The principal a client certificate names: its first URI, DNS name or email address
/// (in that order of preference), else its subject's common name.
pub fn principal_of(cert: &[u8]) -> Result<Principal, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert)
        .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let mut names: Vec<(u8, String)> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => names.push((0, u.to_string())),
                GeneralName::DNSName(d) => names.push((1, d.to_string())),
                GeneralName::RFC822Name(m) => names.push((2, m.to_string())),
                _ => {}
            }
        }
    }
    names.sort_by_key(|(rank, _)| *rank);
    let id = match names.into_iter().next() {
        Some((_, id)) => id,
        None => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .ok_or(
                "the client certificate names nobody (no URI, DNS or email name, no common name)",
            )?,
    };
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the client certificate's identity '{}' is empty or holds spaces or control characters",
            id.escape_debug()
        ));
    }
    Ok(Principal::cert(&id))
}
