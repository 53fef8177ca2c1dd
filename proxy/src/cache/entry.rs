//! A stored answer: status, headers and body ready to send, with what the cache needs to age,
//! revalidate and purge it.
//!
//! Entries are immutable and shared (`Arc<CacheEntry>`): a hit clones the headers and the
//! `Bytes` handle, never the body. [`CacheEntry::to_bytes`] / [`CacheEntry::from_bytes`] give
//! a self-contained binary form for a second-level tier.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, header};

use super::clock::Millis;
use super::policy::Freshness;
use super::tag::Tag;

/// One stored answer.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub status: StatusCode,
    /// Ready to send: hop-by-hop headers, `Age` and (by default) tag headers removed.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the answer was received (or last revalidated).
    pub stored_at: Millis,
    /// The age the upstream reported (`Age`) when it was received.
    pub initial_age: Duration,
    pub freshness: Freshness,
    /// Rule tags, origin tags and the URL's implicit tag.
    pub tags: Vec<Tag>,
    /// Host (lower case) and path of the request, for purges by path prefix.
    pub host: Box<str>,
    pub path: Box<str>,
    /// The body's compressed variants, each made once, the first time a client accepts its
    /// coding (see [`crate::compress::Variants`]); shared by clones of the entry.
    pub variants: crate::compress::Variants,
    /// The headers of a fresh hit, built at most once per second of the entry's life.
    pub hit: HitHeaders,
}

/// The complete response headers of a fresh hit (the entry's headers with `Age` and
/// `Cache-Status`), kept for the second they describe: every hit within that second clones
/// them instead of formatting two values and growing the map. A clone of the entry starts
/// without them (its headers may be about to change). Lock-free: hits on a hot entry from
/// several threads never wait for each other.
#[derive(Default)]
pub struct HitHeaders(ArcSwapOption<HitMemo>);

struct HitMemo {
    /// What the headers say: the entry's age and remaining freshness in whole seconds, and
    /// whether they hold the request id's field (to be set in place).
    age: u64,
    ttl: u64,
    id_field: bool,
    headers: HeaderMap,
}

impl HitHeaders {
    /// The headers for a hit at `age` with `ttl` seconds of freshness left, with the request
    /// id's field or without (`id_field`): the kept ones when they say the same, else those
    /// `build` makes (then kept).
    pub fn get(&self, age: u64, ttl: u64, id_field: bool, build: impl FnOnce() -> HeaderMap) -> HeaderMap {
        if let Some(kept) = &*self.0.load()
            && kept.age == age
            && kept.ttl == ttl
            && kept.id_field == id_field
        {
            return kept.headers.clone();
        }
        let headers = build();
        self.0.store(Some(Arc::new(HitMemo { age, ttl, id_field, headers: headers.clone() })));
        headers
    }
}

impl Clone for HitHeaders {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for HitHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HitHeaders")
    }
}

/// How old an entry is at a moment, and what that allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Fresh for `remaining` more.
    Fresh { remaining: Duration },
    /// Past its lifetime by `by`.
    Stale { by: Duration },
}

impl CacheEntry {
    /// The entry's age at `now` (RFC 9111 §4.2.3, with the upstream's `Age` included).
    pub fn age(&self, now: Millis) -> Duration {
        self.initial_age + Duration::from_millis(now.saturating_sub(self.stored_at))
    }

    /// Fresh or stale at `now`.
    pub fn staleness(&self, now: Millis) -> Staleness {
        let age = self.age(now);
        match self.freshness.ttl.checked_sub(age) {
            Some(remaining) if !remaining.is_zero() => Staleness::Fresh { remaining },
            _ => Staleness::Stale { by: age - self.freshness.ttl },
        }
    }

    /// The stored `ETag`.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// The stored `Last-Modified`.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(header::LAST_MODIFIED)
    }

    /// True when the origin can be asked whether the entry is still good.
    pub fn has_validators(&self) -> bool {
        self.etag().is_some() || self.last_modified().is_some()
    }

    /// Memory the entry holds, in bytes: the body, the headers and the tags (approximately).
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        let tags: usize = self.tags.iter().map(|t| t.name().len() + 40).sum();
        256 + self.body.len() + self.variants.weight() + headers + tags + self.host.len() + self.path.len()
    }

    /// The entry in a self-contained binary form (format version 2: version 1 had no `keep`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight());
        out.put_u8(FORMAT);
        out.put_u16(self.status.as_u16());
        out.put_u64(self.stored_at);
        out.put_u64(self.initial_age.as_millis() as u64);
        let f = &self.freshness;
        for d in [f.ttl, f.stale_while_revalidate, f.stale_if_error, f.keep] {
            out.put_u64(d.as_millis() as u64);
        }
        out.put_u8(u8::from(f.shared_with_credentials));
        put_str(&mut out, &self.host);
        put_str(&mut out, &self.path);
        out.put_u32(self.tags.len() as u32);
        for tag in &self.tags {
            put_str(&mut out, tag.name());
        }
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            put_str(&mut out, name.as_str());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.body);
        out.freeze()
    }

    /// Reads the form written by [`CacheEntry::to_bytes`]; `None` when it is not one.
    pub fn from_bytes(mut data: Bytes) -> Option<Self> {
        let d = &mut data;
        if take_u8(d)? != FORMAT {
            return None;
        }
        let status = StatusCode::from_u16(take_u16(d)?).ok()?;
        let stored_at = take_u64(d)?;
        let initial_age = Duration::from_millis(take_u64(d)?);
        let ttl = Duration::from_millis(take_u64(d)?);
        let stale_while_revalidate = Duration::from_millis(take_u64(d)?);
        let stale_if_error = Duration::from_millis(take_u64(d)?);
        let keep = Duration::from_millis(take_u64(d)?);
        let shared_with_credentials = take_u8(d)? != 0;
        let host = take_str(d)?.into();
        let path = take_str(d)?.into();
        let tag_count = take_u32(d)? as usize;
        let mut tags = Vec::with_capacity(tag_count.min(1024));
        for _ in 0..tag_count {
            tags.push(Tag::new(&take_str(d)?));
        }
        let header_count = take_u32(d)? as usize;
        let mut headers = HeaderMap::with_capacity(header_count.min(1024));
        for _ in 0..header_count {
            let name = HeaderName::from_bytes(take_str(d)?.as_bytes()).ok()?;
            let value = HeaderValue::from_maybe_shared(take_bytes(d)?).ok()?;
            headers.append(name, value);
        }
        let body = take_bytes(d)?;
        if d.has_remaining() {
            return None;
        }
        Some(Self {
            status,
            headers,
            body,
            stored_at,
            initial_age,
            freshness: Freshness {
                ttl,
                stale_while_revalidate,
                stale_if_error,
                keep,
                shared_with_credentials,
            },
            tags,
            host,
            path,
            variants: Default::default(),
            hit: Default::default(),
        })
    }
}

const FORMAT: u8 = 2;

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn take_u8(d: &mut Bytes) -> Option<u8> {
    (d.remaining() >= 1).then(|| d.get_u8())
}

fn take_u16(d: &mut Bytes) -> Option<u16> {
    (d.remaining() >= 2).then(|| d.get_u16())
}

fn take_u32(d: &mut Bytes) -> Option<u32> {
    (d.remaining() >= 4).then(|| d.get_u32())
}

fn take_u64(d: &mut Bytes) -> Option<u64> {
    (d.remaining() >= 8).then(|| d.get_u64())
}

fn take_bytes(d: &mut Bytes) -> Option<Bytes> {
    let len = take_u32(d)? as usize;
    (d.remaining() >= len).then(|| d.split_to(len))
}

fn take_str(d: &mut Bytes) -> Option<String> {
    String::from_utf8(take_bytes(d)?.to_vec()).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry stored at `stored_at` with `ttl` seconds of freshness.
    pub(crate) fn entry(body: &'static str, stored_at: Millis, ttl: u64) -> CacheEntry {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        CacheEntry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body.as_bytes()),
            stored_at,
            initial_age: Duration::ZERO,
            freshness: Freshness {
                ttl: Duration::from_secs(ttl),
                stale_while_revalidate: Duration::from_secs(10),
                stale_if_error: Duration::ZERO,
                keep: Duration::from_secs(3600),
                shared_with_credentials: false,
            },
            tags: vec![Tag::new("leads"), Tag::url("h", "/a", None)],
            host: "h".into(),
            path: "/a".into(),
            variants: Default::default(),
            hit: Default::default(),
        }
    }

    #[test]
    fn an_entry_ages_from_fresh_to_stale() {
        let mut e = entry("{}", 1_000, 60);
        assert_eq!(e.staleness(1_000), Staleness::Fresh { remaining: Duration::from_secs(60) });
        assert_eq!(e.staleness(61_000), Staleness::Stale { by: Duration::ZERO });
        assert_eq!(e.staleness(71_000), Staleness::Stale { by: Duration::from_secs(10) });
        e.initial_age = Duration::from_secs(50);
        assert_eq!(e.staleness(1_000), Staleness::Fresh { remaining: Duration::from_secs(10) });
        assert!(e.has_validators());
    }

    #[test]
    fn an_entry_survives_its_binary_form() {
        let e = entry("{\"a\":1}", 123, 60);
        let back = CacheEntry::from_bytes(e.to_bytes()).unwrap();
        assert_eq!(back.status, e.status);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(back.freshness, e.freshness);
        assert_eq!(back.tags, e.tags);
        assert_eq!((back.stored_at, &*back.host, &*back.path), (123, "h", "/a"));
        let mut cut = e.to_bytes();
        cut.truncate(cut.len() - 1);
        assert!(CacheEntry::from_bytes(cut).is_none());
    }
}
