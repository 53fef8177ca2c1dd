//! Configuration: `accel.toml` (the sidecar) and the route rules files.
//!
//! Two layers, as the design asks: [`file`] holds what operators write (serde types that mirror
//! the TOML); this module holds what the proxy runs on (validated addresses, durations, compiled
//! matchers). [`sidecar`] and [`rules`] convert one into the other, collecting every
//! [`Problem`] before failing, so one `accel check` run shows them all. [`restart`] says
//! which settings a reload applies live and which only at start.

pub mod file;
pub mod restart;
pub mod rules;
pub mod sidecar;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::problem::{Problem, Problems};
pub use crate::quantity::{parse_duration, parse_size};
pub use rules::RuleSet;
pub use sidecar::load as load_sidecar;

pub use crate::forward::headers::ForwardedConfig;
pub use crate::metrics::DEFAULT_LATENCY_BUCKETS;
pub use crate::upstream::{Ejection, HealthCheck, UpstreamConfig};

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

impl Config {
    /// Whether the admin listener is bound to an address other hosts can reach (not loopback)
    /// with no token set (`admin.token`, or `cache.purge_token`): an operator who exposed it
    /// deliberately protects it, one who did not meant loopback.
    pub fn admin_exposed_without_token(&self) -> bool {
        !self.admin.addr.ip().is_loopback() && self.admin.token.is_none() && self.cache.purge_token.is_none()
    }

    /// Logs a warning when [`admin_exposed_without_token`](Self::admin_exposed_without_token):
    /// at start, and on a reload that makes it so.
    pub fn warn_if_admin_exposed(&self) {
        if self.admin_exposed_without_token() {
            tracing::warn!(
                admin = %self.admin.addr,
                "the admin listener is bound to an address other hosts can reach and no token is \
                 set: /metrics, /status and the status page are open to whoever reaches it; bind \
                 `admin.addr` to 127.0.0.1 or set `admin.token`"
            );
        }
    }
}

/// A TLS listener: its address (bound at start) and its certificates (read again on reload).
#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub certificates: std::sync::Arc<crate::tls::Certificates>,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Bearer token for write endpoints; `None` disables them. Compared in constant time,
    /// never logged.
    pub token: Option<crate::secret::Secret>,
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
    /// Request head bounds: size (`431`), field count (`431`), target length (`414`).
    pub head: crate::framing::HeadLimits,
    /// Request body bytes of a route without its own `max_body_size` (`413`).
    pub max_body_size: u64,
    /// Open connections per client address; `None`: no cap.
    pub max_connections_per_client: Option<NonZeroUsize>,
    /// HTTP/2 bounds of one connection.
    pub h2: H2Limits,
}

/// HTTP/2 bounds of one client connection, set explicitly on hyper's builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Limits {
    /// Streams open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Bytes of one header list (`SETTINGS_MAX_HEADER_LIST_SIZE`), counted across
    /// CONTINUATION frames.
    pub max_header_list_size: u32,
    /// Streams reset by the client before they were accepted, at once (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams reset by the server for the client's protocol errors, in all.
    pub max_local_error_reset_streams: usize,
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

#[cfg(test)]
mod tests {
    //! How the rate-limiting parts of the configuration are read.

    use std::path::Path;

    use super::*;
    use crate::limit::LimitSettings;

    fn config(extra: &str) -> Config {
        let text = format!("{extra}\n[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\n");
        let file: file::SidecarFile = toml::from_str(&text).unwrap();
        sidecar::convert(file, None, Path::new("accel.toml")).unwrap()
    }

    #[test]
    fn limit_problems_name_the_file_route_and_key() {
        let config = config("");
        let upstreams = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let mut problems = Problems::default();
        let text = "[[route]]\nname = \"x\"\nupstream = \"api\"\nrate_limit = { rate = \"fast\" }\n\n\
                    [[route]]\nname = \"y\"\nupstream = \"api\"\nrate_limit = { rate = \"1/s\", colour = \"red\" }\n";
        rules::parse(Path::new("rules/test.toml"), text, &upstreams, &mut problems);
        let text = problems.to_string();
        assert!(
            text.contains(r#"rules/test.toml: route "x": key `rate_limit.rate`: invalid rate "fast""#),
            "{text}"
        );
        assert!(text.contains(r#"route "y": key `rate_limit.colour`: unknown field `colour`"#), "{text}");
    }

    /// A `Write` that keeps what the logger writes, for asserting on log lines.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `config.warn_if_admin_exposed()` logs.
    fn exposure_warning(config: &Config) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || config.warn_if_admin_exposed());
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_admin_listener_is_loopback_by_default_and_warns_when_exposed_without_a_token() {
        let default = config("");
        assert!(default.admin.addr.ip().is_loopback(), "{}", default.admin.addr);
        assert!(exposure_warning(&default).is_empty());

        let exposed = config("[admin]\naddr = \"0.0.0.0:9901\"");
        let warning = exposure_warning(&exposed);
        assert!(warning.contains("WARN") && warning.contains("0.0.0.0:9901"), "{warning}");
        assert!(warning.contains("admin.token"), "{warning}");

        for protected in [
            "[admin]\naddr = \"0.0.0.0:9901\"\ntoken = \"s3cret\"",
            "[admin]\naddr = \"0.0.0.0:9901\"\n[cache]\npurge_token = \"s3cret\"",
            "[admin]\naddr = \"[::1]:9901\"",
        ] {
            assert!(exposure_warning(&config(protected)).is_empty(), "{protected}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = r#"
            [admin]
            token = "admin-s3cret"
            [cache]
            purge_token = "purge-s3cret"
            credential_key = "key-s3cret-key-s3cret-key-s3cret-key-s3cret"
            [redis]
            url = "redis://user:url-s3cret@127.0.0.1:6379/0"
            password = "redis-s3cret"
        "#;
        let file: file::SidecarFile = toml::from_str(text).unwrap();
        let operator_written = format!("{file:?}");
        let running = format!("{:?}", config(text));
        for shown in [&operator_written, &running] {
            assert!(!shown.contains("s3cret"), "a secret in {shown}");
        }
        assert!(running.contains("Secret(<redacted>)"), "{running}");
        assert!(running.contains("127.0.0.1:6379"), "the Redis address is still shown: {running}");
    }

    #[test]
    fn upstream_tls_settings_are_read_and_their_problems_name_the_key() {
        let upstream =
            |tls: &str| format!("[upstreams.api]\nendpoints = [\"api.internal:443\"]\ntls = {tls}\n");
        let convert = |text: &str, path: Option<&Path>| {
            let file: file::SidecarFile = toml::from_str(text).unwrap();
            sidecar::convert(file, path, Path::new("accel.toml"))
        };
        let plain = config("");
        assert!(plain.upstreams[0].tls.is_none(), "plain TCP unless `tls` is set");

        let defaults = convert(&upstream("{}"), None).unwrap();
        let tls = defaults.upstreams[0].tls.as_ref().unwrap();
        assert!(tls.verify, "verification is on by default");
        assert_eq!((tls.ca.as_ref(), tls.server_name.as_ref()), (None, None));

        let dir = std::env::temp_dir().join(format!("accel-upstream-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        let config_path = dir.join("accel.toml");
        let problem = |tls: &str| convert(&upstream(tls), Some(&config_path)).unwrap_err().to_string();

        let missing = problem(r#"{ ca = "missing.pem" }"#);
        assert!(missing.contains("key `upstreams.api.tls.ca`"), "{missing}");
        assert!(
            missing.contains(&dir.join("missing.pem").display().to_string()),
            "relative to the config: {missing}"
        );
        let empty = problem(r#"{ ca = "empty.pem" }"#);
        assert!(empty.contains("key `upstreams.api.tls.ca`") && empty.contains("no certificate"), "{empty}");
        let name = problem(r#"{ server_name = "not a name!" }"#);
        assert!(name.contains("key `upstreams.api.tls.server_name`"), "{name}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_settings_are_validated() {
        let file: file::SidecarFile = toml::from_str(
            "[limits]\nclient_concurrency = 0\nrate_limit_keys = 0\nrate_limit_cleanup = \"never\"",
        )
        .unwrap();
        let text = sidecar::convert(file, None, Path::new("accel.toml")).unwrap_err().to_string();
        for key in ["limits.client_concurrency", "limits.rate_limit_keys", "limits.rate_limit_cleanup"] {
            assert!(text.contains(&format!("key `{key}`")), "{key} in {text}");
        }
        let settings = config("[limits]\nclient_concurrency = false").limits.rate_limiting;
        assert_eq!(settings, LimitSettings::default());
        // `true` is the default cap of 10.
        let settings = config("[limits]\nclient_concurrency = true").limits.rate_limiting;
        assert_eq!(settings.client_concurrency.map(|n| n.get()), Some(10));
    }

    #[test]
    fn request_limits_have_defaults_and_are_validated() {
        let limits = config("").limits;
        assert_eq!(
            limits.head,
            crate::framing::HeadLimits { max_head: 32 << 10, max_headers: 100, max_target: 8 << 10 }
        );
        assert_eq!(limits.max_body_size, 100 << 20);
        assert_eq!(limits.max_connections_per_client, None);
        assert_eq!(limits.h2.max_concurrent_streams, 100);
        assert_eq!(limits.h2.max_header_list_size, 32 << 10);
        assert_eq!(limits.h2.max_pending_accept_reset_streams, 20);

        let limits = config(
            "[limits]\nmax_header_size = \"64KiB\"\nmax_body_size = \"5MiB\"\nmax_connections_per_client = 8",
        )
        .limits;
        assert_eq!((limits.head.max_head, limits.max_body_size), (64 << 10, 5 << 20));
        assert_eq!(limits.h2.max_header_list_size, 64 << 10);
        assert_eq!(limits.max_connections_per_client.map(NonZeroUsize::get), Some(8));

        let file: file::SidecarFile = toml::from_str(
            "[limits]\nmax_header_size = \"4KiB\"\nmax_target_length = \"8KiB\"\nmax_headers = 5000\n\
             max_body_size = \"0\"\nmax_connections_per_client = 0\nh2_max_concurrent_streams = 0",
        )
        .unwrap();
        let text = sidecar::convert(file, None, Path::new("accel.toml")).unwrap_err().to_string();
        for key in [
            "limits.max_target_length",
            "limits.max_headers",
            "limits.max_body_size",
            "limits.max_connections_per_client",
            "limits.h2_max_concurrent_streams",
        ] {
            assert!(text.contains(&format!("key `{key}`")), "{key} in {text}");
        }
    }
}
