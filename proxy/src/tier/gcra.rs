//! Cluster-wide rate limits: the GCRA state of a `scope = "cluster"` limit lives in Redis, one
//! atomic Lua script per check ([`GCRA_SCRIPT`]), so N sidecars together let through what one
//! would. Buckets are keyed by route, limit and client key (see [`super::keys`]): two rules
//! never share a bucket.
//!
//! Time is Redis's own clock (`TIME`) by default, so sidecars with skewed clocks agree; tests
//! inject a clock instead. When Redis is unavailable the caller falls back according to the
//! fail mode ([`ClusterCheck`]).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::client::RedisClient;
use super::config::FailMode;
use super::keys::Keys;
use super::metrics::{LimitResult, Op, TierMetrics};

/// One GCRA check. KEYS: the bucket. ARGV: emission interval (µs), burst, now (µs; 0: use
/// Redis `TIME`). Returns `{allowed (0|1), remaining, retry_after_us}`. The bucket expires
/// when it would be full again, so idle clients cost nothing.
pub const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tau = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tau then
  return {0, 0, tat - now - tau}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((tau + interval - (new_tat - now)) / interval), 0}
";

/// A cluster-scoped limit: `burst` requests at once, refilled one per `period / rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLimit {
    /// The route's name.
    pub route: String,
    /// The limit's name within the route.
    pub limit: String,
    /// Requests per `period`.
    pub rate: NonZeroU32,
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl ClusterLimit {
    /// Time between two requests at the sustained rate, in microseconds (at least 1).
    fn interval_micros(&self) -> u64 {
        (self.period.as_micros() / u128::from(self.rate.get())).max(1).try_into().unwrap_or(u64::MAX)
    }
}

/// Redis's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraDecision {
    Allowed {
        /// Requests still allowed right now.
        remaining: u32,
    },
    Limited {
        /// When the next request would be allowed.
        retry_after: Duration,
    },
}

/// The answer to a cluster limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCheck {
    /// Redis decided.
    Decided(GcraDecision),
    /// Redis is unavailable and the fail mode is open: let the local limiter decide.
    Fallback,
    /// Redis is unavailable and the fail mode is closed: refuse (503 with `Retry-After`).
    Refuse,
}

/// Microseconds since the Unix epoch; `None`: use Redis's clock.
pub type Clock = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// The cluster-wide limiter.
pub struct ClusterLimiter {
    keys: Keys,
    script: Script,
    fail: FailMode,
    clock: Clock,
    metrics: TierMetrics,
}

impl fmt::Debug for ClusterLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLimiter")
            .field("prefix", &self.keys.prefix())
            .field("fail", &self.fail)
            .finish()
    }
}

impl ClusterLimiter {
    /// A limiter using Redis's clock.
    pub fn new(keys: Keys, fail: FailMode, metrics: TierMetrics) -> Self {
        Self { keys, script: Script::new(GCRA_SCRIPT), fail, clock: Arc::new(|| None), metrics }
    }

    /// Uses `clock` instead of Redis's (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks one request of client `key` against `limit`.
    pub async fn check(&self, client: &RedisClient, limit: &ClusterLimit, key: &str) -> ClusterCheck {
        let bucket = self.keys.limit(&limit.route, &limit.limit, key);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(bucket)
            .arg(limit.interval_micros())
            .arg(limit.burst.get())
            .arg((self.clock)().unwrap_or(0));
        let result: Result<(u8, u64, u64), _> =
            client.run(Op::Limit, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await;
        match result {
            Ok((1, remaining, _)) => {
                self.metrics.limit(LimitResult::Allowed);
                ClusterCheck::Decided(GcraDecision::Allowed {
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                })
            }
            Ok((_, _, retry_after)) => {
                self.metrics.limit(LimitResult::Limited);
                ClusterCheck::Decided(GcraDecision::Limited {
                    retry_after: Duration::from_micros(retry_after),
                })
            }
            Err(_) => {
                self.metrics.limit(LimitResult::Fallback);
                match self.fail {
                    FailMode::Open => ClusterCheck::Fallback,
                    FailMode::Closed => ClusterCheck::Refuse,
                }
            }
        }
    }
}
