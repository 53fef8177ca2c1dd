//! `cache.ignore` end to end: a route accelerates an origin that marks every answer
//! uncacheable, and a rule that would let one user's answer reach another is refused.

use accel_e2e::{FakeOrigin, TestProxy};
use http::Method;

const ROUTE: &str = "[[route]]\nname = \"api\"\nupstream = \"api\"\n";

#[tokio::test]
async fn a_route_ignores_what_it_is_told_to_and_stores_no_cookie() {
    let origin = FakeOrigin::new()
        .route("/profile", "profile")
        .header("cache-control", "private, no-cache")
        .header("expires", "0")
        .header("set-cookie", "seen=1")
        .header("vary", "Accept-Language")
        .start()
        .await;
    let rules = format!(
        "{ROUTE}cache = {{ ttl = \"60s\", ignore = [\"private\", \"no-cache\", \"expires\", \"set-cookie\", \
         \"vary:accept-language\"], key = {{ headers = [\"authorization\"] }} }}\n"
    );
    let proxy = TestProxy::builder().upstream("api", &[origin.addr()]).rules(&rules).start().await;
    let get = |language: &'static str| {
        let request = proxy
            .request(Method::GET, "/profile")
            .header("authorization", "Bearer alice")
            .header("accept-language", language)
            .body(accel_e2e::body::empty())
            .unwrap();
        proxy.send(request)
    };

    let first = get("en").await;
    assert_eq!(first.header("set-cookie"), Some("seen=1"), "the client that went upstream gets its cookie");
    let second = get("fr").await;
    assert!(second.header("cache-status").is_some_and(|s| s.starts_with("accel; hit")), "{second:?}");
    assert_eq!(second.header("set-cookie"), None, "the stored copy has no cookie");
    assert_eq!(origin.hits("/profile"), 1, "one entry for every language");
}

#[tokio::test]
async fn ignoring_private_on_a_key_shared_by_users_is_refused() {
    let origin = FakeOrigin::new().route("/a", "a").start().await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&format!("{ROUTE}cache = {{ ttl = \"60s\" }}\n"))
        .start()
        .await;
    proxy.rewrite_rules(&format!("{ROUTE}cache = {{ ttl = \"60s\", ignore = [\"private\"] }}\n"));
    let problems = proxy.reload().expect_err("refused").to_string();
    assert!(problems.contains("cache.ignore") && problems.contains("another"), "{problems}");
    proxy.rewrite_rules(&format!(
        "{ROUTE}cache = {{ ttl = \"60s\", ignore = [\"private\"], key = {{ cookies = [\"session\"] }} }}\n"
    ));
    assert!(proxy.reload().is_ok(), "a key on the session cookie separates users");
}
