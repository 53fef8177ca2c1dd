//! The running configuration of one upstream pool: its endpoints, health checks, passive
//! ejection and connection settings (`[upstreams.NAME]` in `accel.toml`, converted by
//! `crate::config::sidecar`).

use std::num::NonZeroU32;
use std::time::Duration;

use super::{EndpointAddr, UpstreamName};

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: UpstreamName,
    pub endpoints: Vec<EndpointAddr>,
    pub health: Option<HealthCheck>,
    pub ejection: Ejection,
    pub connect_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    /// The longest a response body may send nothing once its head is in.
    pub read_timeout: Duration,
    /// How long an endpoint name's addresses are used before they are looked up again.
    pub dns_refresh: Duration,
    /// Requests in flight at once per endpoint (each holds its own HTTP/1.1 connection);
    /// `None`: no cap.
    pub max_connections_per_endpoint: Option<std::num::NonZeroUsize>,
    /// TLS to the endpoints (`tls = { ... }`); `None`: plain TCP.
    pub tls: Option<std::sync::Arc<super::UpstreamTls>>,
}

/// Active health checking of an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path and query requested with GET.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub healthy_threshold: NonZeroU32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: NonZeroU32,
}

/// Passive ejection: endpoints that keep failing are skipped for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    pub consecutive_failures: NonZeroU32,
    pub cooldown: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            consecutive_failures: NonZeroU32::new(5).expect("non-zero"),
            cooldown: Duration::from_secs(30),
        }
    }
}
