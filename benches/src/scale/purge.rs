//! Purge propagation under load: a key every sidecar holds in memory is purged by tag on one
//! sidecar (each in turn), and every sidecar is polled, request after request, until it stops
//! serving the purged answer (the origin's `fetch` number in its answer moves on). A sidecar's figure is
//! when its first poll that got a new answer was sent, counted from the purge request: the
//! purge had reached it by then, and its previous poll (one memory hit earlier) had not.
//!
//! Meanwhile every sidecar serves closed-loop background load over warm keys.

use std::time::Duration;

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use tokio::time::Instant;

use super::origin::fetch_number;
use super::report::{PurgeFigures, PurgeMiss, Spread};
use super::sidecar::Sidecar;
use super::spawn_load;

/// How long a sidecar may keep serving a purged answer before it counts as not applied.
const APPLY_DEADLINE: Duration = Duration::from_secs(5);

/// Purges keys for `duration` under `connections` connections of load per sidecar over
/// `load_paths`; keys are named after `run`.
pub async fn run(
    sidecars: &[Sidecar],
    duration: Duration,
    connections: usize,
    load_paths: &[String],
    run: &str,
) -> anyhow::Result<PurgeFigures> {
    let loads = spawn_load(sidecars, load_paths, connections, Duration::ZERO, duration)?;

    let started = Instant::now();
    // Leave the last purge room to finish inside the load.
    let stop = started + duration.saturating_sub(Duration::from_secs(1));
    let (mut to_every, mut per_sidecar, mut not_applied) = (Vec::new(), Vec::new(), 0);
    let mut misses = Vec::new();
    let mut purge = 0usize;
    while Instant::now() < stop {
        let path = format!("/api/fast/{run}-{purge}");
        // Every sidecar holds the answer in memory (the first fetches it, the others take it
        // from Redis); each one's fetch number is what it must stop serving.
        let mut held = Vec::with_capacity(sidecars.len());
        for sidecar in sidecars {
            let answer = sidecar.get(&path).await?;
            held.push(
                fetch_number(&answer.body).with_context(|| format!("{path}: not the origin's answer"))?,
            );
        }
        let purger = &sidecars[purge % sidecars.len()];
        let json = format!("{{\"tags\":[\"fast:{run}-{purge}\"]}}");
        let sent = Instant::now();
        let (purged, applied) = tokio::join!(
            purger.purge(&json),
            join_all(
                sidecars
                    .iter()
                    .zip(&held)
                    .map(|(sidecar, &held)| first_new_answer(sidecar, &path, held, sent))
            )
        );
        purged.with_context(|| format!("purge {path}"))?;
        let mut slowest = Duration::ZERO;
        for ((after, sidecar), &held) in applied.into_iter().zip(sidecars).zip(&held) {
            match after? {
                Some(after) => {
                    per_sidecar.push(after);
                    slowest = slowest.max(after);
                }
                // At least the deadline, for this purge's figure.
                None => {
                    not_applied += 1;
                    slowest = slowest.max(APPLY_DEADLINE);
                    misses.push(miss(sidecar, purger, purge, &path, held).await?);
                }
            }
        }
        to_every.push(slowest);
        purge += 1;
    }

    let reports = try_join_all(loads).await?;
    let seconds = duration.as_secs_f64().max(f64::EPSILON);
    Ok(PurgeFigures {
        to_every_sidecar: Spread::of(to_every),
        per_sidecar: Spread::of(per_sidecar),
        not_applied,
        misses,
        load_connections: connections,
        load_requests_per_sec: reports.iter().map(|r| r.requests as f64).sum::<f64>() / seconds,
        load_failed: reports.iter().map(|r| r.status_errors + r.transport_errors).sum(),
    })
}

/// Polls `path` on `sidecar` until it answers another fetch than `held`; how long after `sent`
/// that poll was sent, or `None` after [`APPLY_DEADLINE`].
async fn first_new_answer(
    sidecar: &Sidecar,
    path: &str,
    held: u64,
    sent: Instant,
) -> anyhow::Result<Option<Duration>> {
    loop {
        let poll = Instant::now();
        if poll - sent > APPLY_DEADLINE {
            return Ok(None);
        }
        let answer = sidecar.get(path).await?;
        if fetch_number(&answer.body) != Some(held) {
            return Ok(Some(poll - sent));
        }
    }
}

/// What a sidecar that kept serving a purged answer serves it from: one more poll, between two
/// scrapes of its second-level hits (the background load's warm keys are all in memory).
async fn miss(
    sidecar: &Sidecar,
    purger: &Sidecar,
    purge: usize,
    path: &str,
    held: u64,
) -> anyhow::Result<PurgeMiss> {
    const L2_HITS: &str = "accel_redis_l2_total{result=\"hit\"}";
    let before = sidecar.metric(L2_HITS).await?;
    let answer = sidecar.get(path).await?;
    let after = sidecar.metric(L2_HITS).await?;
    let still = fetch_number(&answer.body) == Some(held);
    Ok(PurgeMiss {
        purge,
        path: path.to_owned(),
        sidecar: sidecar.name().to_owned(),
        purger: purger.name().to_owned(),
        held,
        served_from: match (still, after > before) {
            (false, _) => "a new answer, after the deadline",
            (true, true) => "the second level",
            (true, false) => "memory",
        },
    })
}
