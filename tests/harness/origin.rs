//! [`FakeOrigin`]: a real HTTP/1.1 server on `127.0.0.1:0` that answers by path and records
//! every request it saw, for assertions on what reached the origin.
//!
//! ```no_run
//! # async fn demo() {
//! use accel_e2e::{FakeOrigin, ms};
//! let origin = FakeOrigin::new()
//!     .route("/a", "hi")
//!     .route("/slow", "late").latency(ms(200))
//!     .route("/down", "oops").status(503)
//!     .start()
//!     .await;
//! # }
//! ```
//!
//! Modifiers (`status`, `header`, `latency`, `body_stream`, `handler`, `reset`) apply to the
//! route added last. A route ending in `*` matches by prefix. Unknown paths get `404`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::client::{BoxError, TestBody, body};

/// What a handler gets: the request with its body counted as the origin reads it.
pub type OriginRequest = Request<RequestBody>;

/// What a handler answers.
pub type OriginResponse = Response<TestBody>;

type Handler =
    Arc<dyn Fn(OriginRequest) -> Pin<Box<dyn Future<Output = OriginResponse> + Send>> + Send + Sync>;

/// How one route answers.
#[derive(Clone)]
struct Answer {
    path: String,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    latency: Duration,
    stream: Option<(Vec<Bytes>, Duration)>,
    handler: Option<Handler>,
    reset: bool,
}

impl Answer {
    fn matches(&self, path: &str) -> bool {
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        }
    }
}

/// A fake origin, being described. [`FakeOrigin::start`] runs it.
#[derive(Clone, Default)]
pub struct FakeOrigin {
    routes: Vec<Answer>,
}

impl std::fmt::Debug for FakeOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|r| &r.path)).finish()
    }
}

impl FakeOrigin {
    /// An origin with no routes (every request gets 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `path` (exact, or a prefix when it ends in `*`) with `200` and `body`.
    pub fn route(mut self, path: &str, body: impl Into<Bytes>) -> Self {
        self.routes.push(Answer {
            path: path.to_owned(),
            status: StatusCode::OK,
            headers: Vec::new(),
            body: body.into(),
            latency: Duration::ZERO,
            stream: None,
            handler: None,
            reset: false,
        });
        self
    }

    fn last(&mut self) -> &mut Answer {
        self.routes.last_mut().expect("add a route before its modifiers")
    }

    /// The last route's status.
    pub fn status(mut self, status: u16) -> Self {
        self.last().status = StatusCode::from_u16(status).expect("a valid status");
        self
    }

    /// Adds a header to the last route's answer.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(value).expect("a valid header value");
        self.last().headers.push((name, value));
        self
    }

    /// The last route waits this long (after reading the request body) before answering.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.last().latency = latency;
        self
    }

    /// The last route answers with these chunks (chunked encoding), `delay` apart.
    pub fn body_stream(mut self, chunks: Vec<Bytes>, delay: Duration) -> Self {
        self.last().stream = Some((chunks, delay));
        self
    }

    /// The last route is answered by `handler`; status, headers and body modifiers do not
    /// apply to it. The handler may read the request body at its own pace.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(OriginRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = OriginResponse> + Send + 'static,
    {
        self.last().handler = Some(Arc::new(move |request| Box::pin(handler(request))));
        self
    }

    /// The last route waits for `gate` to open, without reading the request body, then
    /// answers `200` with `body`.
    pub fn gated(self, gate: &Gate, body: &'static str) -> Self {
        let gate = gate.clone();
        self.handler(move |_| {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                http::Response::new(crate::body::full(body))
            }
        })
    }

    /// The last route reads the request body, answers `200` at once with a body that sends
    /// `first`, then waits for `gate` to open before it sends `last` and ends: an answer that
    /// holds its connection (and the proxy's place at the endpoint) until the gate opens.
    pub fn held_body(self, gate: &Gate, first: &'static str, last: &'static str) -> Self {
        let gate = gate.clone();
        self.handler(move |request| {
            let gate = gate.clone();
            async move {
                let _ = request.into_body().drain().await;
                let (tx, body) = crate::body::channel();
                tokio::spawn(async move {
                    tx.send(first).await;
                    gate.wait().await;
                    tx.send(last).await;
                });
                http::Response::new(body)
            }
        })
    }

    /// The last route drops the connection without answering (the client sees a reset).
    pub fn reset(mut self) -> Self {
        self.last().reset = true;
        self
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(self) -> OriginHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake origin");
        let addr = listener.local_addr().expect("the fake origin's address");
        let shared = Arc::new(Shared {
            routes: self.routes,
            seen: Mutex::new(Vec::new()),
            accepted: Default::default(),
        });
        let handle = OriginHandle { addr, shared, running: Mutex::new(None) };
        handle.serve(listener);
        handle
    }
}

struct Shared {
    routes: Vec<Answer>,
    seen: Mutex<Vec<Record>>,
    /// TCP connections accepted, over the origin's whole life.
    accepted: std::sync::atomic::AtomicUsize,
}

struct Record {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Arc<BodyProgress>,
}

/// How much of a request body the origin has read.
#[derive(Debug, Default)]
pub struct BodyProgress {
    bytes: AtomicU64,
    complete: AtomicBool,
    failed: AtomicBool,
    trailers: Mutex<Option<HeaderMap>>,
}

/// One request as the origin saw it (a snapshot: the body counts are as of the call).
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Body bytes read so far.
    pub body_len: u64,
    /// The body reached its end.
    pub body_complete: bool,
    /// The body broke off with an error.
    pub body_failed: bool,
    /// Request trailers, once the body ended with them.
    pub trailers: Option<HeaderMap>,
}

impl SeenRequest {
    /// The path (without query).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect()
    }
}

struct Running {
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

/// A running fake origin.
pub struct OriginHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for OriginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl OriginHandle {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests seen for `path` (exact path, query ignored).
    pub fn hits(&self, path: &str) -> usize {
        self.lock_seen().iter().filter(|r| r.uri.path() == path).count()
    }

    /// Every request seen, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock_seen()
            .iter()
            .map(|r| SeenRequest {
                method: r.method.clone(),
                uri: r.uri.clone(),
                version: r.version,
                headers: r.headers.clone(),
                body_len: r.body.bytes.load(Ordering::SeqCst),
                body_complete: r.body.complete.load(Ordering::SeqCst),
                body_failed: r.body.failed.load(Ordering::SeqCst),
                trailers: r.body.trailers.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            })
            .collect()
    }

    /// The last request seen, if any.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.requests().pop()
    }

    /// TCP connections accepted so far (keep-alive shows as fewer connections than requests).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Number of requests seen, all paths.
    pub fn total_hits(&self) -> usize {
        self.lock_seen().len()
    }

    /// Kills the server: the listener closes (new connections are refused) and open
    /// connections are dropped mid-flight.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().unwrap_or_else(|e| e.into_inner()).take() {
            running.accept.abort();
            for connection in running.connections.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                connection.abort();
            }
        }
    }

    /// Serves again on the same port (after [`stop`](Self::stop)); what was seen is kept.
    pub async fn restart(&self) {
        self.stop();
        let listener = TcpListener::bind(self.addr).await.expect("rebind the fake origin's port");
        self.serve(listener);
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.shared.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let shared = self.shared.clone();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |request| {
                    let shared = shared.clone();
                    async move { answer(&shared, request).await }
                });
                let connection = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut tracked = tracked.lock().unwrap_or_else(|e| e.into_inner());
                tracked.retain(|c| !c.is_finished());
                tracked.push(connection.abort_handle());
            }
        })
        .abort_handle();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { accept, connections });
    }
}

impl Drop for OriginHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The error a `reset` route returns: hyper closes the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by the fake origin")
    }
}

impl std::error::Error for Reset {}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Result<OriginResponse, Reset> {
    let (parts, incoming) = request.into_parts();
    let progress = Arc::new(BodyProgress::default());
    shared.seen.lock().unwrap_or_else(|e| e.into_inner()).push(Record {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: progress.clone(),
    });
    let body = RequestBody { inner: incoming, progress };
    let Some(route) = shared.routes.iter().find(|r| r.matches(parts.uri.path())).cloned() else {
        let _ = body.collect().await;
        let mut response = Response::new(body::full("no such route on the fake origin\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    if let Some(handler) = &route.handler {
        return Ok(handler(Request::from_parts(parts, body)).await);
    }
    // Read the whole request body first, as most origins do.
    let read = body.collect().await;
    if route.reset || read.is_err() {
        return Err(Reset);
    }
    if !route.latency.is_zero() {
        tokio::time::sleep(route.latency).await;
    }
    let body = match route.stream.clone() {
        None => body::full(route.body.clone()),
        Some((chunks, delay)) => {
            let (tx, body) = body::channel();
            tokio::spawn(async move {
                for (i, chunk) in chunks.into_iter().enumerate() {
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if !tx.send(chunk).await {
                        return;
                    }
                }
            });
            body
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = route.status;
    for (name, value) in route.headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// A request body as the origin reads it, counted into the request's record.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    progress: Arc<BodyProgress>,
}

impl RequestBody {
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.progress.bytes.load(Ordering::SeqCst)
    }

    /// Reads and discards the rest of the body; its length, or the error it broke off with.
    pub async fn drain(mut self) -> Result<u64, BoxError> {
        while let Some(frame) = self.frame().await {
            frame?;
        }
        Ok(self.bytes_read())
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.progress.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
                if let Some(trailers) = frame.trailers_ref() {
                    *self.progress.trailers.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(trailers.clone());
                }
                if self.inner.is_end_stream() {
                    self.progress.complete.store(true, Ordering::SeqCst);
                }
            }
            Poll::Ready(Some(Err(_))) => self.progress.failed.store(true, Ordering::SeqCst),
            Poll::Ready(None) => self.progress.complete.store(true, Ordering::SeqCst),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gate a handler waits at until the test opens it; once open it stays open.
#[derive(Debug, Clone)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self { open: Arc::new(watch::channel(false).0) }
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Opens the gate for every waiter, present and future.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}
