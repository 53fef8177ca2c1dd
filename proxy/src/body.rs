//! The body type every stage passes along: a static answer, a streamed upstream body that
//! carries its endpoint's in-flight guard and connection lease, a downstream request body that can be replayed
//! while it has not been sent, or any other body boxed.

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

use crate::upstream::{InFlight, Lease};

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
        /// A response body streamed from an endpoint; the guard keeps the endpoint's
        /// in-flight count until the last byte (or an error, or the client going away). The
        /// lease goes back to the endpoint's idle connections after the last byte; on an
        /// error or when the body is dropped early, the connection is closed with it.
        Upstream { #[pin] inner: Incoming, guard: Option<InFlight>, lease: Option<Lease> },
        /// A downstream request body on its way upstream; see [`ReplayableBody`].
        Downstream { inner: ReplayableBody },
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

    /// An upstream response body that holds `guard` until its end, and then gives the
    /// connection back (at once when there is no body, as for `HEAD`, 204 and 304).
    pub fn upstream(inner: Incoming, guard: InFlight, lease: Lease) -> Self {
        if http_body::Body::is_end_stream(&inner) {
            lease.release(&guard.endpoint().connections);
            return Self::Upstream { inner, guard: None, lease: None };
        }
        Self::Upstream { inner, guard: Some(guard), lease: Some(lease) }
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
            BodyProj::Upstream { inner, guard, lease } => {
                let mut inner = inner;
                let polled = inner.as_mut().poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        drop(lease.take());
                        drop(guard.take());
                        false
                    }
                    Poll::Pending => false,
                };
                if ended {
                    // The connection goes back before the in-flight count drops.
                    let guard = guard.take();
                    if let (Some(guard), Some(lease)) = (&guard, lease.take()) {
                        lease.release(&guard.endpoint().connections);
                    }
                }
                polled.map_err(Into::into)
            }
            BodyProj::Downstream { inner } => Pin::new(inner).poll_frame(cx),
            BodyProj::Boxed { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full { data } => data.is_none(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Downstream { inner } => inner.is_end_stream(),
            Self::Boxed { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Downstream { inner } => inner.size_hint(),
            Self::Boxed { inner } => inner.size_hint(),
        }
    }
}

/// A downstream request body that stays in a shared slot until an upstream connection first
/// reads it. A try that fails before reading it (a refused connection, say) leaves it in the
/// slot, so the request can be retried on another endpoint without buffering the body.
///
/// While it streams, a client that pauses longer than the read timeout ends it with
/// [`BodyTimedOut`], and its [`Upload`] tells the forward stage how far it has gone.
#[derive(Debug)]
pub struct ReplayableBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
    hint: SizeHint,
    end: bool,
    upload: Arc<Upload>,
    read_timeout: Duration,
    /// When the client last delivered a frame (or the body was taken).
    last_read: Instant,
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
}

/// The client paused its request body for longer than the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// How far a streamed request body has gone upstream: what the forward stage needs to time a
/// try from the end of the upload rather than its start.
#[derive(Debug, Default)]
pub struct Upload {
    /// Frames handed to the endpoint's connection.
    frames: AtomicU64,
    /// The last read found the client had sent nothing yet: the client, not the endpoint,
    /// is holding the upload up.
    waiting_on_client: AtomicBool,
    /// The body has been read to its end, or broke off.
    ended: AtomicBool,
    ended_notify: Notify,
}

impl Upload {
    /// Frames read from the client so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    /// True when the last read waited on the client.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Acquire)
    }

    /// Resolves once the body has been read to its end (or broke off).
    pub async fn ended(&self) {
        // Registered before the check, so an end in between is not missed.
        let notified = self.ended_notify.notified();
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn finish(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_notify.notify_waiters();
    }
}

impl BodySlot {
    /// Puts `body` in a new slot; a client that pauses it for `read_timeout` ends it.
    pub fn new(body: Incoming, read_timeout: Duration) -> Self {
        let hint = http_body::Body::size_hint(&body);
        let end = http_body::Body::is_end_stream(&body);
        Self { slot: Arc::new(Mutex::new(Some(body))), hint, end, upload: Arc::default(), read_timeout }
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
            inner: ReplayableBody {
                slot: self.slot.clone(),
                taken: None,
                hint: self.hint,
                end: false,
                upload: self.upload.clone(),
                read_timeout: self.read_timeout,
                last_read: Instant::now(),
                idle: None,
            },
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
                    this.last_read = Instant::now();
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
                upload.waiting_on_client.store(true, Ordering::Release);
                let deadline = this.last_read + this.read_timeout;
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
            Poll::Ready(Some(Ok(_))) => {
                this.last_read = Instant::now();
                upload.waiting_on_client.store(false, Ordering::Release);
                upload.frames.fetch_add(1, Ordering::AcqRel);
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
