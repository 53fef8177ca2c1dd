//! Cache: a TTL response cache with tag invalidation, stale serving, conditional requests and
//! request coalescing, shared by every route (it survives rules reloads: it lives in
//! [`crate::proxy::Proxy`], not in the route table).
//!
//! The request path meets it three times (see [`crate::pipeline`]):
//!
//! 1. [`Cache::lookup`]: a fresh entry answers at once (a HEAD from the GET entry, a `304` to
//!    a matching conditional request); an entry within `stale_while_revalidate` answers
//!    while one background request refreshes it; otherwise a [`Pass`] says what the forward
//!    is for (a miss to fill, a stale entry to revalidate, a write that invalidates, or a
//!    request the cache stays out of).
//! 2. [`Pass::coalesce`]: identical concurrent misses elect one leader; followers take its
//!    answer (or go upstream on their own when it fails, cannot be shared, or is too slow).
//! 3. [`Pass::complete`]: the upstream answer is stored while it streams to the client
//!    (`fill`), a `304` refreshes the stale entry, an origin failure within
//!    `stale_if_error` is answered from the stale entry, and a successful unsafe request
//!    invalidates its URL, its `Location`/`Content-Location`, the route's `invalidate` tags
//!    and the tags in the origin's invalidation header.
//!
//! One concept per file: [`key`] (the 128-bit key), [`policy`] (RFC 9111 storability and
//! freshness), [`entry`] (a stored answer), [`store`] (moka, weighed in bytes, with O(1) tag
//! purges), [`tag`] (tags and templates), [`conditional`] (304s both ways), `fill` (the
//! collecting body), [`status`] (`Cache-Status`), [`rule`] and [`config`] (operator fields →
//! runtime), [`metrics`], [`purge`] (the admin API and CLI) and [`clock`].

pub mod clock;
pub mod conditional;
pub mod config;
pub mod entry;
mod fill;
pub mod key;
pub mod metrics;
pub mod policy;
pub mod purge;
pub mod rule;
mod shared;
pub mod status;
pub mod store;
pub mod tag;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;

pub use clock::Clock;
pub use config::CacheConfig;
pub use entry::CacheEntry;
pub use key::CacheKey;
pub use metrics::{CacheMetrics, RouteCacheMetrics};
pub use rule::{CacheRule, RouteCache};
pub use status::CacheStatus;
pub use store::CacheStore;
pub use tag::Tag;

use self::entry::Staleness;
use self::fill::{FillBody, Filling};
use self::key::KeySpec;
use self::metrics::{FollowerResult, PurgeKind, RefreshResult};
use self::policy::{ClientDirective, Freshness, RejectReason};
use self::status::{BypassReason, CACHE_STATUS, X_CACHE_STATUS};
use self::store::Seq;
use self::tag::{TagSource, header_tags};
use crate::body::Body;
use crate::coalesce::{Coalescer, Role, Waited};
use crate::config::ForwardedConfig;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::forward::{self, RequestBody};
use crate::metrics::{CacheResult, Metrics};
use crate::route::{PathParams, Route};

/// What a leader hands its followers: the entry and the key of its variant.
#[derive(Debug)]
pub struct Shared {
    pub entry: Arc<CacheEntry>,
    /// The leader's variant key ([`CacheKey::variant`] when the answer varies): a follower
    /// whose own variant differs goes upstream itself.
    pub variant: CacheKey,
}

type FlightLeader = crate::coalesce::Leader<CacheKey, Arc<Shared>>;

/// The response cache and the requests in flight for it.
#[derive(Debug)]
pub struct Cache {
    pub store: CacheStore,
    pub config: CacheConfig,
    pub metrics: CacheMetrics,
    pub clock: Clock,
    flights: Coalescer<CacheKey, Arc<Shared>>,
    forwarded: ForwardedConfig,
    /// The shared Redis tier, when `[redis]` is configured (see `shared`).
    shared: std::sync::OnceLock<Arc<crate::tier::RedisTier>>,
}

/// The key of identical GETs collapsed on routes that do not cache: credentials and cookies
/// are in it, so that different users never share an answer.
fn collapse_key() -> KeySpec {
    KeySpec { headers: vec![header::AUTHORIZATION, header::COOKIE], ..KeySpec::default() }
}

/// The result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// The cache answered.
    Answer(Answer),
    /// The request goes upstream; the pass decides what happens to the answer.
    Forward(Pass),
}

/// The result of [`Pass::coalesce`].
#[derive(Debug)]
pub enum Coalesced {
    /// The leader's answer.
    Answer(Answer),
    /// This request goes upstream (as the leader, or on its own).
    Forward(Pass),
}

/// The identity body of an answer from the cache and its compressed variants, carried in the
/// response's extensions to the compress stage, which then compresses once per entry and coding.
#[derive(Debug, Clone)]
pub struct CachedBody {
    pub body: bytes::Bytes,
    pub variants: crate::compress::Variants,
}

/// A response and the cache's part in it.
#[derive(Debug)]
pub struct Answer {
    pub response: Response<Body>,
    /// The `cache` label of request metrics.
    pub result: CacheResult,
}

/// What the cache does with one forwarded request.
#[derive(Debug)]
pub struct Pass {
    cache: Arc<Cache>,
    route: Arc<Route>,
    /// Count this request in the route's lookups (background refreshes are not requests).
    count: bool,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// The cache stays out: the route does not cache, or the request cannot use it. A write
    /// may still invalidate.
    Through { status: Option<CacheStatus>, invalidation: Option<Invalidation> },
    /// A miss or a stale entry: the answer may be stored and shared.
    Fill(Box<Fill>),
}

#[derive(Debug)]
struct Invalidation {
    /// The request's host, for `Location` on the same host.
    host: Box<str>,
    /// The request URL's tag and the route's rendered `invalidate` tags.
    tags: Vec<Tag>,
}

#[derive(Debug)]
struct Fill {
    key: CacheKey,
    /// `None`: a route that only collapses identical GETs.
    rule: Option<Arc<CacheRule>>,
    request: HeaderMap,
    credentials: bool,
    head: bool,
    /// The stale entry being revalidated, if any.
    stale: Option<Arc<CacheEntry>>,
    /// Rule tags and the URL's tag.
    tags: Vec<Tag>,
    host: Box<str>,
    path: Box<str>,
    seq: Seq,
    leader: Option<FlightLeader>,
    /// Store the answer.
    store: bool,
    /// Validators were sent upstream.
    revalidating: bool,
    /// Report this instead of a miss.
    bypass: Option<BypassReason>,
}

impl Cache {
    /// An empty cache with `config`'s memory bound and clock; metrics registered with
    /// `metrics`.
    pub fn new(config: CacheConfig, forwarded: ForwardedConfig, metrics: &Metrics) -> Self {
        let metrics = CacheMetrics::new(metrics);
        let clock = config.clock.clone();
        Self {
            store: CacheStore::new(config.memory, metrics.clone()),
            config,
            metrics,
            clock,
            flights: Coalescer::default(),
            forwarded,
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Requests waiting for a leader now.
    pub fn waiting_followers(&self) -> usize {
        self.flights.followers()
    }

    /// The cache's first look at a request on `route` (matched with `params`, for `host`).
    pub fn lookup<B>(
        self: &Arc<Self>,
        route: &Arc<Route>,
        params: &PathParams,
        host: Option<&str>,
        request: &Request<B>,
        downstream: &Downstream,
    ) -> Lookup {
        let settings = &route.rule.cache;
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        let host = host.unwrap_or("");
        if method != Method::GET && method != Method::HEAD {
            let invalidation = (!method.is_safe()).then(|| {
                let source = TagSource { path: uri.path(), params, query: uri.query(), headers };
                let mut tags = vec![Tag::url(host, uri.path(), uri.query())];
                tags.extend(settings.invalidate.iter().filter_map(|t| t.render(&source)));
                Invalidation { host: host.into(), tags }
            });
            let status = settings.rule.is_some().then_some(CacheStatus::Bypass(BypassReason::Method));
            return self.through(route, status, invalidation);
        }
        let head = method == Method::HEAD;
        let Some(rule) = &settings.rule else {
            if settings.coalesce.enabled && !head {
                let key = collapse_key().key(Some(host), uri.path(), uri.query(), headers);
                let fill = self.fill(key, None, host, uri, headers, params, false, None);
                return Lookup::Forward(self.pass(route, fill));
            }
            return self.through(route, None, None);
        };
        let directive = policy::client_directive(headers, rule.client_no_cache);
        if directive == ClientDirective::NoStore {
            return self.through(route, Some(CacheStatus::Bypass(BypassReason::Request)), None);
        }
        let key = rule.key.key(Some(host), uri.path(), uri.query(), headers);
        let credentials = headers.contains_key(header::AUTHORIZATION);
        let mut stale = None;
        let mut bypass = None;
        if let Some(entry) = self.store.get(key, headers) {
            if !usable(&entry, credentials, rule) {
                bypass = Some(BypassReason::Credentials);
            } else if directive == ClientDirective::Revalidate {
                stale = Some(entry);
            } else {
                let now = self.clock.now();
                match entry.staleness(now) {
                    Staleness::Fresh { remaining } => {
                        let status = CacheStatus::Hit { ttl: remaining.as_secs() as i64 };
                        route.cache_metrics.lookup(CacheResult::Hit);
                        return Lookup::Answer(self.answer(&entry, head, headers, now, status));
                    }
                    Staleness::Stale { by } if by < entry.freshness.stale_while_revalidate => {
                        self.refresh_in_background(
                            route, key, rule, &entry, params, host, request, downstream,
                        );
                        let status = CacheStatus::StaleWhileRevalidate { ttl: stale_ttl(by) };
                        route.cache_metrics.lookup(CacheResult::Stale);
                        return Lookup::Answer(self.answer(&entry, head, headers, now, status));
                    }
                    Staleness::Stale { .. } => stale = Some(entry),
                }
            }
        }
        let mut fill = self.fill(key, Some(rule.clone()), host, uri, headers, params, !head, stale);
        fill.credentials = credentials;
        fill.head = head;
        fill.bypass = bypass;
        Lookup::Forward(self.pass(route, fill))
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        key: CacheKey,
        rule: Option<Arc<CacheRule>>,
        host: &str,
        uri: &Uri,
        headers: &HeaderMap,
        params: &PathParams,
        store: bool,
        stale: Option<Arc<CacheEntry>>,
    ) -> Fill {
        let mut tags = Vec::new();
        if let Some(rule) = &rule {
            let source = TagSource { path: uri.path(), params, query: uri.query(), headers };
            tags.extend(rule.tags.iter().filter_map(|t| t.render(&source)));
            tags.push(Tag::url(host, uri.path(), uri.query()));
        }
        Fill {
            key,
            rule,
            request: headers.clone(),
            credentials: false,
            head: false,
            stale,
            tags,
            host: host.to_ascii_lowercase().into(),
            path: uri.path().into(),
            seq: self.store.reserve(),
            leader: None,
            store,
            revalidating: false,
            bypass: None,
        }
    }

    fn pass(self: &Arc<Self>, route: &Arc<Route>, fill: Fill) -> Pass {
        Pass { cache: self.clone(), route: route.clone(), count: true, mode: Mode::Fill(Box::new(fill)) }
    }

    fn through(
        self: &Arc<Self>,
        route: &Arc<Route>,
        status: Option<CacheStatus>,
        invalidation: Option<Invalidation>,
    ) -> Lookup {
        Lookup::Forward(Pass {
            cache: self.clone(),
            route: route.clone(),
            count: true,
            mode: Mode::Through { status, invalidation },
        })
    }

    /// An answer from `entry`: a 304 when the client's conditions match, else the entry (no
    /// body for HEAD), with `Age` and `Cache-Status`. The caller counts the lookup.
    pub fn answer(
        &self,
        entry: &CacheEntry,
        head: bool,
        request: &HeaderMap,
        now: clock::Millis,
        status: CacheStatus,
    ) -> Answer {
        let age = entry.age(now).as_secs();
        let response = if conditional::matches(request, entry) {
            let mut response = conditional::not_modified(entry);
            self.mark_hit(response.headers_mut(), age, status);
            response
        } else {
            let mut response =
                Response::new(if head { Body::empty() } else { Body::full(entry.body.clone()) });
            *response.status_mut() = entry.status;
            let build = || {
                let mut headers = entry.headers.clone();
                self.mark_hit(&mut headers, age, status);
                headers
            };
            *response.headers_mut() = match status {
                // The common case: built once per second of the entry's life.
                CacheStatus::Hit { ttl } => entry.hit.get(age, ttl.unsigned_abs(), build),
                _ => build(),
            };
            if !head && request.contains_key(header::ACCEPT_ENCODING) {
                // The compress stage serves a stored variant instead of compressing again.
                let cached = CachedBody { body: entry.body.clone(), variants: entry.variants.clone() };
                response.extensions_mut().insert(cached);
            }
            response
        };
        Answer { response, result: status.result() }
    }

    /// `Age` and the cache's status headers of an answer from an entry `age` seconds old.
    fn mark_hit(&self, headers: &mut HeaderMap, age: u64, status: CacheStatus) {
        // Room for the headers added here, so the map grows (and rehashes) at most once.
        headers.reserve(3);
        headers.insert(header::AGE, conditional::age_value(age));
        self.mark(headers, status);
    }

    fn mark(&self, headers: &mut HeaderMap, status: CacheStatus) {
        headers.insert(CACHE_STATUS.clone(), status.header_value());
        if self.config.x_cache_status {
            headers.insert(X_CACHE_STATUS.clone(), HeaderValue::from_static(status.x_cache_status()));
        }
    }

    fn strip_tag_headers(&self, headers: &mut HeaderMap) {
        if self.config.strip_tag_headers {
            for name in self.config.tag_headers.iter().chain(&self.config.invalidation_headers) {
                headers.remove(name);
            }
        }
    }

    /// Refreshes a stale entry with one background request, unless one is in flight.
    #[allow(clippy::too_many_arguments)]
    fn refresh_in_background<B>(
        self: &Arc<Self>,
        route: &Arc<Route>,
        key: CacheKey,
        rule: &Arc<CacheRule>,
        entry: &Arc<CacheEntry>,
        params: &PathParams,
        host: &str,
        request: &Request<B>,
        downstream: &Downstream,
    ) {
        let Some(leader) = self.flights.lead(key) else { return };
        let uri = request.uri().clone();
        let mut fill = self.fill(
            key,
            Some(rule.clone()),
            host,
            &uri,
            request.headers(),
            params,
            true,
            Some(entry.clone()),
        );
        fill.credentials = request.headers().contains_key(header::AUTHORIZATION);
        fill.leader = Some(leader);
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.version = request.version();
        parts.headers = request.headers().clone();
        forward::headers::to_upstream(
            &mut parts.headers,
            parts.version,
            uri.authority(),
            downstream,
            &self.forwarded,
        );
        parts.uri = uri;
        let mut pass = self.pass(route, fill);
        pass.count = false;
        let cache = self.clone();
        let route = route.clone();
        tokio::spawn(async move {
            pass.prepare(&mut parts.headers);
            let result = forward::send(&route, parts, RequestBody::Empty, false).await;
            let answer = pass.complete(result.map(|mut response| {
                forward::headers::to_downstream(response.headers_mut(), &cache.forwarded);
                response
            }));
            let outcome = match answer.result {
                CacheResult::Revalidated => RefreshResult::Revalidated,
                CacheResult::Expired if answer.response.status().is_success() => RefreshResult::Stored,
                _ => RefreshResult::Failed,
            };
            // Reading the body to its end stores the entry.
            let complete = answer.response.into_body().collect().await.is_ok();
            cache.metrics.refresh(if complete { outcome } else { RefreshResult::Failed });
        });
    }

    /// Invalidates what a successful unsafe request changed.
    fn invalidate(&self, invalidation: Invalidation, response: &HeaderMap) {
        let Invalidation { host, mut tags } = invalidation;
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) =
                response.get(&name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Uri>().ok())
            else {
                continue;
            };
            let same_host = uri.host().is_none_or(|h| h.eq_ignore_ascii_case(&host));
            if same_host && uri.path().starts_with('/') {
                tags.push(Tag::url(&host, uri.path(), uri.query()));
            }
        }
        tags.extend(header_tags(response, &self.config.invalidation_headers));
        let purged = self.store.purge_tags(&tags);
        self.metrics.purged(PurgeKind::Invalidation, purged);
        self.publish(crate::tier::Purge::Tags(tags.iter().map(|t| t.name().to_owned()).collect()));
    }

    fn now_system(&self, now: clock::Millis) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(now)
    }
}

/// The `ttl` of a stale entry in `Cache-Status`: negative whole seconds, at least one.
fn stale_ttl(by: Duration) -> i64 {
    -(by.as_secs_f64().ceil() as i64).max(1)
}

/// True when `entry` may answer a request with (or without) credentials.
fn usable(entry: &CacheEntry, credentials: bool, rule: &CacheRule) -> bool {
    !credentials || entry.freshness.shared_with_credentials || rule.key.includes_credentials()
}

/// Within the entry's `stale_if_error` window at `now`.
fn usable_on_error(stale: Option<&Arc<CacheEntry>>, now: clock::Millis) -> Option<(&Arc<CacheEntry>, i64)> {
    let entry = stale?;
    match entry.staleness(now) {
        Staleness::Fresh { .. } => Some((entry, 0)),
        Staleness::Stale { by } if by < entry.freshness.stale_if_error => Some((entry, stale_ttl(by))),
        Staleness::Stale { .. } => None,
    }
}

/// True when a leader's answer fits a follower: same variant, and credentials allow it.
fn may_share(fill: &Fill, shared: &Shared) -> bool {
    if fill::key_for(&shared.entry, fill.key, &fill.request) != shared.variant {
        return false;
    }
    match &fill.rule {
        Some(rule) => usable(&shared.entry, fill.credentials, rule),
        None => true,
    }
}

impl Pass {
    /// Waits for an identical request in flight, if the route coalesces: its answer, or this
    /// request goes upstream (as the leader, or on its own).
    pub async fn coalesce(mut self) -> Coalesced {
        let Mode::Fill(fill) = &mut self.mode else { return Coalesced::Forward(self) };
        let rule = self.route.rule.cache.coalesce;
        if !rule.enabled || fill.head || fill.bypass.is_some() {
            return self.second_level().await;
        }
        let follower = match self.cache.flights.join(fill.key) {
            Role::Leader(leader) => {
                fill.leader = Some(leader);
                // The cluster's answer, if another sidecar has it, before the origin.
                return self.second_level().await;
            }
            Role::Follower(follower) => follower,
        };
        match follower.wait(rule.follower_timeout).await {
            Waited::Shared(shared) if may_share(fill, &shared) => {
                self.cache.metrics.follower(FollowerResult::Served);
                let now = self.cache.clock.now();
                let answer =
                    self.cache.answer(&shared.entry, false, &fill.request, now, CacheStatus::Collapsed);
                self.route.cache_metrics.lookup(answer.result);
                Coalesced::Answer(answer)
            }
            Waited::Shared(_) | Waited::Released => {
                self.cache.metrics.follower(FollowerResult::Released);
                Coalesced::Forward(self)
            }
            Waited::TimedOut => {
                self.cache.metrics.follower(FollowerResult::Timeout);
                fill.store = false;
                fill.bypass = Some(BypassReason::FollowerTimeout);
                Coalesced::Forward(self)
            }
        }
    }

    /// Prepares the upstream request's headers: the stale entry's validators for a
    /// revalidation; no client conditions on a request whose answer will be stored (the cache
    /// needs the full answer).
    pub fn prepare(&mut self, headers: &mut HeaderMap) {
        let Mode::Fill(fill) = &mut self.mode else { return };
        match &fill.stale {
            Some(stale) if stale.has_validators() => {
                conditional::add_validators(headers, stale);
                fill.revalidating = true;
            }
            // A leader's answer is shared with followers that sent no conditions of their own.
            _ if fill.store || fill.rule.is_none() => {
                headers.remove(header::IF_NONE_MATCH);
                headers.remove(header::IF_MODIFIED_SINCE);
            }
            _ => {}
        }
    }

    /// Takes the upstream's answer (headers already prepared for the client): stores it,
    /// refreshes, falls back to a stale entry, or invalidates, and returns what the client
    /// gets.
    pub fn complete(self, result: Result<Response<Body>, ProxyError>) -> Answer {
        let Self { cache, route, count, mode } = self;
        let answer = match mode {
            Mode::Through { status, invalidation } => {
                let mut response = result.unwrap_or_else(ProxyError::into_response);
                let code = response.status();
                let write = invalidation.is_some();
                if let Some(invalidation) = invalidation
                    && (code.is_success() || code.is_redirection())
                {
                    cache.invalidate(invalidation, response.headers());
                }
                if status.is_some() || write {
                    cache.strip_tag_headers(response.headers_mut());
                }
                if let Some(status) = status {
                    cache.mark(response.headers_mut(), status);
                }
                Answer { response, result: status.map_or(CacheResult::None, CacheStatus::result) }
            }
            Mode::Fill(fill) => cache.complete_fill(*fill, result, &route),
        };
        if count {
            route.cache_metrics.lookup(answer.result);
        }
        answer
    }
}

impl Cache {
    /// The miss / stale path's end: the answer for the client, marked.
    fn complete_fill(
        self: &Arc<Self>,
        fill: Fill,
        result: Result<Response<Body>, ProxyError>,
        route: &Arc<Route>,
    ) -> Answer {
        let now = self.clock.now();
        let forwarded = |fill: &Fill, code: StatusCode, stored: bool| -> CacheStatus {
            let fwd_status = code.as_u16();
            match (fill.bypass, &fill.stale) {
                (Some(reason), _) => CacheStatus::Bypass(reason),
                (None, Some(_)) => CacheStatus::Expired { fwd_status, stored },
                (None, None) => CacheStatus::Miss { fwd_status, stored },
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if let Some((entry, ttl)) = usable_on_error(fill.stale.as_ref(), now) {
                    let status = CacheStatus::StaleIfError { ttl, fwd_status: None };
                    return self.answer(entry, fill.head, &fill.request, now, status);
                }
                let response = error.into_response();
                let status = forwarded(&fill, response.status(), false);
                return self.forwarded_answer(&fill, response, status);
            }
        };
        let code = response.status();
        if code.is_server_error()
            && let Some((entry, ttl)) = usable_on_error(fill.stale.as_ref(), now)
        {
            let status = CacheStatus::StaleIfError { ttl, fwd_status: Some(code.as_u16()) };
            return self.answer(entry, fill.head, &fill.request, now, status);
        }
        if code == StatusCode::NOT_MODIFIED
            && fill.revalidating
            && let (Some(stale), Some(rule)) = (fill.stale.clone(), fill.rule.clone())
        {
            route.cache_metrics.refreshed(true);
            return self.revalidated(fill, &stale, &rule, response.headers(), now);
        }
        if let Some(stale) = &fill.stale
            && code.is_success()
        {
            let same = stale.etag().is_some_and(|etag| response.headers().get(header::ETAG) == Some(etag));
            route.cache_metrics.refreshed(same);
        }
        let (mut parts, body) = response.into_parts();
        let decision = if fill.head || (!fill.store && fill.leader.is_none()) {
            None
        } else {
            Some(self.decide(&fill, code, &parts.headers, now))
        };
        let origin_tags: Vec<Tag> = match decision {
            Some(Ok(_)) => header_tags(&parts.headers, &self.config.tag_headers).collect(),
            _ => Vec::new(),
        };
        self.strip_tag_headers(&mut parts.headers);
        let status = match decision {
            Some(Ok(freshness)) => {
                let status = forwarded(&fill, code, fill.store);
                let Fill { key, request, mut tags, host, path, seq, store, leader, rule, .. } = fill;
                tags.extend(origin_tags);
                let mut headers = parts.headers.clone();
                let initial_age = headers
                    .remove(header::AGE)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(Duration::ZERO, Duration::from_secs);
                let template = CacheEntry {
                    status: code,
                    headers,
                    body: bytes::Bytes::new(),
                    stored_at: now,
                    initial_age,
                    freshness,
                    tags,
                    host,
                    path,
                    variants: Default::default(),
                    hit: Default::default(),
                };
                let limit = rule.as_ref().map_or(rule::DEFAULT_MAX_OBJECT_SIZE, |r| r.max_object_size);
                let filling = Filling {
                    cache: self.clone(),
                    route: route.clone(),
                    key,
                    request,
                    template,
                    seq,
                    store,
                    leader,
                    limit,
                };
                let collapse_only = rule.is_none();
                let mut response = Response::from_parts(parts, Body::boxed(FillBody::new(body, filling)));
                if collapse_only {
                    return Answer { response, result: CacheResult::None };
                }
                self.mark(response.headers_mut(), status);
                return Answer { response, result: status.result() };
            }
            Some(Err(reason)) => {
                if fill.store {
                    self.metrics.rejected(reason);
                }
                forwarded(&fill, code, false)
            }
            None => forwarded(&fill, code, false),
        };
        // `fill`'s leader drops with it: followers go upstream on their own.
        self.forwarded_answer(&fill, Response::from_parts(parts, body), status)
    }

    /// The upstream's answer marked with `status` (routes that only collapse GETs report
    /// nothing: they do not cache).
    fn forwarded_answer(&self, fill: &Fill, mut response: Response<Body>, status: CacheStatus) -> Answer {
        if fill.rule.is_none() {
            return Answer { response, result: CacheResult::None };
        }
        self.mark(response.headers_mut(), status);
        Answer { response, result: status.result() }
    }

    /// Whether (and how long) the answer may be kept or shared.
    fn decide(
        &self,
        fill: &Fill,
        code: StatusCode,
        headers: &HeaderMap,
        now: clock::Millis,
    ) -> Result<Freshness, RejectReason> {
        let Some(rule) = &fill.rule else {
            // Collapsing only: share any final answer that sets no cookie.
            if headers.contains_key(header::SET_COOKIE) {
                return Err(RejectReason::SetCookie);
            }
            return Ok(Freshness {
                ttl: Duration::ZERO,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                shared_with_credentials: false,
            });
        };
        let freshness = policy::storable(rule, fill.credentials, code, headers, self.now_system(now))?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > rule.max_object_size) {
            return Err(RejectReason::TooLarge);
        }
        Ok(freshness)
    }

    /// The origin confirmed a stale entry: store it anew with the 304's headers, and hand it
    /// to the followers.
    fn revalidated(
        self: &Arc<Self>,
        fill: Fill,
        stale: &Arc<CacheEntry>,
        rule: &CacheRule,
        not_modified: &HeaderMap,
        now: clock::Millis,
    ) -> Answer {
        let Fill { key, request, credentials, head, seq, leader, .. } = fill;
        let mut headers = conditional::refreshed_headers(&stale.headers, not_modified);
        self.strip_tag_headers(&mut headers);
        let initial_age = not_modified
            .get(header::AGE)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let entry = match policy::storable(rule, credentials, stale.status, &headers, self.now_system(now)) {
            Ok(freshness) => {
                let entry = Arc::new(CacheEntry {
                    headers,
                    stored_at: now,
                    initial_age,
                    freshness,
                    ..CacheEntry::clone(stale)
                });
                self.store.insert(key, &request, entry.clone(), seq);
                entry
            }
            Err(reason) => {
                self.metrics.rejected(reason);
                stale.clone()
            }
        };
        if let Some(leader) = leader {
            let variant = fill::key_for(&entry, key, &request);
            leader.publish(Arc::new(Shared { entry: entry.clone(), variant }));
        }
        let ttl = match entry.staleness(now) {
            Staleness::Fresh { remaining } => remaining.as_secs() as i64,
            Staleness::Stale { .. } => 0,
        };
        self.answer(&entry, head, &request, now, CacheStatus::Revalidated { ttl })
    }
}

#[cfg(test)]
mod tests {
    //! Stage tests: the cache between a request and a fabricated upstream answer, in paused
    //! time (the system clock follows Tokio's).

    use std::path::Path;

    use http_body_util::BodyExt;

    use super::*;
    use crate::config::UpstreamConfig;
    use crate::metrics::RouteMetrics;
    use crate::route::{Matcher, RetryPolicy, RouteName, RouteRule, Timeouts};
    use crate::upstream::{Upstream, UpstreamName};

    fn setup(cache_rule: CacheRule) -> (Arc<Cache>, Arc<Route>) {
        let metrics = Metrics::new(&[1.0]);
        let cache = Arc::new(Cache::new(CacheConfig::default(), ForwardedConfig::default(), &metrics));
        let name = RouteName::try_from("leads").unwrap();
        let upstream_name = UpstreamName::try_from("api").unwrap();
        let upstream = Upstream::new(
            UpstreamConfig {
                name: upstream_name.clone(),
                endpoints: vec!["127.0.0.1:9".parse().unwrap()],
                health: None,
                ejection: Default::default(),
                connect_timeout: Duration::from_secs(1),
                max_idle_per_endpoint: 1,
                idle_timeout: Duration::from_secs(1),
                dns_refresh: Duration::from_secs(30),
                max_connections_per_endpoint: None,
            },
            &metrics,
        );
        let rule = RouteRule {
            name: name.clone(),
            file: Arc::from(Path::new("rules/test.toml")),
            matcher: Matcher::default(),
            upstream: upstream_name,
            timeouts: Timeouts { response: Duration::from_secs(1), total: Duration::from_secs(1) },
            retry: RetryPolicy::default(),
            rate_limit: Vec::new(),
            compress: None,
            slo: Default::default(),
            warm: Vec::new(),
            cache: RouteCache {
                rule: Some(Arc::new(cache_rule)),
                invalidate: Vec::new(),
                coalesce: rule::CoalesceRule { enabled: true, follower_timeout: Duration::from_secs(5) },
            },
        };
        let route = Arc::new(Route {
            metrics: RouteMetrics::new(&metrics, &name),
            cache_metrics: cache.metrics.route(&name),
            limits: Default::default(),
            compress: None,
            rule,
            upstream: Arc::new(upstream),
        });
        (cache, route)
    }

    fn request(path: &str) -> Request<()> {
        Request::get(path).header("host", "api.test").body(()).unwrap()
    }

    fn downstream() -> Downstream {
        Downstream::new("127.0.0.1:5000".parse().unwrap(), false, &ForwardedConfig::default())
    }

    fn upstream_answer(
        body: &'static str,
        cache_control: &'static str,
    ) -> Result<Response<Body>, ProxyError> {
        let mut response = Response::new(Body::full(body));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
        Ok(response)
    }

    fn forward(lookup: Lookup) -> Pass {
        match lookup {
            Lookup::Forward(pass) => pass,
            Lookup::Answer(answer) => panic!("expected a forward, got {:?}", answer.result),
        }
    }

    fn answered(lookup: Lookup) -> Answer {
        match lookup {
            Lookup::Answer(answer) => answer,
            Lookup::Forward(_) => panic!("expected an answer from the cache"),
        }
    }

    async fn text(answer: Answer) -> String {
        let bytes = answer.response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_filled_miss_answers_until_it_is_stale_then_covers_an_upstream_error() {
        let (cache, route) =
            setup(CacheRule { stale_if_error: Duration::from_secs(60), ..CacheRule::default() });
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/1"), &downstream());

        let miss = forward(look());
        let filled = miss.complete(upstream_answer("lead 1", "max-age=10"));
        assert_eq!(filled.result, CacheResult::Miss);
        assert_eq!(text(filled).await, "lead 1", "reading the body to its end stores it");

        tokio::time::advance(Duration::from_secs(9)).await;
        let hit = answered(look());
        assert_eq!(hit.result, CacheResult::Hit);
        assert_eq!(hit.response.headers()["age"], "9");

        tokio::time::advance(Duration::from_secs(2)).await;
        let stale = forward(look());
        let rescued = stale.complete(Err(ProxyError::Timeout { after: Duration::from_secs(1) }));
        assert_eq!(rescued.result, CacheResult::Stale);
        assert_eq!(rescued.response.status(), StatusCode::OK);
        assert_eq!(text(rescued).await, "lead 1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_the_leaders_answer() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/2"), &downstream());

        let Coalesced::Forward(leader) = forward(look()).coalesce().await else {
            panic!("the first one leads")
        };
        let follower = tokio::spawn(forward(look()).coalesce());
        tokio::task::yield_now().await;
        assert_eq!(cache.waiting_followers(), 1);
        assert_eq!(text(leader.complete(upstream_answer("scored", "max-age=60"))).await, "scored");

        let Coalesced::Answer(answer) = follower.await.unwrap() else { panic!("the follower was answered") };
        assert_eq!(answer.response.headers()[CACHE_STATUS.clone()], "accel; fwd=miss; collapsed");
        assert_eq!(text(answer).await, "scored");
    }

    #[tokio::test(start_paused = true)]
    async fn hits_within_a_second_share_their_headers_and_the_next_second_updates_them() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/3"), &downstream());
        text(forward(look()).complete(upstream_answer("lead 3", "max-age=60"))).await;

        tokio::time::advance(Duration::from_millis(2_100)).await;
        for _ in 0..3 {
            let hit = answered(look());
            assert_eq!(hit.response.headers()["age"], "2");
            assert_eq!(hit.response.headers()[CACHE_STATUS.clone()], "accel; hit; ttl=57");
            assert_eq!(hit.response.headers()["cache-control"], "max-age=60");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let hit = answered(look());
        assert_eq!(hit.response.headers()["age"], "3");
        assert_eq!(hit.response.headers()[CACHE_STATUS.clone()], "accel; hit; ttl=56");
        assert_eq!(hit.response.headers().get_all("age").iter().count(), 1);
        assert_eq!(text(hit).await, "lead 3");
    }
}
