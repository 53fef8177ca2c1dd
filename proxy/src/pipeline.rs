//! The request path, composed in one place in the order a request meets the stages. The
//! response travels back through the same stages in reverse.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Body;
use crate::cache::{Answer, CacheResult, CachedBody, Coalesced, Lookup};
use crate::compress::Negotiation;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::forward::{self, RequestBody, ServedBy};
use crate::limit::{self, Admission};
use crate::proxy::Proxy;
use crate::route::{PathParams, Route, path};

/// Answers one request. Never fails: every error becomes a response here (see
/// [`ProxyError::into_response`]).
pub async fn handle(
    proxy: &Proxy,
    downstream: &Downstream,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    // route: dot segments removed from the path first, so a request is routed, limited,
    // cached and forwarded by the path the origin will resolve (`/public/../admin` is `/admin`).
    if let Err(error) = normalize_path(&mut request) {
        let response = error.into_response();
        access_log(proxy, None, &request, &response, started, CacheResult::None);
        return response;
    }
    // route: one snapshot of the rules for the whole request, even across a reload.
    let table = proxy.routes.load();
    let host = match request_host(&request) {
        Ok(host) => host,
        Err(error) => {
            let response = error.into_response();
            access_log(proxy, None, &request, &response, started, CacheResult::None);
            return response;
        }
    };
    let mut params = PathParams::default();
    let Some(route) = table.find(host, request.method(), request.uri().path(), &mut params) else {
        proxy.metrics.unrouted.inc();
        let response = ProxyError::NoRoute.into_response();
        access_log(proxy, None, &request, &response, started, CacheResult::None);
        return response;
    };
    // rate limit: the per-client concurrency cap and the route's quotas, before any upstream
    // work (cache hits included: a quota protects the sidecar too); a refusal is recorded like
    // any answer. The admission rides to the response.
    let admission = match limit::admit(proxy, route, downstream, &request, &params).await {
        Ok(admission) => admission,
        Err(refused) => return answered_early(proxy, route, &request, refused, started),
    };
    let method = request.method().clone();
    let access = proxy.access_log.then(|| (request.uri().clone(), request.version()));
    // compress: what the client accepts, read before the request goes anywhere.
    let compress = Negotiation::new(route.compress.as_ref(), &method, request.headers());
    let back = Outbound { admission, compress };

    // cache lookup: a fresh entry answers here (HEAD from the GET entry, 304 to a matching
    // conditional request; a stale one within stale-while-revalidate too, refreshed in the
    // background); otherwise the pass says what the forward is for.
    let pass = match proxy.cache.lookup(route, &params, host, &request, downstream) {
        Lookup::Answer(answer) => {
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        Lookup::Forward(pass) => pass,
    };
    // coalesce: identical concurrent misses send one leader upstream; followers take its answer.
    let mut pass = match pass.coalesce().await {
        Coalesced::Answer(answer) => {
            return finish(route, downstream, &method, access, answer, back, started).await;
        }
        Coalesced::Forward(pass) => pass,
    };

    // forward: forwarding headers (and the cache's validators), then least-connections pick
    // and tries with retries.
    let (mut parts, body) = request.into_parts();
    forward::headers::to_upstream(
        &mut parts.headers,
        parts.version,
        parts.uri.authority(),
        downstream,
        &proxy.forwarded,
    );
    pass.prepare(&mut parts.headers);
    let result =
        forward::send(route, parts, RequestBody::new(body, proxy.body_read_timeout), proxy.access_log)
            .await
            .map(|mut response| {
                forward::headers::to_downstream(response.headers_mut(), &proxy.forwarded);
                response
            });
    if let Err(error) = &result {
        tracing::debug!(route = %route.rule.name, side = ?error.side(), error = %error, "request failed");
    }

    // cache store: storable answers stored with their tags as they stream; a 304 refreshes;
    // stale-if-error; successful unsafe requests invalidate.
    let answer = pass.complete(result);
    finish(route, downstream, &method, access, answer, back, started).await
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
        let endpoint = response.extensions().get::<ServedBy>().map(|s| s.0.to_string());
        tracing::info!(
            target: "accel::access",
            route = %route.rule.name,
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
    response
}

/// Records an answer the proxy gave itself before going upstream (a refusal), like any other.
fn answered_early(
    proxy: &Proxy,
    route: &Route,
    request: &Request<Incoming>,
    response: Response<Body>,
    started: Instant,
) -> Response<Body> {
    let seconds = started.elapsed().as_secs_f64();
    route.metrics.record(request.method(), response.status(), CacheResult::None, seconds);
    access_log(proxy, Some(route.rule.name.as_str()), request, &response, started, CacheResult::None);
    response
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

fn access_log(
    proxy: &Proxy,
    route: Option<&str>,
    request: &Request<Incoming>,
    response: &Response<Body>,
    started: Instant,
    cache: CacheResult,
) {
    if proxy.access_log {
        tracing::info!(
            target: "accel::access",
            route = route.unwrap_or("-"),
            method = %request.method(),
            path = request.uri().path(),
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            endpoint = "-",
            cache = cache.as_str(),
        );
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
    }
}
