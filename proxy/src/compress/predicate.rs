//! When not to compress: the request's and the response's conditions, each a [`Skip`] reason.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_body::SizeHint;

use super::rule::CompressPolicy;

/// Why an answer is sent as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// `Cache-Control: no-transform` on the request or the response (RFC 9111 §5.2).
    NoTransform,
    /// The response already has a `Content-Encoding`.
    Encoded,
    /// A `HEAD` request: no body to compress.
    Head,
    /// A status without a body to compress (1xx, 204, 304) or a partial one (206).
    Status,
    /// A `Range` request: byte ranges address the identity body.
    Range,
    /// `Content-Length` below the route's `min_size`.
    TooSmall,
    /// A media type the route does not compress, or none.
    ContentType,
}

impl Skip {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoTransform => "no_transform",
            Self::Encoded => "encoded",
            Self::Head => "head",
            Self::Status => "status",
            Self::Range => "range",
            Self::TooSmall => "too_small",
            Self::ContentType => "content_type",
        }
    }
}

/// The request's reason not to compress its answer, if any.
pub fn request(method: &Method, headers: &HeaderMap) -> Option<Skip> {
    if method == Method::HEAD {
        return Some(Skip::Head);
    }
    if headers.contains_key(header::RANGE) {
        return Some(Skip::Range);
    }
    no_transform(headers).then_some(Skip::NoTransform)
}

/// The response's reason not to be compressed under `policy`, if any. `body` is the body's
/// size hint, used when there is no `Content-Length`.
pub fn response(
    policy: &CompressPolicy,
    status: StatusCode,
    headers: &HeaderMap,
    body: &SizeHint,
) -> Option<Skip> {
    if !has_compressible_body(status) {
        return Some(Skip::Status);
    }
    if is_encoded(headers) {
        return Some(Skip::Encoded);
    }
    if no_transform(headers) {
        return Some(Skip::NoTransform);
    }
    if headers.contains_key(header::CONTENT_RANGE) {
        return Some(Skip::Status);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !policy.compresses_type(content_type) {
        return Some(Skip::ContentType);
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| body.exact());
    if length.is_some_and(|n| n < policy.min_size) {
        return Some(Skip::TooSmall);
    }
    None
}

/// Statuses whose body may be compressed: not 1xx, 204, 206 or 304.
pub fn has_compressible_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// True when `Content-Encoding` names a coding other than identity.
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|value| {
        value.to_str().map_or(true, |v| {
            v.split(',').any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
        })
    })
}

/// True when `Cache-Control` has `no-transform`.
pub fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
        value.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform")))
    })
}

/// True for server-sent events (`text/event-stream`): compressed, but flushed after every
/// chunk so that each event reaches the client when the origin sends it.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::rule::CompressSettings;

    fn policy() -> CompressPolicy {
        CompressSettings::resolve(Some(&CompressSettings::default()), &CompressSettings::default()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect()
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn each_request_condition_skips() {
        assert_eq!(request(&Method::GET, &HeaderMap::new()), None);
        assert_eq!(request(&Method::HEAD, &HeaderMap::new()), Some(Skip::Head));
        assert_eq!(request(&Method::GET, &headers(&[("range", "bytes=0-9")])), Some(Skip::Range));
        assert_eq!(
            request(&Method::GET, &headers(&[("cache-control", "max-age=0, No-Transform")])),
            Some(Skip::NoTransform)
        );
    }

    #[test]
    fn each_response_condition_skips() {
        let p = policy();
        let any = SizeHint::new();
        let ok = StatusCode::OK;
        assert_eq!(response(&p, ok, &headers(&[JSON]), &any), None);
        assert_eq!(response(&p, StatusCode::NOT_FOUND, &headers(&[JSON]), &any), None);
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::CONTINUE,
        ] {
            assert_eq!(response(&p, status, &headers(&[JSON]), &any), Some(Skip::Status), "{status}");
        }
        assert_eq!(
            response(&p, ok, &headers(&[JSON, ("content-encoding", "gzip")]), &any),
            Some(Skip::Encoded)
        );
        assert_eq!(response(&p, ok, &headers(&[JSON, ("content-encoding", "identity")]), &any), None);
        assert_eq!(
            response(&p, ok, &headers(&[JSON, ("cache-control", "public, no-transform")]), &any),
            Some(Skip::NoTransform)
        );
        assert_eq!(
            response(&p, ok, &headers(&[("content-type", "image/png")]), &any),
            Some(Skip::ContentType)
        );
        assert_eq!(response(&p, ok, &HeaderMap::new(), &any), Some(Skip::ContentType));
        assert_eq!(
            response(&p, ok, &headers(&[JSON, ("content-length", "1023")]), &any),
            Some(Skip::TooSmall)
        );
        assert_eq!(response(&p, ok, &headers(&[JSON, ("content-length", "1024")]), &any), None);
        assert_eq!(response(&p, ok, &headers(&[JSON]), &SizeHint::with_exact(10)), Some(Skip::TooSmall));
        assert_eq!(
            response(&p, ok, &headers(&[JSON, ("content-range", "bytes 0-9/100")]), &any),
            Some(Skip::Status)
        );
    }

    #[test]
    fn event_streams_are_recognised() {
        assert!(is_event_stream(&headers(&[("content-type", "text/event-stream; charset=utf-8")])));
        assert!(!is_event_stream(&headers(&[JSON])));
    }
}
