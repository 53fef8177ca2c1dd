//! `[redis]` in `accel.toml`: what operators write ([`RedisFile`]) and what the tier runs on
//! ([`RedisConfig`]).
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379/0"      # or rediss:// (TLS); auth in the URL or below
//! # cluster = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]   # instead of `url`
//! username = "accel"                     # optional, overrides the URL's
//! password = "secret"                    # optional, overrides the URL's
//! prefix = "accel:"                      # every key and the purge channel start with it
//! timeout = "50ms"                       # per Redis call
//! connect_timeout = "1s"
//! breaker = { failures = 5, cool_down = "5s" }
//! fail = "open"                          # cluster limits when Redis is unavailable
//! l2 = { max_object_size = "1MiB", lock = "2s" }
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};
use serde::Deserialize;

use crate::problem::Problems;
use crate::quantity::{duration, parse_duration, parse_size};

/// `[redis]`: the shared Redis tier. Absent: every sidecar works alone, as before.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// One Redis: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    #[serde(default)]
    pub url: Option<crate::secret::Secret>,
    /// Redis Cluster seed nodes, instead of `url`.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// ACL user name; overrides the URL's.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; overrides the URL's.
    #[serde(default)]
    pub password: Option<crate::secret::Secret>,
    /// Start of every key and of the purge channel. Default `accel:`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Longest wait for one Redis call. Default `50ms`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Longest wait for a connection. Default `1s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: Option<BreakerFile>,
    /// What cluster-scoped rate limits do while Redis is unavailable: `open` (default: the
    /// local limiter decides) or `closed` (requests are refused with 503).
    #[serde(default)]
    pub fail: Option<String>,
    /// Second-level cache; default on with the defaults of [`L2File`].
    #[serde(default)]
    pub l2: Option<L2File>,
}

/// `breaker = { ... }` of `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Consecutive failed calls that open the circuit. Default 5.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long an open circuit stops calling Redis before one probe. Default `5s`.
    #[serde(default)]
    pub cool_down: Option<String>,
}

/// `l2 = { ... }` of `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2File {
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Largest encoded (compressed) entry stored in Redis. Default `1MiB`.
    #[serde(default)]
    pub max_object_size: Option<String>,
    /// Cluster-wide coalescing: a second-level miss takes a lock per key for at most this
    /// long, so that one sidecar of the cluster goes upstream. Default: off.
    #[serde(default)]
    pub lock: Option<String>,
}

/// Where Redis is.
#[derive(Clone)]
pub enum RedisServers {
    /// One Redis (with its replicas behind it, if any).
    Single(Box<ConnectionInfo>),
    /// Redis Cluster seed nodes.
    Cluster(Vec<ConnectionInfo>),
}

impl fmt::Debug for RedisServers {
    /// Addresses only: credentials never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(info) => write!(f, "Single({})", info.addr()),
            Self::Cluster(nodes) => {
                let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
                write!(f, "Cluster({})", addrs.join(", "))
            }
        }
    }
}

/// What cluster-scoped limits do while Redis is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// The local limiter decides (default): Redis trouble never refuses requests.
    #[default]
    Open,
    /// Requests on cluster-limited routes are refused with 503 and `Retry-After`.
    Closed,
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failures: NonZeroU32,
    /// Time an open circuit waits before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN), cool_down: Duration::from_secs(5) }
    }
}

/// Second-level cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Config {
    /// Largest encoded entry, in bytes.
    pub max_object_size: usize,
    /// Cluster-wide coalescing lock lifetime; `None`: coalescing stays per sidecar.
    pub lock: Option<Duration>,
}

impl Default for L2Config {
    fn default() -> Self {
        Self { max_object_size: 1 << 20, lock: None }
    }
}

/// The validated `[redis]` section.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub servers: RedisServers,
    /// Key and channel prefix; never contains `{` or `}` (Redis Cluster hash tags).
    pub prefix: String,
    /// Per-call timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub breaker: BreakerConfig,
    pub fail: FailMode,
    /// `None`: the second-level cache is off.
    pub l2: Option<L2Config>,
}

impl RedisConfig {
    /// A configuration for one Redis at `url` with every default and `prefix`.
    pub fn single(url: &str, prefix: &str) -> Result<Self, String> {
        let info = url.into_connection_info().map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Self {
            servers: RedisServers::Single(Box::new(info)),
            prefix: prefix.to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
            fail: FailMode::Open,
            l2: Some(L2Config::default()),
        })
    }
}

/// Converts `[redis]`, recording problems under `shown` with keys `redis.*`.
pub fn convert(p: &mut Problems, shown: &Path, file: RedisFile) -> Option<RedisConfig> {
    let RedisFile { url, cluster, username, password, prefix, timeout, connect_timeout, breaker, fail, l2 } =
        file;
    let before = p.0.len();
    let auth = |info: ConnectionInfo| {
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &password {
            settings = settings.set_password(password.expose());
        }
        info.set_redis_settings(settings)
    };
    let parse = |p: &mut Problems, key: &str, text: &str| match text.into_connection_info() {
        Ok(info) => Some(auth(info)),
        Err(e) => {
            p.at(shown, key, format!("invalid Redis URL: {e} (expected redis://host:port or rediss://)"));
            None
        }
    };
    let servers = match (url, cluster.is_empty()) {
        (Some(_), false) => {
            p.at(shown, "redis", "give either `url` or `cluster`, not both");
            None
        }
        (None, true) => {
            p.at(shown, "redis.url", "needs `url` (one Redis) or `cluster` (seed nodes)");
            None
        }
        (Some(url), true) => {
            parse(p, "redis.url", url.expose()).map(|info| RedisServers::Single(Box::new(info)))
        }
        (None, false) => {
            let nodes: Vec<ConnectionInfo> = cluster
                .iter()
                .enumerate()
                .filter_map(|(i, url)| parse(p, &format!("redis.cluster[{i}]"), url))
                .collect();
            Some(RedisServers::Cluster(nodes))
        }
    };
    let prefix = prefix.unwrap_or_else(|| "accel:".into());
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
        p.at(shown, "redis.prefix", "must not contain braces or spaces");
    }
    let timeout = match timeout {
        None => Duration::from_millis(50),
        Some(text) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.at(shown, "redis.timeout", "must be greater than zero");
                Duration::from_millis(50)
            }
            Err(e) => {
                p.at(shown, "redis.timeout", e);
                Duration::from_millis(50)
            }
        },
    };
    let connect_timeout = duration(p, shown, "redis.connect_timeout", connect_timeout, 1);
    let breaker = breaker.map_or_else(BreakerConfig::default, |b| {
        let BreakerFile { failures, cool_down } = b;
        let failures = match failures {
            None => BreakerConfig::default().failures,
            Some(n) => NonZeroU32::new(n).unwrap_or_else(|| {
                p.at(shown, "redis.breaker.failures", "must be at least 1");
                NonZeroU32::MIN
            }),
        };
        BreakerConfig { failures, cool_down: duration(p, shown, "redis.breaker.cool_down", cool_down, 5) }
    });
    let fail = match fail.as_deref().unwrap_or("open") {
        "open" => FailMode::Open,
        "closed" => FailMode::Closed,
        other => {
            p.at(shown, "redis.fail", format!("{other:?} is not one of \"open\", \"closed\""));
            FailMode::Open
        }
    };
    let l2 = match l2 {
        None => Some(L2Config::default()),
        Some(L2File { enabled: Some(false), .. }) => None,
        Some(L2File { enabled: _, max_object_size, lock }) => {
            let max_object_size = match max_object_size.as_deref().map(parse_size) {
                None => L2Config::default().max_object_size,
                Some(Ok(n)) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                Some(Ok(_)) => {
                    p.at(shown, "redis.l2.max_object_size", "must be greater than zero");
                    0
                }
                Some(Err(e)) => {
                    p.at(shown, "redis.l2.max_object_size", e);
                    0
                }
            };
            let lock = lock.map(|text| duration(p, shown, "redis.l2.lock", Some(text), 2));
            Some(L2Config { max_object_size, lock })
        }
    };
    if p.0.len() != before {
        return None;
    }
    Some(RedisConfig { servers: servers?, prefix, timeout, connect_timeout, breaker, fail, l2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_str(text: &str) -> (Option<RedisConfig>, Problems) {
        let file: RedisFile = toml::from_str(text).expect("valid TOML");
        let mut problems = Problems::default();
        let config = convert(&mut problems, Path::new("accel.toml"), file);
        (config, problems)
    }

    #[test]
    fn defaults_fill_a_bare_url() {
        let (config, problems) = convert_str(r#"url = "redis://127.0.0.1:6379""#);
        assert!(problems.is_empty(), "{problems}");
        let config = config.expect("valid");
        assert_eq!(config.prefix, "accel:");
        assert_eq!(config.timeout, Duration::from_millis(50));
        assert_eq!(config.breaker, BreakerConfig::default());
        assert_eq!(config.fail, FailMode::Open);
        assert_eq!(config.l2, Some(L2Config::default()));
    }

    #[test]
    fn credentials_override_the_url_and_stay_out_of_debug() {
        let (config, problems) = convert_str(
            r#"
            url = "redis://old:pw@127.0.0.1:6379/2"
            username = "accel"
            password = "s3cret"
            "#,
        );
        assert!(problems.is_empty(), "{problems}");
        let config = config.expect("valid");
        let RedisServers::Single(info) = &config.servers else { panic!("single") };
        assert_eq!(info.redis_settings().username(), Some("accel"));
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn every_problem_names_its_key() {
        let (config, problems) = convert_str(
            r#"
            url = "redis://a"
            cluster = ["redis://b"]
            prefix = "{x}"
            timeout = "soon"
            breaker = { failures = 0 }
            fail = "maybe"
            l2 = { max_object_size = "lots" }
            "#,
        );
        assert!(config.is_none());
        let text = problems.to_string();
        for key in [
            "`redis`",
            "redis.prefix",
            "redis.timeout",
            "redis.breaker.failures",
            "redis.fail",
            "redis.l2.max_object_size",
        ] {
            assert!(text.contains(key), "{key} missing in {text}");
        }
    }

    #[test]
    fn cluster_nodes_and_a_disabled_l2() {
        let (config, problems) = convert_str(
            r#"
            cluster = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]
            l2 = { enabled = false }
            fail = "closed"
            "#,
        );
        assert!(problems.is_empty(), "{problems}");
        let config = config.expect("valid");
        assert!(matches!(&config.servers, RedisServers::Cluster(nodes) if nodes.len() == 2));
        assert_eq!(config.l2, None);
        assert_eq!(config.fail, FailMode::Closed);
    }
}
