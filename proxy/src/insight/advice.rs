//! Recommendations from observed traffic. Each one names the route it is about (or none, for
//! the cache as a whole), says what to change, and carries the numbers it rests on, so an
//! operator can judge it:
//!
//! - `raise_ttl`: most refreshes of a route come back unchanged (a 304, or the same ETag);
//! - `lower_ttl`: purges remove entries before they expire far more often than expiry does;
//! - `coalesce` / `stale_while_revalidate`: misses pile up on a route that waits for its
//!   origin on each of them;
//! - `hit_rate`: a caching route below its hit-rate target;
//! - `latency`: a route's p95 over its target.
//!
//! Each rule needs a minimum of evidence before it speaks (see the constants).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::RoutePolicy;
use super::health::{ms, percent};
use super::snapshot::Interval;

/// Refreshes needed before TTL advice.
pub const MIN_REFRESHES: u64 = 10;
/// Share of unchanged refreshes above which a longer TTL is advised.
pub const UNCHANGED_SHARE: f64 = 0.8;
/// Purged entries needed before purge-versus-expiry advice.
pub const MIN_PURGED: u64 = 20;
/// Share of purged among entries leaving the cache above which shorter TTLs are advised.
pub const PURGED_SHARE: f64 = 0.8;
/// Misses needed before coalescing advice.
pub const MIN_MISSES: u64 = 20;
/// Cache lookups needed before hit-rate advice.
pub const MIN_LOOKUPS: u64 = 50;
/// Requests needed before latency advice.
pub const MIN_REQUESTS: u64 = 50;

/// What a recommendation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdviceKind {
    RaiseTtl,
    LowerTtl,
    Coalesce,
    StaleWhileRevalidate,
    HitRate,
    Latency,
}

impl AdviceKind {
    /// The `kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RaiseTtl => "raise_ttl",
            Self::LowerTtl => "lower_ttl",
            Self::Coalesce => "coalesce",
            Self::StaleWhileRevalidate => "stale_while_revalidate",
            Self::HitRate => "hit_rate",
            Self::Latency => "latency",
        }
    }
}

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub kind: AdviceKind,
    /// The route it concerns; `None`: the cache as a whole.
    pub route: Option<String>,
    /// What to do and why, with the numbers.
    pub message: String,
    /// The numbers, by name.
    pub evidence: Value,
}

/// Recommendations for `routes` from what happened during `interval`, most useful first.
pub fn advise(interval: &Interval, routes: &[RoutePolicy]) -> Vec<Advice> {
    let window = window(interval.seconds);
    let mut advice = Vec::new();
    for policy in routes {
        let Some(route) = interval.routes.get(&policy.name) else { continue };
        let name = Some(policy.name.clone());
        let refreshes = route.unchanged + route.changed;
        if policy.caches && refreshes >= MIN_REFRESHES {
            let share = route.unchanged as f64 / refreshes as f64;
            if share >= UNCHANGED_SHARE {
                let suggestion = match policy.ttl {
                    Some(ttl) => format!(
                        "raise cache.ttl from {} to about {}",
                        humantime::format_duration(ttl),
                        humantime::format_duration(ttl * 4)
                    ),
                    None => "set a cache.ttl longer than the origin's max-age".to_owned(),
                };
                advice.push(Advice {
                    kind: AdviceKind::RaiseTtl,
                    route: name.clone(),
                    message: format!(
                        "{suggestion}: {} of {refreshes} refreshes ({}) came back unchanged (304 or the same ETag) in the last {window}",
                        route.unchanged,
                        percent(share)
                    ),
                    evidence: json!({
                        "refreshes": refreshes, "unchanged": route.unchanged, "unchanged_share": share,
                        "ttl_seconds": policy.ttl.map(|t| t.as_secs_f64()),
                    }),
                });
            }
        }
        let miss_p95 = route.miss_latency.quantile(0.95);
        if policy.caches
            && route.misses >= MIN_MISSES
            && let Some(miss_p95) = miss_p95
            && miss_p95 > policy.slo.p95.as_secs_f64()
        {
            let rate = route.misses as f64 / interval.seconds.max(1.0);
            let evidence = json!({
                "misses": route.misses, "misses_per_second": rate, "miss_p95_seconds": miss_p95,
                "target_p95_seconds": policy.slo.p95.as_secs_f64(),
            });
            let numbers = format!(
                "{} misses ({rate:.1}/s) in the last {window} waited p95 {} for the origin (target {})",
                route.misses,
                ms(miss_p95),
                ms(policy.slo.p95.as_secs_f64())
            );
            if !policy.coalesce {
                advice.push(Advice {
                    kind: AdviceKind::Coalesce,
                    route: name.clone(),
                    message: format!(
                        "turn on coalesce: {numbers}; identical misses would share one origin request"
                    ),
                    evidence: evidence.clone(),
                });
            }
            if policy.stale_while_revalidate == Duration::ZERO {
                advice.push(Advice {
                    kind: AdviceKind::StaleWhileRevalidate,
                    route: name.clone(),
                    message: format!(
                        "set cache.stale_while_revalidate: {numbers}; expired entries would be served while they refresh"
                    ),
                    evidence,
                });
            }
        }
        if policy.caches
            && route.lookups >= MIN_LOOKUPS
            && let Some(rate) = route.hit_rate()
            && rate < policy.slo.hit_rate
        {
            advice.push(Advice {
                kind: AdviceKind::HitRate,
                route: name.clone(),
                message: format!(
                    "hit rate {} is below its {} target: {} hits of {} lookups in the last {window} ({} misses)",
                    percent(rate),
                    percent(policy.slo.hit_rate),
                    route.hits,
                    route.lookups,
                    route.misses
                ),
                evidence: json!({
                    "lookups": route.lookups, "hits": route.hits, "misses": route.misses,
                    "hit_rate": rate, "target": policy.slo.hit_rate,
                }),
            });
        }
        if route.latency.count() >= MIN_REQUESTS
            && let Some(p95) = route.latency.quantile(0.95)
            && p95 > policy.slo.p95.as_secs_f64()
        {
            let hint =
                if policy.caches { "" } else { "; the route does not cache: consider cache = { ttl = ... }" };
            advice.push(Advice {
                kind: AdviceKind::Latency,
                route: name.clone(),
                message: format!(
                    "p95 {} is over its {} target over {} requests in the last {window}{hint}",
                    ms(p95),
                    ms(policy.slo.p95.as_secs_f64()),
                    route.latency.count()
                ),
                evidence: json!({
                    "requests": route.latency.count(), "p95_seconds": p95,
                    "target_p95_seconds": policy.slo.p95.as_secs_f64(),
                }),
            });
        }
    }
    let (purged, expired) = (interval.cache.purged, interval.cache.expired);
    if purged >= MIN_PURGED && purged as f64 / (purged + expired) as f64 >= PURGED_SHARE {
        let share = purged as f64 / (purged + expired) as f64;
        advice.push(Advice {
            kind: AdviceKind::LowerTtl,
            route: None,
            message: format!(
                "lower the TTLs of purged routes: {purged} entries were purged and {expired} expired in the last {window} ({} purged before expiry); a missed purge would serve old data for a whole TTL",
                percent(share)
            ),
            evidence: json!({ "purged": purged, "expired": expired, "purged_share": share }),
        });
    }
    advice
}

/// The interval's length in words: "15 min", "40 s".
fn window(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    if seconds >= 120 { format!("{} min", seconds / 60) } else { format!("{seconds} s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::health::tests::{interval, policy, route};

    fn kinds(advice: &[Advice]) -> Vec<(AdviceKind, Option<&str>)> {
        advice.iter().map(|a| (a.kind, a.route.as_deref())).collect()
    }

    #[test]
    fn mostly_unchanged_refreshes_advise_a_longer_ttl() {
        let mut leads = route(1000, 5.0, 1000, 950, 0);
        leads.unchanged = 45;
        leads.changed = 5;
        let history = interval(&[("leads", leads)], &["healthy"]);

        let advice = advise(&history, &[policy("leads", true)]);

        assert_eq!(kinds(&advice), [(AdviceKind::RaiseTtl, Some("leads"))]);
        assert_eq!(
            advice[0].message,
            "raise cache.ttl from 1m to about 4m: 45 of 50 refreshes (90 %) came back unchanged (304 or the same ETag) in the last 60 s"
        );
        assert_eq!(advice[0].evidence["unchanged"], 45);
    }

    #[test]
    fn refreshes_that_usually_change_advise_nothing() {
        let mut leads = route(1000, 5.0, 1000, 950, 0);
        leads.unchanged = 20;
        leads.changed = 30;
        let history = interval(&[("leads", leads)], &["healthy"]);

        assert!(advise(&history, &[policy("leads", true)]).is_empty());
    }

    #[test]
    fn slow_piled_up_misses_advise_coalescing_and_stale_while_revalidate() {
        let history = interval(&[("leads", route(100, 300.0, 100, 95, 0))], &["healthy"]);
        let mut slow = route(100, 5.0, 100, 60, 0);
        slow.miss_latency = crate::insight::latency::Latency::from_buckets([(0.3, 40), (f64::INFINITY, 40)]);
        let piled = interval(&[("leads", slow)], &["healthy"]);

        let few_misses = advise(&history, &[policy("leads", true)]);
        let advice = advise(&piled, &[policy("leads", true)]);

        assert_eq!(kinds(&few_misses), [(AdviceKind::Latency, Some("leads"))], "5 misses are not a pile");
        assert_eq!(
            kinds(&advice),
            [
                (AdviceKind::Coalesce, Some("leads")),
                (AdviceKind::StaleWhileRevalidate, Some("leads")),
                (AdviceKind::HitRate, Some("leads")),
            ]
        );
        assert!(
            advice[0].message.contains("40 misses (0.7/s) in the last 60 s waited p95 285 ms"),
            "{}",
            advice[0].message
        );
        assert!(
            advice[2].message.starts_with("hit rate 60 % is below its 90 % target: 60 hits of 100 lookups")
        );
    }

    #[test]
    fn a_slow_route_that_does_not_cache_is_told_so() {
        let history = interval(&[("report", route(80, 250.0, 0, 0, 0))], &["healthy"]);

        let advice = advise(&history, &[policy("report", false)]);

        assert_eq!(kinds(&advice), [(AdviceKind::Latency, Some("report"))]);
        assert!(advice[0].message.ends_with("the route does not cache: consider cache = { ttl = ... }"));
    }

    #[test]
    fn purges_that_beat_expiry_advise_shorter_ttls() {
        let mut history = interval(&[], &["healthy"]);
        history.cache.purged = 90;
        history.cache.expired = 10;

        let advice = advise(&history, &[]);

        assert_eq!(kinds(&advice), [(AdviceKind::LowerTtl, None)]);
        assert!(
            advice[0].message.contains("90 entries were purged and 10 expired in the last 60 s (90 % purged")
        );
    }
}
