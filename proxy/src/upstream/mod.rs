//! Upstreams: named pools of origin endpoints, least-connections picking, health.
//!
//! - [`endpoint`]: one address with its in-flight count, health and ejection state;
//! - [`pick`]: least-connections among available endpoints, ties broken at random;
//! - [`health`]: active health checks that mark endpoints unhealthy and re-admit them.

mod endpoint;
pub mod health;
mod pick;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use pick::Pick;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;

/// The name of an upstream pool, as in `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(Arc<str>);

impl UpstreamName {
    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for UpstreamName {
    type Error = String;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
            return Err(format!("{name:?}: upstream names use letters, digits, '-' and '_'"));
        }
        Ok(Self(name.into()))
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One endpoint's address: `host:port` (a name is resolved at connect time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointAddr(Authority);

impl EndpointAddr {
    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// As a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.0
    }
}

impl FromStr for EndpointAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let authority: Authority = text.parse().map_err(|_| format!("{text:?} is not host:port"))?;
        if authority.port_u16().is_none() || text.contains('@') || text.contains('/') {
            return Err(format!("{text:?} is not host:port (the port is required)"));
        }
        Ok(Self(authority))
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The HTTP/1.1 keep-alive client used for one upstream's endpoints.
pub type UpstreamClient = Client<HttpConnector, Body>;

/// A pool of endpoints with its connection pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: UpstreamName,
    pub config: UpstreamConfig,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub client: UpstreamClient,
}

impl Upstream {
    /// Builds the pool and registers each endpoint's metrics.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, addr)| Arc::new(Endpoint::new(index, &config.name, addr.clone(), metrics)))
            .collect();
        Self { name: config.name.clone(), config, endpoints, client }
    }

    /// True when at least one endpoint is available (healthy and not ejected).
    pub fn has_available_endpoint(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.endpoints.iter().any(|e| e.is_available(now))
    }
}
