//! TLS material shared by the daemon and its clients: PEM files read with the same care as
//! any file qm trusts, the crypto provider (ring), and the client's configuration from the
//! environment (`QM_CLIENT_CERT_KEY`, `QM_CLIENT_SERVER_NAME`, `QM_CLIENT_CA_CHAIN`).
//!
//! A TLS client never proceeds with a server it has not verified: either against a CA chain
//! or against the certificate fingerprint a connection file gives.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The client's certificate chain and private key (PEM, one file).
pub const CLIENT_CERT_KEY_ENV: &str = "QM_CLIENT_CERT_KEY";
/// The name to expect in the server's certificate (default: the host connected to).
pub const CLIENT_SERVER_NAME_ENV: &str = "QM_CLIENT_SERVER_NAME";
/// The CA chain (PEM) the server's certificate must chain to.
pub const CLIENT_CA_CHAIN_ENV: &str = "QM_CLIENT_CA_CHAIN";

/// Largest PEM file read: certificate chains are a few kilobytes.
const PEM_MAX: u64 = 1024 * 1024;

/// The crypto provider every TLS configuration of qm uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate, as connection files give it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Reads a PEM file `what` is made of. Others must not be able to change it (it decides
/// whom qm believes); a file holding a private key must not be readable by them either.
pub fn read_pem(path: &Path, what: &str, private: bool) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} {shown} is not a regular file"));
    }
    // Whoever owns it could change it: only our own files and root's are believed.
    if !crate::trust::is_trusted_user(meta.uid()) {
        return Err(format!(
            "{what} {shown} belongs to {}; qm trusts only files of {} here",
            crate::trust::describe_user(meta.uid()),
            crate::trust::trusted_users()
        ));
    }
    let mode = meta.mode();
    let mask = if private { 0o077 } else { 0o022 };
    if mode & mask != 0 {
        let who = if private { "read or changed" } else { "changed" };
        return Err(format!(
            "{what} {shown} may be {who} by others (mode {}); qm does not use it: chmod {} it",
            crate::trust::mode_text(mode),
            if private { "600" } else { "644" }
        ));
    }
    let mut bytes = Vec::new();
    file.take(PEM_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    Ok(bytes)
}

/// A certificate chain and its private key, from one PEM file.
pub fn cert_and_key(
    path: &Path,
    what: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let pem = read_pem(path, what, true)?;
    let shown = path.display();
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {shown}: bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {shown} holds no certificate (PEM CERTIFICATE block)"));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{what} {shown} holds no usable private key: {e}"))?;
    Ok((certs, key))
}

/// The certificates of CA chain files, as trust anchors.
pub fn ca_roots(paths: &[std::path::PathBuf], what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        let pem = read_pem(path, what, false)?;
        let shown = path.display();
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what} {shown}: bad PEM certificate: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what} {shown} holds no certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{what} {shown}: unusable certificate: {e}"))?;
        }
    }
    Ok(roots)
}

/// What a TLS client needs to connect.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// The files and name a TLS client uses; [`ClientTlsFiles::from_env`] reads them from the
/// environment, as qmadmin does.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// The client's certificate chain and key (PEM, one file): presented when the server
    /// asks for a client certificate.
    pub cert_key: Option<PathBuf>,
    /// The name expected in the server's certificate; default: the host connected to.
    pub server_name: Option<String>,
    /// The CA chain the server's certificate must chain to.
    pub ca_chain: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn from_env() -> ClientTlsFiles {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        ClientTlsFiles {
            cert_key: env(CLIENT_CERT_KEY_ENV).map(PathBuf::from),
            server_name: env(CLIENT_SERVER_NAME_ENV).map(|v| v.to_string_lossy().into_owned()),
            ca_chain: env(CLIENT_CA_CHAIN_ENV).map(PathBuf::from),
        }
    }
}

/// The client's TLS configuration for `host`. `pinned`: the server certificate's SHA-256
/// from a connection file, which verifies the server by itself; without it the CA chain
/// must be given to verify against.
pub fn client_config(
    host: &str,
    pinned: Option<[u8; 32]>,
    files: &ClientTlsFiles,
) -> Result<ClientTls, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (pinned, &files.ca_chain) {
        (Some(fp), _) => builder.dangerous().with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fp,
            provider: provider(),
        })),
        (None, Some(ca)) => {
            let roots = ca_roots(std::slice::from_ref(ca), &format!("{CLIENT_CA_CHAIN_ENV} file"))?;
            builder.with_root_certificates(roots)
        }
        (None, None) => {
            return Err(format!(
                "cannot verify the server: set {CLIENT_CA_CHAIN_ENV} to the CA chain its \
                 certificate chains to, or connect with its connection file (qmd -c), which \
                 holds its certificate's fingerprint; a TLS client never goes on unverified"
            ));
        }
    };
    let config = match &files.cert_key {
        Some(path) => {
            let (certs, key) = cert_and_key(path, &format!("{CLIENT_CERT_KEY_ENV} file"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{CLIENT_CERT_KEY_ENV}: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let name = files.server_name.clone().unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("'{}' is not a server name TLS can check", name.escape_debug()))?;
    Ok(ClientTls { config: Arc::new(config), server_name })
}

/// Believes exactly the server whose certificate has the given SHA-256, whatever its name
/// or issuer; the handshake's signatures are still checked, so the server must hold the key.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one its connection file names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
