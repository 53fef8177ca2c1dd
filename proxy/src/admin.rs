//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (rules loaded and every upstream has an available endpoint) and `/status` (JSON:
//! routes, upstreams with endpoint health and in-flight counts), and `POST /cache/purge`
//! (token-protected, see `purge`); `/` (the status page) and `/health/summary` come from
//! [`crate::insight`].

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

mod page;
pub use page::snapshot;
mod purge;

/// The admin routes over `proxy`.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route("/cache/purge", post(purge::handle))
        .merge(page::router())
        .with_state(proxy)
}

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(proxy)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn metrics(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        proxy.metrics.encode(),
    )
}

async fn ready(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let running = proxy.pipeline.running.load();
    let routes = &running.routes;
    let not_ready: Vec<&str> =
        running.upstreams.iter().filter(|u| !u.has_available_endpoint()).map(|u| u.name.as_str()).collect();
    if routes.routes().is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no rules loaded\n".to_owned())
    } else if !not_ready.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("no available endpoint in: {}\n", not_ready.join(", ")))
    } else {
        (StatusCode::OK, "ready\n".to_owned())
    }
}

async fn status(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let now = tokio::time::Instant::now();
    let running = proxy.pipeline.running.load();
    let routes: Vec<_> = running
        .routes
        .routes()
        .iter()
        .map(|r| json!({ "name": r.rule.name.as_str(), "file": r.rule.file.display().to_string(), "upstream": r.rule.upstream.as_str() }))
        .collect();
    let upstreams: Vec<_> = running
        .upstreams
        .iter()
        .map(|u| {
            let endpoints: Vec<_> = u
                .endpoints
                .iter()
                .map(|e| json!({ "addr": e.addr.as_str(), "state": e.state(now).as_str(), "in_flight": e.in_flight() }))
                .collect();
            json!({ "name": u.name.as_str(), "endpoints": endpoints })
        })
        .collect();
    let files: Vec<String> = proxy.rules_files().iter().map(|p| p.display().to_string()).collect();
    axum::Json(json!({ "routes": routes, "upstreams": upstreams, "rules_files": files }))
}
