//! Upstreams: named pools of origin endpoints, least-connections picking, health.
//!
//! - [`endpoint`]: one address with its in-flight count, health and ejection state;
//! - [`connections`]: an endpoint's keep-alive HTTP/1.1 connections;
//! - [`resolve`]: an endpoint's addresses, its name looked up once and refreshed on a period;
//! - [`pick`]: least-connections among available endpoints, ties broken at random;
//! - [`health`]: active health checks that mark endpoints unhealthy and re-admit them.

pub mod connections;
mod endpoint;
pub mod health;
mod pick;
pub mod resolve;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::Authority;

pub use connections::{ConnectionSettings, Lease, SendError};
pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use pick::{NoPick, Pick};

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

/// One endpoint's address: `host:port` (a name is looked up by [`resolve::Resolver`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointAddr {
    authority: Authority,
    /// The same text as a `Host` value, for requests that came without one.
    host: HeaderValue,
}

impl EndpointAddr {
    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        self.authority.as_str()
    }

    /// As a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// As a `Host` header value.
    pub fn host_header(&self) -> HeaderValue {
        self.host.clone()
    }
}

impl FromStr for EndpointAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let authority: Authority = text.parse().map_err(|_| format!("{text:?} is not host:port"))?;
        if authority.port_u16().is_none() || text.contains('@') || text.contains('/') {
            return Err(format!("{text:?} is not host:port (the port is required)"));
        }
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| format!("{text:?} is not host:port"))?;
        Ok(Self { authority, host })
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}

/// A pool of endpoints, each with its keep-alive connections.
#[derive(Debug)]
pub struct Upstream {
    pub name: UpstreamName,
    pub config: UpstreamConfig,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Requests refused because every endpoint was at its connection cap.
    pub overflow: prometheus_client::metrics::counter::Counter,
}

impl Upstream {
    /// Builds the pool and registers each endpoint's metrics.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Self {
        let settings = ConnectionSettings {
            connect_timeout: config.connect_timeout,
            max_idle: config.max_idle_per_endpoint,
            idle_timeout: config.idle_timeout,
            dns_refresh: config.dns_refresh,
        };
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                Arc::new(Endpoint::new(index, &config.name, addr.clone(), settings, metrics))
            })
            .collect();
        let overflow = metrics.upstream_overflow(&config.name);
        Self { name: config.name.clone(), config, endpoints, overflow }
    }

    /// True when at least one endpoint is available (healthy and not ejected).
    pub fn has_available_endpoint(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.endpoints.iter().any(|e| e.is_available(now))
    }
}
