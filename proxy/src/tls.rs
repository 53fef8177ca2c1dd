//! TLS for the client listener: rustls with certificates from PEM files, ALPN offering `h2`
//! and `http/1.1`, TLS 1.2 and 1.3 only.
//!
//! The listener's [`ServerConfig`] is built once, around [`LiveCertificates`]: a reload swaps
//! in the [`Certificates`] read again from their files. A handshake takes the certificates in
//! force when it starts; an established connection keeps its session (nothing of it is read
//! again), so a new certificate drops no connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
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

/// The listener's certificates as read from their files: one served whatever name the client
/// asks for, or several chosen by the name the client sends (SNI).
#[derive(Debug)]
pub struct Certificates {
    /// The certificates listing names, by name; empty for a single certificate.
    by_name: ResolvesServerCertUsingSni,
    /// Served when the client sends no name, or one no certificate lists: the first.
    default: Arc<CertifiedKey>,
    /// What is served, for comparing two reads: each certificate's names and chain.
    served: Vec<(Vec<String>, Vec<CertificateDer<'static>>)>,
    /// The PEM files read, certificate then key of each.
    files: Vec<PathBuf>,
}

impl Certificates {
    /// One certificate, served whatever name the client asks for. `Err((key, message))` names
    /// the config key at fault (`cert` or `key`) and the message names the file.
    pub fn one(cert: &Path, key: &Path) -> Result<Self, (&'static str, String)> {
        let certified = certified_key(cert, key)?;
        Ok(Self {
            by_name: ResolvesServerCertUsingSni::new(),
            served: vec![(Vec::new(), certified.cert.clone())],
            default: Arc::new(certified),
            files: vec![cert.to_path_buf(), key.to_path_buf()],
        })
    }

    /// Several certificates, chosen by the name the client sends (SNI); a client that sends
    /// none, or a name no certificate lists, gets the first. Every certificate must list its
    /// names, and each name must be one the certificate is valid for. `Err((index, key,
    /// message))` names the entry and its key (`cert`, `key` or `names`).
    pub fn by_sni(certs: &[SniCert]) -> Result<Self, (usize, &'static str, String)> {
        let mut by_name = ResolvesServerCertUsingSni::new();
        let (mut default, mut served, mut files) = (None, Vec::new(), Vec::new());
        for (i, entry) in certs.iter().enumerate() {
            let certified = certified_key(&entry.cert, &entry.key).map_err(|(key, e)| (i, key, e))?;
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
            served.push((entry.names.clone(), certified.cert.clone()));
            files.extend([entry.cert.clone(), entry.key.clone()]);
            default.get_or_insert_with(|| Arc::new(certified));
        }
        let default = default.ok_or((0, "cert", "no certificate listed".to_owned()))?;
        Ok(Self { by_name, default, served, files })
    }

    /// The PEM files these certificates were read from (certificate, then key, of each).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether `other` serves the same chains under the same names (keys follow their
    /// certificates: a pair is checked when read).
    pub fn serves_the_same(&self, other: &Self) -> bool {
        self.served == other.served
    }

    /// The certificate for the client's SNI name, else the first one.
    fn resolve(&self, hello: ClientHello<'_>) -> Arc<CertifiedKey> {
        let name = hello.server_name().map(str::to_owned);
        self.by_name.resolve(hello).unwrap_or_else(|| {
            if name.is_some() && self.served.iter().any(|(names, _)| !names.is_empty()) {
                tracing::debug!(sni = ?name, "no certificate lists this name: serving the first");
            }
            self.default.clone()
        })
    }
}

/// The certificates a running listener serves, replaced whole by a reload.
#[derive(Debug)]
pub struct LiveCertificates(ArcSwap<Certificates>);

impl LiveCertificates {
    /// Starts serving `certificates`.
    pub fn new(certificates: Arc<Certificates>) -> Arc<Self> {
        Arc::new(Self(ArcSwap::new(certificates)))
    }

    /// The listener's configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and these
    /// certificates as they are at each handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the safe default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Serves `next` from the next handshake on; true when it serves other certificates than
    /// those it replaces.
    pub fn replace(&self, next: Arc<Certificates>) -> bool {
        let changed = !self.0.load().serves_the_same(&next);
        self.0.store(next);
        changed
    }

    /// The certificates served now.
    pub fn current(&self) -> Arc<Certificates> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for LiveCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().resolve(hello))
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate chain and private key of one pair of PEM files, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, (&'static str, String)> {
    let (chain, key_der) = read_pair(cert, key)?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| ("key", not_a_pair(cert, key, e)))
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
        let certificates = Arc::new(Certificates::one(&cert_path, &key_path).unwrap());
        assert_eq!(certificates.files(), [cert_path.clone(), key_path.clone()]);
        let config = LiveCertificates::new(certificates).server_config();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

        let bad_key = write(&dir, "bad.pem", "not a key");
        assert_eq!(Certificates::one(&cert_path, &bad_key).unwrap_err().0, "key");
        assert_eq!(Certificates::one(&dir.join("missing.pem"), &key_path).unwrap_err().0, "cert");
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
        let certificates = Certificates::by_sni(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(certificates.files(), [a.cert.clone(), a.key.clone(), b.cert.clone(), b.key.clone()]);

        let unnamed = SniCert { names: vec![], ..b.clone() };
        let (i, key, _) = Certificates::by_sni(&[a.clone(), unnamed]).unwrap_err();
        assert_eq!((i, key), (1, "names"));

        let wrong = SniCert { names: vec!["a.test".into()], ..b.clone() };
        let (i, key, message) = Certificates::by_sni(&[a.clone(), wrong]).unwrap_err();
        assert_eq!((i, key), (1, "names"));
        assert!(message.contains(&b.cert.display().to_string()) && message.contains("a.test"), "{message}");

        let wildcard = SniCert { names: vec!["*.test".into()], ..b.clone() };
        assert_eq!(Certificates::by_sni(&[a.clone(), wildcard]).unwrap_err().1, "names");

        let mismatched = SniCert { key: a.key.clone(), ..b.clone() };
        let (i, key, message) = Certificates::by_sni(&[a, mismatched]).unwrap_err();
        assert_eq!((i, key), (1, "key"));
        assert!(message.contains(&b.cert.display().to_string()), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A replacement is told apart from a read of the same files, which a reload of the
    /// rules alone also makes.
    #[test]
    fn a_replacement_says_whether_the_certificates_changed() {
        let dir = std::env::temp_dir().join(format!("accel-tls-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = |name: &str| {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let cert_path = write(&dir, &format!("{name}.pem"), &cert.cert.pem());
            let key_path = write(&dir, &format!("{name}.key"), &cert.signing_key.serialize_pem());
            (cert_path, key_path)
        };
        let (a, b) = (pair("a"), pair("b"));
        let load = |(cert, key): &(PathBuf, PathBuf)| Arc::new(Certificates::one(cert, key).unwrap());
        let live = LiveCertificates::new(load(&a));

        assert!(!live.replace(load(&a)), "the same files read again");
        assert!(live.replace(load(&b)), "another certificate");
        assert!(live.current().serves_the_same(&load(&b)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
