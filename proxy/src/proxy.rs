//! The state every request shares: the current route table (swapped whole on reload), the
//! upstream pools, metrics and policies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::cache::{Cache, RouteCaching};
use crate::config::{self, Config, Problems, RuleSet};
use crate::limit::RateLimiting;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::route::{Route, RouteMetrics, RouteTable};
use crate::tier::RedisTier;
use crate::upstream::{Upstream, UpstreamName};

/// Shared proxy state.
#[derive(Debug)]
pub struct Proxy {
    /// What the request path runs on, the running rules included.
    pub pipeline: Pipeline,
    /// Upstream pools, in configuration order.
    pub upstreams: Vec<Arc<Upstream>>,
    pub metrics: Arc<Metrics>,
    /// Rate limiters (kept across reloads) and the per-client concurrency cap.
    pub limits: Arc<RateLimiting>,
    /// Glob patterns of the rules files.
    rules_globs: Vec<String>,
    /// The files the current rules came from.
    rules_files: Mutex<Vec<PathBuf>>,
    /// Admin token for write endpoints.
    pub admin_token: Option<String>,
    /// The `[compress]` defaults and compression metrics every route's compression is built from.
    pub compression: crate::compress::Compression,
    /// The response cache: here, not in the route table, so that it survives reloads.
    pub cache: Arc<Cache>,
    /// The shared Redis tier, when configured.
    pub redis: Option<Arc<RedisTier>>,
    /// Snapshots for the status page and `/health/summary`.
    pub insight: crate::insight::Insight,
}

impl Proxy {
    /// Builds the state from a validated configuration and rules.
    pub fn new(config: &Config, rules: RuleSet) -> Self {
        let metrics = Arc::new(Metrics::new(&config.latency_buckets));
        let upstreams: Vec<Arc<Upstream>> =
            config.upstreams.iter().map(|u| Arc::new(Upstream::new(u.clone(), &metrics))).collect();
        let compression = crate::compress::Compression::new(config.compress.clone(), &metrics);
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
        let limits = Arc::new(RateLimiting::new(
            config.limits.rate_limiting,
            config.forwarded.trusted_proxies.clone(),
            redis.clone(),
            &metrics,
        ));
        let pipeline = Pipeline {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            limits: limits.clone(),
            cache: cache.clone(),
            forwarded: config.forwarded.clone(),
            access_log: config.log.access,
            body_read_timeout: config.limits.body_read_timeout,
            max_body_size: config.limits.max_body_size,
            unrouted: metrics.unrouted.clone(),
        };
        let proxy = Self {
            pipeline,
            compression,
            upstreams,
            limits,
            metrics,
            rules_globs: config.rules_files.clone(),
            rules_files: Mutex::new(Vec::new()),
            admin_token: config.admin.token.clone(),
            cache,
            redis,
            insight: crate::insight::Insight::new(config.admin.snapshot_interval),
        };
        proxy.install(rules);
        proxy
    }

    /// The names of the configured upstreams.
    pub fn upstream_names(&self) -> HashSet<UpstreamName> {
        self.upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// Reads the rules files again and, if they are valid, swaps them in. Requests in flight
    /// finish on the table they started with; an invalid set leaves the running rules alone,
    /// and so does finding no rules file at all where there were some (files that vanish
    /// together are a half-done deploy far more often than a wish to route nothing, which an
    /// empty rules file expresses).
    pub fn reload(&self) -> Result<usize, Problems> {
        let result = config::rules::load(&self.rules_globs, &self.upstream_names())
            .and_then(|rules| self.refuse_vanished(rules));
        let rules = result.inspect_err(|_| self.metrics.reload(false))?;
        let count = rules.routes.len();
        self.install(rules);
        // Counted once installed: a request that follows the count meets the new rules.
        self.metrics.reload(true);
        Ok(count)
    }

    fn refuse_vanished(&self, rules: RuleSet) -> Result<RuleSet, Problems> {
        if !rules.files.is_empty() || self.rules_files().is_empty() {
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
        self.rules_files.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Glob patterns of the rules files.
    pub fn rules_globs(&self) -> &[String] {
        &self.rules_globs
    }

    fn install(&self, rules: RuleSet) {
        let RuleSet { routes, files } = rules;
        let mut limits = self.limits.reload();
        let table: Vec<Arc<Route>> = routes
            .into_iter()
            .filter_map(|rule| {
                let upstream = self.upstreams.iter().find(|u| u.name == rule.upstream)?.clone();
                let metrics = RouteMetrics::new(&self.metrics, &rule.name);
                let limits = limits.route(&rule.name, &rule.rate_limit);
                let compress = self.compression.for_route(&rule.name, rule.compress.as_ref()).map(Arc::new);
                let cache = Arc::new(RouteCaching {
                    settings: rule.cache.clone(),
                    metrics: self.cache.metrics.route(&rule.name),
                    compress: compress.clone(),
                });
                Some(Arc::new(Route { rule, upstream, metrics, cache, limits, compress }))
            })
            .collect();
        limits.finish();
        self.pipeline.routes.store(Arc::new(RouteTable::new(table)));
        *self.rules_files.lock().unwrap_or_else(|e| e.into_inner()) = files;
    }
}
