//! The request path, composed in one place in the order a request meets the stages. The
//! response travels back through the same stages in reverse.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Body;
use crate::cache::{Answer, Cache, CacheResult, CachedBody, Coalesced, Lookup, Pass};
use crate::compress::Negotiation;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::forward::headers::ForwardedConfig;
use crate::forward::trace::{self, RequestId};
use crate::forward::{self, RequestBody, Served};
use crate::limit::Admission;
use crate::limit::{Clients, RateLimiting};
use crate::route::timing::{SlowLog, Spent};
use crate::route::{PathParams, Route, RouteTable, path};
use crate::upstream::{EndpointAddr, Upstream};

/// What the request path runs on: the running configuration and the stages' shared state.
/// The cache and the limiters survive reloads; the running snapshot is swapped whole.
#[derive(Debug)]
pub struct Pipeline {
    /// The running rules and live settings. A request loads it once and keeps that snapshot
    /// to the end, so it never meets half of a reload.
    pub running: ArcSwap<Running>,
    /// Rate limiters (kept across reloads).
    pub limits: Arc<RateLimiting>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// Requests that matched no route (`accel_unrouted_requests_total`).
    pub unrouted: Counter,
    /// The budget of slow-request log lines, shared by every route and kept across reloads.
    pub slow_log: SlowLog,
}

/// One snapshot of everything a reload changes: the route table (whose routes hold their
/// upstreams) and the live settings of `accel.toml`.
#[derive(Debug)]
pub struct Running {
    /// The rules, each route resolved to its upstream.
    pub routes: RouteTable,
    /// The upstream pools, in configuration order (the ones the routes point to).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Forwarding headers policy.
    pub forwarded: ForwardedConfig,
    /// Who a client is and its concurrency cap.
    pub clients: Clients,
    /// Log one line per request.
    pub access_log: bool,
    /// Longest pause in a client's request body (`limits.body_read_timeout`).
    pub body_read_timeout: Duration,
    /// Request body bytes of a route without its own `max_body_size` (`limits.max_body_size`).
    pub max_body_size: u64,
}

/// Answers one request. Never fails: every error becomes a response at one rescue point
/// ([`ProxyError::into_response`], through [`refuse`] before the forward and through the
/// cache's [`Pass::complete`] after it).
pub async fn handle(
    proxy: &Pipeline,
    downstream: &Downstream,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    // One snapshot of the rules and live settings for the whole request, even across a reload.
    let running = proxy.running.load();
    // request id and trace context: first, so that every answer, refusals included, carries
    // the id; the forward sends both upstream.
    let id = trace::identify(request.headers_mut(), downstream, &running.forwarded);
    // route: dot segments removed from the path first, so a request is routed, limited,
    // cached and forwarded by the path the origin will resolve (`/public/../admin` is `/admin`).
    if let Err(error) = normalize_path(&mut request) {
        return refuse(proxy, &running, None, downstream, &request, error, id.as_ref(), started);
    }
    // The body apart from the head: it streams upstream, or is read whole for a query's key.
    let (parts, body) = request.into_parts();
    let mut request = Request::from_parts(parts, ());
    let table = &running.routes;
    let host = match request_host(&request) {
        Ok(host) => host,
        Err(error) => {
            return refuse(proxy, &running, None, downstream, &request, error, id.as_ref(), started);
        }
    };
    let mut params = PathParams::default();
    let Some(route) = table.find(host, request.method(), request.uri().path(), &mut params) else {
        proxy.unrouted.inc();
        return refuse(
            proxy,
            &running,
            None,
            downstream,
            &request,
            ProxyError::NoRoute,
            id.as_ref(),
            started,
        );
    };
    // body limit: a declared length over the route's limit is refused before any work; a
    // body that streams past it is cut off in the forward stage.
    let max_body_size = route.rule.max_body_size.unwrap_or(running.max_body_size);
    let declared = http_body::Body::size_hint(&body);
    if declared.lower() > max_body_size {
        let error = ProxyError::BodyTooLarge { limit: max_body_size };
        return refuse(proxy, &running, Some(route), downstream, &request, error, id.as_ref(), started);
    }
    // rate limit: the per-client concurrency cap and the route's quotas, before any upstream
    // work (cache hits included: a quota protects the sidecar too); a refusal is recorded like
    // any answer. The admission rides to the response.
    let admission = match proxy
        .limits
        .admit(&running.clients, &route.limits, downstream, &request, &params)
        .await
    {
        Ok(admission) => admission,
        Err(refused) => {
            let error = refused.into();
            return refuse(proxy, &running, Some(route), downstream, &request, error, id.as_ref(), started);
        }
    };
    let record = Record::new(proxy, &running, &request, id, started);
    // upgrade: a switch the route tunnels goes straight to the origin, past the cache,
    // coalescing and compression.
    if let Some(protocol) = forward::upgrade::requested(&request, &route.rule.upgrades) {
        let client = hyper::upgrade::on(&mut request);
        let (mut parts, ()) = request.into_parts();
        let body = RequestBody::new(body, running.body_read_timeout, max_body_size);
        let prepare = |headers: &mut http::HeaderMap| forward::upgrade::ask(headers, &protocol);
        let mut served = Served::default();
        let result = forward::exchange(
            route,
            downstream,
            &running.forwarded,
            record.id.as_ref(),
            &mut parts,
            body,
            prepare,
            &mut served,
        )
        .await;
        let endpoint = served.endpoint.clone();
        let response = forward::upgrade::answer(route, result, endpoint, client).unwrap_or_else(|error| {
            tracing::debug!(route = %route.rule.name, side = ?error.side(), error = %error, "upgrade failed");
            error.into_response()
        });
        // No coding is accepted: the answer goes back as the origin gave it.
        let compress = Negotiation::new(route.compress.as_deref(), &record.method, &http::HeaderMap::new());
        let back = Outbound { admission, compress, served };
        let answer = Answer { response, result: CacheResult::None };
        return finish(route, downstream, &record, &parts.uri, answer, back).await;
    }
    // compress: what the client accepts, read before the request goes anywhere.
    let compress = Negotiation::new(route.compress.as_deref(), &record.method, request.headers());
    let mut back = Outbound { admission, compress, served: Served::default() };

    // query body: a POST on a route that caches queries is read whole, within the route's
    // `max_body_key`, for the key to hash it; every other body streams in the forward.
    let body = if route.cache.keys_body(&request, declared.exact()) {
        match RequestBody::buffer(body, running.body_read_timeout).await {
            Ok(body) => body,
            Err(error) => {
                let answer = Answer { response: error.into_response(), result: CacheResult::None };
                return finish(route, downstream, &record, request.uri(), answer, back).await;
            }
        }
    } else {
        RequestBody::new(body, running.body_read_timeout, max_body_size)
    };
    // cache lookup: a fresh entry answers here (HEAD from the GET entry, 304 to a matching
    // conditional request); otherwise the pass says what the forward is for.
    let mut pass = match proxy.cache.lookup(&route.cache, &params, host, &request, body.buffered()) {
        Lookup::Answer(answer) => {
            return finish(route, downstream, &record, request.uri(), answer, back).await;
        }
        // A stale entry within stale-while-revalidate answers too, while one background
        // request (sent before this answer goes back) refreshes it.
        Lookup::Stale { answer, refresh } => {
            if let Some(refresh) = refresh {
                let parts = (&request, &body);
                refresh_in_background(&running, route, downstream, parts, record.id.clone(), refresh);
            }
            return finish(route, downstream, &record, request.uri(), answer, back).await;
        }
        Lookup::Forward(pass) => pass,
    };
    // A pass that does not fill the cache has nothing to wait for: both awaits are skipped.
    if pass.fills() {
        // coalesce: identical concurrent misses send one leader upstream; followers take its
        // answer.
        pass = match pass.coalesce().await {
            Coalesced::Answer(answer) => {
                return finish(route, downstream, &record, request.uri(), answer, back).await;
            }
            Coalesced::Forward(pass) => pass,
        };
        // shared tier: a memory miss (the leader, or a request that does not coalesce) looks
        // in Redis before the origin, when `[redis]` is configured.
        pass = match pass.second_level().await {
            Coalesced::Answer(answer) => {
                return finish(route, downstream, &record, request.uri(), answer, back).await;
            }
            Coalesced::Forward(pass) => pass,
        };
    }

    // forward: forwarding headers, the request id and the cache's validators, then
    // least-connections pick and tries with retries; a failure becomes the proxy's answer here.
    let (mut parts, ()) = request.into_parts();
    let prepare = |headers: &mut http::HeaderMap| pass.prepare(headers);
    let result = forward::exchange(
        route,
        downstream,
        &running.forwarded,
        record.id.as_ref(),
        &mut parts,
        body,
        prepare,
        // The endpoint and the time upstream, for the timing fields and the log lines.
        &mut back.served,
    )
    .await
    .map_err(|error| {
        tracing::debug!(route = %route.rule.name, side = ?error.side(), error = %error, "request failed");
        error.into_response()
    });

    // cache store: storable answers stored with their tags as they stream; a 304 refreshes;
    // stale-if-error; successful unsafe requests invalidate.
    let answer = pass.complete(result);
    finish(route, downstream, &record, &parts.uri, answer, back).await
}

/// Sends the background request that refreshes a stale entry: a GET with the request's
/// headers and id (a query's POST with its body), through the same exchange as any forward.
fn refresh_in_background(
    running: &Running,
    route: &Arc<Route>,
    downstream: &Downstream,
    (request, body): (&Request<()>, &RequestBody),
    id: Option<RequestId>,
    mut pass: Pass,
) {
    let (mut parts, ()) = Request::new(()).into_parts();
    let body = match body {
        RequestBody::Buffered(bytes) => RequestBody::Buffered(bytes.clone()),
        RequestBody::Empty | RequestBody::Stream(_) => RequestBody::Empty,
    };
    parts.method = if request.method() == Method::POST { Method::POST } else { Method::GET };
    parts.version = request.version();
    parts.uri = request.uri().clone();
    parts.headers = request.headers().clone();
    let (route, downstream, policy) = (route.clone(), downstream.clone(), running.forwarded.clone());
    tokio::spawn(async move {
        let prepare = |headers: &mut http::HeaderMap| pass.prepare(headers);
        let result = forward::exchange(
            &route,
            &downstream,
            &policy,
            id.as_ref(),
            &mut parts,
            body,
            prepare,
            &mut Served::default(),
        )
        .await
        .map_err(ProxyError::into_response);
        pass.complete_refresh(result).await;
    });
}

/// What the answer meets on its way back, decided from the request.
struct Outbound<'a> {
    admission: Admission,
    compress: Negotiation<'a>,
    /// The endpoint that answered the exchange and how long it took, when there was one.
    served: Served,
}

/// What the answer's record says of the request: its method, version and id, and when it
/// started. Its target is not copied here: [`finish`] borrows it from the request, because
/// the log lines that need it are rare and a copy of a `Uri` is not free.
struct Record<'a> {
    method: Method,
    version: Version,
    id: Option<RequestId>,
    started: Instant,
    access_log: bool,
    slow_log: &'a SlowLog,
}

impl<'a> Record<'a> {
    fn new(
        proxy: &'a Pipeline,
        running: &Running,
        request: &Request<()>,
        id: Option<RequestId>,
        started: Instant,
    ) -> Self {
        Self {
            method: request.method().clone(),
            version: request.version(),
            id,
            started,
            access_log: running.access_log,
            slow_log: &proxy.slow_log,
        }
    }
}

/// compress, rate limit headers, request id and timing headers, metrics: one record of every
/// outcome; the access-log and slow-request lines.
async fn finish(
    route: &Route,
    downstream: &Downstream,
    record: &Record<'_>,
    target: &Uri,
    answer: Answer,
    back: Outbound<'_>,
) -> Response<Body> {
    let Outbound { admission, compress, served: Served { endpoint, upstream } } = back;
    let Answer { mut response, result: cache } = answer;
    // compress: after the cache stored the identity body. A cached body is compressed once
    // per coding and the variant reused; anything else is compressed as it streams.
    let mut response = match response.extensions_mut().remove::<CachedBody>() {
        Some(cached) => {
            let (parts, _) = response.into_parts();
            compress.apply_cached(parts, &cached.body, &cached.variants).await
        }
        None => compress.apply(response),
    };
    // The client's protocol frames the answer, whatever the endpoint spoke.
    *response.version_mut() = Version::default();
    // rate limit, on the way back: RateLimit headers; the concurrency slot rides the body.
    admission.finish(&mut response);
    // request id and timing: after the cache, so a stored answer never keeps the id or the
    // timing of the request that filled it; timed as the head is sent.
    let elapsed = record.started.elapsed();
    // Every answer of a route with ids: a cache answer holds the field with a stand-in value
    // (see `RouteCaching::request_id`), replaced here.
    if let Some(id) = &record.id {
        id.set(response.headers_mut());
    }
    route.rule.timing.stamp(response.headers_mut(), &Spent { total: elapsed, upstream, cache });
    route.metrics.record(&record.method, response.status(), cache, elapsed.as_secs_f64());
    let slow = route.rule.timing.is_slow(elapsed);
    if slow || record.access_log {
        let line = LogLine {
            route: Some(route),
            method: &record.method,
            uri: target,
            version: record.version,
            cache,
            id: record.id.as_ref(),
            endpoint: endpoint.as_ref(),
            elapsed,
        };
        if slow {
            route.metrics.slow();
            line.slow(&response, record.slow_log, record.started + elapsed);
        }
        if record.access_log {
            line.access(&response, downstream);
        }
    }
    response
}

/// The answer to a request refused before it went anywhere (a bad request, no route, a
/// limit): the rescue point's response, recorded like any other.
#[allow(clippy::too_many_arguments)] // the request's parts and its record so far
fn refuse<B>(
    proxy: &Pipeline,
    running: &Running,
    route: Option<&Route>,
    downstream: &Downstream,
    request: &Request<B>,
    error: ProxyError,
    id: Option<&RequestId>,
    started: Instant,
) -> Response<Body> {
    let mut response = error.into_response();
    let elapsed = started.elapsed();
    if let Some(id) = id {
        id.set(response.headers_mut());
    }
    let (method, uri, version) = (request.method(), request.uri(), request.version());
    let line = LogLine { route, method, uri, version, cache: CacheResult::None, id, endpoint: None, elapsed };
    if let Some(route) = route {
        let spent = Spent { total: elapsed, upstream: None, cache: CacheResult::None };
        route.rule.timing.stamp(response.headers_mut(), &spent);
        route.metrics.record(method, response.status(), CacheResult::None, elapsed.as_secs_f64());
        // A refusal can be slow too: a rate limit that made the request wait.
        if route.rule.timing.is_slow(elapsed) {
            route.metrics.slow();
            line.slow(&response, &proxy.slow_log, started + elapsed);
        }
    }
    if running.access_log {
        line.access(&response, downstream);
    }
    response
}

/// What the access-log line (target `accel::access`) and the slow-request line (target
/// `accel::slow`, a warning) say of an answer.
struct LogLine<'a> {
    route: Option<&'a Route>,
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    cache: CacheResult,
    id: Option<&'a RequestId>,
    /// The endpoint that answered the forward, when there was one.
    endpoint: Option<&'a EndpointAddr>,
    /// From the request's headers received to the answer's headers ready.
    elapsed: Duration,
}

impl LogLine<'_> {
    /// The access-log line: the same fields for every answer.
    fn access(&self, response: &Response<Body>, downstream: &Downstream) {
        let Self { route, method, uri, version, cache, id, endpoint, elapsed } = self;
        tracing::info!(
            target: "accel::access",
            route = route.map_or("-", |r| r.rule.name.as_str()),
            method = %method,
            path = uri.path(),
            version = ?version,
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            endpoint = endpoint.map_or("-", |e| e.as_str()),
            cache = cache.as_str(),
            client = %downstream.peer,
            request_id = id.map_or("-", |id| id.as_str()),
        );
    }

    /// The slow-request line, within the log's budget; `suppressed` counts the lines left
    /// out since the last one written.
    fn slow(&self, response: &Response<Body>, budget: &SlowLog, now: Instant) {
        let Some(suppressed) = budget.admit(now) else { return };
        let Self { route, method, uri, version: _, cache, id, endpoint, elapsed } = self;
        tracing::warn!(
            target: "accel::slow",
            route = route.map_or("-", |r| r.rule.name.as_str()),
            method = %method,
            path = uri.path(),
            status = response.status().as_u16(),
            millis = elapsed.as_secs_f64() * 1000.0,
            endpoint = endpoint.map_or("-", |e| e.as_str()),
            cache = cache.as_str(),
            request_id = id.map_or("-", |id| id.as_str()),
            suppressed,
            "slow request"
        );
    }
}

/// Removes dot segments from the request's path (see [`crate::route::path`]); a path that
/// climbs above the root is a bad request.
fn normalize_path<B>(request: &mut Request<B>) -> Result<(), ProxyError> {
    let path = match path::normalize(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(path)) => path,
        Err(path::AboveRoot) => return Err(ProxyError::BadRequest { reason: "path above the root" }),
    };
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest { reason: "request target" })?,
    );
    *request.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest { reason: "request target" })?;
    Ok(())
}

/// The request's host without port: `Host`, or the URI's authority (HTTP/2). As RFC 9112 §3.2
/// asks, more than one `Host`, an unreadable one, or none on HTTP/1.1 is a bad request: routing
/// on one host while the origin reads another would bypass host routes.
fn request_host<B>(request: &Request<B>) -> Result<Option<&str>, ProxyError> {
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest { reason: "more than one Host" }),
        (Some(value), None) => {
            value.to_str().map_err(|_| ProxyError::BadRequest { reason: "unreadable Host" })?
        }
        (None, _) => match request.uri().authority() {
            Some(authority) => authority.as_str(),
            None if request.version() == http::Version::HTTP_11 => {
                return Err(ProxyError::BadRequest { reason: "no Host" });
            }
            None => return Ok(None),
        },
    };
    Ok(Some(strip_port(raw)))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    // One pass back over the port's digits, then the colon before them (if that is what
    // precedes them): `rsplit_once`'s string searcher costs more than the short host it reads.
    let bytes = host.as_bytes();
    let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    match bytes.len().checked_sub(digits + 1) {
        Some(colon) if bytes[colon] == b':' => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.com:"), "example.com");
        assert_eq!(strip_port("example.com:http"), "example.com:http");
        assert_eq!(strip_port("a:1:2"), "a:1");
        assert_eq!(strip_port("8080"), "8080");
        assert_eq!(strip_port(":8080"), "");
        assert_eq!(strip_port("a:b:80"), "a:b");
    }
}
