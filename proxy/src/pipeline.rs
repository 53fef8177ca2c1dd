//! The request path, composed in one place in the order a request meets the stages. The
//! response travels back through the same stages in reverse.

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Body;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::forward::{self, RequestBody, ServedBy};
use crate::limit;
use crate::metrics::CacheResult;
use crate::proxy::Proxy;
use crate::route::{PathParams, Route};

/// Answers one request. Never fails: every error becomes a response here (see
/// [`ProxyError::into_response`]).
pub async fn handle(proxy: &Proxy, downstream: &Downstream, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    // route: one snapshot of the rules for the whole request, even across a reload.
    let table = proxy.routes.load();
    let host = request_host(&request);
    let mut params = PathParams::default();
    let Some(route) = table.find(host, request.method(), request.uri().path(), &mut params) else {
        proxy.metrics.unrouted.inc();
        let response = ProxyError::NoRoute.into_response();
        access_log(proxy, None, &request, &response, started, CacheResult::None);
        return response;
    };
    // rate limit: the per-client concurrency cap and the route's quotas, before any upstream
    // work; a refusal is recorded like any answer. The admission rides to the response.
    let admission = match limit::admit(proxy, route, downstream, &request, &params).await {
        Ok(admission) => admission,
        Err(refused) => return answered_early(proxy, route, &request, refused, started),
    };
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let access = proxy.access_log.then(|| (parts.uri.clone(), parts.version));

    // forward: forwarding headers, then least-connections pick and tries with retries.
    forward::headers::to_upstream(
        &mut parts.headers,
        parts.version,
        parts.uri.authority(),
        downstream,
        &proxy.forwarded,
    );
    let mut response = match forward::send(route, parts, RequestBody::new(body)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(route = %route.rule.name, side = ?error.side(), error = %error, "request failed");
            error.into_response()
        }
    };
    forward::headers::to_downstream(response.headers_mut(), &proxy.forwarded);
    // The client's protocol frames the answer, whatever the endpoint spoke.
    *response.version_mut() = http::Version::default();
    admission.finish(&mut response);

    // metrics: one record of every outcome.
    let cache = CacheResult::None;
    route.metrics.record(&method, response.status(), cache, started.elapsed().as_secs_f64());
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

/// The request's host without port: `Host`, or the URI's authority (HTTP/2).
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let raw = match request.headers().get(http::header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    Some(strip_port(raw))
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
