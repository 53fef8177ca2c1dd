//! A route's insight settings: its service-level targets (`slo`), against which the health
//! score and the advice measure it, and the paths to keep warm (`warm`).
//!
//! ```toml
//! slo = { p95 = "100ms", p99 = "200ms", hit_rate = 0.9 }
//! warm = ["/api/pricing/plans", "/api/pricing/regions"]
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::quantity::parse_duration;

/// `slo = { ... }` as written; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloFile {
    /// 95th percentile of the time to response headers, e.g. `"100ms"`.
    #[serde(default)]
    pub p95: Option<String>,
    /// 99th percentile, e.g. `"200ms"`.
    #[serde(default)]
    pub p99: Option<String>,
    /// Share of cache lookups answered from the cache, 0 to 1 (caching routes only).
    #[serde(default)]
    pub hit_rate: Option<f64>,
}

/// A route's targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    pub p95: Duration,
    pub p99: Duration,
    /// 0 to 1.
    pub hit_rate: f64,
}

impl Slo {
    /// The platform's targets, for routes that set none: p95 100 ms, p99 200 ms, 90 % hits.
    pub const PLATFORM: Self =
        Self { p95: Duration::from_millis(100), p99: Duration::from_millis(200), hit_rate: 0.9 };
}

impl Default for Slo {
    fn default() -> Self {
        Self::PLATFORM
    }
}

/// Converts a route's `slo` and `warm` keys; problems go to `at` with the key they concern.
pub fn convert(
    slo: Option<SloFile>,
    warm: Vec<String>,
    at: &mut impl FnMut(&str, String),
) -> (Slo, Vec<String>) {
    let SloFile { p95, p99, hit_rate } = slo.unwrap_or_default();
    let mut target = |key: &str, text: Option<String>, default: Duration| match text {
        None => default,
        Some(text) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                at(key, "must be greater than zero".into());
                default
            }
            Err(e) => {
                at(key, e);
                default
            }
        },
    };
    let p95 = target("slo.p95", p95, Slo::PLATFORM.p95);
    let p99 = target("slo.p99", p99, Slo::PLATFORM.p99);
    let hit_rate = match hit_rate {
        None => Slo::PLATFORM.hit_rate,
        Some(rate) if (0.0..=1.0).contains(&rate) => rate,
        Some(rate) => {
            at("slo.hit_rate", format!("{rate} is not a share between 0 and 1"));
            Slo::PLATFORM.hit_rate
        }
    };
    if p99 < p95 {
        at("slo.p99", "must not be below slo.p95".into());
    }
    for path in &warm {
        if !path.starts_with('/') {
            at("warm", format!("{path:?} is not a path (it must start with /)"));
        }
    }
    (Slo { p95, p99, hit_rate }, warm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(slo: Option<SloFile>, warm: &[&str]) -> (Slo, Vec<String>) {
        let mut problems = Vec::new();
        let out = convert(slo, warm.iter().map(|s| s.to_string()).collect(), &mut |k: &str, m: String| {
            problems.push(format!("{k}: {m}"))
        });
        assert!(problems.is_empty(), "{problems:?}");
        out
    }

    #[test]
    fn a_route_without_targets_gets_the_platform_s() {
        assert_eq!(run(None, &[]).0, Slo::PLATFORM);
        let slo = SloFile { p95: Some("50ms".into()), hit_rate: Some(0.5), ..Default::default() };
        let (slo, warm) = run(Some(slo), &["/a"]);
        assert_eq!((slo.p95, slo.p99, slo.hit_rate), (Duration::from_millis(50), Slo::PLATFORM.p99, 0.5));
        assert_eq!(warm, ["/a"]);
    }

    #[test]
    fn bad_targets_name_their_key() {
        let mut problems = Vec::new();
        let slo = SloFile { p95: Some("fast".into()), p99: None, hit_rate: Some(1.5) };
        convert(Some(slo), vec!["api/x".into()], &mut |k: &str, m: String| {
            problems.push(format!("{k}: {m}"))
        });
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("slo.p95: invalid duration \"fast\""), "{problems:?}");
        assert_eq!(problems[1], "slo.hit_rate: 1.5 is not a share between 0 and 1");
        assert_eq!(problems[2], "warm: \"api/x\" is not a path (it must start with /)");
    }
}
