//! Operator insight, read from what the proxy already counts: a bounded ring of snapshots
//! taken every `admin.snapshot_interval` (10 s) in its own task (`crate::sidecar`), and the
//! views computed from it on the admin listener (`crate::admin`'s page):
//!
//! - `/`: the live status page (per route, per endpoint, the Redis tier, reloads, plots of the
//!   last 15 minutes), its assets embedded in the binary;
//! - `/health/summary`: status, a 0–100 health score with its factors ([`health`]), a metrics
//!   summary, and recommendations ([`advice`]);
//! - `/insight/history`: the numbers the page draws.
//!
//! Nothing here runs on the request path: snapshots read the metrics exposition
//! ([`exposition`]) and the endpoints' state; `crate::warm` fetches a route's `warm` paths
//! through the proxy like any client would.

pub mod advice;
pub mod client;
pub mod exposition;
pub mod health;
pub mod latency;
pub mod snapshot;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snapshot::{EndpointCounters, Snapshot};

use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::route::slo::Slo;
use crate::upstream::Upstream;

/// How far back the ring reaches: the page's plots and the advice's window.
pub const HISTORY: Duration = Duration::from_secs(15 * 60);

/// How far back the health score looks: long enough to smooth a burst, short enough to
/// recover within minutes.
pub const HEALTH_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The ring of snapshots: at most [`HISTORY`] / interval + 1 of them, oldest first.
#[derive(Debug)]
pub struct Insight {
    interval: Duration,
    capacity: usize,
    ring: Mutex<VecDeque<Arc<Snapshot>>>,
}

impl Insight {
    /// An empty ring for snapshots every `interval`.
    pub fn new(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(10));
        let capacity = (HISTORY.as_millis() / interval.as_millis()).clamp(1, 10_000) as usize + 1;
        Self { interval, capacity, ring: Mutex::new(VecDeque::with_capacity(capacity)) }
    }

    /// The period between snapshots.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Adds `snapshot`, dropping the oldest when the ring is full.
    pub fn push(&self, snapshot: Snapshot) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(Arc::new(snapshot));
    }

    /// Every snapshot kept, oldest first.
    pub fn history(&self) -> Vec<Arc<Snapshot>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// The oldest snapshot taken at most `window` before `now_ms`; the newest when every one
    /// is older.
    pub fn baseline(&self, now_ms: u64, window: Duration) -> Option<Arc<Snapshot>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let since = now_ms.saturating_sub(window.as_millis() as u64);
        ring.iter().find(|s| s.at_ms >= since).or_else(|| ring.back()).cloned()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Reads every counter now: the `metrics` exposition and the `upstreams`' endpoints;
/// `redis`: whether the shared tier is configured.
pub fn take(upstreams: &[Arc<Upstream>], metrics: &Metrics, redis: bool) -> Snapshot {
    let now = tokio::time::Instant::now();
    let endpoints = upstreams
        .iter()
        .flat_map(|upstream| {
            upstream.endpoints.iter().map(move |endpoint| EndpointCounters {
                upstream: upstream.name.as_str().to_owned(),
                endpoint: endpoint.addr.to_string(),
                state: endpoint.state(now).as_str(),
                in_flight: endpoint.in_flight() as u64,
                ..Default::default()
            })
        })
        .collect();
    Snapshot::read(now_ms(), &metrics.encode(), endpoints, redis)
}

/// What the health score and advice need to know of a route's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    pub name: String,
    pub slo: Slo,
    /// The route caches.
    pub caches: bool,
    /// `cache.ttl`, when set.
    pub ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    /// Identical concurrent misses are collapsed.
    pub coalesce: bool,
}

impl RoutePolicy {
    /// The policies of the rules in `table`, in match order.
    pub fn of(table: &RouteTable) -> Vec<Self> {
        table
            .routes()
            .iter()
            .map(|route| {
                let rule = &route.rule;
                let cache = rule.cache.rule.as_deref();
                Self {
                    name: rule.name.as_str().to_owned(),
                    slo: rule.slo,
                    caches: cache.is_some(),
                    ttl: cache.and_then(|c| c.ttl),
                    stale_while_revalidate: cache.map_or(Duration::ZERO, |c| c.stale_while_revalidate),
                    coalesce: rule.cache.coalesce.enabled,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Snapshot {
        Snapshot::read(ms, "", Vec::new(), false)
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let insight = Insight::new(Duration::from_secs(10));
        for i in 0..200 {
            insight.push(at(i * 10_000));
        }

        let history = insight.history();
        assert_eq!(history.len(), 91);
        assert_eq!(history[0].at_ms, 109 * 10_000);
        assert_eq!(history[90].at_ms, 199 * 10_000);
    }

    #[test]
    fn the_baseline_is_the_oldest_snapshot_in_the_window() {
        let insight = Insight::new(Duration::from_secs(10));
        assert!(insight.baseline(0, HEALTH_WINDOW).is_none());
        for i in 0..60 {
            insight.push(at(i * 10_000));
        }

        let now = 600_000;
        assert_eq!(insight.baseline(now, HEALTH_WINDOW).unwrap().at_ms, 300_000);
        assert_eq!(
            insight.baseline(now * 10, HEALTH_WINDOW).unwrap().at_ms,
            590_000,
            "the newest when all are old"
        );
    }
}
