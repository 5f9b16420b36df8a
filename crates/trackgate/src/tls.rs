//! TLS for the HTTPS listener: TLS 1.2 and 1.3 only, ring provider, ALPN h2 and http/1.1.
//! In dev mode without a configured certificate, a self-signed one is generated once into the
//! data directory and its path and SHA-256 fingerprint are logged so clients can trust it.

use crate::config::TlsFiles;
use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The dev certificate and key paths under `data_dir`.
pub fn dev_paths(data_dir: &Path) -> TlsFiles {
    let dir = data_dir.join("tls");
    TlsFiles {
        cert: dir.join("dev-cert.pem"),
        key: dir.join("dev-key.pem"),
    }
}

/// Generate a self-signed certificate for localhost, 127.0.0.1 and ::1, unless one is there.
pub fn ensure_dev_certificate(data_dir: &Path) -> anyhow::Result<TlsFiles> {
    let files = dev_paths(data_dir);
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).context("generating the dev certificate")?;
    let dir = files.cert.parent().expect("dev paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, certified.cert.pem()).with_context(|| format!("writing {}", files.cert.display()))?;
    Ok(files)
}

/// The same server configuration without ALPN, for MQTT (its clients offer none, or `mqtt`).
pub fn without_alpn(config: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut c = (**config).clone();
    c.alpn_protocols.clear();
    Arc::new(c)
}

/// The leaf certificate's identity, for the log and the expiry alert.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    /// SHA-256 fingerprint, colon-separated hex.
    pub fingerprint: String,
    /// `notAfter`, in Unix seconds.
    pub not_after: i64,
}

/// The rustls server configuration, and what the leaf certificate says of itself.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<(Arc<ServerConfig>, LeafInfo)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading TLS certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", files.cert.display()))?;
    let leaf = certs
        .first()
        .with_context(|| format!("no certificate in {}", files.cert.display()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| anyhow::anyhow!("parsing TLS certificate {}: {e}", files.cert.display()))?;
    let info = LeafInfo {
        fingerprint: fingerprint(leaf),
        not_after: parsed.validity().not_after.timestamp(),
    };
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading TLS private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("TLS certificate {} does not match its key", files.cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), info))
}

/// A TLS client configuration for trackgate's own outgoing connections (the MQTT broker): TLS 1.2
/// and 1.3, the server verified against `ca`, optionally a client certificate.
pub fn client_config(ca: &Path, client: Option<&TlsFiles>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate {} is not usable", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match client {
        Some(files) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
                .with_context(|| format!("reading client certificate {}", files.cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing client certificate {}", files.cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&files.key)
                .with_context(|| format!("reading client key {}", files.key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .context("client certificate does not match its key")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The PEM certificates in `path`.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading CA certificate {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing CA certificate {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// `AB:CD:...` SHA-256 of the DER certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certificate(dir.path()).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        let (config, leaf) = server_config(&files).unwrap();
        assert_eq!(leaf.fingerprint.len(), 32 * 3 - 1);
        // rcgen's self-signed certificates are valid until 4096.
        assert!(leaf.not_after > 4_000_000_000, "{}", leaf.not_after);
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        ensure_dev_certificate(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(&files.cert).unwrap(),
            first,
            "an existing certificate is kept"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
