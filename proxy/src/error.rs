//! The proxy's errors and the one place that turns them into responses.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, BoxError};
use crate::framing::Reason;
use crate::limit::Refusal;
use crate::limit::headers::{RATELIMIT, RATELIMIT_POLICY, set_retry_after};
use crate::name::{EndpointAddr, UpstreamName};

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Everything that can end a request without an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request matched no route.
    #[error("no route matches the request")]
    NoRoute,
    /// The request itself is malformed.
    #[error("bad request: {reason}")]
    BadRequest { reason: &'static str },
    /// The request body is larger than the route's `max_body_size` (by its `Content-Length`,
    /// or as it streamed: then the upstream request was cut off, never completed).
    #[error("request body over {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client kept its request body waiting for longer than `limits.body_read_timeout`.
    #[error("the client sent no request body bytes for {after:?}")]
    ClientTimeout { after: Duration },
    /// Every endpoint of the upstream is unhealthy or unreachable.
    #[error("no healthy endpoint in upstream {upstream}")]
    NoHealthyEndpoint { upstream: UpstreamName },
    /// Every endpoint the request could go to is at `max_connections_per_endpoint`.
    #[error("every endpoint of upstream {upstream} is at its connection cap")]
    UpstreamFull { upstream: UpstreamName },
    /// The endpoint could not be reached.
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: EndpointAddr,
        #[source]
        source: BoxError,
    },
    /// The endpoint failed during the exchange.
    #[error("upstream {endpoint} failed")]
    Upstream {
        endpoint: EndpointAddr,
        #[source]
        source: BoxError,
    },
    /// No response headers within the route's timeout.
    #[error("upstream timed out after {after:?}")]
    Timeout { after: Duration },
    /// One of the route's rate limits refused the request: its status (`429` unless the rule
    /// says otherwise), when to try again, and the limit's `RateLimit-Policy` / `RateLimit`.
    #[error("rate limited")]
    RateLimited {
        status: StatusCode,
        retry_after: Duration,
        policy: Option<HeaderValue>,
        state: Option<HeaderValue>,
    },
    /// The client already has `client_concurrency` requests in flight.
    #[error("too many concurrent requests from one client")]
    ClientConcurrency,
    /// The proxy is shedding load.
    #[error("overloaded")]
    Overloaded { retry_after: Duration },
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Limited { status, retry_after, policy, state } => {
                Self::RateLimited { status, retry_after, policy, state }
            }
            Refusal::ClientConcurrency => Self::ClientConcurrency,
            Refusal::ClusterUnavailable => Self::Overloaded { retry_after: Duration::from_secs(1) },
        }
    }
}

impl ProxyError {
    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::NoHealthyEndpoint { .. } | Self::UpstreamFull { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited { status, .. } => *status,
            Self::ClientConcurrency => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Self::NoRoute
            | Self::BadRequest { .. }
            | Self::BodyTooLarge { .. }
            | Self::ClientTimeout { .. }
            | Self::RateLimited { .. }
            | Self::ClientConcurrency => Side::Downstream,
            Self::NoHealthyEndpoint { .. }
            | Self::UpstreamFull { .. }
            | Self::Connect { .. }
            | Self::Upstream { .. }
            | Self::Timeout { .. } => Side::Upstream,
            Self::Overloaded { .. } => Side::Internal,
        }
    }

    /// The response for the client: the status with a short plain-text body naming the
    /// failure (never the upstream's internals), `Retry-After` where waiting helps, and a
    /// rate limit's `RateLimit` headers. The one place where errors become answers.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let body_too_large = matches!(self, Self::BodyTooLarge { .. });
        let (text, retry_after): (&'static str, Option<Duration>) = match &self {
            Self::NoRoute => ("no route\n", None),
            Self::BadRequest { .. } => ("bad request\n", None),
            Self::BodyTooLarge { .. } => ("request body too large\n", None),
            Self::ClientTimeout { .. } => ("request body timed out\n", None),
            Self::NoHealthyEndpoint { .. } => ("no healthy upstream\n", Some(Duration::from_secs(1))),
            Self::UpstreamFull { .. } => ("upstream at capacity\n", Some(Duration::from_secs(1))),
            Self::Connect { .. } => ("upstream unreachable\n", None),
            Self::Upstream { .. } => ("upstream error\n", None),
            Self::Timeout { .. } => ("upstream timeout\n", None),
            Self::Overloaded { retry_after } => ("overloaded\n", Some(*retry_after)),
            Self::RateLimited { retry_after, .. } => ("rate limited\n", Some(*retry_after)),
            Self::ClientConcurrency => ("too many concurrent requests\n", Some(Duration::from_secs(1))),
        };
        let mut response = Response::new(Body::full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = retry_after {
            set_retry_after(headers, after);
        }
        if let Self::RateLimited { policy, state, .. } = self {
            if let Some(policy) = policy {
                headers.insert(&RATELIMIT_POLICY, policy);
            }
            if let Some(state) = state {
                headers.insert(&RATELIMIT, state);
            }
        }
        if status == StatusCode::REQUEST_TIMEOUT || body_too_large {
            // The rest of the body will not be read: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if body_too_large {
            // Counted with the other refusals of client input (`accel_downstream_rejections_total`).
            response.extensions_mut().insert(Reason::BodyTooLarge);
        }
        response
    }
}
