//! Upgrades: on a route that lists the protocol (`upgrades`), an HTTP/1.1 `GET` with
//! `Connection: upgrade` and `Upgrade` goes to the origin with both headers; when the origin
//! switches (`101`), the `101` goes back to the client and a tunnel copies bytes both ways
//! between the client's connection and the origin's until either side closes or neither
//! sends a byte for the route's `upgrade_idle_timeout`. The origin's connection is the
//! tunnel's and never goes back to the idle connections. Any other answer is an ordinary
//! response.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::body::Body;
use crate::error::ProxyError;
use crate::h1::{Upgraded, connection_says};
use crate::route::{Route, UpgradeResult, Upgrades};
use crate::upstream::EndpointAddr;

/// The `Upgrade` value of a request that asks to switch to protocols `upgrades` all allow
/// (an HTTP/1.1 `GET` with `Connection: upgrade`); `None` for any other request.
pub fn requested(request: &Request<()>, upgrades: &Upgrades) -> Option<HeaderValue> {
    let is_get = request.method() == Method::GET;
    if upgrades.protocols.is_empty() || request.version() != Version::HTTP_11 || !is_get {
        return None;
    }
    if !connection_says(request.headers(), "upgrade") {
        return None;
    }
    let value = request.headers().get(UPGRADE)?;
    let text = value.to_str().ok()?;
    let mut protocols = text.split(',').map(str::trim).filter(|p| !p.is_empty()).peekable();
    protocols.peek()?;
    protocols.all(|p| upgrades.allows(p)).then(|| value.clone())
}

/// Sets `Connection: upgrade` and `Upgrade: protocol` (after the hop-by-hop headers went).
pub fn ask(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol.clone());
}

/// The answer to an upgrade request: a `101` opens the tunnel between `client` (the client's
/// connection once the `101` has gone) and the origin's connection, in a task of its own;
/// any other answer goes back as it is. `served_by`: the endpoint that answered.
pub fn answer(
    route: &Arc<Route>,
    result: Result<Response<Body>, ProxyError>,
    served_by: Option<EndpointAddr>,
    client: OnUpgrade,
) -> Result<Response<Body>, ProxyError> {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            route.metrics.upgrade(UpgradeResult::Failed);
            return Err(error);
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        route.metrics.upgrade(UpgradeResult::Declined);
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let Some(origin) = body.into_upgraded() else {
        // Only an endpoint's own connection switches: anything else is no tunnel.
        route.metrics.upgrade(UpgradeResult::Failed);
        return Err(match served_by {
            Some(endpoint) => ProxyError::Upstream { endpoint, source: "101 without its connection".into() },
            None => ProxyError::NoHealthyEndpoint { upstream: route.upstream.name.clone() },
        });
    };
    let route = route.clone();
    tokio::spawn(async move {
        let Ok(client) = client.await else {
            route.metrics.upgrade(UpgradeResult::ClientGone);
            return;
        };
        route.metrics.upgrade(UpgradeResult::Switched);
        let open = route.metrics.tunnels_open();
        open.inc();
        let (up, down) = tunnel(TokioIo::new(client), origin, route.rule.upgrades.idle_timeout).await;
        open.dec();
        route.metrics.tunnel_bytes(up, down);
    });
    Ok(Response::from_parts(parts, Body::empty()))
}

/// Copies bytes both ways between `client` and `origin` (first the bytes the origin sent
/// right behind its `101`) until either side closes or fails, or no byte moves for `idle`.
/// Bytes from the client and to it.
pub async fn tunnel<C, S>(client: C, origin: Upgraded<S>, idle: Duration) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Upgraded { io: mut origin, read } = origin;
    let mut client = Watched::new(client);
    let clock = client.clock.clone();
    if !read.is_empty() && client.write_all(&read).await.is_err() {
        return client.counts();
    }
    {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        let mut copy = std::pin::pin!(copy);
        loop {
            let quiet_until = clock.last() + idle;
            tokio::select! {
                result = &mut copy => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "tunnel closed on an error");
                    }
                    break;
                }
                () = tokio::time::sleep_until(quiet_until) => {
                    if Instant::now() >= clock.last() + idle {
                        tracing::debug!(?idle, "tunnel closed after its idle timeout");
                        break;
                    }
                }
            }
        }
    }
    let _ = origin.shutdown().await;
    let _ = client.shutdown().await;
    client.counts()
}

/// The client's side of a tunnel, noting when a byte last moved and how many went each way.
#[derive(Debug)]
struct Watched<C> {
    inner: C,
    clock: Clock,
    read: u64,
    written: u64,
}

/// When a byte last moved through a tunnel.
#[derive(Debug, Clone)]
struct Clock {
    start: Instant,
    /// Nanoseconds from `start` to the last byte moved.
    last: Arc<AtomicU64>,
}

impl Clock {
    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

impl<C> Watched<C> {
    fn new(inner: C) -> Self {
        let clock = Clock { start: Instant::now(), last: Arc::default() };
        Self { inner, clock, read: 0, written: 0 }
    }

    fn counts(&self) -> (u64, u64) {
        (self.read, self.written)
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Watched<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.read += read as u64;
            this.clock.touch();
        }
        polled
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Watched<C> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            this.written += written as u64;
            this.clock.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_carries_bytes_both_ways_and_closes_when_quiet() {
        let (client, mut client_end) = duplex(1024);
        let (origin, mut origin_end) = duplex(1024);
        let upgraded = Upgraded { io: origin, read: Bytes::from_static(b"early") };
        let started = Instant::now();
        let tunnel = tokio::spawn(tunnel(client, upgraded, Duration::from_secs(60)));

        let mut buf = [0u8; 5];
        client_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"early", "bytes read past the 101 come first");
        tokio::time::sleep(Duration::from_secs(50)).await;
        client_end.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        origin_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        origin_end.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");

        let (up, down) = tunnel.await.unwrap();
        assert_eq!((up, down), (4, 10));
        assert_eq!(started.elapsed(), Duration::from_secs(110), "60 s after the last byte, at 50 s");
        let mut rest = Vec::new();
        assert_eq!(client_end.read_to_end(&mut rest).await.unwrap(), 0, "the client's side closed");
        assert_eq!(origin_end.read_to_end(&mut rest).await.unwrap(), 0, "the origin's side closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_ends_when_both_sides_close() {
        let (client, mut client_end) = duplex(1024);
        let (origin, mut origin_end) = duplex(1024);
        let upgraded = Upgraded { io: origin, read: Bytes::new() };
        let tunnel = tokio::spawn(tunnel(client, upgraded, Duration::from_secs(60)));
        client_end.write_all(b"bye").await.unwrap();
        client_end.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin_end.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye", "the client's close reaches the origin as a close");
        origin_end.shutdown().await.unwrap();
        let started = Instant::now();
        assert_eq!(tunnel.await.unwrap(), (3, 0));
        assert_eq!(started.elapsed(), Duration::ZERO, "no idle timeout waited for");
    }
}
