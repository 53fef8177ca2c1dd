//! Upstream failures become answers: 504 on timeout, 502 on a refused or reset connection,
//! 503 with `Retry-After` when no endpoint can answer; retries only where safe; a body that
//! breaks off is never passed off as complete.

use std::net::SocketAddr;

use accel_e2e::{Collected, FakeOrigin, Gate, TestProxy, body, eventually, within};
use http::{Method, Response};

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";

/// A port nothing listens on, for as long as it lives: bound, so that no other test's
/// listener is given it while this test runs, and never listening, so that a connection to it
/// is refused.
struct DeadPort(tokio::net::TcpSocket);

impl DeadPort {
    fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        Self(socket)
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }
}

/// An origin that neither reads a request's body nor answers it until `gate` opens.
async fn hanging_origin(gate: &Gate) -> accel_e2e::OriginHandle {
    FakeOrigin::new().route("/*", "").gated(gate, "").start().await
}

/// A proxy in front of `origin` whose one route has `response` as its response timeout.
async fn timed_proxy(origin: &accel_e2e::OriginHandle, response: &str) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(&response_timeout(response)).start().await
}

/// A proxy whose upstream `api` over `endpoints` ejects an endpoint at its first failure, so
/// a failure counted against one shows in its state.
fn eject_at_first_failure(endpoints: &[SocketAddr]) -> accel_e2e::TestProxyBuilder {
    TestProxy::builder().upstream_with(
        "api",
        endpoints,
        r#"ejection = { consecutive_failures = 1, cooldown = "1h" }"#,
    )
}

/// The state of each endpoint of the first upstream, in order.
async fn endpoint_states(proxy: &TestProxy) -> Vec<String> {
    let status = proxy.status_json().await;
    status["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["state"].as_str().expect("a state").to_owned())
        .collect()
}

/// The one route to `api`, with `response` as its response timeout.
fn response_timeout(response: &str) -> String {
    format!("{RULES}timeouts = {{ response = \"{response}\" }}\n")
}

/// The series counting `origin`'s timeouts.
fn timeouts_of(origin: &accel_e2e::OriginHandle) -> String {
    format!(
        r#"accel_upstream_requests_total{{upstream="api",endpoint="{}",outcome="timeout"}}"#,
        origin.addr()
    )
}

/// The series counting `origin`'s response bodies that broke off for `reason`.
fn body_errors_of(origin: &accel_e2e::OriginHandle, reason: &str) -> String {
    format!(
        r#"accel_upstream_body_errors_total{{upstream="api",endpoint="{}",reason="{reason}"}}"#,
        origin.addr()
    )
}

/// The answer's head to a request sent in the background.
type Answer =
    tokio::task::JoinHandle<Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>>;

/// Starts `PUT /upload` with a body the test streams through the returned sender.
fn start_upload(proxy: &TestProxy) -> (accel_e2e::client::BodySender, Answer) {
    let (tx, upload) = body::channel();
    let request = proxy.request(Method::PUT, "/upload").body(upload).unwrap();
    let client = proxy.client();
    (tx, tokio::spawn(async move { client.request(request).await }))
}

/// An origin that reads the whole request body and answers with its length.
async fn counting_origin() -> accel_e2e::OriginHandle {
    FakeOrigin::new()
        .route("/*", "")
        .handler(|request| async move {
            let read = request.into_body().drain().await;
            Response::new(body::full(format!("{read:?}")))
        })
        .start()
        .await
}

#[tokio::test]
async fn an_origin_that_does_not_answer_in_time_is_a_504() {
    let never = Gate::new();
    let origin = hanging_origin(&never).await;
    let proxy = timed_proxy(&origin, "100ms").await;

    let response = proxy.get("/hang").await;

    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "upstream timeout\n");
    let timeouts = format!(
        r#"accel_upstream_requests_total{{upstream="api",endpoint="{}",outcome="timeout"}}"#,
        origin.addr()
    );
    assert_eq!(proxy.metric(&timeouts).await, 1.0);
    assert_eq!(proxy.metric(r#"accel_requests_total{route="all",method="GET",status="5xx"}"#).await, 1.0);
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let dead = DeadPort::new();
    let proxy = TestProxy::builder().upstream("api", &[dead.addr()]).rules(RULES).start().await;

    let response = proxy.get("/x").await;

    assert_eq!(response.status, 502);
    assert_eq!(response.text(), "upstream unreachable\n");
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_connection_reset_before_the_answer_is_a_502() {
    let origin = FakeOrigin::new().route("/x", "").reset().start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;

    let response = proxy.get("/x").await;

    assert_eq!(response.status, 502);
    assert_eq!(response.text(), "upstream error\n");
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test]
async fn no_available_endpoint_is_a_503_with_retry_after() {
    // Both endpoints are dead: the first refusals eject them; once none is available the
    // proxy still tries them all, and answers 503 when none takes the connection.
    let dead = [DeadPort::new(), DeadPort::new()];
    let proxy = eject_at_first_failure(&[dead[0].addr(), dead[1].addr()]).rules(RULES).start().await;
    let mut last = proxy.get("/x").await;
    for _ in 0..5 {
        last = proxy.get("/x").await;
    }

    assert_eq!(last.status, 503);
    assert_eq!(last.text(), "no healthy upstream\n");
    assert_eq!(last.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint_even_for_post() {
    let live = FakeOrigin::new().route("/*", "live").start().await;
    let dead = DeadPort::new();
    let proxy = TestProxy::builder()
        .upstream_with("api", &[dead.addr(), live.addr()], r#"ejection = { consecutive_failures = 100 }"#)
        .rules(RULES)
        .start()
        .await;

    for i in 0..20 {
        let post = proxy.request(Method::POST, "/x").body(body::full(format!("order {i}"))).unwrap();
        let response = proxy.send(post).await;
        assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "live"));
    }
    let seen = live.requests();
    assert_eq!(seen.len(), 20, "each POST reached the origin exactly once");
    assert!(seen.iter().enumerate().all(|(i, r)| r.body_len == format!("order {i}").len() as u64));
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_configured_statuses_and_posts_are_not() {
    let busy = FakeOrigin::new().route("/*", "busy").status(503).start().await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let proxy = TestProxy::builder()
        .upstream_with("api", &[busy.addr(), fine.addr()], r#"ejection = { consecutive_failures = 1000 }"#)
        .rules(
            r#"
            [[route]]
            name = "all"
            upstream = "api"
            retry = { attempts = 2, statuses = [503] }
            "#,
        )
        .start()
        .await;

    for _ in 0..20 {
        assert_eq!(proxy.get("/read").await.text(), "fine");
    }
    assert_eq!(fine.hits("/read"), 20);

    let mut answered_busy = 0;
    for _ in 0..20 {
        let post = proxy.request(Method::POST, "/write").body(body::full("x")).unwrap();
        if proxy.send(post).await.status == 503 {
            answered_busy += 1;
        }
    }
    assert_eq!(answered_busy, busy.hits("/write"), "a POST that reached an endpoint is not retried");
    assert_eq!(fine.hits("/write"), 20 - answered_busy);
    assert!(answered_busy > 0, "ties are random, so some POSTs land on the busy endpoint");
}

#[tokio::test]
async fn a_retry_sends_the_same_head_with_its_own_endpoint_as_host_when_the_client_gave_none() {
    let busy = FakeOrigin::new().route("/*", "busy").status(503).start().await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let proxy = TestProxy::builder()
        .upstream_with("api", &[busy.addr(), fine.addr()], r#"ejection = { consecutive_failures = 1000 }"#)
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\nretry = { attempts = 2, statuses = [503] }\n")
        .start()
        .await;

    // HTTP/1.0 without `Host`: the proxy names the endpoint of each try.
    for i in 0..20 {
        let mut connection = accel_e2e::RawConnection::open(proxy.addr()).await;
        let head = format!("GET /read?n={i} HTTP/1.0\r\nX-Order: {i}\r\nAccept: text/plain\r\n\r\n");
        connection.write(head.as_bytes()).await;
        assert_eq!(connection.read_head().await.status, 200, "request {i}");
    }

    let (first_tries, answered) = (busy.requests(), fine.requests());
    assert_eq!(answered.len(), 20, "every request ends on the endpoint that answers");
    assert!(!first_tries.is_empty(), "ties are random, so some requests try the busy endpoint first");
    for tried in &first_tries {
        let retried = answered.iter().find(|r| r.uri == tried.uri).expect("the retry of a busy answer");
        let without_host = |r: &accel_e2e::SeenRequest| {
            let mut headers = r.headers.clone();
            headers.remove(http::header::HOST);
            headers
        };
        assert_eq!(without_host(retried), without_host(tried), "{}", tried.uri);
        assert_eq!(tried.header("host"), Some(busy.addr().to_string().as_str()));
        assert_eq!(retried.header("host"), Some(fine.addr().to_string().as_str()));
    }
    assert!(answered.iter().all(|r| r.header("x-order").is_some() && r.header("x-request-id").is_some()));
}

#[tokio::test]
async fn a_post_is_not_retried_once_its_body_was_sent() {
    let resetting = FakeOrigin::new().route("/*", "").reset().start().await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[resetting.addr(), fine.addr()],
            r#"ejection = { consecutive_failures = 1000 }"#,
        )
        .rules(RULES)
        .start()
        .await;

    let mut failed = 0;
    for _ in 0..20 {
        let post = proxy.request(Method::POST, "/write").body(body::full("payload")).unwrap();
        if proxy.send(post).await.status == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, resetting.hits("/write"), "a POST whose body was sent is not repeated");
    assert_eq!(fine.hits("/write"), 20 - failed);
    assert!(failed > 0);

    // The same failure on a GET is retried on the other endpoint.
    for _ in 0..20 {
        assert_eq!(proxy.get("/read").await.text(), "fine");
    }
}

/// An origin whose `/cut` answer promises more than it sends, then breaks off once `gate`
/// opens (so the answer's head has reached the client first).
async fn truncating_origin(content_length: bool, gate: &Gate) -> accel_e2e::OriginHandle {
    let gate = gate.clone();
    FakeOrigin::new()
        .route("/cut", "")
        .handler(move |_| {
            let gate = gate.clone();
            async move {
                let (tx, body) = body::channel();
                tokio::spawn(async move {
                    tx.send("only part of it").await;
                    gate.wait().await;
                    tx.abort().await;
                });
                let mut response = Response::new(body);
                if content_length {
                    response.headers_mut().insert("content-length", "1000".parse().unwrap());
                }
                response
            }
        })
        .start()
        .await
}

#[tokio::test]
async fn a_truncated_body_with_a_length_is_not_passed_off_as_complete() {
    let gate = Gate::new();
    let origin = truncating_origin(true, &gate).await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;

    let request = proxy.request(Method::GET, "/cut").body(body::empty()).unwrap();
    let response = within("headers", proxy.client().request(request)).await.expect("headers arrive");
    assert_eq!(response.status(), 200);
    gate.open();
    let read = within("the body", Collected::from(response)).await;

    assert!(read.is_err(), "the client must see the body break off, got {read:?}");
    assert_eq!(proxy.metric(&body_errors_of(&origin, "closed")).await, 1.0);
}

#[tokio::test]
async fn a_truncated_chunked_body_is_not_passed_off_as_complete() {
    for h2 in [false, true] {
        let gate = Gate::new();
        let origin = truncating_origin(false, &gate).await;
        let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
        let client = if h2 { proxy.h2c_client() } else { proxy.client() };

        let request = proxy.request(Method::GET, "/cut").body(body::empty()).unwrap();
        let response = within("headers", client.request(request)).await.expect("headers arrive");
        assert_eq!(response.status(), 200);
        gate.open();
        let read = within("the body", Collected::from(response)).await;

        assert!(read.is_err(), "h2 {h2}: the client must see the body break off, got {read:?}");
        assert_eq!(proxy.metric(&body_errors_of(&origin, "closed")).await, 1.0, "h2 {h2}");
    }
}

#[tokio::test]
async fn a_body_that_stalls_past_the_read_timeout_is_cut_off_and_gives_its_place_back() {
    for h2 in [false, true] {
        // The body's first bytes, then nothing until the gate opens.
        let gate = Gate::new();
        let origin = FakeOrigin::new().route("/*", "").held_body(&gate, "first ", "last").start().await;
        let keys = "read_timeout = \"300ms\"\nmax_connections_per_endpoint = 1";
        let proxy =
            TestProxy::builder().upstream_with("api", &[origin.addr()], keys).rules(RULES).start().await;
        let client = if h2 { proxy.h2c_client() } else { proxy.client() };

        let request = proxy.request(Method::GET, "/held").body(body::empty()).unwrap();
        let response = within("headers", client.request(request)).await.expect("headers arrive");
        assert_eq!(response.status(), 200);
        let read = within("the body", Collected::from(response)).await;
        assert!(read.is_err(), "h2 {h2}: the client must see the body break off, got {read:?}");
        assert_eq!(proxy.metric(&body_errors_of(&origin, "stalled")).await, 1.0, "h2 {h2}");
        assert_eq!(proxy.metric(&body_errors_of(&origin, "closed")).await, 0.0, "h2 {h2}");

        // The stalled exchange gave back the endpoint's one place: the next request goes up.
        gate.open();
        let next = proxy.get("/next").await;
        assert_eq!(next.status.as_u16(), 200, "h2 {h2}");
        assert_eq!(next.text(), "first last");
        assert_eq!(origin.total_hits(), 2);
    }
}

#[tokio::test]
async fn an_idempotent_request_that_times_out_is_retried_on_another_endpoint() {
    let never = Gate::new();
    let hanging = hanging_origin(&never).await;
    let fine = FakeOrigin::new().route("/*", "fine").start().await;
    let proxy =
        eject_at_first_failure(&[hanging.addr(), fine.addr()]).rules(&response_timeout("1s")).start().await;

    for _ in 0..10 {
        let response = proxy.get("/read").await;
        assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "fine"));
    }
    assert_eq!(fine.hits("/read"), 10);
}

#[tokio::test]
async fn a_client_that_breaks_off_its_upload_does_not_count_against_the_endpoint() {
    let origin = counting_origin().await;
    let other = FakeOrigin::new().route("/*", "other").start().await;
    let proxy = eject_at_first_failure(&[origin.addr(), other.addr()]).rules(RULES).start().await;

    // Uploads that the client aborts half-way, until one has reached each endpoint.
    for _ in 0..64 {
        let (tx, upload) = body::channel();
        let request = proxy.request(Method::PUT, "/upload").body(upload).unwrap();
        let client = proxy.client();
        let answer = tokio::spawn(async move { client.request(request).await });
        tx.send("part of it").await;
        let before = origin.total_hits() + other.total_hits();
        accel_e2e::eventually_async("the upload reached an endpoint", || async {
            origin.requests().iter().any(|r| r.body_len > 0 && !r.body_complete && !r.body_failed)
                || origin.total_hits() + other.total_hits() > before
        })
        .await;
        tx.abort().await;
        let _ = within("the aborted upload ends", answer).await;
        if origin.total_hits() > 0 && other.total_hits() > 0 {
            break;
        }
    }

    // The client failed, not the endpoints: both stay in.
    assert_eq!(endpoint_states(&proxy).await, ["healthy", "healthy"]);
}

#[tokio::test]
async fn an_h2c_upload_is_retried_on_another_endpoint_after_a_refused_connection() {
    let live = FakeOrigin::new()
        .route("/*", "")
        .handler(|request| async move {
            let length = request.into_body().drain().await.expect("the whole body");
            Response::new(body::full(length.to_string()))
        })
        .start()
        .await;
    let dead = DeadPort::new();
    let proxy = TestProxy::builder()
        .upstream_with("api", &[dead.addr(), live.addr()], r#"ejection = { consecutive_failures = 100 }"#)
        .rules(RULES)
        .start()
        .await;
    let client = proxy.h2c_client();

    for _ in 0..10 {
        let (tx, upload) = body::channel();
        let request = proxy.request(Method::POST, "/x").body(upload).unwrap();
        let answer = tokio::spawn(client.request(request));
        for _ in 0..4 {
            tx.send(vec![b'z'; 10_000]).await;
        }
        drop(tx);
        let response = within("an answer", answer).await.unwrap().expect("an answer");
        let response = Collected::from(response).await.unwrap();
        assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "40000"));
    }
    assert_eq!(live.total_hits(), 10);
}

#[tokio::test]
async fn a_dead_upstream_known_to_be_down_is_a_503_with_retry_after() {
    let dead = DeadPort::new();
    let proxy = TestProxy::builder()
        .upstream_with(
            "api",
            &[dead.addr()],
            r#"health = { path = "/health", interval = "20ms", timeout = "500ms", unhealthy_threshold = 1 }"#,
        )
        .rules(RULES)
        .start()
        .await;
    accel_e2e::eventually_async("the health check marks the endpoint down", || async {
        proxy.admin_get("/readyz").await.status == 503
    })
    .await;

    let response = proxy.get("/x").await;

    assert_eq!(response.status, 503);
    assert_eq!(response.text(), "no healthy upstream\n");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn a_request_with_both_content_length_and_chunked_is_not_smuggled() {
    let origin = FakeOrigin::new()
        .route("/*", "")
        .handler(|request| async move {
            let (parts, body) = request.into_parts();
            let length = body.drain().await.unwrap_or(0);
            Response::new(body::full(format!("{:?} {length}", parts.headers.get("content-length"))))
        })
        .start()
        .await;
    let proxy = proxy_for_origin(&origin).await;
    let mut connection = accel_e2e::RawConnection::open(proxy.addr()).await;

    connection
        .write(
            b"POST /s HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
        )
        .await;
    let head = connection.read_head().await;
    let _ = connection.read_to_close().await;

    // Rejected outright, or framed by Transfer-Encoding alone: never both on the way up.
    assert!(head.status == 400 || head.status == 200, "{head:?}");
    for seen in origin.requests().iter().filter(|r| r.path() == "/s") {
        assert_eq!(seen.body_len, 5, "the body is what the chunked framing says");
        assert!(
            !(seen.header("content-length").is_some() && seen.header("transfer-encoding").is_some()),
            "{:?}",
            seen.headers
        );
        assert!(seen.header("content-length").is_none_or(|l| l == "5"), "{:?}", seen.headers);
    }
}

async fn proxy_for_origin(origin: &accel_e2e::OriginHandle) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_short_by_the_response_timeout() {
    let origin = counting_origin().await;
    let never = Gate::new();
    let hanging = hanging_origin(&never).await;
    // `/hang` has the same response timeout as the upload's route and never gets an answer:
    // its 504 shows that a whole response timeout went by on the proxy's own clock.
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .upstream_with("hang", &[hanging.addr()], "ejection = { consecutive_failures = 100 }")
        .rules(&format!(
            "[[route]]\nname = \"hang\"\nmatch = {{ path = \"/hang\" }}\nupstream = \"hang\"\n\
             timeouts = {{ response = \"200ms\" }}\n\n{}",
            response_timeout("200ms")
        ))
        .start()
        .await;

    // Three chunks; once each has reached the origin, a response timeout runs out before the
    // next: the upload lasts three response timeouts.
    let (tx, answer) = start_upload(&proxy);
    for sent in 1..=3 {
        assert!(tx.send("0123456789").await);
        eventually("the chunk reached the origin", || {
            origin.last_request().is_some_and(|r| r.body_len == 10 * sent)
        })
        .await;
        assert_eq!(proxy.get("/hang").await.status, 504, "a response timeout went by");
    }
    drop(tx);
    let response = within("the upload's answer", answer).await.unwrap().unwrap();
    let response = Collected::from(response).await.unwrap();

    assert_eq!((response.status.as_u16(), response.text().as_str()), (200, "Ok(30)"));
    assert_eq!(proxy.metric(&timeouts_of(&origin)).await, 0.0);
    let hang_timeouts = format!(
        r#"accel_upstream_requests_total{{upstream="hang",endpoint="{}",outcome="timeout"}}"#,
        hanging.addr()
    );
    assert_eq!(proxy.metric(&hang_timeouts).await, 3.0);
}

#[tokio::test]
async fn a_client_that_pauses_its_upload_too_long_gets_a_408_and_the_endpoint_stays_in() {
    // Two endpoints, ejected at the first failure: a 408 counted against one would show.
    let (origin, other) = (counting_origin().await, counting_origin().await);
    let proxy = eject_at_first_failure(&[origin.addr(), other.addr()])
        .sidecar_toml("[limits]\nbody_read_timeout = \"200ms\"")
        .rules(RULES)
        .start()
        .await;

    let (tx, answer) = start_upload(&proxy);
    assert!(tx.send("the first part").await);
    // ... and nothing more, while the connection stays open.
    let response = within("the paused upload's answer", answer).await.unwrap().unwrap();
    let response = Collected::from(response).await.unwrap();
    drop(tx);

    assert_eq!((response.status.as_u16(), response.text().as_str()), (408, "request body timed out\n"));
    assert_eq!(response.header("connection"), Some("close"));
    for endpoint in [&origin, &other] {
        assert_eq!(proxy.metric(&timeouts_of(endpoint)).await, 0.0);
    }
    assert_eq!(endpoint_states(&proxy).await, ["healthy", "healthy"]);
    assert_eq!(origin.total_hits() + other.total_hits(), 1, "the upload reached one endpoint");
}

#[tokio::test]
async fn an_endpoint_that_stops_reading_an_upload_is_a_504() {
    let never = Gate::new();
    // Never reads the body, never answers.
    let origin = hanging_origin(&never).await;
    let proxy = timed_proxy(&origin, "300ms").await;

    let (tx, answer) = start_upload(&proxy);
    // More than the socket buffers on the way hold: the upload stalls at the endpoint.
    let sender = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b'x'; 256 * 1024]);
        for _ in 0..256 {
            if !tx.send(chunk.clone()).await {
                break;
            }
        }
    });
    let response = within("the stalled upload's answer", answer).await.unwrap().unwrap();
    let response = Collected::from(response).await.unwrap();
    sender.abort();

    assert_eq!((response.status.as_u16(), response.text().as_str()), (504, "upstream timeout\n"));
    assert_eq!(proxy.metric(&timeouts_of(&origin)).await, 1.0);
}
