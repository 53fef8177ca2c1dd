//! Answers from stored entries: the entry (or a `304`, or a range of it), `Age`,
//! `Cache-Status` and the headers the cache keeps to itself.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::range::{self, Ranged};
use super::*;

impl Cache {
    /// An answer from `entry` to a `method` request on `route`: a 304 when the client's
    /// conditions match, else a GET's range of it ([`range`]) or the entry (no body for HEAD),
    /// with `Age` and `Cache-Status`. The caller counts the lookup.
    pub fn answer(
        &self,
        route: &RouteCaching,
        entry: &CacheEntry,
        method: &Method,
        request: &HeaderMap,
        now: clock::Millis,
        status: CacheStatus,
    ) -> Answer {
        let age = entry.age(now).as_secs();
        let head = method == Method::HEAD;
        // Ranges only of a GET (RFC 9110 §14.2), after the client's validators (§13.2.2).
        let ranged = || (method == Method::GET).then(|| range::evaluate(request, entry)).flatten();
        let response = if conditional::matches(request, entry) {
            let mut response = conditional::not_modified(entry);
            self.mark_hit(response.headers_mut(), age, status);
            response
        } else if let Some(ranged) = ranged() {
            self.metrics.range(&ranged);
            let mut headers = entry.headers.clone();
            self.mark_hit(&mut headers, age, status);
            headers.insert(header::ACCEPT_RANGES, ACCEPT_BYTES);
            ranged_answer(entry, ranged, headers)
        } else {
            let mut response =
                Response::new(if head { Body::empty() } else { Body::full(entry.body.clone()) });
            *response.status_mut() = entry.status;
            let build = || {
                let mut headers = entry.headers.clone();
                // `Age`, the status fields, `Accept-Ranges` and the id: one growth at most.
                headers.reserve(5);
                self.mark_hit(&mut headers, age, status);
                if entry.status == StatusCode::OK && method != Method::POST {
                    // The cache serves ranges of it, whatever the origin does.
                    headers.insert(header::ACCEPT_RANGES, ACCEPT_BYTES);
                }
                if route.request_id && !headers.contains_key(&X_REQUEST_ID) {
                    // The field the pipeline sets next, in place: a clone of these headers
                    // has room for no more, and the client's connection keeps the map.
                    headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("-"));
                }
                headers
            };
            *response.headers_mut() = match status {
                // The common case: built once per second of the entry's life.
                CacheStatus::Hit { ttl } => entry.hit.get(age, ttl.unsigned_abs(), route.request_id, build),
                _ => build(),
            };
            if !head && request.contains_key(header::ACCEPT_ENCODING) {
                // The compress stage serves a stored variant instead of compressing again.
                let cached = CachedBody { body: entry.body.clone(), variants: entry.variants.clone() };
                response.extensions_mut().insert(cached);
            }
            response
        };
        Answer { response, result: status.result() }
    }

    /// How many status fields the cache adds to an answer: `Cache-Status`, and
    /// `X-Cache-Status` when configured.
    pub fn status_fields(&self) -> usize {
        1 + usize::from(self.config.x_cache_status)
    }

    /// `Age` and the cache's status headers of an answer from an entry `age` seconds old.
    pub(super) fn mark_hit(&self, headers: &mut HeaderMap, age: u64, status: CacheStatus) {
        // Room for the headers added here, so the map grows (and rehashes) at most once.
        headers.reserve(3);
        headers.insert(header::AGE, conditional::age_value(age));
        self.mark(headers, status);
    }

    pub(super) fn mark(&self, headers: &mut HeaderMap, status: CacheStatus) {
        headers.insert(CACHE_STATUS.clone(), status.header_value());
        if self.config.x_cache_status {
            headers.insert(X_CACHE_STATUS.clone(), HeaderValue::from_static(status.x_cache_status()));
        }
    }

    /// Removes what the origin told the cache alone: tag and invalidation headers (unless
    /// `strip_tag_headers = false`) and the targeted fields not forwarded.
    pub(super) fn strip_tag_headers(&self, headers: &mut HeaderMap) {
        if self.config.strip_tag_headers {
            for name in self.config.tag_headers.iter().chain(&self.config.invalidation_headers) {
                headers.remove(name);
            }
        }
        for name in &self.config.targeted.removed {
            headers.remove(name);
        }
    }
}

/// The field of the request id the pipeline sets on every answer of a route with ids.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `Accept-Ranges` of a stored `200`.
const ACCEPT_BYTES: HeaderValue = HeaderValue::from_static("bytes");

/// The `206` or `416` for `ranged` of `entry`, with the whole answer's `headers`.
fn ranged_answer(entry: &CacheEntry, ranged: Ranged, mut headers: HeaderMap) -> Response<Body> {
    let len = entry.body.len() as u64;
    let (code, body) = match ranged {
        Ranged::Partial(bytes) => {
            headers.insert(header::CONTENT_RANGE, range::content_range(&bytes, len));
            let slice = entry.body.slice(*bytes.start() as usize..=*bytes.end() as usize);
            (StatusCode::PARTIAL_CONTENT, slice)
        }
        Ranged::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, range::unsatisfied_range(len));
            // Nothing of the representation is sent: none of its metadata either.
            for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
                headers.remove(name);
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, bytes::Bytes::new())
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}
