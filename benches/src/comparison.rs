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
}

impl Comparison {
    /// Assembles `cases` with the given settings, stamped with the current time.
    pub fn new(params: Map<String, Value>, cases: Vec<Report>) -> Self {
        let generated_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { generated_unix, params, cases }
    }
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
        Ok(())
    }
}
