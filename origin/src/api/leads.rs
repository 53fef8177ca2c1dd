//! Golden leads: the filtered list, one lead, and detection from signals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use super::ApiResult;
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached, invalidating, no_store};
use crate::error::ApiError;
use crate::model::scoring::{self, Signals, Tier};
use crate::on_db;

const LIST: Policy = Policy::per_caller("max-age=30");
const ONE: Policy = Policy::per_caller("max-age=60").with_etag();

/// The model version recorded with a re-score's prediction.
const SCORING_MODEL: &str = "logit-1";

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

const LEAD_BY_ID: &str = "SELECT id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at \
     FROM golden_leads WHERE id = $1 AND tenant_id = $2";

/// Loads lead `id` of the caller's tenant, or 404 (also for another tenant's lead: its
/// existence is not the caller's business).
pub async fn load(app: &App, user: User, id: i64) -> Result<Lead, ApiError> {
    let lead = app
        .query("leads.by_id", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Lead>(LEAD_BY_ID).bind(id).bind(user.tenant_id).fetch_optional(pool).await)
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

/// `GET /api/golden-leads?tier=&min_probability=&limit=`: the caller's tenant's leads by
/// probability, then score.
pub async fn list(
    State(app): State<App>,
    user: User,
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
                     FROM golden_leads WHERE tenant_id = $1 AND tier = $2 AND probability >= $3 \
                     ORDER BY probability DESC, score DESC, id LIMIT $4",
                )
                .bind(user.tenant_id)
                .bind(tier.as_str())
                .bind(min_probability)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await),
                None => on_db!(&app.db, pool => sqlx::query_as::<_, Lead>(
                    "SELECT id, tenant_id, contact_id, company, tier, probability, score, signals, analyzed_at \
                     FROM golden_leads WHERE tenant_id = $1 AND probability >= $2 \
                     ORDER BY probability DESC, score DESC, id LIMIT $3",
                )
                .bind(user.tenant_id)
                .bind(min_probability)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await),
            }
        })
        .await?;
    let count = leads.len();
    Ok(cached(&headers, LIST, &[user.leads_tag()], &LeadList { leads, count }))
}

/// `GET /api/golden-leads/{id}`: one lead of the caller's tenant.
pub async fn one(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let lead = load(&app, user, id).await?;
    Ok(cached(&headers, ONE, &[format!("lead:{id}")], &lead))
}

/// `POST /api/golden-leads/detect`: scores the signals in the body (nothing is stored; a
/// token is still required, as on every revenue endpoint).
pub async fn detect(_user: User, signals: Result<Json<Signals>, JsonRejection>) -> ApiResult {
    let Json(signals) = signals?;
    scoring::validate(&signals).map_err(ApiError::unprocessable)?;
    Ok(no_store(StatusCode::OK, &scoring::detect(&signals)))
}

#[derive(Serialize)]
struct Rescored {
    id: i64,
    analyzed_at: i64,
    #[serde(flatten)]
    detection: scoring::Detection,
}

/// `POST /api/golden-leads/{id}/score`: re-scores a lead of the caller's tenant from new
/// signals (the body, as for detection), stores the new verdict and a prediction record, and
/// names what changed: the lead, its predictions, and the tenant's list.
pub async fn rescore(
    State(app): State<App>,
    user: User,
    id: Result<Path<i64>, PathRejection>,
    signals: Result<Json<Signals>, JsonRejection>,
) -> ApiResult {
    let (Path(id), Json(signals)) = (id?, signals?);
    scoring::validate(&signals).map_err(ApiError::unprocessable)?;
    let detection = scoring::detect(&signals);
    let analyzed_at = app.clock.now();
    let updated = app
        .query("leads.rescore", async {
            on_db!(&app.db, pool => {
                let mut tx = pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE golden_leads SET signals = $1, tier = $2, probability = $3, score = $4, analyzed_at = $5 \
                     WHERE id = $6 AND tenant_id = $7",
                )
                .bind(DbJson(&signals))
                .bind(detection.tier.as_str())
                .bind(detection.probability)
                .bind(detection.score)
                .bind(analyzed_at)
                .bind(id)
                .bind(user.tenant_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated > 0 {
                    sqlx::query("INSERT INTO predictions (lead_id, score, model_version, predicted_at) VALUES ($1, $2, $3, $4)")
                        .bind(id)
                        .bind(detection.score)
                        .bind(SCORING_MODEL)
                        .bind(analyzed_at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok::<u64, sqlx::Error>(updated)
            })
        })
        .await?;
    if updated == 0 {
        return Err(ApiError::NotFound { what: "lead", id });
    }
    let invalidates = [format!("lead:{id}"), format!("predictions:lead:{id}"), user.leads_tag()];
    Ok(invalidating(StatusCode::OK, &invalidates, &Rescored { id, analyzed_at, detection }))
}
