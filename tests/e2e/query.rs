//! Query caching end to end: POST lookups on a route with `cache.methods = [..., "POST"]`
//! keyed on their body, per user, emptied by an upload's invalidation header; bodies that
//! cannot be keyed pass uncached and reach the origin whole.

use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, body};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

/// The origin of a notes service: `POST /query` answers the caller and its question, fresh
/// for a minute and tagged with the caller's notes; `POST /upload` names that tag in its
/// invalidation header.
async fn notes_origin() -> OriginHandle {
    FakeOrigin::new()
        .route("/query", "")
        .handler(|request| async move {
            let user = caller(request.headers());
            let question = request.into_body().collect().await.expect("the whole body").to_bytes();
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("vary", "Authorization")
                .header("cache-tag", format!("notes:user:{user}"))
                .body(body::full(format!("{user} asked {}", String::from_utf8_lossy(&question))))
                .unwrap()
        })
        .route("/upload", "")
        .handler(|request| async move {
            let user = caller(request.headers());
            Response::builder()
                .status(StatusCode::CREATED)
                .header("cache-control", "no-store")
                .header("cache-group-invalidation", format!("notes:user:{user}"))
                .body(body::full("stored"))
                .unwrap()
        })
        .start()
        .await
}

fn caller(headers: &http::HeaderMap) -> String {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    token.strip_prefix("Bearer ").unwrap_or("anonymous").to_owned()
}

/// Queries cached per user with a 1 KiB body limit; uploads on a route of their own.
async fn proxy(origin: &OriginHandle) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(
            r#"
            [[route]]
            name = "query"
            match = { methods = ["POST"], path = "/query" }
            upstream = "api"
            cache = { methods = ["POST"], max_body_key = "1KiB", key = { headers = ["authorization"] } }

            [[route]]
            name = "upload"
            match = { methods = ["POST"], path = "/upload" }
            upstream = "api"
            "#,
        )
        .start()
        .await
}

async fn post(proxy: &TestProxy, path: &str, user: &str, data: impl Into<Bytes>) -> accel_e2e::Collected {
    let request = proxy
        .request(Method::POST, path)
        .header("authorization", format!("Bearer {user}"))
        .header("content-type", "application/json")
        .body(body::full(data))
        .unwrap();
    proxy.send(request).await
}

#[tokio::test]
async fn the_same_body_hits_and_another_body_or_user_misses() {
    let origin = notes_origin().await;
    let proxy = proxy(&origin).await;

    let first = post(&proxy, "/query", "alice", r#"{"q":"atp"}"#).await;
    assert_eq!(first.text(), r#"alice asked {"q":"atp"}"#);
    assert_eq!(first.header("cache-status"), Some("accel; fwd=miss; fwd-status=200; stored"));
    let again = post(&proxy, "/query", "alice", r#"{"q":"atp"}"#).await;
    assert_eq!(again.text(), r#"alice asked {"q":"atp"}"#);
    assert!(again.header("cache-status").is_some_and(|s| s.starts_with("accel; hit")), "{again:?}");
    assert_eq!(origin.hits("/query"), 1, "the repeated query was answered by the cache");

    let other_body = post(&proxy, "/query", "alice", r#"{"q":"dna"}"#).await;
    assert_eq!(other_body.text(), r#"alice asked {"q":"dna"}"#);
    let other_user = post(&proxy, "/query", "bob", r#"{"q":"atp"}"#).await;
    assert_eq!(other_user.text(), r#"bob asked {"q":"atp"}"#, "one user's query never answers another's");
    assert_eq!(origin.hits("/query"), 3);
    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains(r#"accel_cache_queries_total{route="query",result="keyed"} 4"#), "{metrics}");
}

#[tokio::test]
async fn a_body_over_the_limit_or_streamed_passes_uncached_and_whole() {
    let origin = notes_origin().await;
    let proxy = proxy(&origin).await;
    let large = format!(r#"{{"q":"{}"}}"#, "x".repeat(2000));

    for _ in 0..2 {
        let answer = post(&proxy, "/query", "alice", large.clone()).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("cache-status"), Some("accel; fwd=bypass; detail=body"));
        assert_eq!(answer.text(), format!("alice asked {large}"));
        let seen = origin.last_request().unwrap();
        assert_eq!((seen.body_len, seen.body_complete), (large.len() as u64, true), "the origin got it all");
    }
    assert_eq!(origin.hits("/query"), 2, "never stored");

    // A body of undeclared length (chunked) streams through too.
    let (sender, streamed) = body::channel();
    let request =
        proxy.request(Method::POST, "/query").header("authorization", "Bearer alice").body(streamed).unwrap();
    let sending = tokio::spawn(async move {
        sender.send("part one, ").await;
        sender.send("part two").await;
    });
    let answer = proxy.send(request).await;
    sending.await.unwrap();
    assert_eq!(answer.header("cache-status"), Some("accel; fwd=bypass; detail=body"));
    assert_eq!(answer.text(), "alice asked part one, part two");
    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains(r#"accel_cache_queries_total{route="query",result="body"} 3"#), "{metrics}");
}

#[tokio::test]
async fn an_upload_empties_the_uploaders_cached_queries_only() {
    let origin = notes_origin().await;
    let proxy = proxy(&origin).await;
    for user in ["alice", "bob"] {
        post(&proxy, "/query", user, r#"{"q":"atp"}"#).await;
        post(&proxy, "/query", user, r#"{"q":"atp"}"#).await;
    }
    assert_eq!(origin.hits("/query"), 2);

    let upload = post(&proxy, "/upload", "alice", "new notes").await;
    assert_eq!(upload.status, StatusCode::CREATED);

    let alice = post(&proxy, "/query", "alice", r#"{"q":"atp"}"#).await;
    assert_eq!(alice.header("cache-status"), Some("accel; fwd=miss; fwd-status=200; stored"));
    let bob = post(&proxy, "/query", "bob", r#"{"q":"atp"}"#).await;
    assert!(bob.header("cache-status").is_some_and(|s| s.starts_with("accel; hit")), "{bob:?}");
    assert_eq!(origin.hits("/query"), 3, "only alice's query went to the origin again");
}

#[tokio::test]
async fn a_query_with_preconditions_goes_to_the_origin() {
    let origin = notes_origin().await;
    let proxy = proxy(&origin).await;
    post(&proxy, "/query", "alice", r#"{"q":"atp"}"#).await;
    let request = proxy
        .request(Method::POST, "/query")
        .header("authorization", "Bearer alice")
        .header("content-type", "application/json")
        .header("if-none-match", "*")
        .body(body::full(r#"{"q":"atp"}"#))
        .unwrap();
    let answer = proxy.send(request).await;
    assert_eq!(answer.header("cache-status"), Some("accel; fwd=bypass; detail=precondition"));
    assert_eq!(origin.hits("/query"), 2);
    assert_eq!(origin.last_request().unwrap().header("if-none-match"), Some("*"), "sent as it came");
}
