//! The shared Redis tier on a real Redis Cluster (six private nodes: three masters, three
//! replicas): sidecars share second-level answers, tag purges and cluster limits through it,
//! every multi-key script keeps its keys in one hash slot, and a master killed under load
//! fails no request while its replica takes over.

use accel::cache::purge::PurgeRequest;
use accel::tier::Keys;
use accel::tier::bus::PURGE_SCRIPT;
use accel_e2e::proxy::metric_value;
use accel_e2e::{FakeOrigin, OriginHandle, PrivateCluster, TestProxy, eventually_async, private_cluster};

const RULES: &str = r#"
[[route]]
name = "leads"
match = { path_prefix = "/api/leads/" }
upstream = "api"
cache = { ttl = "5m", tags = ["leads"] }

[[route]]
name = "pricing"
match = { path = "/api/pricing" }
upstream = "api"
rate_limit = { rate = "10/h", burst = 10, key = "client_ip", scope = "cluster" }
"#;

fn prefix(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("e2e:{test}:{}:{nanos}:", std::process::id())
}

/// `[redis]` over the cluster: short timeouts and a quick breaker, so a failover is seen and
/// left behind within a test.
fn section(cluster: &PrivateCluster, prefix: &str) -> String {
    cluster.redis_section(&settings(prefix))
}

fn settings(prefix: &str) -> String {
    format!("prefix = \"{prefix}\"\ntimeout = \"500ms\"\nbreaker = {{ failures = 2, cool_down = \"200ms\" }}")
}

async fn sidecar(origin: &OriginHandle, redis: &str) -> TestProxy {
    TestProxy::builder().upstream("api", &[origin.addr()]).rules(RULES).sidecar_toml(redis).start().await
}

/// Waits until every sidecar is connected to the cluster (a sidecar starts without waiting for
/// Redis and connects in the background; `accel_redis_up` is 0 until then) with its circuit
/// closed.
async fn up(proxies: &[&TestProxy]) {
    eventually_async("every sidecar reached the cluster", || async {
        for proxy in proxies {
            let text = proxy.metrics_text().await;
            if metric_value(&text, "accel_redis_up") != 1.0
                || metric_value(&text, "accel_redis_circuit_state") != 0.0
            {
                return false;
            }
        }
        true
    })
    .await;
}

async fn stored(proxy: &TestProxy, count: f64) {
    eventually_async(&format!("{count} answers stored in the second level"), || async {
        proxy.metric("accel_redis_l2_total{result=\"stored\"}").await >= count
    })
    .await;
}

#[tokio::test]
async fn three_sidecars_share_answers_across_slots_and_purges_by_tag() {
    let Some(cluster) = private_cluster().await else { return };
    let origin = FakeOrigin::new().route("/api/leads/*", "{\"lead\":true}").start().await;
    let redis = section(&cluster, &prefix("share"));
    let (a, b, c) =
        (sidecar(&origin, &redis).await, sidecar(&origin, &redis).await, sidecar(&origin, &redis).await);
    up(&[&a, &b, &c]).await;

    // Twelve keys land on all three masters' slots.
    let paths: Vec<String> = (0..12).map(|i| format!("/api/leads/{i}")).collect();
    for path in &paths {
        assert_eq!(a.get(path).await.status, 200);
    }
    stored(&a, 12.0).await;
    for path in &paths {
        let response = b.get(path).await;
        assert!(response.header("cache-status").is_some_and(|s| s.contains("hit")), "{path} on B");
    }
    assert_eq!(origin.total_hits(), 12, "B answered every key from the cluster");
    assert_eq!(b.metric("accel_redis_l2_total{result=\"hit\"}").await, 12.0);

    // A tag purge on A reaches B's and C's memory (a PUBLISH is broadcast to every node,
    // whichever one a sidecar subscribed to) and the second level.
    let purge = PurgeRequest { tags: vec!["leads".into()], ..PurgeRequest::default() };
    a.proxy().cache.purge(&purge).expect("purge");
    eventually_async("B and C applied A's purge", || async {
        b.metric("accel_redis_purges_applied_total").await == 1.0
            && c.metric("accel_redis_purges_applied_total").await == 1.0
    })
    .await;
    b.get("/api/leads/0").await;
    c.get("/api/leads/1").await;
    assert_eq!(origin.total_hits(), 14, "purged in B's memory and in the second level for C");
    assert_eq!(c.metric("accel_redis_l2_total{result=\"purged\"}").await, 1.0, "C found the entry purged");
}

#[tokio::test]
async fn a_cluster_limit_is_one_bucket_over_the_cluster() {
    let Some(cluster) = private_cluster().await else { return };
    let origin = FakeOrigin::new().route("/api/pricing", "42").start().await;
    let redis = section(&cluster, &prefix("limit"));
    let (a, b) = (sidecar(&origin, &redis).await, sidecar(&origin, &redis).await);
    up(&[&a, &b]).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        statuses.push(proxy.get("/api/pricing").await.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 10, "{statuses:?}");
    assert_eq!(origin.hits("/api/pricing"), 10);
}

#[tokio::test]
async fn every_tier_script_keeps_its_keys_in_one_slot_and_a_cross_slot_script_fails() {
    let Some(cluster) = private_cluster().await else { return };
    let keys = Keys::new(&prefix("slots"));
    let port = cluster.ports()[0];
    // What the cluster refuses: one script over keys of two slots.
    let (one, two) = (keys.entry("a"), keys.entry("b"));
    assert_ne!(cluster.slot(&one).await, cluster.slot(&two).await);
    let refused = cluster
        .cli(port, &["-c", "EVAL", "return redis.call('MGET', KEYS[1], KEYS[2])", "2", &one, &two])
        .await
        .unwrap_or_default();
    assert!(refused.contains("CROSSSLOT"), "a cross-slot script must fail: {refused}");

    // The purge script's two keys share the `{meta}` slot: it runs, bumps and publishes.
    assert_eq!(cluster.slot(&keys.generations()).await, cluster.slot(&keys.sequence()).await);
    let payload = "{\"origin\":\"x\",\"purge\":\"all\"}";
    let seq = cluster
        .cli(
            port,
            &[
                "-c",
                "EVAL",
                PURGE_SCRIPT,
                "2",
                &keys.generations(),
                &keys.sequence(),
                &keys.channel(),
                "epoch",
                payload,
                "t:leads",
            ],
        )
        .await;
    assert_eq!(seq.as_deref(), Some("1"));
    let generation = cluster.cli(port, &["-c", "HGET", &keys.generations(), "t:leads"]).await;
    assert_eq!(generation.as_deref(), Some("1"));
    // The GCRA and unlock scripts take one key each: nothing to check beyond running them,
    // which the other tests do.
}

#[tokio::test]
async fn a_master_killed_under_load_fails_no_request_and_the_tier_recovers() {
    let Some(mut cluster) = private_cluster().await else { return };
    let origin = FakeOrigin::new().route("/api/leads/*", "lead").route("/api/pricing", "42").start().await;
    let prefix = prefix("failover");
    // The master of the `{meta}` slot: every second-level read and every purge needs it. It is
    // the first seed, so the sidecars' purge subscriptions are on it and must move too.
    let meta = Keys::new(&prefix).generations();
    let master = cluster.master_of(&meta).await.expect("a master serves {meta}");
    let redis = cluster.redis_section_from(master, &settings(&prefix));
    let (a, b) = (sidecar(&origin, &redis).await, sidecar(&origin, &redis).await);
    up(&[&a, &b]).await;
    a.get("/api/leads/warm").await;
    stored(&a, 1.0).await;
    assert!(b.get("/api/leads/warm").await.header("cache-status").is_some_and(|s| s.contains("hit")));

    cluster.kill(master);

    // Load through the failover: new keys (second-level misses), memory hits and the cluster
    // limit, on both sidecars, until a replica serves the slot.
    let mut sent = 0;
    let mut i = 0;
    let new_master = loop {
        for proxy in [&a, &b] {
            for path in
                [format!("/api/leads/load-{i}"), "/api/leads/warm".to_owned(), "/api/pricing".to_owned()]
            {
                let response = proxy.get(&path).await;
                // The limit of 10/h may refuse (429); nothing may fail.
                assert!(matches!(response.status.as_u16(), 200 | 429), "{path}: {}", response.status);
                sent += 1;
            }
        }
        i += 1;
        if let Some(port) = cluster.master_of(&meta).await
            && port != master
            && cluster.wait_ok(std::time::Duration::ZERO).await
        {
            break port;
        }
        assert!(i < 2_000, "no failover after {sent} requests");
    };
    assert_ne!(new_master, master);
    let unavailable = a.metric("accel_redis_l2_total{result=\"unavailable\"}").await
        + b.metric("accel_redis_l2_total{result=\"unavailable\"}").await;
    assert!(unavailable > 0.0, "the failover was felt: second-level lookups went without Redis");

    // After the failover the tier is whole again: a fill on A is a second-level hit on B, and
    // a purge reaches B.
    up(&[&a, &b]).await;
    let attempt = std::cell::Cell::new(0);
    eventually_async("a fill on A is a second-level hit on B again", || async {
        attempt.set(attempt.get() + 1);
        let path = format!("/api/leads/after-{}", attempt.get());
        let before = a.metric("accel_redis_l2_total{result=\"stored\"}").await;
        a.get(&path).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while a.metric("accel_redis_l2_total{result=\"stored\"}").await <= before {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        b.get(&path).await.header("cache-status").is_some_and(|s| s.contains("hit"))
    })
    .await;
    let applied = b.metric("accel_redis_purges_applied_total").await;
    let purge = PurgeRequest { tags: vec!["leads".into()], ..PurgeRequest::default() };
    a.proxy().cache.purge(&purge).expect("purge");
    eventually_async("B applied a purge made after the failover", || async {
        b.metric("accel_redis_purges_applied_total").await > applied
    })
    .await;
}
