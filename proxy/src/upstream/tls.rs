//! TLS to an upstream's endpoints (`tls = { ... }` in `[upstreams.NAME]`): rustls, TLS 1.2
//! and up, ALPN `http/1.1`, the certificate verified by default against the webpki roots (the
//! Mozilla set) or the operator's CA file, for the endpoint's host name or a configured
//! `server_name`. `verify = false` accepts any certificate and is for testing only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::h1::Stream;
use crate::name::EndpointAddr;

/// How an upstream's connections are secured.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The CA file the certificates are verified against; `None`: the webpki roots.
    pub ca: Option<PathBuf>,
    /// The CA certificates read from `ca`, so a reload notices a changed file.
    roots: Vec<CertificateDer<'static>>,
    /// The name verified and sent as SNI; `None`: each endpoint's host (name or IP address).
    pub server_name: Option<ServerName<'static>>,
    /// False: any certificate is accepted (testing only).
    pub verify: bool,
    client: Arc<ClientConfig>,
}

/// Two settings are the same when they would verify the same way (the connector is derived).
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.roots == other.roots
            && self.server_name == other.server_name
            && self.verify == other.verify
    }
}

impl Eq for UpstreamTls {}

/// A setting that cannot be used: the key under `tls` it is about, and why.
pub type TlsProblem = (&'static str, String);

impl UpstreamTls {
    /// Reads `ca` (PEM, one certificate or more) when given and builds the client side.
    pub fn new(ca: Option<&Path>, server_name: Option<&str>, verify: bool) -> Result<Self, TlsProblem> {
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|e| ("server_name", format!("{name:?} is not a DNS name or IP address: {e}")))
            })
            .transpose()?;
        let mut store = RootCertStore::empty();
        let roots = match ca {
            Some(path) => {
                let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| ("ca", format!("cannot read certificates from {}: {e}", path.display())))?;
                if roots.is_empty() {
                    return Err(("ca", format!("no certificate in {}", path.display())));
                }
                for root in &roots {
                    store.add(root.clone()).map_err(|e| {
                        ("ca", format!("{} holds an unusable CA certificate: {e}", path.display()))
                    })?;
                }
                roots
            }
            None => {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                Vec::new()
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ("ca", e.to_string()))?;
        let mut client = if verify {
            builder.with_root_certificates(store).with_no_client_auth()
        } else {
            let any = AnyCertificate { algorithms: provider.signature_verification_algorithms };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(any)).with_no_client_auth()
        };
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { ca: ca.map(Path::to_path_buf), roots, server_name, verify, client: Arc::new(client) })
    }

    /// The TLS handshake with `addr` on `tcp`.
    pub async fn connect(&self, addr: &EndpointAddr, tcp: TcpStream) -> std::io::Result<Stream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => endpoint_name(addr)?,
        };
        let tls = TlsConnector::from(self.client.clone()).connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// The name an endpoint's certificate is verified for: its host, a DNS name or an IP address.
fn endpoint_name(addr: &EndpointAddr) -> std::io::Result<ServerName<'static>> {
    let host = addr.authority().host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `verify = false`: any certificate for any name, the handshake's signatures still checked.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
