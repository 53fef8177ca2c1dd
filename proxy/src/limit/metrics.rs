//! Rate-limit metrics, registered once with the proxy's registry; each limiter resolves its
//! own handles when the rules load, so a request does no label hashing.
//!
//! - `accel_rate_limited_total{route,limit}`: requests refused by a limit;
//! - `accel_rate_limit_delayed_total{route,limit}`: requests that waited (delay mode);
//! - `accel_rate_limit_delay_seconds{route,limit}`: how long they waited;
//! - `accel_rate_limit_keys{route,limit}`: keys with their own bucket now (bounded);
//! - `accel_client_concurrency_rejected_total`: requests refused by the per-client
//!   concurrency cap.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::rule::LimitName;
use crate::metrics::Metrics;
use crate::name::RouteName;

/// Upper bounds, in seconds, of the delay histogram: 1 ms to 10 s.
const DELAY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LimitLabels {
    route: String,
    limit: String,
}

impl LimitLabels {
    pub(super) fn new(route: &RouteName, limit: &LimitName) -> Self {
        Self { route: route.as_str().to_owned(), limit: limit.as_str().to_owned() }
    }
}

fn delay_histogram() -> Histogram {
    Histogram::new(DELAY_BUCKETS)
}

/// The rate-limit families.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    limited: Family<LimitLabels, Counter>,
    delayed: Family<LimitLabels, Counter>,
    delay_seconds: Family<LimitLabels, Histogram, fn() -> Histogram>,
    pub(super) keys: Family<LimitLabels, Gauge>,
    /// Requests refused by the per-client concurrency cap.
    pub concurrency_rejected: Counter,
}

impl LimitMetrics {
    /// Registers the families with `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            limited: Family::default(),
            delayed: Family::default(),
            delay_seconds: Family::new_with_constructor(delay_histogram),
            keys: Family::default(),
            concurrency_rejected: Counter::default(),
        };
        metrics.register(
            "rate_limited",
            "Requests refused by a rate limit, by route and limit",
            this.limited.clone(),
        );
        metrics.register(
            "rate_limit_delayed",
            "Requests over the burst that waited for their turn (delay mode), by route and limit",
            this.delayed.clone(),
        );
        metrics.register(
            "rate_limit_delay_seconds",
            "Time delayed requests waited, by route and limit",
            this.delay_seconds.clone(),
        );
        metrics.register(
            "rate_limit_keys",
            "Keys with their own bucket in a limiter (bounded by limits.rate_limit_keys)",
            this.keys.clone(),
        );
        metrics.register(
            "client_concurrency_rejected",
            "Requests refused by the per-client concurrency cap",
            this.concurrency_rejected.clone(),
        );
        this
    }

    /// Handles for one limit of one route.
    pub fn limit(&self, route: &RouteName, limit: &LimitName) -> LimitHandles {
        let labels = LimitLabels::new(route, limit);
        LimitHandles {
            limited: self.limited.get_or_create(&labels).clone(),
            delayed: self.delayed.get_or_create(&labels).clone(),
            delay_seconds: self.delay_seconds.get_or_create(&labels).clone(),
        }
    }
}

/// One limit's metric handles.
#[derive(Debug, Clone)]
pub struct LimitHandles {
    pub limited: Counter,
    pub delayed: Counter,
    pub delay_seconds: Histogram,
}
