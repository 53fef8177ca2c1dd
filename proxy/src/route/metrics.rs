//! A route's request metrics: `accel_requests` by route, method and status class,
//! `accel_request_duration_seconds` by route and cache result, and `accel_slow_requests` by
//! route; for routes that tunnel upgrades, `accel_upgrades` by route and result,
//! `accel_tunnels_open` and `accel_tunnel_bytes` by route and direction.

use std::sync::OnceLock;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::cache::CacheResult;
use crate::metrics::{HistogramFamily, Metrics};
use crate::name::RouteName;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCacheLabels {
    route: String,
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    route: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    route: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
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
    /// Requests above the route's slow threshold; the series exists from the start (at 0),
    /// so that its rate is defined before the first slow request.
    slow: Counter,
    upgrades: Family<UpgradeLabels, Counter>,
    tunnels_open: Family<RouteLabels, Gauge>,
    tunnel_bytes: Family<DirectionLabels, Counter>,
}

/// How an upgrade request ended (the `result` label of `accel_upgrades`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeResult {
    /// The origin switched and the tunnel opened.
    Switched,
    /// The origin answered without switching (an ordinary response went back).
    Declined,
    /// No answer from the origin (an error answer went back).
    Failed,
    /// The origin switched but the client's side never became a tunnel.
    ClientGone,
}

impl UpgradeResult {
    const ALL: [Self; 4] = [Self::Switched, Self::Declined, Self::Failed, Self::ClientGone];

    fn as_str(self) -> &'static str {
        match self {
            Self::Switched => "switched",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::ClientGone => "client_gone",
        }
    }
}

impl RouteMetrics {
    /// Handles for `route`.
    pub fn new(metrics: &Metrics, route: &RouteName) -> Self {
        Self {
            route: route.as_str().to_owned(),
            requests: metrics.family(
                "requests",
                "Requests answered, by route, method and status class",
                Family::default,
            ),
            duration_family: metrics.family(
                "request_duration_seconds",
                "Time from request headers received to response headers sent, by route and cache result",
                || metrics.histograms(),
            ),
            counters: Default::default(),
            durations: Default::default(),
            slow: metrics
                .family::<Family<RouteLabels, Counter>>(
                    "slow_requests",
                    "Requests that took at least their route's slow threshold (timing.slow), by route",
                    Family::default,
                )
                .get_or_create(&RouteLabels { route: route.as_str().to_owned() })
                .clone(),
            upgrades: metrics.family("upgrades", "Upgrade requests, by route and result", Family::default),
            tunnels_open: metrics.family(
                "tunnels_open",
                "Upgraded connections open, by route",
                Family::default,
            ),
            tunnel_bytes: metrics.family(
                "tunnel_bytes",
                "Bytes carried by closed tunnels, by route and direction (upstream: client to origin)",
                Family::default,
            ),
        }
    }

    /// For a route that tunnels upgrades: its upgrade series exist from the start (at 0), so
    /// their rates are defined before the first upgrade.
    pub fn with_tunnels(self) -> Self {
        for result in UpgradeResult::ALL {
            let labels = UpgradeLabels { route: self.route.clone(), result: result.as_str() };
            drop(self.upgrades.get_or_create(&labels));
        }
        self.tunnels_open();
        self.tunnel_bytes(0, 0);
        self
    }

    /// Counts one upgrade request by how it ended.
    pub fn upgrade(&self, result: UpgradeResult) {
        let labels = UpgradeLabels { route: self.route.clone(), result: result.as_str() };
        self.upgrades.get_or_create(&labels).inc();
    }

    /// The gauge of the route's open tunnels.
    pub fn tunnels_open(&self) -> Gauge {
        self.tunnels_open.get_or_create(&RouteLabels { route: self.route.clone() }).clone()
    }

    /// Counts the bytes a closed tunnel carried: `up` from the client, `down` to it.
    pub fn tunnel_bytes(&self, up: u64, down: u64) {
        for (direction, bytes) in [("upstream", up), ("downstream", down)] {
            let labels = DirectionLabels { route: self.route.clone(), direction };
            self.tunnel_bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// Counts one request above the route's slow threshold.
    pub fn slow(&self) {
        self.slow.inc();
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
