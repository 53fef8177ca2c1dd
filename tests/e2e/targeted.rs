//! Targeted cache control (RFC 9213) end to end: `CDN-Cache-Control` and `Accel-Cache-Control`
//! decide for the cache over `Cache-Control`, an invalid one is ignored, and each is forwarded
//! or removed as `[cache]` says.

use accel_e2e::{FakeOrigin, OriginHandle, TestProxy};

/// `/cdn`: the browser may not store it, the cache may for a minute; `/ours`: private for
/// browsers, a minute for Accel; `/invalid`: a targeted field that does not parse over
/// `no-store`; `/targeted-no-store`: `max-age` for browsers, `no-store` for the cache.
async fn origin() -> OriginHandle {
    FakeOrigin::new()
        .route("/cdn", "cdn")
        .header("cache-control", "no-store")
        .header("cdn-cache-control", "max-age=60")
        .route("/ours", "ours")
        .header("cache-control", "private")
        .header("accel-cache-control", "max-age=60")
        .route("/invalid", "invalid")
        .header("cache-control", "no-store")
        .header("cdn-cache-control", "max-age=60,")
        .route("/targeted-no-store", "fresh for browsers")
        .header("cache-control", "max-age=60")
        .header("cdn-cache-control", "no-store")
        .start()
        .await
}

async fn proxy(origin: &OriginHandle, cache: &str) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules("[[route]]\nname = \"api\"\nupstream = \"api\"\ncache = {}\n")
        .sidecar_toml(&format!("[cache]\n{cache}\n"))
        .start()
        .await
}

#[tokio::test]
async fn a_targeted_field_decides_for_the_cache_and_cache_control_reaches_the_client() {
    let origin = origin().await;
    let proxy = proxy(&origin, "").await;
    for path in ["/cdn", "/ours"] {
        let first = proxy.get(path).await;
        let second = proxy.get(path).await;
        assert!(
            second.header("cache-status").is_some_and(|s| s.starts_with("accel; hit")),
            "{path}: {second:?}"
        );
        assert_eq!(origin.hits(path), 1, "{path}: stored on the targeted field's max-age");
        assert_eq!(first.header("cache-control"), second.header("cache-control"), "{path}: unchanged");
    }
    let cdn = proxy.get("/cdn").await;
    assert_eq!(cdn.header("cache-control"), Some("no-store"));
    assert_eq!(cdn.header("cdn-cache-control"), Some("max-age=60"), "kept for CDNs downstream");
    let ours = proxy.get("/ours").await;
    assert_eq!(ours.header("cache-control"), Some("private"));
    assert_eq!(ours.header("accel-cache-control"), None, "addressed to Accel alone: removed");

    // A targeted no-store wins over Cache-Control's max-age.
    proxy.get("/targeted-no-store").await;
    proxy.get("/targeted-no-store").await;
    assert_eq!(origin.hits("/targeted-no-store"), 2);
}

#[tokio::test]
async fn an_invalid_targeted_field_is_ignored() {
    let origin = origin().await;
    let proxy = proxy(&origin, "").await;
    proxy.get("/invalid").await;
    let second = proxy.get("/invalid").await;
    assert_eq!(origin.hits("/invalid"), 2, "Cache-Control's no-store decides");
    assert_eq!(second.header("cdn-cache-control"), Some("max-age=60,"), "forwarded as it came");
}

#[tokio::test]
async fn the_fields_are_forwarded_or_removed_as_configured() {
    let origin = origin().await;
    let proxy = proxy(
        &origin,
        "targeted_field = \"Accel-Cache-Control\"\nforward_targeted_field = true\nforward_cdn_cache_control = false",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(proxy.get("/ours").await.header("accel-cache-control"), Some("max-age=60"));
        assert_eq!(proxy.get("/cdn").await.header("cdn-cache-control"), None);
    }
    assert_eq!((origin.hits("/ours"), origin.hits("/cdn")), (1, 1));

    let ignoring = proxy_ignoring_targets(&origin).await;
    ignoring.get("/cdn").await;
    ignoring.get("/cdn").await;
    assert_eq!(origin.hits("/cdn"), 3, "with the target list empty, Cache-Control's no-store decides");
}

async fn proxy_ignoring_targets(origin: &OriginHandle) -> TestProxy {
    proxy(origin, "targeted_field = \"\"\ncdn_cache_control = false").await
}
