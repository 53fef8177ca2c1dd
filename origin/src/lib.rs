//! `accel-origin`: the platform API that Accel accelerates — revenue endpoints (golden leads,
//! predictions, dynamic pricing, tenant usage) and learning endpoints (materials, retrieval,
//! activity analytics), on PostgreSQL or embedded SQLite.
//!
//! # Layout
//!
//! A request meets, in order:
//! - [`metrics`]: the outermost layer, timing every request by route pattern;
//! - [`router`]: axum's routing table, one line per endpoint (the contract is `API.md`);
//! - [`auth`]: the bearer token every revenue and learning endpoint requires → [`auth::User`]
//!   (the caller and its tenant), checked against the hashed tokens of [`token`];
//! - [`api`]: one handler module per resource, reading [`db`] and computing with [`model`]
//!   (scoring, forecast, pricing) and [`text`] (extraction, chunking, embedding), the
//!   CPU-heavy parts bounded by [`compute`];
//! - [`caching`]: the answer's `Cache-Control`, `ETag`, `Vary`, `Cache-Tag` and
//!   `Cache-Group-Invalidation` headers;
//! - [`error`]: the one rescue point turning failures into JSON errors.
//!
//! Around them: [`app`] (shared state), [`clock`] (injected time), [`seed`] (deterministic
//! data sets), [`token`] (issuing and revoking API tokens) and [`serve`] (listener + shutdown +
//! the view-refresh schedule).

pub mod api;
pub mod app;
pub mod auth;
pub mod caching;
pub mod cli;
pub mod clock;
pub mod compute;
pub mod db;
pub mod error;
pub mod metrics;
pub mod model;
pub mod seed;
pub mod text;
pub mod token;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;

pub use app::App;
pub use db::Db;

use crate::caching::no_store;

/// The origin's routes over `app`, with the metrics layer outermost.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(api::health::check))
        // Each module's health path answers as /health does (the platforms probe them).
        .route("/api/golden-leads/health", get(api::health::check))
        .route("/api/pricing/health", get(api::health::check))
        .route("/api/v1/predictive/health", get(api::health::check))
        .route("/metrics", get(api::health::metrics))
        // Revenue platform.
        .route("/api/golden-leads", get(api::leads::list))
        .route("/api/golden-leads/detect", post(api::leads::detect))
        .route("/api/golden-leads/{id}", get(api::leads::one))
        .route("/api/golden-leads/{id}/score", post(api::leads::rescore))
        .route("/api/predictions/{lead_id}", get(api::predictions::one))
        // The predictive API at the platform's versioned path (the same answers).
        .route("/api/v1/predictive/leads/{lead_id}", get(api::predictions::one))
        .route("/api/v1/predictive/detect", post(api::leads::detect))
        .route("/api/pricing/analytics", get(api::pricing::analytics))
        .route("/api/pricing/{contact_id}", get(api::pricing::quote).put(api::pricing::record))
        .route("/api/tenants/{tenant_id}/usage", get(api::usage::tenant))
        // Learning platform (Authorization: Bearer).
        .route("/api/materials", get(api::materials::list).post(api::materials::upload))
        .route("/api/materials/{id}", delete(api::materials::delete))
        .route("/api/retrieval/query", post(api::retrieval::query))
        .route("/api/learning/overview", get(api::learning::overview))
        .route("/api/learning/heatmap", get(api::learning::heatmap))
        .route("/api/learning/xp", get(api::learning::xp))
        .route("/api/learning/sessions", post(api::learning::record))
        .fallback(|| async {
            no_store(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "no such endpoint", "status": 404 }),
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.metrics.clone(), metrics::record))
        .with_state(app)
}

/// How often [`serve`] refreshes the analytics materialized views by default.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Serves the origin on `listener` until `shutdown` completes; in-flight requests finish
/// first. Every `refresh` it offers to refresh the analytics views (PostgreSQL; a no-op on
/// SQLite): the refresh runs only when no instance of the cluster did in the last 90 % of an
/// interval and none is refreshing, so N instances refresh once an interval, not N times.
pub async fn serve(
    listener: TcpListener,
    app: App,
    refresh: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let db = app.db.clone();
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match db.refresh_views_if_due(refresh.mul_f64(0.9)).await {
                Ok(true) => tracing::debug!("analytics views refreshed"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "analytics views not refreshed"),
            }
        }
    });
    let served = axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await;
    refresher.abort();
    served
}
