//! `accel-scale`: N sidecars (separate `accel` processes) in front of one counting origin, on
//! one shared Redis tier — a private `redis-server`, then a private six-node Redis Cluster —
//! measured end to end:
//!
//! - [`storm`]: cold-key storms, origin fetches per storm and follower latency;
//! - [`purge`]: purge propagation to every sidecar under load;
//! - [`limit`]: a `scope = "cluster"` rate limit's admitted requests against its rate;
//! - [`outage`]: Redis killed under load: failed requests and time to recover.
//!
//! [`counters`] scrapes every sidecar's `accel_redis_*` counters after each phase, so the
//! report says what the tier saw (errors, timeouts, the circuit, locks, purges).
//!
//! The other modules: [`options`] (the command line), [`origin`] (the counting origin),
//! [`redis`] (the private Redis of either kind), [`sidecar`] (one `accel run` process),
//! [`report`] (figures, targets, table, JSON).

pub mod counters;
pub mod limit;
pub mod options;
pub mod origin;
pub mod outage;
pub mod purge;
pub mod redis;
pub mod report;
pub mod sidecar;
pub mod storm;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::try_join_all;
use tokio::task::JoinHandle;

pub use options::Options;
use origin::{CountingOrigin, SLOW_PREFIX};
use redis::SharedRedis;
use report::{RedisRun, ScaleReport};
use sidecar::Sidecar;

use crate::load::{self, Target};

/// Warm keys of the background load.
const WARM_KEYS: usize = 32;
/// The rate limit's warm-up, which spends its burst before counting starts.
const LIMIT_WARMUP: Duration = Duration::from_secs(2);
/// Load before the outage's kill.
const OUTAGE_LEAD: Duration = Duration::from_secs(2);

/// Runs every measurement on every kind of Redis in `options`.
pub async fn run(options: &Options) -> anyhow::Result<ScaleReport> {
    let origin = CountingOrigin::start(options.origin_latency).await?;
    let workspace = Workspace::create()?;
    let mut runs = Vec::with_capacity(options.redis.len());
    for &kind in &options.redis {
        eprintln!("accel-scale: {} sidecars on Redis ({kind})", options.sidecars);
        let mut redis = SharedRedis::start(kind).await?;
        let run = format!("{kind}-{}", fastrand::u32(..));
        let prefix = format!("scale:{run}:");
        let settings = format!(
            "timeout = \"{}\"\nbreaker = {{ failures = 5, cool_down = \"{}\" }}\nl2 = {{ lock = \"{}\" }}",
            options.redis_timeout, options.cool_down, options.lock
        );
        let section = redis.section(&prefix, &settings).await?;
        let rules = rules(options.limit_rate);
        let sidecars = try_join_all((0..options.sidecars).map(|i| {
            Sidecar::start(
                &options.accel,
                workspace.0.join(format!("{kind}-{i}")),
                origin.addr(),
                &rules,
                &section,
            )
        }))
        .await?;

        let mut scraper = counters::Scraper::start(&sidecars).await?;
        let mut tier = Vec::with_capacity(4);
        eprintln!("accel-scale: {kind}: cold-key storms");
        let storm = storm::run(
            &sidecars,
            &origin,
            options.storm_requests,
            options.storms,
            options.origin_latency,
            &run,
        )
        .await?;
        tier.push(scraper.phase("storm", &sidecars).await?);
        let warm: Vec<String> = (0..WARM_KEYS).map(|k| format!("{SLOW_PREFIX}warm-{run}-{k}")).collect();
        for path in &warm {
            for sidecar in &sidecars {
                sidecar.get(path).await?;
            }
        }
        eprintln!("accel-scale: {kind}: purge propagation under load");
        let purge = purge::run(&sidecars, options.purge_duration, options.connections, &warm, &run).await?;
        tier.push(scraper.phase("purge", &sidecars).await?);
        eprintln!("accel-scale: {kind}: cluster rate limit");
        let limit = limit::run(
            &sidecars,
            options.limit_rate,
            options.connections,
            LIMIT_WARMUP,
            options.limit_duration,
        )
        .await?;
        tier.push(scraper.phase("limit", &sidecars).await?);
        eprintln!("accel-scale: {kind}: Redis outage under load");
        // Warm keys, keys no sidecar has seen yet, and the limited route.
        let mut mix = warm.clone();
        mix.extend((0..2_000).map(|k| format!("/api/fast/cold-{run}-{k}")));
        mix.push(limit::LIMITED_PATH.to_owned());
        let staging = outage::Staging {
            lead: OUTAGE_LEAD,
            down_for: options.down_for,
            duration: options.outage_duration,
            connections: options.connections,
        };
        let outage = outage::run(&sidecars, &mut redis, &origin, &prefix, &mix, staging, &run).await?;
        tier.push(scraper.phase("outage", &sidecars).await?);
        runs.push(RedisRun { redis: kind, sidecars: sidecars.len(), storm, purge, limit, outage, tier });
    }
    let targets = runs.iter().flat_map(RedisRun::verdicts).collect();
    Ok(ScaleReport { params: serde_json::to_value(options)?, runs, targets })
}

/// The sidecars' routes: cached items (the host left out of the key, so that every sidecar
/// shares one entry whatever address it was asked on) tagged by id, and a cluster-limited
/// route.
fn rules(rate: u32) -> String {
    let burst = (rate / 10).max(1);
    format!(
        r#"
[[route]]
name = "items"
match = {{ path = "/api/items/{{id}}" }}
upstream = "api"
cache = {{ ttl = "5m", tags = ["item:{{path.id}}"], key = {{ host = false }} }}

[[route]]
name = "fast"
match = {{ path = "/api/fast/{{id}}" }}
upstream = "api"
cache = {{ ttl = "5m", tags = ["fast:{{path.id}}"], key = {{ host = false }} }}

[[route]]
name = "limited"
match = {{ path = "{}" }}
upstream = "api"
rate_limit = {{ rate = "{rate}/s", burst = {burst}, key = "client_ip", scope = "cluster" }}
"#,
        limit::LIMITED_PATH
    )
}

/// Closed-loop load on every sidecar over `paths`: `connections` each, for `warmup` (not
/// counted) then `duration`.
fn spawn_load(
    sidecars: &[Sidecar],
    paths: &[String],
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Vec<JoinHandle<load::Report>>> {
    sidecars
        .iter()
        .map(|sidecar| {
            let urls = paths
                .iter()
                .map(|p| format!("http://{}{p}", sidecar.addr()).parse())
                .collect::<Result<Vec<http::Uri>, _>>()?;
            let options = load::Options {
                target: Target::new(&urls)?,
                concurrency: NonZeroUsize::new(connections).unwrap_or(NonZeroUsize::MIN),
                duration,
                warmup,
                headers: Vec::new(),
                method: http::Method::GET,
                body: bytes::Bytes::new(),
                label: sidecar.name().to_owned(),
                server_pids: Vec::new(),
            };
            Ok(tokio::spawn(load::run(options)))
        })
        .collect()
}

/// The sidecars' configs and logs; removed at the end.
struct Workspace(PathBuf);

impl Workspace {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("accel-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
