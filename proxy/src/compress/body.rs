//! Streaming bodies: [`EncodeBody`] compresses a response body as it flows, [`DecodeBody`]
//! decompresses one. Neither buffers the whole body: each holds at most one input chunk, the
//! coding's window and the output of one step.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::codec::{Decoder, Encoder};
use super::metrics::Meter;
use crate::body::{Body, BoxError};

/// Largest chunk [`DecodeBody`] emits.
pub const DECODED_CHUNK: usize = 64 * 1024;

/// When an [`EncodeBody`] sends what the compressor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// When the coding emits output, and at the end: the best ratio.
    Coding,
    /// After every chunk from upstream, so each one (a server-sent event) reaches the client
    /// when the origin sends it.
    EveryChunk,
}

#[derive(Debug)]
enum State {
    Streaming,
    /// The compressed stream is finished; trailers (if any) are still to be sent.
    Trailers(Option<HeaderMap>),
    Done,
}

pin_project! {
    /// A body compressed as it streams.
    #[derive(Debug)]
    pub struct EncodeBody {
        #[pin]
        inner: Body,
        encoder: Encoder,
        flush: Flush,
        state: State,
        meter: Option<Meter>,
    }
}

impl EncodeBody {
    /// Compresses `inner` with `encoder`; `meter` records the bytes and time.
    pub fn new(inner: Body, encoder: Encoder, flush: Flush, meter: Option<Meter>) -> Self {
        Self { inner, encoder, flush, state: State::Streaming, meter }
    }
}

impl http_body::Body for EncodeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Trailers(trailers) => {
                    let trailers = trailers.take();
                    *this.state = State::Done;
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                State::Streaming => {}
            }
            let polled = ready!(this.inner.as_mut().poll_frame(cx));
            let started = Instant::now();
            let (input, output) = match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (data.len(), this.encoder.encode(&data, *this.flush == Flush::EveryChunk)?),
                    Err(frame) => {
                        *this.state = State::Trailers(frame.into_trailers().ok());
                        (0, this.encoder.finish()?)
                    }
                },
                Some(Err(error)) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    *this.state = State::Trailers(None);
                    (0, this.encoder.finish()?)
                }
            };
            if let Some(meter) = this.meter.as_mut() {
                meter.record(input, output.len(), started.elapsed());
            }
            if !output.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(output))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pin_project! {
    /// A body decompressed as it streams, in chunks of at most [`DECODED_CHUNK`] bytes.
    #[derive(Debug)]
    pub struct DecodeBody {
        #[pin]
        inner: Body,
        decoder: Decoder,
        state: State,
    }
}

impl DecodeBody {
    /// Decompresses `inner` with `decoder`.
    pub fn new(inner: Body, decoder: Decoder) -> Self {
        Self { inner, decoder, state: State::Streaming }
    }
}

impl http_body::Body for DecodeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if this.decoder.has_pending() {
                let output = this.decoder.pull(DECODED_CHUNK)?;
                if !output.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(output))));
                }
            }
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Trailers(trailers) => {
                    let trailers = trailers.take();
                    *this.state = State::Done;
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                State::Streaming => {}
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.decoder.push(data),
                    Err(frame) => {
                        this.decoder.finish()?;
                        *this.state = State::Trailers(frame.into_trailers().ok());
                    }
                },
                Some(Err(error)) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    this.decoder.finish()?;
                    *this.state = State::Trailers(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && !self.decoder.has_pending()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;

    use super::*;
    use crate::compress::Encoding;
    use crate::compress::codec::tests::{decode_all, sample};

    /// A body of `chunks` chunks of `size` bytes made on demand, counting what was taken.
    fn counted_stream(chunks: usize, size: usize, taken: Arc<AtomicUsize>) -> Body {
        let chunk = Bytes::from(sample(size));
        let stream = futures_util::stream::iter((0..chunks).map(move |_| {
            taken.fetch_add(chunk.len(), Ordering::SeqCst);
            Ok::<_, BoxError>(Frame::data(chunk.clone()))
        }));
        Body::boxed(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test]
    async fn streamed_bodies_round_trip_in_every_coding() {
        let body = sample(300 * 1024);
        for encoding in Encoding::COMPRESSING {
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
                body.chunks(7 * 1024).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            let inner = Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)));
            let encoder = Encoder::new(encoding, 4, None).unwrap();
            let encoded =
                EncodeBody::new(inner, encoder, Flush::Coding, None).collect().await.unwrap().to_bytes();
            assert_eq!(decode_all(encoding, &encoded), body, "{encoding}");

            let decoded = DecodeBody::new(Body::full(encoded), Decoder::new(encoding).unwrap())
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(decoded, body, "{encoding}");
        }
    }

    #[tokio::test]
    async fn a_large_body_streams_with_bounded_lag() {
        // 64 MiB in 16 KiB chunks: the compressed side must keep emitting as input arrives,
        // never holding more than the coding's window plus a chunk behind.
        const CHUNK: usize = 16 * 1024;
        const CHUNKS: usize = 4096;
        for encoding in Encoding::COMPRESSING {
            let taken = Arc::new(AtomicUsize::new(0));
            let inner = counted_stream(CHUNKS, CHUNK, taken.clone());
            let encoder = Encoder::new(encoding, 4, None).unwrap();
            let mut body = EncodeBody::new(inner, encoder, Flush::Coding, None);
            let mut frames = 0;
            let mut out = 0;
            let mut last_taken = 0;
            let mut max_lag = 0;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                let now = taken.load(Ordering::SeqCst);
                max_lag = max_lag.max(now - last_taken);
                last_taken = now;
                frames += 1;
                out += data.len();
            }
            assert_eq!(taken.load(Ordering::SeqCst), CHUNK * CHUNKS);
            assert!(frames > 16, "{encoding}: only {frames} frames for 64 MiB");
            assert!(max_lag <= 8 << 20, "{encoding}: {max_lag} bytes taken between two output frames");
            assert!(out < CHUNK * CHUNKS / 3, "{encoding}: {out} bytes out");
        }
    }

    #[tokio::test]
    async fn event_streams_are_flushed_per_chunk() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let inner = Body::boxed(http_body_util::StreamBody::new(stream));
        let encoder = Encoder::new(Encoding::Gzip, 6, None).unwrap();
        let mut body = EncodeBody::new(inner, encoder, Flush::EveryChunk, None);
        let mut decoder = Decoder::new(Encoding::Gzip).unwrap();
        for event in ["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n"] {
            tx.send(Ok(Frame::data(Bytes::from(event)))).await.unwrap();
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            decoder.push(frame);
            assert_eq!(decoder.pull(1024).unwrap(), event.as_bytes());
        }
    }

    #[tokio::test]
    async fn trailers_follow_the_finished_stream_and_errors_pass_through() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from(sample(5000)))), Ok(Frame::trailers(trailers.clone()))];
        let inner = Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let encoder = Encoder::new(Encoding::Zstd, 3, None).unwrap();
        let collected = EncodeBody::new(inner, encoder, Flush::Coding, None).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(decode_all(Encoding::Zstd, &collected.to_bytes()), sample(5000));

        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from(sample(5000)))), Err("upstream reset".into())];
        let inner = Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let encoder = Encoder::new(Encoding::Brotli, 4, None).unwrap();
        let error = EncodeBody::new(inner, encoder, Flush::Coding, None).collect().await.unwrap_err();
        assert_eq!(error.to_string(), "upstream reset");
    }

    #[tokio::test]
    async fn a_truncated_origin_stream_is_an_error_not_a_short_body() {
        let compressed = crate::compress::codec::compress(Encoding::Gzip, 6, &sample(20_000)).unwrap();
        let cut = Body::full(compressed.slice(..compressed.len() - 10));
        let result = DecodeBody::new(cut, Decoder::new(Encoding::Gzip).unwrap()).collect().await;
        assert!(result.is_err());
    }
}
