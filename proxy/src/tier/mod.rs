//! The shared Redis tier (`[redis]` in `accel.toml`, all optional): what turns N sidecars
//! into one cache and one set of limits.
//!
//! - [`l2`]: second-level cache — an in-memory miss looks in Redis before the origin, and a
//!   Redis hit fills memory; optional cluster-wide coalescing lock;
//! - [`bus`]: tag purges reach every sidecar over pub/sub, and a sidecar that missed some while
//!   disconnected flushes its memory;
//! - [`gcra`]: `scope = "cluster"` rate limits, one Lua script per check;
//! - [`client`] (one client over a single Redis or a cluster, a timeout on every call),
//!   [`breaker`] (stop calling a failing Redis, probe, recover), [`keys`] (key layout),
//!   [`entry`] (entry encoding), [`config`], [`metrics`].
//!
//! Redis trouble never breaks a request: every call has a short timeout, failures open the
//! circuit, and callers fall back to memory and local limits (see [`config::FailMode`]).

pub mod breaker;
pub mod bus;
pub mod client;
pub mod config;
pub mod entry;
pub mod gcra;
pub mod keys;
pub mod l2;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;

use tokio::time::Duration;

pub use self::breaker::CircuitState;
pub use self::bus::{LocalPurge, Purge, PurgeBus, PurgePoint};
pub use self::client::{RedisClient, TierError};
pub use self::config::{FailMode, RedisConfig};
pub use self::entry::SharedEntry;
pub use self::gcra::{ClusterCheck, ClusterLimit, ClusterLimiter, GcraDecision};
pub use self::keys::Keys;
pub use self::l2::{ClusterLock, L2Lookup, LockOutcome, SecondLevel};
use self::metrics::{Op, TierMetrics};

/// The tier of one sidecar: the client and the three features over it.
#[derive(Debug)]
pub struct RedisTier {
    client: Arc<RedisClient>,
    bus: Arc<PurgeBus>,
    l2: Option<SecondLevel>,
    limiter: ClusterLimiter,
    metrics: TierMetrics,
    cool_down: Duration,
}

impl RedisTier {
    /// Builds the tier and registers its metrics. Does not wait for Redis: an unreachable
    /// Redis only means degraded service until it answers.
    pub fn new(config: &RedisConfig, metrics: &crate::metrics::Metrics) -> Result<Self, redis::RedisError> {
        let metrics = TierMetrics::new(metrics);
        let keys = Keys::new(&config.prefix);
        let id = bus::random_id();
        let client = Arc::new(RedisClient::new(config, metrics.clone())?);
        Ok(Self {
            client,
            bus: Arc::new(PurgeBus::new(id.clone(), keys.clone(), metrics.clone())),
            l2: config.l2.map(|l2| SecondLevel::new(keys.clone(), l2, id, metrics.clone())),
            limiter: ClusterLimiter::new(keys, config.fail, metrics.clone()),
            metrics,
            cool_down: config.breaker.cool_down,
        })
    }

    /// Uses `limiter` for cluster limits (tests inject a clock).
    pub fn with_limiter(mut self, limiter: ClusterLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// The Redis client.
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// The circuit's state.
    pub fn state(&self) -> CircuitState {
        self.client.breaker().state()
    }

    /// The tier's metric handles.
    pub fn metrics(&self) -> &TierMetrics {
        &self.metrics
    }

    /// This sidecar's id in purge messages and locks.
    pub fn id(&self) -> &str {
        self.bus.id()
    }

    /// Attaches this sidecar's memory: purges from other sidecars, and flushes after missed
    /// ones, are applied to it.
    pub fn attach(&self, local: Arc<dyn LocalPurge>) {
        self.bus.attach(local);
    }

    /// Sends a purge already applied to this sidecar's memory to every other sidecar and to
    /// the second level. Never fails: while Redis is unavailable it waits in an outbox.
    pub async fn purge(&self, purge: Purge) {
        self.bus.publish(&self.client, purge).await;
    }

    /// Purges waiting for Redis to come back.
    pub fn pending_purges(&self) -> usize {
        self.bus.pending()
    }

    /// The second-level cache, when enabled.
    pub fn l2(&self) -> Option<&SecondLevel> {
        self.l2.as_ref()
    }

    /// Second-level lookup; [`L2Lookup::Unavailable`] when disabled.
    pub async fn l2_get(&self, key: &str) -> L2Lookup {
        match &self.l2 {
            Some(l2) => l2.get(&self.client, key).await,
            None => L2Lookup::Unavailable,
        }
    }

    /// Where this sidecar stands in the purge sequence: taken before a fetch, passed to
    /// [`RedisTier::l2_put`].
    pub fn purge_point(&self) -> PurgePoint {
        self.bus.point()
    }

    /// Second-level store of an answer fetched after `since` ([`RedisTier::purge_point`]);
    /// `false` when disabled or not stored (also when a purge happened since).
    pub async fn l2_put(&self, key: &str, entry: &SharedEntry, since: &PurgePoint) -> bool {
        match &self.l2 {
            Some(l2) => l2.put(&self.client, key, entry, since).await,
            None => false,
        }
    }

    /// Tries to take `key`'s cluster-wide coalescing lock after a second-level miss;
    /// [`LockOutcome::Alone`] when the lock or the second level is off, or Redis does not
    /// answer (fail-open: the request goes upstream as without the lock).
    pub async fn l2_lock(&self, key: &str) -> LockOutcome {
        match &self.l2 {
            Some(l2) => l2.try_lock(&self.client, key).await,
            None => LockOutcome::Alone,
        }
    }

    /// A follower's wait for `key`'s entry, at most `timeout` and the lock's lifetime.
    pub async fn l2_wait(&self, key: &str, timeout: Duration) -> Option<SharedEntry> {
        let l2 = self.l2.as_ref()?;
        let timeout = l2.lock_ttl().map_or(timeout, |ttl| ttl.min(timeout));
        l2.wait(&self.client, key, timeout).await
    }

    /// Checks a cluster-scoped limit.
    pub async fn check_limit(&self, limit: &ClusterLimit, key: &str) -> ClusterCheck {
        self.limiter.check(&self.client, limit, key).await
    }

    /// Runs the tier's background work until `shutdown`: the purge subscriber, and the
    /// maintenance loop (connects a cluster, pings Redis every `cool_down / 4` — between
    /// 50 ms and 1 s — so the circuit opens and recovers without traffic, replays purges kept
    /// during an outage).
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let subscriber = self.bus.clone().run(self.client.clone(), std::future::pending::<()>());
        let maintenance = self.maintain();
        tokio::select! {
            () = subscriber => {}
            () = maintenance => {}
            () = shutdown => {}
        }
    }

    async fn maintain(&self) {
        let mut tick = tokio::time::interval(
            (self.cool_down / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.client.connect().await.is_err() {
                continue;
            }
            // A health check on every tick: `accel_redis_up` is true even without traffic,
            // and an open circuit is probed (once its cool-down is over) and recovers.
            let _ = self.client.query::<String>(Op::Ping, &redis::cmd("PING")).await;
            if self.state() == CircuitState::Closed && self.bus.pending() > 0 {
                let sent = self.bus.replay(&self.client).await;
                if sent > 0 {
                    tracing::info!(sent, "purges kept during the outage published");
                }
            }
        }
    }
}
