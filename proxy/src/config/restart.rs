//! Which settings of `accel.toml` a reload applies and which take effect only at start.
//!
//! A reload (SIGHUP, or a change of `accel.toml` or a rules file) applies a valid new
//! configuration live, except for the [`StartOnly`] settings: what is bound, spawned or
//! allocated once when the sidecar starts (listeners, the runtime, the logger, the metric
//! histograms, the cache store, the Redis client). Those keep their running values, are named in
//! the reload's warning, and take effect at the next restart.
//!
//! [`applicable`] destructures the new configuration field by field, so a field added to
//! [`Config`] does not compile until it is sorted into one kind or the other.

use std::fmt;

use super::{AdminConfig, Config, Limits, LogConfig, TlsListen};
use crate::cache::CacheConfig;
use crate::limit::LimitSettings;
use crate::tier::RedisConfig;

/// A setting of `accel.toml` that takes effect only when the sidecar starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOnly {
    /// `listen.http`: the bound client listener.
    Listen,
    /// `listen.https`: the bound TLS listener, and whether there is one (its certificates,
    /// `listen.tls`, are live).
    Https,
    /// `admin.addr`: the bound admin listener.
    AdminAddr,
    /// `admin.snapshot_interval`: the status page's history ticks.
    SnapshotInterval,
    /// `runtime.worker_threads`: the runtime is built before anything else.
    WorkerThreads,
    /// `limits.max_connections`, held by the accept loops.
    MaxConnections,
    /// `limits.header_read_timeout`, held by the accept loops.
    HeaderReadTimeout,
    /// `limits.drain_timeout`, held by the accept loops.
    DrainTimeout,
    /// `limits.max_header_size`, `max_headers`, `max_target_length`: the request head check
    /// and hyper's parser are set up per listener.
    RequestHead,
    /// `limits.max_connections_per_client`, held by the accept loops.
    MaxConnectionsPerClient,
    /// `limits.h2_*`: hyper's HTTP/2 builder is set up per listener.
    H2,
    /// `limits.rate_limit_keys`: the limiters' key stores are sized when made.
    RateLimitKeys,
    /// `limits.rate_limit_cleanup`: the cleanup task's period.
    RateLimitCleanup,
    /// `log.format`: the logger is installed once.
    LogFormat,
    /// `log.level`: the logger is installed once.
    LogLevel,
    /// `metrics.latency_buckets`: the histograms are registered once.
    LatencyBuckets,
    /// `rules.files`: the watched globs.
    RulesFiles,
    /// `[cache]` but `purge_token`: the store is sized and its header lists read once, and a
    /// new store would drop every entry.
    Cache,
    /// `[redis]`: the client and its subscription.
    Redis,
}

impl StartOnly {
    /// Every start-only setting, in file order.
    pub const ALL: [Self; 19] = [
        Self::Listen,
        Self::Https,
        Self::AdminAddr,
        Self::SnapshotInterval,
        Self::WorkerThreads,
        Self::MaxConnections,
        Self::HeaderReadTimeout,
        Self::DrainTimeout,
        Self::RequestHead,
        Self::MaxConnectionsPerClient,
        Self::H2,
        Self::RateLimitKeys,
        Self::RateLimitCleanup,
        Self::LogFormat,
        Self::LogLevel,
        Self::LatencyBuckets,
        Self::RulesFiles,
        Self::Cache,
        Self::Redis,
    ];

    /// The key (or section) as written in `accel.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listen => "listen.http",
            Self::Https => "listen.https",
            Self::AdminAddr => "admin.addr",
            Self::SnapshotInterval => "admin.snapshot_interval",
            Self::WorkerThreads => "runtime.worker_threads",
            Self::MaxConnections => "limits.max_connections",
            Self::HeaderReadTimeout => "limits.header_read_timeout",
            Self::DrainTimeout => "limits.drain_timeout",
            Self::RequestHead => "limits.max_header_size",
            Self::MaxConnectionsPerClient => "limits.max_connections_per_client",
            Self::H2 => "limits.h2",
            Self::RateLimitKeys => "limits.rate_limit_keys",
            Self::RateLimitCleanup => "limits.rate_limit_cleanup",
            Self::LogFormat => "log.format",
            Self::LogLevel => "log.level",
            Self::LatencyBuckets => "metrics.latency_buckets",
            Self::RulesFiles => "rules.files",
            Self::Cache => "cache",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for StartOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start-only settings in which `next` differs from `running`, in file order.
pub fn restart_needed(running: &Config, next: &Config) -> Vec<StartOnly> {
    applicable(running, next.clone()).1
}

/// `next` as a reload applies it over `running`: its live settings, and the running values of
/// the start-only ones; with the start-only settings that differ, in file order.
pub fn applicable(running: &Config, next: Config) -> (Config, Vec<StartOnly>) {
    let Config {
        path,
        listen,
        tls,
        admin,
        worker_threads,
        limits,
        forwarded,
        log,
        latency_buckets,
        upstreams,
        rules_files,
        compress,
        cache,
        redis,
    } = next;
    let AdminConfig { addr: admin_addr, token, snapshot_interval } = admin;
    let Limits {
        max_connections,
        header_read_timeout,
        body_read_timeout,
        drain_timeout,
        rate_limiting,
        head,
        max_body_size,
        max_connections_per_client,
        h2,
    } = limits;
    let LimitSettings { client_concurrency, max_keys, cleanup_interval } = rate_limiting;
    let LogConfig { format, level, access } = log;
    let was = running;
    let mut restart = Vec::new();
    let r = &mut restart;

    let listen = at_start(r, StartOnly::Listen, &was.listen, listen);
    // The listener is bound at start; its certificates (read again with `accel.toml`) are live.
    let tls = match (&was.tls, tls) {
        (Some(was), Some(next)) => {
            if was.addr != next.addr {
                r.push(StartOnly::Https);
            }
            Some(TlsListen { addr: was.addr, certificates: next.certificates })
        }
        (None, None) => None,
        (was, _) => {
            r.push(StartOnly::Https);
            was.clone()
        }
    };
    let admin_addr = at_start(r, StartOnly::AdminAddr, &was.admin.addr, admin_addr);
    let snapshot_interval =
        at_start(r, StartOnly::SnapshotInterval, &was.admin.snapshot_interval, snapshot_interval);
    let worker_threads = at_start(r, StartOnly::WorkerThreads, &was.worker_threads, worker_threads);
    let max_connections =
        at_start(r, StartOnly::MaxConnections, &was.limits.max_connections, max_connections);
    let header_read_timeout =
        at_start(r, StartOnly::HeaderReadTimeout, &was.limits.header_read_timeout, header_read_timeout);
    let drain_timeout = at_start(r, StartOnly::DrainTimeout, &was.limits.drain_timeout, drain_timeout);
    let head = at_start(r, StartOnly::RequestHead, &was.limits.head, head);
    let max_connections_per_client = at_start(
        r,
        StartOnly::MaxConnectionsPerClient,
        &was.limits.max_connections_per_client,
        max_connections_per_client,
    );
    let h2 = at_start(r, StartOnly::H2, &was.limits.h2, h2);
    let max_keys = at_start(r, StartOnly::RateLimitKeys, &was.limits.rate_limiting.max_keys, max_keys);
    let cleanup_interval = at_start(
        r,
        StartOnly::RateLimitCleanup,
        &was.limits.rate_limiting.cleanup_interval,
        cleanup_interval,
    );
    let format = at_start(r, StartOnly::LogFormat, &was.log.format, format);
    let level = at_start(r, StartOnly::LogLevel, &was.log.level, level);
    let latency_buckets = at_start(r, StartOnly::LatencyBuckets, &was.latency_buckets, latency_buckets);
    let rules_files = at_start(r, StartOnly::RulesFiles, &was.rules_files, rules_files);
    let cache = if same_cache(&was.cache, &cache) {
        // The purge token is live; the clock and the credential key are the running store's.
        CacheConfig {
            clock: was.cache.clock.clone(),
            credential_key: was.cache.credential_key.clone(),
            ..cache
        }
    } else {
        r.push(StartOnly::Cache);
        CacheConfig { purge_token: cache.purge_token, ..was.cache.clone() }
    };
    let redis = if same_redis(was.redis.as_ref(), redis.as_ref()) {
        redis
    } else {
        r.push(StartOnly::Redis);
        was.redis.clone()
    };

    let config = Config {
        // Live: the file it came from, the TLS certificates, the admin token, body read timeout and size, concurrency cap,
        // forwarding policy, access log, upstreams and `[compress]`.
        path,
        listen,
        tls,
        admin: AdminConfig { addr: admin_addr, token, snapshot_interval },
        worker_threads,
        limits: Limits {
            max_connections,
            header_read_timeout,
            body_read_timeout,
            drain_timeout,
            rate_limiting: LimitSettings { client_concurrency, max_keys, cleanup_interval },
            head,
            max_body_size,
            max_connections_per_client,
            h2,
        },
        forwarded,
        log: LogConfig { format, level, access },
        latency_buckets,
        upstreams,
        rules_files,
        compress,
        cache,
        redis,
    };
    restart.sort_by_key(|s| StartOnly::ALL.iter().position(|a| a == s));
    (config, restart)
}

/// `next` when it equals `running`; else `running`, with `setting` noted as needing a restart.
fn at_start<T: Clone + PartialEq>(
    restart: &mut Vec<StartOnly>,
    setting: StartOnly,
    running: &T,
    next: T,
) -> T {
    if *running == next {
        next
    } else {
        restart.push(setting);
        running.clone()
    }
}

/// The start-only part of `[cache]` is the same (the purge token and the clock aside).
fn same_cache(running: &CacheConfig, next: &CacheConfig) -> bool {
    let CacheConfig {
        memory,
        tag_headers,
        invalidation_headers,
        strip_tag_headers,
        x_cache_status,
        purge_token: _,
        credential_cookies,
        credential_key,
        keep,
        targeted,
        clock: _,
    } = next;
    running.memory == *memory
        && running.keep == *keep
        && running.credential_cookies == *credential_cookies
        && running.credential_key.same_as(credential_key)
        && running.tag_headers == *tag_headers
        && running.invalidation_headers == *invalidation_headers
        && running.strip_tag_headers == *strip_tag_headers
        && running.x_cache_status == *x_cache_status
        && running.targeted == *targeted
}

/// `[redis]` is the same, servers included (compared by their full description, credentials
/// and database too, which is never shown).
fn same_redis(running: Option<&RedisConfig>, next: Option<&RedisConfig>) -> bool {
    let (Some(running), Some(next)) = (running, next) else { return running.is_none() && next.is_none() };
    let RedisConfig { servers, prefix, timeout, connect_timeout, breaker, fail, l2 } = next;
    let described = |servers: &crate::tier::config::RedisServers| match servers {
        crate::tier::config::RedisServers::Single(info) => vec![format!("{info:?}")],
        crate::tier::config::RedisServers::Cluster(nodes) => nodes.iter().map(|n| format!("{n:?}")).collect(),
    };
    described(&running.servers) == described(servers)
        && running.prefix == *prefix
        && running.timeout == *timeout
        && running.connect_timeout == *connect_timeout
        && running.breaker == *breaker
        && running.fail == *fail
        && running.l2 == *l2
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{file, sidecar};

    fn config(text: &str) -> Config {
        let text = format!("{text}\n[upstreams.api]\nendpoints = [\"127.0.0.1:1\"]\n");
        let file: file::SidecarFile = toml::from_str(&text).unwrap();
        sidecar::convert(file, None, Path::new("accel.toml")).unwrap()
    }

    #[test]
    fn live_settings_apply_and_need_no_restart() {
        let running = config("");
        let next = config(
            "[limits]\nclient_concurrency = 3\nbody_read_timeout = \"5s\"\n\
             [log]\naccess = false\n[forwarded]\nvia = \"edge\"\n[admin]\ntoken = \"t\"\n\
             [compress]\nenabled = false\n",
        );
        let (applied, restart) = applicable(&running, next);
        assert!(restart.is_empty(), "{restart:?}");
        assert_eq!(applied.limits.rate_limiting.client_concurrency.map(|n| n.get()), Some(3));
        assert_eq!(applied.limits.body_read_timeout, std::time::Duration::from_secs(5));
        assert!(!applied.log.access);
        assert_eq!(applied.admin.token.as_ref().map(crate::secret::Secret::expose), Some("t"));
        assert_eq!(
            applied.cache.purge_token.as_ref().map(crate::secret::Secret::expose),
            Some("t"),
            "the purge token follows"
        );
    }

    /// The TLS listener's address waits for a restart; its certificates apply.
    #[test]
    fn tls_certificates_apply_and_the_tls_address_waits() {
        let dir = std::env::temp_dir().join(format!("accel-restart-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = |name: &str, https: &str| {
            let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
            std::fs::write(&cert, pair.cert.pem()).unwrap();
            std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
            let (cert, key) = (cert.display(), key.display());
            config(&format!("[listen]\nhttps = \"{https}\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}"))
        };
        let running = tls("a", "127.0.0.1:8443");
        let renewed = tls("b", "127.0.0.1:8443");
        let (applied, restart) = applicable(&running, renewed.clone());
        assert!(restart.is_empty(), "{restart:?}");
        let certificates = &applied.tls.as_ref().unwrap().certificates;
        assert!(certificates.serves_the_same(&renewed.tls.as_ref().unwrap().certificates));
        assert!(!certificates.serves_the_same(&running.tls.as_ref().unwrap().certificates));

        let moved = tls("c", "127.0.0.1:9443");
        let (applied, restart) = applicable(&running, moved);
        assert_eq!(restart, [StartOnly::Https]);
        assert_eq!(applied.tls.unwrap().addr, running.tls.as_ref().unwrap().addr, "the bound address stays");
        let (applied, restart) = applicable(&running, config(""));
        assert_eq!(restart, [StartOnly::Https], "the listener cannot go without a restart");
        assert!(applied.tls.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_only_settings_are_named_and_keep_their_running_values() {
        let running = config("");
        let next = config(
            "[listen]\nhttp = \"127.0.0.1:9999\"\n[runtime]\nworker_threads = 3\n\
             [log]\nlevel = \"debug\"\naccess = false\n[cache]\nmemory = \"1MiB\"\n",
        );
        let (applied, restart) = applicable(&running, next);
        let names: Vec<&str> = restart.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["listen.http", "runtime.worker_threads", "log.level", "cache"]);
        assert_eq!(applied.listen, running.listen, "the bound address stays");
        assert_eq!(applied.worker_threads, None);
        assert_eq!(applied.log.level, "info");
        assert_eq!(applied.cache.memory, running.cache.memory);
        assert!(!applied.log.access, "the live setting beside them applies");
        // Against what now runs, the same file still needs the same restart.
        assert_eq!(
            restart_needed(&applied, &config("[listen]\nhttp = \"127.0.0.1:9999\"")),
            [StartOnly::Listen]
        );
    }

    #[test]
    fn a_new_credential_key_waits_for_a_restart() {
        let key = |k: &str| config(&format!("[cache]\ncredential_key = \"{}\"\n", k.repeat(32)));
        assert!(restart_needed(&key("a"), &key("a")).is_empty());
        assert_eq!(restart_needed(&key("a"), &key("b")), [StartOnly::Cache]);
        assert_eq!(restart_needed(&config(""), &key("b")), [StartOnly::Cache]);
    }

    #[test]
    fn an_unchanged_file_needs_no_restart() {
        let text = "[listen]\nhttp = \"127.0.0.1:8081\"\n[limits]\nmax_connections = 5\n";
        assert!(restart_needed(&config(text), &config(text)).is_empty());
    }

    #[test]
    fn every_start_only_setting_has_its_own_key() {
        let keys: std::collections::HashSet<&str> = StartOnly::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(keys.len(), StartOnly::ALL.len());
    }
}
