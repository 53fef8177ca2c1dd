//! `GET /health` (the database answers) and `GET /metrics`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::caching::no_store;
use crate::on_db;

/// 200 `{"status":"ok"}` when the database answers `SELECT 1`, else 503.
pub async fn check(State(app): State<App>) -> Response {
    let ping = app
        .query("health.ping", async {
            on_db!(&app.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
        })
        .await;
    match ping {
        Ok(_) => no_store(StatusCode::OK, &json!({ "status": "ok", "database": app.db.backend() })),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            no_store(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "unavailable", "database": app.db.backend() }),
            )
        }
    }
}

/// The Prometheus exposition (OpenMetrics text).
pub async fn metrics(State(app): State<App>) -> Response {
    let body = app.metrics.render(&app.db);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
