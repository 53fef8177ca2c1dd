//! Forward: send the request to an endpoint of the route's upstream and return its response
//! headers, with the body streaming behind them.
//!
//! Each try picks the least-loaded available endpoint not tried yet. A refused connection is
//! retried on another endpoint (the request was not sent); for idempotent requests whose body
//! was not sent, so is a timeout, a broken connection, or a status the route lists. All tries
//! share the route's total timeout. Failures feed passive ejection.
//!
//! The timers count from the end of the request: while a client's body streams up, a slow
//! client is bounded by its read timeout (408, not the endpoint's fault) and the endpoint only
//! has to keep taking the bytes; the response timeout starts once the last byte has gone.

pub mod headers;

use std::future::Future;
use std::time::Duration;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Body, BodySlot, BodyTimedOut, Upload};
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
    /// Wraps a downstream body; a client that pauses it for `read_timeout` gets a 408.
    pub fn new(body: Incoming, read_timeout: Duration) -> Self {
        if http_body::Body::is_end_stream(&body) {
            Self::Empty
        } else {
            Self::Stream(BodySlot::new(body, read_timeout))
        }
    }

    /// The upload's progress, for a body that streams.
    fn upload(&self) -> Option<&Upload> {
        match self {
            Self::Empty => None,
            Self::Stream(slot) => Some(slot.upload()),
        }
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
    mut deadline: Instant,
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
        let Some(pick) = upstream.pick(&tried, now) else {
            // An earlier try's failure says more than the capacity that prevents a retry.
            if last_error.is_none() && upstream.is_full(&tried) {
                last_error = Some(ProxyError::UpstreamFull { upstream: upstream.name.clone() });
            }
            break;
        };
        let endpoint = pick.endpoint;
        tried.push(endpoint.index);
        let last_try = attempt == policy.attempts.get() || tried.len() == upstream.endpoints.len();
        let cap = upstream.config.max_connections_per_endpoint;
        let Some(guard) = InFlight::within(endpoint.clone(), cap) else {
            // Another request took its last place since the pick.
            last_error.get_or_insert_with(|| ProxyError::UpstreamFull { upstream: upstream.name.clone() });
            continue;
        };

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

        let started = Instant::now();
        let exchange = endpoint.connections.send(request);
        let timed = match body.upload() {
            None => within(exchange, started, deadline, route).await,
            Some(upload) => {
                let (timed, uploading) = after_upload(exchange, upload, deadline, route).await;
                // The tries' deadline does not count the upload either.
                deadline += uploading;
                timed
            }
        };
        let result = match timed {
            Ok(Ok(exchange)) => Ok(exchange),
            Ok(Err(SendError::Connect(e))) => Err(TryError::Connect(e)),
            Ok(Err(SendError::Exchange(e))) if e.is_user() => {
                // The client's body broke off (it went away or paused too long mid-upload):
                // the client failed, not the endpoint, so no outcome, no ejection, no retry.
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "request body broke off");
                if is_body_timeout(&e) {
                    return Err(ProxyError::ClientTimeout);
                }
                return Err(ProxyError::BadRequest { reason: "request body broke off" });
            }
            Ok(Err(SendError::Exchange(e))) => Err(TryError::Exchange(e)),
            Err(after) => Err(TryError::Timeout(after)),
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
    let error =
        last_error.unwrap_or_else(|| ProxyError::NoHealthyEndpoint { upstream: upstream.name.clone() });
    if matches!(error, ProxyError::UpstreamFull { .. }) {
        upstream.overflow.inc();
    }
    Err(error)
}

/// Runs `exchange` under one timer: the response timeout from `started`, cut short by the
/// tries' `deadline`. Elapsed: the timeout that ran out.
async fn within<F: Future>(
    exchange: F,
    started: Instant,
    deadline: Instant,
    route: &Route,
) -> Result<F::Output, Duration> {
    let timeouts = &route.rule.timeouts;
    let response_deadline = started + timeouts.response;
    // The route's total timeout ends this try, and the tries.
    let cut_short = deadline < response_deadline;
    let try_deadline = if cut_short { deadline } else { response_deadline };
    tokio::time::timeout_at(try_deadline, exchange)
        .await
        .map_err(|_| if cut_short { timeouts.total } else { timeouts.response })
}

/// Runs `exchange` while the request body streams up, then under the response timeout from the
/// moment the body has gone. While it streams, the endpoint must keep taking it: a whole
/// response timeout without a frame taken, while the client had one ready, is the endpoint's
/// timeout. A client that keeps the body waiting is left to the body's read timeout. Returns the
/// outcome and how long the upload took (the time the timers did not count, `deadline` included).
async fn after_upload<F: Future>(
    exchange: F,
    upload: &Upload,
    deadline: Instant,
    route: &Route,
) -> (Result<F::Output, Duration>, Duration) {
    let response = route.rule.timeouts.response;
    let uploading = Instant::now();
    let mut exchange = std::pin::pin!(exchange);
    let mut frames = upload.frames();
    loop {
        tokio::select! {
            biased;
            output = &mut exchange => return (Ok(output), uploading.elapsed()),
            () = upload.ended() => break,
            () = tokio::time::sleep(response) => {
                let now = upload.frames();
                if now == frames && !upload.waiting_on_client() {
                    return (Err(response), uploading.elapsed());
                }
                frames = now;
            }
        }
    }
    let took = uploading.elapsed();
    (within(exchange, Instant::now(), deadline + took, route).await, took)
}

/// True when the exchange failed because the client paused its body too long.
fn is_body_timeout(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        source = error.source();
    }
    false
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
