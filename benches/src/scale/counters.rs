//! The tier's own account of each phase: every sidecar's `accel_redis_*` counters, scraped
//! from its admin `/metrics` before the first phase and after each one, as differences per
//! phase (only the counters that moved), with the circuit's state at the phase's end. The
//! table prints the ones that mean trouble (errors, timeouts, an opened circuit, a lock or a
//! lookup without Redis, purges kept for later or missed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::sidecar::Sidecar;

/// Counters that only move when something went wrong, by metric name (labels follow).
const TROUBLE: [&str; 6] = [
    "accel_redis_errors_total",
    "accel_redis_timeouts_total",
    "accel_redis_circuit_opens_total",
    "accel_redis_purges_kept_total",
    "accel_redis_purges_replayed_total",
    "accel_redis_memory_flushes_total",
];

/// Results of `accel_redis_lock_total`, `accel_redis_l2_total` and
/// `accel_redis_limit_checks_total` that mean Redis did not help (or, `outdated`, that an
/// answer fetched across a purge was kept out of the second level).
const TROUBLE_RESULTS: [&str; 5] = [
    "result=\"unavailable\"",
    "result=\"follower_timeout\"",
    "result=\"fallback\"",
    "result=\"follower_released\"",
    "result=\"outdated\"",
];

/// One sidecar's counters over one phase.
#[derive(Debug, Clone, Serialize)]
pub struct SidecarCounters {
    pub sidecar: String,
    /// Series (`name{labels}` as exposed) that moved during the phase, and by how much.
    pub moved: BTreeMap<String, f64>,
    /// `accel_redis_circuit_state` at the phase's end: 0 closed, 1 half-open, 2 open.
    pub circuit_state: f64,
}

/// Every sidecar's counters over one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCounters {
    pub phase: &'static str,
    pub sidecars: Vec<SidecarCounters>,
}

impl PhaseCounters {
    /// What went wrong, for the table: `"lock unavailable: 2 on sidecar 1; …"`, empty when
    /// nothing did. Purges: a sidecar that received fewer than were published in the phase.
    pub fn trouble(&self) -> String {
        let mut by_series: BTreeMap<String, Vec<(usize, f64)>> = BTreeMap::new();
        for (i, sidecar) in self.sidecars.iter().enumerate() {
            for (series, &delta) in &sidecar.moved {
                if is_trouble(series) {
                    by_series.entry(short(series)).or_default().push((i, delta));
                }
            }
        }
        let published: f64 =
            self.sidecars.iter().map(|s| s.value("accel_redis_purges_published_total")).sum();
        for (i, sidecar) in self.sidecars.iter().enumerate() {
            let received = sidecar.value("accel_redis_purges_received_total");
            if received < published {
                by_series
                    .entry("purges not received".to_owned())
                    .or_default()
                    .push((i, published - received));
            }
        }
        let mut out = String::new();
        for (what, at) in by_series {
            let at: Vec<String> = at.iter().map(|(i, n)| format!("{n} on sidecar {i}")).collect();
            let _ = write!(out, "{}{what}: {}", if out.is_empty() { "" } else { "; " }, at.join(", "));
        }
        out
    }
}

impl SidecarCounters {
    fn value(&self, series: &str) -> f64 {
        self.moved.get(series).copied().unwrap_or(0.0)
    }
}

fn is_trouble(series: &str) -> bool {
    let name = series.split('{').next().unwrap_or(series);
    match name {
        "accel_redis_lock_total" | "accel_redis_l2_total" | "accel_redis_limit_checks_total" => {
            TROUBLE_RESULTS.iter().any(|r| series.contains(r))
        }
        _ => TROUBLE.contains(&name),
    }
}

/// `accel_redis_lock_total{result="unavailable"}` → `lock unavailable`.
fn short(series: &str) -> String {
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let name = name.trim_start_matches("accel_redis_").trim_end_matches("_total").replace('_', " ");
    let labels: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim_matches('"')))
        .collect();
    if labels.is_empty() { name } else { format!("{name} {}", labels.join(" ")) }
}

/// The last scrape of every sidecar, from which the next phase's differences are taken.
#[derive(Debug)]
pub struct Scraper {
    last: Vec<BTreeMap<String, f64>>,
}

impl Scraper {
    /// The starting point: every sidecar's counters now.
    pub async fn start(sidecars: &[Sidecar]) -> anyhow::Result<Self> {
        let mut last = Vec::with_capacity(sidecars.len());
        for sidecar in sidecars {
            last.push(parse(&sidecar.metrics_text().await?));
        }
        Ok(Self { last })
    }

    /// The counters that moved since the last scrape, per sidecar, as `phase`.
    pub async fn phase(
        &mut self,
        phase: &'static str,
        sidecars: &[Sidecar],
    ) -> anyhow::Result<PhaseCounters> {
        let mut out = Vec::with_capacity(sidecars.len());
        for (sidecar, last) in sidecars.iter().zip(&mut self.last) {
            let text = sidecar.metrics_text().await?;
            let now = parse(&text);
            let moved = now
                .iter()
                .filter(|(series, _)| series.ends_with("_total") || series.contains("_total{"))
                .filter_map(|(series, &value)| {
                    let delta = value - last.get(series).copied().unwrap_or(0.0);
                    (delta != 0.0).then(|| (series.clone(), delta))
                })
                .collect();
            let circuit_state = now.get("accel_redis_circuit_state").copied().unwrap_or(0.0);
            *last = now;
            out.push(SidecarCounters { sidecar: sidecar.name().to_owned(), moved, circuit_state });
        }
        Ok(PhaseCounters { phase, sidecars: out })
    }
}

/// Every `accel_redis_*` series of an exposition, histograms left out.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| line.starts_with("accel_redis_") && !line.starts_with("accel_redis_duration_seconds"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_names_what_moved_and_where() {
        let sidecar = |i: usize, moved: &[(&str, f64)]| SidecarCounters {
            sidecar: format!("single-{i}"),
            moved: moved.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect(),
            circuit_state: 0.0,
        };
        let phase = PhaseCounters {
            phase: "purge",
            sidecars: vec![
                sidecar(
                    0,
                    &[
                        ("accel_redis_purges_published_total", 2.0),
                        ("accel_redis_purges_received_total", 2.0),
                        ("accel_redis_lock_total{result=\"leader\"}", 5.0),
                    ],
                ),
                sidecar(
                    1,
                    &[
                        ("accel_redis_purges_received_total", 1.0),
                        ("accel_redis_lock_total{result=\"unavailable\"}", 2.0),
                        ("accel_redis_timeouts_total{op=\"lock\"}", 2.0),
                    ],
                ),
            ],
        };
        assert_eq!(
            phase.trouble(),
            "lock unavailable: 2 on sidecar 1; purges not received: 1 on sidecar 1; timeouts lock: 2 on sidecar 1"
        );
        let quiet = PhaseCounters {
            phase: "storm",
            sidecars: vec![sidecar(0, &[("accel_redis_l2_total{result=\"hit\"}", 9.0)])],
        };
        assert_eq!(quiet.trouble(), "");
    }

    #[test]
    fn parse_keeps_the_tier_series_without_histograms() {
        let text = "# HELP x\naccel_redis_up 1\naccel_redis_duration_seconds_bucket{op=\"ping\",le=\"0.1\"} 3\n\
                    accel_redis_lock_total{result=\"leader\"} 4\naccel_requests_total 9\n";
        let parsed = parse(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["accel_redis_lock_total{result=\"leader\"}"], 4.0);
    }
}
