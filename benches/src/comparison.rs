//! `load-report`: several [`Report`]s side by side, as a table and as one JSON document.

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::load::Report;

/// The runs of one benchmark session, in the order they ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// When the comparison was assembled, in seconds since the Unix epoch.
    pub generated_unix: u64,
    /// Settings shared by the runs (duration, concurrency, body size, pinning, …).
    pub params: Map<String, Value>,
    /// One report per case.
    pub cases: Vec<Report>,
    /// One entry per case measured in more than one round (labels ending in ` r1`, ` r2`, …),
    /// in the order each case first ran; empty after a single round.
    #[serde(default)]
    pub medians: Vec<Medians>,
}

/// One case over its rounds: medians, which one slow or fast round does not move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Medians {
    /// The case's label without its round.
    pub case: String,
    /// How many rounds it ran.
    pub rounds: usize,
    /// Median requests per second.
    pub requests_per_sec: f64,
    /// The slowest round's requests per second.
    pub min_requests_per_sec: f64,
    /// The fastest round's requests per second.
    pub max_requests_per_sec: f64,
    /// Median CPU time (user + system) per request, in µs; `None` when a round has no CPU
    /// figure.
    pub cpu_us_per_request: Option<f64>,
    /// Median user-space CPU time per request, in µs; `None` when a round has no CPU figure.
    pub user_us_per_request: Option<f64>,
}

impl Comparison {
    /// Assembles `cases` with the given settings, stamped with the current time.
    pub fn new(params: Map<String, Value>, cases: Vec<Report>) -> Self {
        let generated_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let medians = Medians::of(&cases);
        Self { generated_unix, params, cases, medians }
    }
}

impl Medians {
    /// The cases of `reports` that ran in more than one round.
    pub fn of(reports: &[Report]) -> Vec<Self> {
        let mut cases: Vec<(&str, Vec<&Report>)> = Vec::new();
        for report in reports {
            let Some(case) = case_of(&report.label) else { continue };
            match cases.iter_mut().find(|(name, _)| *name == case) {
                Some((_, runs)) => runs.push(report),
                None => cases.push((case, vec![report])),
            }
        }
        cases
            .into_iter()
            .filter(|(_, runs)| runs.len() > 1)
            .map(|(case, runs)| {
                let rps: Vec<f64> = runs.iter().map(|r| r.requests_per_sec).collect();
                let cpu: Option<Vec<f64>> =
                    runs.iter().map(|r| r.server_cpu.map(|c| c.us_per_request)).collect();
                let user: Option<Vec<f64>> = runs
                    .iter()
                    .map(|r| r.server_cpu.map(|c| c.user_secs * 1e6 / r.requests.max(1) as f64))
                    .collect();
                Self {
                    case: case.to_owned(),
                    rounds: runs.len(),
                    requests_per_sec: median(rps.clone()),
                    min_requests_per_sec: rps.iter().copied().fold(f64::INFINITY, f64::min),
                    max_requests_per_sec: rps.iter().copied().fold(0.0, f64::max),
                    cpu_us_per_request: cpu.map(median),
                    user_us_per_request: user.map(median),
                }
            })
            .collect()
    }
}

/// The case a label names when it ends in a round (` r` and digits).
fn case_of(label: &str) -> Option<&str> {
    let (case, round) = label.rsplit_once(" r")?;
    (!round.is_empty() && round.bytes().all(|b| b.is_ascii_digit())).then_some(case)
}

/// The middle value (the mean of the two middle ones for an even count); `values` is not empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The side-by-side table: one row per case, throughput relative to the first case.
impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11}",
            "case", "req/s", "vs 1st", "p50 µs", "p95 µs", "p99 µs", "max µs", "errors", "cpu µs/req"
        )?;
        let baseline = self.cases.first().map_or(0.0, |r| r.requests_per_sec);
        for report in &self.cases {
            let relative = if baseline > 0.0 { report.requests_per_sec / baseline * 100.0 } else { 0.0 };
            let cpu =
                report.server_cpu.map_or_else(|| "-".to_owned(), |c| format!("{:.2}", c.us_per_request));
            writeln!(
                f,
                "{:<24} {:>12.0} {:>7.0}% {:>9} {:>9} {:>9} {:>9} {:>10} {:>11}",
                report.label,
                report.requests_per_sec,
                relative,
                report.latency_us.p50,
                report.latency_us.p95,
                report.latency_us.p99,
                report.latency_us.max,
                report.status_errors + report.transport_errors,
                cpu,
            )?;
        }
        if self.medians.is_empty() {
            return Ok(());
        }
        // Medians over the rounds: the figures to compare on a machine whose speed drifts.
        writeln!(f)?;
        writeln!(
            f,
            "{:<24} {:>6} {:>12} {:>8} {:>12} {:>12} {:>11} {:>12}",
            "median of rounds", "rounds", "req/s", "vs 1st", "lowest", "highest", "cpu µs/req", "user µs/req"
        )?;
        let baseline = self.medians[0].requests_per_sec;
        let figure = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        for case in &self.medians {
            let relative = if baseline > 0.0 { case.requests_per_sec / baseline * 100.0 } else { 0.0 };
            writeln!(
                f,
                "{:<24} {:>6} {:>12.0} {:>7.0}% {:>12.0} {:>12.0} {:>11} {:>12}",
                case.case,
                case.rounds,
                case.requests_per_sec,
                relative,
                case.min_requests_per_sec,
                case.max_requests_per_sec,
                figure(case.cpu_us_per_request),
                figure(case.user_us_per_request),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(label: &str, rps: f64, cpu: Option<(f64, f64)>) -> Report {
        let requests = (rps * 10.0) as u64;
        let server_cpu = cpu.map(|(user, system)| {
            json!({ "user_secs": user, "system_secs": system,
                    "us_per_request": (user + system) * 1e6 / requests as f64, "cores": 0.5 })
        });
        serde_json::from_value(json!({
            "label": label, "target": "127.0.0.1:1", "urls": 1, "concurrency": 32,
            "duration_secs": 10.0, "requests": requests, "status_errors": 0,
            "transport_errors": 0, "requests_per_sec": rps,
            "latency_us": { "mean": 1.0, "p50": 1, "p90": 1, "p95": 1, "p99": 1, "p999": 1, "max": 1 },
            "bytes_received": 0, "server_cpu": server_cpu,
        }))
        .unwrap()
    }

    #[test]
    fn cases_over_rounds_get_their_medians_in_the_order_they_first_ran() {
        let reports = [
            report("accel r1", 100.0, Some((1.0, 2.0))),
            report("nginx r1", 300.0, None),
            report("accel r2", 900.0, Some((3.0, 6.0))),
            report("nginx r2", 200.0, None),
            report("accel r3", 200.0, Some((2.0, 2.0))),
        ];
        let medians = Medians::of(&reports);
        let cases: Vec<_> = medians.iter().map(|r| (r.case.as_str(), r.rounds, r.requests_per_sec)).collect();
        assert_eq!(cases, [("accel", 3, 200.0), ("nginx", 2, 250.0)]);
        let accel = &medians[0];
        assert_eq!((accel.min_requests_per_sec, accel.max_requests_per_sec), (100.0, 900.0));
        // Per request: 1 s / 1,000, 3 s / 9,000 and 2 s / 2,000 of user time.
        let user = accel.user_us_per_request.unwrap();
        assert!((user - 1000.0).abs() < 1e-6, "{user}");
        assert!(accel.cpu_us_per_request.is_some());
        assert_eq!(medians[1].cpu_us_per_request, None, "a round without CPU figures has no median");
    }

    #[test]
    fn a_single_round_or_labels_without_rounds_give_no_medians() {
        assert!(Medians::of(&[report("accel r1", 1.0, None), report("nginx r1", 2.0, None)]).is_empty());
        assert!(Medians::of(&[report("accel", 1.0, None), report("accel", 2.0, None)]).is_empty());
        assert!(Medians::of(&[report("accel r", 1.0, None), report("accel r", 2.0, None)]).is_empty());
        let table = Comparison::new(Map::new(), vec![report("direct", 5.0, None)]).to_string();
        assert!(!table.contains("median"), "{table}");
    }

    #[test]
    fn the_table_shows_the_medians_relative_to_the_first_case() {
        let reports = vec![
            report("a r1", 100.0, None),
            report("b r1", 50.0, None),
            report("a r2", 100.0, None),
            report("b r2", 150.0, None),
        ];
        let table = Comparison::new(Map::new(), reports).to_string();
        let (_, medians) = table.split_once("median of rounds").expect("a table of medians");
        let line = medians.lines().find(|l| l.starts_with("b ")).expect("the median line of b");
        let fields: Vec<_> = line.split_whitespace().collect();
        assert_eq!(fields[..4], ["b", "2", "100", "100%"], "{table}");
    }
}
