//! One snapshot: every counter the insight views need, read at one instant from the metrics
//! exposition and the endpoints' state; and the [`Interval`] between two snapshots, from
//! which rates, ratios and quantiles are computed.

use std::collections::BTreeMap;

use super::exposition::{self, Sample};
use super::latency::Latency;

/// A route's counters since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteCounters {
    /// Requests answered.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// Requests refused by the route's rate limits.
    pub refused: u64,
    /// Requests that looked in the cache (caching routes only).
    pub lookups: u64,
    /// Lookups answered from memory without waiting on the origin: fresh hits and stale
    /// entries served while they refresh.
    pub hits: u64,
    /// Lookups that went to the origin for a body: misses and expired entries.
    pub misses: u64,
    /// Stale entries the origin confirmed unchanged (a 304, or the same ETag again).
    pub unchanged: u64,
    /// Stale entries the origin replaced with a different answer.
    pub changed: u64,
    /// Time to response headers, every cache result together.
    pub latency: Latency,
    /// Time to response headers of misses and expired entries: what a client waits for the
    /// origin.
    pub miss_latency: Latency,
}

/// One endpoint as the snapshot saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointCounters {
    pub upstream: String,
    /// The configured address.
    pub endpoint: String,
    /// `healthy`, `unhealthy` or `ejected` when the snapshot was taken.
    pub state: &'static str,
    /// Requests in flight when the snapshot was taken.
    pub in_flight: u64,
    /// Tries sent to it.
    pub tries: u64,
    /// Tries that failed: 5xx, connect errors, timeouts, broken exchanges.
    pub failures: u64,
    /// Time to the endpoint's response headers.
    pub latency: Latency,
}

/// The Redis tier when the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// No `[redis]` in the configuration.
    Off,
    /// Circuit closed: Redis answers.
    Up,
    /// Circuit half-open: one probe in flight after an outage.
    Probing,
    /// Circuit open: the sidecar runs on memory and local limits.
    Down,
}

impl RedisState {
    /// The label shown on the page and in `/health/summary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Up => "up",
            Self::Probing => "probing",
            Self::Down => "down",
        }
    }
}

/// The cache as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Entries in memory now.
    pub entries: u64,
    /// Bytes the entries weigh now.
    pub bytes: u64,
    /// Entries invalidated by purges and unsafe requests.
    pub purged: u64,
    /// Entries that left the store because their stale windows ended.
    pub expired: u64,
    /// Followers served by their leader's answer.
    pub coalesced: u64,
}

/// Every counter at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// By route name.
    pub routes: BTreeMap<String, RouteCounters>,
    /// In configuration order.
    pub endpoints: Vec<EndpointCounters>,
    pub cache: CacheCounters,
    pub redis: RedisState,
    /// Rules reloads that succeeded and that were refused.
    pub reloads: (u64, u64),
}

impl Snapshot {
    /// Reads `exposition` (the `/metrics` text) at `at_ms`; `endpoints` carry the state and
    /// in-flight counts read from the pools, `redis_configured` whether there is a tier.
    pub fn read(
        at_ms: u64,
        exposition: &str,
        mut endpoints: Vec<EndpointCounters>,
        redis_configured: bool,
    ) -> Self {
        let mut routes: BTreeMap<String, RouteCounters> = BTreeMap::new();
        let mut cache = CacheCounters::default();
        let mut reloads = (0, 0);
        let (mut redis_up, mut circuit) = (None, 0.0);
        for sample in exposition::samples(exposition) {
            let count = sample.value.max(0.0) as u64;
            match sample.name {
                "accel_cache_entries" => cache.entries = count,
                "accel_cache_bytes" => cache.bytes = count,
                "accel_cache_purged_entries_total" => cache.purged = count,
                "accel_cache_evictions_total" if sample.label("cause") == Some("expired") => {
                    cache.expired = count
                }
                "accel_cache_coalesced_followers_total" if sample.label("result") == Some("served") => {
                    cache.coalesced = count;
                }
                "accel_redis_up" => redis_up = Some(sample.value >= 1.0),
                "accel_redis_circuit_state" => circuit = sample.value,
                "accel_config_reloads_total" => match sample.label("result") {
                    Some("success") => reloads.0 = count,
                    _ => reloads.1 += count,
                },
                "accel_upstream_requests_total" | "accel_upstream_request_duration_seconds_bucket" => {
                    endpoint_sample(&mut endpoints, &sample, count);
                }
                _ => route_sample(&mut routes, &sample, count),
            }
        }
        let redis = match (redis_configured, redis_up) {
            (false, _) => RedisState::Off,
            (true, Some(true)) => RedisState::Up,
            (true, _) if (0.5..1.5).contains(&circuit) => RedisState::Probing,
            (true, _) => RedisState::Down,
        };
        Self { at_ms, routes, endpoints, cache, redis, reloads }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Interval {
        let seconds = self.at_ms.saturating_sub(earlier.at_ms) as f64 / 1000.0;
        let empty = RouteCounters::default();
        let routes = self
            .routes
            .iter()
            .map(|(name, now)| {
                let before = earlier.routes.get(name).unwrap_or(&empty);
                (name.clone(), now.since(before))
            })
            .collect();
        let endpoints = self
            .endpoints
            .iter()
            .map(|now| {
                let before = earlier
                    .endpoints
                    .iter()
                    .find(|e| e.upstream == now.upstream && e.endpoint == now.endpoint);
                match before {
                    Some(before) => EndpointCounters {
                        tries: now.tries.saturating_sub(before.tries),
                        failures: now.failures.saturating_sub(before.failures),
                        latency: now.latency.since(&before.latency),
                        ..now.clone()
                    },
                    None => now.clone(),
                }
            })
            .collect();
        let cache = CacheCounters {
            purged: self.cache.purged.saturating_sub(earlier.cache.purged),
            expired: self.cache.expired.saturating_sub(earlier.cache.expired),
            coalesced: self.cache.coalesced.saturating_sub(earlier.cache.coalesced),
            ..self.cache
        };
        Interval {
            seconds,
            routes,
            endpoints,
            cache,
            redis: self.redis,
            reloads: (
                self.reloads.0.saturating_sub(earlier.reloads.0),
                self.reloads.1.saturating_sub(earlier.reloads.1),
            ),
        }
    }
}

impl RouteCounters {
    fn since(&self, before: &Self) -> Self {
        Self {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
            refused: self.refused.saturating_sub(before.refused),
            lookups: self.lookups.saturating_sub(before.lookups),
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
            unchanged: self.unchanged.saturating_sub(before.unchanged),
            changed: self.changed.saturating_sub(before.changed),
            latency: self.latency.since(&before.latency),
            miss_latency: self.miss_latency.since(&before.miss_latency),
        }
    }

    /// Requests per second over `seconds`.
    pub fn rate(&self, seconds: f64) -> f64 {
        if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 }
    }

    /// Hits over lookups; `None` without lookups.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.lookups > 0).then(|| self.hits as f64 / self.lookups as f64)
    }

    /// 5xx answers over requests; `None` without requests.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

fn route_sample(routes: &mut BTreeMap<String, RouteCounters>, sample: &Sample<'_>, count: u64) {
    let Some(route) = sample.label("route") else { return };
    let counters = || -> RouteCounters { RouteCounters::default() };
    match sample.name {
        "accel_requests_total" => {
            let entry = routes.entry(route.to_owned()).or_insert_with(counters);
            entry.requests += count;
            if sample.label("status") == Some("5xx") {
                entry.errors += count;
            }
        }
        "accel_request_duration_seconds_bucket" => {
            let Some(le) = exposition::bound(sample) else { return };
            let entry = routes.entry(route.to_owned()).or_insert_with(counters);
            entry.latency.add(le, count);
            if matches!(sample.label("cache"), Some("miss" | "expired")) {
                entry.miss_latency.add(le, count);
            }
        }
        "accel_cache_lookups_total" => {
            let entry = routes.entry(route.to_owned()).or_insert_with(counters);
            entry.lookups += count;
            match sample.label("result") {
                Some("hit" | "stale") => entry.hits += count,
                Some("miss" | "expired") => entry.misses += count,
                _ => {}
            }
        }
        "accel_cache_refreshes_total" => {
            let entry = routes.entry(route.to_owned()).or_insert_with(counters);
            match sample.label("result") {
                Some("unchanged") => entry.unchanged += count,
                Some("changed") => entry.changed += count,
                _ => {}
            }
        }
        "accel_rate_limited_total" => {
            routes.entry(route.to_owned()).or_insert_with(counters).refused += count
        }
        _ => {}
    }
}

fn endpoint_sample(endpoints: &mut [EndpointCounters], sample: &Sample<'_>, count: u64) {
    let (Some(upstream), Some(addr)) = (sample.label("upstream"), sample.label("endpoint")) else { return };
    let Some(endpoint) = endpoints.iter_mut().find(|e| e.upstream == upstream && e.endpoint == addr) else {
        return;
    };
    if sample.name == "accel_upstream_requests_total" {
        endpoint.tries += count;
        if sample.label("outcome") != Some("success") {
            endpoint.failures += count;
        }
    } else if let Some(le) = exposition::bound(sample) {
        endpoint.latency.add(le, count);
    }
}

/// What happened between two snapshots: counts over `seconds`, the later snapshot's gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub seconds: f64,
    pub routes: BTreeMap<String, RouteCounters>,
    pub endpoints: Vec<EndpointCounters>,
    /// Purges, expiries and followers counted over the interval; entries and bytes now.
    pub cache: CacheCounters,
    pub redis: RedisState,
    /// Reloads that succeeded and that were refused during the interval.
    pub reloads: (u64, u64),
}

impl Interval {
    /// Every route's requests together.
    pub fn total(&self) -> RouteCounters {
        let mut total = RouteCounters::default();
        for route in self.routes.values() {
            total.requests += route.requests;
            total.errors += route.errors;
            total.refused += route.refused;
            total.lookups += route.lookups;
            total.hits += route.hits;
            total.misses += route.misses;
            total.unchanged += route.unchanged;
            total.changed += route.changed;
        }
        total
    }

    /// [`Interval::total`] with every route's latency merged in.
    pub fn total_with_latency(&self) -> RouteCounters {
        let mut total = self.total();
        for route in self.routes.values() {
            total.latency.merge(&route.latency);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
accel_requests_total{route=\"leads\",method=\"GET\",status=\"2xx\"} 90
accel_requests_total{route=\"leads\",method=\"GET\",status=\"5xx\"} 10
accel_request_duration_seconds_bucket{route=\"leads\",cache=\"hit\",le=\"0.01\"} 80
accel_request_duration_seconds_bucket{route=\"leads\",cache=\"hit\",le=\"+Inf\"} 80
accel_request_duration_seconds_bucket{route=\"leads\",cache=\"miss\",le=\"0.01\"} 0
accel_request_duration_seconds_bucket{route=\"leads\",cache=\"miss\",le=\"+Inf\"} 20
accel_cache_lookups_total{route=\"leads\",result=\"hit\"} 70
accel_cache_lookups_total{route=\"leads\",result=\"stale\"} 10
accel_cache_lookups_total{route=\"leads\",result=\"miss\"} 20
accel_cache_refreshes_total{route=\"leads\",result=\"unchanged\"} 9
accel_rate_limited_total{route=\"leads\",limit=\"per-client\"} 4
accel_cache_entries 12
accel_upstream_requests_total{upstream=\"api\",endpoint=\"127.0.0.1:1\",outcome=\"success\"} 18
accel_upstream_requests_total{upstream=\"api\",endpoint=\"127.0.0.1:1\",outcome=\"timeout\"} 2
accel_redis_up 0
accel_redis_circuit_state 2
accel_config_reloads_total{result=\"success\"} 3
accel_config_reloads_total{result=\"error\"} 1
";

    fn endpoint() -> EndpointCounters {
        EndpointCounters {
            upstream: "api".into(),
            endpoint: "127.0.0.1:1".into(),
            state: "healthy",
            ..Default::default()
        }
    }

    #[test]
    fn the_exposition_becomes_route_endpoint_and_tier_counters() {
        let snapshot = Snapshot::read(1_000, EXPOSITION, vec![endpoint()], true);

        let leads = &snapshot.routes["leads"];
        assert_eq!((leads.requests, leads.errors, leads.refused), (100, 10, 4));
        assert_eq!((leads.lookups, leads.hits, leads.misses, leads.unchanged), (100, 80, 20, 9));
        assert_eq!((leads.latency.count(), leads.miss_latency.count()), (100, 20));
        assert_eq!((snapshot.endpoints[0].tries, snapshot.endpoints[0].failures), (20, 2));
        assert_eq!(snapshot.cache.entries, 12);
        assert_eq!(snapshot.redis, RedisState::Down);
        assert_eq!(snapshot.reloads, (3, 1));
        assert_eq!(Snapshot::read(0, EXPOSITION, vec![], false).redis, RedisState::Off);
    }

    #[test]
    fn an_interval_counts_what_happened_between_two_snapshots() {
        let before = Snapshot::read(0, "", vec![endpoint()], false);
        let after = Snapshot::read(10_000, EXPOSITION, vec![endpoint()], false);

        let interval = after.since(&before);

        let leads = &interval.routes["leads"];
        assert_eq!(interval.seconds, 10.0);
        assert_eq!(leads.rate(interval.seconds), 10.0);
        assert_eq!(leads.hit_rate(), Some(0.8));
        assert_eq!(leads.error_ratio(), Some(0.1));
        assert_eq!(interval.reloads, (3, 1));
        assert_eq!(after.since(&after).routes["leads"].requests, 0);
    }
}
