//! The harness works end to end: a request goes through the proxy to the origin and back.

use accel_e2e::{FakeOrigin, TestProxy};

#[tokio::test]
async fn a_request_passes_through_the_proxy_to_the_origin() {
    let origin = FakeOrigin::new().route("/a", "hi").header("x-origin", "fake").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(
            r#"
            [[route]]
            name = "all"
            upstream = "api"
            "#,
        )
        .start()
        .await;

    let response = proxy.get("/a").await;

    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hi");
    assert_eq!(response.header("x-origin"), Some("fake"));
    assert_eq!(origin.hits("/a"), 1);
    let metrics = proxy.metrics_text().await;
    assert!(
        metrics.contains(r#"accel_requests_total{route="all",method="GET",status="2xx"} 1"#),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_private_redis_server_starts_dies_and_restarts_on_its_port() {
    let Some(mut redis) = accel_e2e::private_redis().await else { return };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], redis.port()));
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    redis.kill();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "killed means refused");
    redis.restart().await.expect("redis-server restarts");
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok(), "back on the same port");
}
