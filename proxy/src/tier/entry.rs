//! A cache entry as stored in Redis: a compact, versioned binary encoding (no schema crate,
//! no base64), the body compressed with zstd when that pays.
//!
//! Layout (integers big-endian): `b"AC"`, version `2`, status `u16`, stored_at (ms since the
//! Unix epoch) `u64`, ttl / stale-while-revalidate / stale-if-error (ms) `u64` ×3, tags
//! (`u16` count, then `u16` length + bytes + `u64` generation each), the `*` generation `u64`,
//! host and path of the request (`u16` length + bytes each), the path-prefix generations
//! (`u8` count, then `u64` each, in the order of [`super::Keys::entry_prefix_fields`]),
//! headers (`u16` count, then `u16` name length + name + `u32` value length + value each),
//! body codec `u8` (0 raw, 1 zstd), body length `u32` uncompressed, then the body.
//!
//! The generations are those of the entry's tags and path prefixes when it was stored: a
//! lookup compares them with the current ones, and an entry purged since reads as gone.
//! Version 1 (no prefix generations) reads as [`DecodeError::Version`]: a miss.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC: &[u8; 3] = b"AC\x02";
/// Bodies smaller than this are stored raw: compressing them saves too little.
const COMPRESS_FROM: usize = 512;

/// A cached answer, shared between sidecars.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry {
    pub status: StatusCode,
    /// Ready-to-send response headers.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the origin's answer was received (wall clock: sidecars share it).
    pub stored_at: SystemTime,
    /// Fresh for this long after `stored_at`.
    pub ttl: Duration,
    /// After `ttl`, may be served stale while one refresh runs.
    pub stale_while_revalidate: Duration,
    /// After `ttl`, may be served stale when the origin fails.
    pub stale_if_error: Duration,
    /// The entry's tags (rule and origin tags).
    pub tags: Vec<String>,
    /// Host (lower case) and path of the request that filled it, for purges by path prefix.
    pub host: String,
    pub path: String,
}

impl SharedEntry {
    /// How long after `stored_at` the entry may be used at all: the end of its longest stale
    /// window. It is kept in Redis for this long.
    pub fn lifetime(&self) -> Duration {
        self.ttl + self.stale_while_revalidate.max(self.stale_if_error)
    }

    /// Time left of [`SharedEntry::lifetime`] at `now`; zero once over.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let age = now.duration_since(self.stored_at).unwrap_or_default();
        self.lifetime().saturating_sub(age)
    }
}

/// A decoded entry with the generations it was stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub entry: SharedEntry,
    /// The generations it was stored under.
    pub generations: Generations,
}

/// The generations an entry is stored under (read just before storing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generations {
    /// Of `*`.
    pub all: u64,
    /// Of each tag, in the entry's tag order.
    pub tags: Vec<u64>,
    /// Of each path prefix, in [`super::Keys::entry_prefix_fields`] order.
    pub prefixes: Vec<u64>,
}

/// Why stored bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an entry of this version")]
    Version,
    #[error("entry truncated")]
    Truncated,
    #[error("entry malformed")]
    Malformed,
}

/// Encodes `entry` with the generations read just before storing.
pub fn encode(entry: &SharedEntry, generations: &Generations) -> Vec<u8> {
    let compressed = (entry.body.len() >= COMPRESS_FROM)
        .then(|| zstd::bulk::compress(&entry.body, 1).ok())
        .flatten()
        .filter(|c| c.len() < entry.body.len());
    let body: &[u8] = compressed.as_deref().unwrap_or(&entry.body);
    let mut out = Vec::with_capacity(64 + body.len() + entry.headers.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&entry.status.as_u16().to_be_bytes());
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    out.extend_from_slice(&ms(entry.stored_at.duration_since(UNIX_EPOCH).unwrap_or_default()).to_be_bytes());
    for window in [entry.ttl, entry.stale_while_revalidate, entry.stale_if_error] {
        out.extend_from_slice(&ms(window).to_be_bytes());
    }
    let tags = entry.tags.iter().take(usize::from(u16::MAX));
    out.extend_from_slice(&(tags.len() as u16).to_be_bytes());
    for (i, tag) in tags.enumerate() {
        let tag = &tag.as_bytes()[..tag.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(tag.len() as u16).to_be_bytes());
        out.extend_from_slice(tag);
        out.extend_from_slice(&generations.tags.get(i).copied().unwrap_or(0).to_be_bytes());
    }
    out.extend_from_slice(&generations.all.to_be_bytes());
    for text in [&entry.host, &entry.path] {
        let text = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text);
    }
    let prefixes = generations.prefixes.iter().take(usize::from(u8::MAX));
    out.push(prefixes.len() as u8);
    for generation in prefixes {
        out.extend_from_slice(&generation.to_be_bytes());
    }
    let count = entry.headers.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for (name, value) in entry.headers.iter().take(count) {
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.push(u8::from(compressed.is_some()));
    out.extend_from_slice(&(entry.body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Stored, DecodeError> {
    let mut r = Reader(bytes);
    if r.take(3)? != MAGIC {
        return Err(DecodeError::Version);
    }
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Malformed)?;
    let stored_at = UNIX_EPOCH + Duration::from_millis(r.u64()?);
    let ttl = Duration::from_millis(r.u64()?);
    let stale_while_revalidate = Duration::from_millis(r.u64()?);
    let stale_if_error = Duration::from_millis(r.u64()?);
    let count = usize::from(r.u16()?);
    let mut tags = Vec::with_capacity(count);
    let mut tag_generations = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let tag = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::Malformed)?;
        tags.push(tag.to_owned());
        tag_generations.push(r.u64()?);
    }
    let all_generation = r.u64()?;
    let mut text = || -> Result<String, DecodeError> {
        let len = usize::from(r.u16()?);
        std::str::from_utf8(r.take(len)?).map(str::to_owned).map_err(|_| DecodeError::Malformed)
    };
    let host = text()?;
    let path = text()?;
    let count = usize::from(r.take(1)?[0]);
    let prefix_generations = (0..count).map(|_| r.u64()).collect::<Result<Vec<u64>, _>>()?;
    let count = usize::from(r.u16()?);
    let mut headers = HeaderMap::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let name = HeaderName::from_bytes(r.take(len)?).map_err(|_| DecodeError::Malformed)?;
        let len = r.u32()? as usize;
        let value = HeaderValue::from_bytes(r.take(len)?).map_err(|_| DecodeError::Malformed)?;
        headers.append(name, value);
    }
    let codec = r.take(1)?[0];
    let len = r.u32()? as usize;
    let body = match codec {
        0 if r.0.len() == len => Bytes::copy_from_slice(r.0),
        0 => return Err(DecodeError::Truncated),
        1 => {
            let body = zstd::bulk::decompress(r.0, len).map_err(|_| DecodeError::Malformed)?;
            if body.len() != len {
                return Err(DecodeError::Truncated);
            }
            Bytes::from(body)
        }
        _ => return Err(DecodeError::Malformed),
    };
    let entry = SharedEntry {
        status,
        headers,
        body,
        stored_at,
        ttl,
        stale_while_revalidate,
        stale_if_error,
        tags,
        host,
        path,
    };
    let generations =
        Generations { all: all_generation, tags: tag_generations, prefixes: prefix_generations };
    Ok(Stored { entry, generations })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| DecodeError::Truncated)?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| DecodeError::Truncated)?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| DecodeError::Truncated)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8]) -> SharedEntry {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(http::header::VARY, HeaderValue::from_static("accept"));
        headers.append(http::header::VARY, HeaderValue::from_static("x-user"));
        SharedEntry {
            status: StatusCode::OK,
            headers,
            body: Bytes::copy_from_slice(body),
            stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(3600),
            tags: vec!["lead:1".into(), "leads".into()],
            host: "api.example.com".into(),
            path: "/api/leads/1".into(),
        }
    }

    #[test]
    fn entries_round_trip_small_and_compressed() {
        for body in [b"{\"ok\":true}".to_vec(), "x".repeat(100_000).into_bytes()] {
            let entry = entry(&body);
            let generations = Generations { all: 2, tags: vec![3, 7], prefixes: vec![5, 0, 9] };
            let bytes = encode(&entry, &generations);
            if body.len() > 1000 {
                assert!(bytes.len() < body.len() / 10, "large repetitive bodies are compressed");
            }
            let stored = decode(&bytes).expect("decodes");
            assert_eq!(stored.entry, entry);
            assert_eq!(stored.generations, generations);
        }
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let bytes = encode(&entry(b"hello"), &Generations::default());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(b"XX\x02rest"), Err(DecodeError::Version));
        assert_eq!(decode(b"AC\x01rest"), Err(DecodeError::Version), "version 1 is not read");
    }

    #[test]
    fn lifetime_ends_with_the_longest_stale_window() {
        let entry = entry(b"");
        assert_eq!(entry.lifetime(), Duration::from_secs(3660));
        assert_eq!(entry.remaining(entry.stored_at + Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(entry.remaining(entry.stored_at + Duration::from_secs(9999)), Duration::ZERO);
    }
}
