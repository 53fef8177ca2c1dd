//! The response body's framing: a length, chunks (with trailers), or the connection's end.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncRead;

use super::head::{MAX_HEAD, MAX_HEADERS, add_fields};
use super::{Connection, Error, poll_read_into, trailers_frame};

/// Longest chunk size line (size and extensions), in bytes.
const MAX_CHUNK_LINE: usize = 4096;

/// Where a response body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the endpoint closes the connection.
    Close,
    /// The body has ended.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// A chunk size line next.
    Size,
    /// This many bytes of the chunk's data still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

impl Decode {
    pub fn length(len: u64) -> Self {
        if len == 0 { Self::Done } else { Self::Length(len) }
    }

    pub fn chunked() -> Self {
        Self::Chunked(Chunk::Size)
    }

    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self {
            Self::Length(left) => SizeHint::with_exact(*left),
            Self::Done => SizeHint::with_exact(0),
            Self::Chunked(_) | Self::Close => SizeHint::default(),
        }
    }

    /// The next frame: data, trailers, `None` at the end.
    pub fn poll_frame<S: AsyncRead + Unpin>(
        &mut self,
        connection: &mut Connection<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, Error>> {
        loop {
            if let Some(frame) = self.step(&mut connection.kept.read)? {
                return Poll::Ready(Ok(frame));
            }
            let read = ready!(poll_read_into(&mut connection.kept.io, &mut connection.kept.read, cx))?;
            if read == 0 {
                if *self == Self::Close {
                    *self = Self::Done;
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(Error::Truncated));
            }
        }
    }

    /// Decodes from what `buf` holds: `Some` frame (or `Some(None)`, the end), or `None` when
    /// more bytes are needed.
    pub fn step(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Option<Frame<Bytes>>>, Error> {
        loop {
            match self {
                Self::Done => return Ok(Some(None)),
                Self::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let data = take(buf, left);
                    if *left == 0 {
                        *self = Self::Done;
                    }
                    return Ok(Some(Some(Frame::data(data))));
                }
                Self::Close => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Some(Frame::data(buf.split().freeze()))));
                }
                Self::Chunked(Chunk::Size) => {
                    let Some(end) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(Error::Invalid("chunk size line too long"));
                        }
                        return Ok(None);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(Error::Invalid("chunk size line too long"));
                    }
                    let size = chunk_size(&buf[..=end])?;
                    buf.advance(end + 1);
                    *self = Self::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Self::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let data = take(buf, left);
                    if *left == 0 {
                        *self = Self::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Some(Some(Frame::data(data))));
                }
                Self::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Chunked(Chunk::Size);
                }
                Self::Chunked(Chunk::Trailers) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        *self = Self::Done;
                        return Ok(Some(None));
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::new();
                            let name_of = |_, raw: &[u8]| HeaderName::from_bytes(raw).ok();
                            add_fields(&mut trailers, fields, 0, name_of, |_, _| ())?;
                            (len, trailers)
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
                        Ok(httparse::Status::Partial) => return Err(Error::Invalid("trailers too long")),
                        Err(_) => return Err(Error::Invalid("malformed trailers")),
                    };
                    buf.advance(len);
                    *self = Self::Done;
                    return Ok(Some(trailers_frame(trailers)));
                }
            }
        }
    }
}

/// Splits off up to `left` bytes of `buf` as a frame (no copy), counting them off.
fn take(buf: &mut bytes::BytesMut, left: &mut u64) -> Bytes {
    let len = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    *left -= len as u64;
    buf.split_to(len).freeze()
}

/// The size of a chunk size line (`HEX [ws] [; extensions] CRLF`, the LF included).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(Error::Invalid("chunk size line without CRLF"));
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Invalid("chunk size is not hexadecimal"));
    }
    if digits > 15 {
        return Err(Error::Invalid("chunk size too large"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Error::Invalid("chunk size followed by something else"));
    }
    if rest.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(Error::Invalid("control character in chunk extension"));
    }
    let size = std::str::from_utf8(&line[..digits]).ok().and_then(|hex| u64::from_str_radix(hex, 16).ok());
    size.ok_or(Error::Invalid("chunk size is not hexadecimal"))
}
