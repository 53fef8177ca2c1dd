//! The TLS listener end to end: a certificate signed by a test CA, real TLS clients choosing
//! `h2` or `http/1.1` by ALPN, a client of an old protocol version refused, a client that
//! trusts another CA failing the handshake, certificates chosen by SNI, and certificates
//! replaced on disk reloaded without dropping a connection.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use accel_e2e::{FakeOrigin, TestProxy, eventually_async};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test certificate authority.
pub(super) struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    /// A CA named `name`: two CAs of one test must differ by name, as real ones do.
    pub(super) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A server certificate for `localhost` signed by this CA: (certificate PEM, key PEM).
    fn server_pair(&self) -> (String, String) {
        self.server_pair_for("localhost")
    }

    /// A server certificate for `name` signed by this CA: (certificate PEM, key PEM).
    pub(super) fn server_pair_for(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// This CA's certificate, PEM.
    pub(super) fn pem(&self) -> String {
        self.0.pem()
    }

    /// A client configuration trusting only this CA and offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.0.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

async fn proxy_with_tls(ca: &Ca, origin: &accel_e2e::OriginHandle) -> TestProxy {
    let (cert, key) = ca.server_pair();
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .tls(&cert, &key)
        .start()
        .await
}

#[tokio::test]
async fn alpn_h2_is_negotiated_and_a_request_is_answered_over_h2() {
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let proxy = proxy_with_tls(&ca, &origin).await;

    let stream = connect(&ca.client(&[b"h2", b"http/1.1"]), proxy.tls_addr()).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/a").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();

    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "over tls");
    assert_eq!(origin.hits("/a"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn alpn_http_1_1_is_negotiated_and_a_request_is_answered_over_http_1_1() {
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let proxy = proxy_with_tls(&ca, &origin).await;

    let stream = connect(&ca.client(&[b"http/1.1"]), proxy.tls_addr()).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("/a").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();

    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "over tls");
    assert_eq!(origin.hits("/a"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let proxy = proxy_with_tls(&ca, &origin).await;

    let error = connect(&Ca::new("Another CA").client(&[b"h2"]), proxy.tls_addr()).await.unwrap_err();

    let rustls_error = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        ),
        "{error:?}"
    );
    // The same listener still serves a client that trusts its CA.
    assert!(connect(&ca.client(&[b"h2"]), proxy.tls_addr()).await.is_ok());
    assert_eq!(origin.hits("/a"), 0);
    proxy.shutdown().await;
}

/// `openssl s_client` at `version` (e.g. `-tls1_1`) against `addr`: whether the handshake
/// succeeded, and what it printed. Security level 0 lets OpenSSL itself offer old versions.
fn s_client(addr: SocketAddr, version: &str) -> (bool, String) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", version])
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text =
        format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test]
async fn a_client_limited_to_tls_1_1_is_refused() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no `openssl` binary to speak TLS 1.1 (rustls clients cannot)");
        return;
    }
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let proxy = proxy_with_tls(&ca, &origin).await;
    let addr = proxy.tls_addr();

    let (tls12, tls12_text) = tokio::task::spawn_blocking(move || s_client(addr, "-tls1_2")).await.unwrap();
    let (tls11, tls11_text) = tokio::task::spawn_blocking(move || s_client(addr, "-tls1_1")).await.unwrap();

    // The same client at TLS 1.2 gets through: the refusal below is the version's.
    assert!(tls12, "{tls12_text}");
    assert!(tls12_text.contains("TLSv1.2"), "{tls12_text}");
    assert!(!tls11, "{tls11_text}");
    // Refused by the server's alert, not by OpenSSL before sending.
    assert!(tls11_text.contains("SSL alert number"), "{tls11_text}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn several_certificates_are_chosen_by_the_clients_sni_name() {
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let (a_cert, a_key) = ca.server_pair_for("a.test");
    let (b_cert, b_key) = ca.server_pair_for("b.test");
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .tls_with(
            r#"[
                { cert = "a.pem", key = "a.key", names = ["a.test"] },
                { cert = "b.pem", key = "b.key", names = ["b.test"] },
            ]"#,
            &[("a.pem", &a_cert), ("a.key", &a_key), ("b.pem", &b_cert), ("b.key", &b_key)],
        )
        .start()
        .await;

    for (name, pem) in [("a.test", &a_cert), ("b.test", &b_cert)] {
        let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        // The client checks the certificate is valid for the name it asked for.
        let stream = ca.client(&[b"http/1.1"]).connect(server_name, tcp).await.unwrap();
        let served = &stream.get_ref().1.peer_certificates().unwrap()[0];
        let expected = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(served, &expected, "{name}");
    }
    // A name no certificate lists gets the first one (which the client then finds not valid
    // for that name) rather than a refused handshake.
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let unknown = ServerName::try_from("c.test").unwrap();
    let error = ca.client(&[b"http/1.1"]).connect(unknown, tcp).await.unwrap_err();
    assert!(format!("{error:?}").contains("NotValidForName"), "{error:?}");
    proxy.shutdown().await;
}

/// The leaf certificate the server presented on `stream`.
fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("the server's certificates")[0].clone().into_owned()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The leaf certificate a new handshake with `addr` gets.
async fn served_now(connector: &TlsConnector, addr: SocketAddr) -> CertificateDer<'static> {
    served(&connect(connector, addr).await.expect("a handshake"))
}

/// `GET path` on an open HTTP/1.1 connection: the status.
async fn status_of(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> u16 {
    let request = Request::get(path).header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.expect("an answer on the open connection");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("the body");
    status
}

const RELOAD_ERROR: &str = r#"accel_config_reloads_total{result="error"}"#;

#[tokio::test]
async fn a_replaced_certificate_serves_new_handshakes_while_open_connections_keep_theirs() {
    let origin = FakeOrigin::new().route("/a", "over tls").start().await;
    let ca = Ca::new("Test CA");
    let (a_cert, a_key) = ca.server_pair();
    let (b_cert, b_key) = ca.server_pair();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .tls(&a_cert, &a_key)
        .start()
        .await;
    let client = ca.client(&[b"http/1.1"]);

    // A connection opened on certificate A, answered.
    let stream = connect(&client, proxy.tls_addr()).await.unwrap();
    assert_eq!(served(&stream), der(&a_cert));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let open = tokio::spawn(connection);
    assert_eq!(status_of(&mut sender, "/a").await, 200);

    proxy.rewrite_file("key.pem", &b_key);
    proxy.rewrite_file("cert.pem", &b_cert);

    eventually_async("a new handshake gets certificate B", || async {
        served_now(&client, proxy.tls_addr()).await == der(&b_cert)
    })
    .await;
    // The connection opened before still answers, on its own session.
    assert_eq!(status_of(&mut sender, "/a").await, 200);
    assert!(!open.is_finished(), "the open connection was not dropped");

    // A broken certificate file: the reload is refused and counted, and B stays.
    let errors = proxy.metric(RELOAD_ERROR).await;
    proxy.rewrite_file("cert.pem", "not a certificate");
    eventually_async("the watcher refuses the broken file", || async {
        proxy.metric(RELOAD_ERROR).await > errors
    })
    .await;
    assert_eq!(served_now(&client, proxy.tls_addr()).await, der(&b_cert));
    let problems = proxy.reload().expect_err("the certificate file is broken").to_string();
    let file = proxy.file_path("cert.pem").display().to_string();
    assert!(problems.contains("listen.tls.cert") && problems.contains(&file), "{problems}");
    assert_eq!(status_of(&mut sender, "/a").await, 200);
    assert_eq!(origin.hits("/a"), 3);
    proxy.shutdown().await;
}
