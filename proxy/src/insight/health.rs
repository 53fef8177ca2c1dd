//! The health score: `/health/summary`'s `status`, `health_score` (0–100) and the `factors`
//! it is made of, each scored 0–1 from an [`Interval`] against the routes' targets:
//!
//! | factor | weight | score |
//! |---|---|---|
//! | `latency` | 30 | per route `min(1, target / p95)` (and p99), weighted by requests |
//! | `hit_rate` | 20 | per caching route `min(1, hit rate / target)`, weighted by lookups |
//! | `errors` | 25 | `1 − 5xx ratio / 5 %`, floored at 0 |
//! | `upstreams` | 15 | share of endpoints healthy |
//! | `redis` | 10 | 1 up, 0.5 probing, 0 down |
//!
//! A factor without data (no traffic, no caching route, no Redis) does not count. The status
//! is `unhealthy` below 50 or when an upstream has no healthy endpoint, `degraded` below 85 or
//! when one factor scores under 0.5, `healthy` otherwise.

use serde::Serialize;

use super::RoutePolicy;
use super::snapshot::{Interval, RedisState};

/// A 5xx ratio at which the `errors` factor reaches 0.
pub const ERROR_RATIO_LIMIT: f64 = 0.05;

/// `healthy`, `degraded` or `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One part of the score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factor {
    /// `latency`, `hit_rate`, `errors`, `upstreams` or `redis`.
    pub name: &'static str,
    /// 0 (worst) to 1; `None` when there was nothing to measure.
    pub score: Option<f64>,
    /// Its share of the score, among the factors that have one.
    pub weight: u32,
    /// What the score rests on, in words and numbers.
    pub detail: String,
}

/// The score and its factors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub status: Status,
    /// 0–100.
    pub health_score: u32,
    pub factors: Vec<Factor>,
}

/// Scores `interval` against `routes`' targets.
pub fn score(interval: &Interval, routes: &[RoutePolicy]) -> Health {
    let factors = vec![
        latency(interval, routes),
        hit_rate(interval, routes),
        errors(interval),
        upstreams(interval),
        redis(interval),
    ];
    let (weighted, weights) = factors
        .iter()
        .filter_map(|f| f.score.map(|s| (s * f64::from(f.weight), f64::from(f.weight))))
        .fold((0.0, 0.0), |(a, b), (s, w)| (a + s, b + w));
    let health_score = if weights > 0.0 { (100.0 * weighted / weights).round() as u32 } else { 100 };
    let dead_upstream = {
        let mut upstreams: Vec<&str> = interval.endpoints.iter().map(|e| e.upstream.as_str()).collect();
        upstreams.dedup();
        upstreams
            .iter()
            .any(|u| interval.endpoints.iter().filter(|e| e.upstream == *u).all(|e| e.state != "healthy"))
    };
    let weak_factor = factors.iter().any(|f| f.score.is_some_and(|s| s < 0.5));
    let status = if health_score < 50 || dead_upstream {
        Status::Unhealthy
    } else if health_score < 85 || weak_factor {
        Status::Degraded
    } else {
        Status::Healthy
    };
    Health { status, health_score, factors }
}

/// Milliseconds, for messages.
pub fn ms(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

/// A share as a percentage, for messages.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 0.0 && p < 1.0 { format!("{p:.1} %") } else { format!("{p:.0} %") }
}

fn latency(interval: &Interval, routes: &[RoutePolicy]) -> Factor {
    let mut weighted = 0.0;
    let mut requests = 0u64;
    let mut over: Vec<(f64, String)> = Vec::new();
    for policy in routes {
        let Some(route) = interval.routes.get(&policy.name) else { continue };
        let (Some(p95), Some(p99)) = (route.latency.quantile(0.95), route.latency.quantile(0.99)) else {
            continue;
        };
        let target95 = policy.slo.p95.as_secs_f64();
        let target99 = policy.slo.p99.as_secs_f64();
        let score =
            (target95 / p95.max(f64::MIN_POSITIVE)).min(target99 / p99.max(f64::MIN_POSITIVE)).min(1.0);
        let count = route.latency.count();
        weighted += score * count as f64;
        requests += count;
        if p95 > target95 {
            over.push((score, format!("{} p95 {} > {}", policy.name, ms(p95), ms(target95))));
        } else if p99 > target99 {
            over.push((score, format!("{} p99 {} > {}", policy.name, ms(p99), ms(target99))));
        }
    }
    if requests == 0 {
        return Factor { name: "latency", score: None, weight: 30, detail: "no requests".into() };
    }
    over.sort_by(|a, b| a.0.total_cmp(&b.0));
    let detail = match over.first() {
        None => format!("every route within its latency targets ({requests} requests)"),
        Some((_, worst)) => format!("{} route(s) over target; worst: {worst}", over.len()),
    };
    Factor { name: "latency", score: Some(weighted / requests as f64), weight: 30, detail }
}

fn hit_rate(interval: &Interval, routes: &[RoutePolicy]) -> Factor {
    let mut weighted = 0.0;
    let mut lookups = 0u64;
    let mut below: Vec<(f64, String)> = Vec::new();
    for policy in routes.iter().filter(|p| p.caches) {
        let Some(route) = interval.routes.get(&policy.name) else { continue };
        let Some(rate) = route.hit_rate() else { continue };
        let score = (rate / policy.slo.hit_rate.max(f64::MIN_POSITIVE)).min(1.0);
        weighted += score * route.lookups as f64;
        lookups += route.lookups;
        if rate < policy.slo.hit_rate {
            below.push((
                score,
                format!("{} {} < {}", policy.name, percent(rate), percent(policy.slo.hit_rate)),
            ));
        }
    }
    if lookups == 0 {
        return Factor { name: "hit_rate", score: None, weight: 20, detail: "no cache lookups".into() };
    }
    below.sort_by(|a, b| a.0.total_cmp(&b.0));
    let detail = match below.first() {
        None => format!("every caching route at its hit-rate target ({lookups} lookups)"),
        Some((_, worst)) => format!("{} route(s) below target; worst: {worst}", below.len()),
    };
    Factor { name: "hit_rate", score: Some(weighted / lookups as f64), weight: 20, detail }
}

fn errors(interval: &Interval) -> Factor {
    let total = interval.total();
    let Some(ratio) = total.error_ratio() else {
        return Factor { name: "errors", score: None, weight: 25, detail: "no requests".into() };
    };
    let score = (1.0 - ratio / ERROR_RATIO_LIMIT).max(0.0);
    let detail = format!("{} of {} answers were 5xx ({})", total.errors, total.requests, percent(ratio));
    Factor { name: "errors", score: Some(score), weight: 25, detail }
}

fn upstreams(interval: &Interval) -> Factor {
    let all = interval.endpoints.len();
    if all == 0 {
        return Factor { name: "upstreams", score: None, weight: 15, detail: "no endpoints".into() };
    }
    let healthy = interval.endpoints.iter().filter(|e| e.state == "healthy").count();
    let down: Vec<String> = interval
        .endpoints
        .iter()
        .filter(|e| e.state != "healthy")
        .map(|e| format!("{}/{} {}", e.upstream, e.endpoint, e.state))
        .collect();
    let detail = if down.is_empty() {
        format!("{healthy} of {all} endpoints healthy")
    } else {
        format!("{healthy} of {all} endpoints healthy; {}", down.join(", "))
    };
    Factor { name: "upstreams", score: Some(healthy as f64 / all as f64), weight: 15, detail }
}

fn redis(interval: &Interval) -> Factor {
    let (score, detail) = match interval.redis {
        RedisState::Off => (None, "not configured"),
        RedisState::Up => (Some(1.0), "up"),
        RedisState::Probing => (Some(0.5), "probing after an outage (memory and local limits meanwhile)"),
        RedisState::Down => (Some(0.0), "down: running on memory and local limits"),
    };
    Factor { name: "redis", score, weight: 10, detail: detail.into() }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::insight::latency::Latency;
    use crate::insight::snapshot::{CacheCounters, EndpointCounters, RouteCounters};
    use crate::route::slo::Slo;

    /// A histogram of `count` observations of `ms` each (a bucket just that wide).
    pub(crate) fn all_at(ms: f64, count: u64) -> Latency {
        let seconds = ms / 1000.0;
        Latency::from_buckets([(seconds - 1e-9, 0), (seconds, count), (f64::INFINITY, count)])
    }

    /// A route's minute: `requests` answered in `ms` each, `hits` of `lookups` from the cache.
    pub(crate) fn route(requests: u64, ms: f64, lookups: u64, hits: u64, errors: u64) -> RouteCounters {
        RouteCounters {
            requests,
            errors,
            lookups,
            hits,
            misses: lookups - hits,
            latency: all_at(ms, requests),
            miss_latency: all_at(ms, lookups - hits),
            ..Default::default()
        }
    }

    pub(crate) fn policy(name: &str, caches: bool) -> RoutePolicy {
        RoutePolicy {
            name: name.into(),
            slo: Slo::PLATFORM,
            caches,
            ttl: Some(Duration::from_secs(60)),
            stale_while_revalidate: Duration::ZERO,
            coalesce: false,
        }
    }

    pub(crate) fn interval(routes: &[(&str, RouteCounters)], endpoint_states: &[&'static str]) -> Interval {
        Interval {
            seconds: 60.0,
            routes: routes.iter().map(|(n, r)| (n.to_string(), r.clone())).collect::<BTreeMap<_, _>>(),
            endpoints: endpoint_states
                .iter()
                .enumerate()
                .map(|(i, state)| EndpointCounters {
                    upstream: "api".into(),
                    endpoint: format!("10.0.0.{i}:80"),
                    state,
                    ..Default::default()
                })
                .collect(),
            cache: CacheCounters::default(),
            redis: RedisState::Off,
            reloads: (0, 0),
        }
    }

    fn factor<'a>(health: &'a Health, name: &str) -> &'a Factor {
        health.factors.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn a_fast_well_cached_proxy_is_healthy() {
        let history = interval(&[("leads", route(1000, 5.0, 1000, 950, 0))], &["healthy", "healthy"]);

        let health = score(&history, &[policy("leads", true)]);

        assert_eq!((health.status, health.health_score), (Status::Healthy, 100));
        assert_eq!(factor(&health, "redis").score, None, "no Redis configured: not counted");
    }

    #[test]
    fn a_route_at_twice_its_latency_target_halves_the_latency_factor() {
        let history = interval(&[("leads", route(1000, 200.0, 0, 0, 0))], &["healthy"]);

        let health = score(&history, &[policy("leads", false)]);

        let latency = factor(&health, "latency");
        assert!((latency.score.unwrap() - 0.5).abs() < 0.01, "{latency:?}");
        assert!(latency.detail.contains("leads p95 200 ms > 100 ms"), "{}", latency.detail);
        // (0.5·30 + 1·25 + 1·15) / 70
        assert_eq!(health.health_score, 79);
        assert_eq!(health.status, Status::Degraded);
    }

    #[test]
    fn a_low_hit_rate_scores_against_the_route_s_target() {
        let history = interval(&[("leads", route(100, 5.0, 100, 45, 0))], &["healthy"]);

        let health = score(&history, &[policy("leads", true)]);

        let hit_rate = factor(&health, "hit_rate");
        assert!((hit_rate.score.unwrap() - 0.5).abs() < 1e-9, "{hit_rate:?}");
        assert!(hit_rate.detail.contains("leads 45 % < 90 %"), "{}", hit_rate.detail);
    }

    #[test]
    fn five_percent_errors_zero_the_errors_factor() {
        let history = interval(&[("leads", route(100, 5.0, 0, 0, 5))], &["healthy"]);

        let health = score(&history, &[policy("leads", false)]);

        assert_eq!(factor(&health, "errors").score, Some(0.0));
        assert_eq!(factor(&health, "errors").detail, "5 of 100 answers were 5xx (5 %)");
        assert_eq!(health.status, Status::Degraded, "one factor under 0.5");
    }

    #[test]
    fn an_upstream_without_a_healthy_endpoint_is_unhealthy() {
        let history = interval(&[("leads", route(100, 5.0, 0, 0, 0))], &["unhealthy", "ejected"]);

        let health = score(&history, &[policy("leads", false)]);

        assert_eq!(health.status, Status::Unhealthy);
        assert_eq!(factor(&health, "upstreams").score, Some(0.0));
        assert!(factor(&health, "upstreams").detail.contains("api/10.0.0.1:80 ejected"));
    }

    #[test]
    fn redis_down_counts_against_the_score() {
        let mut history = interval(&[], &["healthy"]);
        history.redis = RedisState::Down;

        let health = score(&history, &[]);

        // (1·15 + 0·10) / 25
        assert_eq!(health.health_score, 60);
        assert_eq!(factor(&health, "latency").score, None);
    }
}
