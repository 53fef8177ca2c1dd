//! `accel.toml` → [`Config`]: figment layers the defaults, the file, then `ACCEL_*` variables
//! (`ACCEL_LISTEN__HTTP=0.0.0.0:9090`: a double underscore separates keys; variables without
//! one, such as `ACCEL_CONFIG`, are not configuration keys).

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use super::file::{
    ConcurrencyFile, EjectionFile, HealthFile, LimitsFile, SidecarFile, TlsFile, TlsFiles, UpstreamFile,
    UpstreamTlsFile,
};
use super::{
    AdminConfig, Config, DEFAULT_LATENCY_BUCKETS, Ejection, ForwardedConfig, H2Limits, HealthCheck, Limits,
    LogConfig, LogFormat, Problems, TlsListen, UpstreamConfig,
};
use crate::quantity::duration;
use crate::tls::Certificates;
use crate::upstream::{EndpointAddr, UpstreamName};

/// Reads `path` (if given; else defaults only), applies `ACCEL_*` overrides and converts.
pub fn load(path: Option<&Path>) -> Result<Config, Problems> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            let mut problems = Problems::default();
            problems.at(path, "", "file not found");
            return Err(problems);
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // Only `ACCEL_<SECTION>__<KEY>` variables are configuration: others with the prefix
    // (`ACCEL_CONFIG`, the path of this file; `ACCEL_REQUIRE_SERVICES` for tests) are not keys.
    let figment =
        figment.merge(Env::prefixed("ACCEL_").filter(|key| key.as_str().contains("__")).split("__"));
    let shown = path.map_or_else(|| PathBuf::from("<defaults>"), Path::to_path_buf);
    let file: SidecarFile = figment.extract().map_err(|first| every_problem(&figment, first, &shown))?;
    convert(file, path, &shown)
}

/// Every problem serde finds in the merged configuration, starting from the `first` one.
///
/// serde stops at the first problem, so each problem's key is taken out of the merged values
/// and the rest read again until a pass has none (as for a rules file's routes); a required key
/// taken out that way is not reported a second time as missing. Only the first problem can
/// name the environment variable it came from: the later passes read plain values.
fn every_problem(figment: &Figment, first: figment::Error, shown: &Path) -> Problems {
    let mut problems = Problems::default();
    let mut removed: Vec<Vec<String>> = Vec::new();
    let mut merged = figment.find_value("").ok();
    let mut errors: Vec<figment::Error> = first.into_iter().collect();
    // Each pass takes at least one key out, and a file has far fewer keys than this.
    for _ in 0..256 {
        let mut progressed = false;
        for error in errors {
            if removed.iter().any(|gone| is_missing(&error, gone)) {
                continue;
            }
            let mut message = error.kind.to_string();
            if let Some(figment::Source::Custom(source)) =
                error.metadata.as_ref().and_then(|m| m.source.as_ref())
            {
                message = format!("{message} (from {source})");
            }
            problems.at(shown, &error.path.join("."), message);
            if let Some(merged) = &mut merged
                && remove(merged, &error.path)
            {
                removed.push(error.path);
                progressed = true;
            }
        }
        let Some(merged) = merged.as_ref().filter(|_| progressed) else { break };
        match merged.deserialize::<SidecarFile>() {
            Ok(_) => break,
            Err(next) => errors = next.into_iter().collect(),
        }
    }
    problems
}

/// True for the "missing field" error about `gone`, a key taken out after an earlier problem.
fn is_missing(error: &figment::Error, gone: &[String]) -> bool {
    let Some((field, parent)) = gone.split_last() else { return false };
    matches!(&error.kind, figment::error::Kind::MissingField(name) if name == field) && error.path == parent
}

/// Takes the value at `path` out of `merged`; false when the path does not lead to one.
fn remove(merged: &mut figment::value::Value, path: &[String]) -> bool {
    use figment::value::Value;
    let Some((last, parents)) = path.split_last() else { return false };
    let mut value = merged;
    for key in parents {
        let next = match value {
            Value::Dict(_, dict) => dict.get_mut(key),
            Value::Array(_, items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        let Some(next) = next else { return false };
        value = next;
    }
    match value {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        Value::Array(_, items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Converts the operator's file into the running configuration, collecting every problem.
pub fn convert(file: SidecarFile, path: Option<&Path>, shown: &Path) -> Result<Config, Problems> {
    let SidecarFile {
        listen,
        admin,
        runtime,
        limits,
        forwarded,
        log,
        metrics,
        upstreams,
        rules,
        cache,
        redis,
        compress,
    } = file;
    let mut problems = Problems::default();
    let p = &mut problems;

    let base = path.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let tls = match (&listen.https, listen.tls) {
        (None, None) => None,
        (Some(_), None) => {
            p.at(shown, "listen.tls", "`listen.https` needs `tls = { cert = ..., key = ... }`");
            None
        }
        (None, Some(_)) => {
            p.at(shown, "listen.https", "`listen.tls` is set but no `https` address");
            None
        }
        (Some(addr), Some(files)) => {
            let addr = socket_addr(p, shown, "listen.https", addr);
            let certificates = tls_certificates(p, shown, &base, files);
            addr.zip(certificates).map(|(addr, certificates)| TlsListen { addr, certificates })
        }
    };
    let listen = socket_addr(p, shown, "listen.http", &listen.http);
    let admin_addr = socket_addr(p, shown, "admin.addr", &admin.addr);
    let snapshot_interval = duration(p, shown, "admin.snapshot_interval", admin.snapshot_interval, 10);
    let worker_threads = match runtime.worker_threads {
        None => None,
        Some(n) => {
            let threads = NonZeroUsize::new(n);
            if threads.is_none() {
                p.at(shown, "runtime.worker_threads", "must be at least 1");
            }
            threads
        }
    };
    let rate_limiting = rate_limiting(p, shown, &limits);
    let (head, max_body_size, max_connections_per_client, h2) = request_limits(p, shown, &limits);
    let max_connections = NonZeroUsize::new(limits.max_connections.unwrap_or(10_000));
    if max_connections.is_none() {
        p.at(shown, "limits.max_connections", "must be at least 1");
    }
    let header_read_timeout =
        duration(p, shown, "limits.header_read_timeout", limits.header_read_timeout, 30);
    let body_read_timeout = duration(p, shown, "limits.body_read_timeout", limits.body_read_timeout, 60);
    let drain_timeout = duration(p, shown, "limits.drain_timeout", limits.drain_timeout, 30);

    let mut trusted_proxies = Vec::new();
    for (i, text) in forwarded.trusted_proxies.iter().enumerate() {
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => p.at(
                shown,
                &format!("forwarded.trusted_proxies[{i}]"),
                format!("{text:?} is not an IP address or CIDR range"),
            ),
        }
    }
    let via = match forwarded.via.as_deref().unwrap_or("accel") {
        "" => None,
        name => match http::HeaderValue::from_str(name) {
            Ok(value) => Some(crate::forward::headers::Via::new(&value)),
            Err(_) => {
                p.at(shown, "forwarded.via", "must be visible ASCII");
                None
            }
        },
    };

    let format = match log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.at(shown, "log.format", format!("{other:?} is not one of \"text\", \"json\""));
            LogFormat::Text
        }
    };

    let latency_buckets = metrics.latency_buckets.unwrap_or_else(|| DEFAULT_LATENCY_BUCKETS.to_vec());
    if latency_buckets.is_empty()
        || latency_buckets.windows(2).any(|w| w[0] >= w[1])
        || latency_buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
    {
        p.at(shown, "metrics.latency_buckets", "must be positive and strictly increasing");
    }

    let upstreams = upstreams
        .into_iter()
        .filter_map(|(name, upstream)| self::upstream(p, shown, &base, name, upstream))
        .collect();

    let rules_files = rules
        .files
        .iter()
        .map(|pattern| {
            if Path::new(pattern).is_absolute() {
                pattern.clone()
            } else {
                base.join(pattern).to_string_lossy().into_owned()
            }
        })
        .collect();

    let compress =
        crate::compress::CompressSettings::convert(compress, &mut |key, message| p.at(shown, key, message));
    let cache =
        crate::cache::config::convert(cache, admin.token.as_ref().filter(|t| !t.is_empty()), p, shown);
    let redis = redis.and_then(|file| crate::tier::config::convert(p, shown, file));

    let config = Config {
        path: path.map(Path::to_path_buf),
        listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
        tls,
        admin: AdminConfig {
            addr: admin_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
            token: admin.token.filter(|t| !t.is_empty()),
            snapshot_interval,
        },
        worker_threads,
        limits: Limits {
            max_connections: max_connections.unwrap_or(NonZeroUsize::MIN),
            header_read_timeout,
            body_read_timeout,
            drain_timeout,
            rate_limiting,
            head,
            max_body_size,
            max_connections_per_client,
            h2,
        },
        forwarded: ForwardedConfig {
            trusted_proxies,
            via,
            request_id: forwarded.request_id.unwrap_or(true),
            start_traces: forwarded.start_traces.unwrap_or(false),
        },
        log: LogConfig {
            format,
            level: log.level.unwrap_or_else(|| "info".into()),
            access: log.access.unwrap_or(true),
        },
        latency_buckets,
        upstreams,
        rules_files,
        compress,
        cache,
        redis,
    };
    problems.into_result(config)
}

fn upstream(
    p: &mut Problems,
    shown: &Path,
    base: &Path,
    name: String,
    file: UpstreamFile,
) -> Option<UpstreamConfig> {
    let UpstreamFile {
        endpoints,
        health,
        ejection,
        connect_timeout,
        max_idle_per_endpoint,
        idle_timeout,
        read_timeout,
        max_connections_per_endpoint,
        dns_refresh,
        tls,
    } = file;
    let at = |key: &str| format!("upstreams.{name}.{key}");
    if endpoints.is_empty() {
        p.at(shown, &at("endpoints"), "needs at least one endpoint");
    }
    let endpoints: Vec<EndpointAddr> = endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match text.parse::<EndpointAddr>() {
            Ok(addr) => Some(addr),
            Err(e) => {
                p.at(shown, &at(&format!("endpoints[{i}]")), e);
                None
            }
        })
        .collect();
    let health = health.map(|h| {
        let HealthFile { path, interval, timeout, healthy_threshold, unhealthy_threshold } = h;
        let path = match path.parse::<http::uri::PathAndQuery>() {
            Ok(path) if path.path().starts_with('/') => path,
            _ => {
                p.at(shown, &at("health.path"), format!("{path:?} is not a path starting with /"));
                http::uri::PathAndQuery::from_static("/")
            }
        };
        HealthCheck {
            path,
            interval: duration(p, shown, &at("health.interval"), interval, 10),
            timeout: duration(p, shown, &at("health.timeout"), timeout, 2),
            healthy_threshold: non_zero(p, shown, &at("health.healthy_threshold"), healthy_threshold, 1),
            unhealthy_threshold: non_zero(
                p,
                shown,
                &at("health.unhealthy_threshold"),
                unhealthy_threshold,
                2,
            ),
        }
    });
    let ejection = ejection.map_or_else(Ejection::default, |e| {
        let EjectionFile { consecutive_failures, cooldown } = e;
        Ejection {
            consecutive_failures: non_zero(
                p,
                shown,
                &at("ejection.consecutive_failures"),
                consecutive_failures,
                5,
            ),
            cooldown: duration(p, shown, &at("ejection.cooldown"), cooldown, 30),
        }
    });
    let max_connections_per_endpoint = max_connections_per_endpoint.and_then(|n| {
        let cap = NonZeroUsize::new(n);
        if cap.is_none() {
            p.at(shown, &at("max_connections_per_endpoint"), "must be at least 1 (leave it out for no cap)");
        }
        cap
    });
    let tls = tls.and_then(|tls| upstream_tls(p, shown, base, &name, tls)).map(std::sync::Arc::new);
    let Ok(name) = UpstreamName::try_from(name.as_str()) else {
        p.at(shown, &format!("upstreams.{name}"), "upstream names use letters, digits, '-' and '_'");
        return None;
    };
    Some(UpstreamConfig {
        name,
        endpoints,
        health,
        ejection,
        // Longer than the kernel's first SYN retransmission (1 s): a SYN dropped by an accept
        // queue full for a moment (a burst of new connections) costs a second, not a 502.
        connect_timeout: duration(p, shown, &at("connect_timeout"), connect_timeout, 5),
        max_idle_per_endpoint: max_idle_per_endpoint.unwrap_or(256),
        idle_timeout: duration(p, shown, &at("idle_timeout"), idle_timeout, 90),
        // nginx's `proxy_read_timeout` and Varnish's `between_bytes_timeout`.
        read_timeout: duration(p, shown, &at("read_timeout"), read_timeout, 60),
        dns_refresh: duration(p, shown, &at("dns_refresh"), dns_refresh, 30),
        max_connections_per_endpoint,
        tls,
    })
}

/// `upstreams.NAME.tls`: the CA file (relative to `base`), the server name, verification.
fn upstream_tls(
    p: &mut Problems,
    shown: &Path,
    base: &Path,
    name: &str,
    file: UpstreamTlsFile,
) -> Option<crate::upstream::UpstreamTls> {
    let UpstreamTlsFile { ca, server_name, verify } = file;
    let verify = verify.unwrap_or(true);
    let ca = ca.map(|ca| base.join(ca));
    crate::upstream::UpstreamTls::new(ca.as_deref(), server_name.as_deref(), verify)
        .map_err(|(key, e)| p.at(shown, &format!("upstreams.{name}.tls.{key}"), e))
        .ok()
}

/// `[limits]` keys of rate limiting: the per-client concurrency cap and the limiters' bounds.
fn rate_limiting(p: &mut Problems, shown: &Path, limits: &LimitsFile) -> crate::limit::LimitSettings {
    use crate::limit::{
        DEFAULT_CLEANUP_INTERVAL, DEFAULT_CLIENT_CONCURRENCY, DEFAULT_MAX_KEYS, LimitSettings,
    };
    let client_concurrency = match limits.client_concurrency {
        None | Some(ConcurrencyFile::Enabled(false)) => None,
        Some(ConcurrencyFile::Enabled(true)) => NonZeroU32::new(DEFAULT_CLIENT_CONCURRENCY),
        Some(ConcurrencyFile::Max(n)) => NonZeroU32::new(n).or_else(|| {
            p.at(shown, "limits.client_concurrency", "must be at least 1 (or false for no cap)");
            None
        }),
    };
    let max_keys =
        NonZeroUsize::new(limits.rate_limit_keys.unwrap_or(DEFAULT_MAX_KEYS)).unwrap_or_else(|| {
            p.at(shown, "limits.rate_limit_keys", "must be at least 1");
            NonZeroUsize::MIN
        });
    let cleanup_interval = duration(
        p,
        shown,
        "limits.rate_limit_cleanup",
        limits.rate_limit_cleanup.clone(),
        DEFAULT_CLEANUP_INTERVAL.as_secs(),
    );
    LimitSettings { client_concurrency, max_keys, cleanup_interval }
}

/// Most header fields a request may be allowed (`limits.max_headers`): each costs a slot in
/// the head check and in hyper's parser.
const MAX_HEADERS_CAP: usize = 1024;

/// The request head, body, per-client and HTTP/2 bounds of `[limits]`.
fn request_limits(
    p: &mut Problems,
    shown: &Path,
    limits: &LimitsFile,
) -> (crate::framing::HeadLimits, u64, Option<NonZeroUsize>, H2Limits) {
    let max_head = size(p, shown, "limits.max_header_size", limits.max_header_size.as_deref(), 32 << 10);
    let max_target = size(p, shown, "limits.max_target_length", limits.max_target_length.as_deref(), 8 << 10);
    let max_body_size = size(p, shown, "limits.max_body_size", limits.max_body_size.as_deref(), 100 << 20);
    let max_headers = match limits.max_headers {
        None => 100,
        Some(n) if (1..=MAX_HEADERS_CAP).contains(&n) => n,
        Some(_) => {
            p.at(shown, "limits.max_headers", format!("must be from 1 to {MAX_HEADERS_CAP}"));
            100
        }
    };
    if max_target >= max_head {
        p.at(shown, "limits.max_target_length", "must be less than limits.max_header_size");
    }
    let max_connections_per_client = match limits.max_connections_per_client {
        None => None,
        Some(n) => NonZeroUsize::new(n).or_else(|| {
            p.at(shown, "limits.max_connections_per_client", "must be at least 1 (leave it out for no cap)");
            None
        }),
    };
    let max_concurrent_streams = limits.h2_max_concurrent_streams.unwrap_or(100);
    if max_concurrent_streams == 0 {
        p.at(shown, "limits.h2_max_concurrent_streams", "must be at least 1");
    }
    let h2 = H2Limits {
        max_concurrent_streams: max_concurrent_streams.max(1),
        max_header_list_size: u32::try_from(max_head).unwrap_or(u32::MAX),
        max_pending_accept_reset_streams: limits.h2_max_pending_accept_reset_streams.unwrap_or(20),
        max_local_error_reset_streams: limits.h2_max_local_error_reset_streams.unwrap_or(1024),
    };
    let head = crate::framing::HeadLimits {
        max_head: usize::try_from(max_head).unwrap_or(usize::MAX),
        max_headers,
        max_target: usize::try_from(max_target).unwrap_or(usize::MAX),
    };
    (head, max_body_size, max_connections_per_client, h2)
}

/// A byte size (`"32KiB"`), `default` when absent; zero is refused.
fn size(p: &mut Problems, shown: &Path, key: &str, text: Option<&str>, default: u64) -> u64 {
    match text.map(crate::quantity::parse_size) {
        None => default,
        Some(Ok(0)) => {
            p.at(shown, key, "must be greater than zero");
            default
        }
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            p.at(shown, key, e);
            default
        }
    }
}

/// `listen.tls`: one certificate, or several chosen by SNI. Paths are relative to `base`.
fn tls_certificates(
    p: &mut Problems,
    shown: &Path,
    base: &Path,
    files: TlsFiles,
) -> Option<std::sync::Arc<Certificates>> {
    match files {
        TlsFiles::One(TlsFile { cert, key, names }) if names.is_empty() => {
            Certificates::one(&base.join(cert), &base.join(key))
                .map(std::sync::Arc::new)
                .map_err(|(key, e)| p.at(shown, &format!("listen.tls.{key}"), e))
                .ok()
        }
        TlsFiles::One(one) => sni_certificates(p, shown, base, vec![one], |_| "listen.tls".into()),
        TlsFiles::Several(several) => {
            sni_certificates(p, shown, base, several, |i| format!("listen.tls[{i}]"))
        }
    }
}

fn sni_certificates(
    p: &mut Problems,
    shown: &Path,
    base: &Path,
    files: Vec<TlsFile>,
    entry: impl Fn(usize) -> String,
) -> Option<std::sync::Arc<Certificates>> {
    if files.is_empty() {
        p.at(shown, "listen.tls", "lists no certificate");
        return None;
    }
    let certs: Vec<_> = files
        .into_iter()
        .map(|TlsFile { cert, key, names }| crate::tls::SniCert {
            cert: base.join(cert),
            key: base.join(key),
            names,
        })
        .collect();
    Certificates::by_sni(&certs)
        .map(std::sync::Arc::new)
        .map_err(|(i, key, e)| p.at(shown, &format!("{}.{key}", entry(i)), e))
        .ok()
}

fn socket_addr(p: &mut Problems, shown: &Path, key: &str, text: &str) -> Option<SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.at(shown, key, format!("{text:?} is not an address such as \"127.0.0.1:8080\""));
            None
        }
    }
}

fn non_zero(p: &mut Problems, shown: &Path, key: &str, value: Option<u32>, default: u32) -> NonZeroU32 {
    let fallback = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
    match value {
        None => fallback,
        Some(n) => NonZeroU32::new(n).unwrap_or_else(|| {
            p.at(shown, key, "must be at least 1");
            fallback
        }),
    }
}
