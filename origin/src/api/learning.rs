//! A user's learning analytics: overview over N days, a 365-day activity heatmap, and the XP
//! history; SQL aggregations over `learning_activity`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiResult;
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached, invalidating};
use crate::clock::{DAY, date_of_day};
use crate::error::ApiError;
use crate::on_db;

const OVERVIEW: Policy = Policy::per_caller("max-age=60");
const HEATMAP: Policy = Policy::per_caller("max-age=300");
const XP: Policy = Policy::per_caller("max-age=60");
const MAX_DAYS: i64 = 365;
const HEATMAP_DAYS: i64 = 365;

/// Window of the overview and the XP history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaysQuery {
    days: Option<i64>,
}

fn window(query: Result<Query<DaysQuery>, QueryRejection>, default: i64) -> Result<i64, ApiError> {
    let Query(query) = query?;
    let days = query.days.unwrap_or(default);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!("days must be between 1 and {MAX_DAYS}")));
    }
    Ok(days)
}

/// Per-day sums.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DayRow {
    day: i64,
    sessions: i64,
    minutes: i64,
    xp: i64,
}

async fn daily(app: &App, user: User, since: i64) -> Result<Vec<DayRow>, ApiError> {
    Ok(app
        .query("learning.daily", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, DayRow>(
                "SELECT occurred_at / 86400 AS day, count(*) AS sessions, \
                 CAST(sum(minutes) AS BIGINT) AS minutes, CAST(sum(xp) AS BIGINT) AS xp \
                 FROM learning_activity WHERE user_id = $1 AND occurred_at >= $2 GROUP BY 1 ORDER BY 1",
            )
            .bind(user.id)
            .bind(since)
            .fetch_all(pool)
            .await)
        })
        .await?)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct KindRow {
    kind: String,
    sessions: i64,
    minutes: i64,
    xp: i64,
}

#[derive(Serialize)]
struct DayPoint {
    date: String,
    sessions: i64,
    minutes: i64,
    xp: i64,
}

#[derive(Serialize)]
struct Overview {
    user_id: i64,
    days: i64,
    sessions: i64,
    minutes: i64,
    xp: i64,
    active_days: usize,
    /// Consecutive active days ending today (or yesterday), within the window.
    current_streak: i64,
    longest_streak: i64,
    by_kind: Vec<KindRow>,
    daily: Vec<DayPoint>,
}

/// `GET /api/learning/overview?days=N` (default 30).
pub async fn overview(
    State(app): State<App>,
    headers: HeaderMap,
    user: User,
    query: Result<Query<DaysQuery>, QueryRejection>,
) -> ApiResult {
    let days = window(query, 30)?;
    let today = app.clock.today();
    let since = (today - days + 1) * DAY;
    let by_kind = app.query("learning.by_kind", async {
        on_db!(&app.db, pool => sqlx::query_as::<_, KindRow>(
            "SELECT kind, count(*) AS sessions, CAST(sum(minutes) AS BIGINT) AS minutes, CAST(sum(xp) AS BIGINT) AS xp \
             FROM learning_activity WHERE user_id = $1 AND occurred_at >= $2 GROUP BY kind ORDER BY kind",
        )
        .bind(user.id)
        .bind(since)
        .fetch_all(pool)
        .await)
    });
    let (by_kind, rows) =
        tokio::try_join!(async { by_kind.await.map_err(ApiError::from) }, daily(&app, user, since))?;
    let (current_streak, longest_streak) = streaks(&rows, today);
    let answer = Overview {
        user_id: user.id,
        days,
        sessions: rows.iter().map(|r| r.sessions).sum(),
        minutes: rows.iter().map(|r| r.minutes).sum(),
        xp: rows.iter().map(|r| r.xp).sum(),
        active_days: rows.len(),
        current_streak,
        longest_streak,
        by_kind,
        daily: rows
            .iter()
            .map(|r| DayPoint {
                date: date_of_day(r.day),
                sessions: r.sessions,
                minutes: r.minutes,
                xp: r.xp,
            })
            .collect(),
    };
    Ok(cached(&headers, OVERVIEW, &[user.learning_tag()], &answer))
}

/// The current streak (ending today, or yesterday when today has no activity yet) and the
/// longest, from active days in ascending order.
fn streaks(rows: &[DayRow], today: i64) -> (i64, i64) {
    let mut longest = 0;
    let mut run = 0;
    let mut previous = None;
    for row in rows {
        run = if previous == Some(row.day - 1) { run + 1 } else { 1 };
        longest = longest.max(run);
        previous = Some(row.day);
    }
    let current = match previous {
        Some(last) if last >= today - 1 => run,
        _ => 0,
    };
    (current, longest)
}

#[derive(Serialize)]
struct HeatCell {
    date: String,
    sessions: i64,
    minutes: i64,
    /// 0 (nothing) to 4 (the busiest quarter of active days).
    level: u8,
}

#[derive(Serialize)]
struct Heatmap {
    user_id: i64,
    from: String,
    to: String,
    active_days: usize,
    days: Vec<HeatCell>,
}

/// `GET /api/learning/heatmap`: every one of the last 365 days, with a 0–4 intensity level
/// from the quartiles of active days' minutes.
pub async fn heatmap(State(app): State<App>, headers: HeaderMap, user: User) -> ApiResult {
    let today = app.clock.today();
    let first = today - HEATMAP_DAYS + 1;
    let rows = daily(&app, user, first * DAY).await?;
    let mut minutes: Vec<i64> = rows.iter().map(|r| r.minutes).collect();
    minutes.sort_unstable();
    let quartile = |q: usize| minutes.get((minutes.len().saturating_sub(1)) * q / 4).copied().unwrap_or(0);
    let (q1, q2, q3) = (quartile(1), quartile(2), quartile(3));
    let mut by_day = rows.iter().peekable();
    let mut days = Vec::with_capacity(HEATMAP_DAYS as usize);
    for day in first..=today {
        let row = by_day.next_if(|r| r.day == day);
        let (sessions, minutes) = row.map_or((0, 0), |r| (r.sessions, r.minutes));
        let level = match row {
            None => 0,
            Some(_) if minutes <= q1 => 1,
            Some(_) if minutes <= q2 => 2,
            Some(_) if minutes <= q3 => 3,
            Some(_) => 4,
        };
        days.push(HeatCell { date: date_of_day(day), sessions, minutes, level });
    }
    let answer = Heatmap {
        user_id: user.id,
        from: date_of_day(first),
        to: date_of_day(today),
        active_days: rows.len(),
        days,
    };
    Ok(cached(&headers, HEATMAP, &[user.learning_tag()], &answer))
}

#[derive(Serialize)]
struct XpPoint {
    date: String,
    xp: i64,
    total: i64,
}

#[derive(Serialize)]
struct XpHistory {
    user_id: i64,
    days: i64,
    total_xp: i64,
    /// `floor(sqrt(total_xp / 100))`.
    level: i64,
    history: Vec<XpPoint>,
}

/// `GET /api/learning/xp?days=N` (default 90): XP per active day with the running total.
pub async fn xp(
    State(app): State<App>,
    headers: HeaderMap,
    user: User,
    query: Result<Query<DaysQuery>, QueryRejection>,
) -> ApiResult {
    let days = window(query, 90)?;
    let since = (app.clock.today() - days + 1) * DAY;
    let before = app.query("learning.xp_before", async {
        on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COALESCE(sum(xp), 0) AS BIGINT) FROM learning_activity WHERE user_id = $1 AND occurred_at < $2",
        )
        .bind(user.id)
        .bind(since)
        .fetch_one(pool)
        .await)
    });
    let (before, rows) =
        tokio::try_join!(async { before.await.map_err(ApiError::from) }, daily(&app, user, since))?;
    let mut total = before;
    let history = rows
        .iter()
        .map(|r| {
            total += r.xp;
            XpPoint { date: date_of_day(r.day), xp: r.xp, total }
        })
        .collect();
    let level = ((total as f64 / 100.0).sqrt()).floor() as i64;
    Ok(cached(
        &headers,
        XP,
        &[user.learning_tag()],
        &XpHistory { user_id: user.id, days, total_xp: total, level, history },
    ))
}

/// Kinds of learning session.
pub const KINDS: [&str; 5] = ["lesson", "quiz", "flashcards", "reading", "practice"];
/// Longest session, in minutes.
const MAX_MINUTES: i64 = 600;
/// Most XP one session earns.
const MAX_XP: i64 = 10_000;

/// Body of `POST /api/learning/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// One of [`KINDS`].
    kind: String,
    /// Minutes spent, 1..=600.
    minutes: i64,
    /// XP earned, 0..=10,000 (default: 10 per minute).
    xp: Option<i64>,
    /// When it happened, unix seconds, within the last 365 days (default: now).
    occurred_at: Option<i64>,
}

#[derive(Serialize)]
struct RecordedSession {
    id: i64,
    kind: String,
    minutes: i64,
    xp: i64,
    occurred_at: i64,
}

/// `POST /api/learning/sessions`: records one of the caller's learning sessions (201); the
/// answer names `learning:user:{id}`, which every analytics answer of the caller carries.
pub async fn record(
    State(app): State<App>,
    user: User,
    body: Result<axum::Json<NewSession>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    if !KINDS.contains(&body.kind.as_str()) {
        return Err(ApiError::unprocessable(format!("kind must be one of {}", KINDS.join(", "))));
    }
    if !(1..=MAX_MINUTES).contains(&body.minutes) {
        return Err(ApiError::unprocessable(format!("minutes must be between 1 and {MAX_MINUTES}")));
    }
    let xp = body.xp.unwrap_or(body.minutes * 10);
    if !(0..=MAX_XP).contains(&xp) {
        return Err(ApiError::unprocessable(format!("xp must be between 0 and {MAX_XP}")));
    }
    let now = app.clock.now();
    let occurred_at = body.occurred_at.unwrap_or(now);
    let earliest = now.saturating_sub(HEATMAP_DAYS * DAY);
    if !(earliest..=now).contains(&occurred_at) {
        return Err(ApiError::unprocessable("occurred_at must be within the last 365 days"));
    }
    let id = app
        .query("learning.insert", async {
            on_db!(&app.db, pool => sqlx::query_scalar::<_, i64>(
                "INSERT INTO learning_activity (user_id, kind, minutes, xp, occurred_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(user.id)
            .bind(&body.kind)
            .bind(body.minutes)
            .bind(xp)
            .bind(occurred_at)
            .fetch_one(pool)
            .await)
        })
        .await?;
    let answer = RecordedSession { id, kind: body.kind, minutes: body.minutes, xp, occurred_at };
    Ok(invalidating(StatusCode::CREATED, &[user.learning_tag()], &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(days: &[i64]) -> Vec<DayRow> {
        days.iter().map(|&day| DayRow { day, sessions: 1, minutes: 10, xp: 5 }).collect()
    }

    #[test]
    fn streaks_count_consecutive_days() {
        assert_eq!(streaks(&rows(&[1, 2, 3, 7, 8]), 8), (2, 3));
        assert_eq!(streaks(&rows(&[1, 2, 3, 7, 8]), 9), (2, 3));
        assert_eq!(streaks(&rows(&[1, 2, 3]), 10), (0, 3));
        assert_eq!(streaks(&[], 10), (0, 0));
    }
}
