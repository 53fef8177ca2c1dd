//! Prometheus metrics (`accel_*`). Label values come from closed sets: route and upstream
//! names from the configuration, endpoint addresses, and enums with `as_str()` — never raw
//! paths or client input. Handles a request touches are resolved when the rules load
//! ([`RouteMetrics`]) or lazily once ([`OnceLock`]), so the request path does no label hashing.

use std::sync::{Mutex, OnceLock};

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::route::RouteName;
use crate::upstream::{EndpointAddr, UpstreamName};

/// How the cache took part in answering a request: the `cache` label of request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheResult {
    /// The route does not cache.
    None,
    Hit,
    Stale,
    Miss,
    Expired,
    Revalidated,
    /// The request or its answer could not use the cache.
    Bypass,
}

impl CacheResult {
    /// Every value, in label order.
    pub const ALL: [Self; 7] =
        [Self::None, Self::Hit, Self::Stale, Self::Miss, Self::Expired, Self::Revalidated, Self::Bypass];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Expired => "expired",
            Self::Revalidated => "revalidated",
            Self::Bypass => "bypass",
        }
    }
}

/// The outcome of one try to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamOutcome {
    /// Response headers received with a status below 500.
    Success,
    /// A 5xx status.
    ServerError,
    /// The connection could not be made.
    ConnectError,
    /// No response headers within the route's timeout.
    Timeout,
    /// The connection failed during the exchange.
    ProtocolError,
}

impl UpstreamOutcome {
    /// Every value.
    pub const ALL: [Self; 5] =
        [Self::Success, Self::ServerError, Self::ConnectError, Self::Timeout, Self::ProtocolError];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ServerError => "server_error",
            Self::ConnectError => "connect_error",
            Self::Timeout => "timeout",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// The result of one lookup of an endpoint's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupOutcome {
    /// The name's addresses, the same as before (or found the first time).
    Found,
    /// Addresses other than the ones in use: new connections go to the new ones.
    Changed,
    /// No answer, no address or no answer in time: the last addresses stay in use.
    Failed,
}

impl LookupOutcome {
    /// Every value.
    pub const ALL: [Self; 3] = [Self::Found, Self::Changed, Self::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::Changed => "changed",
            Self::Failed => "failed",
        }
    }
}

/// One endpoint's lookup counters, by [`LookupOutcome`].
#[derive(Debug, Clone, Default)]
pub struct Lookups([Counter; 3]);

impl Lookups {
    /// Counts one lookup.
    pub fn count(&self, outcome: LookupOutcome) {
        let i = LookupOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].inc();
    }

    /// Lookups counted with `outcome`.
    pub fn get(&self, outcome: LookupOutcome) -> u64 {
        let i = LookupOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCacheLabels {
    route: String,
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    upstream: String,
    endpoint: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    upstream: String,
    endpoint: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, Buckets>;

/// Builds histograms with the configured bucket bounds.
#[derive(Debug, Clone)]
struct Buckets(std::sync::Arc<[f64]>);

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The registry and the families the core registers; components register their own metrics
/// with [`Metrics::register`].
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    request_duration: HistogramFamily<RouteCacheLabels>,
    requests: Family<RequestLabels, Counter>,
    upstream_duration: HistogramFamily<EndpointLabels>,
    upstream_requests: Family<OutcomeLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    endpoint_in_flight: Family<EndpointLabels, Gauge>,
    endpoint_ejections: Family<EndpointLabels, Counter>,
    endpoint_lookups: Family<LookupLabels, Counter>,
    upstream_overflow: Family<UpstreamLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    /// Requests that matched no route.
    pub unrouted: Counter,
    /// Client connections open now.
    pub downstream_connections: Gauge,
    /// Client connections accepted.
    pub downstream_connections_total: Counter,
}

impl Metrics {
    /// A registry with the core's families; `buckets` are the latency histograms' bounds.
    pub fn new(buckets: &[f64]) -> Self {
        let mut registry = Registry::with_prefix("accel");
        let bounds = Buckets(buckets.into());
        let request_duration: HistogramFamily<RouteCacheLabels> =
            Family::new_with_constructor(bounds.clone());
        let upstream_duration: HistogramFamily<EndpointLabels> = Family::new_with_constructor(bounds);
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_requests = Family::<OutcomeLabels, Counter>::default();
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        let endpoint_in_flight = Family::<EndpointLabels, Gauge>::default();
        let endpoint_ejections = Family::<EndpointLabels, Counter>::default();
        let endpoint_lookups = Family::<LookupLabels, Counter>::default();
        let upstream_overflow = Family::<UpstreamLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let unrouted = Counter::default();
        let downstream_connections = Gauge::default();
        let downstream_connections_total = Counter::default();
        registry.register(
            "request_duration_seconds",
            "Time from request headers received to response headers sent, by route and cache result",
            request_duration.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request to an endpoint to its response headers",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Tries sent to endpoints, by outcome",
            upstream_requests.clone(),
        );
        registry.register(
            "endpoint_healthy",
            "1 when the active health checks pass",
            endpoint_healthy.clone(),
        );
        registry.register(
            "endpoint_in_flight",
            "Requests in flight on an endpoint, until the response body ends",
            endpoint_in_flight.clone(),
        );
        registry.register(
            "endpoint_ejections",
            "Passive ejections of an endpoint",
            endpoint_ejections.clone(),
        );
        registry.register(
            "endpoint_lookups",
            "Lookups of an endpoint's name, by result (found, changed, failed)",
            endpoint_lookups.clone(),
        );
        registry.register(
            "upstream_overflow",
            "Requests refused because every endpoint they could go to was at max_connections_per_endpoint",
            upstream_overflow.clone(),
        );
        registry.register("config_reloads", "Rules reloads, by result", reloads.clone());
        registry.register("unrouted_requests", "Requests that matched no route", unrouted.clone());
        registry.register(
            "downstream_connections_open",
            "Client connections open now",
            downstream_connections.clone(),
        );
        registry.register(
            "downstream_connections",
            "Client connections accepted",
            downstream_connections_total.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            request_duration,
            requests,
            upstream_duration,
            upstream_requests,
            endpoint_healthy,
            endpoint_in_flight,
            endpoint_ejections,
            endpoint_lookups,
            upstream_overflow,
            reloads,
            unrouted,
            downstream_connections,
            downstream_connections_total,
        }
    }

    /// Registers a component's metric under the `accel_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// The overflow counter of `upstream` (see [`crate::config::UpstreamConfig`]'s cap).
    pub fn upstream_overflow(&self, upstream: &UpstreamName) -> Counter {
        self.upstream_overflow
            .get_or_create(&UpstreamLabels { upstream: upstream.as_str().to_owned() })
            .clone()
    }

    /// Counts a rules reload.
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

/// Method label values: the common methods, everything else as `other`.
const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// One route's request metrics, resolved once.
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    requests: Family<RequestLabels, Counter>,
    duration_family: HistogramFamily<RouteCacheLabels>,
    counters: [[OnceLock<Counter>; 5]; 8],
    durations: [OnceLock<Histogram>; 7],
}

impl RouteMetrics {
    /// Handles for `route`.
    pub fn new(metrics: &Metrics, route: &RouteName) -> Self {
        Self {
            route: route.as_str().to_owned(),
            requests: metrics.requests.clone(),
            duration_family: metrics.request_duration.clone(),
            counters: Default::default(),
            durations: Default::default(),
        }
    }

    /// Records one answered request.
    pub fn record(&self, method: &Method, status: http::StatusCode, cache: CacheResult, seconds: f64) {
        let m = method_index(method);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.counters[m][class]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        method: METHODS[m],
                        status: STATUS_CLASSES[class],
                    })
                    .clone()
            })
            .inc();
        let c = CacheResult::ALL.iter().position(|r| *r == cache).unwrap_or(0);
        self.durations[c]
            .get_or_init(|| {
                self.duration_family
                    .get_or_create(&RouteCacheLabels { route: self.route.clone(), cache: cache.as_str() })
                    .clone()
            })
            .observe(seconds);
    }
}

/// One endpoint's metric handles.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    pub duration: Histogram,
    pub healthy: Gauge,
    pub in_flight: Gauge,
    pub ejections: Counter,
    /// Lookups of the endpoint's name (none for an IP address).
    pub lookups: Lookups,
    outcomes: [Counter; 5],
}

impl EndpointMetrics {
    /// Handles for `endpoint` of `upstream`.
    pub fn new(metrics: &Metrics, upstream: &UpstreamName, endpoint: &EndpointAddr) -> Self {
        let labels =
            EndpointLabels { upstream: upstream.as_str().to_owned(), endpoint: endpoint.to_string() };
        let outcome = |o: UpstreamOutcome| {
            metrics
                .upstream_requests
                .get_or_create(&OutcomeLabels {
                    upstream: labels.upstream.clone(),
                    endpoint: labels.endpoint.clone(),
                    outcome: o.as_str(),
                })
                .clone()
        };
        Self {
            duration: metrics.upstream_duration.get_or_create(&labels).clone(),
            healthy: metrics.endpoint_healthy.get_or_create(&labels).clone(),
            in_flight: metrics.endpoint_in_flight.get_or_create(&labels).clone(),
            ejections: metrics.endpoint_ejections.get_or_create(&labels).clone(),
            lookups: Lookups(LookupOutcome::ALL.map(|o| {
                let labels = LookupLabels {
                    upstream: labels.upstream.clone(),
                    endpoint: labels.endpoint.clone(),
                    result: o.as_str(),
                };
                metrics.endpoint_lookups.get_or_create(&labels).clone()
            })),
            outcomes: UpstreamOutcome::ALL.map(outcome),
        }
    }

    /// Counts one try's outcome.
    pub fn outcome(&self, outcome: UpstreamOutcome) {
        let i = UpstreamOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].inc();
    }
}
