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
use crate::forward::{self, RequestBody, ServedBy};
use crate::limit::Admission;
use crate::limit::RateLimiting;
use crate::route::{PathParams, Route, RouteTable, path};

/// What the request path runs on: the current rules and the stages' shared state. The
/// cache and the limiters survive reloads; only the route table is swapped.
#[derive(Debug)]
pub struct Pipeline {
    /// The running rules. A request loads it once and keeps that snapshot to the end.
    pub routes: ArcSwap<RouteTable>,
    /// Rate limiters (kept across reloads) and the per-client concurrency cap.
    pub limits: Arc<RateLimiting>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// Forwarding headers policy.
    pub forwarded: ForwardedConfig,
    /// Log one line per request.
    pub access_log: bool,
    /// Longest pause in a client's request body (`limits.body_read_timeout`).
    pub body_read_timeout: Duration,
    /// Request body bytes of a route without its own `max_body_size` (`limits.max_body_size`).
    pub max_body_size: u64,
    /// Requests that matched no route (`accel_unrouted_requests_total`).
    pub unrouted: Counter,
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
    // route: dot segments removed from the path first, so a request is routed, limited,
    // cached and forwarded by the path the origin will resolve (`/public/../admin` is `/admin`).
    if let Err(error) = normalize_path(&mut request) {
        return refuse(proxy, None, downstream, &request, error, started);
    }
    // route: one snapshot of the rules for the whole request, even across a reload.
    let table = proxy.routes.load();
    let host = match request_host(&request) {
        Ok(host) => host,
        Err(error) => return refuse(proxy, None, downstream, &request, error, started),
    };
    let mut params = PathParams::default();
    let Some(route) = table.find(host, request.method(), request.uri().path(), &mut params) else {
        proxy.unrouted.inc();
        return refuse(proxy, None, downstream, &request, ProxyError::NoRoute, started);
    };
    // body limit: a declared length over the route's limit is refused before any work; a
    // body that streams past it is cut off in the forward stage.
    let max_body_size = route.rule.max_body_size.unwrap_or(proxy.max_body_size);
    if http_body::Body::size_hint(request.body()).lower() > max_body_size {
        let error = ProxyError::BodyTooLarge { limit: max_body_size };
        return refuse(proxy, Some(route), downstream, &request, error, started);
    }
    // rate limit: the per-client concurrency cap and the route's quotas, before any upstream
    // work (cache hits included: a quota protects the sidecar too); a refusal is recorded like
    // any answer. The admission rides to the response.
    let admission = match proxy.limits.admit(&route.limits, downstream, &request, &params).await {
        Ok(admission) => admission,
        Err(refused) => return refuse(proxy, Some(route), downstream, &request, refused.into(), started),
    };
    let method = request.method().clone();
    let access = proxy.access_log.then(|| (request.uri().clone(), request.version()));
    // compress: what the client accepts, read before the request goes anywhere.
    let compress = Negotiation::new(route.compress.as_deref(), &method, request.headers());
    let back = Outbound { admission, compress };

    // cache lookup: a fresh entry answers here (HEAD from the GET entry, 304 to a matching
    // conditional request); otherwise the pass says what the forward is for.
    let pass = match proxy.cache.lookup(&route.cache, &params, host, &request) {
        Lookup::Answer(answer) => {
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        // A stale entry within stale-while-revalidate answers too, while one background
        // request (sent before this answer goes back) refreshes it.
        Lookup::Stale { answer, refresh } => {
            if let Some(refresh) = refresh {
                refresh_in_background(proxy, route, downstream, &request, refresh);
            }
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        Lookup::Forward(pass) => pass,
    };
    // coalesce: identical concurrent misses send one leader upstream; followers take its answer.
    let pass = match pass.coalesce().await {
        Coalesced::Answer(answer) => {
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        Coalesced::Forward(pass) => pass,
    };
    // shared tier: a memory miss (the leader, or a request that does not coalesce) looks in
    // Redis before the origin, when `[redis]` is configured.
    let mut pass = match pass.second_level().await {
        Coalesced::Answer(answer) => {
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        Coalesced::Forward(pass) => pass,
    };

    // forward: forwarding headers and the cache's validators, then least-connections pick
    // and tries with retries; a failure becomes the proxy's answer here.
    let (parts, body) = request.into_parts();
    let body = RequestBody::new(body, proxy.body_read_timeout, max_body_size);
    let prepare = |headers: &mut http::HeaderMap| pass.prepare(headers);
    let result = forward::exchange(
        route,
        downstream,
        &proxy.forwarded,
        parts,
        body,
        prepare,
        proxy.access_log,
    )
    .await
    .map_err(|error| {
        tracing::debug!(route = %route.rule.name, side = ?error.side(), error = %error, "request failed");
        error.into_response()
    });

    // cache store: storable answers stored with their tags as they stream; a 304 refreshes;
    // stale-if-error; successful unsafe requests invalidate.
    let answer = pass.complete(result);
    finish(route, downstream, &method, access, answer, back, started).await
}

/// Sends the background request that refreshes a stale entry: a GET with the request's
/// headers, through the same exchange as any forward.
fn refresh_in_background(
    proxy: &Pipeline,
    route: &Arc<Route>,
    downstream: &Downstream,
    request: &Request<Incoming>,
    mut pass: Pass,
) {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.version = request.version();
    parts.uri = request.uri().clone();
    parts.headers = request.headers().clone();
    let (route, downstream, policy) = (route.clone(), downstream.clone(), proxy.forwarded.clone());
    tokio::spawn(async move {
        let prepare = |headers: &mut http::HeaderMap| pass.prepare(headers);
        let result =
            forward::exchange(&route, &downstream, &policy, parts, RequestBody::Empty, prepare, false)
                .await
                .map_err(ProxyError::into_response);
        pass.complete_refresh(result).await;
    });
}

/// What the answer meets on its way back, decided from the request.
struct Outbound<'a> {
    admission: Admission,
    compress: Negotiation<'a>,
}

/// compress, rate limit headers, metrics: one record of every outcome; the access log line.
async fn finish(
    route: &Route,
    downstream: &Downstream,
    method: &Method,
    access: Option<(Uri, Version)>,
    answer: Answer,
    back: Outbound<'_>,
    started: Instant,
) -> Response<Body> {
    let Outbound { admission, compress } = back;
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
    route.metrics.record(method, response.status(), cache, started.elapsed().as_secs_f64());
    if let Some((uri, version)) = access {
        let line = AccessLine { route: Some(route), method, uri: &uri, version, cache };
        line.write(&response, downstream, started);
    }
    response
}

/// The answer to a request refused before it went anywhere (a bad request, no route, a
/// limit): the rescue point's response, recorded like any other.
fn refuse(
    proxy: &Pipeline,
    route: Option<&Route>,
    downstream: &Downstream,
    request: &Request<Incoming>,
    error: ProxyError,
    started: Instant,
) -> Response<Body> {
    let response = error.into_response();
    if let Some(route) = route {
        let seconds = started.elapsed().as_secs_f64();
        route.metrics.record(request.method(), response.status(), CacheResult::None, seconds);
    }
    if proxy.access_log {
        let (method, uri, version) = (request.method(), request.uri(), request.version());
        let line = AccessLine { route, method, uri, version, cache: CacheResult::None };
        line.write(&response, downstream, started);
    }
    response
}

/// One access-log line (target `accel::access`): the same fields for every answer.
struct AccessLine<'a> {
    route: Option<&'a Route>,
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    cache: CacheResult,
}

impl AccessLine<'_> {
    fn write(self, response: &Response<Body>, downstream: &Downstream, started: Instant) {
        let Self { route, method, uri, version, cache } = self;
        let endpoint = response.extensions().get::<ServedBy>().map(|s| s.0.to_string());
        tracing::info!(
            target: "accel::access",
            route = route.map_or("-", |r| r.rule.name.as_str()),
            method = %method,
            path = uri.path(),
            version = ?version,
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            endpoint = endpoint.as_deref().unwrap_or("-"),
            cache = cache.as_str(),
            client = %downstream.peer,
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
    host.rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
