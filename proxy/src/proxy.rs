//! The state every request shares: the running snapshot (rules, upstreams and live settings,
//! swapped whole on reload), metrics, limiters, the cache; and the reload that builds the
//! next snapshot from `accel.toml` and the rules files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::gauge::Gauge;

use crate::cache::{Cache, RouteCaching};
use crate::compress::Compression;
use crate::config::restart::{self, StartOnly};
use crate::config::{self, Config, Problems, RuleSet};
use crate::limit::{Clients, RateLimiting};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Running};
use crate::route::timing::SlowLog;
use crate::route::{Route, RouteMetrics, RouteTable};
use crate::tier::RedisTier;
use crate::tls::LiveCertificates;
use crate::upstream::{Upstream, UpstreamName};

/// Shared proxy state.
#[derive(Debug)]
pub struct Proxy {
    /// What the request path runs on, the running snapshot included.
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
    /// Rate limiters (kept across reloads).
    pub limits: Arc<RateLimiting>,
    /// The response cache: here, not in the snapshot, so that it survives reloads.
    pub cache: Arc<Cache>,
    /// The shared Redis tier, when configured.
    pub redis: Option<Arc<RedisTier>>,
    /// Snapshots for the status page and `/health/summary`.
    pub insight: crate::insight::Insight,
    /// The TLS listener's certificates, when it was configured at start: a reload replaces
    /// them with those read again from their files.
    pub tls: Option<Arc<LiveCertificates>>,
    /// Bearer token of `POST /cache/purge` (`cache.purge_token`, else `admin.token`); `None`
    /// disables purging. Live: a reload of `accel.toml` replaces it.
    pub purge_token: ArcSwapOption<crate::secret::Secret>,
    /// `accel.toml`, read again on reload; `None`: the configuration was not read from a file,
    /// and a reload reads the rules only.
    config_path: Option<PathBuf>,
    /// Glob patterns of the rules files (`rules.files` applies at start only).
    rules_globs: Vec<String>,
    /// What the running snapshot was built from. Held for a whole reload: reloads run one at
    /// a time.
    state: Mutex<State>,
    /// Active health checks of the running upstreams; `None` until the sidecar runs them.
    health: Mutex<Option<Vec<HealthTask>>>,
    /// Start-only settings changed in `accel.toml` since start (`accel_config_restart_pending`).
    restart_pending: Gauge,
}

/// What the running snapshot was built from.
#[derive(Debug)]
struct State {
    /// The configuration in force: the live settings of the last valid `accel.toml`, the
    /// start-only ones as the sidecar started with them.
    config: Config,
    /// The `[compress]` defaults every route's compression is built from.
    compression: Compression,
    /// The files the current rules came from.
    rules_files: Vec<PathBuf>,
}

/// The health check task of one running upstream.
#[derive(Debug)]
struct HealthTask {
    upstream: Arc<Upstream>,
    task: tokio::task::AbortHandle,
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Routes now running.
    pub routes: usize,
    /// Settings of `accel.toml` that differ from the running ones but take effect only at the
    /// next start; everything else applied.
    pub restart: Vec<StartOnly>,
}

impl Proxy {
    /// Builds the state from a validated configuration and rules.
    pub fn new(config: &Config, rules: RuleSet) -> Self {
        let metrics = Arc::new(Metrics::new(&config.latency_buckets));
        let compression = Compression::new(config.compress.clone(), &metrics);
        let cache = Arc::new(Cache::new(config.cache.clone(), &metrics));
        let redis = config.redis.as_ref().and_then(|redis| match RedisTier::new(redis, &metrics) {
            Ok(tier) => Some(Arc::new(tier)),
            Err(e) => {
                tracing::error!(error = %e, "redis tier disabled: cannot build its client");
                None
            }
        });
        if let Some(tier) = &redis {
            cache.share(tier.clone());
        }
        let limits = Arc::new(RateLimiting::new(config.limits.rate_limiting, redis.clone(), &metrics));
        let restart_pending = Gauge::default();
        metrics.register(
            "config_restart_pending",
            "Settings of accel.toml changed since start that take effect only at a restart",
            restart_pending.clone(),
        );
        let running = Running {
            routes: RouteTable::default(),
            upstreams: Vec::new(),
            forwarded: config.forwarded.clone(),
            clients: Clients::default(),
            access_log: config.log.access,
            body_read_timeout: config.limits.body_read_timeout,
            max_body_size: config.limits.max_body_size,
        };
        let pipeline = Pipeline {
            running: ArcSwap::from_pointee(running),
            limits: limits.clone(),
            cache: cache.clone(),
            unrouted: metrics.unrouted.clone(),
            slow_log: SlowLog::default(),
        };
        let state = State { config: config.clone(), compression, rules_files: Vec::new() };
        let proxy = Self {
            pipeline,
            limits,
            metrics,
            tls: config.tls.as_ref().map(|tls| LiveCertificates::new(tls.certificates.clone())),
            purge_token: ArcSwapOption::from(config.cache.purge_token.clone().map(Arc::new)),
            config_path: config.path.clone(),
            rules_globs: config.rules_files.clone(),
            state: Mutex::new(state),
            health: Mutex::new(None),
            restart_pending,
            cache,
            redis,
            insight: crate::insight::Insight::new(config.admin.snapshot_interval),
        };
        let mut state = lock(&proxy.state);
        proxy.install(&mut state, config.clone(), rules);
        drop(state);
        proxy
    }

    /// The running upstreams, in configuration order.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.pipeline.running.load().upstreams.clone()
    }

    /// The names of the running upstreams.
    pub fn upstream_names(&self) -> HashSet<UpstreamName> {
        self.pipeline.running.load().upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// Reads `accel.toml` and the rules files again and, if both are valid, swaps the new
    /// snapshot in whole: upstreams, live settings and rules together. Requests in flight
    /// finish on the snapshot they started with. The start-only settings keep their running
    /// values and are named in the result. An invalid `accel.toml` or rules set leaves the
    /// running snapshot alone, and so does finding no rules file at all where there were some
    /// (files that vanish together are a half-done deploy far more often than a wish to route
    /// nothing, which an empty rules file expresses).
    pub fn reload(&self) -> Result<Reloaded, Problems> {
        let mut state = lock(&self.state);
        let (next, rules) = self.read(&state).inspect_err(|_| self.metrics.reload(false))?;
        let (config, restart) = restart::applicable(&state.config, next);
        if !state.config.admin_exposed_without_token() {
            // A token removed from an admin listener other hosts reach.
            config.warn_if_admin_exposed();
        }
        let routes = rules.routes.len();
        self.install(&mut state, config, rules);
        self.restart_pending.set(i64::try_from(restart.len()).unwrap_or(i64::MAX));
        // Counted once installed: a request that follows the count meets the new snapshot.
        self.metrics.reload(true);
        Ok(Reloaded { routes, restart })
    }

    /// The new configuration and rules, validated together: a route must name an upstream of
    /// the new `accel.toml`.
    fn read(&self, state: &State) -> Result<(Config, RuleSet), Problems> {
        let config = match &self.config_path {
            Some(path) => config::load_sidecar(Some(path))?,
            None => state.config.clone(),
        };
        let upstreams = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let rules = config::rules::load(&self.rules_globs, &upstreams)?;
        let rules = self.refuse_vanished(rules, state)?;
        Ok((config, rules))
    }

    fn refuse_vanished(&self, rules: RuleSet, state: &State) -> Result<RuleSet, Problems> {
        if !rules.files.is_empty() || state.rules_files.is_empty() {
            return Ok(rules);
        }
        let mut problems = Problems::default();
        for glob in &self.rules_globs {
            problems.at(
                Path::new(glob),
                "",
                "matches no rules file; the running rules stay (an empty rules file routes nothing)",
            );
        }
        Err(problems)
    }

    /// The rules files currently loaded.
    pub fn rules_files(&self) -> Vec<PathBuf> {
        lock(&self.state).rules_files.clone()
    }

    /// Glob patterns of the rules files.
    pub fn rules_globs(&self) -> &[String] {
        &self.rules_globs
    }

    /// The `accel.toml` a reload reads, when the configuration came from a file.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Builds the snapshot of `config` (already stripped of start-only changes) and `rules`,
    /// and swaps it in.
    fn install(&self, state: &mut State, config: Config, rules: RuleSet) {
        let before = self.pipeline.running.load_full();
        // upstreams: an unchanged upstream is the running one; a changed one takes over the
        // endpoints it keeps (connections, health); a removed one drains with its requests.
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|next| match before.upstreams.iter().find(|u| u.name == next.name) {
                Some(running) if running.config == *next => running.clone(),
                Some(running) => Arc::new(Upstream::reconfigured(next.clone(), running, &self.metrics)),
                None => Arc::new(Upstream::new(next.clone(), &self.metrics)),
            })
            .collect();
        if *state.compression.defaults() != config.compress {
            state.compression = state.compression.with_defaults(config.compress.clone());
        }
        let RuleSet { routes, files } = rules;
        let (answer_fields, cache_status_fields) =
            (config.forwarded.answer_fields(), self.cache.status_fields());
        let mut limits = self.limits.reload();
        let table: Vec<Arc<Route>> = routes
            .into_iter()
            .filter_map(|rule| {
                // Validated against these upstreams: every route finds its own.
                let upstream = upstreams.iter().find(|u| u.name == rule.upstream)?.clone();
                let mut metrics = RouteMetrics::new(&self.metrics, &rule.name);
                if !rule.upgrades.protocols.is_empty() {
                    metrics = metrics.with_tunnels();
                }
                let limits = limits.route(&rule.name, &rule.rate_limit);
                let compress = state.compression.for_route(&rule.name, rule.compress.as_ref()).map(Arc::new);
                let cache = Arc::new(RouteCaching {
                    settings: rule.cache.clone(),
                    metrics: self.cache.metrics.route(&rule.name),
                    compress: compress.clone(),
                    request_id: config.forwarded.request_id,
                });
                let added_fields = Route::added_fields(
                    &rule,
                    answer_fields,
                    cache_status_fields,
                    compress.is_some(),
                    &limits,
                );
                Some(Arc::new(Route { rule, upstream, metrics, cache, limits, compress, added_fields }))
            })
            .collect();
        limits.finish();
        let clients = Clients::new(
            config.limits.rate_limiting.client_concurrency,
            config.forwarded.trusted_proxies.clone(),
            Some(&before.clients),
        );
        self.pipeline.running.store(Arc::new(Running {
            routes: RouteTable::new(table),
            upstreams: upstreams.clone(),
            forwarded: config.forwarded.clone(),
            clients,
            access_log: config.log.access,
            body_read_timeout: config.limits.body_read_timeout,
            max_body_size: config.limits.max_body_size,
        }));
        self.purge_token.store(config.cache.purge_token.clone().map(Arc::new));
        // tls: new handshakes get the certificates just read; open connections keep theirs.
        if let (Some(live), Some(tls)) = (&self.tls, &config.tls)
            && live.replace(tls.certificates.clone())
        {
            let files: Vec<_> = tls.certificates.files().iter().map(|f| f.display().to_string()).collect();
            tracing::info!(files = %files.join(", "), "TLS certificates replaced; open connections keep theirs");
        }
        self.check_health(&mut lock(&self.health), &upstreams);
        for gone in before.upstreams.iter().filter(|u| !upstreams.iter().any(|n| n.name == u.name)) {
            tracing::info!(upstream = %gone.name, "upstream removed; its requests in flight finish");
            for endpoint in &gone.endpoints {
                crate::upstream::metrics::retire(&self.metrics, &gone.name, &endpoint.addr);
            }
        }
        state.config = config;
        state.rules_files = files;
    }

    /// Starts the active health checks of the running upstreams, and from now on of those a
    /// reload brings. Needs a Tokio runtime.
    pub fn start_health_checks(&self) {
        let mut health = lock(&self.health);
        health.get_or_insert_with(Vec::new);
        self.check_health(&mut health, &self.upstreams());
    }

    /// Stops every health check.
    pub fn stop_health_checks(&self) {
        for check in lock(&self.health).take().into_iter().flatten() {
            check.task.abort();
        }
    }

    /// One health check task per upstream of `upstreams` that has one (when the checks run):
    /// an unchanged upstream keeps its task, a replaced or removed one's task stops.
    fn check_health(&self, health: &mut Option<Vec<HealthTask>>, upstreams: &[Arc<Upstream>]) {
        let Some(tasks) = health else { return };
        tasks.retain(|t| {
            let kept = upstreams.iter().any(|u| Arc::ptr_eq(u, &t.upstream));
            if !kept {
                t.task.abort();
            }
            kept
        });
        for upstream in upstreams {
            if upstream.config.health.is_some() && !tasks.iter().any(|t| Arc::ptr_eq(&t.upstream, upstream)) {
                let task =
                    tokio::spawn(crate::upstream::health::run(upstream.clone(), std::future::pending()));
                tasks.push(HealthTask { upstream: upstream.clone(), task: task.abort_handle() });
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
