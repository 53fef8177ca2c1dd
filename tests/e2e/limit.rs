//! Rate limits over real sockets: a route's burst passes and the rest is refused with 429 and
//! the RateLimit headers before reaching the origin; a route without `rate_limit` is exempt;
//! trusted proxies' `X-Forwarded-For` names the client and nobody else's does; the per-client
//! concurrency cap holds a client's excess off while its requests are in flight. Rates are slow
//! (per minute) so counts do not depend on how fast the machine sends.

use accel_e2e::{Collected, FakeOrigin, Gate, TestProxy, body, eventually_async, within};
use http::{Method, Response};

const RULES: &str = r#"
[[route]]
name = "health"
match = { path = "/health" }
upstream = "api"

[[route]]
name = "detect"
match = { path = "/api/golden-leads/detect" }
upstream = "api"
rate_limit = { rate = "10/m", burst = 3, headers = true }

[[route]]
name = "all"
upstream = "api"
"#;

async fn get_from(proxy: &TestProxy, path: &str, forwarded_for: Option<&str>) -> Collected {
    let mut request = proxy.request(Method::GET, path);
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    proxy.send(request.body(body::empty()).expect("a request")).await
}

#[tokio::test]
async fn the_burst_passes_then_refusals_never_reach_the_origin() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(proxy.get("/api/golden-leads/detect").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(origin.hits("/api/golden-leads/detect"), 3);

    let refused = proxy.get("/api/golden-leads/detect").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.text(), "rate limited\n");
    // 10/m: one request every 6 s; the retry can be admitted within 6 s.
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=6).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("ratelimit-policy"), Some(r#""client_ip";q=10;w=60"#));
    assert!(refused.header("ratelimit").is_some_and(|v| v.starts_with(r#""client_ip";r=0;t="#)));

    // Admitted answers carry the headers too (`headers = true`), and other routes are exempt.
    for _ in 0..20 {
        assert_eq!(proxy.get("/health").await.status, 200);
        assert_eq!(proxy.get("/api/other").await.status, 200);
    }
    assert_eq!(origin.hits("/health"), 20);
    assert_eq!(proxy.metric(r#"accel_rate_limited_total{route="detect",limit="client_ip"}"#).await, 3.0);
    assert_eq!(proxy.metric(r#"accel_requests_total{route="detect",method="GET",status="4xx"}"#).await, 3.0);
    assert_eq!(proxy.metric(r#"accel_rate_limit_keys{route="detect",limit="client_ip"}"#).await, 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn admitted_answers_carry_the_client_state() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    let first = proxy.get("/api/golden-leads/detect").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "ok");
    assert_eq!(first.header("ratelimit-policy"), Some(r#""client_ip";q=10;w=60"#));
    // Two of three left; the bucket is full again one interval (6 s) after the request.
    assert_eq!(first.header("ratelimit"), Some(r#""client_ip";r=2;t=6"#));
    proxy.shutdown().await;
}

#[tokio::test]
async fn only_a_trusted_proxy_names_the_client() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    // Untrusted: every spoofed X-Forwarded-For lands in the peer's one bucket.
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    let mut passed = 0;
    for i in 0..6 {
        let spoof = format!("198.51.100.{i}");
        passed += usize::from(get_from(&proxy, "/api/golden-leads/detect", Some(&spoof)).await.status == 200);
    }
    assert_eq!(passed, 3);
    proxy.shutdown().await;

    // Trusted: each client behind the proxy has its own bucket.
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[forwarded]\ntrusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(get_from(&proxy, "/api/golden-leads/detect", Some(client)).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 429], "client {client}");
    }
    assert_eq!(proxy.metric(r#"accel_rate_limit_keys{route="detect",limit="client_ip"}"#).await, 2.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_concurrency_cap_refuses_a_clients_excess_while_its_requests_are_in_flight() {
    let gate = Gate::new();
    let held = gate.clone();
    let origin = FakeOrigin::new()
        .route("/slow", "")
        .handler(move |request| {
            let gate = held.clone();
            async move {
                let _ = request.into_body().drain().await;
                gate.wait().await;
                Response::new(body::full("done"))
            }
        })
        .route("/*", "ok")
        .start()
        .await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[limits]\nclient_concurrency = 2")
        .start()
        .await;

    let slow: Vec<_> = (0..2)
        .map(|_| {
            let client = proxy.client();
            let request = proxy.request(Method::GET, "/slow").body(body::empty()).expect("a request");
            tokio::spawn(
                async move { Collected::from(client.request(request).await.expect("an answer")).await },
            )
        })
        .collect();
    eventually_async("both slow requests reach the origin", || async { origin.hits("/slow") == 2 }).await;

    let refused = proxy.get("/health").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.text(), "too many concurrent requests\n");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(origin.hits("/health"), 0);

    gate.open();
    for task in slow {
        let answer = within("a slow request", task).await.expect("the task").expect("the body");
        assert_eq!(answer.text(), "done");
    }
    assert_eq!(proxy.get("/health").await.status, 200);
    assert_eq!(proxy.metric("accel_client_concurrency_rejected_total").await, 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_limit_and_applies_a_changed_one() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    for _ in 0..3 {
        assert_eq!(proxy.get("/api/golden-leads/detect").await.status, 200);
    }
    assert_eq!(proxy.get("/api/golden-leads/detect").await.status, 429);

    // Another route changes; the limit does not: still exhausted.
    proxy.rewrite_rules(&RULES.replace("name = \"all\"", "name = \"everything\""));
    proxy.reload().expect("valid rules");
    assert_eq!(proxy.get("/api/golden-leads/detect").await.status, 429);

    // The limit changes: it applies at once, with fresh counts.
    proxy.rewrite_rules(&RULES.replace("burst = 3", "burst = 5"));
    proxy.reload().expect("valid rules");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(proxy.get("/api/golden-leads/detect").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    proxy.shutdown().await;
}
