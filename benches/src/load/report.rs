//! The result of one load test, as text for people and JSON for scripts.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::{connection::ConnectionStats, cpu::ServerCpu, target::Target};

/// What a load test measured, over its measured phase only (the warm-up is not in it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Name of the run (`--label`), empty when none was given.
    pub label: String,
    /// `host:port` the run connected to.
    pub target: String,
    /// Distinct URLs requested round-robin.
    pub urls: usize,
    /// Keep-alive connections, each with one request in flight.
    pub concurrency: usize,
    /// Length of the measured phase, in seconds.
    pub duration_secs: f64,
    /// Completed responses, whatever their status.
    pub requests: u64,
    /// Responses whose status was neither 2xx nor 3xx (included in `requests`).
    pub status_errors: u64,
    /// Of `status_errors`, the `429` answers: refused by a rate limit.
    #[serde(default)]
    pub limited: u64,
    /// Failed connects, resets and malformed responses (not in `requests`).
    pub transport_errors: u64,
    /// `requests` per second of the measured phase.
    pub requests_per_sec: f64,
    /// Latency from sending the request to reading the last body byte.
    pub latency_us: Latency,
    /// Response body bytes read (headers not included).
    pub bytes_received: u64,
    /// The server's CPU time over the measured phase, when its process was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile (the platform's latency objective).
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest response.
    pub max: u64,
}

impl Report {
    /// Summarises the merged counts of a run that measured for `duration`.
    pub fn new(
        label: String,
        target: &Target,
        concurrency: usize,
        duration: Duration,
        stats: &ConnectionStats,
    ) -> Self {
        let histogram = &stats.latency_us;
        let duration_secs = duration.as_secs_f64();
        let requests = stats.responses();
        Self {
            label,
            target: target.addr().to_owned(),
            urls: target.url_count(),
            concurrency,
            duration_secs,
            requests,
            status_errors: stats.status_errors,
            limited: stats.limited,
            transport_errors: stats.transport_errors,
            requests_per_sec: requests as f64 / duration_secs,
            latency_us: Latency {
                mean: histogram.mean(),
                p50: histogram.value_at_quantile(0.50),
                p90: histogram.value_at_quantile(0.90),
                p95: histogram.value_at_quantile(0.95),
                p99: histogram.value_at_quantile(0.99),
                p999: histogram.value_at_quantile(0.999),
                max: histogram.max(),
            },
            bytes_received: stats.body_bytes,
            server_cpu: None,
        }
    }

    /// Whether the run got any answer at all and no transport error; a script treats a run
    /// that fails this as broken rather than slow.
    pub fn is_clean(&self) -> bool {
        self.requests > 0 && self.transport_errors == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            label,
            target,
            urls,
            concurrency,
            duration_secs,
            requests,
            status_errors,
            limited,
            transport_errors,
            requests_per_sec,
            latency_us: Latency { mean, p50, p90, p95, p99, p999, max },
            bytes_received,
            server_cpu,
        } = self;
        if !label.is_empty() {
            writeln!(f, "{label}")?;
        }
        writeln!(
            f,
            "  target       {target} ({urls} url(s)), {concurrency} connections, {duration_secs:.1}s"
        )?;
        writeln!(f, "  requests     {requests} ({requests_per_sec:.0} req/s)")?;
        writeln!(
            f,
            "  errors       {status_errors} status (not 2xx/3xx; {limited} of them 429), {transport_errors} transport"
        )?;
        writeln!(
            f,
            "  latency µs   p50 {p50}  p90 {p90}  p95 {p95}  p99 {p99}  p99.9 {p999}  max {max}  mean {mean:.1}"
        )?;
        write!(
            f,
            "  received     {bytes_received} body bytes ({:.1} MiB/s)",
            *bytes_received as f64 / duration_secs / (1024.0 * 1024.0)
        )?;
        if let Some(ServerCpu { user_secs, system_secs, us_per_request, cores }) = server_cpu {
            write!(
                f,
                "\n  server cpu   {us_per_request:.2} µs/request ({user_secs:.2}s user, {system_secs:.2}s system, {cores:.2} cores)"
            )?;
        }
        Ok(())
    }
}
