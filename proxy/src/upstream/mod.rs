//! Upstreams: named pools of origin endpoints, least-connections picking, health.
//!
//! - [`endpoint`]: one address with its in-flight count, health and ejection state;
//! - [`connections`]: an endpoint's keep-alive HTTP/1.1 connections ([`crate::h1`]);
//! - [`tls`]: TLS to the endpoints, when the upstream has `tls` set;
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
pub mod tls;

use std::sync::Arc;

pub use crate::name::{EndpointAddr, UpstreamName};
pub use config::{Ejection, HealthCheck, UpstreamConfig};
pub use connections::{ConnectionSettings, ResponseBody, SendError};
pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use metrics::{EndpointMetrics, LookupOutcome, UpstreamOutcome};
pub use pick::{NoPick, Pick};
pub use tls::UpstreamTls;

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
        let settings = connection_settings(&config);
        warn_if_unverified(&config);
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                Arc::new(Endpoint::new(index, &config.name, addr.clone(), settings.clone(), metrics))
            })
            .collect();
        let overflow = metrics::overflow(metrics, &config.name);
        Self { name: config.name.clone(), config, endpoints, overflow }
    }

    /// The pool `config` describes, taking over from `running` (the same upstream before a
    /// reload): an endpoint it keeps, at the same address with the same connection settings,
    /// is the same [`Endpoint`], with its keep-alive connections, health and ejection state;
    /// an added one starts afresh. An endpoint left out drains: the requests in flight on it
    /// hold it until their response ends, and no new request picks it.
    pub fn reconfigured(config: UpstreamConfig, running: &Self, metrics: &Metrics) -> Self {
        let settings = connection_settings(&config);
        let same_connections = connection_settings(&running.config) == settings;
        if !same_connections {
            warn_if_unverified(&config);
        }
        // Indexes stay unique within the pool (a request's tried endpoints are indexes).
        let mut next_index = running.endpoints.iter().map(|e| e.index + 1).max().unwrap_or(0);
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::with_capacity(config.endpoints.len());
        for addr in &config.endpoints {
            // An address listed twice is two endpoints, as at start.
            let kept = running.endpoints.iter().find(|e| {
                same_connections && e.addr == *addr && !endpoints.iter().any(|taken| Arc::ptr_eq(e, taken))
            });
            let endpoint = kept.cloned().unwrap_or_else(|| {
                next_index += 1;
                Arc::new(Endpoint::new(next_index - 1, &config.name, addr.clone(), settings.clone(), metrics))
            });
            endpoints.push(endpoint);
        }
        for gone in running.endpoints.iter().filter(|e| !endpoints.iter().any(|kept| Arc::ptr_eq(e, kept))) {
            if !config.endpoints.contains(&gone.addr) {
                metrics::retire(metrics, &config.name, &gone.addr);
            }
            tracing::info!(upstream = %config.name, endpoint = %gone.addr, in_flight = gone.in_flight(), "endpoint draining");
        }
        Self { name: config.name.clone(), config, endpoints, overflow: running.overflow.clone() }
    }

    /// True when at least one endpoint is available (healthy and not ejected).
    pub fn has_available_endpoint(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.endpoints.iter().any(|e| e.is_available(now))
    }
}

/// `tls.verify = false` is for testing: said loudly each time such a pool is made.
fn warn_if_unverified(config: &UpstreamConfig) {
    if config.tls.as_ref().is_some_and(|tls| !tls.verify) {
        tracing::warn!(
            upstream = %config.name,
            "upstreams.{}.tls.verify = false: upstream certificates are NOT verified (testing only)",
            config.name
        );
    }
}

/// How `config`'s endpoints make and keep their connections.
fn connection_settings(config: &UpstreamConfig) -> ConnectionSettings {
    ConnectionSettings {
        connect_timeout: config.connect_timeout,
        max_idle: config.max_idle_per_endpoint,
        idle_timeout: config.idle_timeout,
        read_timeout: config.read_timeout,
        dns_refresh: config.dns_refresh,
        tls: config.tls.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(ports: &[u16], idle_timeout: u64) -> UpstreamConfig {
        UpstreamConfig {
            name: UpstreamName::try_from("api").unwrap(),
            endpoints: ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect(),
            health: None,
            ejection: Ejection::default(),
            connect_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 8,
            idle_timeout: Duration::from_secs(idle_timeout),
            read_timeout: Duration::from_secs(60),
            dns_refresh: Duration::from_secs(30),
            max_connections_per_endpoint: None,
            tls: None,
        }
    }

    #[tokio::test]
    async fn a_reconfigured_pool_keeps_the_endpoints_it_keeps() {
        let metrics = Metrics::new(&crate::metrics::DEFAULT_LATENCY_BUCKETS);
        let running = Upstream::new(config(&[8001, 8002], 90), &metrics);
        running.endpoints[0].set_healthy(false);
        let draining = InFlight::new(running.endpoints[1].clone());

        let next = Upstream::reconfigured(config(&[8001, 8003], 90), &running, &metrics);

        assert!(Arc::ptr_eq(&next.endpoints[0], &running.endpoints[0]), "kept: the same endpoint");
        assert!(!next.endpoints[0].is_available(tokio::time::Instant::now()), "with its health");
        assert_eq!(next.endpoints[1].addr.as_str(), "127.0.0.1:8003");
        assert_eq!(next.endpoints[1].index, 2, "a new index: tried endpoints stay distinct");
        assert_eq!(running.endpoints[1].in_flight(), 1, "the removed endpoint drains its request");
        drop(draining);
        assert_eq!(running.endpoints[1].in_flight(), 0);
        let text = metrics.encode();
        let healthy =
            |port: u16| format!(r#"accel_endpoint_healthy{{upstream="api",endpoint="127.0.0.1:{port}"}}"#);
        assert!(!text.contains(&healthy(8002)), "a removed endpoint is no longer shown: {text}");
        assert!(text.contains(&healthy(8003)), "{text}");

        // New connection settings: new pools for every endpoint.
        let next = Upstream::reconfigured(config(&[8001, 8003], 5), &next, &metrics);
        assert!(!Arc::ptr_eq(&next.endpoints[0], &running.endpoints[0]));
        assert_eq!(next.endpoints.iter().map(|e| e.index).collect::<Vec<_>>(), [3, 4]);

        // TLS is a connection setting: turning it on makes new pools too; the same again keeps them.
        let tls = Arc::new(UpstreamTls::new(None, Some("api.internal"), true).unwrap());
        let secured = UpstreamConfig { tls: Some(tls.clone()), ..config(&[8001, 8003], 5) };
        let over_tls = Upstream::reconfigured(secured.clone(), &next, &metrics);
        assert!(!Arc::ptr_eq(&over_tls.endpoints[0], &next.endpoints[0]));
        let again = UpstreamConfig { tls: Some(Arc::new(UpstreamTls::clone(&tls))), ..secured };
        let kept = Upstream::reconfigured(again, &over_tls, &metrics);
        assert!(Arc::ptr_eq(&kept.endpoints[0], &over_tls.endpoints[0]));
    }
}
