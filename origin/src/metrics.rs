//! The origin's Prometheus metrics (`GET /metrics`): request duration per route, database query
//! duration per query, and the connection pool's usage. Label values are closed sets: the
//! matched route pattern (never the raw path), the method, the status, and query names fixed
//! in the code.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::Db;

/// Labels of a request: the route pattern, the method and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/api/golden-leads/{id}`), or `unmatched`.
    pub route: String,
    /// The request method.
    pub method: String,
    /// The response status.
    pub status: u16,
}

/// Labels of a database query: its name in the code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The query's name (`leads.list`, `pricing.history`, …).
    pub query: &'static str,
}

/// The origin's metric handles and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
    queries: Family<QueryLabels, Histogram>,
    pool_connections: Gauge<i64, AtomicI64>,
    pool_idle: Gauge<i64, AtomicI64>,
    pool_max: Gauge<i64, AtomicI64>,
}

/// 100 µs … ~13 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("origin");
        let requests =
            Family::<RequestLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let queries =
            Family::<QueryLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let pool_connections = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "db_query_duration_seconds",
            "Time a database query took, by query name",
            queries.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections open (idle and in use)",
            pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Database connections open and idle",
            pool_idle.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "The database pool's connection limit",
            pool_max.clone(),
        );
        Self { registry, requests, queries, pool_connections, pool_idle, pool_max }
    }
}

impl Metrics {
    /// Runs the database work `fut`, recording its duration under `query`.
    pub async fn query<T>(&self, query: &'static str, fut: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        self.queries.get_or_create(&QueryLabels { query }).observe(start.elapsed().as_secs_f64());
        out
    }

    /// The text exposition, with the pool gauges read from `db` now.
    pub fn render(&self, db: &Db) -> String {
        self.pool_connections.set(i64::from(db.size()));
        self.pool_idle.set(i64::try_from(db.idle()).unwrap_or(i64::MAX));
        self.pool_max.set(i64::from(db.max_connections()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Middleware recording every request's duration under its route pattern.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { route, method, status: response.status().as_u16() };
    metrics.requests.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    response
}
