//! Dynamic pricing: today's price for a contact, recording a new price point, and hourly
//! pricing analytics from the materialized view.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiResult;
use crate::app::App;
use crate::caching::{Policy, cached, invalidating};
use crate::clock::DAY;
use crate::error::ApiError;
use crate::model::price::{self, PricePoint, Quote};
use crate::model::scoring::round2;
use crate::on_db;

const QUOTE: Policy = Policy::public("public, max-age=300").with_etag();
const ANALYTICS: Policy = Policy::public("public, max-age=300");

/// Price points a quote rests on, newest first.
const QUOTE_POINTS: i64 = 50;
/// Longest analytics range, in seconds.
const MAX_RANGE: i64 = 366 * DAY;
/// Analytics range when `from` is not given, in seconds before `to`.
const DEFAULT_RANGE: i64 = 7 * DAY;

#[derive(Debug, sqlx::FromRow)]
struct Contact {
    id: i64,
    location: String,
}

async fn contact(app: &App, id: i64) -> Result<Contact, ApiError> {
    let contact = app
        .query("contacts.by_id", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Contact>("SELECT id, location FROM contacts WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await)
        })
        .await?;
    contact.ok_or(ApiError::NotFound { what: "contact", id })
}

/// A location name: lower-case letters, digits and `-`, at most 64 characters.
fn check_location(location: &str) -> Result<(), &'static str> {
    let ok = !location.is_empty()
        && location.len() <= 64
        && location.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err("location must be 1-64 characters of a-z, 0-9 and -") }
}

fn contact_tag(id: i64) -> String {
    format!("pricing:contact:{id}")
}

/// Query of the quote.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    location: Option<String>,
}

#[derive(Serialize)]
struct PriceAnswer {
    contact_id: i64,
    location: String,
    #[serde(flatten)]
    quote: Quote,
}

/// `GET /api/pricing/{contact_id}?location=`: the price for the contact at the location
/// (default: the contact's own), from its history there, else from its history elsewhere
/// scaled by the locations' price levels, else the list price.
pub async fn quote(
    State(app): State<App>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<QuoteQuery>, QueryRejection>,
) -> ApiResult {
    let (Path(id), Query(query)) = (id?, query?);
    if let Some(location) = &query.location {
        check_location(location).map_err(ApiError::bad_request)?;
    }
    let contact = contact(&app, id).await?;
    let location = query.location.unwrap_or_else(|| contact.location.clone());
    let here = app
        .query("pricing.history_by_location", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, PricePoint>(
                "SELECT price, demand, converted, recorded_at FROM pricing_history \
                 WHERE contact_id = $1 AND location = $2 ORDER BY recorded_at DESC LIMIT $3",
            )
            .bind(id)
            .bind(&location)
            .bind(QUOTE_POINTS)
            .fetch_all(pool)
            .await)
        })
        .await?;
    let quote = if here.is_empty() {
        let elsewhere = app
            .query("pricing.history_by_contact", async {
                on_db!(&app.db, pool => sqlx::query_as::<_, PricePoint>(
                    "SELECT price, demand, converted, recorded_at FROM pricing_history \
                     WHERE contact_id = $1 ORDER BY recorded_at DESC LIMIT $2",
                )
                .bind(id)
                .bind(QUOTE_POINTS)
                .fetch_all(pool)
                .await)
            })
            .await?;
        let scale = if elsewhere.is_empty() {
            price::location_factor(&location)
        } else {
            price::location_factor(&location) / price::location_factor(&contact.location)
        };
        price::quote(&elsewhere, scale)
    } else {
        price::quote(&here, 1.0)
    };
    let tags = ["pricing".to_owned(), contact_tag(contact.id)];
    Ok(cached(&headers, QUOTE, &tags, &PriceAnswer { contact_id: contact.id, location, quote }))
}

/// Body of `PUT /api/pricing/{contact_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    /// The price offered, in dollars (positive).
    price: f64,
    /// Where (default: the contact's location).
    location: Option<String>,
    /// The demand index (default 1.0).
    demand: Option<f64>,
    /// Whether it converted (default false).
    converted: Option<bool>,
}

#[derive(Serialize)]
struct RecordedPrice {
    id: i64,
    contact_id: i64,
    location: String,
    price: f64,
    demand: f64,
    converted: bool,
    recorded_at: i64,
}

/// `PUT /api/pricing/{contact_id}`: records a price point; invalidates the contact's prices.
pub async fn record(
    State(app): State<App>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<NewPrice>, JsonRejection>,
) -> ApiResult {
    let (Path(id), Json(body)) = (id?, body?);
    if !body.price.is_finite() || body.price <= 0.0 || body.price > 10_000_000.0 {
        return Err(ApiError::unprocessable("price must be a positive number of dollars up to 10,000,000"));
    }
    let demand = body.demand.unwrap_or(1.0);
    if !demand.is_finite() || !(0.0..=10.0).contains(&demand) {
        return Err(ApiError::unprocessable("demand must be between 0 and 10"));
    }
    if let Some(location) = &body.location {
        check_location(location).map_err(ApiError::unprocessable)?;
    }
    let contact = contact(&app, id).await?;
    let location = body.location.unwrap_or(contact.location);
    let converted = body.converted.unwrap_or(false);
    let recorded_at = app.clock.now();
    let price = round2(body.price);
    let new_id = app
        .query("pricing.insert", async {
            on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
                "INSERT INTO pricing_history (contact_id, location, price, demand, converted, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(id)
            .bind(&location)
            .bind(price)
            .bind(demand)
            .bind(converted)
            .bind(recorded_at)
            .fetch_one(pool)
            .await)
        })
        .await?;
    let answer =
        RecordedPrice { id: new_id, contact_id: id, location, price, demand, converted, recorded_at };
    Ok(invalidating(StatusCode::CREATED, &[contact_tag(id)], &answer))
}

/// Range of the analytics, unix seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// One row of `pricing_hourly_performance`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct HourRow {
    hour: i64,
    location: String,
    points: i64,
    avg_price: f64,
    min_price: f64,
    max_price: f64,
    conversions: i64,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    points: i64,
    conversions: i64,
    conversion_rate: f64,
    avg_price: f64,
    min_price: Option<f64>,
    max_price: Option<f64>,
}

impl Summary {
    fn add(&mut self, row: &HourRow) {
        let total = self.avg_price * self.points as f64 + row.avg_price * row.points as f64;
        self.points += row.points;
        self.conversions += row.conversions;
        self.avg_price = if self.points == 0 { 0.0 } else { total / self.points as f64 };
        self.min_price = Some(self.min_price.map_or(row.min_price, |m| m.min(row.min_price)));
        self.max_price = Some(self.max_price.map_or(row.max_price, |m| m.max(row.max_price)));
    }

    fn finish(mut self) -> Self {
        self.avg_price = round2(self.avg_price);
        self.conversion_rate =
            if self.points == 0 { 0.0 } else { round2(self.conversions as f64 / self.points as f64) };
        self
    }
}

#[derive(Serialize)]
struct Analytics {
    from: i64,
    to: i64,
    total: Summary,
    by_location: BTreeMap<String, Summary>,
    hours: Vec<HourRow>,
}

/// `GET /api/pricing/analytics?from=&to=`: hourly pricing performance over `[from, to)` (unix
/// seconds; default the last 7 days), from the `pricing_hourly_performance` view, which
/// PostgreSQL materializes and the origin refreshes on a schedule.
pub async fn analytics(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query?;
    let to = query.to.unwrap_or_else(|| app.clock.now());
    let from = query.from.unwrap_or(to - DEFAULT_RANGE);
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    if to - from > MAX_RANGE {
        return Err(ApiError::bad_request("the range may span at most 366 days"));
    }
    let hours = app
        .query("pricing.analytics", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, HourRow>(
                "SELECT hour, location, points, avg_price, min_price, max_price, conversions \
                 FROM pricing_hourly_performance WHERE hour >= $1 AND hour < $2 ORDER BY hour, location",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await)
        })
        .await?;
    let mut total = Summary::default();
    let mut by_location: BTreeMap<String, Summary> = BTreeMap::new();
    for row in &hours {
        total.add(row);
        by_location.entry(row.location.clone()).or_default().add(row);
    }
    let by_location = by_location.into_iter().map(|(k, v)| (k, v.finish())).collect();
    let answer = Analytics { from, to, total: total.finish(), by_location, hours };
    Ok(cached(&headers, ANALYTICS, &["pricing".to_owned()], &answer))
}
