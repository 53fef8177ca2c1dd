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
pub mod trace;
pub mod upgrade;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use self::headers::{ForwardedConfig, Forwarding};
use self::trace::RequestId;
use crate::body::{Body, BodySlot, BodyTimedOut, BodyTooLarge, Upload};
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::route::{Route, Timeouts};
use crate::upstream::UpstreamOutcome;
use crate::upstream::{Endpoint, EndpointAddr, InFlight, NoPick, Pick, SendError, Upstream};

/// The request body for the tries: nothing, the downstream body in a replayable slot, or a
/// body read whole (a query the cache keys on its body), sent as it came.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Stream(BodySlot),
    Buffered(Bytes),
}

impl RequestBody {
    /// Wraps a downstream body; a client that pauses it for `read_timeout` gets a 408, one
    /// that sends more than `limit` bytes a 413 (and the upstream a request cut short).
    pub fn new(body: Incoming, read_timeout: Duration, limit: u64) -> Self {
        if http_body::Body::is_end_stream(&body) {
            Self::Empty
        } else {
            Self::Stream(BodySlot::new(body, read_timeout, limit))
        }
    }

    /// Reads a downstream body whole, for a query the cache keys on its body (its declared
    /// length is within the route's `cache.max_body_key`, so it is small). A client that
    /// pauses it for `read_timeout` gets a 408; one that breaks it off, a 400. Trailers are
    /// not kept.
    pub async fn buffer(mut body: Incoming, read_timeout: Duration) -> Result<Self, ProxyError> {
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
                Err(_) => return Err(ProxyError::ClientTimeout { after: read_timeout }),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(ProxyError::BadRequest { reason: "request body broke off" }),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                chunks.push(data);
            }
        }
        Ok(match chunks.len() {
            0 => Self::Empty,
            // The usual case: one frame, kept without a copy.
            1 => Self::Buffered(chunks.swap_remove(0)),
            _ => Self::Buffered(chunks.concat().into()),
        })
    }

    /// The body's bytes when it was read whole (empty for no body), or `None` while it
    /// streams.
    pub fn buffered(&self) -> Option<&[u8]> {
        match self {
            Self::Empty => Some(&[]),
            Self::Buffered(bytes) => Some(bytes),
            Self::Stream(_) => None,
        }
    }

    /// The upload's progress, for a body that streams.
    fn upload(&self) -> Option<&Upload> {
        match self {
            Self::Empty | Self::Buffered(_) => None,
            Self::Stream(slot) => Some(slot.upload()),
        }
    }

    fn for_try(&self) -> Body {
        match self {
            Self::Empty => Body::Empty,
            Self::Stream(slot) => slot.body(),
            Self::Buffered(bytes) => Body::full(bytes.clone()),
        }
    }

    /// True while no try has taken the body (a buffered one is never used up).
    fn is_unsent(&self) -> bool {
        match self {
            Self::Empty | Self::Buffered(_) => true,
            Self::Stream(slot) => slot.is_unsent(),
        }
    }
}

/// One exchange with the route's upstream, as the pipeline and the cache's background
/// refresh both make it: forwarding headers on the way up (`policy`, this `downstream`, the
/// request's `id`), `prepare` for the stage that asks (the cache's validators), the tries,
/// and the response headers set for the client on the way back. `parts` become the upstream
/// request's head in place (borrowed, not moved, through the tries), the forwarding fields
/// written after them. `served` says which endpoint answered (for the log lines and errors
/// that name it) and how long the tries took.
#[allow(clippy::too_many_arguments)] // the request, where it is going, and who asks
pub async fn exchange(
    route: &Route,
    downstream: &Downstream,
    policy: &ForwardedConfig,
    id: Option<&RequestId>,
    parts: &mut Parts,
    body: RequestBody,
    prepare: impl FnOnce(&mut HeaderMap),
    served: &mut Served,
) -> Result<Response<Body>, ProxyError> {
    let authority = parts.uri.authority();
    let forwarding =
        headers::to_upstream(&mut parts.headers, parts.version, authority, downstream, policy, id);
    prepare(&mut parts.headers);
    let mut response = send(route, parts, &forwarding, body, served).await?;
    // A switch keeps the headers that name it.
    let switched = (response.status() == http::StatusCode::SWITCHING_PROTOCOLS)
        .then(|| response.headers().get(http::header::UPGRADE).cloned())
        .flatten();
    headers::to_downstream(response.headers_mut(), policy);
    if let Some(protocol) = switched {
        upgrade::ask(response.headers_mut(), &protocol);
    }
    Ok(response)
}

/// Sends `parts` + `body` upstream for `route`, with the `forwarding` fields after the
/// request's own. `parts.headers` and `forwarding` come from [`headers::to_upstream`].
/// `served` is filled in as the tries go.
pub async fn send(
    route: &Route,
    parts: &mut Parts,
    forwarding: &Forwarding,
    body: RequestBody,
    served: &mut Served,
) -> Result<Response<Body>, ProxyError> {
    tries(route, parts, forwarding, body, served).await
}

/// What the tries of an exchange leave for the answer's record.
#[derive(Debug, Default)]
pub struct Served {
    /// The endpoint that answered, when one did.
    pub endpoint: Option<EndpointAddr>,
    /// From the first try's start to the last one's end; `None` when no try was made.
    pub upstream: Option<Duration>,
}

enum TryError {
    Connect(crate::body::BoxError),
    Exchange(crate::h1::Error),
    Timeout(Duration),
}

/// The tries, until one answers or the route's total timeout passes. Each try runs under one
/// timer: the response timeout, cut short by the total timeout.
async fn tries(
    route: &Route,
    parts: &mut Parts,
    forwarding: &Forwarding,
    body: RequestBody,
    served: &mut Served,
) -> Result<Response<Body>, ProxyError> {
    let upstream = &route.upstream;
    let policy = &route.rule.retry;
    let idempotent = is_idempotent(&parts.method);
    // An HTTP/1.0 client may omit `Host`, which HTTP/1.1 requires: each try names its endpoint.
    let client_host = forwarding.has_host();
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    // One clock read as a try starts (its timers, the endpoints' state, its connection's idle
    // time) and one as it ends (its duration, and the tries' so far).
    let first = Instant::now();
    let mut now = first;
    let mut deadline = now + route.rule.timeouts.total;

    for attempt in 1..=policy.attempts.get() {
        if attempt > 1 {
            now = Instant::now();
        }
        if now >= deadline {
            last_error = Some(ProxyError::Timeout { after: route.rule.timeouts.total });
            break;
        }
        let (pick, guard) = match take_place(upstream, &tried, now) {
            Ok(taken) => taken,
            Err(NoPick::Full) => {
                // An earlier try's failure says more than the capacity that prevents a retry.
                last_error
                    .get_or_insert_with(|| ProxyError::UpstreamFull { upstream: upstream.name.clone() });
                break;
            }
            Err(NoPick::AllTried) => break,
        };
        let endpoint = pick.endpoint;
        tried.push(endpoint.index);
        let last_try = attempt == policy.attempts.get() || tried.len() == upstream.endpoints.len();

        if !client_host {
            parts.headers.insert(http::header::HOST, endpoint.addr.host_header());
        }

        let started = now;
        let timeouts = &route.rule.timeouts;
        let upload = body.upload();
        // Without an upload, the connection times the try with its own timer, kept from one
        // exchange to the next; a try with an upload is timed from the upload's end (below).
        let (ends, timed_out) = try_deadline(started, deadline, timeouts);
        // Every try sends the same head, not a copy: the connection writes it as HTTP/1.1 with
        // the origin-form target (the endpoint is reached by the connection, not the target).
        // Boxed: the exchange's state (the connection's write and read of a whole request) is
        // large, and every future that holds it inline (an upload's timer, the tries', the
        // pipeline's, hyper's in-flight request) would be copied whole at each move. The box
        // is allocated before the future is made, so that the optimizer can build it there
        // (`Box::pin(future)` built it, then copied it in).
        let slot = Box::new_uninit();
        let exchange = Box::into_pin(Box::write(
            slot,
            endpoint.connections.send_parts(
                parts,
                forwarding.fields(),
                body.for_try(),
                route.added_fields,
                now,
                upload.is_none().then_some(ends),
            ),
        ));
        let timed = match upload {
            None => Ok(exchange.await),
            Some(upload) => {
                let timed = after_upload(exchange, upload, deadline, timeouts).await;
                // The tries' deadline does not count the upload either.
                deadline += upload.streamed();
                timed
            }
        };
        let ended = Instant::now();
        served.upstream = Some(ended - first);
        let result = match timed {
            Ok(Ok(exchange)) => Ok(exchange),
            Ok(Err(SendError::Connect(e))) => Err(TryError::Connect(e)),
            Ok(Err(SendError::Exchange(e))) if e.is_body() => {
                // The client's body broke off (it went away or paused too long mid-upload):
                // the client failed, not the endpoint, so no outcome, no ejection, no retry.
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "request body broke off");
                if let Some(after) = body_timeout(&e) {
                    return Err(ProxyError::ClientTimeout { after });
                }
                if let Some(BodyTooLarge(limit)) = body_error::<BodyTooLarge>(&e) {
                    return Err(ProxyError::BodyTooLarge { limit: *limit });
                }
                return Err(ProxyError::BadRequest { reason: "request body broke off" });
            }
            Ok(Err(SendError::Exchange(e))) => Err(TryError::Exchange(e)),
            Ok(Err(SendError::TimedOut)) => Err(TryError::Timeout(timed_out)),
            Err(after) => Err(TryError::Timeout(after)),
        };
        endpoint.metrics.duration.observe((ended - started).as_secs_f64());
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
                served.endpoint = Some(endpoint.addr.clone());
                return Ok(response.map(|incoming| Body::upstream(incoming, guard.into_exchange())));
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

/// Picks an endpoint and takes a place on it (see `max_connections_per_endpoint`).
fn take_place(upstream: &Upstream, tried: &[usize], now: Instant) -> Result<(Pick, InFlight), NoPick> {
    let cap = upstream.config.max_connections_per_endpoint;
    // Another request may take an endpoint's last place between the pick and the count: the
    // endpoint then reads as full and the pick moves on. Only a multi-threaded runtime races
    // like that, and only a few times in a row.
    for _ in 0..8 {
        let pick = upstream.pick(tried, now)?;
        if let Some(guard) = InFlight::try_new(pick.endpoint.clone(), cap) {
            return Ok((pick, guard));
        }
    }
    Err(NoPick::Full)
}

/// When a try started at `started` ends: its response timeout, cut short by the tries'
/// `deadline`; and the timeout that ends it then.
fn try_deadline(started: Instant, deadline: Instant, timeouts: &Timeouts) -> (Instant, Duration) {
    let response_deadline = started + timeouts.response;
    // The route's total timeout ends this try, and the tries.
    if deadline < response_deadline {
        (deadline, timeouts.total)
    } else {
        (response_deadline, timeouts.response)
    }
}

/// Runs `exchange` under one timer: the response timeout from `started`, cut short by the
/// tries' `deadline`. Elapsed: the timeout that ran out.
async fn within<F: Future>(
    exchange: F,
    started: Instant,
    deadline: Instant,
    timeouts: &Timeouts,
) -> Result<F::Output, Duration> {
    let (ends, timed_out) = try_deadline(started, deadline, timeouts);
    tokio::time::timeout_at(ends, exchange).await.map_err(|_| timed_out)
}

/// Runs `exchange` while the request body streams up, then under the response timeout from the
/// moment the body has gone (and the tries' `deadline`, moved on by the time the body took).
/// While it streams, the endpoint must keep taking it: a whole response timeout in which it
/// takes no frame, while the client is not the one keeping the body waiting, is the endpoint's
/// timeout. A client that keeps the body waiting is left to the body's read timeout.
async fn after_upload<F: Future>(
    exchange: F,
    upload: &Upload,
    deadline: Instant,
    timeouts: &Timeouts,
) -> Result<F::Output, Duration> {
    let response = timeouts.response;
    let mut exchange = std::pin::pin!(exchange);
    // A try that follows a slow one starts its own clock.
    let started = Instant::now();
    loop {
        let progress = upload.last_progress().max(started);
        let check = if upload.waiting_on_client() { Instant::now() + response } else { progress + response };
        tokio::select! {
            biased;
            output = &mut exchange => return Ok(output),
            () = upload.ended() => break,
            () = tokio::time::sleep_until(check) => {
                let progress = upload.last_progress().max(started);
                if !upload.waiting_on_client() && Instant::now() >= progress + response {
                    return Err(response);
                }
            }
        }
    }
    within(exchange, Instant::now(), deadline + upload.streamed(), timeouts).await
}

/// How long the client kept its body waiting, when that is why the exchange failed.
fn body_timeout(error: &crate::h1::Error) -> Option<Duration> {
    body_error::<BodyTimedOut>(error).map(|BodyTimedOut(after)| *after)
}

/// The request body's error of type `E` that made the exchange fail, if that is why.
fn body_error<E: std::error::Error + 'static>(error: &crate::h1::Error) -> Option<&E> {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        source = error.source();
    }
    None
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

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::{Instant, sleep};

    use super::*;

    const RESPONSE: Duration = Duration::from_millis(100);
    const TIMEOUTS: Timeouts = Timeouts { response: RESPONSE, total: Duration::from_secs(10) };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An exchange that answers `after` from now.
    async fn answer_after(after: Duration) -> &'static str {
        sleep(after).await;
        "answer"
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_keeps_moving_is_timed_from_its_end() {
        let upload = Arc::new(Upload::new());
        let uploader = upload.clone();
        // Eleven frames 60 ms apart, then the end at 660 ms: over six response timeouts.
        tokio::spawn(async move {
            uploader.take();
            for _ in 0..=10 {
                uploader.frame();
                sleep(ms(60)).await;
            }
            uploader.finish();
        });

        let started = Instant::now();
        let outcome = after_upload(answer_after(ms(700)), &upload, started + TIMEOUTS.total, &TIMEOUTS).await;

        assert_eq!(outcome, Ok("answer"), "the answer came 40 ms after the body's end");
        assert_eq!(upload.streamed(), ms(660));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_stops_taking_the_body_times_out_one_response_timeout_later() {
        let upload = Arc::new(Upload::new());
        let uploader = upload.clone();
        tokio::spawn(async move {
            uploader.take();
            for _ in 0..5 {
                uploader.frame();
                sleep(ms(50)).await;
            }
            // The last frame went at 200 ms; the endpoint asks for no more.
        });

        let started = Instant::now();
        let outcome =
            after_upload(std::future::pending::<()>(), &upload, started + TIMEOUTS.total, &TIMEOUTS).await;

        assert_eq!(outcome, Err(RESPONSE));
        assert_eq!(started.elapsed(), ms(300), "one response timeout after the last frame");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_the_body_waiting_is_not_the_endpoints_timeout() {
        let upload = Arc::new(Upload::new());
        let uploader = upload.clone();
        tokio::spawn(async move {
            uploader.take();
            uploader.frame();
            // The client sends nothing for five response timeouts, then the rest.
            uploader.wait_on_client();
            sleep(ms(500)).await;
            uploader.frame();
            uploader.finish();
        });

        let started = Instant::now();
        let outcome = after_upload(answer_after(ms(550)), &upload, started + TIMEOUTS.total, &TIMEOUTS).await;

        assert_eq!(outcome, Ok("answer"));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_body_the_response_timeout_runs() {
        let upload = Arc::new(Upload::new());
        upload.take();
        upload.frame();
        upload.finish();

        let started = Instant::now();
        let outcome =
            after_upload(std::future::pending::<()>(), &upload, started + TIMEOUTS.total, &TIMEOUTS).await;

        assert_eq!(outcome, Err(RESPONSE));
        assert_eq!(started.elapsed(), RESPONSE);
        assert_eq!(upload.streamed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_upload_is_counted_from_when_a_try_takes_the_body() {
        let upload = Upload::new();
        sleep(ms(100)).await; // a connect, say
        upload.take();
        sleep(ms(300)).await;
        assert_eq!(upload.streamed(), ms(300), "still streaming: up to now");
        upload.finish();
        sleep(ms(50)).await;
        upload.finish();
        assert_eq!(upload.streamed(), ms(300), "the first end counts");
    }
}
