//! What operators write: serde types mirroring `accel.toml` and the rules files.
//!
//! Every struct denies unknown fields so that a typo is an error, not a silently ignored key.
//! Values that need parsing (durations, sizes, addresses) stay strings here and are converted,
//! with the key they came from, into the running model in [`super::sidecar`] and
//! [`super::rules`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// `accel.toml`: the sidecar's own configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarFile {
    #[serde(default)]
    pub listen: ListenFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub runtime: RuntimeFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub forwarded: ForwardedFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub metrics: MetricsFile,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub rules: RulesFilesFile,
    /// `[compress]`: compression defaults of every route.
    #[serde(default)]
    pub compress: crate::compress::CompressFile,
    /// The response cache.
    #[serde(default)]
    pub cache: crate::cache::config::CacheFile,
    /// `[redis]`: the shared Redis tier; absent: each sidecar works alone.
    #[serde(default)]
    pub redis: Option<crate::tier::config::RedisFile>,
}

/// `[listen]`: where clients connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// Plain HTTP (HTTP/1.1 and h2c) listener address. Default `0.0.0.0:8080`.
    #[serde(default = "ListenFile::default_http")]
    pub http: String,
    /// TLS listener address (HTTP/1.1 and HTTP/2 by ALPN); needs `tls`.
    #[serde(default)]
    pub https: Option<String>,
    /// Certificate chain and private key for `https`, or several chosen by SNI.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// `tls` of `[listen]`: one certificate, or a list of them chosen by the client's SNI name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TlsFiles {
    /// `tls = { cert = "...", key = "..." }`: served whatever name the client asks for.
    One(TlsFile),
    /// `tls = [{ cert = "...", key = "...", names = ["..."] }, ...]`: the first is the default.
    Several(Vec<TlsFile>),
}

/// One certificate: PEM files, relative to `accel.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Host names this certificate serves (SNI); needed when several are listed.
    #[serde(default)]
    pub names: Vec<String>,
}

impl ListenFile {
    fn default_http() -> String {
        "0.0.0.0:8080".into()
    }
}

impl Default for ListenFile {
    fn default() -> Self {
        Self { http: Self::default_http(), https: None, tls: None }
    }
}

/// `[admin]`: the admin listener (metrics, health, status).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Default `127.0.0.1:9901`.
    #[serde(default = "AdminFile::default_addr")]
    pub addr: String,
    /// Bearer token required by the admin write endpoints (purge). None: they are disabled.
    #[serde(default)]
    pub token: Option<crate::secret::Secret>,
    /// How often the status page's history takes a snapshot; default `10s`.
    #[serde(default)]
    pub snapshot_interval: Option<String>,
}

impl AdminFile {
    fn default_addr() -> String {
        "127.0.0.1:9901".into()
    }
}

impl Default for AdminFile {
    fn default() -> Self {
        Self { addr: Self::default_addr(), token: None, snapshot_interval: None }
    }
}

/// `[runtime]`: the async runtime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    /// Worker threads; default: one per core.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// `[limits]`: downstream connection limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Most open client connections at once; further accepts wait. Default 10000.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Time a client has to send its request headers. Default `30s`.
    #[serde(default)]
    pub header_read_timeout: Option<String>,
    /// Longest pause in a client's request body. Default `60s`.
    #[serde(default)]
    pub body_read_timeout: Option<String>,
    /// On shutdown, how long in-flight requests may take to finish. Default `30s`.
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Requests in flight at once per client address: `true` (10) or a number; default off.
    #[serde(default)]
    pub client_concurrency: Option<ConcurrencyFile>,
    /// Keys with their own bucket, per rate limiter. Default 100000.
    #[serde(default)]
    pub rate_limit_keys: Option<usize>,
    /// How often rate limiters drop idle keys. Default `10s`.
    #[serde(default)]
    pub rate_limit_cleanup: Option<String>,
    /// Bytes of one request head (request line, header fields, blank line); larger: `431`.
    /// Default `32KiB`; also the HTTP/2 header list size.
    #[serde(default)]
    pub max_header_size: Option<String>,
    /// Header fields in one request; more: `431`. Default 100, at most 1024.
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// Bytes of the request target (path and query); longer: `414`. Default `8KiB`.
    #[serde(default)]
    pub max_target_length: Option<String>,
    /// Request body size of every route that does not set its own `max_body_size`; larger:
    /// `413`. Default `100MiB`.
    #[serde(default)]
    pub max_body_size: Option<String>,
    /// Open connections per client address; further ones are closed at once. Default: no cap.
    #[serde(default)]
    pub max_connections_per_client: Option<usize>,
    /// HTTP/2: streams one connection may have open at once. Default 100.
    #[serde(default)]
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2: streams a client may reset before the server accepted them, at once, before
    /// the connection is closed (rapid-reset protection, CVE-2023-44487). Default 20.
    #[serde(default)]
    pub h2_max_pending_accept_reset_streams: Option<usize>,
    /// HTTP/2: streams the server may reset for protocol errors before it closes the
    /// connection (CVE-2024-27316 class of floods). Default 1024.
    #[serde(default)]
    pub h2_max_local_error_reset_streams: Option<usize>,
}

/// `client_concurrency = true` (the default cap) or `= N`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum ConcurrencyFile {
    Enabled(bool),
    Max(u32),
}

/// `[forwarded]`: forwarding headers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedFile {
    /// Addresses or CIDR ranges whose `X-Forwarded-*` headers are trusted and extended.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Pseudonym in the `Via` header. Default `accel`; empty string: no `Via` header.
    #[serde(default)]
    pub via: Option<String>,
    /// An `X-Request-Id` on every request and answer. Default true.
    #[serde(default)]
    pub request_id: Option<bool>,
    /// Start a W3C trace (`traceparent`) for requests that come without a valid one.
    /// Default false.
    #[serde(default)]
    pub start_traces: Option<bool>,
}

/// `[log]`: logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// An `EnvFilter` directive; default `info`. `RUST_LOG` wins when set.
    #[serde(default)]
    pub level: Option<String>,
    /// One access log line per request. Default true.
    #[serde(default)]
    pub access: Option<bool>,
}

/// `[metrics]`: Prometheus metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// Upper bounds, in seconds, of the request latency histogram buckets.
    #[serde(default)]
    pub latency_buckets: Option<Vec<f64>>,
}

/// `[upstreams.NAME]`: one pool of origin endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `host:port` of each endpoint.
    pub endpoints: Vec<String>,
    /// Active health checking; none: endpoints are only ejected passively.
    #[serde(default)]
    pub health: Option<HealthFile>,
    /// Passive ejection after consecutive failures.
    #[serde(default)]
    pub ejection: Option<EjectionFile>,
    /// TCP connect timeout. Default `1s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Idle keep-alive connections kept per endpoint. Default 256.
    #[serde(default)]
    pub max_idle_per_endpoint: Option<usize>,
    /// Requests (and so connections) open at once per endpoint. Default: no cap.
    #[serde(default)]
    pub max_connections_per_endpoint: Option<usize>,
    /// How long an idle keep-alive connection is kept. Default `90s`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// The longest a response body may send nothing once its head is in. Default `60s`.
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// How long an endpoint name's addresses are used before they are looked up again.
    /// Default `30s`.
    #[serde(default)]
    pub dns_refresh: Option<String>,
    /// TLS to the endpoints; none: plain TCP.
    #[serde(default)]
    pub tls: Option<UpstreamTlsFile>,
}

/// `tls = { ... }` of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM file of the CA certificates to trust, relative to the config file. Default: the
    /// webpki (Mozilla) roots.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// The name verified and sent as SNI. Default: each endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Verify the certificate. Default true; false is for testing only.
    #[serde(default)]
    pub verify: Option<bool>,
}

/// `health = { ... }` of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Path requested with GET; a 2xx answer is healthy.
    pub path: String,
    /// Default `10s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// Default `2s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive successes that re-admit an endpoint. Default 1.
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that mark an endpoint unhealthy. Default 2.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
}

/// `ejection = { ... }` of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectionFile {
    /// Consecutive failed requests (connect errors, 5xx) that eject an endpoint. Default 5.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// How long an ejected endpoint is skipped. Default `30s`.
    #[serde(default)]
    pub cooldown: Option<String>,
}

/// `[rules]`: where the route rules are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFilesFile {
    /// Glob patterns, relative to the directory of `accel.toml`.
    #[serde(default)]
    pub files: Vec<String>,
}

/// One `[[route]]` of a rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Unique among all rules files; used in metrics and logs.
    pub name: String,
    /// What requests the route takes; empty: every request.
    #[serde(default, rename = "match")]
    pub matcher: MatchFile,
    /// The `[upstreams.NAME]` requests are forwarded to.
    pub upstream: String,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub retry: Option<RetryFile>,
    /// Compression of the route's answers; see [`crate::compress::CompressFile`].
    #[serde(default)]
    pub compress: Option<crate::compress::CompressFile>,
    /// Response caching (see `crate::cache::rule`).
    #[serde(default)]
    pub cache: Option<crate::cache::rule::CacheRuleFile>,
    /// Tag templates invalidated when an unsafe request on the route succeeds.
    #[serde(default)]
    pub invalidate: Vec<String>,
    /// Collapsing of identical concurrent misses.
    #[serde(default)]
    pub coalesce: Option<crate::cache::rule::CoalesceFile>,
    /// Rate limits: one table or a list of tables; none: the route is not rate limited.
    #[serde(default)]
    pub rate_limit: Option<crate::limit::rule::OneOrMany<crate::limit::rule::LimitFile>>,
    /// Targets the health score measures the route against; default: the platform's.
    #[serde(default)]
    pub slo: Option<crate::route::slo::SloFile>,
    /// Paths fetched through the proxy at start-up and after a purge, to keep them cached.
    #[serde(default)]
    pub warm: Vec<String>,
    /// `Server-Timing` / `X-Response-Time` headers and the slow-request threshold.
    #[serde(default)]
    pub timing: Option<crate::route::timing::TimingFile>,
    /// Most request body bytes (`"10MiB"`); larger: `413`. Default `limits.max_body_size`.
    #[serde(default)]
    pub max_body_size: Option<String>,
    /// Protocols a client may switch to through the route (`["websocket"]`); none by default.
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// How long a tunnel may carry no byte either way before it is closed. Default `5m`.
    #[serde(default)]
    pub upgrade_idle_timeout: Option<String>,
}

/// `match = { ... }` of a route. Every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    /// Host (without port), exact or `*.example.com`.
    #[serde(default)]
    pub host: Option<String>,
    /// Methods, e.g. `["GET", "HEAD"]`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Exact path, or a pattern with `{name}` segments and an optional final `{*name}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix, matched on segment boundaries when it ends with `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// `timeouts = { ... }` of a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Time for one try to receive the response headers. Default `30s`.
    #[serde(default)]
    pub response: Option<String>,
    /// Time for all tries together. Default: `response` × tries.
    #[serde(default)]
    pub total: Option<String>,
}

/// `retry = { ... }` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Tries in all, the first included. Default 2.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Upstream statuses that are retried (idempotent requests only), e.g. `[502, 503]`.
    #[serde(default)]
    pub statuses: Vec<u16>,
}
