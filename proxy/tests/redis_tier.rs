//! The shared Redis tier against real Redis: the shared server on 127.0.0.1:6379 (each test
//! under its own key prefix, never flushed) and, for outages, a private `redis-server` on a
//! free port that the test stops and starts. Without Redis the tests print `SKIPPED` unless
//! `ACCEL_REQUIRE_SERVICES=1`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use accel::metrics::Metrics;
use accel::tier::config::BreakerConfig;
use accel::tier::gcra::ClusterLimiter;
use accel::tier::metrics::Op;
use accel::tier::{
    CircuitState, ClusterCheck, ClusterLimit, FailMode, GcraDecision, Keys, L2Lookup, LocalPurge,
    LockOutcome, Purge, RedisConfig, RedisTier, SharedEntry,
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::oneshot;

const SHARED: &str = "redis://127.0.0.1:6379";

/// True when a Redis answers at `addr`; otherwise prints `SKIPPED` (or fails under
/// `ACCEL_REQUIRE_SERVICES=1`).
fn available(addr: &str, what: &str) -> bool {
    if std::net::TcpStream::connect(addr).is_ok() {
        return true;
    }
    assert!(std::env::var("ACCEL_REQUIRE_SERVICES").as_deref() != Ok("1"), "{what} is required but absent");
    println!("SKIPPED: {what} not reachable at {addr}");
    false
}

/// A key prefix no other test or run uses.
fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("test:{test}:{}:{}:", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(url: &str, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::single(url, prefix).expect("valid url");
    config.timeout = Duration::from_millis(500);
    config.breaker =
        BreakerConfig { failures: NonZeroU32::new(2).unwrap(), cool_down: Duration::from_millis(200) };
    config
}

/// One sidecar's view: its tier, its metrics and its memory.
struct Sidecar {
    tier: Arc<RedisTier>,
    metrics: Arc<Metrics>,
    memory: Arc<Memory>,
    stop: Option<oneshot::Sender<()>>,
}

impl Sidecar {
    fn new(config: &RedisConfig) -> Self {
        Self::with(config, |tier| tier)
    }

    fn with(config: &RedisConfig, adapt: impl FnOnce(RedisTier) -> RedisTier) -> Self {
        let metrics = Arc::new(Metrics::new(&[1.0]));
        let tier = Arc::new(adapt(RedisTier::new(config, &metrics).expect("tier")));
        let memory = Arc::new(Memory::default());
        tier.attach(memory.clone());
        Self { tier, metrics, memory, stop: None }
    }

    /// Starts the background tasks (subscriber, maintenance).
    fn start(&mut self) {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(self.tier.clone().run(async move {
            let _ = rx.await;
        }));
        self.stop = Some(tx);
    }

    /// Stops them: the subscription is gone, as in a network cut.
    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.encode().lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A sidecar's in-memory cache, as far as purges are concerned: key → tags.
#[derive(Debug, Default)]
struct Memory(Mutex<HashMap<String, Vec<String>>>);

impl Memory {
    fn insert(&self, key: &str, entry: &SharedEntry) {
        self.0.lock().unwrap().insert(key.to_owned(), entry.tags.clone());
    }

    fn has(&self, key: &str) -> bool {
        self.0.lock().unwrap().contains_key(key)
    }
}

impl LocalPurge for Memory {
    fn purge_local(&self, purge: &Purge) -> u64 {
        let mut map = self.0.lock().unwrap();
        let before = map.len();
        match purge {
            Purge::Tags(tags) => map.retain(|_, t| !t.iter().any(|x| tags.contains(x))),
            Purge::Keys(keys) => map.retain(|k, _| !keys.contains(k)),
            Purge::Prefix(_) | Purge::All => map.clear(),
        }
        (before - map.len()) as u64
    }
}

fn entry(body: &str, tags: &[&str]) -> SharedEntry {
    SharedEntry {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_owned()),
        stored_at: SystemTime::now(),
        ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::from_secs(60),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        host: "api.example.com".into(),
        path: "/api/leads/1".into(),
    }
}

/// Waits (by polling, bounded) until `condition` holds; the bound is generous and only
/// fails the test when the behaviour is missing, not when the machine is slow.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until `n` clients subscribe to the purge channel of `prefix` at `url`.
async fn subscribers(url: &str, prefix: &str, n: i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = Keys::new(prefix).channel();
    for _ in 0..500 {
        let counts: Vec<(String, i64)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
        if counts.first().map(|c| c.1) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} subscribers never came");
}

#[tokio::test]
async fn two_sidecars_share_an_entry_and_a_tag_purge_removes_it_from_both() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let prefix = prefix("share");
    let config = config(SHARED, &prefix);
    let (mut a, mut b) = (Sidecar::new(&config), Sidecar::new(&config));
    a.start();
    b.start();
    subscribers(SHARED, &prefix, 2).await;

    // A fetched from the origin: memory and second level.
    let answer = entry("{\"lead\":1}", &["lead:1", "leads"]);
    a.memory.insert("k1", &answer);
    assert!(a.tier.l2_put("k1", &answer, &a.tier.purge_point()).await);
    // B misses in memory, hits the second level (the origin is not asked), fills memory.
    let L2Lookup::Hit(shared) = b.tier.l2_get("k1").await else { panic!("B should hit the second level") };
    assert_eq!(shared.body, answer.body);
    assert_eq!(shared.tags, answer.tags);
    b.memory.insert("k1", &shared);
    assert_eq!(b.tier.l2_get("other").await, L2Lookup::Miss);

    // A purges the tag: applied locally, then published.
    a.memory.purge_local(&Purge::Tags(vec!["lead:1".into()]));
    a.tier.purge(Purge::Tags(vec!["lead:1".into()])).await;
    assert_eq!(a.tier.pending_purges(), 0);
    eventually("B's memory drops the purged entry", || !b.memory.has("k1")).await;
    assert_eq!(b.tier.l2_get("k1").await, L2Lookup::Miss, "the second level reads it as purged");
    assert_eq!(b.metric("accel_redis_purges_applied_total"), Some(1.0));
    assert_eq!(
        a.metric("accel_redis_purges_applied_total"),
        Some(0.0),
        "applied counts other sidecars' purges"
    );
    assert_eq!(b.metric("accel_redis_l2_total{result=\"hit\"}"), Some(1.0));
    assert_eq!(b.metric("accel_redis_up"), Some(1.0));

    // An entry fetched after the purge (A has seen its own purge come back) is served again.
    eventually("A received its purge", || a.metric("accel_redis_purges_received_total") == Some(1.0)).await;
    assert!(a.tier.l2_put("k1", &answer, &a.tier.purge_point()).await);
    assert!(matches!(b.tier.l2_get("k1").await, L2Lookup::Hit(_)));
}

#[tokio::test]
async fn an_answer_read_back_from_redis_before_the_purge_reached_it_is_purged_again() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let prefix = prefix("readback");
    let config = config(SHARED, &prefix);
    let mut a = Sidecar::new(&config);
    a.start();
    subscribers(SHARED, &prefix, 1).await;
    let answer = entry("{\"lead\":2}", &["lead:2"]);
    a.memory.insert("k2", &answer);
    assert!(a.tier.l2_put("k2", &answer, &a.tier.purge_point()).await);

    // A purges its memory first; before the purge script has run, a memory miss finds the
    // answer in the second level (its generations not bumped yet) and stores it again.
    let purge = Purge::Tags(vec!["lead:2".into()]);
    a.memory.purge_local(&purge);
    let L2Lookup::Hit(read_back) = a.tier.l2_get("k2").await else { panic!("still in the second level") };
    a.memory.insert("k2", &read_back);
    a.tier.purge(purge).await;

    // Its own purge coming back removes it again.
    eventually("A's own purge came back", || a.metric("accel_redis_purges_received_total") == Some(1.0))
        .await;
    assert!(!a.memory.has("k2"), "the answer read back in between is purged");
    assert_eq!(a.tier.l2_get("k2").await, L2Lookup::Miss);
}

#[tokio::test]
async fn cluster_limit_of_ten_lets_ten_through_over_two_sidecars() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let prefix = prefix("gcra");
    let config = config(SHARED, &prefix);
    let now = Arc::new(AtomicU64::new(1_700_000_000_000_000));
    let clocked = |tier: RedisTier| {
        let now = now.clone();
        let metrics = Metrics::new(&[1.0]);
        let limiter = ClusterLimiter::new(
            Keys::new(&prefix),
            FailMode::Open,
            accel::tier::metrics::TierMetrics::new(&metrics),
        )
        .with_clock(Arc::new(move || Some(now.load(Ordering::Relaxed))));
        tier.with_limiter(limiter)
    };
    let a = Sidecar::with(&config, clocked);
    let b = Sidecar::with(&config, clocked);
    let limit = ClusterLimit {
        route: "pricing".into(),
        limit: "per-client".into(),
        rate: NonZeroU32::new(10).unwrap(),
        period: Duration::from_secs(1),
        burst: NonZeroU32::new(10).unwrap(),
    };
    let mut allowed = 0;
    let mut last_retry = Duration::ZERO;
    for i in 0..20 {
        let sidecar = if i % 2 == 0 { &a } else { &b };
        match sidecar.tier.check_limit(&limit, "10.0.0.1").await {
            ClusterCheck::Decided(GcraDecision::Allowed { remaining }) => {
                allowed += 1;
                assert_eq!(remaining, 10 - allowed, "remaining after {allowed}");
            }
            ClusterCheck::Decided(GcraDecision::Limited { retry_after }) => last_retry = retry_after,
            other => panic!("redis should decide: {other:?}"),
        }
    }
    assert_eq!(allowed, 10, "10/s with burst 10 over two sidecars: 10, not 20");
    assert_eq!(last_retry, Duration::from_millis(100));
    // Another client and another route have their own buckets.
    assert!(matches!(
        a.tier.check_limit(&limit, "10.0.0.2").await,
        ClusterCheck::Decided(GcraDecision::Allowed { .. })
    ));
    let other = ClusterLimit { route: "leads".into(), ..limit.clone() };
    assert!(matches!(
        b.tier.check_limit(&other, "10.0.0.1").await,
        ClusterCheck::Decided(GcraDecision::Allowed { .. })
    ));
    // 100 ms later one more request is allowed, on either sidecar.
    now.fetch_add(100_000, Ordering::Relaxed);
    assert!(matches!(
        b.tier.check_limit(&limit, "10.0.0.1").await,
        ClusterCheck::Decided(GcraDecision::Allowed { remaining: 0 })
    ));
    assert!(matches!(
        a.tier.check_limit(&limit, "10.0.0.1").await,
        ClusterCheck::Decided(GcraDecision::Limited { .. })
    ));
}

#[tokio::test]
async fn cluster_coalescing_lock_makes_one_leader_and_followers_get_its_answer() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let prefix = prefix("lock");
    let mut config = config(SHARED, &prefix);
    config.l2 =
        Some(accel::tier::config::L2Config { max_object_size: 1 << 20, lock: Some(Duration::from_secs(2)) });
    let (a, b) = (Sidecar::new(&config), Sidecar::new(&config));
    let LockOutcome::Leader(lock) = a.tier.l2_lock("k").await else { panic!("A leads") };
    assert!(matches!(b.tier.l2_lock("k").await, LockOutcome::Follower));
    let answer = entry("fetched once", &[]);
    let follower = async { b.tier.l2_wait("k", Duration::from_secs(5)).await };
    let leader = async {
        // The leader answers once the follower has looked for the entry and found the lock
        // still held: the follower gets the answer by waiting, not by coming late.
        eventually("the follower looked for the entry", || {
            b.metric(r#"accel_redis_duration_seconds_count{op="l2_get"}"#) >= Some(1.0)
        })
        .await;
        assert!(a.tier.l2_put("k", &answer, &a.tier.purge_point()).await);
        assert!(lock.release().await);
    };
    let (got, ()) = tokio::join!(follower, leader);
    assert_eq!(got.map(|e| e.body), Some(answer.body));
    assert_eq!(b.metric(r#"accel_redis_lock_total{result="follower_hit"}"#), Some(1.0));
    assert!(matches!(b.tier.l2_lock("k").await, LockOutcome::Leader(_)), "released");
}

#[tokio::test]
async fn a_lock_is_released_only_by_its_holder_and_when_its_guard_drops() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let mut config = config(SHARED, &prefix("guard"));
    config.l2 =
        Some(accel::tier::config::L2Config { max_object_size: 1 << 20, lock: Some(Duration::from_secs(30)) });
    let a = Sidecar::new(&config);
    let client = a.tier.client();
    let value = |key: String| async move {
        client.query::<Option<String>>(Op::Ping, redis::cmd("GET").arg(key)).await.expect("GET")
    };

    let LockOutcome::Leader(first) = a.tier.l2_lock("k1").await else { panic!("the first lock leads") };
    assert!(matches!(a.tier.l2_lock("k1").await, LockOutcome::Follower), "taken");
    // The first holder's lock expired and another request took it: the late release leaves it.
    let key = first.key().to_owned();
    client.query::<()>(Op::Ping, redis::cmd("SET").arg(&key).arg("another")).await.expect("SET");
    assert!(!first.release().await, "not the holder any more");
    assert_eq!(value(key).await.as_deref(), Some("another"));

    let LockOutcome::Leader(second) = a.tier.l2_lock("k2").await else { panic!("k2 is free") };
    let key = second.key().to_owned();
    assert_eq!(value(key.clone()).await.as_deref(), Some(second.token()));
    // A cancelled request: the guard drops unreleased, and releases in the background.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while value(key.clone()).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the dropped guard released its lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(a.tier.l2_lock("k2").await, LockOutcome::Leader(_)), "free again");
    assert_eq!(a.metric(r#"accel_redis_lock_total{result="leader"}"#), Some(3.0));
}

#[tokio::test]
async fn unreachable_redis_degrades_without_failing_and_says_so() {
    // Nothing listens on this port: every call fails fast.
    let port = free_port();
    let config = config(&format!("redis://127.0.0.1:{port}"), &prefix("down"));
    let a = Sidecar::new(&config);
    assert_eq!(a.tier.l2_get("k").await, L2Lookup::Unavailable);
    assert!(!a.tier.l2_put("k", &entry("x", &[]), &a.tier.purge_point()).await);
    assert_eq!(a.tier.state(), CircuitState::Open, "two failures open the circuit");
    assert_eq!(a.metric("accel_redis_up"), Some(0.0));
    assert_eq!(a.metric("accel_redis_circuit_state"), Some(2.0));
    let limit = ClusterLimit {
        route: "r".into(),
        limit: "l".into(),
        rate: NonZeroU32::new(1).unwrap(),
        period: Duration::from_secs(1),
        burst: NonZeroU32::new(1).unwrap(),
    };
    assert_eq!(
        a.tier.check_limit(&limit, "k").await,
        ClusterCheck::Fallback,
        "fail open: the local limiter decides"
    );
    a.tier.purge(Purge::Tags(vec!["t".into()])).await;
    assert_eq!(a.tier.pending_purges(), 1, "kept for when Redis is back");
    assert!(a.metric("accel_redis_errors_total{op=\"l2_get\"}").unwrap_or(0.0) >= 1.0);

    // With no traffic at all, the health check still finds out.
    let mut idle = Sidecar::new(&config);
    idle.start();
    eventually("an idle sidecar reports Redis down", || idle.metric("accel_redis_up") == Some(0.0)).await;

    let mut closed = config.clone();
    closed.fail = FailMode::Closed;
    let c = Sidecar::new(&closed);
    let _ = c.tier.l2_get("k").await;
    assert_eq!(c.tier.check_limit(&limit, "k").await, ClusterCheck::Refuse, "fail closed refuses");
}

/// A private `redis-server` the test may stop and start.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Option<Self> {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            assert!(
                std::env::var("ACCEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "redis-server is required"
            );
            println!("SKIPPED: redis-server not installed");
            return None;
        }
        let mut redis = Self { port: free_port(), child: None };
        redis.restart().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("private redis-server did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn redis_stopped_mid_test_degrades_then_recovers_and_replays_purges() {
    let Some(mut redis) = PrivateRedis::start().await else { return };
    let prefix = prefix("outage");
    let config = config(&redis.url(), &prefix);
    let (mut a, mut b) = (Sidecar::new(&config), Sidecar::new(&config));
    a.start();
    b.start();
    subscribers(&redis.url(), &prefix, 2).await;
    assert!(a.tier.l2_put("k", &entry("v", &["t"]), &a.tier.purge_point()).await);
    b.memory.insert("k", &entry("v", &["t"]));

    redis.stop();
    // Calls fail (never hang) until the circuit opens; then they are not even made.
    for _ in 0..3 {
        assert_eq!(a.tier.l2_get("k").await, L2Lookup::Unavailable);
    }
    assert_eq!(a.metric("accel_redis_up"), Some(0.0));
    a.memory.purge_local(&Purge::Tags(vec!["t".into()]));
    a.tier.purge(Purge::Tags(vec!["t".into()])).await;
    assert_eq!(a.tier.pending_purges(), 1);

    redis.restart().await;
    eventually("the circuit closes by itself", || a.tier.state() == CircuitState::Closed).await;
    assert_eq!(a.metric("accel_redis_up"), Some(1.0));
    eventually("the kept purge is published", || a.tier.pending_purges() == 0).await;
    // B missed the purge while disconnected: it must not keep serving the entry.
    eventually("B no longer holds the purged entry", || !b.memory.has("k")).await;
    // Taken before A is back in step with the purge sequence (the replayed purge reached it
    // or its resubscription read it), a fetch's point is outdated: a write is refused.
    let mut stored = false;
    for _ in 0..500 {
        if a.tier.l2_put("k2", &entry("w", &[]), &a.tier.purge_point()).await {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stored, "the second level works again");
    // B's calls on its connection broken by the restart may have opened its circuit too.
    eventually("B's circuit closes", || b.tier.state() == CircuitState::Closed).await;
    let got = b.tier.l2_get("k2").await;
    assert!(matches!(got, L2Lookup::Hit(_)), "B got {got:?}");
}

#[tokio::test]
async fn a_purge_missed_while_unsubscribed_flushes_memory_on_resubscribe() {
    if !available("127.0.0.1:6379", "redis") {
        return;
    }
    let prefix = prefix("missed");
    let config = config(SHARED, &prefix);
    let (mut a, mut b) = (Sidecar::new(&config), Sidecar::new(&config));
    a.start();
    b.start();
    subscribers(SHARED, &prefix, 2).await;
    // One purge seen by both: B's position is now known.
    a.tier.purge(Purge::Tags(vec!["warm".into()])).await;
    eventually("B saw the first purge", || b.metric("accel_redis_purges_received_total") == Some(1.0)).await;
    b.memory.insert("stale", &entry("v", &["lead:7"]));
    b.memory.insert("unrelated", &entry("v", &["other"]));

    // B is cut off; A purges meanwhile; nobody tells B.
    b.stop();
    subscribers(SHARED, &prefix, 1).await;
    a.tier.purge(Purge::Tags(vec!["lead:7".into()])).await;
    assert!(b.memory.has("stale"));

    // B comes back, sees the sequence moved, and flushes rather than serve stale answers.
    b.start();
    eventually("B flushes after resubscribing", || !b.memory.has("stale")).await;
    assert_eq!(b.metric("accel_redis_memory_flushes_total"), Some(1.0));
    // A sidecar that missed nothing keeps its memory on resubscribe.
    a.memory.insert("kept", &entry("v", &["x"]));
    a.stop();
    subscribers(SHARED, &prefix, 1).await;
    a.start();
    subscribers(SHARED, &prefix, 2).await;
    // A checks the sequence before it reads any message: once it has received a purge
    // published after it resubscribed, it has decided whether to flush.
    let received = a.metric("accel_redis_purges_received_total");
    b.tier.purge(Purge::Tags(vec!["unrelated".into()])).await;
    eventually("A received a purge after resubscribing", || {
        a.metric("accel_redis_purges_received_total") > received
    })
    .await;
    assert!(a.memory.has("kept"));
    assert_eq!(a.metric("accel_redis_memory_flushes_total"), Some(0.0));
}
