//! The scale benchmark's figures, judged against the targets of the shared tier, printed as a
//! table and written as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::counters::PhaseCounters;
use super::redis::RedisKind;

/// The whole run: its settings and one set of figures per kind of Redis.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub params: serde_json::Value,
    pub runs: Vec<RedisRun>,
    /// Every figure that has a target, with its verdict.
    pub targets: Vec<Verdict>,
}

/// The four measurements on one kind of Redis.
#[derive(Debug, Serialize)]
pub struct RedisRun {
    pub redis: RedisKind,
    pub sidecars: usize,
    pub storm: StormFigures,
    pub purge: PurgeFigures,
    pub limit: LimitFigures,
    pub outage: OutageFigures,
    /// Every sidecar's `accel_redis_*` counters that moved, per phase.
    pub tier: Vec<PhaseCounters>,
}

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    /// Nearest-rank percentiles of `samples` (all zero when there are none).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
            samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self { samples: samples.len(), p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// Cold-key storms: many concurrent requests for one new key on every sidecar at once.
#[derive(Debug, Serialize)]
pub struct StormFigures {
    /// Concurrent requests per sidecar in each storm.
    pub requests_per_sidecar: usize,
    /// Requests the origin received for each storm's key.
    pub origin_fetches: Vec<u64>,
    /// Answers whose `Cache-Status` says they went upstream themselves (`fwd-status=`).
    pub upstream_answers: u64,
    /// Answers other than `200`, and requests without an answer.
    pub failed: u64,
    /// Latency of the answers that did not go upstream themselves: from sending the request
    /// to its last body byte.
    pub followers: Spread,
    /// The origin's latency on these paths, which every follower waits for at least once.
    pub origin_latency_ms: f64,
}

/// Purge propagation: from the purge request on one sidecar until each sidecar stops serving
/// the purged answer, under background load.
#[derive(Debug, Serialize)]
pub struct PurgeFigures {
    /// Until the last sidecar (the purged one included) stopped serving it, per purge (a
    /// sidecar that did not counts as the 5 s it was given).
    pub to_every_sidecar: Spread,
    /// Until each sidecar stopped serving it, each sidecar of each purge a sample.
    pub per_sidecar: Spread,
    /// Sidecars that still served the purged answer after 5 s (counted, not in the spreads).
    pub not_applied: u64,
    /// Each of those: which sidecar, and where its purged answer came from.
    pub misses: Vec<PurgeMiss>,
    /// Background load: keep-alive connections per sidecar, over warm keys.
    pub load_connections: usize,
    /// Background load answered per second, all sidecars together.
    pub load_requests_per_sec: f64,
    /// Background answers other than 2xx/3xx, and transport errors.
    pub load_failed: u64,
}

/// A sidecar that still served a purged answer after 5 s.
#[derive(Debug, Serialize)]
pub struct PurgeMiss {
    /// The purge's number in the phase.
    pub purge: usize,
    pub path: String,
    /// The sidecar that kept serving it.
    pub sidecar: String,
    /// The sidecar the purge was sent to.
    pub purger: String,
    /// The origin's fetch number it kept serving.
    pub held: u64,
    /// Where one more poll's answer came from: `memory` (the purge never reached it),
    /// `the second level` (an entry stored after the purge with the purged answer), or `a new
    /// answer, after the deadline`.
    pub served_from: &'static str,
}

/// A `scope = "cluster"` rate limit under load on every sidecar from one client address.
#[derive(Debug, Serialize)]
pub struct LimitFigures {
    /// The limit, in requests per second.
    pub rate_per_sec: u32,
    /// The measured phase (after a warm-up that spends the burst).
    pub duration_secs: f64,
    /// What the limit lets through in that phase: rate × duration.
    pub expected: f64,
    /// `2xx` answers, all sidecars together.
    pub admitted: u64,
    /// `429` answers.
    pub limited: u64,
    /// Other statuses and transport errors.
    pub failed: u64,
    /// Requests answered per second, all sidecars together: what the limit had to hold back.
    pub offered_per_sec: f64,
    /// (admitted − expected) / expected, in percent.
    pub deviation_pct: f64,
}

/// Redis killed under load, then back (restarted, or a replica promoted).
#[derive(Debug, Serialize)]
pub struct OutageFigures {
    /// What was killed.
    pub killed: String,
    /// Requests answered during the whole phase, all sidecars together.
    pub requests: u64,
    /// Answers other than 2xx/3xx/429, and transport errors, during the whole phase.
    pub failed: u64,
    /// From the kill until Redis was back: the restart (after a chosen pause) or the failover.
    pub back_after_ms: f64,
    /// From Redis back until the tier was whole again on every sidecar: each one's circuit
    /// closed and a fill on one sidecar a second-level hit on another; `None`: not within
    /// the phase.
    pub recovered_after_back_ms: Option<f64>,
    /// From the kill until the tier was whole again.
    pub recovered_after_kill_ms: Option<f64>,
}

/// One figure against its target.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub redis: RedisKind,
    pub name: &'static str,
    pub target: &'static str,
    pub actual: String,
    pub passed: bool,
}

impl RedisRun {
    /// The figures the shared tier is judged on.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let redis = self.redis;
        let worst_storm = self.storm.origin_fetches.iter().copied().max().unwrap_or(0);
        vec![
            Verdict {
                redis,
                name: "cold-key storm: origin fetches per storm",
                target: "1",
                actual: format!("{:?}", self.storm.origin_fetches),
                passed: worst_storm == 1 && self.storm.failed == 0,
            },
            Verdict {
                redis,
                name: "purge to every sidecar, p99",
                target: "< 100 ms",
                actual: format!("{:.1} ms", self.purge.to_every_sidecar.p99_ms),
                passed: self.purge.to_every_sidecar.p99_ms < 100.0 && self.purge.not_applied == 0,
            },
            Verdict {
                redis,
                name: "cluster rate limit: admitted vs limit",
                target: "within 5 %",
                actual: format!("{:+.2} %", self.limit.deviation_pct),
                passed: self.limit.deviation_pct.abs() <= 5.0 && self.limit.failed == 0,
            },
            Verdict {
                redis,
                name: "Redis killed under load: failed requests",
                target: "0",
                actual: self.outage.failed.to_string(),
                passed: self.outage.failed == 0 && self.outage.recovered_after_kill_ms.is_some(),
            },
        ]
    }
}

impl ScaleReport {
    /// Whether every target was met.
    pub fn passed(&self) -> bool {
        self.targets.iter().all(|v| v.passed)
    }

    /// The figures as a text table, then the verdicts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for run in &self.runs {
            let RedisRun { redis, sidecars, storm, purge, limit, outage, tier } = run;
            let _ = writeln!(out, "\n== {sidecars} sidecars on Redis ({redis}) ==");
            let _ = writeln!(
                out,
                "cold-key storm    {} x {} concurrent requests per storm: origin fetches {:?}, went upstream {}, failed {}",
                sidecars,
                storm.requests_per_sidecar,
                storm.origin_fetches,
                storm.upstream_answers,
                storm.failed
            );
            let _ = writeln!(
                out,
                "                  follower latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (origin answers in {:.0} ms; {} followers)",
                storm.followers.p50_ms,
                storm.followers.p99_ms,
                storm.followers.max_ms,
                storm.origin_latency_ms,
                storm.followers.samples
            );
            let _ = writeln!(
                out,
                "purge             to every sidecar p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} purges; per sidecar p50 {:.2} p99 {:.2}; not applied {})",
                purge.to_every_sidecar.p50_ms,
                purge.to_every_sidecar.p99_ms,
                purge.to_every_sidecar.max_ms,
                purge.to_every_sidecar.samples,
                purge.per_sidecar.p50_ms,
                purge.per_sidecar.p99_ms,
                purge.not_applied
            );
            let _ = writeln!(
                out,
                "                  under {} connections per sidecar: {:.0} req/s, {} failed",
                purge.load_connections, purge.load_requests_per_sec, purge.load_failed
            );
            for miss in &purge.misses {
                let _ = writeln!(
                    out,
                    "                  not applied: purge {} of {} (sent to {}) on {}: fetch {} still served, from {}",
                    miss.purge, miss.path, miss.purger, miss.sidecar, miss.held, miss.served_from
                );
            }
            let _ = writeln!(
                out,
                "rate limit        {}/s over {:.1} s: admitted {} of {:.0} expected ({:+.2} %), {} limited, {} failed, offered {:.0} req/s",
                limit.rate_per_sec,
                limit.duration_secs,
                limit.admitted,
                limit.expected,
                limit.deviation_pct,
                limit.limited,
                limit.failed,
                limit.offered_per_sec
            );
            let _ = writeln!(
                out,
                "outage            killed {}: {} failed of {} requests; back after {:.0} ms, {}",
                outage.killed,
                outage.failed,
                outage.requests,
                outage.back_after_ms,
                match (outage.recovered_after_back_ms, outage.recovered_after_kill_ms) {
                    (Some(back), Some(kill)) =>
                        format!("tier whole {back:.0} ms later ({kill:.0} ms after the kill)"),
                    _ => "tier NOT whole again within the phase".to_owned(),
                }
            );
            for phase in tier {
                let trouble = phase.trouble();
                if !trouble.is_empty() {
                    let _ = writeln!(out, "tier counters     {}: {trouble}", phase.phase);
                }
            }
        }
        let _ = writeln!(out, "\n{:<9} {:<44} {:<12} {:<22} result", "redis", "target", "wanted", "actual");
        for v in &self.targets {
            let _ = writeln!(
                out,
                "{:<9} {:<44} {:<12} {:<22} {}",
                v.redis.to_string(),
                v.name,
                v.target,
                v.actual,
                if v.passed { "pass" } else { "MISS" }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let spread = Spread::of(samples);
        assert_eq!((spread.samples, spread.p50_ms, spread.p99_ms, spread.max_ms), (100, 50.0, 99.0, 100.0));
        assert_eq!(Spread::of(Vec::new()).p99_ms, 0.0);
    }
}
