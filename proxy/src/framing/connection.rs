//! [`FramedIo`]: the client connection as hyper reads it, with every request head held back
//! until it is checked.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
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

/// Room for a head held back, and for the reads that complete it, until a head needs more.
const INITIAL_BUFFER: usize = 8 * 1024;

/// Room for a connection's first read, which tells HTTP/2 from HTTP/1 (nginx's
/// `client_header_buffer_size`): most first heads fit; a longer one grows it.
const SNIFF_BUFFER: usize = 1024;

/// A client connection whose request heads are checked before hyper sees them (see the
/// module docs of [`crate::framing`]). Writes go straight through.
///
/// Reads go straight into hyper's buffer and are checked there: bytes that may not go on yet
/// (a head read in part) are taken back out and held here until the head is whole. So a
/// connection holds no buffer of its own between heads, and the common read — whole heads
/// and their bodies — is copied once, from the socket.
#[derive(Debug)]
pub struct FramedIo<T> {
    inner: T,
    /// Bytes held back: `[pos, released)` checked and due to hyper, `[released, filled)` not
    /// yet checked (a head in part). Empty, without an allocation, while nothing is held.
    held: Vec<u8>,
    pos: usize,
    released: usize,
    filled: usize,
    checker: Checker,
}

/// Where the client's byte stream stands as far as it was checked, and what a refusal needs.
#[derive(Debug)]
struct Checker {
    state: State,
    limits: HeadLimits,
    /// Heads handed to hyper so far.
    heads: u64,
    verdict: Arc<Verdict>,
    rejections: Rejections,
    peer: SocketAddr,
    /// `limits.header_read_timeout`: the longest wait for a whole head, from the connection's
    /// start or its last answer.
    header_read_timeout: Duration,
    /// Made once a connection (HTTP/1 only) and kept armed: it fires by the time a head is
    /// due, that is `header_read_timeout` after the connection opened or after its last
    /// answer went out, with no request under way; at each firing it either ends the
    /// connection or is set to the next time it must look again (see
    /// [`Checker::head_timed_out`]). hyper's own header timer is off: it is made and dropped
    /// for every request.
    head_timer: Option<Pin<Box<Sleep>>>,
    /// The waker `head_timer` was last polled with: while it is the task's and the timer has
    /// not fired, the timer is not polled again (a read returns `Pending` once or twice a
    /// request, and each poll of a `Sleep` costs a few hundred instructions).
    timer_waker: Option<Waker>,
}

/// How far [`Checker::advance`] went through a run of bytes.
#[derive(Debug, Clone, Copy)]
struct Advanced {
    /// Bytes from the start of the run that may go on to hyper.
    released: usize,
    /// The bytes after them are dropped (a refused head, a broken body), not held.
    drop_rest: bool,
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
        let checker = Checker {
            header_read_timeout,
            head_timer,
            timer_waker: None,
            state: if h2 { State::Passthrough } else { State::Sniff },
            limits,
            heads: 0,
            verdict,
            rejections,
            peer,
        };
        Self { inner, held: Vec::new(), pos: 0, released: 0, filled: 0, checker }
    }

    /// Checks the held bytes not yet checked, as far as they go.
    fn check_held(&mut self) {
        let advanced = self.checker.advance(&self.held[self.released..self.filled]);
        self.released += advanced.released;
        if advanced.drop_rest {
            self.filled = self.released;
        }
    }

    /// Holds `rest`, a head in part read into hyper's buffer, until it is whole.
    fn hold(&mut self, rest: &[u8]) {
        let size = INITIAL_BUFFER.max(rest.len() + 1024);
        if self.held.len() < size {
            self.held = vec![0; size];
        }
        self.held[..rest.len()].copy_from_slice(rest);
        (self.pos, self.released, self.filled) = (0, 0, rest.len());
    }

    /// Makes room after `filled` for another read: drops what hyper has taken, and grows the
    /// buffer only for a head that does not fit.
    fn make_room(&mut self) {
        let room = self.held.len() - self.filled;
        if room >= 1024 || (room > 0 && self.pos == 0) {
            return;
        }
        if self.pos > 0 {
            self.held.copy_within(self.pos..self.filled, 0);
            (self.released, self.filled) = (self.released - self.pos, self.filled - self.pos);
            self.pos = 0;
        }
        if self.filled == self.held.len() {
            // A head longer than the buffer (the limit refuses it before it grows further).
            let grown = (self.held.len() * 2).min(self.checker.limits.max_head + INITIAL_BUFFER);
            self.held.resize(grown.max(self.held.len() + INITIAL_BUFFER), 0);
        }
    }
}

impl Checker {
    /// Checks `bytes`, the next ones of the stream, as far as they go: bodies are released as
    /// they come, a head once it is whole and sound. A head in part at the end is neither
    /// released nor dropped (its bytes come again, with more, in the next call).
    fn advance(&mut self, bytes: &[u8]) -> Advanced {
        let mut released = 0;
        let drop_rest = Advanced { released: 0, drop_rest: true };
        while released < bytes.len() {
            let rest = &bytes[released..];
            match &mut self.state {
                State::Sniff => {
                    let n = rest.len().min(H2_PREFACE.len());
                    if rest[..n] != H2_PREFACE[..n] {
                        self.state = State::Head { scanned: 0 };
                    } else if n == H2_PREFACE.len() {
                        self.state = State::Passthrough;
                    } else {
                        break;
                    }
                }
                State::Passthrough => released = bytes.len(),
                State::Length { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    released += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Head { scanned: 0 };
                    }
                }
                State::Chunked(chunked) => match chunked.advance(rest) {
                    Ok(n) => {
                        released += n;
                        if chunked.is_done() {
                            self.state = State::Head { scanned: 0 };
                        }
                    }
                    Err(_) => {
                        // Where this body ends cannot be told: hand on what was sound, then
                        // the end of the stream, so hyper fails the body (and the upstream
                        // request with it) and reads nothing after it.
                        self.rejections.record(Reason::Chunked, self.peer);
                        self.state = State::Eof;
                        return Advanced { released, ..drop_rest };
                    }
                },
                State::Head { scanned } => match head::find_end(rest, scanned) {
                    Err(reason) => {
                        self.refuse(reason);
                        return Advanced { released, ..drop_rest };
                    }
                    Ok(Some(end)) if end > self.limits.max_head => {
                        self.refuse(Reason::HeadTooLarge);
                        return Advanced { released, ..drop_rest };
                    }
                    Ok(Some(end)) => match head::check(&rest[..end], &self.limits) {
                        Ok(framing) => {
                            released += end;
                            self.heads += 1;
                            self.state = match framing {
                                BodyFraming::Empty => State::Head { scanned: 0 },
                                BodyFraming::Length(left) => State::Length { left },
                                BodyFraming::Chunked => State::Chunked(Chunked::new()),
                            };
                        }
                        Err(reason) => {
                            self.refuse(reason);
                            return Advanced { released, ..drop_rest };
                        }
                    },
                    Ok(None) => {
                        if let Some(reason) = incomplete_over_limit(rest, &self.limits) {
                            self.refuse(reason);
                            return Advanced { released, ..drop_rest };
                        }
                        break;
                    }
                },
                State::Refused { .. } | State::Silent | State::Eof => {
                    return Advanced { released, ..drop_rest };
                }
            }
        }
        Advanced { released, drop_rest: false }
    }

    /// True once the connection has waited for a head longer than the header read timeout:
    /// since it opened, or since its last answer went out, with no request under way (a
    /// head in part does not stop the clock). While a request or its answer is under way, the
    /// timer only looks again one timeout later.
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let timing = matches!(
            self.state,
            State::Sniff | State::Head { .. } | State::Length { .. } | State::Chunked(_)
        );
        let Some(timer) = self.head_timer.as_mut().filter(|_| timing) else { return false };
        let waker = cx.waker();
        if !timer.is_elapsed() && self.timer_waker.as_ref().is_some_and(|known| known.will_wake(waker)) {
            // Armed with this task's waker: it wakes the task when it fires.
            return false;
        }
        self.timer_waker = Some(waker.clone());
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = if self.heads > self.verdict.answered() {
                now + self.header_read_timeout
            } else {
                let deadline = self.verdict.idle_since() + self.header_read_timeout;
                if now >= deadline {
                    return true;
                }
                deadline
            };
            timer.as_mut().reset(deadline);
        }
        false
    }

    /// Refuses the head being read: hyper gets the stand-in request, the service the reason.
    fn refuse(&mut self, reason: Reason) {
        self.rejections.record(reason, self.peer);
        self.verdict.refuse(self.heads + 1, reason);
        self.state = State::Refused { sent: 0 };
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

impl<T: AsyncRead + Unpin> FramedIo<T> {
    /// Reads until the first bytes tell the HTTP/2 connection preface from an HTTP/1 head:
    /// true for HTTP/2 (or a TLS connection that chose h2), false for HTTP/1, which is also
    /// what a connection that closed or timed out before saying is served as (hyper then reads
    /// the end). The bytes read here are handed on first, checked like any others.
    pub async fn sniff(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_sniff(cx)).await
    }

    fn poll_sniff(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            match self.checker.state {
                State::Sniff => {}
                State::Passthrough => return Poll::Ready(Ok(true)),
                _ => return Poll::Ready(Ok(false)),
            }
            if self.held.is_empty() {
                self.held = vec![0; SNIFF_BUFFER];
            }
            ready!(self.poll_read_held(cx))?;
        }
    }

    /// Reads the next bytes after the ones held and checks them. At the client's end, or once
    /// the head timer ran out, a head in part is dropped and hyper sees the end of the stream.
    fn poll_read_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.make_room();
        let mut read = ReadBuf::new(&mut self.held[self.filled..]);
        let n = match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
            Poll::Ready(result) => result.map(|()| read.filled().len())?,
            Poll::Pending if self.head_timed_out(cx) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        };
        if n == 0 {
            self.filled = self.released;
            self.checker.state = State::Eof;
        } else {
            self.filled += n;
            self.check_held();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.pos < this.released {
                let n = (this.released - this.pos).min(out.remaining());
                out.put_slice(&this.held[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.filled {
                    // All handed on: nothing is held until a head comes in part again.
                    this.held = Vec::new();
                    (this.pos, this.released, this.filled) = (0, 0, 0);
                }
                return Poll::Ready(Ok(()));
            }
            match this.checker.state {
                State::Refused { sent } => {
                    let n = (STAND_IN.len() - sent).min(out.remaining());
                    out.put_slice(&STAND_IN[sent..sent + n]);
                    this.checker.state = if sent + n == STAND_IN.len() {
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
                // HTTP/2 with nothing of ours held: straight from the socket.
                State::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, out),
                _ => {}
            }
            if this.filled > this.released {
                // A head in part is held: the next bytes join it here.
                ready!(this.poll_read_held(cx))?;
                continue;
            }
            // Nothing held: the bytes go into hyper's buffer and are checked there.
            let before = out.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, out) {
                Poll::Ready(result) => result?,
                Poll::Pending if this.head_timed_out(cx) => continue,
                Poll::Pending => return Poll::Pending,
            }
            let read = &out.filled()[before..];
            if read.is_empty() {
                // The client closed.
                this.checker.state = State::Eof;
                continue;
            }
            let advanced = this.checker.advance(read);
            if !advanced.drop_rest && advanced.released < read.len() {
                // A head in part: taken back out of hyper's buffer until it is whole.
                this.hold(&read[advanced.released..]);
            }
            out.set_filled(before + advanced.released);
            if advanced.released > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T> FramedIo<T> {
    /// True once a head held back has taken longer than the header read timeout: the held
    /// bytes are dropped and hyper sees the end of the stream (and closes).
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.checker.head_timed_out(cx) {
            return false;
        }
        tracing::debug!(peer = %self.checker.peer, "request head not received in time");
        self.filled = self.released;
        self.checker.state = State::Eof;
        true
    }
}

impl<T> FramedIo<T> {
    /// A `101` going out (the answer said so, see [`Verdict::switch`]): the connection now
    /// carries the protocol the client switched to (a tunnel the route allowed), whose bytes
    /// are not HTTP/1 heads to check.
    fn note_switch(&mut self, first: &[u8]) {
        if first.starts_with(SWITCHING)
            && !matches!(self.checker.state, State::Passthrough)
            && self.checker.verdict.is_switching()
        {
            self.checker.state = State::Passthrough;
            self.check_held();
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::Ordering;
    use std::task::Waker;

    use super::*;
    use crate::metrics::Metrics;

    const LIMITS: HeadLimits = HeadLimits { max_head: 8 * 1024, max_headers: 100, max_target: 4096 };

    /// A client that sends `pieces`, one per read with a wait between them, then closes.
    #[derive(Debug)]
    struct Client {
        pieces: VecDeque<Vec<u8>>,
        wait: bool,
    }

    impl AsyncRead for Client {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if std::mem::take(&mut this.wait) {
                return Poll::Pending;
            }
            if let Some(mut piece) = this.pieces.pop_front() {
                let n = piece.len().min(out.remaining());
                out.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.pieces.push_front(piece.split_off(n));
                }
                // A pause before the next piece; none before the end.
                this.wait = !this.pieces.is_empty();
            }
            Poll::Ready(Ok(()))
        }
    }

    fn framed(pieces: Vec<Vec<u8>>) -> (FramedIo<Client>, Arc<Verdict>) {
        let verdict = Arc::new(Verdict::default());
        let rejections = Rejections::register(&Metrics::new(&[1.0]));
        let peer = "127.0.0.1:9".parse().unwrap();
        let client = Client { pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(), wait: false };
        let io =
            FramedIo::new(client, false, LIMITS, Duration::from_secs(30), verdict.clone(), rejections, peer);
        (io, verdict)
    }

    /// Everything hyper would read, `room` bytes of buffer at a time, until the end of the
    /// stream or a read that waits; and the most bytes the connection held at once.
    fn read_all(io: &mut FramedIo<Client>, room: usize) -> (Vec<u8>, usize) {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut all, mut held) = (Vec::new(), 0);
        loop {
            let mut space = vec![0; room];
            let mut out = ReadBuf::new(&mut space);
            let ready = Pin::new(&mut *io).poll_read(&mut cx, &mut out);
            held = held.max(io.held.len());
            match ready {
                Poll::Ready(Ok(())) if out.filled().is_empty() => return (all, held),
                Poll::Ready(Ok(())) => all.extend_from_slice(out.filled()),
                Poll::Ready(Err(e)) => panic!("read failed: {e}"),
                // The client's pause between pieces, or the silence after a stand-in.
                Poll::Pending if io.inner.pieces.is_empty() || io.checker.state == State::Silent => {
                    return (all, held);
                }
                Poll::Pending => {}
            }
        }
    }

    const GOOD: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        GET /d HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn sound_heads_and_bodies_go_on_unchanged_however_the_reads_split_them() {
        for cut in 0..=GOOD.len() {
            for room in [GOOD.len(), 7] {
                let (mut io, verdict) = framed(vec![GOOD[..cut].to_vec(), GOOD[cut..].to_vec()]);
                let (read, _) = read_all(&mut io, room);
                assert_eq!(read, GOOD, "cut at {cut}, {room} bytes of room");
                assert_eq!(io.checker.heads, 4);
                assert_eq!(verdict.refused_at.load(Ordering::Relaxed), 0);
            }
        }
    }

    #[tokio::test]
    async fn whole_heads_are_never_held() {
        let (mut io, _) = framed(vec![GOOD.to_vec()]);
        let (read, held) = read_all(&mut io, 16 * 1024);
        assert_eq!(read, GOOD);
        assert_eq!(held, 0, "read and checked in hyper's buffer");
        assert_eq!(io.held.capacity(), 0);
    }

    #[tokio::test]
    async fn a_head_in_part_is_held_until_whole_and_let_go_after() {
        let (head, rest) = GOOD.split_at(10);
        let (mut io, _) = framed(vec![head.to_vec(), rest.to_vec()]);
        let (read, held) = read_all(&mut io, 16 * 1024);
        assert_eq!(read, GOOD);
        assert!(held > 0, "the first ten bytes waited for the rest");
        assert_eq!(io.held.capacity(), 0, "nothing is kept once handed on");
    }

    #[tokio::test]
    async fn a_bad_head_after_good_ones_is_replaced_by_the_stand_in_however_the_reads_split_it() {
        let bad = b"GET /e HTTP/1.1\r\nhost: x\r\nx-bad : 1\r\n\r\nGET /f HTTP/1.1\r\nhost: x\r\n\r\n";
        let wire = [GOOD, bad].concat();
        let mut expected = GOOD.to_vec();
        expected.extend_from_slice(STAND_IN);
        for cut in 0..=wire.len() {
            let (mut io, verdict) = framed(vec![wire[..cut].to_vec(), wire[cut..].to_vec()]);
            let (read, _) = read_all(&mut io, wire.len());
            assert_eq!(read, expected, "cut at {cut}");
            assert_eq!(verdict.refused_at.load(Ordering::Relaxed), 5, "the fifth request stands in");
        }
    }

    #[tokio::test]
    async fn the_h2_preface_passes_through_however_it_is_split() {
        let wire = [&H2_PREFACE[..], b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
        for cut in 0..=wire.len() {
            let (mut io, _) = framed(vec![wire[..cut].to_vec(), wire[cut..].to_vec()]);
            let (read, _) = read_all(&mut io, 64);
            assert_eq!(read, wire, "cut at {cut}");
            assert_eq!(io.checker.state, State::Passthrough);
        }
    }

    /// What `sniff` says, driven to its answer as the client's pieces come.
    fn sniffed(io: &mut FramedIo<Client>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match io.poll_sniff(&mut cx) {
                Poll::Ready(result) => return result.expect("sniff"),
                Poll::Pending => {
                    assert!(!io.inner.pieces.is_empty(), "sniff waits for a client that is done")
                }
            }
        }
    }

    #[tokio::test]
    async fn the_first_bytes_tell_h2c_from_http_1_and_all_go_on_after_however_they_are_split() {
        let h2 = [&H2_PREFACE[..], b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
        // A first head longer than the first read's room.
        let long = [&b"GET /long HTTP/1.1\r\nx-long: "[..], &[b'a'; 3000], b"\r\n\r\n", GOOD].concat();
        for (wire, is_h2) in [(h2.as_slice(), true), (GOOD, false), (long.as_slice(), false)] {
            for cut in 0..=wire.len() {
                let (mut io, _) = framed(vec![wire[..cut].to_vec(), wire[cut..].to_vec()]);
                assert_eq!(sniffed(&mut io), is_h2, "cut at {cut}");
                let (read, _) = read_all(&mut io, 64);
                assert_eq!(read, wire, "cut at {cut}");
                assert_eq!(io.held.capacity(), 0, "nothing is kept once handed on (cut at {cut})");
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_before_its_first_byte_is_http_1_at_its_end() {
        let (mut io, _) = framed(Vec::new());
        assert!(!sniffed(&mut io));
        assert_eq!(read_all(&mut io, 64).0, b"");
    }

    #[tokio::test]
    async fn a_client_that_closes_within_a_head_ends_the_stream_after_the_sound_requests() {
        let (mut io, _) = framed(vec![GOOD.to_vec(), b"GET /x HTTP/1.1\r\nho".to_vec()]);
        let (read, _) = read_all(&mut io, 16 * 1024);
        assert_eq!(read, GOOD);
        assert_eq!(io.checker.state, State::Eof);
    }
}
