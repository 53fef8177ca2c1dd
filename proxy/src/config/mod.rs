//! Configuration: `accel.toml` (the sidecar) and the route rules files.
//!
//! Two layers, as the design asks: [`file`] holds what operators write (serde types that mirror
//! the TOML); this module holds what the proxy runs on (validated addresses, durations, compiled
//! matchers). [`sidecar`] and [`rules`] convert one into the other, collecting every
//! [`Problem`] before failing, so one `accel check` run shows them all.

pub mod file;
mod problem;
mod quantity;
pub mod rules;
pub mod sidecar;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

pub use problem::{Problem, Problems};
pub use quantity::{parse_duration, parse_size};
pub use rules::RuleSet;
pub use sidecar::load as load_sidecar;

use crate::upstream::{EndpointAddr, UpstreamName};

/// The running sidecar configuration (everything but the route rules).
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; rule globs are relative to its directory.
    pub path: Option<PathBuf>,
    /// Client-facing listener.
    pub listen: SocketAddr,
    /// Client-facing TLS listener, if configured.
    pub tls: Option<TlsListen>,
    /// Admin listener (metrics, health, status, purge).
    pub admin: AdminConfig,
    /// Tokio worker threads; `None`: one per core.
    pub worker_threads: Option<NonZeroUsize>,
    /// Downstream connection limits.
    pub limits: Limits,
    /// Forwarding headers policy.
    pub forwarded: ForwardedConfig,
    /// Logging.
    pub log: LogConfig,
    /// Upper bounds, in seconds, of the latency histograms' buckets.
    pub latency_buckets: Vec<f64>,
    /// Upstream pools, by name.
    pub upstreams: Vec<UpstreamConfig>,
    /// Glob patterns of the rules files, already joined to the config directory.
    pub rules_files: Vec<String>,
    /// `[compress]`: compression defaults of every route.
    pub compress: crate::compress::CompressSettings,
    /// The response cache.
    pub cache: crate::cache::CacheConfig,
    /// The shared Redis tier, when `[redis]` is configured.
    pub redis: Option<crate::tier::RedisConfig>,
}

/// A TLS listener: address and the server configuration (certificate, ALPN h2 and http/1.1).
#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Bearer token for write endpoints; `None` disables them.
    pub token: Option<String>,
    /// Period of the status page's snapshots (default 10 s; 90 of them are kept).
    pub snapshot_interval: std::time::Duration,
}

/// Downstream connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most client connections open at once.
    pub max_connections: NonZeroUsize,
    /// Time a client has to send request headers.
    pub header_read_timeout: Duration,
    /// Longest pause in a client's request body before the request ends with 408.
    pub body_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Per-client concurrency cap and rate limiters' bounds.
    pub rate_limiting: crate::limit::LimitSettings,
}

/// Who may set `X-Forwarded-*`, and what goes in `Via`.
#[derive(Debug, Clone, Default)]
pub struct ForwardedConfig {
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `Via` entries from the configured pseudonym; `None`: no `Via` header is added.
    pub via: Option<crate::forward::headers::Via>,
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `EnvFilter` directive.
    pub level: String,
    /// One line per request at target `accel::access`.
    pub access: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One upstream pool.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: UpstreamName,
    pub endpoints: Vec<EndpointAddr>,
    pub health: Option<HealthCheck>,
    pub ejection: Ejection,
    pub connect_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    /// How long an endpoint name's addresses are used before they are looked up again.
    pub dns_refresh: Duration,
    /// Requests in flight at once per endpoint (each holds its own HTTP/1.1 connection);
    /// `None`: no cap.
    pub max_connections_per_endpoint: Option<std::num::NonZeroUsize>,
}

/// Active health checking of an upstream's endpoints.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

/// Default latency buckets, in seconds: 100 µs to 10 s.
pub const DEFAULT_LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];
