//! Golden leads: the filtered list, one lead, and detection from signals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use super::ApiResult;
use crate::app::App;
use crate::caching::{Policy, cached, no_store};
use crate::error::ApiError;
use crate::model::scoring::{self, Signals, Tier};
use crate::on_db;

const LIST: Policy = Policy::public("public, max-age=30");
const ONE: Policy = Policy::public("public, max-age=60").with_etag();

/// Most leads one list answer carries.
pub const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

/// A stored golden lead.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Lead {
    /// The lead's id.
    pub id: i64,
    /// The tenant that owns it.
    pub tenant_id: i64,
    /// The contact behind it.
    pub contact_id: i64,
    /// The company's name.
    pub company: String,
    /// `platinum`, `gold`, `silver` or `bronze`.
    pub tier: String,
    /// Probability of closing at the last analysis.
    pub probability: f64,
    /// Score 0..100 at the last analysis.
    pub score: f64,
    /// The behavioural signals analysed.
    pub signals: DbJson<Signals>,
    /// When it was analysed, unix seconds.
    pub analyzed_at: i64,
}

const LEAD_COLUMNS_BY_ID: &str = "SELECT id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at FROM golden_leads WHERE id = $1";

/// Loads lead `id`, or 404.
pub async fn load(app: &App, id: i64) -> Result<Lead, ApiError> {
    let lead = app
        .query("leads.by_id", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Lead>(LEAD_COLUMNS_BY_ID).bind(id).fetch_optional(pool).await)
        })
        .await?;
    lead.ok_or(ApiError::NotFound { what: "lead", id })
}

/// Filters of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tier: Option<String>,
    min_probability: Option<f64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct LeadList {
    leads: Vec<Lead>,
    count: usize,
}

/// `GET /api/golden-leads?tier=&min_probability=&limit=`: leads by probability, then score.
pub async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query?;
    let tier = match query.tier.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(name) => Some(
            Tier::parse(name)
                .ok_or_else(|| ApiError::bad_request("tier must be platinum, gold, silver or bronze"))?,
        ),
    };
    let min_probability = query.min_probability.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_probability) {
        return Err(ApiError::bad_request("min_probability must be between 0 and 1"));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let leads = app
        .query("leads.list", async {
            match tier {
                Some(tier) => on_db!(&app.db, pool => sqlx::query_as::<_, Lead>(
                    "SELECT id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at \
                     FROM golden_leads WHERE tier = $1 AND probability >= $2 \
                     ORDER BY probability DESC, score DESC, id LIMIT $3",
                )
                .bind(tier.as_str())
                .bind(min_probability)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await),
                None => on_db!(&app.db, pool => sqlx::query_as::<_, Lead>(
                    "SELECT id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at \
                     FROM golden_leads WHERE probability >= $1 \
                     ORDER BY probability DESC, score DESC, id LIMIT $2",
                )
                .bind(min_probability)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await),
            }
        })
        .await?;
    let count = leads.len();
    Ok(cached(&headers, LIST, &["leads".to_owned()], &LeadList { leads, count }))
}

/// `GET /api/golden-leads/{id}`.
pub async fn one(
    State(app): State<App>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let lead = load(&app, id).await?;
    Ok(cached(&headers, ONE, &[format!("lead:{id}")], &lead))
}

/// `POST /api/golden-leads/detect`: scores the signals in the body (nothing is stored).
pub async fn detect(signals: Result<Json<Signals>, JsonRejection>) -> ApiResult {
    let Json(signals) = signals?;
    scoring::validate(&signals).map_err(ApiError::unprocessable)?;
    Ok(no_store(StatusCode::OK, &scoring::detect(&signals)))
}
