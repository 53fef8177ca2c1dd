//! Compression over sockets: the real sidecar compressing a fake origin's answers as each
//! client accepts, streaming server-sent events one by one, and passing through or decoding
//! an origin's own compressed answers.

use std::sync::{Arc, Mutex};

use accel::compress::Encoding;
use accel::compress::codec::{self, Decoder};
use accel_e2e::{FakeOrigin, OriginHandle, TestBody, TestProxy, body, within};
use bytes::Bytes;
use http::{Method, Response};
use http_body_util::BodyExt;

const RULES: &str = r#"
[[route]]
name = "api"
upstream = "api"
compress = { min_size = "1KiB" }
"#;

/// A JSON document of about `len` bytes.
fn json(len: usize) -> Bytes {
    let mut out = String::from("[");
    let mut id = 0;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{id},\"name\":\"lead-{id}\",\"city\":\"Lyon\",\"score\":{}}},",
            id * 37 % 101
        ));
        id += 1;
    }
    out.push_str("{}]");
    Bytes::from(out)
}

fn decode(encoding: Encoding, data: &[u8]) -> Bytes {
    let mut decoder = Decoder::new(encoding).expect("a coding");
    decoder.push(Bytes::copy_from_slice(data));
    let mut out = Vec::new();
    while decoder.has_pending() {
        out.extend_from_slice(&decoder.pull(64 * 1024).expect("a valid stream"));
    }
    decoder.finish().expect("a complete stream");
    Bytes::from(out)
}

async fn proxy_for(origin: &OriginHandle) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await
}

async fn get(proxy: &TestProxy, path: &str, accept: Option<&str>) -> accel_e2e::Collected {
    let mut request = proxy.request(Method::GET, path);
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    proxy.send(request.body(body::empty()).unwrap()).await
}

#[tokio::test]
async fn each_client_gets_the_coding_it_accepts_and_decodes_the_origin_body() {
    let document = json(100 * 1024);
    let origin = FakeOrigin::new()
        .route("/api/leads", document.clone())
        .header("content-type", "application/json")
        .header("etag", "\"leads-7\"")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;

    for (accept, coding) in
        [("br", "br"), ("gzip, deflate, br, zstd", "br"), ("zstd;q=1, br;q=0.5", "zstd"), ("gzip", "gzip")]
    {
        let answer = get(&proxy, "/api/leads", Some(accept)).await;
        assert_eq!(answer.header("content-encoding"), Some(coding), "Accept-Encoding: {accept}");
        assert_eq!(answer.header("vary"), Some("Accept-Encoding"));
        assert_eq!(answer.header("etag"), Some("W/\"leads-7\""));
        assert_eq!(answer.header("content-length"), None);
        assert!(answer.body.len() < document.len() / 4, "{coding}: {} bytes", answer.body.len());
        let encoding = Encoding::from_token(coding).unwrap();
        assert_eq!(decode(encoding, &answer.body), document, "{coding}");
    }

    let plain = get(&proxy, "/api/leads", None).await;
    assert_eq!(plain.body, document, "no Accept-Encoding: the origin's bytes");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("etag"), Some("\"leads-7\""));
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    assert_eq!(proxy.metric("accel_compressed_responses_total{route=\"api\",encoding=\"br\"}").await, 2.0);
    assert_eq!(proxy.metric("accel_compressed_responses_total{route=\"api\",encoding=\"gzip\"}").await, 1.0);
    let bytes_in =
        proxy.metric("accel_compression_bytes_total{route=\"api\",encoding=\"zstd\",direction=\"in\"}").await;
    assert_eq!(bytes_in, document.len() as f64);
}

#[tokio::test]
async fn small_binary_head_and_ranged_answers_are_sent_as_they_are() {
    let document = json(8 * 1024);
    let origin = FakeOrigin::new()
        .route("/small", json(200))
        .header("content-type", "application/json")
        .route("/logo.png", document.clone())
        .header("content-type", "image/png")
        .route("/doc", document.clone())
        .header("content-type", "application/json")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;

    let small = get(&proxy, "/small", Some("gzip")).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, json(200));
    let png = get(&proxy, "/logo.png", Some("gzip")).await;
    assert_eq!(png.header("content-encoding"), None);
    assert_eq!(png.header("vary"), None);
    assert_eq!(png.body, document);

    let head = proxy
        .send(
            proxy
                .request(Method::HEAD, "/doc")
                .header("accept-encoding", "gzip")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
    let ranged = proxy
        .send(
            proxy
                .request(Method::GET, "/doc")
                .header("accept-encoding", "gzip")
                .header("range", "bytes=0-9")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ranged.header("content-encoding"), None);
    let refused = proxy
        .send(
            proxy
                .request(Method::GET, "/doc")
                .header("accept-encoding", "gzip")
                .header("cache-control", "no-transform")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, document);
}

#[tokio::test]
async fn server_sent_events_reach_the_client_one_by_one() {
    let (events, stream) = body::channel();
    let stream: Arc<Mutex<Option<TestBody>>> = Arc::new(Mutex::new(Some(stream)));
    let origin =
        FakeOrigin::new()
            .route("/events", "")
            .handler(move |_request| {
                let stream = stream.lock().unwrap().take().expect("one subscriber");
                async move {
                    Response::builder().header("content-type", "text/event-stream").body(stream).unwrap()
                }
            })
            .start()
            .await;
    let proxy = proxy_for(&origin).await;
    let request =
        proxy.request(Method::GET, "/events").header("accept-encoding", "gzip").body(body::empty()).unwrap();
    let response = within("the event stream's headers", proxy.client().request(request)).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut received = response.into_body();
    let mut decoder = Decoder::new(Encoding::Gzip).unwrap();
    for n in 1..=3 {
        let event = format!("event: lead\ndata: {{\"id\":{n}}}\n\n");
        assert!(events.send(event.clone()).await);
        // The event must arrive while the origin holds the stream open: flushed, not buffered.
        let mut decoded = Vec::new();
        while decoded.len() < event.len() {
            let frame = within("the next event", received.frame()).await.unwrap().unwrap();
            decoder.push(frame.into_data().unwrap());
            decoded.extend_from_slice(&decoder.pull(4096).unwrap());
        }
        assert_eq!(decoded, event.as_bytes());
    }
}

#[tokio::test]
async fn an_origin_compressed_answer_passes_through_or_is_decoded() {
    let document = json(20 * 1024);
    let gzipped = codec::compress(Encoding::Gzip, 6, &document).unwrap();
    let origin = FakeOrigin::new()
        .route("/report", gzipped.clone())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;

    let accepted = get(&proxy, "/report", Some("gzip")).await;
    assert_eq!(accepted.body, gzipped, "the origin's own bytes");
    assert_eq!(accepted.header("content-encoding"), Some("gzip"));
    assert_eq!(accepted.header("content-length"), Some(gzipped.len().to_string().as_str()));

    let plain = get(&proxy, "/report", None).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, document);

    let brotli = get(&proxy, "/report", Some("br")).await;
    assert_eq!(brotli.header("content-encoding"), Some("br"));
    assert_eq!(decode(Encoding::Brotli, &brotli.body), document);

    let decoded = "accel_origin_encoded_responses_total{route=\"api\",encoding=\"gzip\",action=\"decoded\"}";
    assert_eq!(proxy.metric(decoded).await, 2.0);
}

#[tokio::test]
async fn h2c_clients_get_compressed_answers_too() {
    let document = json(50 * 1024);
    let origin = FakeOrigin::new()
        .route("/a", document.clone())
        .header("content-type", "application/json")
        .start()
        .await;
    let proxy = proxy_for(&origin).await;
    let request =
        proxy.request(Method::GET, "/a").header("accept-encoding", "zstd").body(body::empty()).unwrap();
    let response = within("h2c", proxy.h2c_client().request(request)).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["content-encoding"], "zstd");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(decode(Encoding::Zstd, &bytes), document);
}

#[tokio::test]
async fn a_cached_answer_is_compressed_once_per_coding_and_served_to_many() {
    let document = json(100 * 1024);
    let origin = FakeOrigin::new()
        .route("/api/report", document.clone())
        .header("content-type", "application/json")
        .header("cache-control", "max-age=300")
        .start()
        .await;
    let rules = r#"
[[route]]
name = "api"
upstream = "api"
cache = { ttl = "5m" }
compress = { min_size = "1KiB", cached_level = { br = 5, zstd = 3, gzip = 6 } }
"#;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(rules).start().await;

    // The miss streams compressed; the cache keeps the identity body.
    let first = get(&proxy, "/api/report", Some("br")).await;
    assert_eq!(first.header("content-encoding"), Some("br"));
    assert_eq!(decode(Encoding::Brotli, &first.body), document);

    for _ in 0..5 {
        let hit = get(&proxy, "/api/report", Some("br")).await;
        assert_eq!(hit.header("content-encoding"), Some("br"));
        assert_eq!(hit.header("vary"), Some("Accept-Encoding"));
        let length: usize =
            hit.header("content-length").expect("a stored variant has a length").parse().unwrap();
        assert_eq!(length, hit.body.len());
        assert_eq!(decode(Encoding::Brotli, &hit.body), document);
    }
    let identity = get(&proxy, "/api/report", None).await;
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body, document);
    let gzip = get(&proxy, "/api/report", Some("gzip")).await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(decode(Encoding::Gzip, &gzip.body), document);

    assert_eq!(origin.hits("/api/report"), 1, "every answer after the first came from the cache");
    let variant_runs = |encoding: &str| {
        format!("accel_compressions_total{{route=\"api\",encoding=\"{encoding}\",kind=\"variant\"}}")
    };
    assert_eq!(proxy.metric(&variant_runs("br")).await, 1.0, "five br hits, one br variant");
    assert_eq!(proxy.metric(&variant_runs("gzip")).await, 1.0);
}

#[tokio::test]
async fn an_eager_route_compresses_every_coding_when_the_answer_is_stored() {
    let document = json(20 * 1024);
    let origin = FakeOrigin::new()
        .route("/api/catalogue", document.clone())
        .header("content-type", "application/json")
        .header("cache-control", "max-age=300")
        .start()
        .await;
    let rules = r#"
[[route]]
name = "api"
upstream = "api"
cache = { ttl = "5m" }
compress = { min_size = "1KiB", eager = true, cached_level = { br = 5, zstd = 3, gzip = 6 } }
"#;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(rules).start().await;

    // A client that accepts nothing: the store alone makes the variants.
    let first = get(&proxy, "/api/catalogue", None).await;
    assert_eq!(first.body, document);
    for encoding in ["br", "zstd", "gzip"] {
        let series =
            format!("accel_compressions_total{{route=\"api\",encoding=\"{encoding}\",kind=\"variant\"}}");
        accel_e2e::eventually_async(&format!("the {encoding} variant"), || {
            let (proxy, series) = (&proxy, series.clone());
            async move { proxy.metric(&series).await == 1.0 }
        })
        .await;
    }
    let hit = get(&proxy, "/api/catalogue", Some("zstd")).await;
    assert_eq!(hit.header("content-encoding"), Some("zstd"));
    assert_eq!(decode(Encoding::Zstd, &hit.body), document);
    let series = "accel_compressions_total{route=\"api\",encoding=\"zstd\",kind=\"variant\"}";
    assert_eq!(proxy.metric(series).await, 1.0, "the hit used the eager variant");
}
