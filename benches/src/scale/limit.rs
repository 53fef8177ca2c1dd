//! Rate-limit accuracy over the cluster: closed-loop load from one client address on every
//! sidecar against a `scope = "cluster"` limit, far above what it allows. After a warm-up that
//! spends the burst, the sidecars together should admit the limit's rate times the measured
//! phase, not that times the number of sidecars, and not less.

use std::time::Duration;

use futures_util::future::try_join_all;

use super::report::LimitFigures;
use super::sidecar::Sidecar;
use super::spawn_load;

/// The path of the rate-limited route.
pub const LIMITED_PATH: &str = "/api/limited";

/// Measures for `duration` (after `warmup`) with `connections` connections per sidecar,
/// against a limit of `rate` per second.
pub async fn run(
    sidecars: &[Sidecar],
    rate: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LimitFigures> {
    let loads = spawn_load(sidecars, &[LIMITED_PATH.to_owned()], connections, warmup, duration)?;
    let reports = try_join_all(loads).await?;
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let refused: u64 = reports.iter().map(|r| r.status_errors).sum();
    let limited: u64 = reports.iter().map(|r| r.limited).sum();
    let transport: u64 = reports.iter().map(|r| r.transport_errors).sum();
    let seconds = duration.as_secs_f64();
    let expected = f64::from(rate) * seconds;
    let admitted = requests - refused;
    Ok(LimitFigures {
        rate_per_sec: rate,
        duration_secs: seconds,
        expected,
        admitted,
        limited,
        failed: refused - limited + transport,
        offered_per_sec: requests as f64 / seconds.max(f64::EPSILON),
        deviation_pct: (admitted as f64 - expected) / expected.max(f64::EPSILON) * 100.0,
    })
}
