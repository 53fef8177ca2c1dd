//! Transparency: bodies stream both ways without buffering, hop-by-hop headers stop at the
//! proxy, forwarding headers are set (and only trusted proxies may extend them), `Via`,
//! trailers, `Expect: 100-continue`, and h2c clients.

use accel_e2e::{Collected, FakeOrigin, Gate, RawConnection, TestProxy, body, eventually, within};
use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;

const RULES: &str = "[[route]]\nname = \"all\"\nupstream = \"api\"\n";
const MIB: usize = 1024 * 1024;

async fn proxy_for(origin: &accel_e2e::OriginHandle) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await
}

/// An origin that reads request bodies to the end and answers with their length.
async fn counting_origin() -> accel_e2e::OriginHandle {
    FakeOrigin::new()
        .route("/*", "")
        .handler(|request| async move {
            let length = request.into_body().drain().await.expect("the whole request body");
            Response::new(body::full(length.to_string()))
        })
        .start()
        .await
}

#[tokio::test]
async fn a_50_mib_upload_streams_through_without_buffering() {
    let origin = counting_origin().await;
    let proxy = proxy_for(&origin).await;
    let (tx, upload) = body::channel();
    let request =
        proxy.request(Method::PUT, "/upload").header("content-length", 50 * MIB).body(upload).unwrap();
    let client = proxy.client();
    let answer = tokio::spawn(async move { client.request(request).await });
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);

    // Send the first MiB, then wait until the origin has read some of it: the proxy passes
    // bytes on as they come instead of collecting the body first.
    for _ in 0..16 {
        assert!(tx.send(chunk.clone()).await);
    }
    eventually("the origin reads the upload before it is complete", || {
        origin.last_request().is_some_and(|r| r.body_len > 0 && !r.body_complete)
    })
    .await;
    for _ in 16..800 {
        assert!(tx.send(chunk.clone()).await);
    }
    drop(tx);

    let response = within("the upload's answer", answer).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), (50 * MIB).to_string());
    let seen = origin.last_request().unwrap();
    assert_eq!((seen.body_len, seen.body_complete), (50 * MIB as u64, true));
}

#[tokio::test]
async fn a_50_mib_download_streams_through_without_buffering() {
    let gate = Gate::new();
    let origin = {
        let gate = gate.clone();
        FakeOrigin::new()
            .route("/download", "")
            .handler(move |_| {
                let gate = gate.clone();
                async move {
                    let (tx, body) = body::channel();
                    tokio::spawn(async move {
                        let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
                        for i in 0..800 {
                            if i == 16 {
                                // The rest only once the client has received the first MiB.
                                gate.wait().await;
                            }
                            if !tx.send(chunk.clone()).await {
                                return;
                            }
                        }
                    });
                    let mut response = Response::new(body);
                    response.headers_mut().insert("content-length", (50 * MIB).into());
                    response
                }
            })
            .start()
            .await
    };
    let proxy = proxy_for(&origin).await;
    let request = proxy.request(Method::GET, "/download").body(body::empty()).unwrap();
    let response = within("headers", proxy.client().request(request)).await.expect("headers");
    assert_eq!(response.headers()["content-length"], (50 * MIB).to_string());
    let mut body = response.into_body();

    let mut received = 0;
    while received < MIB {
        let frame = within("the first MiB", body.frame()).await.expect("more").expect("a frame");
        received += frame.data_ref().map_or(0, Bytes::len);
    }
    gate.open();
    while let Some(frame) = within("the rest", body.frame()).await {
        received += frame.expect("a frame").data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, 50 * MIB);
}

#[tokio::test]
async fn hop_by_hop_request_headers_stop_at_the_proxy() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = proxy_for(&origin).await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    connection
        .write(
            b"GET /h HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\
              TE: trailers, deflate\r\nX-Kept: yes\r\nX-Order: 1\r\nX-Order: 2\r\n\r\n",
        )
        .await;
    let head = connection.read_head().await;

    assert_eq!(head.status, 200);
    let seen = origin.last_request().unwrap();
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "proxy-connection"] {
        assert!(seen.header(gone).is_none(), "{gone} reached the origin: {:?}", seen.headers);
    }
    // `Connection` itself is the proxy's own business with the origin (keep-alive).
    assert!(seen.header("connection").is_none_or(|v| !v.to_ascii_lowercase().contains("x-secret")));
    assert_eq!(seen.header("te"), Some("trailers"));
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(seen.header_all("x-order"), ["1", "2"]);
    assert_eq!(seen.header("host"), Some("app.test"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_stop_at_the_proxy() {
    let origin = FakeOrigin::new()
        .route("/h", "ok")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authenticate", "Basic")
        .header("x-kept", "yes")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    connection.write(b"GET /h HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    let head = connection.read_head().await;

    assert_eq!(head.status, 200);
    for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!head.has(gone), "{gone} reached the client: {:?}", head.headers);
    }
    assert_eq!(head.header("x-kept"), Some("yes"));
    assert_eq!(head.header("via"), Some("1.1 accel"));
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_client_are_replaced() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = proxy_for(&origin).await;

    let request = proxy
        .request(Method::GET, "/f")
        .header("host", "app.test")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .header("forwarded", "for=1.2.3.4;proto=https;host=evil.test")
        .body(body::empty())
        .unwrap();
    proxy.send(request).await;

    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    assert!(seen.header("forwarded").is_none(), "the standard header cannot be forged either");
    assert_eq!(seen.header("via"), Some("1.1 accel"));
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_extended() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[forwarded]\ntrusted_proxies = [\"127.0.0.0/8\"]\nvia = \"edge-sidecar\"")
        .start()
        .await;

    let request = proxy
        .request(Method::GET, "/f")
        .header("host", "internal.test")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.example.com")
        .header("via", "1.1 cdn")
        .header("forwarded", "for=198.51.100.7;proto=https")
        .body(body::empty())
        .unwrap();
    let response = proxy.send(request).await;

    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.7, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("www.example.com"));
    assert_eq!(seen.header_all("via"), ["1.1 cdn", "1.1 edge-sidecar"]);
    assert_eq!(seen.header("forwarded"), Some("for=198.51.100.7;proto=https"), "a trusted proxy's is kept");
    assert_eq!(response.header("via"), Some("1.1 edge-sidecar"));
}

#[tokio::test]
async fn via_can_be_turned_off() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[forwarded]\nvia = \"\"")
        .start()
        .await;

    let response = proxy.get("/v").await;

    assert!(response.header("via").is_none());
    assert!(origin.last_request().unwrap().header("via").is_none());
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let origin = FakeOrigin::new()
        .route("/t", "")
        .handler(|request| async move {
            let (parts, incoming) = request.into_parts();
            let collected = incoming.collect().await.expect("the request body");
            let got = collected
                .trailers()
                .and_then(|t| t.get("x-request-sum"))
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let (tx, body) = body::channel();
            tokio::spawn(async move {
                tx.send(format!("te={:?}", parts.headers.get("te"))).await;
                let mut trailers = HeaderMap::new();
                trailers.insert("x-response-sum", got.parse().unwrap());
                tx.trailers(trailers).await;
            });
            let mut response = Response::new(body);
            response.headers_mut().insert("trailer", "x-response-sum".parse().unwrap());
            response
        })
        .start()
        .await;
    let proxy = proxy_for(&origin).await;
    let (tx, upload) = body::channel();
    let request = proxy
        .request(Method::POST, "/t")
        .header("te", "trailers")
        .header("trailer", "x-request-sum")
        .body(upload)
        .unwrap();
    let client = proxy.client();
    let answer = tokio::spawn(async move { client.request(request).await });
    tx.send("payload").await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-request-sum", "abc123".parse().unwrap());
    tx.trailers(trailers).await;

    let response = within("the answer", answer).await.unwrap().expect("an answer");
    let response = Collected::from(response).await.unwrap();

    assert_eq!(response.status, 200);
    let trailers = response.trailers.expect("response trailers reach the client");
    assert_eq!(trailers["x-response-sum"], "abc123", "request trailers reached the origin");
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_answer_before_the_body_is_sent() {
    let origin = counting_origin().await;
    let proxy = proxy_for(&origin).await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    connection
        .write(b"PUT /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = connection.read_head().await;
    assert_eq!(interim.status, 100);
    connection.write(b"hello").await;
    let head = connection.read_head().await;

    assert_eq!(head.status, 200);
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert_eq!(connection.read_exact(length).await, b"5");
    assert_eq!(origin.last_request().unwrap().body_len, 5);
}

#[tokio::test]
async fn an_unrouted_request_with_expect_gets_no_interim_answer() {
    let origin = counting_origin().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"only\"\nmatch = { path = \"/only\" }\nupstream = \"api\"\n")
        .start()
        .await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    connection
        .write(
            b"PUT /elsewhere HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;

    // The client is told no before it sends a body nobody will read.
    assert_eq!(connection.read_head().await.status, 404);
}

#[tokio::test]
async fn h2c_clients_are_served_over_http_1_1_to_the_origin() {
    let origin = counting_origin().await;
    let proxy = proxy_for(&origin).await;
    let client = proxy.h2c_client();

    let request = proxy.request(Method::POST, "/h2").body(body::full("twelve bytes")).unwrap();
    let response = within("an h2 answer", client.request(request)).await.expect("an answer");
    let response = Collected::from(response).await.unwrap();

    assert_eq!(response.version, http::Version::HTTP_2);
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "12");
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.header("via"), Some("2 accel"));
    assert!(seen.header("host").is_some_and(|h| h == proxy.addr().to_string()), "{:?}", seen.headers);
}

#[tokio::test]
async fn connections_to_the_origin_are_kept_alive() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = proxy_for(&origin).await;

    for _ in 0..20 {
        assert_eq!(proxy.get("/k").await.status, 200);
    }
    let request = proxy.request(Method::POST, "/k").body(body::full("with a body")).unwrap();
    assert_eq!(proxy.send(request).await.status, 200);

    assert_eq!(origin.total_hits(), 21);
    assert_eq!(origin.connections(), 1, "one pooled connection serves sequential requests");
}

#[tokio::test]
async fn header_order_survives_hop_by_hop_stripping() {
    let origin = FakeOrigin::new()
        .route("/*", "ok")
        .header("x-first", "1")
        .header("connection", "x-hop")
        .header("x-hop", "gone")
        .header("x-second", "2")
        .header("x-third", "3")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;
    let mut connection = RawConnection::open(proxy.addr()).await;

    connection
        .write(
            b"GET /o HTTP/1.1\r\nHost: app.test\r\nX-A: 1\r\nConnection: keep-alive\r\nX-B: 2\r\n\
              Keep-Alive: timeout=5\r\nX-C: 3\r\nX-D: 4\r\n\r\n",
        )
        .await;
    let head = connection.read_head().await;

    // The headers the proxy adds itself (forwarding headers, the request id) are left out.
    let own = |k: &&str| k.starts_with("x-") && !k.starts_with("x-forwarded") && *k != "x-request-id";
    let seen = origin.last_request().unwrap();
    let sent: Vec<&str> = seen.headers.keys().map(|k| k.as_str()).filter(own).collect();
    assert_eq!(sent, ["x-a", "x-b", "x-c", "x-d"]);
    let received: Vec<&str> = head.headers.iter().map(|(k, _)| k.as_str()).filter(own).collect();
    assert_eq!(received, ["x-first", "x-second", "x-third"]);
}
