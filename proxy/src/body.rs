//! The body type every stage passes along: a static answer, a streamed upstream body that
//! carries its [`Exchange`] (the endpoint's in-flight count and the connection), a downstream
//! request body that can be replayed while it has not been sent, or any other body boxed.
//! [`Guarded`] is the one body that holds something (an exchange, a permit) until a body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::h1::{ResponseBody, Stream};

/// Errors of body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A request or response body.
    #[project = BodyProj]
    #[derive(Debug)]
    pub enum Body {
        /// No bytes.
        Empty,
        /// One chunk held in memory (cache hits, error answers): no allocation to send.
        Full { data: Option<Bytes> },
        /// A response body streamed from an endpoint; its exchange keeps the endpoint's
        /// in-flight count until the last byte (or an error, or the client going away). The
        /// connection goes back to the endpoint's idle connections after the last byte (the
        /// body itself gives it back, see [`crate::h1`]); on an error or when the body is
        /// dropped early, it is closed.
        Upstream { #[pin] inner: Guarded<ResponseBody<Stream>, Exchange> },
        /// A downstream request body on its way upstream; see [`ReplayableBody`]. Boxed: it is
        /// the largest of the bodies, and a body's size is part of every move of an answer.
        Downstream { inner: Box<ReplayableBody> },
        /// Anything else (compression, tee into the cache, …).
        Boxed { #[pin] inner: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self::Empty
    }

    /// A body of one chunk.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() { Self::Empty } else { Self::Full { data: Some(data) } }
    }

    /// An upstream response body that holds `exchange` until its end (let go at once when
    /// there is no body, as for `HEAD`, 204 and 304).
    pub fn upstream(inner: ResponseBody<Stream>, exchange: Exchange) -> Self {
        let end = http_body::Body::is_end_stream(&inner);
        let mut inner = Guarded::new(inner, exchange);
        if end {
            inner.release();
        }
        Self::Upstream { inner }
    }

    /// The endpoint's connection behind an upstream `101` answer, for a tunnel; `None` for
    /// any other body.
    pub fn into_upgraded(self) -> Option<crate::h1::Upgraded<Stream>> {
        match self {
            Self::Upstream { inner } => {
                let (inner, _exchange) = inner.into_parts();
                inner.into_upgraded()
            }
            _ => None,
        }
    }

    /// Boxes any body whose errors convert into [`BoxError`].
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::Boxed { inner: body.map_err(Into::into).boxed_unsync() }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            BodyProj::Empty => Poll::Ready(None),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Upstream { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Downstream { inner } => Pin::new(inner).poll_frame(cx),
            BodyProj::Boxed { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full { data } => data.is_none(),
            Self::Upstream { inner } => inner.is_end_stream(),
            Self::Downstream { inner } => inner.is_end_stream(),
            Self::Boxed { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Upstream { inner } => inner.size_hint(),
            Self::Downstream { inner } => inner.size_hint(),
            Self::Boxed { inner } => inner.size_hint(),
        }
    }
}

/// When a [`Guarded`] body lets its guard go, besides on an error and when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The poll that finds the body over (no frame left).
    Over,
    /// The last frame handed on (the body says it has ended after it), or the poll that finds
    /// the body over: for guards whose holder is done once the bytes are out.
    LastFrame,
}

/// A value a [`Guarded`] body whose errors are `E` holds: its `Drop` gives something back (a
/// permit, an endpoint's in-flight count).
pub trait Guard<E> {
    /// When the body lets it go.
    const UNTIL: Until = Until::Over;

    /// The body broke off with `error`; the guard is let go next.
    fn broke_off(&self, _error: &E) {}
}

pin_project! {
    /// A body that holds a [`Guard`] until the body ends, breaks off with an error, or is
    /// dropped, whichever comes first. The frames pass through untouched.
    #[derive(Debug)]
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// `inner`, holding `guard` until its end.
    pub fn new(inner: B, guard: G) -> Self {
        Self { inner, guard: Some(guard) }
    }

    /// Lets the guard go now.
    pub fn release(&mut self) {
        self.guard.take();
    }

    /// The body and the guard, if it still holds it.
    pub fn into_parts(self) -> (B, Option<G>) {
        (self.inner, self.guard)
    }
}

impl<B: http_body::Body, G: Guard<B::Error>> http_body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(error))) => {
                if let Some(guard) = this.guard.as_ref() {
                    guard.broke_off(error);
                }
                true
            }
            Poll::Ready(Some(Ok(_))) => G::UNTIL == Until::LastFrame && this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            // The body has done its part first (an upstream body gave its connection back).
            this.guard.take();
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

/// Where an upstream exchange belongs: the endpoint that counts it in flight
/// (`crate::upstream::Endpoint`).
pub trait Home: Send + Sync + std::fmt::Debug {
    /// One exchange fewer in flight.
    fn finished(&self);

    /// An exchange's response body broke off after its head with `error`.
    fn broke_off(&self, error: &crate::h1::Error);
}

/// One exchange's hold on its endpoint: counted in flight there until it is dropped. The
/// connection itself travels in the response body, which gives it back after a clean end.
#[derive(Debug)]
pub struct Exchange {
    home: Arc<dyn Home>,
}

impl Exchange {
    /// An exchange that `home` has already counted in flight; the count drops with it.
    pub fn counted(home: Arc<dyn Home>) -> Self {
        Self { home }
    }
}

impl Guard<crate::h1::Error> for Exchange {
    /// The endpoint is done with the exchange once its last byte is out (the connection has
    /// gone back to its idle ones by then).
    const UNTIL: Until = Until::LastFrame;

    fn broke_off(&self, error: &crate::h1::Error) {
        self.home.broke_off(error);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.home.finished();
    }
}

/// A downstream request body that stays in a shared slot until an upstream connection first
/// reads it. A try that fails before reading it (a refused connection, say) leaves it in the
/// slot, so the request can be retried on another endpoint without buffering the body.
///
/// While it streams, a client that keeps it waiting longer than the read timeout ends it with
/// [`BodyTimedOut`], a body that grows past its limit ends with [`BodyTooLarge`] (before the
/// frame that crosses it goes anywhere, so the upstream request is cut off, never complete),
/// and its [`Upload`] tells the forward stage how far it has gone.
#[derive(Debug)]
pub struct ReplayableBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
    hint: SizeHint,
    end: bool,
    upload: Arc<Upload>,
    read_timeout: Duration,
    /// Most bytes the body may have.
    limit: u64,
    /// Bytes handed on so far.
    read: u64,
    /// Since when the client has kept a read waiting (none while frames flow).
    waiting_since: Option<Instant>,
    /// Armed while the client keeps the body waiting.
    idle: Option<Pin<Box<Sleep>>>,
}

/// The owner's handle on a [`ReplayableBody`]'s slot.
#[derive(Debug, Clone)]
pub struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
    upload: Arc<Upload>,
    read_timeout: Duration,
    limit: u64,
}

/// The request body grew past its route's `max_body_size` (the limit, in bytes).
#[derive(Debug, thiserror::Error)]
#[error("the request body is over {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client kept its request body waiting for longer than the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// How far a streamed request body has gone upstream: what the forward stage needs to time a
/// try from the end of the upload rather than its start. Instants are kept as microseconds
/// since `created`, so that every field is an atomic.
#[derive(Debug)]
pub struct Upload {
    created: Instant,
    /// When the last frame was handed over (or the body was taken).
    last_progress: AtomicU64,
    /// The last read found the client had sent nothing yet: the client, not the endpoint,
    /// is holding the upload up.
    waiting_on_client: AtomicBool,
    /// When a try first read the body; `NOT_YET` before.
    taken: AtomicU64,
    /// When the body was read to its end, broke off or was let go; `NOT_YET` before.
    ended: AtomicU64,
    ended_notify: Notify,
}

const NOT_YET: u64 = u64::MAX;

impl Upload {
    pub(crate) fn new() -> Self {
        Self {
            created: Instant::now(),
            last_progress: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            taken: AtomicU64::new(NOT_YET),
            ended: AtomicU64::new(NOT_YET),
            ended_notify: Notify::new(),
        }
    }

    /// When the last frame went to the endpoint's connection (or the body was created).
    pub fn last_progress(&self) -> Instant {
        self.at(self.last_progress.load(Ordering::Acquire))
    }

    /// True when the last read waited on the client.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Acquire)
    }

    /// Resolves once the body has been read to its end, broke off or was let go.
    pub async fn ended(&self) {
        // Registered before the check, so an end in between is not missed.
        let notified = self.ended_notify.notified();
        if self.ended.load(Ordering::Acquire) != NOT_YET {
            return;
        }
        notified.await;
    }

    /// How long the body has been streaming up: from when a try took it to its end (or to
    /// now, while it streams); zero when no try has taken it.
    pub fn streamed(&self) -> Duration {
        let taken = self.taken.load(Ordering::Acquire);
        if taken == NOT_YET {
            return Duration::ZERO;
        }
        let ended = match self.ended.load(Ordering::Acquire) {
            NOT_YET => self.micros(Instant::now()),
            ended => ended,
        };
        Duration::from_micros(ended.saturating_sub(taken))
    }

    /// A try took the body from its slot.
    pub(crate) fn take(&self) {
        let now = self.micros(Instant::now());
        let _ = self.taken.compare_exchange(NOT_YET, now, Ordering::AcqRel, Ordering::Acquire);
        self.last_progress.store(now, Ordering::Release);
    }

    /// One frame went to the endpoint's connection.
    pub(crate) fn frame(&self) {
        self.last_progress.store(self.micros(Instant::now()), Ordering::Release);
        self.waiting_on_client.store(false, Ordering::Release);
    }

    /// A read found nothing from the client yet.
    pub(crate) fn wait_on_client(&self) {
        self.waiting_on_client.store(true, Ordering::Release);
    }

    /// The body ended, broke off or was let go; the first call counts.
    pub(crate) fn finish(&self) {
        let now = self.micros(Instant::now());
        if self.ended.compare_exchange(NOT_YET, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.ended_notify.notify_waiters();
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.created).as_micros()).unwrap_or(NOT_YET - 1)
    }

    fn at(&self, micros: u64) -> Instant {
        self.created + Duration::from_micros(micros)
    }
}

impl BodySlot {
    /// Puts `body` in a new slot; a client that keeps it waiting for `read_timeout` ends it,
    /// and so does one that sends more than `limit` bytes.
    pub fn new(body: Incoming, read_timeout: Duration, limit: u64) -> Self {
        let hint = http_body::Body::size_hint(&body);
        let end = http_body::Body::is_end_stream(&body);
        let slot = Arc::new(Mutex::new(Some(body)));
        Self { slot, hint, end, upload: Arc::new(Upload::new()), read_timeout, limit }
    }

    /// True while no try has started reading the body.
    pub fn is_unsent(&self) -> bool {
        self.end || self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// The body's progress upstream.
    pub fn upload(&self) -> &Upload {
        &self.upload
    }

    /// A body for one try; it takes the bytes from the slot when first polled.
    pub fn body(&self) -> Body {
        if self.end {
            return Body::Empty;
        }
        Body::Downstream {
            inner: Box::new(ReplayableBody {
                slot: self.slot.clone(),
                taken: None,
                hint: self.hint,
                end: false,
                upload: self.upload.clone(),
                read_timeout: self.read_timeout,
                limit: self.limit,
                read: 0,
                waiting_since: None,
                idle: None,
            }),
        }
    }
}

impl http_body::Body for ReplayableBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.taken.is_none() {
            match this.slot.lock().ok().and_then(|mut s| s.take()) {
                Some(body) => {
                    this.taken = Some(body);
                    this.upload.take();
                }
                None => {
                    // Another try already took the body: this one cannot send it.
                    this.end = true;
                    return Poll::Ready(Some(Err("request body already sent on another try".into())));
                }
            }
        }
        let Some(body) = this.taken.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        let upload = &this.upload;
        match &polled {
            Poll::Pending => {
                upload.wait_on_client();
                // The read timeout runs from the first read the client leaves waiting, not
                // from its last frame: time the endpoint took to ask for more is not the
                // client's.
                let deadline = *this.waiting_since.get_or_insert_with(Instant::now) + this.read_timeout;
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if idle.deadline() != deadline {
                    idle.as_mut().reset(deadline);
                }
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.end = true;
                upload.finish();
                return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.read_timeout)))));
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                this.read = this.read.saturating_add(len);
                if this.read > this.limit {
                    this.end = true;
                    upload.finish();
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                }
                upload.frame();
                if body.is_end_stream() {
                    upload.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.end = true;
                upload.finish();
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.end || self.taken.as_ref().is_some_and(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.taken.as_ref().map_or_else(|| self.hint, http_body::Body::size_hint)
    }
}

impl Drop for ReplayableBody {
    /// A connection that stops reading a body it took (it sent the declared length, or gave
    /// up) ends the upload as far as the timers go.
    fn drop(&mut self) {
        if self.taken.is_some() {
            self.upload.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    /// An answer's body is moved with it through every stage, and hyper keeps a slot of its
    /// size in every idle client connection: what is large in a variant lives out of line.
    #[test]
    fn a_body_stays_small() {
        let size = std::mem::size_of::<super::Body>();
        assert!(size <= 48, "Body is {size} bytes");
    }

    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// Counts what a [`Guarded`] body tells it: errors heard, and whether it was let go.
    #[derive(Debug, Clone, Default)]
    struct Witness {
        errors: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Guard<&'static str> for Witness {
        fn broke_off(&self, _: &&'static str) {
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn frames(
        items: Vec<Result<&'static str, &'static str>>,
    ) -> impl http_body::Body<Data = Bytes, Error = &'static str> {
        let frames =
            items.into_iter().map(|item| item.map(|text| Frame::data(Bytes::from_static(text.as_bytes()))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_guard_hears_of_an_error_once_before_it_is_let_go_and_of_nothing_else() {
        let witness = Witness::default();
        let mut body = std::pin::pin!(Guarded::new(frames(vec![Ok("a"), Err("cut")]), witness.clone()));
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(witness.errors.load(Ordering::SeqCst), 0);
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(witness.errors.load(Ordering::SeqCst), 1);
        assert!(witness.dropped.load(Ordering::SeqCst), "let go with the error");
        assert!(body.frame().await.is_none());
        assert_eq!(witness.errors.load(Ordering::SeqCst), 1, "heard once");

        // A clean end, and an error after the guard was let go, are not heard of.
        let witness = Witness::default();
        let whole = Guarded::new(frames(vec![Ok("a"), Ok("b")]), witness.clone());
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "ab");
        let mut released = Guarded::new(frames(vec![Err("cut")]), witness.clone());
        released.release();
        assert!(released.collect().await.is_err());
        assert_eq!(witness.errors.load(Ordering::SeqCst), 0);
    }
}
