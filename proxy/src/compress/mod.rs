//! Compress: brotli, zstd or gzip on the way out, as the client accepts and the route allows.
//!
//! The stage reads the request's `Accept-Encoding` before the request goes upstream
//! ([`Negotiation::new`]) and applies it to the answer ([`Negotiation::apply`]):
//!
//! - an answer the route compresses ([`predicate`]: status, media type, size, no existing
//!   coding, no `no-transform`) gets `Vary: Accept-Encoding`, and, unless the request is a
//!   `HEAD`, a `Range` request or says `no-transform`, the coding the client weighs highest
//!   among the route's ([`negotiate`]); the body is compressed as it streams ([`body`]), so
//!   `Content-Length` goes and a strong `ETag` is weakened (`W/`);
//! - an answer the origin compressed itself passes untouched when the client accepts its
//!   coding, and is decompressed (then compressed again in a coding the client accepts, if
//!   any) when it does not.
//!
//! Files: [`encoding`] (the codings), [`negotiate`] (`Accept-Encoding`), [`predicate`] (when
//! not to), [`codec`] (compressors over chunks), [`body`] (streaming bodies), [`variant`]
//! (cached answers' variants, compressed once), [`rule`] (operator settings → policy),
//! [`metrics`].

pub mod body;
pub mod codec;
pub mod encoding;
pub mod metrics;
pub mod negotiate;
pub mod predicate;
pub mod rule;
pub mod variant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::response::Parts;
use http::{Method, Response};
use http_body::SizeHint;

pub use encoding::Encoding;
pub use negotiate::AcceptEncoding;
pub use predicate::Skip;
pub use rule::{CompressFile, CompressPolicy, CompressSettings};
pub use variant::Variants;

use self::body::{DecodeBody, EncodeBody, Flush};
use self::codec::{Decoder, Encoder};
use self::metrics::{CompressMetrics, RouteCompressMetrics, Run};
use crate::body::Body;
use crate::metrics::Metrics;
use crate::name::RouteName;

/// What every route's compression is built from: the `[compress]` defaults of `accel.toml`
/// and the metric families. Lives as long as the proxy; routes are rebuilt from it on reload.
#[derive(Debug)]
pub struct Compression {
    defaults: CompressSettings,
    metrics: CompressMetrics,
}

impl Compression {
    /// Registers the compression metrics; `defaults` is the `[compress]` section.
    pub fn new(defaults: CompressSettings, metrics: &Metrics) -> Self {
        Self { defaults, metrics: CompressMetrics::register(metrics) }
    }

    /// The same metric families with the `[compress]` defaults `defaults` (a reload of
    /// `accel.toml`; routes are then rebuilt from it).
    pub fn with_defaults(&self, defaults: CompressSettings) -> Self {
        Self { defaults, metrics: self.metrics.clone() }
    }

    /// The `[compress]` defaults.
    pub fn defaults(&self) -> &CompressSettings {
        &self.defaults
    }

    /// The compression of route `name`, whose own `compress` table is `settings`; `None`
    /// when it does not compress.
    pub fn for_route(
        &self,
        name: &RouteName,
        settings: Option<&CompressSettings>,
    ) -> Option<RouteCompression> {
        let policy = CompressSettings::resolve(settings, &self.defaults)?;
        Some(RouteCompression { policy, metrics: self.metrics.route(name) })
    }
}

/// One route's compression: its policy and metric handles, resolved when the rules load.
#[derive(Debug)]
pub struct RouteCompression {
    pub policy: CompressPolicy,
    pub metrics: RouteCompressMetrics,
}

impl RouteCompression {
    /// The variants slot for an answer about to be cached. With `eager`, every coding of
    /// the route is compressed now, in the background, if the answer is compressible.
    pub fn variants_for(&self, parts: &Parts, body: &Bytes) -> Variants {
        let variants = Variants::new();
        if let Some(fill) = self.eager_fill(parts, body, &variants) {
            tokio::spawn(fill);
        }
        variants
    }

    /// With `eager` and a compressible answer: the work that compresses each of the route's
    /// codings into `variants`; `None` otherwise.
    pub fn eager_fill(
        &self,
        parts: &Parts,
        body: &Bytes,
        variants: &Variants,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let hint = SizeHint::with_exact(body.len() as u64);
        if !self.policy.eager
            || predicate::response(&self.policy, parts.status, &parts.headers, &hint).is_some()
        {
            return None;
        }
        let (variants, body) = (variants.clone(), body.clone());
        let (policy, metrics) = (self.policy.clone(), self.metrics.clone());
        Some(async move {
            for &encoding in &policy.encodings {
                let level = policy.cached_level(encoding);
                if let Err(error) =
                    variants.get_or_compress(encoding, level, &body, metrics.get(encoding)).await
                {
                    tracing::warn!(encoding = encoding.as_str(), %error, "eager variant compression failed");
                }
            }
        })
    }
}

/// The compress stage for one exchange: what the client accepts, read from the request before
/// it goes upstream, then applied to the answer.
#[derive(Debug, Clone, Copy)]
pub struct Negotiation<'a> {
    route: Option<&'a RouteCompression>,
    accept: AcceptEncoding,
    skip: Option<Skip>,
}

impl<'a> Negotiation<'a> {
    /// Reads the request; `route` is `None` when the route does not compress (then
    /// [`Negotiation::apply`] changes nothing and this reads nothing).
    pub fn new(route: Option<&'a RouteCompression>, method: &Method, headers: &HeaderMap) -> Self {
        match route {
            None => Self { route, accept: AcceptEncoding::default(), skip: None },
            Some(_) => Self {
                route,
                accept: AcceptEncoding::from_headers(headers),
                skip: predicate::request(method, headers),
            },
        }
    }

    /// What the client accepts.
    pub fn accept(&self) -> &AcceptEncoding {
        &self.accept
    }

    /// The answer as the client gets it: compressed, decompressed or untouched.
    ///
    /// Inlined for a route that does not compress: the answer then stays where the caller
    /// keeps it instead of being copied through a call.
    #[inline]
    pub fn apply(self, response: Response<Body>) -> Response<Body> {
        match self.route {
            None => response,
            Some(route) => self.apply_route(route, response),
        }
    }

    fn apply_route(self, route: &RouteCompression, response: Response<Body>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        let hint = http_body::Body::size_hint(&body);
        match predicate::response(&route.policy, parts.status, &parts.headers, &hint) {
            None => {}
            Some(Skip::Encoded) => return self.origin_encoded(route, parts, body),
            Some(_) => return Response::from_parts(parts, body),
        }
        add_vary(&mut parts.headers);
        if self.skip.is_some() {
            return Response::from_parts(parts, body);
        }
        let body = self.encode(route, &mut parts, body);
        Response::from_parts(parts, body)
    }

    /// A cached answer (`parts` and its identity `body`) as the client gets it: the variant
    /// of `variants` in the negotiated coding, compressed at the route's `cached_level` the
    /// first time any client asks for it and reused after; the identity body when the route,
    /// the request or the answer rules compression out, or the client accepts none of the
    /// route's codings. Never a coding the client did not accept.
    pub async fn apply_cached(self, mut parts: Parts, body: &Bytes, variants: &Variants) -> Response<Body> {
        let identity = |parts| Response::from_parts(parts, Body::full(body.clone()));
        let Some(route) = self.route else { return identity(parts) };
        let hint = SizeHint::with_exact(body.len() as u64);
        if predicate::response(&route.policy, parts.status, &parts.headers, &hint).is_some() {
            return identity(parts);
        }
        add_vary(&mut parts.headers);
        let encoding = self.accept.negotiate(&route.policy.encodings);
        if self.skip.is_some() || encoding == Encoding::Identity {
            return identity(parts);
        }
        let metrics = route.metrics.get(encoding);
        let level = route.policy.cached_level(encoding);
        match variants.get_or_compress(encoding, level, body, metrics).await {
            Ok(variant) => {
                if let Some(m) = metrics {
                    m.responses.inc();
                }
                variant::mark_variant(&mut parts, encoding, variant.len());
                Response::from_parts(parts, Body::full(variant))
            }
            Err(error) => {
                tracing::warn!(encoding = encoding.as_str(), %error, "cached variant compression failed");
                identity(parts)
            }
        }
    }

    /// Compresses `body` in the coding negotiated, if any, and marks the headers.
    fn encode(&self, route: &RouteCompression, parts: &mut Parts, body: Body) -> Body {
        let encoding = self.accept.negotiate(&route.policy.encodings);
        let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let Some(encoder) = Encoder::new(encoding, route.policy.level(encoding), length) else { return body };
        let flush =
            if predicate::is_event_stream(&parts.headers) { Flush::EveryChunk } else { Flush::Coding };
        let meter = route.metrics.get(encoding).map(|m| {
            m.responses.inc();
            m.start(Run::Stream)
        });
        mark_encoded(&mut parts.headers, encoding);
        Body::boxed(EncodeBody::new(body, encoder, flush, meter))
    }

    /// An answer the origin compressed: passed through when the client accepts its coding,
    /// decompressed (and compressed again as the client accepts) when it does not.
    fn origin_encoded(self, route: &RouteCompression, mut parts: Parts, body: Body) -> Response<Body> {
        // Only one coding the proxy speaks can be judged; anything else passes as it is.
        let Some(coding) = single_coding(&parts.headers) else { return Response::from_parts(parts, body) };
        let metrics = route.metrics.get(coding);
        if !predicate::has_compressible_body(parts.status)
            || parts.headers.contains_key(header::CONTENT_RANGE)
        {
            return Response::from_parts(parts, body);
        }
        add_vary(&mut parts.headers);
        if self.accept.accepts(coding) {
            if let Some(m) = metrics {
                m.passed_through.inc();
            }
            return Response::from_parts(parts, body);
        }
        if self.skip.is_some() || predicate::no_transform(&parts.headers) {
            return Response::from_parts(parts, body);
        }
        let Some(decoder) = Decoder::new(coding) else { return Response::from_parts(parts, body) };
        if let Some(m) = metrics {
            m.decoded.inc();
        }
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::ACCEPT_RANGES);
        weaken_etag(&mut parts.headers);
        let decoded = Body::boxed(DecodeBody::new(body, decoder));
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let body = if route.policy.compresses_type(content_type.unwrap_or("")) {
            self.encode(route, &mut parts, decoded)
        } else {
            decoded
        };
        Response::from_parts(parts, body)
    }
}

/// The single coding of `Content-Encoding` when the proxy speaks it.
fn single_coding(headers: &HeaderMap) -> Option<Encoding> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() || value.contains(',') {
        return None;
    }
    Encoding::from_token(value).filter(|e| *e != Encoding::Identity)
}

/// Headers of a body now sent in `encoding`: `Content-Encoding` set, `Content-Length` gone
/// (the length is known only at the end), `Accept-Ranges` gone (ranges address the identity
/// body), a strong `ETag` weakened.
pub fn mark_encoded(headers: &mut HeaderMap, encoding: Encoding) {
    if let Some(value) = encoding.header_value() {
        headers.insert(header::CONTENT_ENCODING, value);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `Vary: *`).
pub fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|field| field == "*" || field.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// `ETag: "x"` → `ETag: W/"x"`: the compressed bytes differ from the origin's, so the tag
/// only promises semantic equivalence (RFC 9110 §8.8.3).
pub fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else { return };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&weak) {
        headers.insert(header::ETAG, value);
    }
}

#[cfg(test)]
mod tests;
