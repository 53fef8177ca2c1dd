//! One Redis client over a single Redis ([`ConnectionManager`], which reconnects by itself) or
//! Redis Cluster (the cluster async connection). Every call goes through [`RedisClient::run`]:
//! the circuit breaker first, then a timeout, then latency and error metrics — so no request
//! ever waits longer than `timeout` on Redis, and none waits at all while the circuit is open.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::time::{Duration, Instant};

use super::breaker::Breaker;
use super::config::{RedisConfig, RedisServers};
use super::metrics::{Op, TierMetrics};

/// Why a Redis call produced no answer. Callers degrade (memory only, local limits); they
/// never turn this into a client-facing error.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The circuit is open: Redis was failing, and is not called until the cool-down ends.
    #[error("redis circuit open")]
    CircuitOpen,
    /// The cluster connection is not established yet.
    #[error("redis not connected")]
    NotConnected,
    /// No answer within the configured timeout.
    #[error("redis {op} timed out after {after:?}", op = op.as_str())]
    Timeout { op: Op, after: Duration },
    /// Redis or the connection failed.
    #[error("redis {op} failed", op = op.as_str())]
    Redis {
        op: Op,
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered with something this version cannot read.
    #[error("unreadable value at {key}")]
    Decode { key: String },
}

/// A connection to one Redis or to a cluster; cheap to clone (both are multiplexed handles).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The tier's Redis client: breaker, timeouts and metrics around every call.
#[derive(Debug)]
pub struct RedisClient {
    servers: RedisServers,
    conn: ArcSwapOption<Conn>,
    timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
    metrics: TierMetrics,
}

impl RedisClient {
    /// A client for `config`. A single Redis is connected lazily (the first call connects);
    /// a cluster is connected by [`RedisClient::connect`], which the tier's maintenance task
    /// retries until it succeeds. Never fails because Redis is down.
    pub fn new(config: &RedisConfig, metrics: TierMetrics) -> Result<Self, redis::RedisError> {
        let conn = match &config.servers {
            RedisServers::Single(info) => {
                let client = redis::Client::open((**info).clone())?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Some(Arc::new(Conn::Single(ConnectionManager::new_lazy_with_config(client, manager)?)))
            }
            RedisServers::Cluster(_) => None,
        };
        let breaker = Breaker::new(config.breaker, config.timeout, metrics.clone());
        if conn.is_none() {
            breaker.disconnected();
        }
        Ok(Self {
            servers: config.servers.clone(),
            conn: ArcSwapOption::new(conn),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            breaker,
            metrics,
        })
    }

    /// Connects to the cluster if that has not happened yet; a no-op for a single Redis.
    pub async fn connect(&self) -> Result<(), TierError> {
        let RedisServers::Cluster(nodes) = &self.servers else { return Ok(()) };
        if self.conn.load().is_some() {
            return Ok(());
        }
        let client = ClusterClient::builder(nodes.clone())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.timeout)
            .retries(1)
            .build()
            .map_err(|source| TierError::Redis { op: Op::Ping, source })?;
        let conn = tokio::time::timeout(self.connect_timeout, client.get_async_connection())
            .await
            .map_err(|_| TierError::Timeout { op: Op::Ping, after: self.connect_timeout })?
            .map_err(|source| TierError::Redis { op: Op::Ping, source })?;
        self.conn.store(Some(Arc::new(Conn::Cluster(conn))));
        self.breaker.connected();
        Ok(())
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Where Redis is.
    pub fn servers(&self) -> &RedisServers {
        &self.servers
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest wait for a new connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Sends one command.
    pub async fn query<T: redis::FromRedisValue>(&self, op: Op, cmd: &Cmd) -> Result<T, TierError> {
        self.run(op, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// Runs `call` on a connection, if the breaker allows, within the timeout; reports the
    /// outcome to the breaker and the metrics.
    pub async fn run<T, F, Fut>(&self, op: Op, call: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.try_acquire() {
            return Err(TierError::CircuitOpen);
        }
        let Some(conn) = self.conn.load_full() else {
            self.breaker.failure();
            self.metrics.error(op);
            return Err(TierError::NotConnected);
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call((*conn).clone())).await;
        self.metrics.observe(op, started.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(value)) => {
                self.breaker.success();
                return Ok(value);
            }
            Ok(Err(source)) => TierError::Redis { op, source },
            Err(_) => TierError::Timeout { op, after: self.timeout },
        };
        self.breaker.failure();
        self.metrics.error(op);
        if matches!(error, TierError::Timeout { .. }) {
            self.metrics.timeout(op);
        }
        tracing::debug!(error = %error, source = ?std::error::Error::source(&error), "redis call failed");
        Err(error)
    }
}
