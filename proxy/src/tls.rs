//! TLS for the client listener: rustls with the certificate from PEM files and ALPN offering
//! `h2` and `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the server configuration. `Err((key, message))` names the config key at fault
/// (`cert` or `key`).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ("cert", format!("cannot read certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(("cert", format!("no certificate in {}", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("key", format!("cannot read a private key from {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert", format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            let (cert, key) = (cert.display(), key.display());
            ("key", format!("the certificate in {cert} and the key in {key} do not form a usable pair: {e}"))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_self_signed_pair_loads_with_alpn() {
        let dir = std::env::temp_dir().join(format!("accel-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = write(&dir, "cert.pem", &cert.cert.pem());
        let key_path = write(&dir, "key.pem", &cert.signing_key.serialize_pem());
        let config = server_config(&cert_path, &key_path).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

        let bad_key = write(&dir, "bad.pem", "not a key");
        assert_eq!(server_config(&cert_path, &bad_key).unwrap_err().0, "key");
        assert_eq!(server_config(&dir.join("missing.pem"), &key_path).unwrap_err().0, "cert");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
