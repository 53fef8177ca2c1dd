//! The codings' compressors and decompressors (async-compression's codecs), driven
//! synchronously over byte chunks: the streaming bodies and the cached variants share them.
//!
//! Memory per stream is bounded by the window: streamed brotli and zstd use a 1 MiB window
//! ([`STREAM_WINDOW_LOG`]), like nginx's brotli module (512 KiB) rather than the libraries'
//! 4–8 MiB defaults; gzip's window is always 32 KiB.

use std::io;

use async_compression::Level;
use async_compression::codecs::{
    BrotliDecoder, BrotliEncoder, DecodeV2, EncodeV2, GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder,
};
use async_compression::core::util::{PartialBuffer, WriteBuffer};
use bytes::{Buf, Bytes, BytesMut};

use super::Encoding;

/// Log2 of the window of streamed brotli and zstd: 1 MiB.
pub const STREAM_WINDOW_LOG: u32 = 20;
/// Largest window for whole bodies compressed at once (cached variants): 16 MiB.
const MAX_WINDOW_LOG: u32 = 24;
/// Smallest output space offered to a codec per call.
const MIN_SPARE: usize = 4 * 1024;

/// A compressor for one body.
pub struct Encoder {
    coder: Box<dyn EncodeV2 + Send>,
    out: BytesMut,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// A compressor for a streamed body in `encoding` at `level` (clamped to the coding's
    /// range). `size`: the body's length when known (`Content-Length`), which lets brotli and
    /// zstd use a smaller window (and less memory) for a small body; the window is at most
    /// [`STREAM_WINDOW_LOG`]. `None` for identity.
    pub fn new(encoding: Encoding, level: i32, size: Option<usize>) -> Option<Self> {
        Self::with_window(encoding, level, size, STREAM_WINDOW_LOG)
    }

    fn with_window(encoding: Encoding, level: i32, size: Option<usize>, max_window_log: u32) -> Option<Self> {
        let range = encoding.levels();
        let level = level.clamp(*range.start(), *range.end());
        let window_log = size.map_or(max_window_log, |n| {
            (usize::BITS - n.max(1024).saturating_sub(1).leading_zeros()).min(max_window_log)
        });
        let coder: Box<dyn EncodeV2 + Send> = match encoding {
            Encoding::Identity => return None,
            Encoding::Gzip => Box::new(GzipEncoder::new(Level::Precise(level).into())),
            Encoding::Brotli => {
                let mut params = async_compression::brotli::EncoderParams::default()
                    .quality(Level::Precise(level))
                    .window_size(window_log as i32)
                    .text_mode();
                if let Some(n) = size {
                    params = params.size_hint(n);
                }
                Box::new(BrotliEncoder::new(params))
            }
            Encoding::Zstd => Box::new(ZstdEncoder::new_with_params(
                level,
                &[async_compression::zstd::CParameter::window_log(window_log.max(10))],
            )),
        };
        Some(Self { coder, out: BytesMut::new() })
    }

    /// Compresses `input` and returns what the coding has emitted so far (often nothing for
    /// a small input). With `flush`, everything given so far is emitted, decodable at once.
    pub fn encode(&mut self, input: &[u8], flush: bool) -> io::Result<Bytes> {
        let mut input = PartialBuffer::new(input);
        let mut written = 0;
        loop {
            let spare = (input.unwritten().len() / 2).max(MIN_SPARE);
            self.out.resize(written + spare, 0);
            let mut output = WriteBuffer::new_initialized(&mut self.out[written..]);
            let before = input.written_len();
            self.coder.encode(&mut input, &mut output)?;
            let full = output.has_no_spare_space();
            let produced = output.written_len();
            written += produced;
            if input.unwritten().is_empty() && !full {
                break;
            }
            if produced == 0 && input.written_len() == before && !full {
                return Err(io::Error::other("compressor made no progress"));
            }
        }
        if flush {
            written = self.drain(written, |coder, output| coder.flush(output))?;
        }
        Ok(self.take(written))
    }

    /// Ends the stream: everything left, with the coding's trailer.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        let written = self.drain(0, |coder, output| coder.finish(output))?;
        Ok(self.take(written))
    }

    fn drain(
        &mut self,
        mut written: usize,
        mut step: impl FnMut(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<usize> {
        loop {
            self.out.resize(written + MIN_SPARE, 0);
            let mut output = WriteBuffer::new_initialized(&mut self.out[written..]);
            let done = step(self.coder.as_mut(), &mut output)?;
            written += output.written_len();
            if done {
                return Ok(written);
            }
        }
    }

    fn take(&mut self, written: usize) -> Bytes {
        self.out.truncate(written);
        self.out.split().freeze()
    }
}

/// Compresses a whole body at once (a cached variant).
pub fn compress(encoding: Encoding, level: i32, input: &[u8]) -> io::Result<Bytes> {
    let Some(mut encoder) = Encoder::with_window(encoding, level, Some(input.len()), MAX_WINDOW_LOG) else {
        return Ok(Bytes::copy_from_slice(input));
    };
    let mut out = BytesMut::from(encoder.encode(input, false)?);
    out.extend_from_slice(&encoder.finish()?);
    Ok(out.freeze())
}

/// A decompressor for one body. Input is pushed in chunks; output is pulled in bounded
/// pieces, so a small compressed chunk that expands a thousandfold is never held at once.
pub struct Decoder {
    coder: Box<dyn DecodeV2 + Send>,
    pending: Bytes,
    /// The last call filled its output: the coding may hold more.
    full: bool,
    /// The coding's end of stream was read.
    ended: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decompressor for `encoding`; `None` for identity.
    pub fn new(encoding: Encoding) -> Option<Self> {
        let coder: Box<dyn DecodeV2 + Send> = match encoding {
            Encoding::Identity => return None,
            Encoding::Gzip => Box::new(GzipDecoder::new()),
            Encoding::Brotli => Box::new(BrotliDecoder::new()),
            Encoding::Zstd => Box::new(ZstdDecoder::new()),
        };
        Some(Self { coder, pending: Bytes::new(), full: false, ended: false })
    }

    /// True while pushed input is not fully decoded and pulled.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.full
    }

    /// Adds compressed input.
    pub fn push(&mut self, input: Bytes) {
        if self.pending.is_empty() {
            self.pending = input;
        } else {
            let mut joined = BytesMut::with_capacity(self.pending.len() + input.len());
            joined.extend_from_slice(&self.pending);
            joined.extend_from_slice(&input);
            self.pending = joined.freeze();
        }
    }

    /// Decodes pending input into at most `max` bytes (at least one byte of room).
    pub fn pull(&mut self, max: usize) -> io::Result<Bytes> {
        let mut out = BytesMut::zeroed(max.max(1));
        let mut written = 0;
        while self.has_pending() && written < out.len() {
            if self.ended && !self.pending.is_empty() {
                // A further gzip member or zstd frame follows.
                self.coder.reinit()?;
                self.ended = false;
            }
            let mut input = PartialBuffer::new(&self.pending[..]);
            let mut output = WriteBuffer::new_initialized(&mut out[written..]);
            self.ended = self.coder.decode(&mut input, &mut output)? || self.ended;
            let consumed = input.written_len();
            let produced = output.written_len();
            self.full = output.has_no_spare_space();
            written += produced;
            self.pending.advance(consumed);
            if consumed == 0 && produced == 0 {
                break;
            }
        }
        out.truncate(written);
        Ok(out.freeze())
    }

    /// At the end of the input, once everything is pulled: an error when the stream was cut
    /// short.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "compressed body is truncated"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JSON-like body: repetitive but not trivially so.
    pub(crate) fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            let line = format!(
                "{{\"id\":{i},\"name\":\"item-{}\",\"price\":{}.{:02}}},",
                i * 7919 % 1000,
                i % 97,
                i % 100
            );
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    pub(crate) fn decode_all(encoding: Encoding, input: &[u8]) -> Vec<u8> {
        let mut decoder = Decoder::new(encoding).expect("a coding");
        decoder.push(Bytes::copy_from_slice(input));
        let mut out = Vec::new();
        while decoder.has_pending() {
            out.extend_from_slice(&decoder.pull(64 * 1024).expect("valid stream"));
        }
        decoder.finish().expect("complete stream");
        out
    }

    #[test]
    fn whole_bodies_round_trip_in_every_coding_and_level() {
        let body = sample(100 * 1024);
        for encoding in Encoding::COMPRESSING {
            for level in [*encoding.levels().start(), 5, *encoding.levels().end()] {
                let compressed = compress(encoding, level, &body).unwrap();
                assert!(compressed.len() < body.len() / 3, "{encoding} {level}: {}", compressed.len());
                assert_eq!(decode_all(encoding, &compressed), body, "{encoding} level {level}");
            }
        }
    }

    #[test]
    fn flushed_chunks_decode_as_they_arrive() {
        for encoding in Encoding::COMPRESSING {
            let mut encoder = Encoder::new(encoding, 5, None).unwrap();
            let mut decoder = Decoder::new(encoding).unwrap();
            for event in ["data: one\n\n", "data: two\n\n"] {
                let chunk = encoder.encode(event.as_bytes(), true).unwrap();
                assert!(!chunk.is_empty(), "{encoding}");
                decoder.push(chunk);
                assert_eq!(decoder.pull(1024).unwrap(), event.as_bytes(), "{encoding}");
            }
        }
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let body = sample(10_000);
        for encoding in Encoding::COMPRESSING {
            let compressed = compress(encoding, 5, &body).unwrap();
            let mut decoder = Decoder::new(encoding).unwrap();
            decoder.push(compressed.slice(..compressed.len() / 2));
            while decoder.has_pending() {
                decoder.pull(64 * 1024).unwrap();
            }
            assert!(decoder.finish().is_err(), "{encoding}: truncated stream accepted");
            let mut decoder = Decoder::new(encoding).unwrap();
            decoder.push(Bytes::from_static(b"definitely not compressed data at all"));
            assert!(decoder.pull(1024).is_err() || decoder.finish().is_err(), "{encoding}");
        }
    }

    #[test]
    fn output_is_pulled_in_bounded_pieces() {
        let body = vec![b'a'; 1 << 20];
        let compressed = compress(Encoding::Gzip, 9, &body).unwrap();
        assert!(compressed.len() < 4096);
        let mut decoder = Decoder::new(Encoding::Gzip).unwrap();
        decoder.push(compressed);
        let mut total = 0;
        while decoder.has_pending() {
            let piece = decoder.pull(16 * 1024).unwrap();
            assert!(piece.len() <= 16 * 1024);
            total += piece.len();
        }
        decoder.finish().unwrap();
        assert_eq!(total, body.len());
    }
}
