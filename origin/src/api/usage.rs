//! `GET /api/tenants/{tenant_id}/usage?days=`: a tenant's API usage analytics.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::ApiResult;
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached};
use crate::clock::{DAY, date_of_day};
use crate::error::ApiError;
use crate::model::scoring::round2;
use crate::on_db;

const POLICY: Policy = Policy::per_caller("max-age=60");
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
    /// Requests of a second or more (summed into the totals).
    #[serde(skip)]
    slow: i64,
    #[serde(skip)]
    total_ms: f64,
    #[serde(skip)]
    max_ms: f64,
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
/// Only the caller's own tenant: another tenant's id is a 403.
pub async fn tenant(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult {
    let (Path(tenant_id), Query(query)) = (id?, query?);
    user.check_tenant(tenant_id)?;
    let days = query.days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!("days must be between 1 and {MAX_DAYS}")));
    }
    let since = (app.clock.today() - days + 1) * DAY;
    // From the daily rollup (`usage_daily`): the days, and summed, the totals.
    let first_day = since / DAY;
    let daily = app.query("usage.daily", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, Day>(
            "SELECT day, CAST(sum(requests) AS BIGINT) AS requests, CAST(sum(errors) AS BIGINT) AS errors, \
             CAST(sum(slow) AS BIGINT) AS slow, sum(total_ms) / CAST(sum(requests) AS DOUBLE PRECISION) AS avg_ms, \
             sum(total_ms) AS total_ms, max(max_ms) AS max_ms \
             FROM usage_daily WHERE tenant_id = $1 AND day >= $2 GROUP BY day ORDER BY day",
        )
        .bind(tenant_id)
        .bind(first_day)
        .fetch_all(pool)
        .await)
    });
    let top = app.query("usage.top_endpoints", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, Endpoint>(
            "SELECT endpoint, CAST(sum(requests) AS BIGINT) AS requests, \
             sum(total_ms) / CAST(sum(requests) AS DOUBLE PRECISION) AS avg_ms \
             FROM usage_daily WHERE tenant_id = $1 AND day >= $2 \
             GROUP BY endpoint ORDER BY requests DESC, endpoint LIMIT 10",
        )
        .bind(tenant_id)
        .bind(first_day)
        .fetch_all(pool)
        .await)
    });
    let (mut daily, mut top_endpoints) = tokio::try_join!(daily, top)?;
    let requests: i64 = daily.iter().map(|d| d.requests).sum();
    let failed: i64 = daily.iter().map(|d| d.errors).sum();
    let slow: i64 = daily.iter().map(|d| d.slow).sum();
    let total_ms: f64 = daily.iter().map(|d| d.total_ms).sum();
    let avg_ms = if requests == 0 { 0.0 } else { total_ms / requests as f64 };
    let max_ms = daily.iter().map(|d| d.max_ms).fold(0.0, f64::max);
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
