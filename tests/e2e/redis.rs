//! The shared Redis tier end to end: two real sidecars with the same `[redis]` section in
//! front of one origin share answers and purges; an unreachable Redis changes nothing for
//! clients but the metrics.

use accel::cache::purge::PurgeRequest;
use accel_e2e::{FakeOrigin, Gate, OriginHandle, TestProxy, body, eventually_async, require_redis};

const RULES: &str = r#"
[[route]]
name = "leads"
match = { path_prefix = "/api/leads/" }
upstream = "api"
cache = { ttl = "5m", tags = ["leads"] }
"#;

fn redis_section(url: &str, prefix: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\ntimeout = \"500ms\"\n")
}

async fn sidecar(origin: &OriginHandle, redis: &str) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).sidecar_toml(redis).start().await
}

fn unique_prefix(test: &str) -> String {
    format!("e2e:{test}:{}:{}:", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[tokio::test]
async fn two_sidecars_share_an_answer_and_a_purge_on_one_reaches_both() {
    let Some(url) = require_redis() else { return };
    let origin = FakeOrigin::new().route("/api/leads/1", "{\"lead\":1}").start().await;
    let redis = redis_section(&url, &unique_prefix("share"));
    let a = sidecar(&origin, &redis).await;
    let b = sidecar(&origin, &redis).await;
    redis_up("both sidecars subscribed", &[&a, &b]).await;

    let first = a.get("/api/leads/1").await;
    assert_eq!(first.text(), "{\"lead\":1}");
    // A stores in Redis in the background, after the body ends.
    eventually_async("A's answer reached Redis", || async {
        a.metric("accel_redis_l2_total{result=\"stored\"}").await == 1.0
    })
    .await;
    let shared = b.get("/api/leads/1").await;
    assert_eq!(shared.text(), "{\"lead\":1}");
    assert_eq!(origin.hits("/api/leads/1"), 1, "B answered from Redis: the origin saw one request");
    assert!(
        shared.header("cache-status").is_some_and(|s| s.contains("hit")),
        "{:?}",
        shared.header("cache-status")
    );
    assert_eq!(b.metric("accel_redis_l2_total{result=\"hit\"}").await, 1.0);
    // B's memory has it now: no more Redis lookups for it.
    b.get("/api/leads/1").await;
    assert_eq!(b.metric("accel_redis_l2_total{result=\"hit\"}").await, 1.0);

    // A purge on A (as the admin API does) reaches B's memory and Redis.
    let purge = PurgeRequest { tags: vec!["leads".into()], ..PurgeRequest::default() };
    a.proxy().cache.purge(&purge).expect("purge");
    eventually_async("B applied A's purge", || async {
        b.metric("accel_redis_purges_applied_total").await == 1.0
    })
    .await;
    b.get("/api/leads/1").await;
    assert_eq!(origin.hits("/api/leads/1"), 2, "purged on both: B went to the origin");
}

#[tokio::test]
async fn an_unreachable_redis_changes_nothing_for_clients_and_metrics_say_so() {
    let origin = FakeOrigin::new().route("/api/leads/1", "ok").start().await;
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // With cluster-wide coalescing on: no lock is taken, requests go upstream as without it.
    let redis = format!(
        "[redis]\nurl = \"redis://127.0.0.1:{port}\"\nbreaker = {{ failures = 2, cool_down = \"200ms\" }}\nl2 = {{ lock = \"30s\" }}\n"
    );
    let proxy = sidecar(&origin, &redis).await;
    for _ in 0..5 {
        let response = proxy.get("/api/leads/1").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok");
    }
    assert_eq!(origin.hits("/api/leads/1"), 1, "memory caching still works");
    eventually_async("accel_redis_up says degraded", || async {
        proxy.metric("accel_redis_up").await == 0.0
    })
    .await;
    assert!(proxy.metric("accel_redis_errors_total{op=\"ping\"}").await >= 1.0);
    assert_eq!(proxy.metric("accel_redis_lock_total{result=\"unavailable\"}").await, 1.0, "the one miss");
    assert_eq!(proxy.metric("accel_redis_lock_total{result=\"leader\"}").await, 0.0);
}

#[tokio::test]
async fn a_cluster_limit_over_two_sidecars_lets_the_limit_through_not_twice_it() {
    let Some(url) = require_redis() else { return };
    let origin = FakeOrigin::new().route("/api/pricing", "42").start().await;
    // 10 at once, then one per 6 minutes: no refill can happen during the test, however slow
    // the machine (the exact 10/s arithmetic is tested with an injected clock in the tier).
    let rules = r#"
        [[route]]
        name = "pricing"
        match = { path = "/api/pricing" }
        upstream = "api"
        rate_limit = { rate = "10/h", burst = 10, key = "client_ip", scope = "cluster" }
    "#;
    let redis = redis_section(&url, &unique_prefix("limit"));
    let start = |origin: &OriginHandle| {
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(rules).sidecar_toml(&redis).start()
    };
    let a = start(&origin).await;
    let b = start(&origin).await;
    let mut passed = 0;
    let mut refused = 0;
    for i in 0..20 {
        let response = if i % 2 == 0 { a.get("/api/pricing").await } else { b.get("/api/pricing").await };
        match response.status.as_u16() {
            200 => passed += 1,
            429 => {
                refused += 1;
                assert!(response.header("retry-after").is_some());
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((passed, refused), (10, 10), "the cluster shares one bucket of 10");
    assert_eq!(origin.hits("/api/pricing"), 10);
    assert_eq!(
        a.metric("accel_redis_limit_checks_total{result=\"allowed\"}").await
            + b.metric("accel_redis_limit_checks_total{result=\"allowed\"}").await,
        10.0
    );
}

#[tokio::test]
async fn redis_stopped_mid_test_requests_keep_succeeding_and_the_tier_recovers() {
    let Some(mut redis) = accel_e2e::private_redis().await else { return };
    let origin = FakeOrigin::new().route("/api/leads/1", "one").route("/api/leads/2", "two").start().await;
    let section = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"500ms\"\nbreaker = {{ failures = 2, cool_down = \"200ms\" }}\n",
        redis.url()
    );
    let a = sidecar(&origin, &section).await;
    let b = sidecar(&origin, &section).await;
    a.get("/api/leads/1").await;
    eventually_async("stored in Redis", || async {
        a.metric("accel_redis_l2_total{result=\"stored\"}").await == 1.0
    })
    .await;
    b.get("/api/leads/1").await;
    assert_eq!(origin.hits("/api/leads/1"), 1);

    redis.kill();
    for _ in 0..3 {
        assert_eq!(a.get("/api/leads/2").await.text(), "two");
        assert_eq!(b.get("/api/leads/1").await.text(), "one", "memory keeps serving");
    }
    eventually_async("both report Redis down", || async {
        a.metric("accel_redis_up").await == 0.0 && b.metric("accel_redis_up").await == 0.0
    })
    .await;
    // Purged on A while Redis is away: applied on A now, on B once Redis is back.
    let purge = PurgeRequest { tags: vec!["leads".into()], ..PurgeRequest::default() };
    a.proxy().cache.purge(&purge).expect("purge");

    redis.restart().await.expect("redis-server restarts");
    redis_up("both recover by themselves", &[&a, &b]).await;
    // B must not serve the entry purged while it was cut off.
    eventually_async("B no longer serves the purged entry", || async {
        let before = origin.hits("/api/leads/1");
        b.get("/api/leads/1").await;
        origin.hits("/api/leads/1") > before
    })
    .await;
}

#[tokio::test]
async fn a_prefix_purge_drops_only_that_prefix_from_the_second_level() {
    let Some(url) = require_redis() else { return };
    let origin = FakeOrigin::new().route("/a/*", "under a").route("/b/*", "under b").start().await;
    let rules = r#"
        [[route]]
        name = "all"
        upstream = "api"
        cache = { ttl = "5m" }
    "#;
    let redis = redis_section(&url, &unique_prefix("prefix"));
    let start = |origin: &OriginHandle| {
        TestProxy::builder().upstream("api", &[origin.addr()]).rules(rules).sidecar_toml(&redis).start()
    };
    let a = start(&origin).await;
    let b = start(&origin).await;
    for path in ["/a/1", "/a/2/x", "/b/1"] {
        a.get(path).await;
    }
    eventually_async("A's answers reached Redis", || async {
        a.metric("accel_redis_l2_total{result=\"stored\"}").await == 3.0
    })
    .await;

    let purge = PurgeRequest { prefixes: vec!["/a/".into()], ..PurgeRequest::default() };
    a.proxy().cache.purge(&purge).expect("purge");
    eventually_async("B saw A's purge", || async {
        b.metric("accel_redis_purges_received_total").await == 1.0
    })
    .await;

    let kept = b.get("/b/1").await;
    assert_eq!(kept.text(), "under b");
    assert!(
        kept.header("cache-status").is_some_and(|s| s.contains("hit")),
        "{:?}",
        kept.header("cache-status")
    );
    assert_eq!(origin.hits("/b/1"), 1, "/b/ was not purged: B answered from Redis");
    for path in ["/a/1", "/a/2/x"] {
        assert_eq!(b.get(path).await.text(), "under a");
        assert_eq!(origin.hits(path), 2, "{path} was purged from the second level");
    }
    assert_eq!(b.metric("accel_redis_l2_total{result=\"hit\"}").await, 1.0);
    assert_eq!(b.metric("accel_redis_l2_total{result=\"purged\"}").await, 2.0);
}

/// `[redis]` with cluster-wide coalescing, the lock long enough that no wait in these tests
/// ends on its lifetime.
fn locking_section(url: &str, prefix: &str) -> String {
    format!("{}l2 = {{ lock = \"30s\" }}\n", redis_section(url, prefix))
}

const LOCKING_RULES: &str = r#"
[[route]]
name = "leads"
match = { path_prefix = "/api/leads/" }
upstream = "api"
cache = { ttl = "5m", tags = ["leads"] }
coalesce = { follower_timeout = "30s" }
"#;

async fn locking_sidecar(origin: &OriginHandle, redis: &str) -> TestProxy {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(LOCKING_RULES)
        .sidecar_toml(redis)
        .start()
        .await
}

async fn lock_count(sidecars: &[&TestProxy], result: &str) -> f64 {
    let mut sum = 0.0;
    for sidecar in sidecars {
        sum += sidecar.metric(&format!("accel_redis_lock_total{{result=\"{result}\"}}")).await;
    }
    sum
}

/// Waits until every sidecar reports its Redis tier up (`accel_redis_up` 1).
pub(crate) async fn redis_up(what: &str, sidecars: &[&TestProxy]) {
    eventually_async(what, || async {
        for sidecar in sidecars {
            if sidecar.metric("accel_redis_up").await != 1.0 {
                return false;
            }
        }
        true
    })
    .await;
}

/// B's request for `path` while A (already asked for it) holds the key's lock: sent once A
/// leads; `gate` opens A's origin answer once B missed the second level.
async fn follow_while_leading(a: &TestProxy, b: &TestProxy, path: &str, gate: &Gate) -> accel_e2e::Collected {
    eventually_async("A leads", || async { lock_count(&[a], "leader").await == 1.0 }).await;
    let follower = b.get(path);
    let open = async {
        eventually_async("B missed", || async {
            b.metric("accel_redis_l2_total{result=\"miss\"}").await >= 1.0
        })
        .await;
        gate.open();
    };
    tokio::join!(follower, open).0
}

#[tokio::test]
async fn three_sidecars_send_one_origin_request_for_a_key_missed_everywhere_at_once() {
    let Some(url) = require_redis() else { return };
    let gate = Gate::new();
    let origin = FakeOrigin::new().route("/api/leads/7", "").gated(&gate, "{\"lead\":7}").start().await;
    let redis = locking_section(&url, &unique_prefix("lock"));
    let a = locking_sidecar(&origin, &redis).await;
    let b = locking_sidecar(&origin, &redis).await;
    let c = locking_sidecar(&origin, &redis).await;
    let all = [&a, &b, &c];
    redis_up("all sidecars connected", &all).await;

    const PER_SIDECAR: usize = 200;
    let requests = all.iter().flat_map(|s| (0..PER_SIDECAR).map(move |_| s.get("/api/leads/7")));
    let answers = futures_util::future::join_all(requests);
    let observe = async {
        // The origin holds its answer until one sidecar took the lock and every sidecar's
        // leader missed the second level: the other two then wait on the lock.
        eventually_async("one leader, every sidecar missed", || async {
            let mut missed = true;
            for s in all {
                missed &= s.metric("accel_redis_l2_total{result=\"miss\"}").await >= 1.0;
            }
            missed && lock_count(&all, "leader").await == 1.0
        })
        .await;
        gate.open();
    };
    let (answers, ()) = tokio::join!(answers, observe);
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), "{\"lead\":7}");
    }
    assert_eq!(origin.hits("/api/leads/7"), 1, "one origin request for the cluster");
    assert_eq!(lock_count(&all, "leader").await, 1.0);
    assert_eq!(
        lock_count(&all, "follower_hit").await,
        2.0,
        "the other two leaders took the answer from Redis"
    );
    assert_eq!(lock_count(&all, "follower_timeout").await, 0.0);
}

#[tokio::test]
async fn a_leader_without_a_storable_answer_releases_its_followers_at_once() {
    let Some(url) = require_redis() else { return };
    let gate = Gate::new();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = FakeOrigin::new()
        .route("/api/leads/8", "")
        .handler({
            let (gate, served) = (gate.clone(), served.clone());
            move |_| {
                let (gate, served) = (gate.clone(), served.clone());
                async move {
                    // The first request (the leader's) waits for the gate; nothing is storable.
                    if served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        gate.wait().await;
                    }
                    http::Response::builder()
                        .header("cache-control", "no-store")
                        .body(body::full("private"))
                        .expect("a response")
                }
            }
        })
        .start()
        .await;
    let redis = locking_section(&url, &unique_prefix("release"));
    let a = locking_sidecar(&origin, &redis).await;
    let b = locking_sidecar(&origin, &redis).await;
    redis_up("both sidecars connected", &[&a, &b]).await;

    let leader = a.get("/api/leads/8");
    let rest = follow_while_leading(&a, &b, "/api/leads/8", &gate);
    let (led, followed) = tokio::join!(leader, rest);
    assert_eq!(led.text(), "private");
    assert_eq!(followed.text(), "private");
    assert_eq!(origin.hits("/api/leads/8"), 2, "B went upstream itself");
    // Released, not timed out: the lock lives 30 s, B's wait ended when A released it.
    assert_eq!(lock_count(&[&b], "follower_released").await, 1.0);
    assert_eq!(lock_count(&[&b], "follower_timeout").await, 0.0);
}

#[tokio::test]
async fn a_leader_whose_origin_answer_breaks_off_releases_its_followers_at_once() {
    let Some(url) = require_redis() else { return };
    let gate = Gate::new();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = FakeOrigin::new()
        .route("/api/leads/9", "")
        .handler({
            let (gate, served) = (gate.clone(), served.clone());
            move |_| {
                let (gate, served) = (gate.clone(), served.clone());
                async move {
                    if served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                        return http::Response::new(body::full("{\"lead\":9}"));
                    }
                    // The leader's answer: a first chunk, then the connection breaks off
                    // once the gate opens.
                    let (tx, streamed) = body::channel();
                    tokio::spawn(async move {
                        tx.send("{\"le").await;
                        gate.wait().await;
                        tx.abort().await;
                    });
                    http::Response::new(streamed)
                }
            }
        })
        .start()
        .await;
    let redis = locking_section(&url, &unique_prefix("broken"));
    let a = locking_sidecar(&origin, &redis).await;
    let b = locking_sidecar(&origin, &redis).await;
    redis_up("both sidecars connected", &[&a, &b]).await;

    let leader = async {
        let request = a.request(http::Method::GET, "/api/leads/9").body(body::empty()).expect("a request");
        match a.client().request(request).await {
            Ok(response) => accel_e2e::Collected::from(response).await.is_err(),
            Err(_) => true,
        }
    };
    let rest = follow_while_leading(&a, &b, "/api/leads/9", &gate);
    let (broken, followed) = tokio::join!(leader, rest);
    assert!(broken, "A's client saw the answer break off");
    assert_eq!(followed.status, 200);
    assert_eq!(followed.text(), "{\"lead\":9}");
    assert_eq!(origin.hits("/api/leads/9"), 2, "B went upstream itself");
    // Released, not timed out: the lock lives 30 s, B's wait ended when A's guard dropped.
    assert_eq!(lock_count(&[&b], "follower_released").await, 1.0);
    assert_eq!(lock_count(&[&b], "follower_timeout").await, 0.0);
}

#[tokio::test]
async fn an_answer_fetched_across_a_purge_stays_out_of_the_second_level() {
    let Some(redis) = accel_e2e::private_redis().await else { return };
    let gate = Gate::new();
    let origin = FakeOrigin::new().route("/api/leads/9", "").gated(&gate, "{\"lead\":9}").start().await;
    let section = redis_section(&redis.url(), &unique_prefix("across"));
    let a = sidecar(&origin, &section).await;
    let b = sidecar(&origin, &section).await;
    redis_up("both sidecars connected", &[&a, &b]).await;
    // A knows where the purge sequence stands (read once subscribed): its fetch takes that
    // point, and a purge after it is seen at the write.
    eventually_async("A read the purge sequence", || async {
        a.metric(r#"accel_redis_duration_seconds_count{op="sequence"}"#).await >= 1.0
    })
    .await;

    // A's request is at the origin when B purges its tag; the origin answers after A got
    // the purge (the answer A then holds is the purged one).
    let fetch = a.get("/api/leads/9");
    let purge_meanwhile = async {
        eventually_async("A's request reached the origin", || async { origin.hits("/api/leads/9") == 1 })
            .await;
        let purge = PurgeRequest { tags: vec!["leads".into()], ..PurgeRequest::default() };
        b.proxy().cache.purge(&purge).expect("purge");
        eventually_async("A applied B's purge", || async {
            a.metric("accel_redis_purges_applied_total").await == 1.0
        })
        .await;
        gate.open();
    };
    let (answer, ()) = tokio::join!(fetch, purge_meanwhile);
    assert_eq!(answer.text(), "{\"lead\":9}");
    eventually_async("A decided its second-level write", || async {
        a.metric("accel_redis_l2_total{result=\"stored\"}").await
            + a.metric("accel_redis_l2_total{result=\"outdated\"}").await
            >= 1.0
    })
    .await;
    assert_eq!(a.metric("accel_redis_l2_total{result=\"outdated\"}").await, 1.0, "not written: purged since");

    b.get("/api/leads/9").await;
    assert_eq!(origin.hits("/api/leads/9"), 2, "B fetched it anew: the purged answer is not in Redis");
}
