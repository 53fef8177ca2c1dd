//! The upstream side of HTTP/1.1, built for forwarding: one exchange at a time on a
//! connection, run in the task of the request it carries.
//!
//! [`Connection::send`] writes the request head from the request's parts into a buffer the
//! connection keeps from one exchange to the next, streams the request body behind it
//! (`Content-Length` as given, chunked otherwise, one frame in memory at a time), and reads
//! the response head with `httparse` into an [`http::Response`]; `1xx` answers before the final
//! one (`100 Continue` among them) are skipped. The response body ([`ResponseBody`]) is
//! framed by `Content-Length`, chunked (with trailers) or the connection's close, and its
//! frames are slices of the connection's read buffer: the bytes are copied once, from the
//! socket. `HEAD`, `204` and `304` answers have no body.
//!
//! What the endpoint sends is checked strictly ([`Error::Invalid`]): `Content-Length` with
//! `Transfer-Encoding`, differing or invalid lengths, a transfer coding other than chunked,
//! a bad chunk size line, a head over [`MAX_HEAD`] or with more than [`MAX_HEADERS`] fields,
//! obsolete line folding, a `101` that was not asked for. The connection is then never used
//! again, and a body cut short ends with an error, never as if it were complete.
//!
//! A request that asks for an upgrade (`Connection: upgrade` and `Upgrade`) may be answered
//! `101 Switching Protocols`: that answer has no body, and [`ResponseBody::into_upgraded`]
//! hands over the connection's stream with the bytes already read past the head, for a
//! tunnel. Such a connection never goes back to its pool.
//!
//! A connection goes back to its [`Pool`] only after a complete, clean exchange: the request
//! sent whole, the response body read to its framed end with no byte more, and neither side
//! asking to close. The connection is generic over the byte stream; upstreams use [`Stream`],
//! plain TCP or TLS.

mod decode;
mod head;
mod stream;
mod timer;

#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

pub use stream::Stream;

use self::decode::Decode;
pub use self::head::{MAX_HEAD, MAX_HEADERS, connection_says};
use self::timer::Timer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes asked of the socket per read, at least.
const READ_SIZE: usize = 16 * 1024;

/// Why an exchange failed. The connection is closed in every case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint closed the connection before any byte of a response.
    #[error("connection closed before a response")]
    Closed,
    /// The endpoint closed the connection in the middle of a response head or body.
    #[error("connection closed before the end of the response")]
    Truncated,
    /// Reading or writing the connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The request body failed (the client went away, paused too long, sent too much).
    #[error("request body failed: {0}")]
    Body(#[source] BoxError),
    /// The endpoint's answer breaks HTTP/1.1 framing, or the request's body its own length.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The response body sent nothing more for the connection's read timeout
    /// ([`Connection::with_read_timeout`]).
    #[error("response body stalled: nothing for {after:?}")]
    Stalled { after: Duration },
    /// No response head by the exchange's deadline (see [`Connection::send`]).
    #[error("no response head by the deadline")]
    TimedOut,
}

impl Error {
    /// True when the request body, not the endpoint, failed.
    pub fn is_body(&self) -> bool {
        matches!(self, Self::Body(_))
    }

    fn is_closed(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(_))
    }
}

/// A failed [`Connection::send`]: the error, and the request body back when the request may
/// be sent again on another connection (see [`Failure::unsent`]).
#[derive(Debug)]
pub struct Failure<B> {
    pub error: Error,
    /// Set when a connection that had carried an exchange before turned out closed before
    /// any response byte and before the request body was read, and the request's method is
    /// idempotent: the endpoint most likely closed it while it was idle, and the request can
    /// go out again as it is.
    pub unsent: Option<B>,
}

/// What a request's head says besides its map: the `added` fields, written after the map's,
/// and none of the map's fields named in `left_out`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub added: &'a [(&'static HeaderName, HeaderValue)],
    pub left_out: &'a [&'static HeaderName],
}

/// Takes back connections whose exchange ended cleanly.
pub trait Pool<S>: Send + Sync + std::fmt::Debug {
    /// `connection` may carry the next exchange.
    fn checkin(&self, connection: Connection<S>);
}

/// An HTTP/1.1 client connection over the byte stream `S`.
#[derive(Debug)]
pub struct Connection<S> {
    /// All of it out of line: a connection travels in its response's body, so its size is part
    /// of every move of an answer and of every idle client connection's slot for a body.
    kept: Box<Kept<S>>,
}

/// A connection's stream and buffers, kept from one exchange to the next, and where it goes
/// back to.
#[derive(Debug)]
struct Kept<S> {
    /// The byte stream to the endpoint.
    io: S,
    /// Has carried an exchange before.
    reused: bool,
    /// Bytes read and not consumed yet.
    read: BytesMut,
    /// The request head, or a chunk's size line.
    write: Vec<u8>,
    /// The field names of the last response head, as sent and as parsed.
    names: head::Names,
    /// Where the connection goes back after a clean end of the exchange it carries; taken
    /// when it goes back, so an idle connection does not hold its pool.
    pool: Option<Arc<dyn Pool<S>>>,
    /// The longest wait for the next frame of a response body; `None`: no limit.
    read_timeout: Option<Duration>,
    /// The connection's one timer (see [`timer`]), for the response head's deadline and then
    /// for the body's read timeout, kept from one exchange to the next. An idle connection's
    /// timer may still hold the waker of the task of its last exchange, until its deadline
    /// passes or the next exchange polls it.
    timer: Option<Timer>,
    /// The timer is set for the body's current wait (no frame since it was set).
    waiting: bool,
}

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// This many bytes still to send.
    Length(u64),
    Chunked,
    Done,
}

/// Bytes being written: the rest of the connection's `write` buffer from `pos`, then `data`,
/// then `tail`.
#[derive(Debug, Default)]
struct Out {
    pos: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over `io`, fresh from its handshake.
    pub fn new(io: S) -> Self {
        Self {
            kept: Box::new(Kept {
                io,
                reused: false,
                read: BytesMut::new(),
                write: Vec::with_capacity(512),
                names: head::Names::default(),
                pool: None,
                read_timeout: None,
                timer: None,
                waiting: false,
            }),
        }
    }

    /// The connection, with response bodies that fail with [`Error::Stalled`] once they have
    /// sent nothing for `after` (nginx's `proxy_read_timeout`, Varnish's
    /// `between_bytes_timeout`). The response head has its own timeout, the caller's.
    pub fn with_read_timeout(mut self, after: Duration) -> Self {
        self.kept.read_timeout = Some(after);
        self
    }

    /// True when an idle connection still looks open: the endpoint has neither closed it nor
    /// sent anything (looked at without waiting).
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.kept.read.is_empty()
            && poll_read_into(&mut self.kept.io, &mut self.kept.read, &mut cx).is_pending()
    }

    /// Sends the request (`parts`, origin-form target, `Host` set, hop-by-hop headers gone,
    /// with `fields` applied, and `body`) and reads the response head, whose header map has
    /// room for `room` more fields; [`Error::TimedOut`] when it has not come by `deadline`
    /// (`None`: no limit). The response body reads on from the connection and gives it to
    /// `pool` after a clean end.
    pub async fn send<B>(
        mut self,
        parts: &Parts,
        fields: Fields<'_>,
        body: B,
        pool: Option<Arc<dyn Pool<S>>>,
        room: usize,
        deadline: Option<Instant>,
    ) -> Result<Response<ResponseBody<S>>, Failure<B>>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let written = match head::write_request(&mut self.kept.write, parts, fields, &body) {
            Ok(written) => written,
            Err(error) => return Err(Failure { error, unsent: None }),
        };
        let (upload, connection) = (written.upload, written.connection);
        let upgrade = connection && asks_upgrade(&parts.headers);
        let mut exchange = Exchange {
            upgrade,
            room,
            upload,
            sending: true,
            body: Some(body),
            out: Out::default(),
            received: false,
            body_read: false,
        };
        let head = poll_fn(|cx| {
            let head = exchange.poll_head(&mut self, cx);
            match deadline {
                Some(deadline) if head.is_pending() => {
                    Timer::poll(&mut self.kept.timer, deadline, cx).map(|()| Err(Error::TimedOut))
                }
                _ => head,
            }
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                // The request may have reached the endpoint before it closed: only an
                // idempotent one goes out again (RFC 9110 §9.2.2), as browsers and Go's
                // client do; nginx does not resend a POST either.
                let stale = self.kept.reused
                    && parts.method.is_idempotent()
                    && !exchange.received
                    && !exchange.body_read
                    && error.is_closed();
                let unsent = if stale { exchange.body.take() } else { None };
                return Err(Failure { error, unsent });
            }
        };
        // An answer before the request's end: the rest of the request is not sent, so the
        // connection cannot carry another.
        let whole_request = exchange.upload == Upload::Done;
        drop(exchange);
        if head.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // The connection now carries another protocol: it is the tunnel's, never the pool's.
            let body = ResponseBody {
                connection: Some(self),
                decode: Decode::Done,
                keep_alive: false,
                upgraded: true,
            };
            return Ok(head.map(|_| body));
        }
        let (framing, keep_alive) = match head::framing(&parts.method, &head) {
            Ok(framing) => framing,
            Err(error) => return Err(Failure { error, unsent: None }),
        };
        let keep_alive = keep_alive && whole_request && !(connection && head::asks_close(&parts.headers));
        self.kept.reused = true;
        self.kept.pool = pool;
        self.kept.waiting = false;
        let mut body = ResponseBody { connection: Some(self), decode: framing, keep_alive, upgraded: false };
        if body.decode.is_done() {
            body.finish();
        }
        Ok(head.map(|_| body))
    }

    /// Shuts the connection down (a graceful close; dropping it closes it too).
    pub async fn close(mut self) {
        let _ = self.kept.io.shutdown().await;
    }
}

/// One exchange's progress while the request goes out and the response head comes in.
struct Exchange<B> {
    /// The request asked for an upgrade: a `101` is its answer.
    upgrade: bool,
    /// Header fields the response's map has room for beyond its own.
    room: usize,
    upload: Upload,
    /// The request is still going out.
    sending: bool,
    /// Until the request has gone (kept unread for a resend when it was never read).
    body: Option<B>,
    out: Out,
    /// A byte of the response has arrived.
    received: bool,
    /// The request body has been polled.
    body_read: bool,
}

impl<B> Exchange<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Writes the request and reads until a final response head, whichever can move.
    fn poll_head<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        connection: &mut Connection<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<head::Named>, Error>> {
        loop {
            if self.sending {
                match self.poll_upload(connection, cx) {
                    Poll::Ready(Ok(())) => {
                        self.sending = false;
                        if self.body_read {
                            // A body read to its end lets go of what it holds.
                            self.body = None;
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            // Pending here has the read's waker registered, whether or not the upload moved:
            // the next read waits for the socket, not for another turn of this loop.
            match head::poll_read_head(connection, &mut self.received, self.upgrade, self.room, cx) {
                Poll::Ready(Ok(Some(head))) => return Poll::Ready(Ok(head)),
                // A 1xx: the final answer follows.
                Poll::Ready(Ok(None)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes what is pending and the body's next frames, until the request has gone.
    fn poll_upload<S: AsyncWrite + Unpin>(
        &mut self,
        connection: &mut Connection<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            ready!(poll_write_out(&mut connection.kept.io, &connection.kept.write, &mut self.out, cx))?;
            if self.upload == Upload::Done {
                ready!(Pin::new(&mut connection.kept.io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
            self.body_read = true;
            let frame = match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Poll::Ready(Err(Error::Body(error.into()))),
                None => {
                    match self.upload {
                        Upload::Length(_) => {
                            return Poll::Ready(Err(Error::Invalid("request body shorter than its length")));
                        }
                        Upload::Chunked => self.next_out(connection, b"0\r\n\r\n", Bytes::new(), b""),
                        Upload::Done => {}
                    }
                    self.upload = Upload::Done;
                    continue;
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match &mut self.upload {
                    Upload::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Poll::Ready(Err(Error::Invalid("request body longer than its length")));
                        }
                        *left -= len;
                        if *left == 0 {
                            self.upload = Upload::Done;
                        }
                        self.next_out(connection, b"", data, b"");
                    }
                    Upload::Chunked => {
                        let size = format!("{:x}\r\n", data.len());
                        self.next_out(connection, size.as_bytes(), data, b"\r\n");
                    }
                    Upload::Done => {}
                },
                Err(frame) => {
                    if let (Ok(trailers), Upload::Chunked) = (frame.into_trailers(), self.upload) {
                        let mut last = b"0\r\n".to_vec();
                        head::write_fields(&mut last, &trailers);
                        last.extend_from_slice(b"\r\n");
                        self.next_out(connection, &last, Bytes::new(), b"");
                        self.upload = Upload::Done;
                    }
                }
            }
        }
    }

    fn next_out<S>(&mut self, connection: &mut Connection<S>, head: &[u8], data: Bytes, tail: &'static [u8]) {
        connection.kept.write.clear();
        connection.kept.write.extend_from_slice(head);
        self.out = Out { pos: 0, data, tail };
    }
}

/// Writes `out` (the rest of `buf` from `out.pos`, its data, its tail) to `io`.
fn poll_write_out<S: AsyncWrite + Unpin>(
    io: &mut S,
    buf: &[u8],
    out: &mut Out,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        let head = &buf[out.pos.min(buf.len())..];
        if head.is_empty() && out.data.is_empty() && out.tail.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let slices = [IoSlice::new(head), IoSlice::new(&out.data), IoSlice::new(out.tail)];
        let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        let from_head = written.min(head.len());
        out.pos += from_head;
        written -= from_head;
        let from_data = written.min(out.data.len());
        out.data.advance(from_data);
        written -= from_data;
        out.tail = &out.tail[written.min(out.tail.len())..];
    }
}

/// Reads what the socket has into `buf`; `Ok(0)` at its end.
fn poll_read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    let read = tokio::io::AsyncReadExt::read_buf(io, buf);
    std::pin::pin!(read).poll(cx)
}

use std::future::Future as _;

/// A response body read from its connection; the connection goes to its pool after a clean end.
#[derive(Debug)]
pub struct ResponseBody<S> {
    /// Until the body ended or failed.
    connection: Option<Connection<S>>,
    decode: Decode,
    keep_alive: bool,
    /// The answer was a `101`: the connection is for [`ResponseBody::into_upgraded`].
    upgraded: bool,
}

impl<S> Connection<S> {
    /// Runs the read timeout of a body read that waits: `Ready(Err)` once it has waited that
    /// long since the last frame, `Pending` before (the task is woken then), `Ready(Ok)` without
    /// a read timeout.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(after) = self.kept.read_timeout else { return Poll::Ready(Ok(())) };
        let until = match &self.kept.timer {
            Some(timer) if self.kept.waiting => timer.until(),
            _ => Instant::now() + after,
        };
        self.kept.waiting = true;
        ready!(Timer::poll(&mut self.kept.timer, until, cx));
        Poll::Ready(Err(Error::Stalled { after }))
    }
}

/// A connection switched to another protocol by a `101`.
#[derive(Debug)]
pub struct Upgraded<S> {
    /// The stream, past the `101` head.
    pub io: S,
    /// Bytes the endpoint sent after the `101` head that were already read.
    pub read: Bytes,
}

impl<S> ResponseBody<S> {
    /// The connection of a `101` answer; `None` for any other answer.
    pub fn into_upgraded(mut self) -> Option<Upgraded<S>> {
        if !self.upgraded {
            return None;
        }
        let connection = self.connection.take()?;
        let Kept { io, read, .. } = *connection.kept;
        Some(Upgraded { io, read: read.freeze() })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ResponseBody<S> {
    /// The body ended as framed: the connection goes back if it may carry another exchange.
    fn finish(&mut self) {
        let Some(mut connection) = self.connection.take() else { return };
        // A byte past the framed end is a broken answer or an unasked-for one.
        if self.keep_alive
            && connection.kept.read.is_empty()
            && let Some(pool) = connection.kept.pool.take()
        {
            pool.checkin(connection);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> http_body::Body for ResponseBody<S> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
        let Poll::Ready(decoded) = this.decode.poll_frame(connection, cx) else {
            if let Err(error) = ready!(connection.poll_stall(cx)) {
                this.connection = None;
                return Poll::Ready(Some(Err(error)));
            }
            return Poll::Pending;
        };
        connection.kept.waiting = false;
        match decoded {
            Ok(Some(frame)) => {
                if this.decode.is_done() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(error) => {
                this.connection = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.decode.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.connection, &self.decode) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), decode) => decode.size_hint(),
        }
    }
}

/// Trailers as a frame, when there are any.
fn trailers_frame(trailers: HeaderMap) -> Option<Frame<Bytes>> {
    (!trailers.is_empty()).then(|| Frame::trailers(trailers))
}

/// True when the request asks for an upgrade: `Connection: upgrade` and an `Upgrade` field.
fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE) && connection_says(headers, "upgrade")
}

/// `HEAD` asks for no body, whatever the head says about its length.
fn is_head(method: &Method) -> bool {
    *method == Method::HEAD
}
