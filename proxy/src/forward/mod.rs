//! Forward: send the request to an endpoint of the route's upstream and return its response
//! headers, with the body streaming behind them.
//!
//! Each try picks the least-loaded available endpoint not tried yet. A refused connection is
//! retried on another endpoint (the request was not sent); for idempotent requests whose body
//! was not sent, so is a timeout, a broken connection, or a status the route lists. All tries
//! share the route's total timeout. Failures feed passive ejection.

pub mod headers;

use std::time::Duration;

use http::request::Parts;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Body, BodySlot};
use crate::error::ProxyError;
use crate::metrics::UpstreamOutcome;
use crate::route::Route;
use crate::upstream::{Endpoint, InFlight};

/// Which endpoint answered: put in the response's extensions for the access log.
#[derive(Debug, Clone)]
pub struct ServedBy(pub crate::upstream::EndpointAddr);

/// The request body for the tries: nothing, or the downstream body in a replayable slot.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Stream(BodySlot),
}

impl RequestBody {
    /// Wraps a downstream body.
    pub fn new(body: Incoming) -> Self {
        if http_body::Body::is_end_stream(&body) { Self::Empty } else { Self::Stream(BodySlot::new(body)) }
    }

    fn for_try(&self) -> Body {
        match self {
            Self::Empty => Body::Empty,
            Self::Stream(slot) => slot.body(),
        }
    }

    fn is_unsent(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Stream(slot) => slot.is_unsent(),
        }
    }
}

/// Sends `parts` + `body` upstream for `route`. `parts.headers` must already be prepared
/// for the upstream ([`headers::to_upstream`]).
pub async fn send(route: &Route, parts: Parts, body: RequestBody) -> Result<Response<Body>, ProxyError> {
    let total = route.rule.timeouts.total;
    match tokio::time::timeout(total, tries(route, parts, body)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout { after: total }),
    }
}

enum TryError {
    Connect(hyper_util::client::legacy::Error),
    Exchange(hyper_util::client::legacy::Error),
    Timeout(Duration),
}

async fn tries(route: &Route, mut parts: Parts, body: RequestBody) -> Result<Response<Body>, ProxyError> {
    let upstream = &route.upstream;
    let policy = &route.rule.retry;
    let idempotent = is_idempotent(&parts.method);
    let path_and_query = parts.uri.path_and_query().cloned();
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;

    for attempt in 1..=policy.attempts.get() {
        let now = Instant::now();
        let Some(pick) = upstream.pick(&tried, now) else { break };
        let endpoint = pick.endpoint;
        tried.push(endpoint.index);
        let last_try = attempt == policy.attempts.get() || tried.len() == upstream.endpoints.len();

        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(endpoint.addr.authority().clone());
        uri.path_and_query =
            path_and_query.clone().or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        let uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest { reason: "request target" })?;
        let mut request = Request::new(body.for_try());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        // The last try takes the headers; earlier ones keep them for the next.
        *request.headers_mut() =
            if last_try { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
        *request.version_mut() = http::Version::HTTP_11;

        let guard = InFlight::new(endpoint.clone());
        let started = Instant::now();
        let result = match tokio::time::timeout(
            route.rule.timeouts.response,
            upstream.client.request(request),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(TryError::Connect(e)),
            Ok(Err(e)) if is_downstream_body_error(&e) => {
                // The client's body broke off (it went away mid-upload): the client failed,
                // not the endpoint, so no outcome, no ejection, no retry.
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "request body broke off");
                return Err(ProxyError::BadRequest { reason: "request body broke off" });
            }
            Ok(Err(e)) => Err(TryError::Exchange(e)),
            Err(_) => Err(TryError::Timeout(route.rule.timeouts.response)),
        };
        endpoint.metrics.duration.observe(started.elapsed().as_secs_f64());
        let others_available =
            upstream.endpoints.iter().any(|e| e.index != endpoint.index && e.is_available(now));

        match result {
            Ok(response) => {
                let status = response.status();
                if status.is_server_error() {
                    endpoint.metrics.outcome(UpstreamOutcome::ServerError);
                    endpoint.record_failure(&upstream.config.ejection, others_available, now);
                } else {
                    endpoint.metrics.outcome(UpstreamOutcome::Success);
                    endpoint.record_success();
                }
                let retry = !last_try && idempotent && policy.statuses.contains(&status) && body.is_unsent();
                if retry {
                    tracing::debug!(endpoint = %endpoint.addr, %status, "retrying on another endpoint");
                    continue;
                }
                let mut response = response.map(|incoming| Body::upstream(incoming, guard));
                response.extensions_mut().insert(ServedBy(endpoint.addr.clone()));
                return Ok(response);
            }
            Err(error) => {
                let (outcome, proxy_error, retryable) = classify(error, &endpoint, pick.panic, upstream);
                endpoint.metrics.outcome(outcome);
                endpoint.record_failure(&upstream.config.ejection, others_available, now);
                tracing::debug!(endpoint = %endpoint.addr, error = %proxy_error, "try failed");
                let retry = !last_try && body.is_unsent() && (retryable || idempotent);
                last_error = Some(proxy_error);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoHealthyEndpoint { upstream: upstream.name.clone() }))
}

/// The outcome label, the error for the client, and whether a retry is safe for any method.
fn classify(
    error: TryError,
    endpoint: &Endpoint,
    panic: bool,
    upstream: &crate::upstream::Upstream,
) -> (UpstreamOutcome, ProxyError, bool) {
    match error {
        TryError::Connect(e) => {
            let proxy_error = if panic {
                ProxyError::NoHealthyEndpoint { upstream: upstream.name.clone() }
            } else {
                ProxyError::Connect { endpoint: endpoint.addr.clone(), source: e.into() }
            };
            (UpstreamOutcome::ConnectError, proxy_error, true)
        }
        TryError::Exchange(e) => (
            UpstreamOutcome::ProtocolError,
            ProxyError::Upstream { endpoint: endpoint.addr.clone(), source: e.into() },
            false,
        ),
        TryError::Timeout(after) => (UpstreamOutcome::Timeout, ProxyError::Timeout { after }, false),
    }
}

/// True when a try failed because the request body the proxy was sending (the downstream's)
/// yielded an error, rather than because of the endpoint.
fn is_downstream_body_error(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            return hyper_error.is_user();
        }
        source = cause.source();
    }
    false
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
