//! The client side of a test: request bodies (whole, empty, or streamed through a channel the
//! test feeds) and responses collected with their trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use tokio::sync::mpsc;

/// Errors of test bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type of the test clients.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// Request bodies.
pub mod body {
    use super::*;

    /// No body.
    pub fn empty() -> TestBody {
        http_body_util::Empty::new().map_err(|never| match never {}).boxed()
    }

    /// One chunk.
    pub fn full(data: impl Into<Bytes>) -> TestBody {
        http_body_util::Full::new(data.into()).map_err(|never| match never {}).boxed()
    }

    /// A body the test writes chunk by chunk; it ends when the sender is dropped.
    pub fn channel() -> (BodySender, TestBody) {
        let (tx, rx) = mpsc::channel(4);
        (BodySender { tx }, ChannelBody { rx }.boxed())
    }
}

/// The writing end of [`body::channel`].
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
}

impl BodySender {
    /// Sends one chunk; waits while the body is not being read (back-pressure). False when
    /// the reader went away.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> bool {
        self.tx.send(Ok(Frame::data(chunk.into()))).await.is_ok()
    }

    /// Sends trailers (the body ends after them).
    pub async fn trailers(self, trailers: HeaderMap) -> bool {
        self.tx.send(Ok(Frame::trailers(trailers))).await.is_ok()
    }

    /// Breaks the body off with an error: the reader sees a failed, incomplete body.
    pub async fn abort(self) {
        let _ = self.tx.send(Err("body aborted by the test".into())).await;
    }
}

/// A body fed by a channel of frames.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct Collected {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// Reads `response` to its end; an error when the body breaks off.
    pub async fn from<B>(response: Response<B>) -> Result<Self, BoxError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.map_err(Into::into)?;
        let trailers = collected.trailers().cloned();
        Ok(Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text; `None` when absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect()
    }
}
