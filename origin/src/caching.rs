//! How answers say they may be cached: `Cache-Control`, `ETag` (with `If-None-Match` → 304),
//! `Vary`, the `Cache-Tag` header naming what an answer depends on, and on writes the
//! `Cache-Group-Invalidation` header naming the tags they make stale. The sidecar's cache reads
//! both tag headers; the contract is `API.md` at the repository root.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Tags of cached answers, sent space-separated.
pub const CACHE_TAG: &str = "cache-tag";
/// Tags a write invalidates, sent space-separated.
pub const CACHE_GROUP_INVALIDATION: &str = "cache-group-invalidation";

/// One endpoint's caching policy. Every cacheable answer of the origin depends on the caller
/// (its tenant's revenue data, its own learning data), so every one carries
/// `Vary: Authorization` and none says `public`: a shared cache keeps one copy per credential
/// (the sidecar's rules key those routes on `authorization`), never one for everyone.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The `Cache-Control` value (`max-age=N`; never `public`).
    pub cache_control: &'static str,
    /// Whether to send an `ETag` and answer a matching `If-None-Match` with 304.
    pub etag: bool,
}

impl Policy {
    /// Caches may keep the answer for `cache_control`'s lifetime, per caller
    /// (`Vary: Authorization`).
    pub const fn per_caller(cache_control: &'static str) -> Self {
        Self { cache_control, etag: false }
    }

    /// Adds an `ETag`.
    pub const fn with_etag(self) -> Self {
        Self { etag: true, ..self }
    }
}

/// A cacheable JSON answer: `value` with `policy`'s headers and `tags`; a 304 without body when
/// the request's `If-None-Match` matches the ETag.
pub fn cached<T: Serialize>(request: &HeaderMap, policy: Policy, tags: &[String], value: &T) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise an answer");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let etag = policy.etag.then(|| etag_of(&body));
    let not_modified = etag.as_deref().is_some_and(|etag| if_none_match(request, etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy.cache_control));
    headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
    if let Some(value) = etag.and_then(|etag| HeaderValue::from_str(&etag).ok()) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) = tag_value(tags) {
        headers.insert(CACHE_TAG, value);
    }
    response
}

/// An uncacheable JSON answer (`Cache-Control: no-store`).
pub fn no_store<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = (status, Json(value)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to a write: `no-store`, naming in `Cache-Group-Invalidation` the tags it made
/// stale.
pub fn invalidating<T: Serialize>(status: StatusCode, invalidates: &[String], value: &T) -> Response {
    with_invalidation(no_store(status, value), invalidates)
}

/// `response` naming in `Cache-Group-Invalidation` the tags `invalidates` (for answers built
/// elsewhere, such as the 404 of a repeated DELETE).
pub fn with_invalidation(mut response: Response, invalidates: &[String]) -> Response {
    if let Some(value) = tag_value(invalidates) {
        response.headers_mut().insert(CACHE_GROUP_INVALIDATION, value);
    }
    response
}

fn tag_value(tags: &[String]) -> Option<HeaderValue> {
    if tags.is_empty() {
        return None;
    }
    HeaderValue::from_str(&tags.join(" ")).ok()
}

/// A strong ETag: the FNV-1a hash of the body, quoted.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

/// FNV-1a, 64 bits: cheap, stable across runs and processes (three instances agree).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for GET) or `*`.
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == bare)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"b\""));
        assert!(if_none_match(&headers, "\"b\""));
        assert!(if_none_match(&headers, "\"a\""));
        assert!(!if_none_match(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, "\"c\""));
    }

    #[test]
    fn etag_depends_on_the_body() {
        assert_eq!(etag_of(b"abc"), etag_of(b"abc"));
        assert_ne!(etag_of(b"abc"), etag_of(b"abd"));
    }
}
