//! The Redis the sidecars share: a private `redis-server` or a private six-node Redis Cluster
//! (the test harness's), never the machine's shared Redis. Both can be failed on purpose: the
//! single server is killed and started again empty on its port, the cluster loses the master
//! of the tier's `{meta}` slot (every second-level read and every purge needs it) and
//! promotes its replica by itself.

use std::fmt;
use std::time::Duration;

use accel::tier::Keys;
use accel_e2e::{PrivateCluster, PrivateRedis, private_cluster, private_redis};
use anyhow::{Context, bail};
use tokio::time::Instant;

/// Which kind of Redis a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisKind {
    /// One `redis-server`.
    Single,
    /// Six `redis-server`s in cluster mode: three masters, three replicas.
    Cluster,
}

impl fmt::Display for RedisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
        })
    }
}

/// A running private Redis of either kind.
#[derive(Debug)]
pub enum SharedRedis {
    Single(PrivateRedis),
    /// The cluster, and the port of the master [`fail`](SharedRedis::fail) killed.
    Cluster(PrivateCluster, Option<u16>),
}

/// Longest wait for a replica to take over a killed master.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

impl SharedRedis {
    /// Starts one of `kind`.
    pub async fn start(kind: RedisKind) -> anyhow::Result<Self> {
        match kind {
            RedisKind::Single => {
                private_redis().await.map(Self::Single).context("cannot start a private redis-server")
            }
            RedisKind::Cluster => private_cluster()
                .await
                .map(|c| Self::Cluster(c, None))
                .context("cannot start a private Redis Cluster"),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> RedisKind {
        match self {
            Self::Single(_) => RedisKind::Single,
            Self::Cluster(..) => RedisKind::Cluster,
        }
    }

    /// The sidecars' `[redis]` section: its address(es), then `settings`. On the cluster the
    /// master that [`fail`](Self::fail) will kill is listed first, so the sidecars' purge
    /// subscriptions are on it and must move too.
    pub async fn section(&self, prefix: &str, settings: &str) -> anyhow::Result<String> {
        let settings = format!("prefix = \"{prefix}\"\n{settings}");
        match self {
            Self::Single(redis) => Ok(format!("[redis]\nurl = \"{}\"\n{settings}\n", redis.url())),
            Self::Cluster(cluster, _) => {
                let master = meta_master(cluster, prefix).await?;
                Ok(cluster.redis_section_from(master, &settings))
            }
        }
    }

    /// Kills the single server, or the cluster's master of the `{meta}` slot of `prefix`;
    /// returns what was killed.
    pub async fn fail(&mut self, prefix: &str) -> anyhow::Result<String> {
        match self {
            Self::Single(redis) => {
                redis.kill();
                Ok(format!("redis-server on port {}", redis.port()))
            }
            Self::Cluster(cluster, killed) => {
                let master = meta_master(cluster, prefix).await?;
                cluster.kill(master);
                *killed = Some(master);
                Ok(format!("the master of the {{meta}} slot, port {master}"))
            }
        }
    }

    /// Brings Redis back after [`fail`](Self::fail): the single server is started again
    /// (empty) once `down_for` has passed since `failed_at`; on the cluster, waits until a
    /// replica serves the `{meta}` slot and the cluster reports `ok`.
    pub async fn recover(
        &mut self,
        prefix: &str,
        failed_at: Instant,
        down_for: Duration,
    ) -> anyhow::Result<()> {
        match self {
            Self::Single(redis) => {
                tokio::time::sleep_until(failed_at + down_for).await;
                redis.restart().await.map_err(anyhow::Error::msg)
            }
            Self::Cluster(cluster, killed) => {
                let deadline = Instant::now() + FAILOVER_DEADLINE;
                loop {
                    if let Some(port) = cluster.master_of(&Keys::new(prefix).generations()).await
                        && Some(port) != *killed
                        && cluster.wait_ok(Duration::ZERO).await
                    {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!("no replica took over the {{meta}} slot in {FAILOVER_DEADLINE:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn meta_master(cluster: &PrivateCluster, prefix: &str) -> anyhow::Result<u16> {
    cluster.master_of(&Keys::new(prefix).generations()).await.context("no live master serves the {meta} slot")
}
