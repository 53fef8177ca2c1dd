//! TLS for the client listener: rustls with the certificate from PEM files and ALPN offering
//! `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate of several, chosen by SNI: its PEM files and the host names it serves.
#[derive(Debug, Clone)]
pub struct SniCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub names: Vec<String>,
}

/// Builds the server configuration for one certificate, served whatever name the client asks
/// for. `Err((key, message))` names the config key at fault (`cert` or `key`).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let (certs, key_der) = read_pair(cert, key)?;
    let config = builder().with_single_cert(certs, key_der).map_err(|e| ("key", not_a_pair(cert, key, e)))?;
    Ok(with_alpn(config))
}

/// Builds the server configuration for several certificates, chosen by the name the client
/// sends (SNI); a client that sends none, or a name no certificate lists, gets the first.
/// Every certificate must list its names, and each name must be one the certificate is valid
/// for. `Err((index, key, message))` names the entry and its key (`cert`, `key` or `names`).
pub fn sni_server_config(certs: &[SniCert]) -> Result<Arc<ServerConfig>, (usize, &'static str, String)> {
    let provider = provider();
    let mut by_name = ResolvesServerCertUsingSni::new();
    let mut default = None;
    for (i, entry) in certs.iter().enumerate() {
        let (chain, key_der) = read_pair(&entry.cert, &entry.key).map_err(|(key, e)| (i, key, e))?;
        let certified = CertifiedKey::from_der(chain, key_der, &provider)
            .map_err(|e| (i, "key", not_a_pair(&entry.cert, &entry.key, e)))?;
        if entry.names.is_empty() {
            let message = "with several certificates, each lists the host names it serves";
            return Err((i, "names", message.into()));
        }
        for name in &entry.names {
            if name.contains('*') {
                let message = format!("`{name}`: list exact host names (SNI is matched exactly)");
                return Err((i, "names", message));
            }
            by_name.add(name, certified.clone()).map_err(|e| {
                let cert = entry.cert.display();
                (i, "names", format!("the certificate in {cert} does not serve `{name}`: {e}"))
            })?;
        }
        default.get_or_insert_with(|| Arc::new(certified));
    }
    let default = default.ok_or((0, "cert", "no certificate listed".to_owned()))?;
    let resolver = SniOrFirst { by_name, default };
    Ok(with_alpn(builder().with_cert_resolver(Arc::new(resolver))))
}

/// The certificate for the client's SNI name, else the first one configured.
#[derive(Debug)]
struct SniOrFirst {
    by_name: ResolvesServerCertUsingSni,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniOrFirst {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_owned);
        self.by_name.resolve(hello).or_else(|| {
            tracing::debug!(sni = ?name, "no certificate lists this name: serving the first");
            Some(self.default.clone())
        })
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn builder() -> rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert> {
    ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the safe default TLS versions")
        .with_no_client_auth()
}

fn with_alpn(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The certificate chain and private key from their PEM files.
fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ("cert", format!("cannot read certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(("cert", format!("no certificate in {}", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("key", format!("cannot read a private key from {}: {e}", key.display())))?;
    Ok((certs, key_der))
}

fn not_a_pair(cert: &Path, key: &Path, e: rustls::Error) -> String {
    let (cert, key) = (cert.display(), key.display());
    format!("the certificate in {cert} and the key in {key} do not form a usable pair: {e}")
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

    #[test]
    fn several_certificates_need_names_each_certificate_serves() {
        let dir = std::env::temp_dir().join(format!("accel-tls-sni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = |name: &str| {
            let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).unwrap();
            SniCert {
                cert: write(&dir, &format!("{name}.pem"), &cert.cert.pem()),
                key: write(&dir, &format!("{name}.key"), &cert.signing_key.serialize_pem()),
                names: vec![format!("{name}.test")],
            }
        };
        let (a, b) = (pair("a"), pair("b"));
        let config = sni_server_config(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

        let unnamed = SniCert { names: vec![], ..b.clone() };
        let (i, key, _) = sni_server_config(&[a.clone(), unnamed]).unwrap_err();
        assert_eq!((i, key), (1, "names"));

        let wrong = SniCert { names: vec!["a.test".into()], ..b.clone() };
        let (i, key, message) = sni_server_config(&[a.clone(), wrong]).unwrap_err();
        assert_eq!((i, key), (1, "names"));
        assert!(message.contains(&b.cert.display().to_string()) && message.contains("a.test"), "{message}");

        let wildcard = SniCert { names: vec!["*.test".into()], ..b.clone() };
        assert_eq!(sni_server_config(&[a.clone(), wildcard]).unwrap_err().1, "names");

        let mismatched = SniCert { key: a.key.clone(), ..b.clone() };
        let (i, key, message) = sni_server_config(&[a, mismatched]).unwrap_err();
        assert_eq!((i, key), (1, "key"));
        assert!(message.contains(&b.cert.display().to_string()), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
