//! The admin listener: `/healthz`, `/readyz`, `/status` and `/metrics` say what the proxy is
//! doing.

use accel_e2e::{FakeOrigin, TestProxy, body};
use http::Method;

const RULES: &str = r#"
[[route]]
name = "leads"
match = { path = "/api/leads/{id}" }
upstream = "api"

[[route]]
name = "default"
upstream = "api"
"#;

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;

    let healthz = proxy.admin_get("/healthz").await;
    assert_eq!((healthz.status.as_u16(), healthz.text().as_str()), (200, "ok\n"));
    let readyz = proxy.admin_get("/readyz").await;
    assert_eq!((readyz.status.as_u16(), readyz.text().as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn without_rules_the_proxy_is_not_ready() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules("").start().await;

    let readyz = proxy.admin_get("/readyz").await;

    assert_eq!((readyz.status.as_u16(), readyz.text().as_str()), (503, "no rules loaded\n"));
    assert_eq!(proxy.admin_get("/healthz").await.status, 200, "alive all the same");
}

#[tokio::test]
async fn status_lists_routes_upstreams_and_endpoints() {
    let a = FakeOrigin::new().route("/*", "ok").start().await;
    let b = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder().upstream("api", &[a.addr(), b.addr()]).rules(RULES).start().await;

    let status = proxy.status_json().await;

    let routes: Vec<&str> =
        status["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(routes, ["leads", "default"]);
    let file = proxy.rules_path().display().to_string();
    assert_eq!(status["routes"][0]["file"], file.as_str());
    assert_eq!(status["routes"][0]["upstream"], "api");
    assert_eq!(status["rules_files"], serde_json::json!([file]));
    let upstream = &status["upstreams"][0];
    assert_eq!(upstream["name"], "api");
    let endpoints = upstream["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["addr"], a.addr().to_string());
    assert_eq!(endpoints[0]["state"], "healthy");
    assert_eq!(endpoints[0]["in_flight"], 0);
    assert_eq!(endpoints[1]["addr"], b.addr().to_string());
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let origin =
        FakeOrigin::new().route("/api/leads/1", "lead").route("/boom", "no").status(500).start().await;
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).start().await;
    for _ in 0..3 {
        proxy.get("/api/leads/1").await;
    }
    proxy.send(proxy.request(Method::POST, "/boom").body(body::full("x")).unwrap()).await;
    proxy.get("/missing").await;

    let text = proxy.metrics_text().await;
    let value = |series: &str| accel_e2e::proxy::metric_value(&text, series);
    let endpoint = origin.addr();

    assert_eq!(value(r#"accel_requests_total{route="leads",method="GET",status="2xx"}"#), 3.0, "{text}");
    assert_eq!(value(r#"accel_requests_total{route="default",method="POST",status="5xx"}"#), 1.0);
    assert_eq!(value(r#"accel_requests_total{route="default",method="GET",status="4xx"}"#), 1.0);
    assert_eq!(value(r#"accel_request_duration_seconds_count{route="leads",cache="none"}"#), 3.0);
    assert_eq!(value(r#"accel_request_duration_seconds_bucket{le="+Inf",route="leads",cache="none"}"#), 3.0);
    let upstream = format!(r#"upstream="api",endpoint="{endpoint}""#);
    assert_eq!(value(&format!("accel_upstream_requests_total{{{upstream},outcome=\"success\"}}")), 4.0);
    assert_eq!(value(&format!("accel_upstream_requests_total{{{upstream},outcome=\"server_error\"}}")), 1.0);
    assert_eq!(value(&format!("accel_upstream_request_duration_seconds_count{{{upstream}}}")), 5.0);
    assert_eq!(value(&format!("accel_endpoint_healthy{{{upstream}}}")), 1.0);
    assert_eq!(value(&format!("accel_endpoint_in_flight{{{upstream}}}")), 0.0);
    assert!(value("accel_downstream_connections_total") >= 1.0);
    assert!(text.contains("# TYPE accel_request_duration_seconds histogram"), "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
}

#[tokio::test]
async fn histogram_buckets_are_configurable() {
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml("[metrics]\nlatency_buckets = [0.5, 30.0]")
        .start()
        .await;
    proxy.get("/x").await;

    let text = proxy.metrics_text().await;

    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("accel_request_duration_seconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(buckets, ["0.5", "30.0", "+Inf"], "{text}");
}
