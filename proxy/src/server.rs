//! Accept: the client-facing listener. HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port, told apart by the connection's first bytes; a bound on open connections (in all and
//! per client address), `TCP_NODELAY`, every HTTP/1 head checked on the raw bytes
//! ([`crate::framing`]) before hyper parses it, explicit HTTP/2 limits, and graceful shutdown
//! that stops accepting, lets in-flight requests finish, and gives up after the drain deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::body::{Body, Guarded};
use crate::config::Limits;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::framing::{Answering, FramedIo, H2Abuse, Reason, Rejections, Verdict};
use crate::limit::concurrency::shrink_sparse;
use crate::pipeline;
use crate::proxy::Proxy;

/// Serves clients on `listener` until `shutdown` completes, then drains. With `tls`, every
/// connection is a TLS handshake first (bounded by the header read timeout).
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let builders = Arc::new(Builders::new(&limits));
    let drain = Arc::new(Drain::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    let per_client = limits.max_connections_per_client.map(|cap| Arc::new(ClientConnections::new(cap)));
    let rejections = Rejections::register(&proxy.metrics);
    // Every connection's task, so that the drain deadline can end the ones still open.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // per client: over its cap, the connection is closed before anything is read.
        let client_slot = match &per_client {
            None => None,
            Some(counts) => match counts.open(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    rejections.record(Reason::ClientConnections, peer);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let downstream = Arc::new(Downstream::new(
            peer,
            tls.is_some(),
            proxy.pipeline.running.load().clients.trusted_proxies(),
        ));
        let open = OpenConnection::new(&proxy);
        let verdict = Arc::new(Verdict::default());
        let service = {
            let (proxy, verdict, rejections) = (proxy.clone(), verdict.clone(), rejections.clone());
            service_fn(move |request| {
                // framing: a head refused on the raw bytes is answered here, in its turn.
                let refused = verdict.next_request();
                let (proxy, downstream, rejections) = (proxy.clone(), downstream.clone(), rejections.clone());
                let verdict = verdict.clone();
                // Boxed for the request's life: the pipeline's state is several KiB, and hyper
                // keeps the slot of a connection's request in flight for as long as the
                // connection is open, so an idle connection held that much; now the slot holds
                // a pointer. The box is allocated before the future is made, so that the
                // optimizer can build it there; `Box::pin(future)` built it, then copied it in
                // (benches/README.md, "Memory").
                let slot = Box::new_uninit();
                let answer = Box::write(slot, async move {
                    // Counted once the answer is out: the keep-alive idle time starts then.
                    let answering = Answering::new(verdict.clone());
                    if let Some(reason) = refused {
                        return Ok::<_, Infallible>(
                            refusal(reason).map(|body| Guarded::new(body, answering)),
                        );
                    }
                    let response = match absolute_form(request) {
                        Ok(request) => pipeline::handle(&proxy.pipeline, &downstream, request).await,
                        Err(error) => error.into_response(),
                    };
                    if let Some(reason) = response.extensions().get::<Reason>() {
                        rejections.record(*reason, downstream.peer);
                    }
                    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        verdict.switch();
                    }
                    Ok(response.map(|body| Guarded::new(body, answering)))
                });
                Box::into_pin(answer)
            })
        };
        let (builders, drain) = (builders.clone(), drain.clone());
        let tls = tls.clone();
        let (handshake_timeout, head) = (limits.header_read_timeout, limits.head);
        let (rejections, h2_ends) = (rejections.clone(), rejections.clone());
        while connections.try_join_next().is_some() {}
        // What ends with the connection: its slots, and the log line and the h2 abuse count
        // for how it ended.
        let ended = move |result: Result<(), hyper::Error>| {
            drop((permit, client_slot, open));
            if let Err(e) = result {
                // h2 ended it for the client's frames (rapid reset, CONTINUATION flood, …).
                if let Some((abuse, goaway)) = H2Abuse::of(&e) {
                    h2_ends.record_h2(abuse, goaway, peer);
                }
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        };
        match tls {
            None => {
                // Not an async block around `serve`: it would keep room for the captures it
                // was made from next to `serve`'s state, for the connection's life.
                let io = FramedIo::new(stream, false, head, handshake_timeout, verdict, rejections, peer);
                connections.spawn(serve(io, builders, service, drain).map(ended));
            }
            Some(acceptor) => {
                // A task of its own type: the handshake's and the TLS connection's state take
                // several KiB, which plain connections' tasks do not carry; a TLS task also
                // keeps room for its captures, as an async block does.
                connections.spawn(async move {
                    let Some(stream) = handshake(acceptor, stream, handshake_timeout, peer).await else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = FramedIo::new(stream, h2, head, handshake_timeout, verdict, rejections, peer);
                    ended(serve(io, builders, service, drain).await);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(deadline = ?limits.drain_timeout, "draining connections");
    drain.start();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drained).await.is_err() {
        tracing::warn!(open = connections.len(), "drain deadline passed; closing remaining connections");
    }
    // Past the deadline (or with every connection done): close what is left, so that no
    // connection outlives the server, also when the process goes on (tests, embedding).
    connections.shutdown().await;
}

/// The TLS handshake of a client connection, within `timeout`; `None` when it failed.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: std::time::Duration,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            None
        }
    }
}

/// hyper's builders, one per protocol, with every limit set explicitly.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    /// HTTP/1: the field count and a read buffer that holds the largest head; the head checks,
    /// the header read timeout and the keep-alive idle timeout are [`FramedIo`]'s.
    ///
    /// HTTP/2: concurrent streams; the header list size; and the rapid-reset bounds: streams
    /// reset by the client before the server accepted them (CVE-2023-44487) and streams the
    /// server had to reset for the client's errors (both end the connection with `GOAWAY` past
    /// the bound). CONTINUATION floods are the h2 crate's: from the header list size it derives
    /// a cap on CONTINUATION frames per header block (list size / frame size + 25%, at least 5;
    /// past it `GOAWAY ENHANCE_YOUR_CALM`), and a block it must keep decoding past the list
    /// size ends the connection (`GOAWAY COMPRESSION_ERROR`), so nothing is buffered without
    /// bound.
    fn new(limits: &Limits) -> Self {
        // hyper's default read buffer; larger only for a larger head limit.
        const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // `FramedIo` times heads and the keep-alive idle time (`header_read_timeout`) with
            // one timer a connection; hyper's is made and dropped for every request.
            .header_read_timeout(None)
            .max_headers(limits.head.max_headers)
            .max_buf_size(HYPER_MAX_BUF.max(limits.head.max_head + 16 * 1024));
        let h2 = limits.h2;
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_header_list_size(h2.max_header_list_size)
            .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(h2.max_local_error_reset_streams);
        Self { http1, http2 }
    }
}

/// Serves one client connection until it ends: HTTP/2 when its first bytes are the h2
/// preface (or TLS chose h2), HTTP/1.1 with upgrades otherwise; from the start of a drain,
/// hyper finishes what is in flight and closes.
///
/// Two steps chained, not one `async fn`: an async function keeps room for its arguments for
/// its whole life, so the room for the connection (`io`, `service`), moved into hyper's
/// connection after the first bytes, would be taken twice while the connection lasts.
/// Chained, the first step's state gives way to hyper's connection.
fn serve<T, S>(
    io: FramedIo<T>,
    builders: Arc<Builders>,
    service: S,
    drain: Arc<Drain>,
) -> impl Future<Output = Result<(), hyper::Error>> + Send
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Guarded<Body, Answering>, Error = Infallible> + Send,
    S::Future: Send,
    TokioExecutor: Http2ServerConnExec<S::Future, Guarded<Body, Answering>>,
{
    first_bytes(io, drain.clone()).then(move |sniffed| match sniffed {
        // Failed, or drained, before its first request.
        None => Either::Left(std::future::ready(Ok(()))),
        Some((io, true)) => {
            // Boxed: an HTTP/2 connection's state is large, and HTTP/1 connections are the many.
            let connection = builders.http2.serve_connection(TokioIo::new(io), service);
            let draining = Draining::new(connection, drain, http2::Connection::graceful_shutdown);
            Either::Right(Either::Left(Box::pin(draining)))
        }
        Some((io, false)) => {
            let connection = builders.http1.serve_connection(TokioIo::new(io), service).with_upgrades();
            let draining = Draining::new(connection, drain, http1::UpgradeableConnection::graceful_shutdown);
            Either::Right(Either::Right(draining))
        }
    })
}

/// The connection once its first bytes say which protocol it speaks (true: HTTP/2); `None`
/// when it failed first, or when a drain started before it asked anything (it is closed then).
async fn first_bytes<T>(mut io: FramedIo<T>, drain: Arc<Drain>) -> Option<(FramedIo<T>, bool)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let h2 = tokio::select! {
        sniffed = io.sniff() => match sniffed {
            Ok(h2) => h2,
            Err(e) => {
                tracing::debug!(error = %e, "connection failed before its first request");
                return None;
            }
        },
        () = drain.started() => return None,
    };
    Some((io, h2))
}

/// The server's drain: once started, every connection finishes what is in flight and closes.
#[derive(Debug, Default)]
struct Drain {
    started: AtomicBool,
    notify: Arc<Notify>,
}

impl Drain {
    fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Completes once the drain has started.
    async fn started(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a drain from now on completes it.
        notified.as_mut().enable();
        if !self.started.load(Ordering::SeqCst) {
            notified.await;
        }
    }
}

/// A connection that starts hyper's graceful shutdown once the server drains.
///
/// hyper-util's `GracefulShutdown` polls its signal every time the connection is polled;
/// here the signal is polled once, to register the task's waker, and afterwards a flag is
/// read instead, so a request costs one atomic load.
struct Draining<C> {
    connection: C,
    drain: Arc<Drain>,
    /// Registered with the task's waker until the drain starts; `None` after.
    signal: Option<Pin<Box<OwnedNotified>>>,
    registered: bool,
    shutdown: fn(Pin<&mut C>),
}

impl<C: Future + Unpin> Draining<C> {
    fn new(connection: C, drain: Arc<Drain>, shutdown: fn(Pin<&mut C>)) -> Self {
        let mut signal = Box::pin(drain.notify.clone().notified_owned());
        // Before the flag is first read: a drain from now on wakes the task.
        signal.as_mut().enable();
        Self { connection, drain, signal: Some(signal), registered: false, shutdown }
    }
}

impl<C: Future + Unpin> Future for Draining<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if let Some(signal) = &mut this.signal {
            let woken = !this.registered && signal.as_mut().poll(cx).is_ready();
            this.registered = true;
            if woken || this.drain.started.load(Ordering::SeqCst) {
                this.signal = None;
                (this.shutdown)(Pin::new(&mut this.connection));
            }
        }
        Pin::new(&mut this.connection).poll(cx)
    }
}

/// The answer to a head [`FramedIo`] refused: its status, and the end of the connection.
fn refusal(reason: Reason) -> Response<Body> {
    let mut response = Response::new(Body::full(reason_text(reason)));
    *response.status_mut() = reason.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn reason_text(reason: Reason) -> &'static str {
    match reason.status() {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request header fields too large\n",
        StatusCode::URI_TOO_LONG => "request target too long\n",
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large\n",
        _ => "bad request\n",
    }
}

/// An absolute-form target (`GET http://host/path HTTP/1.1`): RFC 9112 §3.2.2 makes its
/// authority the request's host, whatever `Host` says, so `Host` is set to it for routing and
/// for the upstream alike (the forward stage sends the origin-form path to the route's
/// endpoint; the authority is never a destination). Only `http` and `https` are taken. An
/// HTTP/2 request whose `Host` names another authority than `:authority` is malformed
/// (RFC 9113 §8.3.1).
fn absolute_form(mut request: Request<Incoming>) -> Result<Request<Incoming>, ProxyError> {
    let Some(authority) = request.uri().authority() else { return Ok(request) };
    if request.version() == Version::HTTP_2 {
        return match request.headers().get(header::HOST) {
            Some(host) if host.as_bytes() != authority.as_str().as_bytes() => {
                Err(ProxyError::BadRequest { reason: "Host differs from :authority" })
            }
            _ => Ok(request),
        };
    }
    let scheme = request.uri().scheme_str();
    if !matches!(scheme, Some("http" | "https")) {
        return Err(ProxyError::BadRequest { reason: "absolute-form target of another scheme" });
    }
    // Without userinfo: `http://user@host/` is host `host`.
    let host = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_owned(),
    };
    let host =
        HeaderValue::try_from(host).map_err(|_| ProxyError::BadRequest { reason: "request target" })?;
    request.headers_mut().insert(header::HOST, host);
    Ok(request)
}

/// Open connections per client address, for `limits.max_connections_per_client`: one entry per
/// client with a connection open, removed with its last one (the table shrinks when sparse).
#[derive(Debug)]
struct ClientConnections {
    cap: NonZeroUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client, counted until it is dropped.
#[derive(Debug)]
struct ClientSlot {
    counts: Arc<ClientConnections>,
    ip: IpAddr,
}

impl ClientConnections {
    fn new(cap: NonZeroUsize) -> Self {
        Self { cap, open: Mutex::default() }
    }

    /// A slot for one more connection from `ip`; `None` when it has `cap` open already.
    fn open(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap.get() {
            return None;
        }
        *count += 1;
        Some(ClientSlot { counts: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
                shrink_sparse(&mut open);
            }
        }
    }
}

/// Counts an open client connection for as long as it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(proxy: &Proxy) -> Self {
        proxy.metrics.downstream_connections_total.inc();
        proxy.metrics.downstream_connections.inc();
        Self(proxy.metrics.downstream_connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
