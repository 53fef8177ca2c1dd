//! [`FramedIo`]: the client connection as hyper reads it, with every request head held back
//! until it is checked.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chunked::Chunked;
use super::head::{self, BodyFraming};
use super::{HeadLimits, Reason, Rejections, Verdict};

/// The HTTP/2 connection preface (RFC 9113 §3.4): a connection that starts with it is h2c.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What hyper reads in place of a refused head: a request the service answers with the
/// refusal (see [`Verdict`]), never routed.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// Room for a head, and for reads, until a head needs more.
const INITIAL_BUFFER: usize = 8 * 1024;

/// A client connection whose request heads are checked before hyper sees them (see the
/// module docs of [`crate::framing`]). Writes go straight through.
#[derive(Debug)]
pub struct FramedIo<T> {
    inner: T,
    /// Bytes read from the client: `[pos, released)` checked and due to hyper,
    /// `[released, filled)` not yet checked (a head in part).
    buf: Vec<u8>,
    pos: usize,
    released: usize,
    filled: usize,
    state: State,
    limits: HeadLimits,
    /// Heads handed to hyper so far.
    heads: u64,
    verdict: Arc<Verdict>,
    rejections: Rejections,
    peer: SocketAddr,
    /// `limits.header_read_timeout`, for the heads held back here: hyper's own timer cannot
    /// see a head it has not been given (nor the first bytes, which decide HTTP/1 or h2).
    header_read_timeout: Duration,
    /// Armed from the connection's start and from the first byte of each later head, until
    /// the head is whole; made once a connection, reset for each head.
    head_timer: Option<Pin<Box<Sleep>>>,
    head_timing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first bytes: the h2 preface, or an HTTP/1 head.
    Sniff,
    /// HTTP/2: not ours to check (h2 frames its own way; hyper's h2 limits apply).
    Passthrough,
    /// Within a head; `scanned` bytes of it looked at for line ends.
    Head {
        scanned: usize,
    },
    /// Body bytes still to come.
    Length {
        left: u64,
    },
    Chunked(Chunked),
    /// The stand-in request, `sent` bytes of it handed on.
    Refused {
        sent: usize,
    },
    /// After the stand-in: nothing more is read, hyper answers and closes.
    Silent,
    /// The client closed, or a chunked body broke: hyper sees the end of the stream.
    Eof,
}

impl<T> FramedIo<T> {
    /// Wraps an accepted connection from `peer`. With `h2` (TLS with ALPN h2) the bytes pass
    /// through unchecked; otherwise an h2c preface makes them pass through too.
    pub fn new(
        inner: T,
        h2: bool,
        limits: HeadLimits,
        header_read_timeout: Duration,
        verdict: Arc<Verdict>,
        rejections: Rejections,
        peer: SocketAddr,
    ) -> Self {
        let head_timer = (!h2).then(|| Box::pin(tokio::time::sleep(header_read_timeout)));
        Self {
            header_read_timeout,
            head_timing: head_timer.is_some(),
            head_timer,
            inner,
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            released: 0,
            filled: 0,
            state: if h2 { State::Passthrough } else { State::Sniff },
            limits,
            heads: 0,
            verdict,
            rejections,
            peer,
        }
    }

    /// Checks what was read and not yet checked, as far as it goes: bodies are released as
    /// they come, a head once it is whole and sound.
    fn check(&mut self) {
        while self.released < self.filled {
            let bytes = &self.buf[self.released..self.filled];
            match &mut self.state {
                State::Sniff => {
                    let n = bytes.len().min(H2_PREFACE.len());
                    if bytes[..n] != H2_PREFACE[..n] {
                        self.state = State::Head { scanned: 0 };
                    } else if n == H2_PREFACE.len() {
                        self.state = State::Passthrough;
                        self.head_timing = false;
                    } else {
                        return;
                    }
                }
                State::Passthrough => self.released = self.filled,
                State::Length { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                    self.released += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Head { scanned: 0 };
                    }
                }
                State::Chunked(chunked) => match chunked.advance(bytes) {
                    Ok(n) => {
                        self.released += n;
                        if chunked.is_done() {
                            self.state = State::Head { scanned: 0 };
                        }
                    }
                    Err(_) => {
                        // Where this body ends cannot be told: hand on what was sound, then
                        // the end of the stream, so hyper fails the body (and the upstream
                        // request with it) and reads nothing after it.
                        self.rejections.record(Reason::Chunked, self.peer);
                        self.filled = self.released;
                        self.state = State::Eof;
                    }
                },
                State::Head { scanned } => match head::find_end(bytes, scanned) {
                    Err(reason) => self.refuse(reason),
                    Ok(Some(end)) if end > self.limits.max_head => self.refuse(Reason::HeadTooLarge),
                    Ok(Some(end)) => match head::check(&bytes[..end], &self.limits) {
                        Ok(framing) => {
                            self.released += end;
                            self.heads += 1;
                            self.head_timing = false;
                            self.state = match framing {
                                BodyFraming::Empty => State::Head { scanned: 0 },
                                BodyFraming::Length(left) => State::Length { left },
                                BodyFraming::Chunked => State::Chunked(Chunked::new()),
                            };
                        }
                        Err(reason) => self.refuse(reason),
                    },
                    Ok(None) => {
                        if let Some(reason) = incomplete_over_limit(bytes, &self.limits) {
                            self.refuse(reason);
                        } else if !self.head_timing {
                            // The first bytes of a head after an earlier request.
                            self.start_head_timer();
                        }
                        return;
                    }
                },
                State::Refused { .. } | State::Silent | State::Eof => {
                    self.filled = self.released;
                }
            }
        }
    }

    fn start_head_timer(&mut self) {
        let deadline = Instant::now() + self.header_read_timeout;
        match &mut self.head_timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.head_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.head_timing = true;
    }

    /// True once a head held back here has taken longer than the header read timeout.
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.head_timer {
            Some(timer) if self.head_timing => timer.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }

    /// Refuses the head being read: hyper gets the stand-in request, the service the reason.
    fn refuse(&mut self, reason: Reason) {
        self.head_timing = false;
        self.rejections.record(reason, self.peer);
        self.verdict.refuse(self.heads + 1, reason);
        self.filled = self.released;
        self.state = State::Refused { sent: 0 };
    }

    /// Makes room after `filled` for another read: drops what hyper has taken, and grows the
    /// buffer only for a head that does not fit.
    fn make_room(&mut self) {
        if self.pos == self.filled {
            (self.pos, self.released, self.filled) = (0, 0, 0);
        }
        let room = self.buf.len() - self.filled;
        if room >= 1024 || (room > 0 && self.pos == 0) {
            return;
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            (self.released, self.filled) = (self.released - self.pos, self.filled - self.pos);
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            // A head longer than the buffer (the limit refuses it before it grows further).
            let grown = (self.buf.len() * 2).min(self.limits.max_head + INITIAL_BUFFER);
            self.buf.resize(grown.max(self.buf.len() + INITIAL_BUFFER), 0);
        }
    }
}

/// A head not yet whole that is already over a limit: its target (while the request line has
/// not ended) or its size.
fn incomplete_over_limit(bytes: &[u8], limits: &HeadLimits) -> Option<Reason> {
    if bytes.len() > limits.max_target {
        let line_end = bytes.iter().position(|&b| b == b'\r' || b == b'\n');
        let line = &bytes[..line_end.unwrap_or(bytes.len())];
        if let Some(space) = line.iter().position(|&b| b == b' ') {
            let target = &line[space + 1..];
            let target_len = target.iter().position(|&b| b == b' ').unwrap_or(target.len());
            if target_len > limits.max_target {
                return Some(Reason::TargetTooLong);
            }
        }
    }
    (bytes.len() > limits.max_head).then_some(Reason::HeadTooLarge)
}

impl<T: AsyncRead + Unpin> AsyncRead for FramedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.released {
                let n = (this.released - this.pos).min(out.remaining());
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Refused { sent } => {
                    let n = (STAND_IN.len() - sent).min(out.remaining());
                    out.put_slice(&STAND_IN[sent..sent + n]);
                    this.state = if sent + n == STAND_IN.len() {
                        State::Silent
                    } else {
                        State::Refused { sent: sent + n }
                    };
                    return Poll::Ready(Ok(()));
                }
                // hyper answers the stand-in with `Connection: close` and ends the connection;
                // an end of stream here would make it drop the answer instead.
                State::Silent => return Poll::Pending,
                State::Eof => return Poll::Ready(Ok(())),
                // HTTP/2 with nothing of ours buffered: straight from the socket.
                State::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, out),
                _ => {}
            }
            this.make_room();
            let mut read = ReadBuf::new(&mut this.buf[this.filled..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(result) => result?,
                Poll::Pending if this.head_timed_out(cx) => {
                    // Too slow with its head: hyper sees the end of the stream and closes.
                    tracing::debug!(peer = %this.peer, "request head not received in time");
                    this.filled = this.released;
                    this.state = State::Eof;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            }
            let n = read.filled().len();
            if n == 0 {
                // The client closed: a head in part is dropped, hyper sees the end.
                this.filled = this.released;
                this.state = State::Eof;
                continue;
            }
            this.filled += n;
            this.check();
        }
    }
}

impl<T> FramedIo<T> {
    /// A `101` going out (the answer said so, see [`Verdict::switch`]): the connection now
    /// carries the protocol the client switched to (a tunnel the route allowed), whose bytes
    /// are not HTTP/1 heads to check.
    fn note_switch(&mut self, first: &[u8]) {
        if first.starts_with(SWITCHING)
            && !matches!(self.state, State::Passthrough)
            && self.verdict.is_switching()
        {
            self.state = State::Passthrough;
            self.head_timing = false;
            self.check();
        }
    }
}

/// The start of a `101` response head, as hyper writes it.
const SWITCHING: &[u8] = b"HTTP/1.1 101 ";

impl<T: AsyncWrite + Unpin> AsyncWrite for FramedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.note_switch(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.note_switch(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
