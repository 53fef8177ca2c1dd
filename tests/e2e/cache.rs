//! The response cache end to end: what clients get and how many requests reach the origin.
//! Cache time is a manual clock the tests advance; nothing waits on the wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accel::cache::Clock;
use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, body, eventually, ms, within};
use bytes::Bytes;
use http::{Method, Response, StatusCode};

/// A proxy with one route `rules` (a `[[route]]` body without `name`/`upstream`) in front
/// of `origin`, a manual cache clock, `X-Cache-Status` and purge token `t0ken`.
async fn proxy(origin: &OriginHandle, route: &str, clock: &Clock) -> TestProxy {
    let clock = clock.clone();
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&format!("[[route]]\nname = \"api\"\nupstream = \"api\"\n{route}\n"))
        .sidecar_toml("[cache]\nx_cache_status = true\npurge_token = \"t0ken\"\n")
        .config(move |config| config.cache.clock = clock)
        .start()
        .await
}

fn clock() -> Clock {
    Clock::manual(1_700_000_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn get_with(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> accel_e2e::Collected {
    let mut request = proxy.request(Method::GET, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    proxy.send(request.body(body::empty()).unwrap()).await
}

async fn purge(proxy: &TestProxy, token: Option<&str>, json: &str) -> accel_e2e::Collected {
    let mut request = http::Request::post(proxy.admin_url("/cache/purge"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body::full(json.to_owned())).unwrap();
    let response = proxy.client().request(request).await.expect("the admin listener answers");
    accel_e2e::Collected::from(response).await.unwrap()
}

#[tokio::test]
async fn a_miss_is_stored_and_the_next_request_is_a_hit() {
    let origin = FakeOrigin::new().route("/a", "hello").header("cache-control", "max-age=60").start().await;
    let clock = clock();
    let proxy = proxy(&origin, "cache = {}", &clock).await;

    let first = proxy.get("/a").await;
    assert_eq!(first.header("cache-status"), Some("accel; fwd=miss; fwd-status=200; stored"));
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    clock.advance(secs(5));
    let second = proxy.get("/a").await;

    assert_eq!(second.text(), "hello");
    assert_eq!(second.header("cache-status"), Some("accel; hit; ttl=55"));
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.header("content-length"), Some("5"));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn an_entry_expires_after_its_ttl() {
    let origin = FakeOrigin::new().route("/a", "hello").start().await;
    let clock = clock();
    let proxy = proxy(&origin, r#"cache = { ttl = "30s" }"#, &clock).await;

    proxy.get("/a").await;
    clock.advance(secs(29));
    assert_eq!(proxy.get("/a").await.header("x-cache-status"), Some("HIT"));
    clock.advance(secs(2));
    let expired = proxy.get("/a").await;

    // No validator and no stale window: nothing left to use, the entry is gone.
    assert_eq!(expired.header("x-cache-status"), Some("MISS"));
    assert_eq!(origin.hits("/a"), 2);
}

#[tokio::test]
async fn the_origins_max_age_wins_over_the_rule_ttl_unless_the_rule_says_otherwise() {
    let origin = FakeOrigin::new().route("/a", "a").header("cache-control", "max-age=10").start().await;
    let clock = clock();
    let origin_wins = proxy(&origin, r#"cache = { ttl = "5m" }"#, &clock).await;
    origin_wins.get("/a").await;
    clock.advance(secs(11));
    origin_wins.get("/a").await;
    assert_eq!(origin.hits("/a"), 2, "max-age=10 ended the entry before the rule's 5m");

    let origin = FakeOrigin::new().route("/a", "a").header("cache-control", "max-age=10").start().await;
    let rule_wins = proxy(&origin, r#"cache = { ttl = "5m", origin_cache_control = false }"#, &clock).await;
    rule_wins.get("/a").await;
    clock.advance(secs(11));
    assert_eq!(rule_wins.get("/a").await.header("x-cache-status"), Some("HIT"));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn what_the_origin_forbids_is_not_stored() {
    let origin = FakeOrigin::new()
        .route("/no-store", "x")
        .header("cache-control", "no-store")
        .route("/private", "x")
        .header("cache-control", "private, max-age=60")
        .route("/cookie", "x")
        .header("set-cookie", "session=1")
        .route("/error", "x")
        .status(500)
        .start()
        .await;
    let proxy = proxy(&origin, r#"cache = { ttl = "1m" }"#, &clock()).await;

    for path in ["/no-store", "/private", "/cookie", "/error"] {
        proxy.get(path).await;
        let second = proxy.get(path).await;
        assert_eq!(second.header("x-cache-status"), Some("MISS"), "{path}");
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains(r#"accel_cache_rejections_total{reason="no_store"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"accel_cache_rejections_total{reason="set_cookie"} 2"#), "{metrics}");
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let origin = FakeOrigin::new()
        .route("/greeting", "")
        .handler(|request| async move {
            let language =
                request.headers().get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("en");
            let text = if language == "fr" { "bonjour" } else { "hello" };
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Language")
                .body(body::full(text))
                .unwrap()
        })
        .start()
        .await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    let en = get_with(&proxy, "/greeting", &[("accept-language", "en")]).await;
    let fr = get_with(&proxy, "/greeting", &[("accept-language", "fr")]).await;
    let en_again = get_with(&proxy, "/greeting", &[("accept-language", "en")]).await;
    let fr_again = get_with(&proxy, "/greeting", &[("accept-language", "fr")]).await;

    assert_eq!((en.text().as_str(), fr.text().as_str()), ("hello", "bonjour"));
    assert_eq!((en_again.text().as_str(), fr_again.text().as_str()), ("hello", "bonjour"));
    assert_eq!(fr_again.header("x-cache-status"), Some("HIT"));
    assert_eq!(origin.hits("/greeting"), 2);
}

/// The origin answers with the caller's name: a leak would show another user's name.
fn whoami_origin() -> FakeOrigin {
    FakeOrigin::new().route("/me", "").handler(|request| async move { whoami(request.headers()) })
}

/// The caller's name, storable and varying by `Authorization`.
fn whoami(headers: &http::HeaderMap) -> accel_e2e::origin::OriginResponse {
    let user = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("anonymous");
    Response::builder()
        .header("cache-control", "max-age=60")
        .header("vary", "Authorization")
        .body(body::full(user.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn two_users_never_see_each_others_answers() {
    let origin = whoami_origin().start().await;
    let proxy = proxy(&origin, r#"cache = { key = { headers = ["authorization"] } }"#, &clock()).await;

    for _ in 0..2 {
        assert_eq!(
            get_with(&proxy, "/me", &[("authorization", "Bearer alice")]).await.text(),
            "Bearer alice"
        );
        assert_eq!(get_with(&proxy, "/me", &[("authorization", "Bearer bob")]).await.text(), "Bearer bob");
    }
    assert_eq!(origin.hits("/me"), 2, "one miss per user, then hits");
}

/// With `share_authenticated`, RFC 9111 §3.5 decides (see `isolation.rs` for the default:
/// answers to credentials kept per user).
#[tokio::test]
async fn shared_credentialed_answers_need_the_origins_leave() {
    let origin = FakeOrigin::new()
        .route("/private-ish", "secret")
        .header("cache-control", "max-age=60")
        .route("/public", "shared")
        .header("cache-control", "public, max-age=60")
        .start()
        .await;
    let proxy = proxy(&origin, "cache = { share_authenticated = true }", &clock()).await;

    get_with(&proxy, "/private-ish", &[("authorization", "Bearer alice")]).await;
    let anonymous = proxy.get("/private-ish").await;
    assert_eq!(anonymous.header("x-cache-status"), Some("MISS"), "alice's answer was not stored");
    let bob = get_with(&proxy, "/private-ish", &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob.header("cache-status"), Some("accel; fwd=bypass; detail=credentials"));
    assert_eq!(origin.hits("/private-ish"), 3);

    get_with(&proxy, "/public", &[("authorization", "Bearer alice")]).await;
    let bob = get_with(&proxy, "/public", &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob.header("x-cache-status"), Some("HIT"), "public answers may be shared");
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let origin = FakeOrigin::new().route("/a", "hello").header("cache-control", "max-age=60").start().await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    proxy.get("/a").await;
    let head = proxy.send(proxy.request(Method::HEAD, "/a").body(body::empty()).unwrap()).await;

    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache-status"), Some("HIT"));
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.body.is_empty());
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn a_matching_if_none_match_gets_a_304_from_the_cache() {
    let origin = FakeOrigin::new()
        .route("/a", "hello")
        .header("cache-control", "max-age=60")
        .header("etag", "\"v1\"")
        .start()
        .await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    proxy.get("/a").await;
    let matching = get_with(&proxy, "/a", &[("if-none-match", "\"v1\"")]).await;
    let other = get_with(&proxy, "/a", &[("if-none-match", "\"v0\"")]).await;

    assert_eq!(matching.status, 304);
    assert!(matching.body.is_empty());
    assert_eq!(matching.header("etag"), Some("\"v1\""));
    assert_eq!(other.status, 200);
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_the_origins_304_refreshes_it() {
    let origin = FakeOrigin::new()
        .route("/lead", "")
        .handler(|request| async move {
            let builder = Response::builder().header("cache-control", "max-age=10").header("etag", "\"v1\"");
            if request.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                builder.status(StatusCode::NOT_MODIFIED).body(body::empty()).unwrap()
            } else {
                builder.body(body::full("lead 17")).unwrap()
            }
        })
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, "cache = {}", &clock).await;

    proxy.get("/lead").await;
    clock.advance(secs(11));
    let revalidated = proxy.get("/lead").await;
    let hit = proxy.get("/lead").await;

    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "lead 17");
    assert_eq!(revalidated.header("cache-status"), Some("accel; fwd=stale; fwd-status=304; ttl=10"));
    assert_eq!(origin.last_request().unwrap().header("if-none-match"), Some("\"v1\""));
    assert_eq!(hit.header("x-cache-status"), Some("HIT"), "the 304 made the entry fresh again");
    assert_eq!(origin.hits("/lead"), 2);
}

/// An origin whose answers say which request they were: `v1`, `v2`, …
fn counting_origin(path: &str, cache_control: &'static str) -> (FakeOrigin, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let origin = FakeOrigin::new().route(path, "").handler(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Response::builder()
                .header("cache-control", cache_control)
                .body(body::full(format!("v{n}")))
                .unwrap()
        }
    });
    (origin, count)
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let gate = accel_e2e::Gate::new();
    let opened = gate.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let origin = FakeOrigin::new()
        .route("/a", "")
        .handler(move |_| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = opened.clone();
            async move {
                if n > 1 {
                    gate.wait().await;
                }
                Response::builder()
                    .header("cache-control", "max-age=10")
                    .body(body::full(format!("v{n}")))
                    .unwrap()
            }
        })
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, r#"cache = { stale_while_revalidate = "1m" }"#, &clock).await;

    proxy.get("/a").await;
    clock.advance(secs(15));
    let mut stale = Vec::new();
    for _ in 0..5 {
        stale.push(proxy.get("/a").await);
    }
    eventually("the background refresh reached the origin", || {
        assert!(origin.hits("/a") <= 2, "more than one refresh reached the origin");
        origin.hits("/a") == 2
    })
    .await;
    // Held at the origin, the refresh is the one request in flight to it.
    let in_flight = format!(r#"accel_endpoint_in_flight{{upstream="api",endpoint="{}"}}"#, origin.addr());
    assert_eq!(proxy.metric(&in_flight).await, 1.0, "one refresh in flight for five stale answers");
    gate.open();
    eventually_fresh(&proxy, "/a", "v2").await;

    for response in &stale {
        assert_eq!(response.text(), "v1", "stale answers come at once, while the origin is held");
    }
    assert_eq!(stale[0].header("x-cache-status"), Some("UPDATING"));
    assert!(stale[0].header("cache-status").unwrap().contains("detail=stale-while-revalidate"));
    assert_eq!(origin.hits("/a"), 2, "exactly one refresh for five stale answers");
    accel_e2e::eventually_async("the refresh is counted", || async {
        proxy.metric(r#"accel_cache_background_refreshes_total{result="stored"}"#).await == 1.0
    })
    .await;
}

async fn eventually_fresh(proxy: &TestProxy, path: &str, body: &str) {
    let deadline = tokio::time::Instant::now() + accel_e2e::DEADLINE;
    loop {
        let response = proxy.get(path).await;
        if response.text() == body && response.header("x-cache-status") == Some("HIT") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {body} as a hit");
        tokio::time::sleep(ms(5)).await;
    }
}

#[tokio::test]
async fn stale_if_error_answers_when_the_origin_fails_or_is_down() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let origin = FakeOrigin::new()
        .route("/price", "")
        .handler(move |_| {
            let failing = fail.load(Ordering::SeqCst);
            async move {
                if failing {
                    Response::builder().status(503).body(body::full("down")).unwrap()
                } else {
                    Response::builder().header("cache-control", "max-age=10").body(body::full("42")).unwrap()
                }
            }
        })
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, r#"cache = { stale_if_error = "1h" }"#, &clock).await;

    proxy.get("/price").await;
    clock.advance(secs(20));
    failing.store(true, Ordering::SeqCst);
    let on_5xx = proxy.get("/price").await;
    origin.stop();
    let on_down = proxy.get("/price").await;
    clock.advance(secs(3600));
    let too_late = proxy.get("/price").await;

    assert_eq!((on_5xx.status, on_5xx.text().as_str()), (StatusCode::OK, "42"));
    assert_eq!(
        on_5xx.header("cache-status"),
        Some("accel; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error")
    );
    assert_eq!((on_down.status, on_down.text().as_str()), (StatusCode::OK, "42"));
    assert_eq!(on_down.header("x-cache-status"), Some("STALE"));
    assert_eq!(too_late.status, 502, "past stale-if-error the failure shows");
}

#[tokio::test]
async fn a_successful_post_invalidates_the_url() {
    let (origin, _) = counting_origin("/materials", "max-age=60");
    let origin = origin.start().await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    assert_eq!(proxy.get("/materials").await.text(), "v1");
    assert_eq!(proxy.get("/materials").await.text(), "v1");
    let post = proxy.send(proxy.request(Method::POST, "/materials").body(body::full("new")).unwrap()).await;
    assert_eq!(post.header("cache-status"), Some("accel; fwd=method"));
    let after = proxy.get("/materials").await;

    assert_eq!(after.text(), "v3", "the POST was v2; the GET after it went upstream");
    assert_eq!(after.header("x-cache-status"), Some("MISS"));
}

#[tokio::test]
async fn writes_invalidate_rule_tags_and_the_origins_invalidation_header() {
    let (pricing, _) = counting_origin("/api/pricing/7", "max-age=60");
    let origin = pricing
        .route("/api/leads/9", "lead")
        .header("cache-control", "max-age=60")
        .header("cache-tag", "lead:9 leads")
        .route("/api/pricing/7/update", "ok")
        .route("/api/leads/9/update", "ok")
        .header("cache-group-invalidation", "lead:9")
        .start()
        .await;
    let clock = clock();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(
            r#"
            [[route]]
            name = "pricing-write"
            match = { methods = ["POST"], path = "/api/pricing/{id}/update" }
            upstream = "api"
            invalidate = ["pricing:contact:{path.id}"]

            [[route]]
            name = "pricing"
            match = { path = "/api/pricing/{id}" }
            upstream = "api"
            cache = { tags = ["pricing:contact:{path.id}"] }

            [[route]]
            name = "rest"
            upstream = "api"
            cache = {}
            "#,
        )
        .config({
            let clock = clock.clone();
            move |c| c.cache.clock = clock
        })
        .start()
        .await;

    proxy.get("/api/pricing/7").await;
    let lead = proxy.get("/api/leads/9").await;
    assert_eq!(lead.header("cache-tag"), None, "tag headers stay between origin and proxy");
    proxy.send(proxy.request(Method::POST, "/api/pricing/7/update").body(body::empty()).unwrap()).await;
    let write =
        proxy.send(proxy.request(Method::POST, "/api/leads/9/update").body(body::empty()).unwrap()).await;
    assert_eq!(write.header("cache-group-invalidation"), None);

    assert_eq!(proxy.get("/api/pricing/7").await.text(), "v2", "the rule's invalidate tag purged it");
    assert_eq!(proxy.get("/api/leads/9").await.header("x-cache-status"), None);
    assert_eq!(origin.hits("/api/leads/9"), 2, "the origin's invalidation header purged it");
}

#[tokio::test]
async fn the_purge_api_purges_by_tag_url_prefix_and_all_with_a_token() {
    let origin = FakeOrigin::new()
        .route("/api/leads/*", "lead")
        .header("cache-control", "max-age=60")
        .header("cache-tag", "leads")
        .route("/api/pricing/*", "price")
        .header("cache-control", "max-age=60")
        .start()
        .await;
    let proxy = proxy(&origin, r#"cache = { tags = ["everything"] }"#, &clock()).await;
    for path in ["/api/leads/1", "/api/leads/2", "/api/pricing/1", "/api/pricing/2"] {
        proxy.get(path).await;
    }

    assert_eq!(purge(&proxy, None, r#"{"tags":["leads"]}"#).await.status, 401);
    assert_eq!(purge(&proxy, Some("wrong"), r#"{"tags":["leads"]}"#).await.status, 403);
    assert_eq!(purge(&proxy, Some("t0ken"), r#"{"colour":"blue"}"#).await.status, 400);
    let by_tag = purge(&proxy, Some("t0ken"), r#"{"tags":["leads"]}"#).await;
    assert_eq!(by_tag.status, 200);
    let counts: serde_json::Value = serde_json::from_slice(&by_tag.body).unwrap();
    assert_eq!(counts["purged"], 2, "{counts}");
    assert_eq!(proxy.get("/api/leads/1").await.header("x-cache-status"), Some("MISS"));
    assert_eq!(proxy.get("/api/pricing/1").await.header("x-cache-status"), Some("HIT"));

    let url = format!(r#"{{"urls":["http://127.0.0.1:{}/api/pricing/1"]}}"#, proxy.addr().port());
    let by_url: serde_json::Value =
        serde_json::from_slice(&purge(&proxy, Some("t0ken"), &url).await.body).unwrap();
    assert_eq!(by_url["urls"], 1, "{by_url}");
    proxy.proxy().cache.store.run_pending_tasks();
    let by_prefix = purge(&proxy, Some("t0ken"), r#"{"prefixes":["/api/pricing/"]}"#).await;
    let by_prefix: serde_json::Value = serde_json::from_slice(&by_prefix.body).unwrap();
    assert_eq!(by_prefix["prefixes"], 1, "{by_prefix}");
    let by_rule_tag = purge(&proxy, Some("t0ken"), r#"{"tags":["everything"]}"#).await;
    let by_rule_tag: serde_json::Value = serde_json::from_slice(&by_rule_tag.body).unwrap();
    assert_eq!(by_rule_tag["purged"], 1, "only /api/leads/1, stored again, is left: {by_rule_tag}");
    assert_eq!(origin.hits("/api/pricing/2"), 1);
    assert_eq!(proxy.get("/api/pricing/2").await.header("x-cache-status"), Some("MISS"));

    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains(r#"accel_cache_purges_total{kind="tag"} 2"#), "{metrics}");
}

#[tokio::test]
async fn two_hundred_concurrent_cold_requests_send_one_upstream() {
    let gate = accel_e2e::Gate::new();
    let opened = gate.clone();
    let origin = FakeOrigin::new()
        .route("/heavy", "")
        .handler(move |_| {
            let gate = opened.clone();
            async move {
                gate.wait().await;
                Response::builder().header("cache-control", "max-age=60").body(body::full("scored")).unwrap()
            }
        })
        .start()
        .await;
    let proxy = Arc::new(proxy(&origin, "cache = {}", &clock()).await);

    let clients: Vec<_> = (0..200)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.get("/heavy").await })
        })
        .collect();
    // The leader is held at the origin until every other request is known to wait for it: a
    // second request at the origin means nothing coalesced.
    eventually("one leader at the origin, 199 followers waiting", || {
        assert!(origin.hits("/heavy") <= 1, "a second request reached the origin: nothing coalesced");
        origin.hits("/heavy") == 1 && proxy.proxy().cache.waiting_followers() == 199
    })
    .await;
    gate.open();
    let mut statuses = Vec::new();
    for client in clients {
        let response = within("a coalesced answer", client).await.unwrap();
        assert_eq!(response.text(), "scored");
        statuses.push(response.header("cache-status").unwrap_or("").to_owned());
    }

    assert_eq!(origin.hits("/heavy"), 1);
    assert_eq!(statuses.iter().filter(|s| s.as_str() == "accel; fwd=miss; collapsed").count(), 199);
    assert_eq!(proxy.metric(r#"accel_cache_coalesced_followers_total{result="served"}"#).await, 199.0);
}

#[tokio::test]
async fn followers_stop_waiting_after_their_timeout() {
    let gate = accel_e2e::Gate::new();
    let opened = gate.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = FakeOrigin::new()
        .route("/slow", "")
        .handler(move |_| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let gate = opened.clone();
            async move {
                if first {
                    gate.wait().await;
                }
                Response::builder().header("cache-control", "max-age=60").body(body::full("done")).unwrap()
            }
        })
        .start()
        .await;
    let proxy = Arc::new(
        proxy(
            &origin,
            r#"cache = {}
coalesce = { follower_timeout = "100ms" }"#,
            &clock(),
        )
        .await,
    );

    let leader = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.get("/slow").await })
    };
    eventually("the leader reached the origin", || origin.hits("/slow") == 1).await;
    let follower = proxy.get("/slow").await;
    gate.open();
    // (the follower's 100 ms is a timeout under test, not a wait for speed)
    let leader = leader.await.unwrap();

    assert_eq!(follower.text(), "done");
    assert_eq!(follower.header("cache-status"), Some("accel; fwd=miss; detail=follower-timeout"));
    assert_eq!(leader.header("x-cache-status"), Some("MISS"));
    assert_eq!(origin.hits("/slow"), 2);
    assert_eq!(proxy.metric(r#"accel_cache_coalesced_followers_total{result="timeout"}"#).await, 1.0);
}

#[tokio::test]
async fn a_failing_leader_releases_its_followers_to_fetch_for_themselves() {
    let gate = accel_e2e::Gate::new();
    let opened = gate.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = FakeOrigin::new()
        .route("/flaky", "")
        .handler(move |_| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let gate = opened.clone();
            async move {
                if first {
                    gate.wait().await;
                    return Response::builder().status(500).body(body::full("boom")).unwrap();
                }
                Response::builder().header("cache-control", "max-age=60").body(body::full("ok")).unwrap()
            }
        })
        .start()
        .await;
    let proxy = Arc::new(proxy(&origin, "cache = {}", &clock()).await);

    let leader = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.get("/flaky").await })
    };
    eventually("the leader reached the origin", || origin.hits("/flaky") == 1).await;
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.get("/flaky").await })
        })
        .collect();
    eventually("three followers wait", || proxy.proxy().cache.waiting_followers() == 3).await;
    gate.open();

    assert_eq!(leader.await.unwrap().status, 500);
    for follower in followers {
        assert_eq!(within("a released follower", follower).await.unwrap().text(), "ok");
    }
    assert_eq!(origin.hits("/flaky"), 4, "released followers went upstream themselves");
    assert_eq!(proxy.metric(r#"accel_cache_coalesced_followers_total{result="released"}"#).await, 3.0);
}

#[tokio::test]
async fn an_oversized_body_streams_through_uncached() {
    let big = Bytes::from(vec![b'x'; 64 * 1024]);
    let origin = FakeOrigin::new()
        .route("/big", big.clone())
        .header("cache-control", "max-age=60")
        .route("/chunked", "")
        .header("cache-control", "max-age=60")
        .body_stream(vec![big.slice(..40_000), big.slice(40_000..)], ms(1))
        .start()
        .await;
    let proxy = proxy(&origin, r#"cache = { max_object_size = "16KiB" }"#, &clock()).await;

    for path in ["/big", "/chunked", "/big", "/chunked"] {
        let response = proxy.get(path).await;
        assert_eq!(response.body.len(), big.len(), "{path}");
    }
    assert_eq!(origin.hits("/big"), 2);
    assert_eq!(origin.hits("/chunked"), 2);
    assert_eq!(proxy.metric(r#"accel_cache_rejections_total{reason="too_large"}"#).await, 4.0);
}

#[tokio::test]
async fn a_truncated_body_is_not_stored_and_not_passed_on_as_complete() {
    let origin = FakeOrigin::new()
        .route("/cut", "")
        .handler(|_| async move {
            let (sender, stream) = body::channel();
            tokio::spawn(async move {
                sender.send("partial").await;
                sender.abort().await;
            });
            Response::builder().header("cache-control", "max-age=60").body(stream).unwrap()
        })
        .start()
        .await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    for _ in 0..2 {
        let request = proxy.request(Method::GET, "/cut").body(body::empty()).unwrap();
        // The break shows either before the headers (nothing was sent yet) or in the body.
        if let Ok(response) = proxy.client().request(request).await {
            assert!(accel_e2e::Collected::from(response).await.is_err(), "the client sees the break");
        }
    }
    assert_eq!(origin.hits("/cut"), 2);
    assert_eq!(proxy.metric(r#"accel_cache_rejections_total{reason="truncated"}"#).await, 2.0);
}

#[tokio::test]
async fn lookups_are_counted_by_route_and_result() {
    // An ETag keeps the expired entry (`cache.keep`): the fifth request is an expired one.
    let origin = FakeOrigin::new()
        .route("/a", "a")
        .header("cache-control", "max-age=10")
        .header("etag", "\"a\"")
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, "cache = {}", &clock).await;

    proxy.get("/a").await;
    proxy.get("/a").await;
    proxy.get("/a").await;
    clock.advance(secs(11));
    proxy.get("/a").await;
    proxy.send(proxy.request(Method::DELETE, "/a").body(body::empty()).unwrap()).await;

    let metrics = proxy.metrics_text().await;
    for (result, count) in [("hit", 2), ("miss", 1), ("expired", 1), ("bypass", 1)] {
        let series = format!(r#"accel_cache_lookups_total{{route="api",result="{result}"}} {count}"#);
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
    assert!(metrics.contains("accel_cache_stores_total 2"), "{metrics}");
    assert!(
        metrics.contains(r#"accel_request_duration_seconds_count{route="api",cache="hit"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_cache_survives_a_rules_reload() {
    let origin = FakeOrigin::new().route("/a", "a").header("cache-control", "max-age=60").start().await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;

    proxy.get("/a").await;
    proxy.rewrite_rules("[[route]]\nname = \"renamed\"\nupstream = \"api\"\ncache = {}\n");
    proxy.reload().expect("the new rules are valid");

    assert_eq!(proxy.get("/a").await.header("x-cache-status"), Some("HIT"));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test]
async fn collapsing_on_a_route_that_does_not_cache_keeps_users_apart() {
    let gate = accel_e2e::Gate::new();
    let opened = gate.clone();
    // `whoami_origin`, holding every request until the gate opens.
    let origin = FakeOrigin::new()
        .route("/me", "")
        .handler(move |request| {
            let gate = opened.clone();
            async move {
                gate.wait().await;
                whoami(request.headers())
            }
        })
        .start()
        .await;
    let proxy = Arc::new(proxy(&origin, "coalesce = { enabled = true }", &clock()).await);

    let requests: Vec<_> = ["Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob"]
        .into_iter()
        .map(|user| {
            let proxy = proxy.clone();
            tokio::spawn(async move { (user, get_with(&proxy, "/me", &[("authorization", user)]).await) })
        })
        .collect();
    // One leader per user is held at the origin until the other request of each user waits
    // for it: a third request at the origin means identical requests did not coalesce.
    eventually("a leader per user at the origin, a follower each waiting", || {
        assert!(origin.hits("/me") <= 2, "a third request reached the origin: nothing coalesced");
        origin.hits("/me") == 2 && proxy.proxy().cache.waiting_followers() == 2
    })
    .await;
    let mut leaders: Vec<_> =
        origin.requests().iter().filter_map(|r| r.header("authorization").map(str::to_owned)).collect();
    leaders.sort();
    assert_eq!(leaders, ["Bearer alice", "Bearer bob"], "users never share a flight");
    gate.open();

    for request in requests {
        let (user, response) = within("a collapsed answer", request).await.unwrap();
        assert_eq!(response.text(), user);
    }
    assert_eq!(origin.hits("/me"), 2);
    assert_eq!(proxy.metric(r#"accel_cache_coalesced_followers_total{result="served"}"#).await, 2.0);
    assert_eq!(proxy.get("/me").await.header("x-cache-status"), None, "nothing was stored");
}

#[tokio::test]
async fn the_purge_client_of_accel_purge_talks_to_the_admin_listener() {
    let origin = FakeOrigin::new()
        .route("/api/leads/*", "lead")
        .header("cache-control", "max-age=60")
        .header("cache-tag", "leads")
        .start()
        .await;
    let proxy = proxy(&origin, "cache = {}", &clock()).await;
    proxy.get("/api/leads/1").await;
    proxy.get("/api/leads/2").await;
    let admin = proxy.admin_addr().to_string();
    let request = accel::cache::purge::PurgeRequest { tags: vec!["leads".into()], ..Default::default() };

    let wrong = accel::cli::purge::send(&admin, "nope", &request).await;
    let counts = accel::cli::purge::send(&admin, "t0ken", &request).await.expect("purged");

    assert!(wrong.unwrap_err().to_string().contains("403"));
    assert_eq!((counts.purged, counts.tags), (2, 2));
    assert_eq!(proxy.get("/api/leads/1").await.header("x-cache-status"), Some("MISS"));
}

#[tokio::test]
async fn an_error_status_with_an_explicit_lifetime_is_kept_for_that_lifetime_only() {
    // RFC 9111 §3: any final status with explicit freshness may be stored.
    let origin = FakeOrigin::new()
        .route("/busy", "try later")
        .status(503)
        .header("cache-control", "max-age=5")
        .route("/broken", "oops")
        .status(500)
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, r#"cache = { ttl = "5m" }"#, &clock).await;

    proxy.get("/busy").await;
    clock.advance(secs(4));
    let kept = proxy.get("/busy").await;
    assert_eq!((kept.status, kept.text()), (StatusCode::SERVICE_UNAVAILABLE, "try later".into()));
    assert_eq!(kept.header("x-cache-status"), Some("HIT"));
    clock.advance(secs(2));
    proxy.get("/busy").await;
    assert_eq!(origin.hits("/busy"), 2, "the rule's 5m did not stretch max-age=5");

    proxy.get("/broken").await;
    proxy.get("/broken").await;
    assert_eq!(origin.hits("/broken"), 2, "a 500 without a lifetime is not stored");
}

#[tokio::test]
async fn an_answer_that_must_be_revalidated_is_never_served_stale() {
    // RFC 9111 §4.2.4: must-revalidate (and s-maxage) forbid the route's stale window.
    let origin = FakeOrigin::new()
        .route("/strict", "v")
        .header("cache-control", "max-age=10, must-revalidate")
        .route("/shared", "v")
        .header("cache-control", "s-maxage=10")
        .route("/relaxed", "v")
        .header("cache-control", "max-age=10")
        .start()
        .await;
    let clock = clock();
    let proxy = proxy(&origin, r#"cache = { stale_while_revalidate = "1m" }"#, &clock).await;
    for path in ["/strict", "/shared", "/relaxed"] {
        proxy.get(path).await;
    }
    clock.advance(secs(15));

    assert_eq!(proxy.get("/relaxed").await.header("x-cache-status"), Some("UPDATING"));
    for path in ["/strict", "/shared"] {
        let answer = proxy.get(path).await;
        assert_ne!(answer.header("x-cache-status"), Some("UPDATING"), "{path} was served stale");
        assert_eq!(origin.hits(path), 2, "{path} went to the origin once stale");
    }
}
