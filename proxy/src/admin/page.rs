//! The insight routes of the admin listener: the status page and its assets (embedded in the
//! binary: the page works with no network but the admin listener), the history it draws, and
//! `/health/summary`. They read like `/status`: no token, the admin listener's own exposure
//! is the access control.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::insight::advice::{self, Advice};
use crate::insight::health::{self, Health};
use crate::insight::latency::Latency;
use crate::insight::snapshot::{Interval, RouteCounters, Snapshot};
use crate::insight::{HEALTH_WINDOW, HISTORY, RoutePolicy};
use crate::proxy::Proxy;
use crate::route::slo::Slo;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How far back the page's table looks: recent enough to be "now", long enough for a
/// quantile.
const TABLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The routes: `/`, `/insight/app.js`, `/insight/app.css`, `/insight/history`,
/// `/health/summary`.
pub fn router() -> Router<Arc<Proxy>> {
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) }))
        .route(
            "/insight/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }),
        )
        .route(
            "/insight/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
        .route("/insight/history", get(history))
        .route("/health/summary", get(summary))
}

/// `/health/summary`: the health of the last five minutes, and the advice of the last fifteen.
pub async fn summary(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let now = snapshot(&proxy);
    let policies = RoutePolicy::of(&proxy.pipeline.running.load().routes);
    let recent = over(&proxy, &now, HEALTH_WINDOW);
    let Health { status, health_score, factors } = health::score(&recent, &policies);
    let recommendations = advice::advise(&over(&proxy, &now, HISTORY), &policies);
    axum::Json(json!({
        "status": status,
        "health_score": health_score,
        "factors": factors,
        "metrics_summary": metrics_summary(&recent),
        "recommendations": recommendations,
    }))
}

/// What happened from the oldest snapshot within `window` to `now`.
fn over(proxy: &Proxy, now: &Snapshot, window: std::time::Duration) -> Interval {
    match proxy.insight.baseline(now.at_ms, window) {
        Some(base) => now.since(&base),
        None => now.since(&Snapshot::read(now.at_ms, "", Vec::new(), false)),
    }
}

fn seconds_ms(seconds: Option<f64>) -> Value {
    seconds.map_or(Value::Null, |s| json!((s * 1e5).round() / 100.0))
}

fn metrics_summary(interval: &Interval) -> Value {
    let total = interval.total();
    let latency = interval.total_with_latency().latency;
    let healthy = interval.endpoints.iter().filter(|e| e.state == "healthy").count();
    json!({
        "window_seconds": interval.seconds.round(),
        "requests": total.requests,
        "requests_per_second": round2(total.rate(interval.seconds)),
        "hit_rate": total.hit_rate().map(round4),
        "p50_ms": seconds_ms(latency.quantile(0.5)),
        "p95_ms": seconds_ms(latency.quantile(0.95)),
        "p99_ms": seconds_ms(latency.quantile(0.99)),
        "error_ratio": total.error_ratio().map(round4),
        "errors_5xx": total.errors,
        "refused": total.refused,
        "cache_entries": interval.cache.entries,
        "cache_bytes": interval.cache.bytes,
        "endpoints_healthy": healthy,
        "endpoints": interval.endpoints.len(),
        "redis": interval.redis.as_str(),
        "reloads": { "success": interval.reloads.0, "error": interval.reloads.1 },
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Every route together over the page's table window.
fn minute(table: &Interval) -> Value {
    let total = table.total_with_latency();
    json!({
        "rps": round2(total.rate(table.seconds)),
        "hit_rate": total.hit_rate().map(round4),
        "p50_ms": seconds_ms(total.latency.quantile(0.5)),
        "p95_ms": seconds_ms(total.latency.quantile(0.95)),
        "p99_ms": seconds_ms(total.latency.quantile(0.99)),
        "errors": total.errors,
        "refused": total.refused,
    })
}

/// One plotted point of a route (or of all routes together).
fn point(route: &RouteCounters, seconds: f64) -> [Value; 5] {
    [
        json!(round2(route.rate(seconds))),
        route.hit_rate().map_or(Value::Null, |r| json!(round4(r))),
        seconds_ms(route.latency.quantile(0.95)),
        json!(route.errors),
        json!(route.refused),
    ]
}

/// `/insight/history`: what the page draws — per route the last minute and its req/s per
/// snapshot interval of the last 15 minutes; every route together per interval; endpoints;
/// the tier; reloads; health and advice.
pub async fn history(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let now = snapshot(&proxy);
    let policies = RoutePolicy::of(&proxy.pipeline.running.load().routes);
    let mut snapshots = proxy.insight.history();
    snapshots.push(Arc::new(now.clone()));
    let intervals: Vec<Interval> = snapshots.windows(2).map(|pair| pair[1].since(&pair[0])).collect();
    let times: Vec<u64> = snapshots.iter().skip(1).map(|s| s.at_ms).collect();
    let table = over(&proxy, &now, TABLE_WINDOW);
    let recent = over(&proxy, &now, HEALTH_WINDOW);
    let health = health::score(&recent, &policies);
    let recommendations: Vec<Advice> = advice::advise(&over(&proxy, &now, HISTORY), &policies);

    let series = |select: &dyn Fn(&Interval) -> Option<RouteCounters>| -> Value {
        let mut columns: [Vec<Value>; 5] = Default::default();
        for interval in &intervals {
            let counters = select(interval).unwrap_or_default();
            for (column, value) in columns.iter_mut().zip(point(&counters, interval.seconds)) {
                column.push(value);
            }
        }
        let [rps, hit_rate, p95_ms, errors, refused] = columns;
        json!({ "rps": rps, "hit_rate": hit_rate, "p95_ms": p95_ms, "errors": errors, "refused": refused })
    };
    let routes: Vec<Value> = {
        let running = proxy.pipeline.running.load();
        let table_routes = &running.routes;
        table_routes
            .routes()
            .iter()
            .map(|route| {
                let name = route.rule.name.as_str();
                let counters = table.routes.get(name).cloned().unwrap_or_default();
                let latency: &Latency = &counters.latency;
                let [rps, hit_rate, p95_ms, errors, refused] = point(&counters, table.seconds);
                json!({
                    "name": name,
                    "upstream": route.rule.upstream.as_str(),
                    "caches": route.rule.cache.rule.is_some(),
                    "rps": rps,
                    "hit_rate": hit_rate,
                    "p50_ms": seconds_ms(latency.quantile(0.5)),
                    "p95_ms": p95_ms,
                    "p99_ms": seconds_ms(latency.quantile(0.99)),
                    "errors": errors,
                    "refused": refused,
                    "requests": counters.requests,
                    "slo": {
                        "p95_ms": route.rule.slo.p95.as_secs_f64() * 1000.0,
                        "hit_rate": route.rule.slo.hit_rate,
                    },
                    // One series per route keeps the document small at hundreds of routes.
                    "series": {
                        "rps": intervals
                            .iter()
                            .map(|i| round2(i.routes.get(name).map_or(0.0, |r| r.rate(i.seconds))))
                            .collect::<Vec<f64>>(),
                    },
                })
            })
            .collect()
    };
    let endpoints: Vec<Value> = table
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "upstream": e.upstream, "endpoint": e.endpoint, "state": e.state, "in_flight": e.in_flight,
                "tries": e.tries, "failures": e.failures,
                "p50_ms": seconds_ms(e.latency.quantile(0.5)), "p95_ms": seconds_ms(e.latency.quantile(0.95)),
            })
        })
        .collect();
    let since_start = proxy.insight.history().first().map_or(now.reloads, |first| {
        (now.reloads.0.saturating_sub(first.reloads.0), now.reloads.1.saturating_sub(first.reloads.1))
    });
    axum::Json(json!({
        "now_ms": now.at_ms,
        "interval_seconds": proxy.insight.interval().as_secs_f64(),
        "window_seconds": table.seconds.round(),
        "times": times,
        "totals": series(&|i: &Interval| Some(i.total_with_latency())),
        "minute": minute(&table),
        "platform_slo": { "p95_ms": Slo::PLATFORM.p95.as_secs_f64() * 1000.0, "hit_rate": Slo::PLATFORM.hit_rate },
        "routes": routes,
        "endpoints": endpoints,
        "cache": { "entries": now.cache.entries, "bytes": now.cache.bytes },
        "redis": now.redis.as_str(),
        "reloads": { "success": now.reloads.0, "error": now.reloads.1, "in_history": { "success": since_start.0, "error": since_start.1 } },
        "health": { "status": health.status, "health_score": health.health_score, "factors": health.factors },
        "recommendations": recommendations,
    }))
}

/// Reads every counter of `proxy` now.
pub fn snapshot(proxy: &Proxy) -> Snapshot {
    crate::insight::take(&proxy.upstreams(), &proxy.metrics, proxy.redis.is_some())
}
