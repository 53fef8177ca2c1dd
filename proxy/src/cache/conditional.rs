//! Conditional requests, both ways.
//!
//! Downstream: a client's `If-None-Match` (weak comparison, `*`) or, without it,
//! `If-Modified-Since` that matches a usable entry gets a `304` from the cache. Upstream: a
//! stale entry with an `ETag` or `Last-Modified` is revalidated with `If-None-Match` /
//! `If-Modified-Since`; the origin's `304` refreshes the entry's headers and dates it anew.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::entry::CacheEntry;
use super::policy::http_date;
use crate::body::Body;

/// True when the client's conditional headers say its copy of `entry` is current.
pub fn matches(request: &HeaderMap, entry: &CacheEntry) -> bool {
    if entry.status != StatusCode::OK {
        return false;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = entry.etag().map(|v| opaque(v.as_bytes())) else { return false };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|t| opaque(t.trim_ascii()))
            .any(|t| t == b"*" || t == etag);
    }
    let Some(since) = request.get(header::IF_MODIFIED_SINCE).and_then(http_date) else { return false };
    entry.last_modified().and_then(http_date).is_some_and(|modified| modified <= since)
}

/// An entity tag without its weakness marker (weak comparison, RFC 9110 §8.8.3.2).
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Headers a 304 carries from the entry (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::VARY,
];

/// A `304 Not Modified` for `entry`.
pub fn not_modified(entry: &CacheEntry) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in &NOT_MODIFIED_HEADERS {
        for value in entry.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    response
}

/// Puts `entry`'s validators on a request to the origin, replacing the client's own (the
/// client's condition is evaluated against the refreshed entry afterwards).
pub fn add_validators(request: &mut HeaderMap, entry: &CacheEntry) {
    request.remove(header::IF_NONE_MATCH);
    request.remove(header::IF_MODIFIED_SINCE);
    if let Some(etag) = entry.etag() {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.last_modified() {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Headers of a 304 that never replace the stored ones (RFC 9111 §3.2).
fn keeps_stored(name: &header::HeaderName) -> bool {
    *name == header::CONTENT_LENGTH
        || *name == header::CONTENT_ENCODING
        || *name == header::CONTENT_RANGE
        || *name == header::TRANSFER_ENCODING
        || *name == header::AGE
}

/// The stored headers updated with those of the origin's 304.
pub fn refreshed_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in not_modified.keys() {
        if keeps_stored(name) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// A header value for `Age` in whole seconds.
pub fn age_value(seconds: u64) -> HeaderValue {
    HeaderValue::from(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::tests::entry;

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let e = entry("{}", 0, 60);
        assert!(matches(&req(&[("if-none-match", "\"v1\"")]), &e));
        assert!(matches(&req(&[("if-none-match", "W/\"v1\"")]), &e));
        assert!(matches(&req(&[("if-none-match", "\"v0\", \"v1\"")]), &e));
        assert!(matches(&req(&[("if-none-match", "*")]), &e));
        assert!(!matches(&req(&[("if-none-match", "\"v2\"")]), &e));
        assert!(!matches(&req(&[]), &e));
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_if_none_match() {
        let mut e = entry("{}", 0, 60);
        e.headers.insert(header::LAST_MODIFIED, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(matches(&req(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]), &e));
        assert!(matches(&req(&[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")]), &e));
        assert!(!matches(&req(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]), &e));
        let both =
            req(&[("if-none-match", "\"v2\""), ("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")]);
        assert!(!matches(&both, &e));
    }

    #[test]
    fn a_304_carries_validators_but_no_body_headers() {
        let e = entry("{}", 0, 60);
        let response = not_modified(&e);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()["etag"], "\"v1\"");
        assert!(!response.headers().contains_key("content-type"));
    }

    #[test]
    fn revalidation_sends_validators_and_merges_the_answer() {
        let e = entry("{}", 0, 60);
        let mut request = req(&[("if-none-match", "\"client\"")]);
        add_validators(&mut request, &e);
        assert_eq!(request["if-none-match"], "\"v1\"");
        let merged = refreshed_headers(
            &e.headers,
            &req(&[("etag", "\"v1\""), ("cache-control", "max-age=9"), ("content-length", "0")]),
        );
        assert_eq!(merged["cache-control"], "max-age=9");
        assert_eq!(merged["content-type"], "application/json");
        assert!(!merged.contains_key("content-length"));
    }
}
