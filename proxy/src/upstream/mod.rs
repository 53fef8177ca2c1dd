//! Upstreams: named pools of origin endpoints, least-connections picking, health.
//!
//! - [`endpoint`]: one address with its in-flight count, health and ejection state;
//! - [`connections`]: an endpoint's keep-alive HTTP/1.1 connections;
//! - [`resolve`]: an endpoint's addresses, its name looked up once and refreshed on a period;
//! - [`pick`]: least-connections among available endpoints, ties broken at random;
//! - [`health`]: active health checks that mark endpoints unhealthy and re-admit them.

mod config;
pub mod connections;
mod endpoint;
pub mod health;
pub mod metrics;
mod pick;
pub mod resolve;

use std::sync::Arc;

pub use crate::name::{EndpointAddr, UpstreamName};
pub use config::{Ejection, HealthCheck, UpstreamConfig};
pub use connections::{ConnectionSettings, Lease, SendError};
pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use metrics::{EndpointMetrics, LookupOutcome, UpstreamOutcome};
pub use pick::{NoPick, Pick};

use crate::metrics::Metrics;

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
        let overflow = metrics::overflow(metrics, &config.name);
        Self { name: config.name.clone(), config, endpoints, overflow }
    }

    /// True when at least one endpoint is available (healthy and not ejected).
    pub fn has_available_endpoint(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.endpoints.iter().any(|e| e.is_available(now))
    }
}
