//! `GET /api/predictions/{lead_id}`: the predictive score and insights (the heavy endpoint).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::{ApiResult, leads, pricing};
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached};
use crate::model::forecast::{self, Forecast};
use crate::model::price::PricePoint;
use crate::on_db;

const POLICY: Policy = Policy::per_caller("max-age=10");

/// Price points of the lead's contact the forecast looks at, newest first.
const HISTORY_POINTS: i64 = 200;
/// Earlier predictions the trend compares with.
const PREVIOUS_PREDICTIONS: i64 = 10;

#[derive(Serialize)]
struct Prediction {
    lead_id: i64,
    contact_id: i64,
    tier: String,
    forecast: Forecast,
}

/// Forecasts one lead of the caller's tenant from its signals, its contact's price history and
/// earlier predictions; tagged with the lead and the pricing contact it read.
pub async fn one(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    lead_id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let Path(lead_id) = lead_id?;
    let previous = async {
        app.query("predictions.previous", async {
            on_db!(&app.db, pool => sqlx::query_scalar::<_, f64>(
                "SELECT score FROM predictions WHERE lead_id = $1 ORDER BY predicted_at DESC LIMIT $2",
            )
            .bind(lead_id)
            .bind(PREVIOUS_PREDICTIONS)
            .fetch_all(pool)
            .await)
        })
        .await
        .map_err(Into::into)
    };
    let (lead, previous) = tokio::try_join!(leads::load(&app, user, lead_id), previous)?;
    let history = app
        .query("pricing.history_by_contact", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, PricePoint>(
                "SELECT price, demand, converted, recorded_at FROM pricing_history \
                 WHERE contact_id = $1 ORDER BY recorded_at DESC LIMIT $2",
            )
            .bind(lead.contact_id)
            .bind(HISTORY_POINTS)
            .fetch_all(pool)
            .await)
        })
        .await?;
    let signals = lead.signals.0.clone();
    let forecast =
        app.compute.run(move || forecast::forecast(lead_id, &signals, &history, &previous)).await?;
    let tags = [
        format!("lead:{lead_id}"),
        format!("predictions:lead:{lead_id}"),
        pricing::contact_tag(lead.contact_id),
    ];
    let answer = Prediction { lead_id, contact_id: lead.contact_id, tier: lead.tier, forecast };
    Ok(cached(&headers, POLICY, &tags, &answer))
}
