//! One connection of a load test: connect, then request after request until the deadline.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header::HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    time::{Instant, sleep, timeout_at},
};

use super::target::Target;

/// Highest latency the histogram holds, in microseconds (60 s); slower answers count as 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Pause after a failed connect, so that a target that is down is not hammered in a spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// The request template and target every connection of a run shares.
#[derive(Debug)]
pub struct Shared {
    target: Target,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

impl Shared {
    /// Prepares the request template: `Host` first, then `headers` in order.
    pub fn new(target: Target, method: Method, headers: Vec<(HeaderName, HeaderValue)>, body: Bytes) -> Self {
        let mut map = HeaderMap::with_capacity(headers.len() + 1);
        map.insert(HOST, target.host().clone());
        for (name, value) in headers {
            map.append(name, value);
        }
        Self { target, method, headers: map, body }
    }

    /// The target requests go to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.next_path();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// When recording starts and when the run ends.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// End of the warm-up: answers completed from here on are recorded.
    pub measure_from: Instant,
    /// End of the run: requests still in flight are abandoned, not counted.
    pub end: Instant,
}

/// What one connection (or, merged, a whole run) saw during the measured phase.
#[derive(Debug)]
pub struct ConnectionStats {
    /// Latency of every completed response, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Responses whose status was neither 2xx nor 3xx (also in `latency_us`).
    pub status_errors: u64,
    /// Of `status_errors`, the `429 Too Many Requests` answers: refused by a rate limit.
    pub limited: u64,
    /// Failed connects, resets and malformed responses.
    pub transport_errors: u64,
    /// Response body bytes read.
    pub body_bytes: u64,
}

impl ConnectionStats {
    /// Empty counts.
    pub fn new() -> Self {
        let latency_us =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid");
        Self { latency_us, status_errors: 0, limited: 0, transport_errors: 0, body_bytes: 0 }
    }

    /// Adds another connection's counts to these.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms share the bounds set in `new`, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.status_errors += other.status_errors;
        self.limited += other.limited;
        self.transport_errors += other.transport_errors;
        self.body_bytes += other.body_bytes;
    }

    /// Number of completed responses.
    pub fn responses(&self) -> u64 {
        self.latency_us.len()
    }
}

impl Default for ConnectionStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs one connection until `phases.end`: connects (again after any failure), then sends
/// requests one at a time, reading every body to its end.
pub async fn drive(shared: Arc<Shared>, phases: Phases) -> ConnectionStats {
    let mut stats = ConnectionStats::new();
    'connection: loop {
        let mut sender = match timeout_at(phases.end, connect(shared.target.addr())).await {
            Err(_deadline) => break,
            Ok(Ok(sender)) => sender,
            Ok(Err(_)) => {
                if Instant::now() >= phases.measure_from {
                    stats.transport_errors += 1;
                }
                sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        loop {
            // The upstream may close a keep-alive connection after an answer: reconnect
            // without counting an error.
            if sender.ready().await.is_err() {
                continue 'connection;
            }
            let request = shared.request();
            let started = Instant::now();
            let outcome = match timeout_at(phases.end, exchange(&mut sender, request)).await {
                Err(_deadline) => break 'connection,
                Ok(outcome) => outcome,
            };
            let finished = Instant::now();
            if finished < phases.measure_from {
                if outcome.is_err() {
                    continue 'connection;
                }
                continue;
            }
            match outcome {
                Ok((status, body_bytes)) => {
                    let micros = u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX);
                    stats.latency_us.saturating_record(micros.max(1));
                    stats.body_bytes += body_bytes;
                    if !(status.is_success() || status.is_redirection()) {
                        stats.status_errors += 1;
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        stats.limited += 1;
                    }
                }
                Err(_) => {
                    stats.transport_errors += 1;
                    continue 'connection;
                }
            }
        }
    }
    stats
}

/// Opens a keep-alive HTTP/1.1 connection with `TCP_NODELAY`, driven by its own task.
async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Its errors reach the request that was in flight; nothing else to report.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response body; returns the status and body length.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, u64), hyper::Error> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok((status, bytes))
}
