//! Byte ranges served from a stored complete `200` (RFC 9110 §14).
//!
//! A GET's `Range: bytes=…` with one satisfiable range gets a `206` with `Content-Range` and
//! that slice of the stored body; ranges none of which overlap the body get a `416` with
//! `Content-Range: bytes */len`. Several satisfiable ranges get the whole `200` (the server
//! may ignore a range request, §14.2; multipart/byteranges is not produced). A syntactically
//! invalid `Range`, another unit, or an `If-Range` that does not match (a strong `ETag`, or
//! exactly the `Last-Modified` date, §13.1.5) also get the whole `200`.
//!
//! The range addresses the stored bytes: the identity body, or the origin's own encoding when
//! it answered with `Content-Encoding` (the compress stage never compresses a `Range`
//! request's answer, so what is sliced is what is served).

use std::ops::RangeInclusive;

use http::header::{self, HeaderMap, HeaderValue};

use super::entry::CacheEntry;
use super::policy::http_date;

/// What a range request gets from a stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// One range of the body, first and last byte offsets: a `206`.
    Partial(RangeInclusive<u64>),
    /// No range overlaps the body: a `416`.
    Unsatisfiable,
}

/// One `range-spec` of a `bytes` range (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last`
    Closed(u64, u64),
    /// `first-`
    From(u64),
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

/// How a GET for `entry` with `request`'s headers is to be answered: `None` for the whole
/// answer (no `Range`, an invalid or ignored one, an unmatched `If-Range`, several ranges, a
/// status other than `200`).
pub fn evaluate(request: &HeaderMap, entry: &CacheEntry) -> Option<Ranged> {
    let mut values = request.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return None };
    if entry.status != http::StatusCode::OK {
        return None;
    }
    let specs = parse(value.as_bytes())?;
    if let Some(condition) = request.get(header::IF_RANGE)
        && !if_range_matches(condition, entry)
    {
        return None;
    }
    let len = entry.body.len() as u64;
    let mut satisfiable = specs.iter().filter_map(|spec| resolve(*spec, len));
    match (satisfiable.next(), satisfiable.next()) {
        (None, _) => Some(Ranged::Unsatisfiable),
        (Some(range), None) => Some(Ranged::Partial(range)),
        (Some(_), Some(_)) => None,
    }
}

/// The specs of a `bytes=` range header, or `None` when it is not one or is invalid (then the
/// header is ignored, §14.2).
fn parse(value: &[u8]) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_at_checked(value.iter().position(|b| *b == b'=')?)?;
    if !unit.trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // A list may hold empty elements (RFC 9110 §5.6.1.2).
    for element in set[1..].split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty()) {
        let dash = element.iter().position(|b| *b == b'-')?;
        let (first, last) = (&element[..dash], &element[dash + 1..]);
        specs.push(match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => Spec::Closed(first, last),
            (Some(first), None) if last.is_empty() => Spec::From(first),
            (None, Some(length)) if first.is_empty() => Spec::Suffix(length),
            _ => return None,
        });
    }
    (!specs.is_empty()).then_some(specs)
}

/// A run of digits (saturating: a larger offset than any body is still a valid one).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// The bytes `spec` selects of a body of `len` bytes, if any (§14.1.2).
fn resolve(spec: Spec, len: u64) -> Option<RangeInclusive<u64>> {
    let last = len.checked_sub(1)?;
    match spec {
        Spec::Closed(first, end) if first <= last => Some(first..=end.min(last)),
        Spec::From(first) if first <= last => Some(first..=last),
        Spec::Suffix(length) if length > 0 => Some(len - length.min(len)..=last),
        _ => None,
    }
}

/// True when `If-Range` names `entry`: the same strong entity tag (strong comparison), or
/// exactly its `Last-Modified` date (RFC 9110 §13.1.5).
fn if_range_matches(condition: &HeaderValue, entry: &CacheEntry) -> bool {
    let condition = condition.as_bytes().trim_ascii();
    if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
        let strong = |tag: &[u8]| tag.starts_with(b"\"") && tag.len() >= 2 && tag.ends_with(b"\"");
        return strong(condition)
            && entry.etag().is_some_and(|etag| etag.as_bytes().trim_ascii() == condition);
    }
    let Ok(date) = HeaderValue::from_bytes(condition) else { return false };
    match (http_date(&date), entry.last_modified().and_then(http_date)) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// `Content-Range` of a `206` for `range` of `len` bytes.
pub fn content_range(range: &RangeInclusive<u64>, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {}-{}/{len}", range.start(), range.end()))
        .expect("digits are a valid header value")
}

/// `Content-Range` of a `416` for a body of `len` bytes.
pub fn unsatisfied_range(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::tests::entry;

    const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    /// A stored 200 of 10 bytes, `ETag: "v1"`, `Last-Modified` [`MODIFIED`].
    fn stored() -> CacheEntry {
        let mut e = entry("0123456789", 0, 60);
        e.headers.insert(header::LAST_MODIFIED, HeaderValue::from_static(MODIFIED));
        e
    }

    fn ranged(pairs: &[(&'static str, &'static str)]) -> Option<Ranged> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        evaluate(&h, &stored())
    }

    fn range(value: &'static str) -> Option<Ranged> {
        ranged(&[("range", value)])
    }

    #[test]
    fn one_range_selects_its_bytes() {
        assert_eq!(range("bytes=2-4"), Some(Ranged::Partial(2..=4)));
        assert_eq!(range("bytes=7-"), Some(Ranged::Partial(7..=9)));
        assert_eq!(range("bytes=-3"), Some(Ranged::Partial(7..=9)));
        assert_eq!(range("bytes=-30"), Some(Ranged::Partial(0..=9)));
        assert_eq!(range("bytes=5-99999999999999999999999"), Some(Ranged::Partial(5..=9)));
        assert_eq!(range("Bytes = 0-0"), Some(Ranged::Partial(0..=0)));
    }

    #[test]
    fn no_overlap_is_unsatisfiable() {
        assert_eq!(range("bytes=10-"), Some(Ranged::Unsatisfiable));
        assert_eq!(range("bytes=10-20, 30-"), Some(Ranged::Unsatisfiable));
        assert_eq!(range("bytes=-0"), Some(Ranged::Unsatisfiable));
    }

    #[test]
    fn several_ranges_get_the_whole_answer_unless_one_overlaps() {
        assert_eq!(range("bytes=0-1, 5-6"), None);
        assert_eq!(range("bytes=0-1, 50-60"), Some(Ranged::Partial(0..=1)));
    }

    #[test]
    fn invalid_or_foreign_ranges_are_ignored() {
        for value in ["bytes=", "bytes=4-2", "bytes=a-b", "bytes=1-2-3", "items=0-1", "bytes 0-1", "bytes=-"]
        {
            assert_eq!(range(value), None, "{value}");
        }
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]), None);
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]), Some(Ranged::Partial(0..=1)));
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", "\"v2\"")]), None);
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", "W/\"v1\"")]), None);
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", MODIFIED)]), Some(Ranged::Partial(0..=1)));
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", later)]), None);
        assert_eq!(ranged(&[("range", "bytes=0-1"), ("if-range", "garbage")]), None);
    }

    #[test]
    fn only_a_stored_200_is_ranged() {
        let mut e = stored();
        e.status = http::StatusCode::NOT_FOUND;
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert_eq!(evaluate(&h, &e), None);
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(2..=4), 10), "bytes 2-4/10");
        assert_eq!(unsatisfied_range(10), "bytes */10");
    }
}
