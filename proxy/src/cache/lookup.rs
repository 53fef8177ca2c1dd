//! The cache's first look at a request: a fresh or stale entry answers, or a [`Pass`] says
//! what the forward is for (a miss to fill, a stale entry to revalidate, a write that
//! invalidates, a request the cache stays out of); a stale entry within
//! `stale_while_revalidate` also gets the pass of its one background refresh. An entry past
//! its stale windows but within its keep window is revalidated before it answers; one past
//! that is a miss.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::{Method, Request, Uri};

use super::*;

impl RouteCaching {
    /// True when the body of `request`, of `declared` length, is to be read whole before the
    /// lookup, so that the key can hash it: a POST on a route that caches queries
    /// (`cache.methods`), declared within `cache.max_body_key`, without preconditions. Any
    /// other body streams (and such a query passes uncached).
    pub fn keys_body<B>(&self, request: &Request<B>, declared: Option<u64>) -> bool {
        let Some(rule) = &self.settings.rule else { return false };
        request.method() == Method::POST
            && rule.methods.post
            && declared.is_some_and(|n| n <= rule.max_body_key)
            && !has_preconditions(request.headers())
    }
}

/// True when the request states preconditions, which only the origin can evaluate for a POST
/// (a `304` from the cache would be wrong; RFC 9110 §13.1).
fn has_preconditions(headers: &HeaderMap) -> bool {
    [header::IF_MATCH, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_UNMODIFIED_SINCE]
        .iter()
        .any(|name| headers.contains_key(name))
}

impl Cache {
    /// The cache's first look at a request on `route` (matched with `params`, for `host`).
    /// `body` is the request's body when it was read whole for the key
    /// ([`RouteCaching::keys_body`]); a POST on a route that caches queries is looked up only
    /// with it.
    pub fn lookup<B>(
        self: &Arc<Self>,
        route: &Arc<RouteCaching>,
        params: &PathParams,
        host: Option<&str>,
        request: &Request<B>,
        body: Option<&[u8]>,
    ) -> Lookup {
        let settings = &route.settings;
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        let host = host.unwrap_or("");
        let query = method == Method::POST && settings.rule.as_ref().is_some_and(|r| r.methods.post);
        if query && body.is_none() {
            // A query that cannot be keyed: a read all the same, so it invalidates nothing.
            let reason =
                if has_preconditions(headers) { BypassReason::Precondition } else { BypassReason::Body };
            route.metrics.query(Some(reason));
            return self.through(route, Some(CacheStatus::Bypass(reason)), None);
        }
        let cached_method = settings.rule.as_ref().is_none_or(|r| r.methods.includes(method));
        if !query && (!cached_method || (method != Method::GET && method != Method::HEAD)) {
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
        let credentials = Credentials::of(
            &self.config.credential_key,
            headers,
            &self.config.credential_cookies,
            &rule.credential_cookies,
            rule.share_authenticated,
        );
        let mut key = rule.key.key(Some(host), uri.path(), uri.query(), headers);
        if let Some(body) = body.filter(|_| query) {
            key = key.query(headers, body);
            route.metrics.query(None);
        }
        if let Credentials::Keyed(hash) = credentials {
            // Per user: neither the store, nor a flight, nor the second level is shared.
            key = key.credentialed(hash);
            route.metrics.credential_keyed();
        }
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
                        route.metrics.lookup(CacheResult::Hit);
                        return Lookup::Answer(self.answer(route, &entry, method, headers, now, status));
                    }
                    Staleness::Stale { by } if by < entry.freshness.stale_while_revalidate => {
                        let refresh =
                            self.refresh(route, key, rule, &entry, params, host, request, credentials);
                        let status = CacheStatus::StaleWhileRevalidate { ttl: stale_ttl(by) };
                        route.metrics.lookup(CacheResult::Stale);
                        let answer = self.answer(route, &entry, method, headers, now, status);
                        return Lookup::Stale { answer, refresh };
                    }
                    // Within a stale window or its keep window: revalidated, or standing in
                    // for a failure within `stale_if_error`.
                    Staleness::Stale { by } if entry.freshness.retains(by) => stale = Some(entry),
                    // Past its keep window: as good as gone (memory is reclaimed soon).
                    Staleness::Stale { .. } => {}
                }
            }
        }
        let mut fill = self.fill(key, Some(rule.clone()), host, uri, headers, params, !head, stale);
        fill.credentials = credentials;
        fill.asked = if head {
            Asked::Head
        } else if query {
            Asked::Query
        } else if method == Method::GET && headers.contains_key(header::RANGE) {
            Asked::Range
        } else {
            Asked::Get
        };
        fill.bypass = bypass;
        Lookup::Forward(self.pass(route, fill))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
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
            credentials: Credentials::None,
            asked: Asked::Get,
            stale: stale.map_or(Stale::None, Stale::Kept),
            tags,
            host: host.to_ascii_lowercase().into(),
            path: uri.path().into(),
            seq: self.store.reserve(),
            purge_point: self.shared.get().map(|tier| tier.purge_point()).unwrap_or_default(),
            flight: Flight::Alone,
            store,
            cluster_lock: None,
            bypass: None,
        }
    }

    pub(super) fn pass(self: &Arc<Self>, route: &Arc<RouteCaching>, fill: Fill) -> Pass {
        Pass { cache: self.clone(), route: route.clone(), count: true, mode: Mode::Fill(Box::new(fill)) }
    }

    pub(super) fn through(
        self: &Arc<Self>,
        route: &Arc<RouteCaching>,
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

    /// The pass of the background request that refreshes a stale entry; `None` when one is
    /// in flight already. The request sent is a GET with this request's headers (a query's is
    /// its POST, body included).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refresh<B>(
        self: &Arc<Self>,
        route: &Arc<RouteCaching>,
        key: CacheKey,
        rule: &Arc<CacheRule>,
        entry: &Arc<CacheEntry>,
        params: &PathParams,
        host: &str,
        request: &Request<B>,
        credentials: Credentials,
    ) -> Option<Pass> {
        let leader = self.flights.lead(key)?;
        let headers = request.headers();
        let mut fill = self.fill(
            key,
            Some(rule.clone()),
            host,
            request.uri(),
            headers,
            params,
            true,
            Some(entry.clone()),
        );
        fill.credentials = credentials;
        if request.method() == Method::POST {
            fill.asked = Asked::Query;
        }
        fill.flight = Flight::Leader(leader);
        let mut pass = self.pass(route, fill);
        pass.count = false;
        Some(pass)
    }
}
