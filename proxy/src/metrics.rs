//! The metrics registry (`accel_*`, Prometheus text format). Label values come from closed
//! sets: route and upstream names from the configuration, endpoint addresses, and enums with
//! `as_str()` — never raw paths or client input.
//!
//! Each component owns its metrics: it declares its label sets and registers its families
//! here ([`Metrics::register`], or [`Metrics::family`] for a family that several of its
//! values share, such as one per route). Handles a request touches are resolved when the
//! rules load or lazily once, so the request path does no label hashing.
//!
//! A counted event that is also logged goes through a [`WarnBudget`], so that a flood of it
//! is one warning every few seconds, not one a request.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Default latency buckets, in seconds: 100 µs to 10 s.
pub const DEFAULT_LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A family of latency histograms with the configured buckets.
pub type HistogramFamily<L> = Family<L, Histogram, Buckets>;

/// Builds histograms with the configured bucket bounds (`[metrics] latency_buckets`).
#[derive(Debug, Clone)]
pub struct Buckets(Arc<[f64]>);

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The registry, the families components share through it, and the few metrics of the
/// proxy as a whole.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Families by name, registered once (see [`Metrics::family`]).
    families: Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>,
    buckets: Buckets,
    reloads: Family<ResultLabels, Counter>,
    /// Requests that matched no route.
    pub unrouted: Counter,
    /// Client connections open now.
    pub downstream_connections: Gauge,
    /// Client connections accepted.
    pub downstream_connections_total: Counter,
}

impl Metrics {
    /// An empty registry; `buckets` are the latency histograms' bounds.
    pub fn new(buckets: &[f64]) -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("accel")),
            families: Mutex::default(),
            buckets: Buckets(buckets.into()),
            reloads: Family::default(),
            unrouted: Counter::default(),
            downstream_connections: Gauge::default(),
            downstream_connections_total: Counter::default(),
        };
        metrics.register(
            "config_reloads",
            "Reloads of accel.toml and the rules, by result",
            metrics.reloads.clone(),
        );
        metrics.register("unrouted_requests", "Requests that matched no route", metrics.unrouted.clone());
        metrics.register(
            "downstream_connections_open",
            "Client connections open now",
            metrics.downstream_connections.clone(),
        );
        metrics.register(
            "downstream_connections",
            "Client connections accepted",
            metrics.downstream_connections_total.clone(),
        );
        metrics
    }

    /// Registers a component's metric under the `accel_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// The family registered as `name`, registered by the first call (made with `make`):
    /// every caller gets a handle to the same family, whatever it labels. Two callers must
    /// agree on the family's type: a call with another type for the same name gets a family
    /// of its own that is not exported.
    pub fn family<F>(&self, name: &'static str, help: &str, make: impl FnOnce() -> F) -> F
    where
        F: Metric + Clone + Any + Send + Sync,
    {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(family) = families.get(name) {
            if let Some(family) = family.downcast_ref::<F>() {
                return family.clone();
            }
            debug_assert!(false, "metric family {name} registered with two types");
            return make();
        }
        let family = make();
        self.register(name, help, family.clone());
        families.insert(name, Box::new(family.clone()));
        family
    }

    /// A new, unregistered family of latency histograms with the configured buckets.
    pub fn histograms<L>(&self) -> HistogramFamily<L>
    where
        L: Clone + std::hash::Hash + Eq,
    {
        Family::new_with_constructor(self.buckets.clone())
    }

    /// Counts a reload of `accel.toml` and the rules.
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "success" } else { "error" } }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_registered_once_and_shared() {
        let metrics = Metrics::new(&[1.0]);
        let make = Family::<ResultLabels, Counter>::default;
        let first = metrics.family("shared", "A shared family", make);
        let second = metrics.family("shared", "A shared family", make);
        first.get_or_create(&ResultLabels { result: "a" }).inc();
        second.get_or_create(&ResultLabels { result: "a" }).inc();
        let text = metrics.encode();
        assert!(text.contains("accel_shared_total{result=\"a\"} 2"), "{text}");
        assert_eq!(text.matches("# TYPE accel_shared").count(), 1, "{text}");
    }
}

/// At most one warning per [`WarnBudget::EVERY`] for one kind of event, so that a flood of
/// them (bad requests, an endpoint breaking off its bodies) cannot flood the log; the events
/// left out are counted in the next warning. Clones share the budget.
#[derive(Debug, Clone)]
pub struct WarnBudget {
    /// Seconds (since `epoch`) of the last warning, and events not logged since.
    last: Arc<(AtomicU64, AtomicU64)>,
    epoch: tokio::time::Instant,
}

impl Default for WarnBudget {
    fn default() -> Self {
        Self { last: Arc::default(), epoch: tokio::time::Instant::now() }
    }
}

impl WarnBudget {
    /// At most one warning this often.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// The events left out since the last warning when a warning is due now (and takes the
    /// slot); `None`, counting this one as left out, when one was logged within
    /// [`Self::EVERY`].
    pub fn due(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_secs() + 1;
        let (last, suppressed) = &*self.last;
        let previous = last.load(Ordering::Relaxed);
        let due = previous == 0 || now >= previous + Self::EVERY.as_secs();
        if due && last.compare_exchange(previous, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            Some(suppressed.swap(0, Ordering::Relaxed))
        } else {
            suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
