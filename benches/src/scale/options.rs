//! The command line of `accel-scale`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::redis::RedisKind;

/// Command line of `accel-scale`.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "accel-scale",
    about = "N sidecars on one shared Redis tier: cold-key storms, purge propagation, cluster rate limits, a Redis outage"
)]
pub struct Options {
    /// The `accel` binary the sidecars run.
    #[arg(long, default_value = "target/release/accel")]
    pub accel: PathBuf,
    /// Sidecars (at least 2).
    #[arg(long, default_value = "3", value_parser = clap::value_parser!(u16).range(2..=16))]
    pub sidecars: u16,
    /// The kinds of Redis to measure on, in turn (private servers on free ports, never the
    /// shared one).
    #[arg(long, value_delimiter = ',', default_value = "single,cluster")]
    pub redis: Vec<RedisKind>,
    /// The origin's latency on the storm's and the background load's paths.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "millis")]
    pub origin_latency: Duration,
    /// Concurrent requests per sidecar in a cold-key storm.
    #[arg(long, default_value = "200")]
    pub storm_requests: usize,
    /// Cold-key storms, each on a new key.
    #[arg(long, default_value = "5")]
    pub storms: usize,
    /// How long purges are measured (back to back) under load.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "millis")]
    pub purge_duration: Duration,
    /// Background load connections per sidecar (purge and outage phases), and load connections
    /// per sidecar against the rate limit.
    #[arg(long, default_value = "4")]
    pub connections: usize,
    /// The cluster rate limit, in requests per second (burst: a tenth of it).
    #[arg(long, default_value = "200")]
    pub limit_rate: u32,
    /// How long the rate limit is measured, after a 2 s warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "millis")]
    pub limit_duration: Duration,
    /// How long the single Redis stays down in the outage (the cluster fails over by itself).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "millis")]
    pub down_for: Duration,
    /// The whole outage phase under load (2 s before the kill; recovery must fall inside it).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "millis")]
    pub outage_duration: Duration,
    /// `[redis] l2.lock` of the sidecars.
    #[arg(long, default_value = "10s")]
    pub lock: String,
    /// `[redis] timeout` of the sidecars.
    #[arg(long, default_value = "50ms")]
    pub redis_timeout: String,
    /// `[redis] breaker.cool_down` of the sidecars: how long an open circuit waits before its
    /// probe, a floor under the recovery time.
    #[arg(long, default_value = "1s")]
    pub cool_down: String,
    /// Tokio worker threads of the benchmark (clients and origin).
    #[arg(long, default_value = "2")]
    #[serde(skip)]
    pub threads: NonZeroUsize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench/scale-report.json")]
    pub out: PathBuf,
}

/// Durations in the report's `params`, in milliseconds.
fn millis<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u128(value.as_millis())
}
