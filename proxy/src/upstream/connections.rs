//! Keep-alive HTTP/1.1 connections to one endpoint.
//!
//! Each endpoint owns its idle connections: a stack (the most recently used first, so a quiet
//! period lets the oldest ones time out) behind a mutex that is only held to push or pop. No
//! pool key to hash, no task per request or per connection: an exchange runs in the task of
//! the request it carries, on a [`crate::h1::Connection`], and the connection goes back on the
//! stack when its response body has been read to its clean end, and is simply dropped —
//! closed — when the body is abandoned, fails, breaks HTTP/1.1 framing or either side asked
//! to close.
//!
//! A pooled connection the endpoint closed while it sat idle is the classic keep-alive race.
//! A connection is looked at (without waiting) before it is taken from the stack; one that
//! still turns out closed before any response byte, while the request body was not read,
//! gives an idempotent request back and [`Connections::send`] sends it once more on the next
//! idle connection or a fresh one, so the race never reaches a client that could safely be
//! answered by a second attempt (a `POST` is not sent twice).
//!
//! Idle connections are closed after the upstream's `idle_timeout` by a sweeper task that
//! lives as long as the endpoint, and at most `max_idle_per_endpoint` are kept.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::EndpointAddr;
use super::metrics::Lookups;
use super::resolve::Resolver;
use super::tls::UpstreamTls;
use crate::body::{Body, BoxError};
use crate::h1::{self, Connection, Failure, Fields, Stream};

/// A response body read from an endpoint's connection.
pub type ResponseBody = h1::ResponseBody<Stream>;

/// How an upstream's connections are made and kept; from `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// How long a connect may take: the TCP connect and, with TLS, the handshake.
    pub connect_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed when they come back.
    pub max_idle: usize,
    /// How long a connection may sit idle before it is closed.
    pub idle_timeout: Duration,
    /// The longest a response body may send nothing once its head is in.
    pub read_timeout: Duration,
    /// How long an endpoint name's addresses are used before they are looked up again.
    pub dns_refresh: Duration,
    /// TLS to the endpoint; `None`: plain TCP.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// TCP keep-alive probes on upstream connections, so a silently dead peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The keep-alive connections of one endpoint.
#[derive(Debug)]
pub struct Connections {
    addr: EndpointAddr,
    resolver: Resolver,
    settings: ConnectionSettings,
    /// Shared with the response bodies that give connections back, and (weakly) the sweeper.
    idle: Arc<IdlePool>,
}

/// The idle connections and what the response bodies give them back to.
#[derive(Debug)]
struct IdlePool {
    /// Itself, for the sweeper it starts.
    me: Weak<IdlePool>,
    settings: ConnectionSettings,
    stack: Mutex<IdleStack>,
    /// Signalled after each sweep: what tests wait for.
    #[cfg(test)]
    swept: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct IdleStack {
    /// Oldest first; taken from and returned to the end.
    connections: Vec<Idle>,
    sweeping: bool,
}

#[derive(Debug)]
struct Idle {
    connection: Connection<Stream>,
    since: Instant,
}

/// Why a request could not be exchanged with the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    #[error("connect failed: {0}")]
    Connect(#[source] BoxError),
    /// The exchange failed on an open connection; the request may have been (partly) sent.
    #[error("exchange failed: {0}")]
    Exchange(#[source] h1::Error),
    /// No response head by the deadline (the connect included).
    #[error("no response head by the deadline")]
    TimedOut,
}

impl Connections {
    /// No connections yet; they are made on demand.
    /// Lookups of the endpoint's name are counted in `lookups`.
    pub fn new(addr: EndpointAddr, settings: ConnectionSettings, lookups: Lookups) -> Self {
        let resolver = Resolver::new(addr.clone(), settings.dns_refresh).counted(lookups);
        Self::with_resolver(addr, settings, resolver)
    }

    /// As [`Connections::new`], with the addresses from `resolver`.
    fn with_resolver(addr: EndpointAddr, settings: ConnectionSettings, resolver: Resolver) -> Self {
        let idle = Arc::new_cyclic(|me| IdlePool {
            me: me.clone(),
            settings: settings.clone(),
            stack: Mutex::default(),
            #[cfg(test)]
            swept: tokio::sync::Notify::new(),
        });
        Self { addr, resolver, settings, idle }
    }

    /// Sends `request` (`Host` set) on an idle connection, or a new one, and returns the
    /// response head; its body gives the connection back after a clean end. The target goes
    /// out in origin-form, over HTTP/1.1, whatever the request's URI and version say.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<ResponseBody>, SendError> {
        let (parts, body) = request.into_parts();
        self.send_parts(&parts, Fields::default(), body, 0, Instant::now(), None).await
    }

    /// [`send`](Self::send) with the request's head borrowed (a caller that may try another
    /// endpoint keeps it) and `fields` applied to it, and `room` in the response's header map
    /// for the fields the caller will add. `now` is when the caller's try started: an idle
    /// connection is aged by it, so it may be taken up to the few microseconds from then to
    /// the checkout past its idle timeout (the endpoint closing it then is the case that a
    /// connection closed while idle already covers). [`SendError::TimedOut`] when there is no
    /// response head by `deadline`.
    pub async fn send_parts(
        &self,
        parts: &Parts,
        fields: Fields<'_>,
        mut body: Body,
        room: usize,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let failed = |error| match error {
            h1::Error::TimedOut => SendError::TimedOut,
            error => SendError::Exchange(error),
        };
        while let Some(connection) = self.checkout(now) {
            match connection.send(parts, fields, body, Some(self.pool()), room, deadline).await {
                Ok(response) => return Ok(response),
                // The endpoint had closed the connection while it was idle: the next one.
                Err(Failure { error, unsent: Some(unsent) }) => {
                    tracing::debug!(endpoint = %self.addr, %error, "pooled connection closed");
                    body = unsent;
                }
                Err(Failure { error, unsent: None }) => return Err(failed(error)),
            }
        }
        let connection = match deadline {
            None => self.connect().await?,
            Some(deadline) => {
                tokio::time::timeout_at(deadline, self.connect()).await.map_err(|_| SendError::TimedOut)??
            }
        };
        connection
            .send(parts, fields, body, Some(self.pool()), room, deadline)
            .await
            .map_err(|failure| failed(failure.error))
    }

    fn pool(&self) -> Arc<dyn h1::Pool<Stream>> {
        self.idle.clone()
    }

    /// Idle connections now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        lock(&self.idle.stack).connections.len()
    }

    /// The most recently used idle connection that is still open and has not been idle for
    /// the idle timeout at `now`.
    fn checkout(&self, now: Instant) -> Option<Connection<Stream>> {
        let mut idle = lock(&self.idle.stack);
        while let Some(Idle { mut connection, since }) = idle.connections.pop() {
            if now.saturating_duration_since(since) < self.settings.idle_timeout && connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Connection<Stream>, SendError> {
        let connecting = async {
            let addrs = self.resolver.addrs().await?;
            let tcp = TcpStream::connect(&addrs[..]).await?;
            // Small requests and answers go out at once; idle peers are probed.
            tcp.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            match &self.settings.tls {
                None => Ok(Stream::Plain(tcp)),
                // A failed handshake is a failed connect: nothing was sent.
                Some(tls) => tls.connect(&self.addr, tcp).await,
            }
        };
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(stream)) => Ok(Connection::new(stream).with_read_timeout(self.settings.read_timeout)),
            Ok(Err(e)) => Err(SendError::Connect(e.into())),
            Err(_) => {
                let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                Err(SendError::Connect(timeout.into()))
            }
        }
    }
}

impl h1::Pool<Stream> for IdlePool {
    /// Puts a connection whose exchange ended cleanly back on the stack.
    fn checkin(&self, connection: Connection<Stream>) {
        if self.settings.max_idle == 0 {
            return;
        }
        let mut stack = lock(&self.stack);
        if stack.connections.len() >= self.settings.max_idle {
            stack.connections.remove(0);
        }
        stack.connections.push(Idle { connection, since: Instant::now() });
        if !stack.sweeping {
            stack.sweeping = true;
            tokio::spawn(sweep(self.me.clone(), self.settings.idle_timeout));
        }
    }
}

/// Closes connections idle for `timeout`, until none is left idle or the endpoint is gone.
async fn sweep(idle: Weak<IdlePool>, timeout: Duration) {
    let period = (timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(idle) = idle.upgrade() else { return };
        let mut stack = lock(&idle.stack);
        // Oldest first: the expired ones are a prefix.
        let expired = stack.connections.iter().take_while(|c| c.since.elapsed() >= timeout).count();
        stack.connections.drain(..expired);
        let done = stack.connections.is_empty();
        if done {
            // The next connection put back starts a new sweeper.
            stack.sweeping = false;
        }
        drop(stack);
        #[cfg(test)]
        idle.swept.notify_waiters();
        if done {
            return;
        }
    }
}

fn lock(idle: &Mutex<IdleStack>) -> std::sync::MutexGuard<'_, IdleStack> {
    idle.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::{Method, Response, StatusCode};
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::resolve::Lookup;
    use super::*;

    /// An endpoint that answers every request with `body` over keep-alive connections and
    /// counts the connections it accepted.
    async fn endpoint(body: &'static str) -> (EndpointAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| async move {
                    let status = if request.uri().path() == "/empty" {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::OK
                    };
                    let body = if status == StatusCode::OK { body } else { "" };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    fn settings() -> ConnectionSettings {
        ConnectionSettings {
            connect_timeout: Duration::from_secs(1),
            max_idle: 8,
            idle_timeout: Duration::from_secs(90),
            read_timeout: Duration::from_secs(60),
            dns_refresh: Duration::from_secs(30),
            tls: None,
        }
    }

    fn get(addr: &EndpointAddr, path: &'static str) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = http::Uri::from_static(path);
        request.headers_mut().insert(http::header::HOST, addr.host_header());
        request
    }

    /// One exchange, the body read to its end and the connection given back.
    async fn exchange(connections: &Connections, request: Request<Body>) -> Bytes {
        let response = connections.send(request).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn sequential_exchanges_share_one_connection() {
        let (addr, accepted) = endpoint("hello").await;
        let connections = Connections::new(addr.clone(), settings(), Lookups::default());
        for _ in 0..5 {
            assert_eq!(exchange(&connections, get(&addr, "/")).await, "hello");
        }
        let mut head = get(&addr, "/");
        *head.method_mut() = Method::HEAD;
        assert_eq!(exchange(&connections, head).await, "");
        assert_eq!(exchange(&connections, get(&addr, "/empty")).await, "");
        assert_eq!(exchange(&connections, get(&addr, "/")).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(connections.idle(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_body_closes_its_connection() {
        let (addr, accepted) = endpoint("hello").await;
        let connections = Connections::new(addr.clone(), settings(), Lookups::default());
        let response = connections.send(get(&addr, "/")).await.unwrap();
        drop(response);
        assert_eq!(exchange(&connections, get(&addr, "/")).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_exchanges_open_connections_and_keep_at_most_max_idle() {
        let (addr, accepted) = endpoint("hello").await;
        let connections = Connections::new(
            addr.clone(),
            ConnectionSettings { max_idle: 2, ..settings() },
            Lookups::default(),
        );
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(connections.send(get(&addr, "/")).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        for response in open {
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(connections.idle(), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, _) = endpoint("hello").await;
        let idle_timeout = Duration::from_secs(30);
        let connections = Connections::new(
            addr.clone(),
            ConnectionSettings { idle_timeout, ..settings() },
            Lookups::default(),
        );
        exchange(&connections, get(&addr, "/")).await;
        assert_eq!(connections.idle(), 1);
        tokio::time::pause();
        tokio::time::advance(idle_timeout / 2).await;
        assert_eq!(connections.idle(), 1, "not yet idle for the whole timeout");
        // The sweep that finds the connection idle for the whole timeout.
        let swept = connections.idle.swept.notified();
        tokio::time::advance(idle_timeout).await;
        swept.await;
        assert_eq!(connections.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_endpoint_closed_while_idle_is_replaced() {
        // Answers one request per connection with keep-alive, then closes the socket anyway.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: EndpointAddr = listener.local_addr().unwrap().to_string().parse().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await.unwrap();
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                drop(stream);
                closed_tx.send(()).unwrap();
            }
        });
        let connections = Connections::new(addr.clone(), settings(), Lookups::default());
        for _ in 0..3 {
            assert_eq!(exchange(&connections, get(&addr, "/")).await, "ok");
            closed.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_named_endpoint_is_looked_up_once_for_all_its_connections() {
        let (addr, accepted) = endpoint("hello").await;
        let found: std::net::SocketAddr = addr.as_str().parse().unwrap();
        let lookups = Arc::new(AtomicUsize::new(0));
        let counter = lookups.clone();
        let lookup: Lookup = Arc::new(move |_: &EndpointAddr| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(vec![found]) })
        });
        let port = addr.authority().port_u16().unwrap();
        // A name only the lookup knows: the system resolver would fail.
        let named: EndpointAddr = format!("origin.invalid:{port}").parse().unwrap();
        let resolver = Resolver::with_lookup(named.clone(), Duration::from_secs(30), lookup);
        let connections = Connections::with_resolver(named.clone(), settings(), resolver);
        // Two exchanges at once: two connections.
        let (a, b) = tokio::join!(connections.send(get(&named, "/")), connections.send(get(&named, "/")));
        for sent in [a, b] {
            let response = sent.unwrap();
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_cut_short_by_the_tries_deadline_is_timed_out_not_a_connect_error() {
        // A name whose lookup never ends: the connect waits, up to its connect timeout (1 s).
        let lookup: Lookup = Arc::new(|_: &EndpointAddr| Box::pin(std::future::pending()));
        let named: EndpointAddr = "origin.invalid:80".parse().unwrap();
        let resolver = Resolver::with_lookup(named.clone(), Duration::from_secs(30), lookup);
        let connections = Connections::with_resolver(named.clone(), settings(), resolver);
        let send = |deadline: Option<Instant>| {
            let (parts, body) = get(&named, "/").into_parts();
            let connections = &connections;
            async move {
                connections.send_parts(&parts, Fields::default(), body, 0, Instant::now(), deadline).await
            }
        };

        let started = Instant::now();
        let cut_short = send(Some(started + Duration::from_millis(200))).await;
        assert!(matches!(cut_short, Err(SendError::TimedOut)), "{:?}", cut_short.err());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(1), "{waited:?}");
        // Without a deadline, the connect timeout ends it: a connect error.
        let timed_out = send(None).await;
        assert!(matches!(timed_out, Err(SendError::Connect(_))), "{:?}", timed_out.err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: EndpointAddr = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let connections = Connections::new(addr.clone(), settings(), Lookups::default());
        assert!(matches!(connections.send(get(&addr, "/")).await, Err(SendError::Connect(_))));
    }
}
