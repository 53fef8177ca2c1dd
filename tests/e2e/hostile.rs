//! Hostile input on the client side, over raw sockets: every head two parsers could read two
//! ways is refused with `400` and a closed connection, every head over a limit with `414` or
//! `431`, every body over its route's limit with `413`, and the origin sees none of them.

use std::time::Duration;

use accel_e2e::{FakeOrigin, OriginHandle, RawConnection, RawHead, TestProxy, eventually, eventually_async};

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

async fn setup() -> (OriginHandle, TestProxy) {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    (origin, proxy)
}

/// Sends `request` on a new connection; the answer's head, once the proxy has closed the
/// connection (a connection left open fails the read's deadline).
async fn refused(proxy: &TestProxy, request: &[u8]) -> RawHead {
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.write(request).await;
    let head = connection.read_head().await;
    connection.read_to_close().await;
    head
}

/// `request` gets `status`, `Connection: close`, a closed connection, and the origin nothing.
async fn assert_refused(request: &[u8], status: u16, reason: &str) {
    let (origin, proxy) = setup().await;
    let head = refused(&proxy, request).await;
    assert_eq!(head.status, status, "{:?}", String::from_utf8_lossy(request));
    assert_eq!(head.header("connection"), Some("close"));
    assert_eq!(origin.total_hits(), 0, "the origin saw the request");
    assert_eq!(origin.connections(), 0, "the proxy connected to the origin");
    let series = format!("accel_downstream_rejections_total{{reason=\"{reason}\"}}");
    assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
}

#[tokio::test]
async fn content_length_then_transfer_encoding_is_400() {
    let request =
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_refused(request, 400, "length_and_encoding").await;
}

#[tokio::test]
async fn transfer_encoding_then_content_length_is_400() {
    let request =
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
    assert_refused(request, 400, "length_and_encoding").await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_400() {
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
    assert_refused(request, 400, "transfer_encoding").await;
}

#[tokio::test]
async fn two_differing_content_lengths_are_400() {
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_refused(request, 400, "content_length").await;
}

#[tokio::test]
async fn an_invalid_content_length_is_400() {
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello";
    assert_refused(request, 400, "content_length").await;
}

#[tokio::test]
async fn an_obs_fold_is_400() {
    let request = b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n";
    assert_refused(request, 400, "obs_fold").await;
}

#[tokio::test]
async fn a_space_before_the_colon_is_400() {
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello";
    assert_refused(request, 400, "space_before_colon").await;
}

#[tokio::test]
async fn a_bare_lf_hiding_a_field_is_400() {
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello";
    assert_refused(request, 400, "bare_lf").await;
}

#[tokio::test]
async fn a_nul_in_a_header_value_is_400() {
    assert_refused(b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400, "control_character").await;
}

#[tokio::test]
async fn a_control_character_in_a_header_value_is_400() {
    assert_refused(b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n", 400, "control_character").await;
}

#[tokio::test]
async fn a_64_kib_header_is_431() {
    let mut request = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 64 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    assert_refused(&request, 431, "head_too_large").await;
}

#[tokio::test]
async fn too_many_headers_are_431() {
    let mut request = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..101 {
        request.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    assert_refused(&request, 431, "too_many_headers").await;
}

#[tokio::test]
async fn a_long_target_is_414() {
    let mut request = b"GET /".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9 * 1024));
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_refused(&request, 414, "target_too_long").await;
}

#[tokio::test]
async fn a_body_over_the_limit_by_content_length_is_413() {
    let (origin, proxy) = setup().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    // 100 MiB + 1 declared; nothing of it sent.
    connection.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 104857601\r\n\r\n").await;
    let head = connection.read_head().await;
    connection.read_to_close().await;

    assert_eq!(head.status, 413);
    assert_eq!(head.header("connection"), Some("close"));
    assert_eq!(origin.total_hits(), 0);
    assert_eq!(proxy.metric("accel_downstream_rejections_total{reason=\"body_too_large\"}").await, 1.0);
}

#[tokio::test]
async fn a_chunked_body_streaming_over_the_route_limit_is_413_and_never_complete_upstream() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let rules = "[[route]]\nname = \"upload\"\nupstream = \"api\"\nmax_body_size = \"1MiB\"\n";
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(rules).start().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.write(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    // 64 KiB chunks, up to 4 MiB: the proxy answers and stops reading at the limit.
    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
    chunk.extend(std::iter::repeat_n(b'z', 64 * 1024));
    chunk.extend_from_slice(b"\r\n");
    for _ in 0..64 {
        if !connection.try_write(&chunk).await {
            break;
        }
    }
    let head = connection.read_head().await;
    connection.read_to_close().await;

    assert_eq!(head.status, 413);
    assert_eq!(head.header("connection"), Some("close"));
    for seen in origin.requests() {
        assert!(!seen.body_complete, "the origin read a complete body of {} bytes", seen.body_len);
        assert!(seen.body_len <= 1024 * 1024, "the origin got {} bytes", seen.body_len);
    }
    if origin.total_hits() > 0 {
        eventually("the origin sees the body break off", || origin.requests().iter().all(|r| r.body_failed))
            .await;
    }
}

#[tokio::test]
async fn an_absolute_form_target_routes_by_its_authority_and_goes_to_the_route_endpoint() {
    let a = FakeOrigin::new().route("/*", "a").start().await;
    let b = FakeOrigin::new().route("/*", "b").start().await;
    let rules = "[[route]]\nname = \"a\"\nupstream = \"a\"\nmatch = { host = \"a.test\" }\n\n\
                 [[route]]\nname = \"b\"\nupstream = \"b\"\n";
    let proxy =
        TestProxy::builder().upstream("a", &[a.addr()]).upstream("b", &[b.addr()]).rules(rules).start().await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    // The authority wins over Host (RFC 9112 §3.2.2), for routing and for the origin alike.
    connection.write(b"GET http://a.test/x?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n").await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(connection.read_exact(1).await, b"a");
    let seen = a.last_request().expect("route a's origin got the request");
    assert_eq!(seen.uri.to_string(), "/x?q=1", "origin-form upstream");
    assert_eq!(seen.header("host"), Some("a.test"));
    assert_eq!(b.total_hits(), 0);

    // An authority that is no route's host is not a destination: the catch-all's endpoint gets it.
    connection.write(b"GET http://evil.example:9/y HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(connection.read_exact(1).await, b"b");
    let seen = b.last_request().expect("route b's origin got the request");
    assert_eq!(seen.uri.to_string(), "/y");
    assert_eq!(seen.header("host"), Some("evil.example:9"));
}

#[tokio::test]
async fn a_valid_pipelined_pair_is_answered_in_order() {
    let (origin, proxy) = setup().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .write(
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
    for _ in 0..2 {
        let head = connection.read_head().await;
        assert_eq!(head.status, 200);
        assert_eq!(connection.read_exact(2).await, b"ok");
    }
    let paths: Vec<String> = origin.requests().iter().map(|r| r.path().to_owned()).collect();
    assert_eq!(paths, ["/first", "/second"]);
    assert_eq!(origin.requests()[0].body_len, 5);
}

#[tokio::test]
async fn a_bad_head_after_a_good_one_is_refused_in_its_turn() {
    let (origin, proxy) = setup().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .write(
            b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        )
        .await;
    let first = connection.read_head().await;
    assert_eq!(first.status, 200);
    assert_eq!(connection.read_exact(2).await, b"ok");
    let second = connection.read_head().await;
    assert_eq!(second.status, 400);
    connection.read_to_close().await;
    assert_eq!(origin.hits("/first"), 1);
    assert_eq!(origin.hits("/smuggled"), 0);
}

#[tokio::test]
async fn a_valid_chunked_upload_goes_through_whole() {
    let (origin, proxy) = setup().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection
        .write(
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(connection.read_exact(2).await, b"ok");
    let seen = origin.last_request().expect("the origin got the upload");
    assert_eq!(seen.body_len, 11);
    assert!(seen.body_complete);
}

#[tokio::test]
async fn connections_over_the_per_client_cap_are_closed_at_once() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[limits]\nmax_connections_per_client = 1")
        .start()
        .await;
    let mut first = RawConnection::open(proxy.addr()).await;
    first.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(first.read_head().await.status, 200);

    // The first connection is still open: a second one from the same address is closed unread.
    let mut second = RawConnection::open(proxy.addr()).await;
    let _ = second.try_write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(second.read_to_close().await.is_empty(), "the second connection got an answer");
    assert_eq!(origin.hits("/b"), 0);
    assert_eq!(proxy.metric("accel_downstream_rejections_total{reason=\"client_connections\"}").await, 1.0);

    // Once the first closes, the address may connect again.
    drop(first);
    eventually_async_connects(&proxy).await;
}

/// A new connection gets an answer, once the proxy has counted the last one closed.
async fn eventually_async_connects(proxy: &TestProxy) {
    eventually_async("a connection is let in after the first one closed", || async {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.try_write(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await
            && !connection.read_to_close().await.is_empty()
    })
    .await;
}

/// A proxy in front of `origin` with a 100 ms header read timeout.
async fn timing_heads(origin: &OriginHandle) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[limits]\nheader_read_timeout = \"100ms\"")
        .start()
        .await
}

#[tokio::test]
async fn a_later_head_held_back_too_long_ends_the_connection() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = timing_heads(&origin).await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(connection.read_head().await.status, 200);
    assert_eq!(connection.read_exact(2).await, b"ok");

    // Half a head, then nothing: the proxy holds it back from hyper, and times it itself.
    connection.write(b"GET /b HTTP/1.1\r\nHost: sl").await;
    let rest = connection.read_to_close().await;

    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(origin.hits("/b"), 0);
}

/// A proxy in front of an origin that answers `/ok` at once, `/late` after 300 ms and
/// `/slow` in three chunks 150 ms apart, with a 100 ms header read timeout.
async fn slow_origin() -> (OriginHandle, TestProxy) {
    let chunks = vec!["one ".into(), "two ".into(), "three".into()];
    let origin = FakeOrigin::new()
        .route("/ok", "ok")
        .route("/late", "late")
        .latency(Duration::from_millis(300))
        .route("/slow", "")
        .body_stream(chunks, Duration::from_millis(150))
        .start()
        .await;
    let proxy = timing_heads(&origin).await;
    (origin, proxy)
}

#[tokio::test]
async fn a_kept_alive_connection_idle_past_the_header_read_timeout_is_closed() {
    let (_origin, proxy) = slow_origin().await;
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(connection.read_head().await.status, 200);
    assert_eq!(connection.read_exact(2).await, b"ok");

    // Nothing more from the client: its idle connection ends.
    let rest = connection.read_to_close().await;

    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// Reads the body of an answer up to and including `end`.
async fn read_through(connection: &mut RawConnection, end: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while !body.ends_with(end) {
        body.extend(connection.read_exact(1).await);
    }
    body
}

#[tokio::test]
async fn answers_slower_than_the_header_read_timeout_are_not_cut_short() {
    let (_origin, proxy) = slow_origin().await;
    // `/late` waits 300 ms before its head, `/slow` streams for 300 ms after it: three header
    // read timeouts in which the client sends nothing.
    for (path, end) in [("/late", &b"late"[..]), ("/slow", b"three\r\n0\r\n\r\n")] {
        let mut connection = RawConnection::open(proxy.addr()).await;
        connection.write(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
        assert_eq!(connection.read_head().await.status, 200, "{path}");
        read_through(&mut connection, end).await;

        // The connection was kept: the next request is answered on it.
        connection.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(connection.read_head().await.status, 200, "{path}");
        assert_eq!(connection.read_exact(2).await, b"ok", "{path}");
    }
}
