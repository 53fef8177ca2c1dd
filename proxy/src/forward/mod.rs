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
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Body, BodySlot};
use crate::error::ProxyError;
use crate::metrics::UpstreamOutcome;
use crate::route::Route;
use crate::upstream::{Endpoint, InFlight, SendError};

/// Which endpoint answered: put in the response's extensions for the access log, when it is on.
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
/// for the upstream ([`headers::to_upstream`]). With `served_by`, the response carries
/// [`ServedBy`].
pub async fn send(
    route: &Route,
    parts: Parts,
    body: RequestBody,
    served_by: bool,
) -> Result<Response<Body>, ProxyError> {
    tries(route, parts, body, Instant::now() + route.rule.timeouts.total, served_by).await
}

enum TryError {
    Connect(crate::body::BoxError),
    Exchange(hyper::Error),
    Timeout(Duration),
}

/// The tries, until one answers or `deadline` (the route's total timeout) passes. Each try
/// runs under one timer: the response timeout, cut short by the deadline.
async fn tries(
    route: &Route,
    mut parts: Parts,
    body: RequestBody,
    deadline: Instant,
    served_by: bool,
) -> Result<Response<Body>, ProxyError> {
    let upstream = &route.upstream;
    let policy = &route.rule.retry;
    let idempotent = is_idempotent(&parts.method);
    // Origin-form (`/path?query`): the endpoint is reached by the connection, not the target.
    let target = origin_form(&parts.uri);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;

    for attempt in 1..=policy.attempts.get() {
        let now = Instant::now();
        if now >= deadline {
            last_error = Some(ProxyError::Timeout { after: route.rule.timeouts.total });
            break;
        }
        let Some(pick) = upstream.pick(&tried, now) else { break };
        let endpoint = pick.endpoint;
        tried.push(endpoint.index);
        let last_try = attempt == policy.attempts.get() || tried.len() == upstream.endpoints.len();

        let mut request = Request::new(body.for_try());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = target.clone();
        // The last try takes the headers; earlier ones keep them for the next.
        *request.headers_mut() =
            if last_try { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
        *request.version_mut() = http::Version::HTTP_11;
        if !request.headers().contains_key(http::header::HOST) {
            // An HTTP/1.0 client may omit it; HTTP/1.1 requires it.
            request.headers_mut().insert(http::header::HOST, endpoint.addr.host_header());
        }

        let guard = InFlight::new(endpoint.clone());
        let started = Instant::now();
        let response_deadline = started + route.rule.timeouts.response;
        // The route's total timeout ends this try, and the tries.
        let cut_short = deadline < response_deadline;
        let try_deadline = if cut_short { deadline } else { response_deadline };
        let result = match tokio::time::timeout_at(try_deadline, endpoint.connections.send(request)).await {
            Ok(Ok(exchange)) => Ok(exchange),
            Ok(Err(SendError::Connect(e))) => Err(TryError::Connect(e)),
            Ok(Err(SendError::Exchange(e))) if e.is_user() => {
                // The client's body broke off (it went away mid-upload): the client failed,
                // not the endpoint, so no outcome, no ejection, no retry.
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "request body broke off");
                return Err(ProxyError::BadRequest { reason: "request body broke off" });
            }
            Ok(Err(SendError::Exchange(e))) => Err(TryError::Exchange(e)),
            Err(_) if cut_short => Err(TryError::Timeout(route.rule.timeouts.total)),
            Err(_) => Err(TryError::Timeout(route.rule.timeouts.response)),
        };
        endpoint.metrics.duration.observe(started.elapsed().as_secs_f64());
        let others_available =
            upstream.endpoints.iter().any(|e| e.index != endpoint.index && e.is_available(now));

        match result {
            Ok((response, lease)) => {
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
                let mut response = response.map(|incoming| Body::upstream(incoming, guard, lease));
                if served_by {
                    response.extensions_mut().insert(ServedBy(endpoint.addr.clone()));
                }
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
                ProxyError::Connect { endpoint: endpoint.addr.clone(), source: e }
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

/// The request target as sent to an endpoint: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return uri.clone();
    }
    let path_and_query = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
