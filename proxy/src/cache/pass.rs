//! A forwarded request's way through the cache: coalescing, the upstream request's
//! validators, and its answer stored while it streams (or a `304` that refreshes, a stale
//! entry that stands in for a failure, a rejection), then handed to the followers.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Response, StatusCode};

use super::*;

use super::metrics::{FollowerResult, RefreshResult, Revalidation};

impl Pass {
    /// True when the answer may be stored or shared: only then is there anything to wait
    /// for before the forward ([`Pass::coalesce`], [`Pass::second_level`]).
    pub fn fills(&self) -> bool {
        matches!(self.mode, Mode::Fill(_))
    }

    /// Waits for an identical request in flight, if the route coalesces: its answer, or this
    /// request goes upstream (as the leader, or on its own).
    pub async fn coalesce(mut self) -> Coalesced {
        let Mode::Fill(fill) = &mut self.mode else { return Coalesced::Forward(self) };
        let rule = self.route.settings.coalesce;
        if !rule.enabled || matches!(fill.asked, Asked::Head | Asked::Range) || fill.bypass.is_some() {
            return Coalesced::Forward(self);
        }
        let follower = match self.cache.flights.join(fill.key) {
            Role::Leader(leader) => {
                fill.flight = Flight::Leader(leader);
                return Coalesced::Forward(self);
            }
            Role::Follower(follower) => follower,
        };
        match follower.wait(rule.follower_timeout).await {
            Waited::Shared(shared) if may_share(fill, &shared) => {
                self.cache.metrics.follower(FollowerResult::Served);
                let now = self.cache.clock.now();
                let answer = self.cache.answer(
                    &self.route,
                    &shared.entry,
                    &fill.method(),
                    &fill.request,
                    now,
                    CacheStatus::Collapsed,
                );
                self.route.metrics.lookup(answer.result);
                Coalesced::Answer(answer)
            }
            Waited::Shared(_) | Waited::Released => {
                self.cache.metrics.follower(FollowerResult::Released);
                fill.flight = Flight::Released;
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
    /// needs the full answer); no `Range` but a client's own range request's (a background
    /// refresh sent for a range request fetches the whole answer).
    pub fn prepare(&mut self, headers: &mut HeaderMap) {
        let Mode::Fill(fill) = &mut self.mode else { return };
        if fill.asked != Asked::Range {
            headers.remove(header::RANGE);
            headers.remove(header::IF_RANGE);
        }
        match std::mem::take(&mut fill.stale) {
            Stale::Kept(stale) | Stale::Revalidating(stale)
                if stale.has_validators() && fill.asked != Asked::Query =>
            {
                conditional::add_validators(headers, &stale);
                fill.stale = Stale::Revalidating(stale);
            }
            kept if fill.store || fill.rule.is_none() => {
                fill.stale = kept;
                // A leader's answer is shared with followers that sent no conditions of their own.
                headers.remove(header::IF_NONE_MATCH);
                headers.remove(header::IF_MODIFIED_SINCE);
            }
            kept => fill.stale = kept,
        }
    }

    /// Takes the upstream's answer (headers already prepared for the client): stores it,
    /// refreshes, falls back to a stale entry, or invalidates, and returns what the client
    /// gets.
    ///
    /// Inlined for the pass of a route that neither caches nor invalidates, which has nothing
    /// to do: the answer is then built where the caller keeps it, not copied out of a call.
    #[inline]
    pub fn complete(self, result: Forwarded) -> Answer {
        if let Mode::Through { status: None, invalidation: None } = self.mode {
            // Nothing to store, mark or invalidate, and a lookup without a result is not counted.
            return Answer { response: result.unwrap_or_else(|failed| failed), result: CacheResult::None };
        }
        self.complete_with_cache(result)
    }

    fn complete_with_cache(self, result: Forwarded) -> Answer {
        let Self { cache, route, count, mode } = self;
        let answer = match mode {
            Mode::Through { status, invalidation } => {
                let mut response = result.unwrap_or_else(|failed| failed);
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
            route.metrics.lookup(answer.result);
        }
        answer
    }

    /// Completes a background refresh (see [`Lookup::Stale`]) with the upstream's answer and
    /// reads its body to the end, which stores the entry; counts how it went.
    pub async fn complete_refresh(self, result: Forwarded) {
        let cache = self.cache.clone();
        let answer = self.complete(result);
        let outcome = match answer.result {
            CacheResult::Revalidated => RefreshResult::Revalidated,
            CacheResult::Expired if answer.response.status().is_success() => RefreshResult::Stored,
            _ => RefreshResult::Failed,
        };
        let complete = answer.response.into_body().collect().await.is_ok();
        cache.metrics.refresh(if complete { outcome } else { RefreshResult::Failed });
    }
}

impl Cache {
    /// The miss / stale path's end: the answer for the client, marked.
    fn complete_fill(self: &Arc<Self>, fill: Fill, result: Forwarded, route: &Arc<RouteCaching>) -> Answer {
        let now = self.clock.now();
        let forwarded = |fill: &Fill, code: StatusCode, stored: bool| -> CacheStatus {
            let fwd_status = code.as_u16();
            match (fill.bypass, fill.stale.entry()) {
                (Some(reason), _) => CacheStatus::Bypass(reason),
                (None, Some(_)) => CacheStatus::Expired { fwd_status, stored },
                (None, None) => CacheStatus::Miss { fwd_status, stored },
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(response) => {
                if let Some((entry, ttl)) = usable_on_error(fill.stale.entry(), now) {
                    let status = CacheStatus::StaleIfError { ttl, fwd_status: None };
                    return self.answer(route, entry, &fill.method(), &fill.request, now, status);
                }
                if fill.stale.revalidating() {
                    route.metrics.revalidated(Revalidation::Failed);
                }
                if must_revalidate(fill.stale.entry(), now) {
                    return self.gateway_timeout(&fill, None);
                }
                let status = forwarded(&fill, response.status(), false);
                return self.forwarded_answer(&fill, response, status);
            }
        };
        let code = response.status();
        if code.is_server_error()
            && let Some((entry, ttl)) = usable_on_error(fill.stale.entry(), now)
        {
            let status = CacheStatus::StaleIfError { ttl, fwd_status: Some(code.as_u16()) };
            return self.answer(route, entry, &fill.method(), &fill.request, now, status);
        }
        if fill.stale.revalidating() {
            route.metrics.revalidated(match code {
                StatusCode::NOT_MODIFIED => Revalidation::NotModified,
                _ if code.is_server_error() => Revalidation::Failed,
                _ => Revalidation::Modified,
            });
        }
        if code.is_server_error() && must_revalidate(fill.stale.entry(), now) {
            return self.gateway_timeout(&fill, Some(code.as_u16()));
        }
        if code == StatusCode::NOT_MODIFIED
            && let (Stale::Revalidating(stale), Some(rule)) = (&fill.stale, fill.rule.clone())
        {
            route.metrics.refreshed(true);
            let stale = stale.clone();
            return self.revalidated(route, fill, &stale, &rule, response.headers(), now);
        }
        if let Some(stale) = fill.stale.entry()
            && code.is_success()
        {
            let same = stale.etag().is_some_and(|etag| response.headers().get(header::ETAG) == Some(etag));
            route.metrics.refreshed(same);
        }
        let (mut parts, body) = response.into_parts();
        let partial = fill.asked == Asked::Range && code == StatusCode::PARTIAL_CONTENT;
        let decision = if fill.asked == Asked::Head
            || partial
            || (!fill.store && !matches!(fill.flight, Flight::Leader(_)))
        {
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
                let Fill {
                    key,
                    request,
                    mut tags,
                    host,
                    path,
                    seq,
                    store,
                    mut flight,
                    rule,
                    credentials,
                    cluster_lock,
                    purge_point,
                    ..
                } = fill;
                tags.extend(origin_tags);
                let mut headers = parts.headers.clone();
                if let Some(rule) = &rule {
                    rule.ignore.trim(&mut headers);
                }
                let initial_age = policy::initial_age(&headers);
                headers.remove(header::AGE);
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
                let filling = Collecting {
                    cache: self.clone(),
                    route: route.clone(),
                    key,
                    request,
                    template,
                    seq,
                    store,
                    leader: flight.take_leader(),
                    limit,
                    second_level: self.may_leave_memory(credentials),
                    cluster_lock,
                    purge_point,
                };
                let collapse_only = rule.is_none();
                let mut response = Response::from_parts(parts, Body::boxed(CollectBody::new(body, filling)));
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
        // `fill`'s leader drops with it: followers go upstream on their own; so does its
        // cluster lock, released for the other sidecars' followers.
        self.forwarded_answer(&fill, Response::from_parts(parts, body), status)
    }

    /// The `504` of a stale entry that must not be served stale and could not be
    /// revalidated (RFC 9111 §4.2.4, §5.2.2.2): the origin's failure (`fwd_status`, if it
    /// answered) is not passed off as an answer, and the stale entry is not served.
    fn gateway_timeout(&self, fill: &Fill, fwd_status: Option<u16>) -> Answer {
        let mut response = Response::new(Body::full("stale answer could not be revalidated\n"));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        self.forwarded_answer(fill, response, CacheStatus::MustRevalidate { fwd_status })
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
                keep: Duration::ZERO,
                shared_with_credentials: false,
            });
        };
        let mut freshness = policy::storable(
            rule,
            &self.config.targeted,
            fill.credentials.present(),
            code,
            headers,
            self.now_system(now),
        )?;
        freshness.keep = self.keep_for(rule, headers);
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
        route: &RouteCaching,
        fill: Fill,
        stale: &Arc<CacheEntry>,
        rule: &CacheRule,
        not_modified: &HeaderMap,
        now: clock::Millis,
    ) -> Answer {
        let method = fill.method();
        let Fill { key, request, credentials, seq, purge_point, mut flight, .. } = fill;
        let mut headers = conditional::refreshed_headers(&stale.headers, not_modified);
        let initial_age = policy::initial_age(not_modified);
        // Decided before the fields for the cache alone (a targeted field) leave the headers.
        let decision = policy::storable(
            rule,
            &self.config.targeted,
            credentials.present(),
            stale.status,
            &headers,
            self.now_system(now),
        );
        self.strip_tag_headers(&mut headers);
        rule.ignore.trim(&mut headers);
        let entry = match decision {
            Ok(mut freshness) => {
                freshness.keep = self.keep_for(rule, &headers);
                let entry = Arc::new(CacheEntry {
                    headers,
                    stored_at: now,
                    initial_age,
                    freshness,
                    ..CacheEntry::clone(stale)
                });
                self.store.insert(key, &request, entry.clone(), seq);
                // The refresh reaches the other sidecars through the second level too.
                if self.may_leave_memory(credentials) {
                    let variant = collect::key_for(&entry, key, &request);
                    self.share_entry(key, variant, &entry, None, purge_point);
                }
                entry
            }
            Err(reason) => {
                self.metrics.rejected(reason);
                stale.clone()
            }
        };
        if let Some(leader) = flight.take_leader() {
            let variant = collect::key_for(&entry, key, &request);
            leader.publish(Arc::new(Handoff { entry: entry.clone(), variant }));
        }
        let ttl = match entry.staleness(now) {
            Staleness::Fresh { remaining } => remaining.as_secs() as i64,
            Staleness::Stale { .. } => 0,
        };
        self.answer(route, &entry, &method, &request, now, CacheStatus::Revalidated { ttl })
    }
}

/// Within the entry's `stale_if_error` window at `now`.
pub(super) fn usable_on_error(
    stale: Option<&Arc<CacheEntry>>,
    now: clock::Millis,
) -> Option<(&Arc<CacheEntry>, i64)> {
    let entry = stale?;
    match entry.staleness(now) {
        Staleness::Fresh { .. } => Some((entry, 0)),
        Staleness::Stale { by } if by < entry.freshness.stale_if_error => Some((entry, stale_ttl(by))),
        Staleness::Stale { .. } => None,
    }
}

/// True when `stale` is stale at `now` and its answer forbids serving it so
/// (`must-revalidate`, `proxy-revalidate`, `s-maxage`): a failed revalidation is then a `504`.
fn must_revalidate(stale: Option<&Arc<CacheEntry>>, now: clock::Millis) -> bool {
    stale.is_some_and(|entry| {
        matches!(entry.staleness(now), Staleness::Stale { .. })
            && policy::CacheControl::parse(&entry.headers).never_stale()
    })
}

/// True when a leader's answer fits a follower: same variant, and credentials allow it.
pub(super) fn may_share(fill: &Fill, shared: &Handoff) -> bool {
    if collect::key_for(&shared.entry, fill.key, &fill.request) != shared.variant {
        return false;
    }
    match &fill.rule {
        Some(rule) => usable(&shared.entry, fill.credentials, rule),
        None => true,
    }
}
