//! `GET /api/tenants/{tenant_id}/usage?days=`: a tenant's API usage analytics.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::ApiResult;
use crate::app::App;
use crate::caching::{Policy, cached};
use crate::clock::{DAY, date_of_day};
use crate::error::ApiError;
use crate::model::scoring::round2;
use crate::on_db;

const POLICY: Policy = Policy::public("public, max-age=60");
const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 365;

/// Window of the analytics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    days: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Day {
    #[serde(skip)]
    day: i64,
    #[sqlx(skip)]
    date: String,
    requests: i64,
    errors: i64,
    avg_ms: f64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Endpoint {
    endpoint: String,
    requests: i64,
    avg_ms: f64,
}

#[derive(Serialize)]
struct Usage {
    tenant_id: i64,
    days: i64,
    requests: i64,
    failed: i64,
    slow: i64,
    error_rate: f64,
    avg_ms: f64,
    max_ms: f64,
    daily: Vec<Day>,
    top_endpoints: Vec<Endpoint>,
}

/// Totals, slow (≥ 1 s) and failed (5xx) requests (each counted through its partial index), a daily series
/// and the busiest endpoints over the last `days` days.
pub async fn tenant(
    State(app): State<App>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult {
    let (Path(tenant_id), Query(query)) = (id?, query?);
    let days = query.days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!("days must be between 1 and {MAX_DAYS}")));
    }
    let since = (app.clock.today() - days + 1) * DAY;
    let exists = app
        .query("tenants.exists", async {
            on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>("SELECT id FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(pool)
                .await)
        })
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound { what: "tenant", id: tenant_id });
    }
    let totals = app.query("usage.totals", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, (i64, f64, f64)>(
            "SELECT count(*), COALESCE(avg(duration_ms), 0.0), COALESCE(max(duration_ms), 0.0) \
             FROM usage_analytics WHERE tenant_id = $1 AND recorded_at >= $2",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(pool)
        .await)
    });
    let slow = app.query("usage.slow", async {
        on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM usage_analytics WHERE tenant_id = $1 AND recorded_at >= $2 AND duration_ms >= 1000",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(pool)
        .await)
    });
    let failed = app.query("usage.failed", async {
        on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM usage_analytics WHERE tenant_id = $1 AND recorded_at >= $2 AND status >= 500",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(pool)
        .await)
    });
    let daily = app.query("usage.daily", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, Day>(
            "SELECT recorded_at / 86400 AS day, count(*) AS requests, \
             CAST(sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS BIGINT) AS errors, avg(duration_ms) AS avg_ms \
             FROM usage_analytics WHERE tenant_id = $1 AND recorded_at >= $2 GROUP BY 1 ORDER BY 1",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_all(pool)
        .await)
    });
    let top = app.query("usage.top_endpoints", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, Endpoint>(
            "SELECT endpoint, count(*) AS requests, avg(duration_ms) AS avg_ms \
             FROM usage_analytics WHERE tenant_id = $1 AND recorded_at >= $2 \
             GROUP BY endpoint ORDER BY requests DESC, endpoint LIMIT 10",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_all(pool)
        .await)
    });
    let ((requests, avg_ms, max_ms), slow, failed, mut daily, mut top_endpoints) =
        tokio::try_join!(totals, slow, failed, daily, top)?;
    for day in &mut daily {
        day.date = date_of_day(day.day);
        day.avg_ms = round2(day.avg_ms);
    }
    for endpoint in &mut top_endpoints {
        endpoint.avg_ms = round2(endpoint.avg_ms);
    }
    let error_rate = if requests == 0 { 0.0 } else { round2(failed as f64 / requests as f64) };
    let answer = Usage {
        tenant_id,
        days,
        requests,
        failed,
        slow,
        error_rate,
        avg_ms: round2(avg_ms),
        max_ms: round2(max_ms),
        daily,
        top_endpoints,
    };
    Ok(cached(&headers, POLICY, &[format!("usage:tenant:{tenant_id}")], &answer))
}
