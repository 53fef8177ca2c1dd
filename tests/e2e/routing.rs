//! Routing: host, methods, exact path, prefix and pattern, first match in file order, the
//! default route, and 404 when nothing matches.

use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, body};
use http::Method;

const RULES: &str = r#"
[[route]]
name = "admin-host"
match = { host = "admin.example.com" }
upstream = "b"

[[route]]
name = "lead"
match = { methods = ["GET", "HEAD"], path = "/api/leads/{id}" }
upstream = "a"

[[route]]
name = "health"
match = { path = "/health" }
upstream = "a"

[[route]]
name = "api-writes"
match = { methods = ["POST", "DELETE"], path_prefix = "/api/" }
upstream = "b"

[[route]]
name = "api"
match = { path_prefix = "/api/" }
upstream = "a"
"#;

async fn origins() -> (OriginHandle, OriginHandle) {
    let a = FakeOrigin::new().route("/*", "from a").start().await;
    let b = FakeOrigin::new().route("/*", "from b").start().await;
    (a, b)
}

async fn proxy(a: &OriginHandle, b: &OriginHandle, rules: &str) -> TestProxy {
    TestProxy::builder().upstream("a", &[a.addr()]).upstream("b", &[b.addr()]).rules(rules).start().await
}

async fn requests(proxy: &TestProxy, route: &str, method: &str) -> f64 {
    proxy.metric(&format!(r#"accel_requests_total{{route="{route}",method="{method}",status="2xx"}}"#)).await
}

#[tokio::test]
async fn requests_go_to_the_first_matching_route() {
    let (a, b) = origins().await;
    let proxy = proxy(&a, &b, RULES).await;

    // A pattern with a parameter; the method set holds.
    assert_eq!(proxy.get("/api/leads/42").await.text(), "from a");
    assert_eq!(requests(&proxy, "lead", "GET").await, 1.0);
    // The pattern takes one segment only: deeper paths fall through to the prefix.
    assert_eq!(proxy.get("/api/leads/42/notes").await.text(), "from a");
    assert_eq!(requests(&proxy, "api", "GET").await, 1.0);

    // A method outside the pattern route's set falls through to the next match.
    let post = proxy.send(proxy.request(Method::POST, "/api/leads/42").body(body::full("x")).unwrap()).await;
    assert_eq!(post.text(), "from b");
    assert_eq!(requests(&proxy, "api-writes", "POST").await, 1.0);

    // Exact path: only that path.
    assert_eq!(proxy.get("/health").await.text(), "from a");
    assert_eq!(requests(&proxy, "health", "GET").await, 1.0);
    assert_eq!(proxy.get("/health/deep").await.status, 404);

    // A prefix ending in `/` also takes the bare directory, but not a longer name.
    assert_eq!(proxy.get("/api").await.text(), "from a");
    assert_eq!(proxy.get("/apix").await.status, 404);

    // The host route comes first, so it takes every path on its host (port ignored).
    let by_host = proxy
        .send(
            proxy
                .request(Method::GET, "/api/leads/42")
                .header("host", "ADMIN.example.com:8080")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(by_host.text(), "from b");
    assert_eq!(requests(&proxy, "admin-host", "GET").await, 1.0);

    // The origin sees the path and query unchanged.
    proxy.get("/api/leads/7?fields=name&x=%20y").await;
    assert_eq!(a.last_request().unwrap().uri.to_string(), "/api/leads/7?fields=name&x=%20y");
}

#[tokio::test]
async fn without_a_match_the_proxy_answers_404_itself() {
    let (a, b) = origins().await;
    let proxy = proxy(&a, &b, RULES).await;

    let response = proxy.get("/nowhere").await;

    assert_eq!(response.status, 404);
    assert_eq!(response.text(), "no route\n");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(a.total_hits() + b.total_hits(), 0, "nothing reached an origin");
    assert_eq!(proxy.metric("accel_unrouted_requests_total").await, 1.0);
}

#[tokio::test]
async fn a_catch_all_route_at_the_end_is_the_default_route() {
    let (a, b) = origins().await;
    let rules = format!("{RULES}\n[[route]]\nname = \"default\"\nupstream = \"b\"\n");
    let proxy = proxy(&a, &b, &rules).await;

    let response = proxy.get("/nowhere").await;

    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "from b");
    assert_eq!(b.hits("/nowhere"), 1);
    assert_eq!(requests(&proxy, "default", "GET").await, 1.0);
    // Earlier routes still win over the default.
    assert_eq!(proxy.get("/api/leads/1").await.text(), "from a");
}

#[tokio::test]
async fn the_origins_status_and_headers_pass_unchanged() {
    let origin = FakeOrigin::new()
        .route("/created", "made")
        .status(201)
        .header("location", "/things/1")
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .route("/teapot", "short and stout")
        .status(418)
        .start()
        .await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .start()
        .await;

    let created = proxy.get("/created").await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/things/1"));
    assert_eq!(created.header_all("set-cookie"), ["a=1", "b=2"]);
    let teapot = proxy.get("/teapot").await;
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.text(), "short and stout");
    assert_eq!(proxy.metric(r#"accel_requests_total{route="all",method="GET",status="4xx"}"#).await, 1.0);
}

#[tokio::test]
async fn head_and_bodiless_answers_pass_unchanged() {
    let origin = FakeOrigin::new()
        .route("/doc", "twelve bytes")
        .header("etag", "\"v1\"")
        .route("/gone", "")
        .status(204)
        .route("/same", "")
        .status(304)
        .header("etag", "\"v1\"")
        .start()
        .await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"all\"\nupstream = \"api\"\n")
        .start()
        .await;

    let head = proxy.send(proxy.request(Method::HEAD, "/doc").body(body::empty()).unwrap()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("12"));
    assert_eq!(head.header("etag"), Some("\"v1\""));
    assert!(head.body.is_empty());
    assert_eq!(origin.last_request().unwrap().method, Method::HEAD);

    let no_content = proxy.get("/gone").await;
    assert_eq!(no_content.status, 204);
    assert!(no_content.body.is_empty());
    let not_modified = proxy
        .send(
            proxy
                .request(Method::GET, "/same")
                .header("if-none-match", "\"v1\"")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert_eq!(origin.last_request().unwrap().header("if-none-match"), Some("\"v1\""));
}

#[tokio::test]
async fn wildcard_hosts_and_rest_patterns_match() {
    let (a, b) = origins().await;
    let proxy = proxy(
        &a,
        &b,
        r#"
        [[route]]
        name = "tenants"
        match = { host = "*.tenants.test" }
        upstream = "b"

        [[route]]
        name = "files"
        match = { path = "/files/{owner}/{*rest}" }
        upstream = "a"
        "#,
    )
    .await;
    let with_host = |path: &str, host: &str| {
        proxy.request(Method::GET, path).header("host", host).body(body::empty()).unwrap()
    };

    assert_eq!(proxy.send(with_host("/x", "acme.tenants.test")).await.text(), "from b");
    assert_eq!(proxy.send(with_host("/x", "a.b.tenants.test:443")).await.text(), "from b");
    // The bare domain is not a subdomain of itself.
    assert_eq!(proxy.send(with_host("/x", "tenants.test")).await.status, 404);

    assert_eq!(proxy.get("/files/ann/a/b/c.txt").await.text(), "from a");
    assert_eq!(proxy.get("/files/ann/").await.text(), "from a", "the rest may be empty");
    assert_eq!(proxy.get("/files/").await.status, 404, "the owner segment is required");
}

#[tokio::test]
async fn a_request_with_two_hosts_or_none_is_rejected() {
    let (a, b) = origins().await;
    let proxy = proxy(&a, &b, RULES).await;

    // RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request with more than one Host,
    // or none; routing on one Host while the origin reads the other would be a bypass.
    for request in [
        &b"GET /api/leads/1 HTTP/1.1\r\nHost: app.test\r\nHost: admin.example.com\r\n\r\n"[..],
        &b"GET /api/leads/1 HTTP/1.1\r\nX-No-Host: 1\r\n\r\n"[..],
    ] {
        let mut connection = accel_e2e::RawConnection::open(proxy.addr()).await;
        connection.write(request).await;
        assert_eq!(connection.read_head().await.status, 400, "{}", String::from_utf8_lossy(request));
    }
    assert_eq!(a.total_hits() + b.total_hits(), 0);
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let (a, b) = origins().await;
    let rules = r#"
[[route]]
name = "public"
match = { path_prefix = "/public/" }
upstream = "a"
"#;
    let proxy = proxy(&a, &b, rules).await;

    // Not under /public/ once resolved: no route, nothing forwarded.
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public/.%2E/admin"] {
        assert_eq!(proxy.get(path).await.status, 404, "{path}");
    }
    assert_eq!(a.total_hits(), 0);

    // Under /public/: forwarded by the path the origin would resolve, query kept.
    assert_eq!(proxy.get("/public/./docs/../report?x=1").await.text(), "from a");
    let seen = a.last_request().expect("the origin saw the request");
    assert_eq!(seen.uri.path_and_query().map(|p| p.as_str()), Some("/public/report?x=1"));

    // Above the root: refused.
    assert_eq!(proxy.get("/public/../../etc/passwd").await.status, 400);
    assert_eq!(a.total_hits(), 1);
}
