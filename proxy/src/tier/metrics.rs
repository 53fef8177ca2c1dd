//! The tier's metrics (`accel_redis_*`), registered once and resolved to handles up front so
//! that no Redis call hashes labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::Metrics;

/// What a Redis call was for: the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Health probe.
    Ping,
    /// Second-level cache read.
    L2Get,
    /// Second-level cache write.
    L2Set,
    /// Tag generations read.
    Generations,
    /// Cluster-wide coalescing lock taken or released.
    Lock,
    /// Cluster-wide rate limit check.
    Limit,
    /// Purge published.
    Purge,
    /// Purge sequence read after a (re)subscription.
    Sequence,
}

impl Op {
    /// Every value, in label order.
    pub const ALL: [Self; 8] = [
        Self::Ping,
        Self::L2Get,
        Self::L2Set,
        Self::Generations,
        Self::Lock,
        Self::Limit,
        Self::Purge,
        Self::Sequence,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::L2Get => "l2_get",
            Self::L2Set => "l2_set",
            Self::Generations => "generations",
            Self::Lock => "lock",
            Self::Limit => "limit",
            Self::Purge => "purge",
            Self::Sequence => "sequence",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|op| *op == self).unwrap_or(0)
    }
}

/// The result of a second-level cache lookup or store: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L2Result {
    Hit,
    Miss,
    /// Found, but one of its tags was purged after it was stored.
    Purged,
    /// Redis did not answer (error, timeout or open circuit).
    Unavailable,
    Stored,
    /// Not stored: larger than `l2.max_object_size`.
    TooLarge,
    /// Not stored: a purge happened while it was fetched (it may be the purged answer).
    Outdated,
}

impl L2Result {
    /// Every value.
    pub const ALL: [Self; 7] = [
        Self::Hit,
        Self::Miss,
        Self::Purged,
        Self::Unavailable,
        Self::Stored,
        Self::TooLarge,
        Self::Outdated,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Purged => "purged",
            Self::Unavailable => "unavailable",
            Self::Stored => "stored",
            Self::TooLarge => "too_large",
            Self::Outdated => "outdated",
        }
    }
}

/// How a second-level miss met the cluster-wide coalescing lock: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockResult {
    /// Took the lock: this sidecar fetches for the cluster.
    Leader,
    /// Found it taken, waited, and got the holder's answer from the second level.
    FollowerHit,
    /// Found it taken; the holder released it without a stored answer: went upstream.
    FollowerReleased,
    /// Found it taken; no answer within the wait: went upstream.
    FollowerTimeout,
    /// Redis did not answer: no lock, went upstream.
    Unavailable,
}

impl LockResult {
    /// Every value.
    pub const ALL: [Self; 5] =
        [Self::Leader, Self::FollowerHit, Self::FollowerReleased, Self::FollowerTimeout, Self::Unavailable];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::FollowerHit => "follower_hit",
            Self::FollowerReleased => "follower_released",
            Self::FollowerTimeout => "follower_timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How a cluster-scoped rate limit check was decided: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitResult {
    Allowed,
    Limited,
    /// Redis was unavailable; the fail mode decided.
    Fallback,
}

impl LimitResult {
    /// Every value.
    pub const ALL: [Self; 3] = [Self::Allowed, Self::Limited, Self::Fallback];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Upper bounds, in seconds, of the Redis latency histogram: 50 µs to 250 ms.
const LATENCY_BUCKETS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/// Handles for every tier metric.
#[derive(Debug, Clone)]
pub struct TierMetrics {
    /// `accel_redis_up`: 1 while the circuit is closed.
    pub up: Gauge,
    /// `accel_redis_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub circuit: Gauge,
    errors: [Counter; 8],
    timeouts: [Counter; 8],
    durations: [Histogram; 8],
    l2: [Counter; 7],
    limits: [Counter; 3],
    locks: [Counter; 5],
    /// Purge messages received on the channel, own ones included.
    pub purges_received: Counter,
    /// Purges from other sidecars applied to this sidecar's memory.
    pub purges_applied: Counter,
    /// Purges published (or replayed after an outage).
    pub purges_published: Counter,
    /// Whole-memory flushes after a (re)subscription found purges this sidecar missed.
    pub flushes: Counter,
    /// Purges kept in the outbox because Redis did not take them.
    pub purges_kept: Counter,
    /// Kept purges published once Redis was back (also counted as published).
    pub purges_replayed: Counter,
    /// Times the circuit opened (from closed or after a failed probe).
    pub circuit_opens: Counter,
}

impl TierMetrics {
    /// Registers the tier's families in `metrics` and resolves every handle.
    pub fn new(metrics: &Metrics) -> Self {
        let up = Gauge::default();
        let circuit = Gauge::default();
        let errors = Family::<OpLabels, Counter>::default();
        let timeouts = Family::<OpLabels, Counter>::default();
        let durations = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS.iter().copied())
        });
        let l2 = Family::<ResultLabels, Counter>::default();
        let limits = Family::<ResultLabels, Counter>::default();
        let locks = Family::<ResultLabels, Counter>::default();
        let purges_received = Counter::default();
        let purges_applied = Counter::default();
        let purges_published = Counter::default();
        let flushes = Counter::default();
        let purges_kept = Counter::default();
        let purges_replayed = Counter::default();
        let circuit_opens = Counter::default();
        metrics.register("redis_up", "1 while Redis answers (circuit closed), else 0", up.clone());
        metrics.register(
            "redis_circuit_state",
            "Redis circuit breaker: 0 closed, 1 half-open, 2 open",
            circuit.clone(),
        );
        metrics.register(
            "redis_errors",
            "Failed Redis calls (errors and timeouts), by operation",
            errors.clone(),
        );
        metrics.register(
            "redis_timeouts",
            "Redis calls without an answer within the timeout (also counted as errors), by operation",
            timeouts.clone(),
        );
        metrics.register(
            "redis_circuit_opens",
            "Times the Redis circuit opened (after consecutive failures, or a failed probe)",
            circuit_opens.clone(),
        );
        metrics.register("redis_duration_seconds", "Redis call latency, by operation", durations.clone());
        metrics.register("redis_l2", "Second-level cache lookups and stores, by result", l2.clone());
        metrics.register("redis_limit_checks", "Cluster-scoped rate limit checks, by result", limits.clone());
        metrics.register(
            "redis_lock",
            "Second-level misses and the cluster-wide coalescing lock, by result",
            locks.clone(),
        );
        metrics.register(
            "redis_purges_received",
            "Purge messages received over pub/sub",
            purges_received.clone(),
        );
        metrics.register(
            "redis_purges_applied",
            "Purges from other sidecars applied to memory",
            purges_applied.clone(),
        );
        metrics.register(
            "redis_purges_published",
            "Purges published to the other sidecars",
            purges_published.clone(),
        );
        metrics.register(
            "redis_purges_kept",
            "Purges kept for later because Redis did not take them",
            purges_kept.clone(),
        );
        metrics.register(
            "redis_purges_replayed",
            "Kept purges published once Redis was back",
            purges_replayed.clone(),
        );
        metrics.register(
            "redis_memory_flushes",
            "Memory flushes after purges were missed while disconnected",
            flushes.clone(),
        );
        let op = |family: &Family<OpLabels, Counter>, op: Op| {
            family.get_or_create(&OpLabels { op: op.as_str() }).clone()
        };
        Self {
            up,
            circuit,
            errors: Op::ALL.map(|o| op(&errors, o)),
            timeouts: Op::ALL.map(|o| op(&timeouts, o)),
            durations: Op::ALL.map(|o| durations.get_or_create(&OpLabels { op: o.as_str() }).clone()),
            l2: L2Result::ALL.map(|r| l2.get_or_create(&ResultLabels { result: r.as_str() }).clone()),
            limits: LimitResult::ALL
                .map(|r| limits.get_or_create(&ResultLabels { result: r.as_str() }).clone()),
            locks: LockResult::ALL.map(|r| locks.get_or_create(&ResultLabels { result: r.as_str() }).clone()),
            purges_received,
            purges_applied,
            purges_published,
            flushes,
            purges_kept,
            purges_replayed,
            circuit_opens,
        }
    }

    /// Counts a failed call.
    pub fn error(&self, op: Op) {
        self.errors[op.index()].inc();
    }

    /// Counts a call that got no answer within the timeout (counted as an error too).
    pub fn timeout(&self, op: Op) {
        self.timeouts[op.index()].inc();
    }

    /// Records a call's latency.
    pub fn observe(&self, op: Op, seconds: f64) {
        self.durations[op.index()].observe(seconds);
    }

    /// Counts a second-level cache result.
    pub fn l2(&self, result: L2Result) {
        let i = L2Result::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.l2[i].inc();
    }

    /// The count of a second-level cache result so far.
    pub fn l2_count(&self, result: L2Result) -> u64 {
        let i = L2Result::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.l2[i].get()
    }

    /// Counts a meeting with the coalescing lock.
    pub fn lock(&self, result: LockResult) {
        let i = LockResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.locks[i].inc();
    }

    /// The count of a coalescing lock result so far.
    pub fn lock_count(&self, result: LockResult) -> u64 {
        let i = LockResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.locks[i].get()
    }

    /// Counts a cluster limit check.
    pub fn limit(&self, result: LimitResult) {
        let i = LimitResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.limits[i].inc();
    }
}
