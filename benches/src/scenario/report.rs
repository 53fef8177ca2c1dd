//! The platform's report: `summary` (totals and success rate), `performance_grade`,
//! `results` (`test_name`, `target_value`, `actual_value`, `unit`, `passed`, `samples`) and
//! `recommendations`; and the same as a table.

use std::fmt::Write as _;

use serde::Serialize;

use super::file::{Measure, Target, Threshold};
use super::measure::Measured;

/// One target's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    pub test_name: String,
    pub target_value: f64,
    /// `below` or `above` the target.
    pub comparison: &'static str,
    /// `None` when nothing answered.
    pub actual_value: Option<f64>,
    pub unit: &'static str,
    pub passed: bool,
    pub samples: u64,
    /// Answers that were not 2xx/3xx, and failed exchanges, during the measurement; over 1 %
    /// of the samples fails a load measure whatever its value.
    pub errors: u64,
    /// Each endpoint's own value, where the measure has one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_endpoint: Vec<EndpointValue>,
}

/// One endpoint's value within a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointValue {
    pub endpoint: String,
    pub value: Option<f64>,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub total_tests: usize,
    pub passed_tests: usize,
    pub failed_tests: usize,
    /// Passed over total, in percent.
    pub success_rate: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The base URL measured.
    pub base_url: String,
    /// Seconds since the Unix epoch when the run ended.
    pub timestamp: u64,
    pub summary: Summary,
    /// `A` (every target met) to `F`.
    pub performance_grade: &'static str,
    pub results: Vec<TestResult>,
    pub recommendations: Vec<String>,
}

impl TestResult {
    /// The result of `target` from what was measured.
    pub fn new(target: &Target, measured: Measured) -> Self {
        let Measured { actual, samples, errors, by_endpoint } = measured;
        let clean = match target.measure {
            Measure::Latency(_) | Measure::RequestsPerSecond => errors * 100 <= samples,
            Measure::CacheHitRate | Measure::SuccessRate => true,
        };
        Self {
            test_name: target.name.clone(),
            target_value: target.threshold.value(),
            comparison: match target.threshold {
                Threshold::Below(_) => "below",
                Threshold::Above(_) => "above",
            },
            actual_value: actual.map(|v| (v * 100.0).round() / 100.0),
            unit: target.measure.unit(),
            passed: clean && actual.is_some_and(|v| target.threshold.met_by(v)),
            samples,
            errors,
            by_endpoint: by_endpoint
                .into_iter()
                .map(|(endpoint, value)| EndpointValue { endpoint, value })
                .collect(),
        }
    }

    /// What to look at when it failed.
    fn recommendation(&self, measure: Measure) -> Option<String> {
        if self.passed {
            return None;
        }
        let actual =
            self.actual_value.map_or_else(|| "no answer".to_owned(), |v| format!("{v} {}", self.unit));
        let target = format!(
            "{} {} {}",
            if self.comparison == "below" { "<" } else { ">" },
            self.target_value,
            self.unit
        );
        let worst = self
            .by_endpoint
            .iter()
            .filter_map(|e| Some((e.endpoint.as_str(), e.value?)))
            .max_by(|a, b| match measure {
                Measure::Latency(_) => a.1.total_cmp(&b.1),
                _ => b.1.total_cmp(&a.1),
            })
            .map(|(name, value)| format!(" (worst: {name} at {value:.1} {})", self.unit))
            .unwrap_or_default();
        if self.errors * 100 > self.samples
            && matches!(measure, Measure::Latency(_) | Measure::RequestsPerSecond)
        {
            return Some(format!(
                "{}: {} of {} answers were errors (429, 5xx or failed exchanges), so {actual} does not measure the API: check the rate limits the benchmark runs into and the error responses",
                self.test_name, self.errors, self.samples
            ));
        }
        let advice = match measure {
            Measure::Latency(_) => {
                "cache the slow endpoints or give them stale_while_revalidate; the sidecar's /health/summary names routes over their slo"
            }
            Measure::RequestsPerSecond => {
                "check the proxy's worker_threads and the origin's pool; cached routes answer without the origin"
            }
            Measure::CacheHitRate => {
                "check the routes' cache rules (ttl, key) and warm the URLs with accel warm before traffic"
            }
            Measure::SuccessRate => "look at the 5xx by route on the status page and at endpoint health",
        };
        Some(format!("{}: {actual}, target {target}{worst}: {advice}", self.test_name))
    }
}

impl BenchReport {
    /// The report of `results` (with their targets' measures) against `base_url`.
    pub fn new(base_url: String, timestamp: u64, results: Vec<(Measure, TestResult)>) -> Self {
        let total = results.len();
        let passed = results.iter().filter(|(_, r)| r.passed).count();
        let success_rate =
            if total == 0 { 0.0 } else { (passed as f64 * 1000.0 / total as f64).round() / 10.0 };
        let recommendations = results.iter().filter_map(|(m, r)| r.recommendation(*m)).collect();
        Self {
            base_url,
            timestamp,
            summary: Summary {
                total_tests: total,
                passed_tests: passed,
                failed_tests: total - passed,
                success_rate,
            },
            performance_grade: grade(success_rate),
            results: results.into_iter().map(|(_, r)| r).collect(),
            recommendations,
        }
    }

    /// True when every target was met.
    pub fn passed(&self) -> bool {
        self.summary.failed_tests == 0
    }

    /// The results as a table, then the summary line and the recommendations.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>12} {:>6} {:>9}  result",
            "test", "target", "actual", "unit", "samples"
        );
        for r in &self.results {
            let symbol = if r.comparison == "below" { "<" } else { ">" };
            let actual = r.actual_value.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
            let _ = writeln!(
                out,
                "{:<28} {:>12} {:>12} {:>6} {:>9}  {}",
                r.test_name,
                format!("{symbol} {}", r.target_value),
                actual,
                r.unit,
                r.samples,
                if r.passed { "pass" } else { "FAIL" }
            );
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} of {} targets met ({} %), grade {}",
            s.passed_tests, s.total_tests, s.success_rate, self.performance_grade
        );
        for r in &self.recommendations {
            let _ = writeln!(out, "- {r}");
        }
        out
    }
}

/// `A` at 100 %, `B` from 80 %, `C` from 60 %, `D` from 40 %, else `F`.
pub fn grade(success_rate: f64) -> &'static str {
    match success_rate {
        r if r >= 100.0 => "A",
        r if r >= 80.0 => "B",
        r if r >= 60.0 => "C",
        r if r >= 40.0 => "D",
        _ => "F",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn target(name: &str, measure: Measure, threshold: Threshold) -> Target {
        Target {
            name: name.into(),
            measure,
            threshold,
            endpoints: vec![0],
            concurrency: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            repeats: 1,
        }
    }

    #[test]
    fn a_missed_target_fails_the_run_and_is_explained() {
        let p95 = target("p95_latency", Measure::Latency(95), Threshold::Below(100.0));
        let rps = target("throughput", Measure::RequestsPerSecond, Threshold::Above(1000.0));
        let slow = Measured {
            actual: Some(142.04),
            samples: 900,
            errors: 0,
            by_endpoint: vec![("lead".into(), Some(12.0)), ("detect".into(), Some(142.04))],
        };
        let fast = Measured { actual: Some(5000.0), samples: 50_000, errors: 0, by_endpoint: Vec::new() };

        let report = BenchReport::new(
            "http://127.0.0.1:8080".into(),
            0,
            vec![
                (Measure::Latency(95), TestResult::new(&p95, slow)),
                (Measure::RequestsPerSecond, TestResult::new(&rps, fast)),
            ],
        );

        assert!(!report.passed());
        assert_eq!(
            report.summary,
            Summary { total_tests: 2, passed_tests: 1, failed_tests: 1, success_rate: 50.0 }
        );
        assert_eq!(report.performance_grade, "D");
        assert_eq!(report.recommendations.len(), 1);
        assert!(
            report.recommendations[0]
                .starts_with("p95_latency: 142.04 ms, target < 100 ms (worst: detect at 142.0 ms): "),
            "{}",
            report.recommendations[0]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["results"][0]["test_name"], "p95_latency");
        assert_eq!(json["results"][0]["passed"], false);
        assert_eq!(json["results"][1]["actual_value"], 5000.0);
        assert_eq!(json["results"][1]["unit"], "req/s");
        assert!(
            report
                .table()
                .contains("p95_latency                         < 100       142.04     ms       900  FAIL")
        );
    }

    #[test]
    fn nothing_answered_is_a_failure() {
        let hit = target("cache_hit_rate", Measure::CacheHitRate, Threshold::Above(90.0));
        let result =
            TestResult::new(&hit, Measured { actual: None, samples: 0, errors: 0, by_endpoint: Vec::new() });
        assert!(!result.passed);
        let p95 = target("p95_latency", Measure::Latency(95), Threshold::Below(100.0));
        let refused = TestResult::new(
            &p95,
            Measured { actual: Some(0.5), samples: 1000, errors: 900, by_endpoint: Vec::new() },
        );
        assert!(!refused.passed, "fast 429s are not a fast API");
        assert!(
            refused
                .recommendation(Measure::Latency(95))
                .unwrap()
                .starts_with("p95_latency: 900 of 1000 answers were errors")
        );
        assert_eq!((grade(100.0), grade(80.0), grade(0.0)), ("A", "B", "F"));
    }
}
