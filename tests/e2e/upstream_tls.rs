//! TLS to upstreams (`[upstreams.NAME] tls = { ... }`): an origin behind TLS with a test CA
//! is reached when the proxy trusts that CA; a certificate from another CA, or for another
//! name, fails the handshake, which is a connect error (502) that never reaches the origin;
//! `verify = false` accepts a self-signed certificate. Health checks go over TLS too, and a
//! reload reads the CA file again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, eventually_async};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::tls::Ca;

/// A TLS front for `origin`: terminates TLS with this certificate and key (PEM) and passes
/// the bytes to the origin over TCP, so the origin's hit counts show what got through.
async fn tls_front(origin: &OriginHandle, pair: (String, String)) -> SocketAddr {
    tls_front_counted(origin, pair).await.0
}

/// As [`tls_front`], with the count of TLS connections it accepted.
async fn tls_front_counted(
    origin: &OriginHandle,
    (cert, key): (String, String),
) -> (SocketAddr, Arc<AtomicUsize>) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = origin.addr();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                // A failed handshake closes the connection: nothing reaches the origin.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(origin).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, accepted)
}

/// A proxy to the TLS front, with `tls` for the upstream and `ca_pem` written as `ca.pem`
/// next to `accel.toml` (CA paths are relative to the config file).
async fn proxy(front: SocketAddr, tls: &str, ca_pem: &str) -> TestProxy {
    TestProxy::builder()
        .file("ca.pem", ca_pem)
        .upstream_with("api", &[front], &format!("tls = {tls}\nmax_idle_per_endpoint = 4"))
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .start()
        .await
}

fn connect_errors(front: SocketAddr) -> String {
    format!(r#"accel_upstream_requests_total{{upstream="api",endpoint="{front}",outcome="connect_error"}}"#)
}

#[tokio::test]
async fn an_origin_behind_tls_is_reached_with_the_custom_ca() {
    let origin = FakeOrigin::new().route("/a", "secret over tls").start().await;
    let ca = Ca::new("Upstream CA");
    let (front, accepted) = tls_front_counted(&origin, ca.server_pair_for("api.internal")).await;
    let proxy = proxy(front, r#"{ ca = "ca.pem", server_name = "api.internal" }"#, &ca.pem()).await;

    for _ in 0..3 {
        let answer = proxy.get("/a").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "secret over tls");
    }
    assert_eq!(origin.hits("/a"), 3);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one kept-alive TLS connection for all three");
    assert_eq!(proxy.metric(&connect_errors(front)).await, 0.0);
}

#[tokio::test]
async fn an_ip_endpoint_is_verified_against_its_address() {
    let origin = FakeOrigin::new().route("/a", "by address").start().await;
    let ca = Ca::new("Upstream CA");
    let front = tls_front(&origin, ca.server_pair_for("127.0.0.1")).await;
    let proxy = proxy(front, r#"{ ca = "ca.pem" }"#, &ca.pem()).await;

    let answer = proxy.get("/a").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "by address");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_502_and_the_origin_sees_nothing() {
    let origin = FakeOrigin::new().route("/a", "never").start().await;
    let front = tls_front(&origin, Ca::new("Real CA").server_pair_for("api.internal")).await;
    let proxy =
        proxy(front, r#"{ ca = "ca.pem", server_name = "api.internal" }"#, &Ca::new("Other CA").pem()).await;

    let answer = proxy.get("/a").await;
    assert_eq!(answer.status, 502);
    assert_eq!(origin.hits("/a"), 0, "the handler never ran");
    assert!(proxy.metric(&connect_errors(front)).await >= 1.0, "the handshake failure is counted");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let origin = FakeOrigin::new().route("/a", "never").start().await;
    let ca = Ca::new("Upstream CA");
    let front = tls_front(&origin, ca.server_pair_for("other.internal")).await;
    let proxy = proxy(front, r#"{ ca = "ca.pem", server_name = "api.internal" }"#, &ca.pem()).await;

    assert_eq!(proxy.get("/a").await.status, 502);
    assert_eq!(origin.hits("/a"), 0);
}

#[tokio::test]
async fn a_self_signed_origin_is_reached_only_without_verification() {
    let origin = FakeOrigin::new().route("/a", "self-signed").start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let front = tls_front(&origin, (cert.pem(), key.serialize_pem())).await;

    // Verified against the default roots: refused.
    let verified = proxy(front, "{}", "").await;
    assert_eq!(verified.get("/a").await.status, 502);
    assert_eq!(origin.hits("/a"), 0);

    let unverified = proxy(front, "{ verify = false }", "").await;
    let answer = unverified.get("/a").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "self-signed");
}

#[tokio::test]
async fn health_checks_go_over_tls() {
    let origin = FakeOrigin::new().route("/health", "ok").start().await;
    let ca = Ca::new("Upstream CA");
    let front = tls_front(&origin, ca.server_pair_for("api.internal")).await;
    let proxy = TestProxy::builder()
        .file("ca.pem", &ca.pem())
        .upstream_with(
            "api",
            &[front],
            "tls = { ca = \"ca.pem\", server_name = \"api.internal\" }\n\
             health = { path = \"/health\", interval = \"50ms\" }",
        )
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .start()
        .await;
    // The front speaks only TLS: a check that reaches the origin went through the handshake.
    eventually_async("health checks reach the origin over TLS", || async { origin.hits("/health") >= 2 })
        .await;
    let healthy = format!(r#"accel_endpoint_healthy{{upstream="api",endpoint="{front}"}}"#);
    assert_eq!(proxy.metric(&healthy).await, 1.0);
}

#[tokio::test]
async fn a_reload_reads_the_ca_file_again() {
    let origin = FakeOrigin::new().route("/a", "trusted now").start().await;
    let ca = Ca::new("Upstream CA");
    let front = tls_front(&origin, ca.server_pair_for("api.internal")).await;
    let proxy =
        proxy(front, r#"{ ca = "ca.pem", server_name = "api.internal" }"#, &Ca::new("Old CA").pem()).await;
    assert_eq!(proxy.get("/a").await.status, 502);

    proxy.rewrite_file("ca.pem", &ca.pem());
    proxy.reload_config().unwrap();
    let answer = proxy.get("/a").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "trusted now");
    assert_eq!(origin.hits("/a"), 1);
}
