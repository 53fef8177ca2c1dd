//! Rate limit: the stage right after route. A request first takes a place under the global
//! per-client concurrency cap ([`concurrency`]), then must pass every rate limit of its route,
//! in the order written: each limit counts the request under its key ([`key`]) in a keyed GCRA
//! limiter ([`limiter`], bounded by [`store`]), and refuses it (`429` by default, with
//! `Retry-After` and the [`headers`] of the IETF draft) or admits it, possibly after a bounded
//! wait ([`delay`]). A route without `rate_limit` is not rate limited; the admin listener never
//! is (it does not go through the pipeline).
//!
//! A request refused by a later limit has already been counted by the earlier ones: order
//! limits from the most specific (per client) to the broadest (per route), so that one
//! client's excess mostly costs that client.
//!
//! Limiters live in [`RateLimiting`], keyed by route name and limit definition: a reload that
//! leaves a route's limit unchanged keeps its limiter and counts; a changed limit starts
//! afresh at once. A periodic [`cleanup`] drops idle keys. Who a client is and its
//! concurrency cap ([`Clients`]) belong to the running configuration snapshot instead, so a
//! reload of `accel.toml` changes them together with the rules.
//!
//! Files: [`rule`] (operator format → model), [`key`], [`limiter`], [`store`], [`delay`],
//! [`headers`], [`concurrency`], [`metrics`].

mod cluster;
pub mod concurrency;
pub mod delay;
pub mod headers;
pub mod key;
pub mod limiter;
pub mod metrics;
pub mod rule;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use ipnet::IpNet;

use self::concurrency::{ClientConcurrency, ConcurrencyPermit, PermitBody};
use self::key::KeyInput;
use self::limiter::{Decision, Limiter, TokioClock};
use self::metrics::{LimitHandles, LimitLabels, LimitMetrics};
use self::rule::LimitRule;
use crate::body::Body;
use crate::downstream::{ClientAddr, Downstream};
use crate::metrics::Metrics;
use crate::name::RouteName;
use crate::params::PathParams;
use crate::tier::RedisTier;

/// Settings of `[limits]` in `accel.toml` that concern rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests in flight at once per client address; `None`: no cap.
    pub client_concurrency: Option<NonZeroU32>,
    /// Keys with their own bucket, per limiter (see [`store`]).
    pub max_keys: NonZeroUsize,
    /// How often idle keys are dropped.
    pub cleanup_interval: Duration,
}

/// `[limits] client_concurrency = true` means this many requests per client.
pub const DEFAULT_CLIENT_CONCURRENCY: u32 = 10;
/// Default of `[limits] rate_limit_keys`.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Default of `[limits] rate_limit_cleanup`.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            client_concurrency: None,
            max_keys: NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
        }
    }
}

/// The proxy's rate-limiting state: every limiter and the metrics.
#[derive(Debug)]
pub struct RateLimiting {
    settings: LimitSettings,
    metrics: LimitMetrics,
    clock: TokioClock,
    limiters: Mutex<HashMap<(RouteName, LimitRule), Arc<Limiter>>>,
    /// Where `scope = "cluster"` limits count, when `[redis]` is configured.
    tier: Option<Arc<RedisTier>>,
}

/// Who a client is and how many of its requests may be in flight: the part of this stage
/// that `accel.toml` sets and a reload changes, held in the running configuration snapshot.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    /// `limits.client_concurrency`; `None`: no cap.
    concurrency: Option<Arc<ClientConcurrency>>,
    /// Peers whose forwarding headers name the client (`forwarded.trusted_proxies`).
    trusted_proxies: Vec<IpNet>,
}

impl Clients {
    /// A cap of `cap` requests per client (`None`: no cap), clients known by their address or
    /// by the forwarding headers of `trusted_proxies`. When `running` has the same cap its
    /// counts are kept; a changed cap counts afresh (requests already in flight finish under
    /// the old one).
    pub fn new(cap: Option<NonZeroU32>, trusted_proxies: Vec<IpNet>, running: Option<&Self>) -> Self {
        let kept = running.and_then(|r| r.concurrency.clone()).filter(|c| Some(c.max()) == cap);
        let concurrency = kept.or_else(|| cap.map(|max| Arc::new(ClientConcurrency::new(max))));
        Self { concurrency, trusted_proxies }
    }

    /// The per-client concurrency cap, when enabled.
    pub fn concurrency(&self) -> Option<&Arc<ClientConcurrency>> {
        self.concurrency.as_ref()
    }

    /// Peers whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }
}

/// One route's limits, resolved when the rules load.
#[derive(Debug, Default)]
pub struct RouteLimits {
    limits: Vec<RouteLimit>,
    needs_client: bool,
    /// `RateLimit-Policy` of the limits with `headers = true`.
    policy: Option<HeaderValue>,
}

#[derive(Debug)]
struct RouteLimit {
    /// The route's name: part of a cluster limit's key.
    route: RouteName,
    rule: LimitRule,
    limiter: Arc<Limiter>,
    metrics: LimitHandles,
    /// This limit's `RateLimit-Policy` item, sent with its refusals.
    policy: Option<HeaderValue>,
}

/// What an admitted request carries to its response: the concurrency permit and the
/// `RateLimit` headers.
#[derive(Debug, Default)]
#[must_use = "the admission holds the client's concurrency permit until the response"]
pub struct Admission {
    permit: Option<ConcurrencyPermit>,
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
}

impl RateLimiting {
    /// The state for `settings` (its `client_concurrency` goes to [`Clients`]), registering
    /// its metrics with `metrics`; cluster limits count in `tier` (local limiters stand in
    /// without one).
    pub fn new(settings: LimitSettings, tier: Option<Arc<RedisTier>>, metrics: &Metrics) -> Self {
        Self {
            tier,
            settings,
            metrics: LimitMetrics::register(metrics),
            clock: TokioClock::default(),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// Starts resolving the limits of a new rules snapshot.
    pub fn reload(&self) -> Reload<'_> {
        Reload {
            limiting: self,
            current: self.limiters.lock().unwrap_or_else(|e| e.into_inner()),
            next: HashMap::new(),
        }
    }

    /// Every limiter in use.
    fn limiters(&self) -> Vec<Arc<Limiter>> {
        self.limiters.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Drops idle keys from every limiter.
    pub fn cleanup_once(&self) {
        for limiter in self.limiters() {
            limiter.cleanup();
        }
    }
}

/// Resolves routes' limits for a new rules snapshot, keeping the limiters of unchanged limits.
#[derive(Debug)]
pub struct Reload<'a> {
    limiting: &'a RateLimiting,
    current: MutexGuard<'a, HashMap<(RouteName, LimitRule), Arc<Limiter>>>,
    next: HashMap<(RouteName, LimitRule), Arc<Limiter>>,
}

impl Reload<'_> {
    /// The limits of route `name` (its `rate_limit` rules): the running limiter for each
    /// limit whose definition is unchanged, a new one for each new or changed limit.
    pub fn route(&mut self, name: &RouteName, rules: &[LimitRule]) -> RouteLimits {
        let limiting = self.limiting;
        let mut policy = String::new();
        let limits: Vec<RouteLimit> = rules
            .iter()
            .map(|rule| {
                let id = (name.clone(), rule.clone());
                let limiter = match self.current.get(&id) {
                    Some(running) => running.clone(),
                    None => Arc::new(Limiter::new(
                        rule.rate,
                        rule.burst,
                        rule.delay,
                        limiting.settings.max_keys.get(),
                        limiting.clock.clone(),
                        limiting.metrics.keys.get_or_create(&LimitLabels::new(name, &rule.name)).clone(),
                    )),
                };
                self.next.insert(id, limiter.clone());
                let mut own = String::new();
                headers::push_policy(&mut own, rule);
                if rule.headers {
                    headers::push_policy(&mut policy, rule);
                }
                RouteLimit {
                    route: name.clone(),
                    rule: rule.clone(),
                    limiter,
                    metrics: limiting.metrics.limit(name, &rule.name),
                    policy: headers::value(own),
                }
            })
            .collect();
        RouteLimits {
            needs_client: limits.iter().any(|l| l.rule.key.needs_client()),
            limits,
            policy: if policy.is_empty() { None } else { headers::value(policy) },
        }
    }

    /// Retires the limiters of removed or changed limits (their key gauges go too).
    pub fn finish(mut self) {
        let kept: HashSet<LimitLabels> =
            self.next.keys().map(|(route, rule)| LimitLabels::new(route, &rule.name)).collect();
        for (route, rule) in self.current.keys() {
            let labels = LimitLabels::new(route, &rule.name);
            if !kept.contains(&labels) {
                self.limiting.metrics.keys.remove(&labels);
            }
        }
        *self.current = std::mem::take(&mut self.next);
    }
}

impl RouteLimits {
    /// True when the route has no rate limit.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// True when the route's answers carry the `RateLimit` headers (a limit has
    /// `headers = true`).
    pub fn sends_headers(&self) -> bool {
        self.policy.is_some()
    }
}

/// Why the stage refused a request. The pipeline's rescue point turns it into the answer
/// (see `crate::error::ProxyError`), with the headers carried here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// One of the route's limits: its status (`429` unless the rule says otherwise), when to
    /// try again, and that limit's `RateLimit-Policy` / `RateLimit` values.
    Limited {
        status: StatusCode,
        retry_after: Duration,
        policy: Option<HeaderValue>,
        state: Option<HeaderValue>,
    },
    /// The client already has `client_concurrency` requests in flight.
    ClientConcurrency,
    /// A `fail = "closed"` cluster limit while Redis is unavailable.
    ClusterUnavailable,
}

impl RateLimiting {
    /// The stage: admits the request under the concurrency cap of `clients` and the route's
    /// `limits`, waiting first in delay mode; or says why not.
    pub async fn admit<B>(
        &self,
        clients: &Clients,
        limits: &RouteLimits,
        downstream: &Downstream,
        request: &Request<B>,
        params: &PathParams,
    ) -> Result<Admission, Refusal> {
        if limits.limits.is_empty() && clients.concurrency.is_none() {
            return Ok(Admission::default());
        }
        let client = (limits.needs_client || clients.concurrency.is_some())
            .then(|| ClientAddr::resolve(downstream, request.headers(), &clients.trusted_proxies));
        let mut admission = Admission::default();
        if let (Some(cap), Some(client)) = (&clients.concurrency, client) {
            match cap.acquire(client.0) {
                Some(permit) => admission.permit = Some(permit),
                None => {
                    self.metrics.concurrency_rejected.inc();
                    return Err(Refusal::ClientConcurrency);
                }
            }
        }
        if limits.limits.is_empty() {
            return Ok(admission);
        }
        let input = KeyInput { client, headers: request.headers(), path: request.uri().path(), params };
        let mut wait = Duration::ZERO;
        let mut delayed: Vec<(&LimitHandles, Duration)> = Vec::new();
        let mut state = String::new();
        for limit in &limits.limits {
            let decision = match (limit.rule.scope, &self.tier) {
                (rule::Scope::Cluster, Some(tier)) => {
                    cluster::check(tier, &limit.route, &limit.rule, &limit.limiter, &input).await?
                }
                _ => limit.limiter.check(limit.rule.key.key(&input)),
            };
            match decision {
                Decision::Pass { remaining, wait: own, reset } => {
                    if !own.is_zero() {
                        wait = wait.max(own);
                        delayed.push((&limit.metrics, own));
                    }
                    if limit.rule.headers {
                        headers::push_state(&mut state, &limit.rule, remaining, reset);
                    }
                }
                Decision::Reject { retry_after, reset } => {
                    limit.metrics.limited.inc();
                    return Err(refusal(limit, retry_after, reset));
                }
            }
        }
        if !delayed.is_empty() {
            delay::wait_turn(wait, &delayed).await;
        }
        if !state.is_empty() {
            admission.policy = limits.policy.clone();
            admission.state = headers::value(state);
        }
        Ok(admission)
    }
}

impl Admission {
    /// Adds the `RateLimit` headers to the response and hands the concurrency permit to its
    /// body, which gives it back after the last byte.
    pub fn finish(self, response: &mut Response<Body>) {
        let Self { permit, policy, state } = self;
        if let (Some(policy), Some(state)) = (policy, state) {
            response.headers_mut().insert(&headers::RATELIMIT_POLICY, policy);
            response.headers_mut().insert(&headers::RATELIMIT, state);
        }
        if let Some(permit) = permit {
            let body = std::mem::replace(response.body_mut(), Body::empty());
            *response.body_mut() = Body::boxed(PermitBody::new(body, permit));
        }
    }
}

/// The refusal of `limit`: its status, when to retry, and its `RateLimit-Policy` / `RateLimit`.
fn refusal(limit: &RouteLimit, retry_after: Duration, reset: Duration) -> Refusal {
    let mut state = String::new();
    headers::push_state(&mut state, &limit.rule, 0, reset);
    Refusal::Limited {
        status: limit.rule.status,
        retry_after,
        policy: limit.policy.clone(),
        state: headers::value(state),
    }
}

/// Drops idle keys from every limiter every `cleanup_interval`, until `shutdown`.
pub async fn cleanup(limiting: Arc<RateLimiting>, shutdown: impl Future<Output = ()>) {
    let mut ticks = tokio::time::interval(limiting.settings.cleanup_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => limiting.cleanup_once(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Stage tests: the limits of a few routes, built from their `rate_limit` tables alone,
    //! on paused time.

    use http::StatusCode;

    use super::*;
    use crate::limit::rule::{LimitFile, OneOrMany};

    /// A route of the tests: the path it takes (exact; `{id}` as the last segment captures
    /// it; `*` at the end for a prefix; `*` alone for every path) and its limits.
    struct TestRoute {
        path: &'static str,
        limits: RouteLimits,
    }

    /// The stage's state and a few routes, matched in order.
    struct Limits {
        metrics: Metrics,
        limiting: RateLimiting,
        clients: Clients,
        routes: Vec<TestRoute>,
    }

    fn settings(client_concurrency: Option<u32>) -> LimitSettings {
        LimitSettings {
            client_concurrency: client_concurrency.and_then(NonZeroU32::new),
            ..LimitSettings::default()
        }
    }

    /// `rate_limit = <text>` of a route whose path is `path`.
    fn rules(path: &str, text: &str) -> Vec<LimitRule> {
        #[derive(serde::Deserialize)]
        struct Route {
            rate_limit: OneOrMany<LimitFile>,
        }
        let route: Route = toml::from_str(&format!("rate_limit = {text}")).unwrap();
        let params: &[&str] = if path.ends_with("{id}") { &["id"] } else { &[] };
        let mut problems = Vec::new();
        let rules = rule::convert(route.rate_limit, params, &mut |key, message| {
            problems.push(format!("{key}: {message}"));
        });
        assert!(problems.is_empty(), "{problems:?}");
        rules
    }

    impl Limits {
        /// `routes`: name, path and `rate_limit` (empty: none) of each route.
        fn new(settings: LimitSettings, routes: &[(&str, &'static str, &str)]) -> Self {
            let metrics = Metrics::new(&[1.0]);
            let limiting = RateLimiting::new(settings, None, &metrics);
            let clients =
                Clients::new(settings.client_concurrency, vec!["10.0.0.0/8".parse().unwrap()], None);
            let mut limits = Self { metrics, limiting, clients, routes: Vec::new() };
            limits.load(routes);
            limits
        }

        /// Loads `routes` as a reload would: unchanged limits keep their state.
        fn load(&mut self, routes: &[(&str, &'static str, &str)]) {
            let mut reload = self.limiting.reload();
            let mut loaded = Vec::new();
            for (name, path, text) in routes {
                let rules = if text.is_empty() { Vec::new() } else { rules(path, text) };
                let limits = reload.route(&RouteName::try_from(*name).unwrap(), &rules);
                loaded.push(TestRoute { path, limits });
            }
            reload.finish();
            self.routes = loaded;
        }

        /// Runs the stage for a GET of `path` from `peer` with `headers`.
        async fn ask(&self, peer: &str, path: &str, headers: &[(&str, &str)]) -> Result<Admission, Refusal> {
            let mut request = Request::get(path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(()).unwrap();
            let downstream = Downstream::new(peer.parse().unwrap(), false, self.clients.trusted_proxies());
            let mut params = PathParams::default();
            let route = self.routes.iter().find(|r| matches(r.path, path, &mut params)).expect("a route");
            self.limiting.admit(&self.clients, &route.limits, &downstream, &request, &params).await
        }

        async fn passed(&self, peer: &str, path: &str, headers: &[(&str, &str)], n: usize) -> usize {
            let mut passed = 0;
            for _ in 0..n {
                passed += usize::from(self.ask(peer, path, headers).await.is_ok());
            }
            passed
        }

        fn metric(&self, series: &str) -> Option<f64> {
            let text = self.metrics.encode();
            text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        }
    }

    fn matches(pattern: &str, path: &str, params: &mut PathParams) -> bool {
        if pattern == "*" {
            return true;
        }
        if let Some(prefix) = pattern.strip_suffix("{id}") {
            if path.starts_with(prefix) && path.len() > prefix.len() && !path[prefix.len()..].contains('/') {
                params.capture("id".into(), prefix.len()..path.len());
                return true;
            }
            return false;
        }
        match pattern.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == pattern,
        }
    }

    const LEADS: &[(&str, &str, &str)] = &[
        ("detect", "/api/golden-leads/detect", r#"{ rate = "20/s", burst = 5 }"#),
        (
            "lead",
            "/api/golden-leads/{id}",
            r#"[
                { name = "per-lead", rate = "2/s", burst = 2, key = "path:id", headers = true },
                { name = "all", rate = "100/s", key = "route", headers = true },
            ]"#,
        ),
        ("keyed", "/api/keyed*", r#"{ rate = "1/m", burst = 1, key = ["client_ip", "header:x-api-key"] }"#),
        ("health", "/health", ""),
    ];

    #[tokio::test(start_paused = true)]
    async fn a_rate_and_burst_pass_exact_counts() {
        let limits = Limits::new(settings(None), LEADS);
        let detect = "/api/golden-leads/detect";
        assert_eq!(limits.passed("192.0.2.1:1000", detect, &[], 50).await, 5, "the burst");
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(limits.passed("192.0.2.1:1000", detect, &[], 50).await, 1, "one per 50 ms");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limits.passed("192.0.2.1:1000", detect, &[], 50).await, 5, "refilled to the burst");
        assert_eq!(
            limits.metric(r#"accel_rate_limited_total{route="detect",limit="client_ip"}"#),
            Some(139.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_carry_retry_after_and_ratelimit_headers() {
        let limits = Limits::new(settings(None), LEADS);
        let detect = "/api/golden-leads/detect";
        assert_eq!(limits.passed("192.0.2.1:1000", detect, &[], 5).await, 5);
        let refused = limits.ask("192.0.2.1:1000", detect, &[]).await.unwrap_err();
        // The next place in 50 ms (20/s); the bucket of 5 is full again in 250 ms, rounded
        // up to 1 s in `RateLimit`.
        assert_eq!(
            refused,
            Refusal::Limited {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Duration::from_millis(50),
                policy: Some(HeaderValue::from_static(r#""client_ip";q=20;w=1"#)),
                state: Some(HeaderValue::from_static(r#""client_ip";r=0;t=1"#)),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn passing_responses_carry_ratelimit_headers_when_asked() {
        let limits = Limits::new(settings(None), LEADS);
        let admission = limits.ask("192.0.2.1:1000", "/api/golden-leads/7", &[]).await.unwrap();
        let mut response = Response::new(Body::empty());
        admission.finish(&mut response);
        assert_eq!(response.headers()["ratelimit-policy"], r#""per-lead";q=2;w=1, "all";q=100;w=1"#);
        assert_eq!(response.headers()["ratelimit"], r#""per-lead";r=1;t=1, "all";r=99;t=1"#);
        // A route without `headers = true` adds none.
        let admission = limits.ask("192.0.2.1:1000", "/api/golden-leads/detect", &[]).await.unwrap();
        let mut response = Response::new(Body::empty());
        admission.finish(&mut response);
        assert!(response.headers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_isolated_per_client_header_and_path_parameter() {
        let limits = Limits::new(settings(None), LEADS);
        let detect = "/api/golden-leads/detect";
        assert_eq!(limits.passed("192.0.2.1:1000", detect, &[], 10).await, 5);
        assert_eq!(limits.passed("192.0.2.2:1000", detect, &[], 10).await, 5, "another client");
        // Per lead id: every lead has its own 2.
        assert_eq!(limits.passed("192.0.2.1:1000", "/api/golden-leads/1", &[], 5).await, 2);
        assert_eq!(limits.passed("192.0.2.1:1000", "/api/golden-leads/2", &[], 5).await, 2);
        // Client and API key together.
        let keyed = "/api/keyed";
        assert_eq!(limits.passed("192.0.2.1:1000", keyed, &[("x-api-key", "a")], 3).await, 1);
        assert_eq!(limits.passed("192.0.2.1:1000", keyed, &[("x-api-key", "b")], 3).await, 1);
        assert_eq!(limits.passed("192.0.2.2:1000", keyed, &[("x-api-key", "a")], 3).await, 1);
        assert_eq!(limits.passed("192.0.2.1:1000", keyed, &[], 3).await, 1, "no key is a key too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_cannot_pick_its_bucket_with_forwarding_headers() {
        let limits = Limits::new(settings(None), LEADS);
        let detect = "/api/golden-leads/detect";
        // An untrusted peer: X-Forwarded-For is ignored, every spoofed value hits one bucket.
        let mut passed_spoofing = 0;
        for i in 0..20 {
            let spoof = format!("198.51.100.{i}");
            passed_spoofing += usize::from(
                limits.ask("192.0.2.9:1000", detect, &[("x-forwarded-for", &spoof)]).await.is_ok(),
            );
        }
        assert_eq!(passed_spoofing, 5);
        // A trusted proxy: the right-most untrusted hop is the client, whatever the client
        // prepended; two clients behind one proxy have their own buckets.
        let via_proxy = |client: &'static str| [("x-forwarded-for", client)];
        assert_eq!(limits.passed("10.0.0.1:1000", detect, &via_proxy("6.6.6.6, 203.0.113.1"), 10).await, 5);
        assert_eq!(limits.passed("10.0.0.1:1000", detect, &via_proxy("7.7.7.7, 203.0.113.1"), 10).await, 0);
        assert_eq!(limits.passed("10.0.0.1:1000", detect, &via_proxy("203.0.113.2, 10.0.0.7"), 10).await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn routes_without_rate_limit_are_exempt() {
        let limits = Limits::new(settings(None), LEADS);
        assert_eq!(limits.passed("192.0.2.1:1000", "/health", &[], 1000).await, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_mode_waits_in_turn_up_to_the_bound() {
        let queued = [("queued", "*", r#"{ rate = "10/s", burst = 1, delay = "300ms" }"#)];
        let limits = Arc::new(Limits::new(settings(None), &queued));
        let started = tokio::time::Instant::now();
        let asks = (0..6).map(|_| async {
            let ok = limits.ask("192.0.2.1:1000", "/x", &[]).await.is_ok();
            (ok, started.elapsed())
        });
        // Polled in order: each request takes its turn before the next one asks.
        let outcomes = futures_util::future::join_all(asks).await;
        let ms = Duration::from_millis;
        assert_eq!(
            outcomes,
            [
                (true, ms(0)),
                (true, ms(100)),
                (true, ms(200)),
                (true, ms(300)),
                (false, ms(0)),
                (false, ms(0))
            ]
        );
        assert_eq!(
            limits.metric(r#"accel_rate_limit_delayed_total{route="queued",limit="client_ip"}"#),
            Some(3.0)
        );
        let waited = limits.metric(r#"accel_rate_limit_delay_seconds_sum{route="queued",limit="client_ip"}"#);
        assert!(waited.is_some_and(|s| (s - 0.6).abs() < 1e-9), "{waited:?}");
        assert_eq!(limits.metric(r#"accel_rate_limited_total{route="queued",limit="client_ip"}"#), Some(2.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_refuses_a_clients_excess_with_its_own_answer() {
        let limits = Limits::new(settings(Some(2)), LEADS);
        let first = limits.ask("192.0.2.1:1000", "/health", &[]).await.unwrap();
        let second = limits.ask("192.0.2.1:1001", "/api/golden-leads/detect", &[]).await.unwrap();
        let refused = limits.ask("192.0.2.1:1002", "/health", &[]).await.unwrap_err();
        assert_eq!(refused, Refusal::ClientConcurrency);
        assert!(limits.ask("192.0.2.2:1000", "/health", &[]).await.is_ok(), "another client");
        // The permit rides in the response body until it ends.
        let mut response = Response::new(Body::full("x"));
        first.finish(&mut response);
        assert!(limits.ask("192.0.2.1:1003", "/health", &[]).await.is_err());
        drop(response);
        assert!(limits.ask("192.0.2.1:1004", "/health", &[]).await.is_ok());
        drop(second);
        assert_eq!(limits.metric("accel_client_concurrency_rejected_total"), Some(2.0));
        let cap = limits.clients.concurrency().unwrap();
        assert_eq!(cap.max().get(), 2);
        assert_eq!(cap.clients(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_bound_holds_and_new_keys_share_the_overflow_bucket() {
        let settings = LimitSettings {
            max_keys: NonZeroUsize::new(3).unwrap(),
            cleanup_interval: Duration::from_secs(1),
            ..LimitSettings::default()
        };
        let limits = Limits::new(settings, &[("r", "*", r#"{ rate = "1/s", burst = 1 }"#)]);
        let mut passed_clients = 0;
        for i in 0..100 {
            passed_clients += usize::from(limits.ask(&format!("192.0.2.{i}:1"), "/x", &[]).await.is_ok());
        }
        // Three tracked keys and one overflow bucket: four requests in all.
        assert_eq!(passed_clients, 4);
        assert_eq!(limits.metric(r#"accel_rate_limit_keys{route="r",limit="client_ip"}"#), Some(3.0));
        // Once the buckets have refilled and idled, cleanup makes room again.
        tokio::time::advance(Duration::from_secs(2)).await;
        limits.limiting.cleanup_once();
        assert_eq!(limits.metric(r#"accel_rate_limit_keys{route="r",limit="client_ip"}"#), Some(0.0));
        assert!(limits.ask("192.0.2.200:1", "/x", &[]).await.is_ok());
        assert_eq!(limits.metric(r#"accel_rate_limit_keys{route="r",limit="client_ip"}"#), Some(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_keep_their_state_across_a_reload_unless_changed() {
        let route = |limit: &'static str| [("r", "*", limit), ("other", "/other", "")];
        let mut limits = Limits::new(settings(None), &route(r#"{ rate = "1/m", burst = 2 }"#));
        assert_eq!(limits.passed("192.0.2.1:1", "/x", &[], 5).await, 2);
        // Same limit, reloaded: still exhausted.
        limits.load(&route(r#"{ rate = "1/m", burst = 2 }"#));
        assert_eq!(limits.passed("192.0.2.1:1", "/x", &[], 5).await, 0);
        // A changed limit takes effect at once, with fresh state.
        limits.load(&route(r#"{ rate = "1/m", burst = 3 }"#));
        assert_eq!(limits.passed("192.0.2.1:1", "/x", &[], 5).await, 3);
        // Removing the limit makes the route exempt.
        limits.load(&route(""));
        assert_eq!(limits.passed("192.0.2.1:1", "/x", &[], 5).await, 5);
        assert_eq!(limits.metric(r#"accel_rate_limit_keys{route="r",limit="client_ip"}"#), None);
    }
}
