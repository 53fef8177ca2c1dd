//! The scenario file (TOML):
//!
//! ```toml
//! [[endpoint]]
//! name = "golden-lead"
//! path = "/api/golden-leads/42"
//!
//! [[endpoint]]
//! name = "detect"
//! method = "POST"
//! path = "/api/golden-leads/detect"
//! headers = { "content-type" = "application/json" }
//! body = '{"email_opens": 12}'
//!
//! [[target]]
//! name = "p95_latency"       # the report's test_name
//! measure = "p95"            # p50, p95, p99 (ms), requests_per_second, cache_hit_rate, success_rate
//! below = 100                # or: above = 1000
//! endpoints = ["golden-lead"]  # default: every endpoint
//! concurrency = 10           # default 10
//! duration = "5s"            # default 5s; warmup default 1s
//! repeats = 50               # cache_hit_rate: sequential requests per endpoint (default 50)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    endpoint: Vec<EndpointFile>,
    #[serde(default)]
    target: Vec<TargetFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
    name: String,
    path: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    name: String,
    measure: String,
    #[serde(default)]
    below: Option<f64>,
    #[serde(default)]
    above: Option<f64>,
    #[serde(default)]
    endpoints: Option<Vec<String>>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    warmup: Option<String>,
    #[serde(default)]
    repeats: Option<usize>,
}

/// One request of the API under test.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Path and query, from the base URL.
    pub path: String,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// What a target measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A latency percentile in milliseconds (50, 95 or 99), the worst endpoint's.
    Latency(u8),
    /// Answers (2xx or 3xx) per second with every endpoint's requests mixed on `concurrency`
    /// connections.
    RequestsPerSecond,
    /// Share of repeated requests answered with `Cache-Status: ...; hit`, all endpoints together.
    CacheHitRate,
    /// Share of answers that were 2xx or 3xx under load.
    SuccessRate,
}

impl Measure {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "p50" => Self::Latency(50),
            "p95" => Self::Latency(95),
            "p99" => Self::Latency(99),
            "requests_per_second" => Self::RequestsPerSecond,
            "cache_hit_rate" => Self::CacheHitRate,
            "success_rate" => Self::SuccessRate,
            other => bail!(
                "unknown measure {other:?} (p50, p95, p99, requests_per_second, cache_hit_rate, success_rate)"
            ),
        })
    }

    /// The unit of its value in the report.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Latency(_) => "ms",
            Self::RequestsPerSecond => "req/s",
            Self::CacheHitRate | Self::SuccessRate => "%",
        }
    }
}

/// The side of the target a value must be on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Below(f64),
    Above(f64),
}

impl Threshold {
    /// The target's number.
    pub fn value(self) -> f64 {
        match self {
            Self::Below(v) | Self::Above(v) => v,
        }
    }

    /// Whether `actual` meets it.
    pub fn met_by(self, actual: f64) -> bool {
        match self {
            Self::Below(v) => actual < v,
            Self::Above(v) => actual > v,
        }
    }

    /// `< 100` or `> 1000`.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Below(_) => "<",
            Self::Above(_) => ">",
        }
    }
}

/// One target to measure.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub measure: Measure,
    pub threshold: Threshold,
    /// Indexes into the scenario's endpoints.
    pub endpoints: Vec<usize>,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub repeats: usize,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub endpoints: Vec<Endpoint>,
    pub targets: Vec<Target>,
}

impl Scenario {
    /// Reads and validates a scenario file's text; errors name the endpoint or target.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ScenarioFile = toml::from_str(text).context("invalid scenario")?;
        let endpoints = file
            .endpoint
            .into_iter()
            .map(|e| {
                let name = e.name.clone();
                endpoint(e).with_context(|| format!("endpoint {name:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!endpoints.is_empty(), "the scenario has no [[endpoint]]");
        let targets = file
            .target
            .into_iter()
            .map(|t| {
                let name = t.name.clone();
                target(t, &endpoints).with_context(|| format!("target {name:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!targets.is_empty(), "the scenario has no [[target]]");
        Ok(Self { endpoints, targets })
    }

    /// Every target's measured phase set to `duration` (a short run for CI).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        for target in &mut self.targets {
            target.duration = duration;
            target.warmup = target.warmup.min(duration / 2);
        }
        self
    }
}

fn endpoint(e: EndpointFile) -> anyhow::Result<Endpoint> {
    let EndpointFile { name, path, method, headers, body } = e;
    ensure!(path.starts_with('/'), "path {path:?} must start with /");
    let method = match method {
        None => Method::GET,
        Some(m) => {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).with_context(|| format!("method {m:?}"))?
        }
    };
    let headers = headers
        .into_iter()
        .map(|(k, v)| {
            let name = HeaderName::try_from(k.as_str()).with_context(|| format!("header name {k:?}"))?;
            let value = HeaderValue::try_from(v.as_str()).with_context(|| format!("header {k}: {v:?}"))?;
            Ok((name, value))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Endpoint { name, path, method, headers, body: body.map(Bytes::from).unwrap_or_default() })
}

fn target(t: TargetFile, endpoints: &[Endpoint]) -> anyhow::Result<Target> {
    let TargetFile { name, measure, below, above, endpoints: names, concurrency, duration, warmup, repeats } =
        t;
    let measure = Measure::parse(&measure)?;
    let threshold = match (below, above) {
        (Some(v), None) => Threshold::Below(v),
        (None, Some(v)) => Threshold::Above(v),
        _ => bail!("give exactly one of `below` and `above`"),
    };
    let indexes = match names {
        None => (0..endpoints.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                endpoints.iter().position(|e| &e.name == n).with_context(|| format!("unknown endpoint {n:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    ensure!(!indexes.is_empty(), "`endpoints` is empty");
    if measure == Measure::RequestsPerSecond {
        for &i in &indexes {
            ensure!(
                endpoints[i].method == Method::GET && endpoints[i].body.is_empty(),
                "requests_per_second mixes GET endpoints only; {:?} is {}",
                endpoints[i].name,
                endpoints[i].method
            );
        }
    }
    let time = |text: Option<String>, default: Duration| -> anyhow::Result<Duration> {
        text.map_or(Ok(default), |t| humantime::parse_duration(&t).with_context(|| format!("duration {t:?}")))
    };
    let concurrency = concurrency.unwrap_or(10);
    ensure!(concurrency > 0, "concurrency must be at least 1");
    let duration = time(duration, Duration::from_secs(5))?;
    ensure!(!duration.is_zero(), "duration must be longer than zero");
    let repeats = repeats.unwrap_or(50);
    ensure!(repeats > 0, "repeats must be at least 1");
    Ok(Target {
        name,
        measure,
        threshold,
        endpoints: indexes,
        concurrency,
        duration,
        warmup: time(warmup, Duration::from_secs(1))?,
        repeats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenario_is_valid() {
        let scenario = Scenario::parse(include_str!("../../scenarios/platform.toml")).unwrap();
        let names: Vec<&str> = scenario.targets.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"p95_latency") && names.contains(&"cache_hit_rate"), "{names:?}");
    }

    #[test]
    fn mistakes_name_their_target() {
        let base = "[[endpoint]]\nname = \"a\"\npath = \"/a\"\n[[endpoint]]\nname = \"p\"\npath = \"/p\"\nmethod = \"POST\"\n";
        let error = |target: &str| {
            format!("{:#}", Scenario::parse(&format!("{base}[[target]]\n{target}")).unwrap_err())
        };

        assert_eq!(
            error("name = \"x\"\nmeasure = \"p95\"\nbelow = 1\nabove = 2"),
            "target \"x\": give exactly one of `below` and `above`"
        );
        assert!(
            error("name = \"x\"\nmeasure = \"p90\"\nbelow = 1")
                .starts_with("target \"x\": unknown measure \"p90\"")
        );
        assert_eq!(
            error("name = \"x\"\nmeasure = \"p95\"\nbelow = 1\nendpoints = [\"b\"]"),
            "target \"x\": unknown endpoint \"b\""
        );
        assert_eq!(
            error("name = \"x\"\nmeasure = \"requests_per_second\"\nabove = 1"),
            "target \"x\": requests_per_second mixes GET endpoints only; \"p\" is POST"
        );
    }
}
