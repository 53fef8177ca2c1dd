//! Lifecycle: graceful shutdown stops accepting, lets in-flight requests finish, and gives up
//! on them after the drain deadline.

use std::time::Duration;

use accel_e2e::{Collected, FakeOrigin, Gate, TestProxy, accept_queue, body, eventually, within};
use http::Method;

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

/// Client connections the proxy has accepted, over its life.
const ACCEPTED: &str = "accel_downstream_connections_total";

async fn gated_origin(gate: &Gate) -> accel_e2e::OriginHandle {
    FakeOrigin::new().route("/*", "").gated(gate, "finished").start().await
}

/// Waits until connections to `addr` are refused.
async fn listener_closed(addr: std::net::SocketAddr) {
    accel_e2e::eventually_async("the listener closes on shutdown", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let gate = Gate::new();
    let origin = gated_origin(&gate).await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    let addr = proxy.addr();
    let admin = proxy.admin_addr();
    let client = proxy.client();
    let request = proxy.request(Method::GET, "/slow").body(body::empty()).unwrap();
    let held = tokio::spawn(async move { client.request(request).await });
    eventually("the request reached the origin", || origin.total_hits() == 1).await;

    let stopping = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listener is closed…
    listener_closed(addr).await;
    // …the admin listener still answers (metrics stay scrapable while draining)…
    let mut scrape = accel_e2e::RawConnection::open(admin).await;
    scrape.write(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").await;
    assert_eq!(scrape.read_head().await.status, 200);
    drop(scrape);
    // …and the request in flight still gets its whole answer.
    assert!(!stopping.is_finished(), "shutdown waits for the request in flight");
    gate.open();
    let response = within("the held request", held).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.expect("the whole body");
    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "finished"));
    within("shutdown completes", stopping).await.unwrap();
    listener_closed(admin).await;
}

#[tokio::test]
async fn shutdown_gives_up_after_the_drain_deadline() {
    let gate = Gate::new();
    let origin = gated_origin(&gate).await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .config(|c| c.limits.drain_timeout = Duration::from_millis(100))
        .start()
        .await;
    let client = proxy.client();
    let request = proxy.request(Method::GET, "/stuck").body(body::empty()).unwrap();
    let held = tokio::spawn(async move { client.request(request).await });
    eventually("the request reached the origin", || origin.total_hits() == 1).await;

    within("shutdown completes despite a stuck request", proxy.shutdown()).await;

    // The stuck request's connection was closed: the client sees an error, not a hang.
    let outcome = within("the stuck request ends", held).await.unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_disconnected() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[limits]\nheader_read_timeout = \"100ms\"")
        .start()
        .await;
    let mut connection = accel_e2e::RawConnection::open(proxy.addr()).await;

    connection.write(b"GET / HTTP/1.1\r\nHost: slow").await;
    let rest = connection.read_to_close().await;

    assert!(!String::from_utf8_lossy(&rest).contains("200"), "{rest:?}");
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn shutdown_drains_h2c_streams_in_flight() {
    let gate = Gate::new();
    let origin = gated_origin(&gate).await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    let client = proxy.h2c_client();
    let request = proxy.request(Method::GET, "/slow").body(body::empty()).unwrap();
    let held = tokio::spawn(client.request(request));
    eventually("the request reached the origin", || origin.total_hits() == 1).await;

    let addr = proxy.addr();
    let stopping = tokio::spawn(proxy.shutdown());
    listener_closed(addr).await;
    assert!(!stopping.is_finished(), "shutdown waits for the stream in flight");
    gate.open();

    let response = within("the held stream", held).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.expect("the whole body");
    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "finished"));
    within("shutdown completes", stopping).await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        // Neither the idle timeout nor the drain deadline would end them while the test waits.
        .sidecar_toml("[limits]\nheader_read_timeout = \"60s\"\ndrain_timeout = \"60s\"")
        .start()
        .await;
    // One that has not sent a byte yet…
    let mut silent = accel_e2e::RawConnection::open(proxy.addr()).await;
    // …one after an HTTP/1.1 exchange…
    let mut http1 = accel_e2e::RawConnection::open(proxy.addr()).await;
    http1.write(b"GET /h1 HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(http1.read_head().await.status, 200);
    assert_eq!(http1.read_exact(2).await, b"ok");
    // …and an h2c connection, kept open in the client's pool once its stream is done.
    let h2c = proxy.h2c_client();
    let response = h2c.request(proxy.request(Method::GET, "/h2").body(body::empty()).unwrap());
    let response = Collected::from(response.await.expect("an answer")).await.expect("the whole body");
    assert_eq!(response.text(), "ok");

    within("shutdown completes with idle connections open", proxy.shutdown()).await;

    assert_eq!(http1.read_to_close().await, b"", "closed without another answer");
    assert_eq!(silent.read_to_close().await, b"", "closed without an answer");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[limits]\nmax_connections = 1")
        .start()
        .await;
    let mut first = accel_e2e::RawConnection::open(proxy.addr()).await;
    first.write(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(first.read_head().await.status, 200);
    let _ = first.read_exact(2).await;

    // The second connection is established (the kernel queues it) but the proxy does not take
    // it while the first one, kept alive, holds the slot…
    let mut second = accel_e2e::RawConnection::open(proxy.addr()).await;
    second.write(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    accel_e2e::eventually_async("the second connection waits in the accept queue", || async {
        accept_queue(proxy.addr()) == 1 || proxy.metric(ACCEPTED).await > 1.0
    })
    .await;
    // A whole exchange on the first connection after that: the proxy's accept loop learnt of
    // the queued connection before the first connection's task learnt of this request, so a
    // proxy that took connections regardless of the slot has accepted it by now.
    first.write(b"GET /probe HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(first.read_head().await.status, 200);
    let _ = first.read_exact(2).await;
    assert_eq!(proxy.metric(ACCEPTED).await, 1.0, "the proxy took a connection beyond the limit");
    assert_eq!(accept_queue(proxy.addr()), 1);
    assert_eq!(origin.hits("/second"), 0);
    assert_eq!(proxy.metric("accel_downstream_connections_open").await, 1.0);

    // …and is once it closes.
    drop(first);
    assert_eq!(second.read_head().await.status, 200);
    assert_eq!(origin.hits("/second"), 1);
}
