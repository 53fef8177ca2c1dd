//! Request identity and timing: `X-Request-Id` (kept from a trusted peer, made up otherwise,
//! the same upstream and back), W3C trace context passed through or started, `Server-Timing`
//! and `X-Response-Time` on misses and hits, and slow requests counted.

use accel_e2e::{Collected, FakeOrigin, Gate, OriginHandle, TestProxy, body, ms, within};
use http::Method;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One route, `api`, for `/api/` only (anything else is refused with 404), with `keys`.
async fn proxy(origin: &OriginHandle, keys: &str, sidecar: &str) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&format!(
            "[[route]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api/\" }}\nupstream = \"api\"\n{keys}\n"
        ))
        .sidecar_toml(sidecar)
        .start()
        .await
}

async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Collected {
    let mut request = proxy.request(Method::GET, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    proxy.send(request.body(body::empty()).unwrap()).await
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn the_origin_sees_the_request_id_the_client_gets_back_and_a_stranger_s_is_replaced() {
    let origin = FakeOrigin::new().route("/api/*", "ok").start().await;
    let proxy = proxy(&origin, "", "").await;

    let answer = get(&proxy, "/api/a", &[("x-request-id", "forged-by-client")]).await;
    let id = answer.header("x-request-id").expect("an id on the answer").to_owned();
    assert!(is_generated_id(&id), "{id:?}");
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header_all("x-request-id"), std::slice::from_ref(&id));

    let again = get(&proxy, "/api/a", &[]).await;
    let other = again.header("x-request-id").unwrap();
    assert!(is_generated_id(other) && other != id, "every request has its own id");
}

#[tokio::test]
async fn a_trusted_peer_s_request_id_is_kept_unless_malformed() {
    let origin = FakeOrigin::new().route("/api/*", "ok").start().await;
    let proxy = proxy(&origin, "", "[forwarded]\ntrusted_proxies = [\"127.0.0.1\"]").await;

    let answer = get(&proxy, "/api/a", &[("x-request-id", "edge-5f1c-42")]).await;
    assert_eq!(answer.header("x-request-id"), Some("edge-5f1c-42"));
    assert_eq!(origin.last_request().unwrap().header("x-request-id"), Some("edge-5f1c-42"));

    let long = "x".repeat(200);
    let answer = get(&proxy, "/api/a", &[("x-request-id", &long)]).await;
    let id = answer.header("x-request-id").unwrap();
    assert!(is_generated_id(id), "{id:?}");
    assert_eq!(origin.last_request().unwrap().header("x-request-id"), Some(id));
}

#[tokio::test]
async fn refusals_carry_the_request_id_and_ids_can_be_turned_off() {
    let origin = FakeOrigin::new().route("/api/*", "ok").start().await;
    let proxy_on = proxy(&origin, "", "").await;
    let refused = get(&proxy_on, "/elsewhere", &[]).await;
    assert_eq!(refused.status, 404);
    assert!(is_generated_id(refused.header("x-request-id").unwrap_or_default()), "{refused:?}");

    let proxy_off = proxy(&origin, "", "[forwarded]\nrequest_id = false").await;
    let answer = get(&proxy_off, "/api/a", &[]).await;
    assert_eq!(answer.header("x-request-id"), None);
    assert_eq!(origin.last_request().unwrap().header("x-request-id"), None);
    // Off, a client's header is just a header: it passes as it came.
    get(&proxy_off, "/api/a", &[("x-request-id", "client-7")]).await;
    assert_eq!(origin.last_request().unwrap().header("x-request-id"), Some("client-7"));
}

#[tokio::test]
async fn a_valid_trace_passes_unchanged_and_one_is_started_when_configured() {
    let origin = FakeOrigin::new().route("/api/*", "ok").start().await;
    let passing = proxy(&origin, "", "").await;
    get(&passing, "/api/a", &[("traceparent", PARENT), ("tracestate", "rojo=00f067aa0ba902b7")]).await;
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("traceparent"), Some(PARENT));
    assert_eq!(seen.header("tracestate"), Some("rojo=00f067aa0ba902b7"));
    // Not configured to start traces: none is made up.
    get(&passing, "/api/a", &[]).await;
    assert_eq!(origin.last_request().unwrap().header("traceparent"), None);

    let starting = proxy(&origin, "", "[forwarded]\nstart_traces = true").await;
    get(&starting, "/api/a", &[]).await;
    let started = origin.last_request().unwrap().header("traceparent").unwrap().to_owned();
    assert!(accel::forward::trace::is_valid_traceparent(started.as_bytes()), "{started:?}");
    assert!(started.starts_with("00-") && started.ends_with("-01"), "{started:?}");

    // An invalid parent (all-zero trace id) is replaced by a new trace, its state dropped.
    let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    get(&starting, "/api/a", &[("traceparent", bad), ("tracestate", "rojo=1")]).await;
    let seen = origin.last_request().unwrap();
    let replaced = seen.header("traceparent").unwrap();
    assert!(replaced != bad && replaced != started, "{replaced:?}");
    assert!(accel::forward::trace::is_valid_traceparent(replaced.as_bytes()));
    assert_eq!(seen.header("tracestate"), None);

    get(&starting, "/api/a", &[("traceparent", PARENT)]).await;
    assert_eq!(origin.last_request().unwrap().header("traceparent"), Some(PARENT));
}

#[tokio::test]
async fn server_timing_is_on_misses_and_hits_when_enabled_and_a_hit_keeps_no_other_request_s_id() {
    // The origin echoes an id of its own; the cached answer must not hand it (or the first
    // client's id) to the next client.
    let origin =
        FakeOrigin::new().route("/api/*", "cached").header("x-request-id", "origin-echo").start().await;
    let keys = "cache = { ttl = \"60s\" }\ntiming = { server_timing = true, response_time = true }";
    let proxy = proxy(&origin, keys, "").await;

    let miss = get(&proxy, "/api/p", &[]).await;
    let timing = miss.header("server-timing").expect("Server-Timing on a miss");
    assert!(timing.starts_with("total;dur="), "{timing}");
    assert!(timing.contains(", upstream;dur="), "{timing}");
    assert!(timing.ends_with(", cache;desc=miss"), "{timing}");
    let response_time = miss.header("x-response-time").unwrap();
    assert!(response_time.ends_with("ms") && response_time[..response_time.len() - 2].parse::<f64>().is_ok());
    let miss_id = miss.header("x-request-id").unwrap().to_owned();
    assert!(is_generated_id(&miss_id));
    assert_eq!(origin.last_request().unwrap().header("x-request-id"), Some(miss_id.as_str()));

    let hit = get(&proxy, "/api/p", &[]).await;
    assert_eq!(origin.hits("/api/p"), 1, "the second request is a hit");
    assert_eq!(hit.header_all("server-timing").len(), 1, "{:?}", hit.header_all("server-timing"));
    let timing = hit.header("server-timing").unwrap();
    assert!(timing.starts_with("total;dur=") && timing.ends_with(", cache;desc=hit"), "{timing}");
    assert!(!timing.contains("upstream"), "no upstream exchange on a hit: {timing}");
    let hit_id = hit.header_all("x-request-id");
    assert_eq!(hit_id.len(), 1);
    assert!(is_generated_id(&hit_id[0]) && hit_id[0] != miss_id, "{hit_id:?}");
}

#[tokio::test]
async fn routes_without_timing_add_no_timing_header() {
    let origin = FakeOrigin::new().route("/api/*", "ok").start().await;
    let proxy = proxy(&origin, "cache = { ttl = \"60s\" }", "").await;
    for _ in 0..2 {
        let answer = get(&proxy, "/api/p", &[]).await;
        assert_eq!(answer.header("server-timing"), None);
        assert_eq!(answer.header("x-response-time"), None);
    }
}

#[tokio::test]
async fn requests_above_the_route_s_threshold_are_counted_as_slow() {
    let origin =
        FakeOrigin::new().route("/api/slow", "late").latency(ms(60)).route("/api/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(
            r#"
            [[route]]
            name = "slow"
            match = { path = "/api/slow" }
            upstream = "api"
            timing = { slow = "30ms" }

            [[route]]
            name = "never"
            match = { path_prefix = "/api/" }
            upstream = "api"
            timing = { slow = false }
            "#,
        )
        .start()
        .await;
    let slow = "accel_slow_requests_total{route=\"slow\"}";
    let never = "accel_slow_requests_total{route=\"never\"}";
    let text = proxy.metrics_text().await;
    assert!(text.contains(&format!("{slow} 0")), "the series exists before the first slow request");

    assert_eq!(get(&proxy, "/api/slow", &[]).await.status, 200);
    assert_eq!(get(&proxy, "/api/slow", &[]).await.status, 200);
    get(&proxy, "/api/other", &[]).await;
    assert_eq!(proxy.metric(slow).await, 2.0);
    assert_eq!(proxy.metric(never).await, 0.0);
}

#[tokio::test]
async fn upstream_time_spans_every_try_of_a_request() {
    let busy = FakeOrigin::new().route("/*", "busy").status(503).latency(ms(150)).start().await;
    let fine = FakeOrigin::new().route("/*", "fine").latency(ms(150)).start().await;
    let proxy = TestProxy::builder()
        .upstream_with("api", &[busy.addr(), fine.addr()], r#"ejection = { consecutive_failures = 1000 }"#)
        .rules(
            "[[route]]\nname = \"all\"\nupstream = \"api\"\nretry = { attempts = 2, statuses = [503] }\n\
             timing = { server_timing = true }\n",
        )
        .start()
        .await;

    let duration = |timing: &str, metric: &str| -> f64 {
        let entry = timing.split(", ").find(|m| m.starts_with(metric)).expect(metric);
        entry.rsplit('=').next().unwrap().parse().unwrap()
    };
    // Ties between the endpoints are random: go on until one request was retried.
    let mut retried = false;
    for i in 0..40 {
        let path = format!("/t{i}");
        let answer = proxy.get(&path).await;
        assert_eq!(answer.text(), "fine");
        let tries = 1 + busy.hits(&path);
        let timing = answer.header("server-timing").expect("Server-Timing").to_owned();
        let (upstream, total) = (duration(&timing, "upstream;dur="), duration(&timing, "total;dur="));
        // Each try waits 150 ms at its endpoint: the upstream time holds every try's.
        assert!(upstream >= 150.0 * tries as f64, "{tries} tries: {timing}");
        assert!(total >= upstream, "{timing}");
        retried |= tries == 2;
        if retried {
            break;
        }
    }
    assert!(retried, "in 40 requests, one tried the busy endpoint first");
}

#[tokio::test]
async fn an_answer_made_without_a_try_has_no_upstream_time() {
    // Each answer's body stays open until the gate opens, holding the endpoint's one place.
    let gate = Gate::new();
    let origin = FakeOrigin::new().route("/*", "").held_body(&gate, "first ", "last").start().await;
    let proxy = TestProxy::builder()
        .upstream_with("api", &[origin.addr()], "max_connections_per_endpoint = 1")
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\ntiming = { server_timing = true }\n")
        .start()
        .await;

    let request = proxy.request(Method::GET, "/held").body(body::empty()).unwrap();
    let open = within("response headers", proxy.client().request(request)).await.expect("an answer");
    let timing = open.headers()["server-timing"].to_str().unwrap().to_owned();
    assert!(timing.starts_with("total;dur=") && timing.contains(", upstream;dur="), "{timing}");

    // The endpoint is full: the 503 is the proxy's own, made before any try.
    let refused = proxy.get("/refused").await;
    assert_eq!(refused.status.as_u16(), 503);
    assert_eq!(origin.total_hits(), 1, "the second request never reached the endpoint");
    let timing = refused.header("server-timing").expect("Server-Timing on the proxy's own answer");
    assert!(timing.starts_with("total;dur="), "{timing}");
    assert!(!timing.contains("upstream"), "no try, no upstream time: {timing}");

    gate.open();
    let done = within("the held body", Collected::from(open)).await.expect("the whole body");
    assert_eq!(done.text(), "first last");
}
