//! Heads: the request head written, the response head parsed and its body's framing.

use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use tokio::io::AsyncRead;

use super::decode::Decode;
use super::{Connection, Error, Fields, Upload, poll_read_into};

/// Longest response head read, in bytes; a longer one is [`Error::Invalid`].
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a response head (and in trailers).
pub const MAX_HEADERS: usize = 100;

/// A request head as written: how its body goes out, and whether it has a `Connection` field
/// (only then need it be read for `close` or `upgrade`).
pub(super) struct Written {
    pub upload: Upload,
    pub connection: bool,
}

/// Writes the request head (its map's fields but those `fields` leave out, then those it
/// adds) into `buf` and says how its body goes out: `Content-Length` as the request gives
/// it, none for a body known to be empty, chunked otherwise.
pub(super) fn write_request<B: http_body::Body>(
    buf: &mut Vec<u8>,
    parts: &Parts,
    fields: Fields<'_>,
    body: &B,
) -> Result<Written, Error> {
    buf.clear();
    buf.extend_from_slice(parts.method.as_str().as_bytes());
    buf.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    // The fields that frame the body are seen as the fields are written, not looked up.
    let mut connection = false;
    let mut lengths = Lengths::None;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH {
            lengths = lengths.add(value.as_bytes());
        } else if name == CONNECTION {
            connection = true;
        }
        if name != TRANSFER_ENCODING && !fields.left_out.contains(&name) {
            write_field(buf, name, value);
        }
    }
    for (name, value) in fields.added {
        write_field(buf, name, value);
    }
    let has_length = lengths != Lengths::None;
    let upload = match lengths {
        Lengths::One(0) => Upload::Done,
        Lengths::One(len) => Upload::Length(len),
        Lengths::Invalid => return Err(Error::Invalid("request content-length is not a length")),
        Lengths::None if body.is_end_stream() => Upload::Done,
        Lengths::None => match body.size_hint().exact() {
            Some(0) => Upload::Done,
            Some(len) => Upload::Length(len),
            None => Upload::Chunked,
        },
    };
    match upload {
        Upload::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Upload::Length(len) if !has_length => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(len.to_string().as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        Upload::Done if !has_length && has_body_semantics(&parts.method) => {
            buf.extend_from_slice(b"content-length: 0\r\n");
        }
        _ => {}
    }
    buf.extend_from_slice(b"\r\n");
    Ok(Written { upload, connection })
}

/// Methods whose requests are expected to have a body: an empty one is said to be empty.
fn has_body_semantics(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Writes `name: value\r\n` for every field.
pub(super) fn write_fields(buf: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        write_field(buf, name, value);
    }
}

fn write_field(buf: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// Reads until a whole response head is in: `Some` final head (consumed from the buffer),
/// `None` for a skipped 1xx. `received` is set by the first byte read. A `101` is final when
/// the request asked for an `upgrade`, invalid otherwise. The head's map has `room` for more
/// fields.
pub(super) fn poll_read_head<S: AsyncRead + Unpin>(
    connection: &mut Connection<S>,
    received: &mut bool,
    upgrade: bool,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Response<Named>>, Error>> {
    loop {
        if !connection.kept.read.is_empty() {
            if let Some(head) = parse_response(&mut connection.kept.read, &mut connection.kept.names, room)? {
                if head.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if upgrade {
                        return Poll::Ready(Ok(Some(head)));
                    }
                    return Poll::Ready(Err(Error::Invalid("101 without an upgrade asked for")));
                }
                if head.status().is_informational() {
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Ok(Some(head)));
            }
            if connection.kept.read.len() >= MAX_HEAD {
                return Poll::Ready(Err(Error::Invalid("response head too long")));
            }
        }
        let read = ready!(poll_read_into(&mut connection.kept.io, &mut connection.kept.read, cx))?;
        if read == 0 {
            return Poll::Ready(Err(if *received { Error::Truncated } else { Error::Closed }));
        }
        *received = true;
    }
}

/// Which of the fields that frame a body a head has, seen as its fields are read: the
/// framing then looks up only those (each lookup hashes the name and probes the map).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Named {
    transfer_encoding: bool,
    /// The `Content-Length` values seen so far: [`framing`] reads the length from here, not
    /// from the map.
    length: Lengths,
    connection: bool,
}

impl Named {
    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONTENT_LENGTH {
            self.length = self.length.add(value);
        } else if name == CONNECTION {
            self.connection = true;
        }
    }
}

/// The `Content-Length` values of a head, read one field at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Lengths {
    /// No `Content-Length`.
    #[default]
    None,
    /// One length (repeats of the same value, in one field or several, are one length).
    One(u64),
    /// A value that is not a length, or two that differ.
    Invalid,
}

impl Lengths {
    /// With one more `Content-Length` field's `value`.
    pub(super) fn add(self, value: &[u8]) -> Self {
        let mut lengths = self;
        for item in value.split(|b| *b == b',') {
            let item = item.trim_ascii();
            // 19 digits always fit a u64.
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Self::Invalid;
            }
            let len = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            lengths = match lengths {
                Self::None => Self::One(len),
                Self::One(known) if known == len => lengths,
                Self::One(_) | Self::Invalid => return Self::Invalid,
            };
        }
        lengths
    }
}

/// The field names of the last response head read on a connection, as sent and as parsed.
/// An endpoint sends the same names in the same order answer after answer, so a name equal,
/// byte for byte, to the one at its place in the last head is taken from here: parsing it
/// again (`HeaderName::from_bytes` lowercases it into a buffer and walks its table of every
/// standard name) costs several times the comparison.
#[derive(Debug, Default)]
pub(super) struct Names(Vec<(Box<[u8]>, HeaderName)>);

impl Names {
    /// Names remembered at most: a head's first fields. A pooled upstream connection holds
    /// up to this many names (each its bytes, boxed, and a `HeaderName`: about 64 bytes).
    const KEPT: usize = 32;

    /// The name of the head's field number `at`, sent as `raw`; `None` when it is malformed.
    pub(super) fn name(&mut self, at: usize, raw: &[u8]) -> Option<HeaderName> {
        if let Some((seen, name)) = self.0.get(at)
            && **seen == *raw
        {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        let remembered = (Box::from(raw), name.clone());
        if at < self.0.len() {
            self.0[at] = remembered;
        } else if at == self.0.len() && at < Self::KEPT {
            self.0.push(remembered);
        }
        Some(name)
    }
}

/// Parses a response head from the start of `buf` and consumes it: the head (what it names
/// in place of a body), or `None` while it is incomplete (`buf` untouched). The map has
/// `room` for fields added on the way back; `names` are those of the connection's last head.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    names: &mut Names,
    room: usize,
) -> Result<Option<Response<Named>>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many response header fields"));
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    if len > MAX_HEAD {
        return Err(Error::Invalid("response head too long"));
    }
    let status = parsed.code.and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else { return Err(Error::Invalid("malformed status code")) };
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // The fields go straight into the response's own map: no second map made, moved in and
    // the first dropped.
    let mut response = Response::new(Named::default());
    let mut named = Named::default();
    let name_of = |at, raw: &[u8]| names.name(at, raw);
    add_fields(response.headers_mut(), parsed.headers, room, name_of, |name, value| named.note(name, value))?;
    buf.advance(len);
    *response.body_mut() = named;
    *response.status_mut() = status;
    *response.version_mut() = version;
    Ok(Some(response))
}

/// Adds header fields to an empty `map` (names lowercased, order kept), with `room` for more:
/// each field's name from `name_of` (its place and its bytes), and each field shown to `see`.
pub(super) fn add_fields(
    map: &mut HeaderMap,
    fields: &[httparse::Header<'_>],
    room: usize,
    mut name_of: impl FnMut(usize, &[u8]) -> Option<HeaderName>,
    mut see: impl FnMut(&HeaderName, &[u8]),
) -> Result<(), Error> {
    map.reserve(fields.len() + room);
    for (at, field) in fields.iter().enumerate() {
        let name = name_of(at, field.name.as_bytes()).ok_or(Error::Invalid("malformed header field name"))?;
        see(&name, field.value);
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Error::Invalid("malformed header field value"))?;
        map.append(name, value);
    }
    Ok(())
}

/// How the response body is framed (RFC 9112 §6.3), and whether the connection may carry
/// another exchange after it as far as the head goes.
pub(super) fn framing(method: &Method, head: &Response<Named>) -> Result<(Decode, bool), Error> {
    let headers = head.headers();
    let named = *head.body();
    let chunked = match named.transfer_encoding {
        false => false,
        true if named.length != Lengths::None => {
            return Err(Error::Invalid("both content-length and transfer-encoding"));
        }
        true => {
            // The codings in order; chunked must be the last, and only once.
            let codings: Vec<String> = headers
                .get_all(TRANSFER_ENCODING)
                .iter()
                .map(|v| v.to_str().map_err(|_| Error::Invalid("malformed transfer-encoding")))
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .flat_map(|v| v.split(','))
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect();
            let chunks = codings.iter().filter(|c| *c == "chunked").count();
            if chunks != 1 || codings.last().map(String::as_str) != Some("chunked") {
                return Err(Error::Invalid("transfer-encoding that does not end in chunked"));
            }
            true
        }
    };
    let length = match named.length {
        Lengths::None => None,
        Lengths::One(len) => Some(len),
        Lengths::Invalid => return Err(Error::Invalid("invalid or differing content-length")),
    };
    let keep_alive = head.version() == Version::HTTP_11 && !(named.connection && asks_close(headers));
    let status = head.status();
    if super::is_head(method) || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Decode::Done, keep_alive));
    }
    Ok(match (chunked, length) {
        (true, _) => (Decode::chunked(), keep_alive),
        (false, Some(len)) => (Decode::length(len), keep_alive),
        (false, None) => (Decode::Close, false),
    })
}

/// True when `Connection` says `close`.
pub(super) fn asks_close(headers: &HeaderMap) -> bool {
    connection_says(headers, "close")
}

/// True when `Connection` lists `token`.
pub fn connection_says(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|listed| listed.trim().eq_ignore_ascii_case(token)))
    })
}
