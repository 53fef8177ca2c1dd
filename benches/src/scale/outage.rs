//! Redis killed under load: closed-loop load on every sidecar over warm keys, new keys and the
//! cluster-limited route; the single server is killed and started again (empty) after a
//! pause, or the cluster's master of the `{meta}` slot is killed and its replica takes over.
//! No request may fail meanwhile. The tier counts as recovered when every sidecar's circuit is
//! closed and an answer filled on one sidecar is a second-level hit on another (the origin
//! sees that key once).

use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::time::Instant;

use super::origin::CountingOrigin;
use super::redis::SharedRedis;
use super::report::OutageFigures;
use super::sidecar::Sidecar;
use super::spawn_load;

/// Pause between two recovery probes.
const PROBE_PAUSE: Duration = Duration::from_millis(20);

/// How the outage is staged.
#[derive(Debug, Clone, Copy)]
pub struct Staging {
    /// Load before the kill.
    pub lead: Duration,
    /// How long the single server stays down (the cluster fails over by itself).
    pub down_for: Duration,
    /// The whole phase under load; recovery must happen inside it.
    pub duration: Duration,
    /// Load connections per sidecar.
    pub connections: usize,
}

/// Runs the outage with load over `load_paths`; probe keys are named after `run`.
pub async fn run(
    sidecars: &[Sidecar],
    redis: &mut SharedRedis,
    origin: &CountingOrigin,
    prefix: &str,
    load_paths: &[String],
    staging: Staging,
    run: &str,
) -> anyhow::Result<OutageFigures> {
    let Staging { lead, down_for, duration, connections } = staging;
    let started = Instant::now();
    let loads = spawn_load(sidecars, load_paths, connections, Duration::ZERO, duration)?;
    tokio::time::sleep(lead).await;

    let killed_at = Instant::now();
    let killed = redis.fail(prefix).await?;
    redis.recover(prefix, killed_at, down_for).await?;
    let back_at = Instant::now();
    let mut recovered_at = None;
    let mut probe = 0;
    while Instant::now() < started + duration {
        probe += 1;
        if whole(sidecars, origin, &format!("/api/fast/probe-{run}-{probe}")).await {
            recovered_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }

    let reports = try_join_all(loads).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(OutageFigures {
        killed,
        requests: reports.iter().map(|r| r.requests).sum(),
        failed: reports.iter().map(|r| r.status_errors - r.limited + r.transport_errors).sum(),
        back_after_ms: ms(back_at - killed_at),
        recovered_after_back_ms: recovered_at.map(|at| ms(at - back_at)),
        recovered_after_kill_ms: recovered_at.map(|at| ms(at - killed_at)),
    })
}

/// Whether the tier is whole: every circuit closed, and `path` filled on the first sidecar is
/// answered by the second without the origin.
async fn whole(sidecars: &[Sidecar], origin: &CountingOrigin, path: &str) -> bool {
    for sidecar in sidecars {
        if !sidecar.redis_up().await {
            return false;
        }
    }
    let (Some(filler), Some(reader)) = (sidecars.first(), sidecars.get(1)) else { return false };
    let filled = filler.get(path).await.is_ok_and(|a| a.status.is_success());
    filled && reader.get(path).await.is_ok_and(|a| a.status.is_success()) && origin.hits(path) == 1
}
