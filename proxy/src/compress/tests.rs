//! Stage tests: the negotiation applied to answers, with metrics read from the registry.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::codec::tests::{decode_all, sample};
use super::metrics::CompressMetrics;
use super::*;
use crate::metrics::DEFAULT_LATENCY_BUCKETS;
use crate::metrics::Metrics;
use crate::name::RouteName;

struct Fixture {
    metrics: Metrics,
    route: RouteCompression,
}

impl Fixture {
    fn new(settings: &str) -> Self {
        let metrics = Metrics::new(&DEFAULT_LATENCY_BUCKETS);
        let file: CompressFile = toml::from_str(settings).unwrap();
        let settings = CompressSettings::convert(file, &mut |k: &str, m: String| panic!("{k}: {m}"));
        let policy = CompressSettings::resolve(Some(&settings), &CompressSettings::default()).unwrap();
        let route = RouteCompression {
            policy,
            metrics: CompressMetrics::register(&metrics).route(&RouteName::try_from("api").unwrap()),
        };
        Self { metrics, route }
    }

    /// Runs the stage for a request with `request_headers` and an answer with
    /// `response_headers` and `body`.
    async fn exchange(
        &self,
        method: Method,
        request_headers: &[(&str, &str)],
        response_headers: &[(&str, &str)],
        body: Bytes,
    ) -> (http::response::Parts, Bytes) {
        let negotiation = Negotiation::new(Some(&self.route), &method, &headers(request_headers));
        let mut response = Response::new(Body::full(body));
        *response.headers_mut() = headers(response_headers);
        let (parts, body) = negotiation.apply(response).into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    }

    /// The value of the series whose line starts with `series`, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    map
}

fn get<'a>(parts: &'a http::response::Parts, name: &str) -> Vec<&'a str> {
    parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn every_encoding_round_trips_with_its_headers() {
    let fixture = Fixture::new("");
    let body = Bytes::from(sample(100 * 1024));
    let length = body.len().to_string();
    for encoding in Encoding::COMPRESSING {
        let (parts, received) = fixture
            .exchange(
                Method::GET,
                &[("accept-encoding", encoding.as_str())],
                &[JSON, ("content-length", &length), ("etag", "\"v1\""), ("accept-ranges", "bytes")],
                body.clone(),
            )
            .await;
        assert_eq!(get(&parts, "content-encoding"), [encoding.as_str()]);
        assert_eq!(get(&parts, "vary"), ["Accept-Encoding"]);
        assert_eq!(get(&parts, "etag"), ["W/\"v1\""]);
        assert!(get(&parts, "content-length").is_empty(), "streamed output has no length");
        assert!(get(&parts, "accept-ranges").is_empty());
        assert!(received.len() < body.len() / 4, "{encoding}: {} bytes", received.len());
        assert_eq!(decode_all(encoding, &received), body, "{encoding}");
        let labels = format!("route=\"api\",encoding=\"{encoding}\"");
        assert_eq!(fixture.metric(&format!("accel_compressed_responses_total{{{labels}}}")), 1.0);
        assert_eq!(
            fixture.metric(&format!("accel_compression_bytes_total{{{labels},direction=\"in\"}}")),
            body.len() as f64
        );
        assert_eq!(
            fixture.metric(&format!("accel_compression_bytes_total{{{labels},direction=\"out\"}}")),
            received.len() as f64
        );
        assert_eq!(fixture.metric(&format!("accel_compressions_total{{{labels},kind=\"stream\"}}")), 1.0);
        assert_eq!(fixture.metric(&format!("accel_compression_duration_seconds_count{{{labels}}}")), 1.0);
    }
}

#[tokio::test]
async fn the_server_order_breaks_ties_and_q_values_win() {
    let fixture = Fixture::new(r#"encodings = ["zstd", "gzip"]"#);
    let body = Bytes::from(sample(4096));
    let cases = [
        ("br, gzip, zstd", Some("zstd")),
        ("gzip, zstd;q=0.5", Some("gzip")),
        ("br", None),
        ("identity", None),
        ("*", Some("zstd")),
    ];
    for (accept, expected) in cases {
        let (parts, _) =
            fixture.exchange(Method::GET, &[("accept-encoding", accept)], &[JSON], body.clone()).await;
        let got: Option<&str> = get(&parts, "content-encoding").first().copied();
        assert_eq!(got, expected, "Accept-Encoding: {accept}");
        assert_eq!(get(&parts, "vary"), ["Accept-Encoding"], "Accept-Encoding: {accept}");
    }
}

#[tokio::test]
async fn request_conditions_skip_but_still_vary() {
    let fixture = Fixture::new("");
    let body = Bytes::from(sample(4096));
    let requests: [(Method, &[(&str, &str)]); 3] = [
        (Method::HEAD, &[("accept-encoding", "gzip")]),
        (Method::GET, &[("accept-encoding", "gzip"), ("range", "bytes=0-99")]),
        (Method::GET, &[("accept-encoding", "gzip"), ("cache-control", "no-transform")]),
    ];
    for (method, request) in requests {
        let (parts, received) =
            fixture.exchange(method.clone(), request, &[JSON, ("etag", "\"v1\"")], body.clone()).await;
        assert!(get(&parts, "content-encoding").is_empty(), "{method} {request:?}");
        assert_eq!(get(&parts, "vary"), ["Accept-Encoding"]);
        assert_eq!(get(&parts, "etag"), ["\"v1\""], "an untouched answer keeps its strong ETag");
        assert_eq!(received, body);
    }
}

#[tokio::test]
async fn response_conditions_skip_untouched() {
    let fixture = Fixture::new(r#"min_size = "2KiB""#);
    let big = Bytes::from(sample(4096));
    let cases: [(&[(&str, &str)], Bytes); 4] = [
        (&[("content-type", "image/png")], big.clone()),
        (&[JSON, ("cache-control", "no-transform")], big.clone()),
        (&[JSON, ("content-length", "2047")], Bytes::from(sample(2047))),
        (&[JSON], Bytes::from(sample(100))),
    ];
    for (response, body) in cases {
        let (parts, received) =
            fixture.exchange(Method::GET, &[("accept-encoding", "br")], response, body.clone()).await;
        assert!(get(&parts, "content-encoding").is_empty(), "{response:?}");
        assert!(get(&parts, "vary").is_empty(), "{response:?}: not compressible at all, no Vary");
        assert_eq!(received, body);
    }
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let negotiation =
            Negotiation::new(Some(&fixture.route), &Method::GET, &headers(&[("accept-encoding", "br")]));
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let response = negotiation.apply(response);
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none(), "{status}");
    }
}

#[tokio::test]
async fn vary_is_merged_not_duplicated() {
    let fixture = Fixture::new("");
    let body = Bytes::from(sample(4096));
    let accept = [("accept-encoding", "gzip")];
    let (parts, _) = fixture.exchange(Method::GET, &accept, &[JSON, ("vary", "Origin")], body.clone()).await;
    assert_eq!(get(&parts, "vary"), ["Origin", "Accept-Encoding"]);
    let (parts, _) = fixture
        .exchange(Method::GET, &accept, &[JSON, ("vary", "origin, accept-encoding")], body.clone())
        .await;
    assert_eq!(get(&parts, "vary"), ["origin, accept-encoding"]);
    let (parts, _) = fixture.exchange(Method::GET, &accept, &[JSON, ("vary", "*")], body.clone()).await;
    assert_eq!(get(&parts, "vary"), ["*"]);
    let (parts, _) = fixture.exchange(Method::GET, &accept, &[JSON, ("etag", "W/\"weak\"")], body).await;
    assert_eq!(get(&parts, "etag"), ["W/\"weak\""]);
}

#[tokio::test]
async fn an_origin_coding_the_client_accepts_passes_through() {
    let fixture = Fixture::new("");
    let body = sample(20_000);
    let gzipped = codec::compress(Encoding::Gzip, 6, &body).unwrap();
    let length = gzipped.len().to_string();
    let (parts, received) = fixture
        .exchange(
            Method::GET,
            &[("accept-encoding", "gzip, br")],
            &[JSON, ("content-encoding", "gzip"), ("content-length", &length), ("etag", "\"g\"")],
            gzipped.clone(),
        )
        .await;
    assert_eq!(received, gzipped, "the origin's bytes, untouched");
    assert_eq!(get(&parts, "content-encoding"), ["gzip"]);
    assert_eq!(get(&parts, "content-length"), [length.as_str()]);
    assert_eq!(get(&parts, "etag"), ["\"g\""]);
    assert_eq!(get(&parts, "vary"), ["Accept-Encoding"]);
    assert_eq!(
        fixture.metric(
            "accel_origin_encoded_responses_total{route=\"api\",encoding=\"gzip\",action=\"passthrough\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn an_origin_coding_the_client_refuses_is_decoded_and_recoded() {
    let fixture = Fixture::new("");
    let body = sample(20_000);
    let gzipped = codec::compress(Encoding::Gzip, 6, &body).unwrap();
    let origin = [JSON, ("content-encoding", "gzip"), ("etag", "\"g\"")];

    let (parts, received) = fixture.exchange(Method::GET, &[], &origin, gzipped.clone()).await;
    assert_eq!(received, body, "no Accept-Encoding: identity");
    assert!(get(&parts, "content-encoding").is_empty());
    assert_eq!(get(&parts, "etag"), ["W/\"g\""]);
    assert_eq!(get(&parts, "vary"), ["Accept-Encoding"]);

    let (parts, received) =
        fixture.exchange(Method::GET, &[("accept-encoding", "br")], &origin, gzipped.clone()).await;
    assert_eq!(get(&parts, "content-encoding"), ["br"]);
    assert_eq!(decode_all(Encoding::Brotli, &received), body);
    assert_eq!(
        fixture.metric(
            "accel_origin_encoded_responses_total{route=\"api\",encoding=\"gzip\",action=\"decoded\"}"
        ),
        2.0
    );

    // A coding the proxy does not speak, or several, pass as they are.
    let (parts, received) = fixture
        .exchange(Method::GET, &[], &[JSON, ("content-encoding", "deflate")], Bytes::from_static(b"xyz"))
        .await;
    assert_eq!(received, Bytes::from_static(b"xyz"));
    assert_eq!(get(&parts, "content-encoding"), ["deflate"]);
}

#[tokio::test]
async fn routes_without_compression_change_nothing() {
    let negotiation = Negotiation::new(None, &Method::GET, &headers(&[("accept-encoding", "gzip")]));
    let mut response = Response::new(Body::full(sample(4096)));
    response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    let response = negotiation.apply(response);
    assert!(response.headers().get(header::VARY).is_none());
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn a_cached_answer_is_compressed_once_per_coding_and_served_to_many() {
    let fixture = Fixture::new("");
    let body = Bytes::from(sample(100 * 1024));
    let mut stored = Response::new(());
    stored.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    stored.headers_mut().insert(header::ETAG, "\"v1\"".parse().unwrap());
    let (stored, ()) = stored.into_parts();
    let variants = fixture.route.variants_for(&stored, &body);
    let clients: [(Method, &str, Option<&str>); 6] = [
        (Method::GET, "br, gzip", Some("br")),
        (Method::GET, "gzip, deflate, br, zstd", Some("br")),
        (Method::GET, "gzip", Some("gzip")),
        (Method::GET, "br", Some("br")),
        (Method::GET, "identity", None),
        (Method::HEAD, "br", None),
    ];
    for (method, accept, expected) in clients {
        let negotiation =
            Negotiation::new(Some(&fixture.route), &method, &headers(&[("accept-encoding", accept)]));
        let mut parts = stored.clone();
        parts.headers.insert(header::CONTENT_LENGTH, body.len().into());
        let (parts, sent) = negotiation.apply_cached(parts, &body, &variants).await.into_parts();
        let sent = sent.collect().await.unwrap().to_bytes();
        let got = get(&parts, "content-encoding").first().copied();
        assert_eq!(got, expected, "{method} Accept-Encoding: {accept}");
        assert_eq!(get(&parts, "vary"), ["Accept-Encoding"]);
        assert_eq!(get(&parts, "content-length"), [sent.len().to_string().as_str()]);
        match expected {
            Some(coding) => {
                let encoding = Encoding::from_token(coding).unwrap();
                assert_eq!(decode_all(encoding, &sent), body);
                assert_eq!(get(&parts, "etag"), ["W/\"v1\""]);
            }
            None => assert_eq!(sent, body),
        }
    }
    let runs = |coding: &str| {
        fixture.metric(&format!(
            "accel_compressions_total{{route=\"api\",encoding=\"{coding}\",kind=\"variant\"}}"
        ))
    };
    assert_eq!((runs("br"), runs("gzip"), runs("zstd")), (1.0, 1.0, 0.0));
    assert_eq!(fixture.metric("accel_compressed_responses_total{route=\"api\",encoding=\"br\"}"), 3.0);
    assert_eq!(
        fixture.metric("accel_compressions_total{route=\"api\",encoding=\"br\",kind=\"stream\"}"),
        0.0
    );
    assert!(variants.weight() > 0 && variants.weight() < body.len() / 2, "two compressed variants");
}

#[tokio::test]
async fn eager_variants_are_made_when_stored() {
    let fixture = Fixture::new("eager = true\nencodings = [\"zstd\", \"gzip\"]");
    let body = Bytes::from(sample(8 * 1024));
    let mut stored = Response::new(());
    stored.headers_mut().insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
    let (stored, ()) = stored.into_parts();
    let variants = Variants::new();
    fixture.route.eager_fill(&stored, &body, &variants).expect("eager and compressible").await;
    assert!(variants.get(Encoding::Zstd).is_some() && variants.get(Encoding::Gzip).is_some());
    assert!(variants.get(Encoding::Brotli).is_none(), "only the route's codings");

    let mut image = Response::new(());
    image.headers_mut().insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
    let (image, ()) = image.into_parts();
    assert!(
        fixture.route.eager_fill(&image, &body, &Variants::new()).is_none(),
        "not compressible: no variants"
    );
    let lazy = Fixture::new("");
    assert!(lazy.route.eager_fill(&stored, &body, &Variants::new()).is_none(), "not eager: made on demand");
}
