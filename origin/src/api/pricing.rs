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
use crate::auth::User;
use crate::caching::{Policy, cached, fnv1a, invalidating};
use crate::clock::DAY;
use crate::error::ApiError;
use crate::model::price::{self, PricePoint, Quote};
use crate::model::scoring::round2;
use crate::on_db;

const QUOTE: Policy = Policy::per_caller("max-age=300").with_etag();
const ANALYTICS: Policy = Policy::per_caller("max-age=300");

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

/// Contact `id` of the caller's tenant, or 404 (also for another tenant's contact).
async fn contact(app: &App, user: User, id: i64) -> Result<Contact, ApiError> {
    let contact = app
        .query("contacts.by_id", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Contact>("SELECT id, location FROM contacts WHERE id = $1 AND tenant_id = $2")
                .bind(id)
                .bind(user.tenant_id)
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

/// The cache tag of everything computed from contact `id`'s prices (its quotes, the forecasts
/// of its leads).
pub fn contact_tag(id: i64) -> String {
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
    user: User,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<QuoteQuery>, QueryRejection>,
) -> ApiResult {
    let (Path(id), Query(query)) = (id?, query?);
    if let Some(location) = &query.location {
        check_location(location).map_err(ApiError::bad_request)?;
    }
    let contact = contact(&app, user, id).await?;
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
    let tags = [contact_tag(contact.id)];
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

/// Longest `Idempotency-Key`, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The request key of a price write: the client's `Idempotency-Key` (1-128 visible ASCII
/// characters), or else one derived from what the write says and the UTC day, so that the
/// same PUT repeated that day (a retry after a lost answer, a proxy failing over) finds the
/// row it wrote. Derived keys start with `auto:`, clients' with `key:`, so they never meet.
fn request_key(headers: &HeaderMap, point: &Point, day: i64) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    ))
                })?;
            Ok(format!("key:{key}"))
        }
        None => {
            let text =
                format!("{}|{}|{}|{}|{day}", point.location, point.price, point.demand, point.converted);
            Ok(format!("auto:{:016x}", fnv1a(text.as_bytes())))
        }
    }
}

/// What a price write records.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Point {
    location: String,
    price: f64,
    demand: f64,
    converted: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct StoredPoint {
    id: i64,
    #[sqlx(flatten)]
    point: Point,
    recorded_at: i64,
}

/// `PUT /api/pricing/{contact_id}`: records a price point for a contact of the caller's tenant
/// (201), once per request key: a repeated PUT answers 200 with the row the first one wrote,
/// and the same invalidation header, so a retry neither adds a row nor loses a purge. The same
/// `Idempotency-Key` with a different body is a 422.
pub async fn record(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
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
    let contact = contact(&app, user, id).await?;
    let point = Point {
        location: body.location.unwrap_or(contact.location),
        price: round2(body.price),
        demand,
        converted: body.converted.unwrap_or(false),
    };
    let recorded_at = app.clock.now();
    let key = request_key(&headers, &point, recorded_at.div_euclid(DAY))?;
    let inserted = app
        .query("pricing.insert", async {
            on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
                "INSERT INTO pricing_history (contact_id, location, price, demand, converted, recorded_at, request_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (contact_id, request_key) DO NOTHING RETURNING id",
            )
            .bind(id)
            .bind(&point.location)
            .bind(point.price)
            .bind(point.demand)
            .bind(point.converted)
            .bind(recorded_at)
            .bind(&key)
            .fetch_optional(pool)
            .await)
        })
        .await?;
    let invalidates = [contact_tag(id), user.pricing_analytics_tag()];
    let (status, stored) = match inserted {
        Some(new_id) => (StatusCode::CREATED, StoredPoint { id: new_id, point, recorded_at }),
        None => {
            let earlier = app
                .query("pricing.by_request_key", async {
                    on_db!(&app.db, pool => sqlx::query_as::<_, StoredPoint>(
                        "SELECT id, location, price, demand, converted, recorded_at FROM pricing_history \
                         WHERE contact_id = $1 AND request_key = $2",
                    )
                    .bind(id)
                    .bind(&key)
                    .fetch_one(pool)
                    .await)
                })
                .await?;
            if earlier.point != point {
                return Err(ApiError::unprocessable("Idempotency-Key already used with a different body"));
            }
            (StatusCode::OK, earlier)
        }
    };
    let StoredPoint { id: point_id, point: Point { location, price, demand, converted }, recorded_at } =
        stored;
    let answer =
        RecordedPrice { id: point_id, contact_id: id, location, price, demand, converted, recorded_at };
    Ok(invalidating(status, &invalidates, &answer))
}

/// Range of the analytics, unix seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// The analytics range `[from, to)`: `to` defaults to `now`, `from` to 7 days before `to`;
/// `from` must be before `to`, at most 366 days before. Client-supplied, so every step is
/// checked: `to - from` of extreme values overflows rather than wrapping past the cap.
fn range(from: Option<i64>, to: Option<i64>, now: i64) -> Result<(i64, i64), &'static str> {
    let to = to.unwrap_or(now);
    let from = match from {
        Some(from) => from,
        None => to.checked_sub(DEFAULT_RANGE).ok_or("to is too early")?,
    };
    if from >= to {
        return Err("from must be before to");
    }
    match to.checked_sub(from) {
        Some(span) if span <= MAX_RANGE => Ok((from, to)),
        _ => Err("the range may span at most 366 days"),
    }
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

/// `GET /api/pricing/analytics?from=&to=`: the caller's tenant's hourly pricing performance over `[from, to)` (unix
/// seconds; default the last 7 days), from the `pricing_hourly_performance` view, which
/// PostgreSQL materializes and the origin refreshes on a schedule.
pub async fn analytics(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query?;
    let (from, to) = range(query.from, query.to, app.clock.now()).map_err(ApiError::unprocessable)?;
    let hours = app
        .query("pricing.analytics", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, HourRow>(
                "SELECT hour, location, points, avg_price, min_price, max_price, conversions \
                 FROM pricing_hourly_performance WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, location",
            )
            .bind(user.tenant_id)
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
    Ok(cached(&headers, ANALYTICS, &[user.pricing_analytics_tag()], &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_without_wrapping() {
        assert_eq!(range(None, None, 10 * DAY), Ok((3 * DAY, 10 * DAY)));
        assert_eq!(range(Some(0), Some(366 * DAY), 0), Ok((0, 366 * DAY)));
        assert!(range(Some(0), Some(366 * DAY + 1), 0).is_err());
        assert!(range(Some(5), Some(5), 0).is_err());
        assert!(range(Some(i64::MIN), Some(i64::MAX), 0).is_err(), "to - from overflows");
        assert!(range(None, Some(i64::MIN + 1), 0).is_err(), "to - 7 days overflows");
    }
}
