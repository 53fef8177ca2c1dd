//! Upstream metrics: tries by endpoint and outcome, their latency, response bodies that broke
//! off, endpoint health, in-flight requests, ejections, name lookups and overflow.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{HistogramFamily, Metrics};
use crate::name::{EndpointAddr, UpstreamName};

/// The outcome of one try to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamOutcome {
    /// Response headers received with a status below 500.
    Success,
    /// A 5xx status.
    ServerError,
    /// The connection could not be made.
    ConnectError,
    /// No response headers within the route's timeout.
    Timeout,
    /// The connection failed during the exchange.
    ProtocolError,
}

impl UpstreamOutcome {
    /// Every value.
    pub const ALL: [Self; 5] =
        [Self::Success, Self::ServerError, Self::ConnectError, Self::Timeout, Self::ProtocolError];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ServerError => "server_error",
            Self::ConnectError => "connect_error",
            Self::Timeout => "timeout",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// Why a response body broke off after its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyError {
    /// Nothing came for the upstream's `read_timeout`.
    Stalled,
    /// The endpoint closed the connection before the body's end.
    Closed,
    /// The body broke its chunked framing (a bad size line, data not followed by CRLF,
    /// malformed trailers).
    Invalid,
    /// Reading the connection failed (a reset by the endpoint among them).
    Io,
}

impl BodyError {
    /// Every value.
    pub const ALL: [Self; 4] = [Self::Stalled, Self::Closed, Self::Invalid, Self::Io];

    /// The reason for `error`. A response body fails only with `Stalled`, `Truncated`,
    /// `Invalid` or `Io`; the others (errors of a request or its head) are mapped for
    /// completeness.
    pub fn of(error: &crate::h1::Error) -> Self {
        use crate::h1::Error;
        match error {
            Error::Stalled { .. } | Error::TimedOut => Self::Stalled,
            Error::Closed | Error::Truncated => Self::Closed,
            Error::Invalid(_) => Self::Invalid,
            Error::Io(_) | Error::Body(_) => Self::Io,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::Closed => "closed",
            Self::Invalid => "invalid",
            Self::Io => "io",
        }
    }
}

/// The result of one lookup of an endpoint's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupOutcome {
    /// The name's addresses, the same as before (or found the first time).
    Found,
    /// Addresses other than the ones in use: new connections go to the new ones.
    Changed,
    /// No answer, no address or no answer in time: the last addresses stay in use.
    Failed,
}

impl LookupOutcome {
    /// Every value.
    pub const ALL: [Self; 3] = [Self::Found, Self::Changed, Self::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::Changed => "changed",
            Self::Failed => "failed",
        }
    }
}

/// One endpoint's lookup counters, by [`LookupOutcome`].
#[derive(Debug, Clone, Default)]
pub struct Lookups([Counter; 3]);

impl Lookups {
    /// Counts one lookup.
    pub fn count(&self, outcome: LookupOutcome) {
        let i = LookupOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].inc();
    }

    /// Lookups counted with `outcome`.
    pub fn get(&self, outcome: LookupOutcome) -> u64 {
        let i = LookupOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    upstream: String,
    endpoint: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BodyErrorLabels {
    upstream: String,
    endpoint: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    upstream: String,
    endpoint: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// One endpoint's metric handles.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    pub duration: Histogram,
    pub healthy: Gauge,
    pub in_flight: Gauge,
    pub ejections: Counter,
    /// Lookups of the endpoint's name (none for an IP address).
    pub lookups: Lookups,
    outcomes: [Counter; 5],
    body_errors: [Counter; 4],
}

impl EndpointMetrics {
    /// Handles for `endpoint` of `upstream`.
    pub fn new(metrics: &Metrics, upstream: &UpstreamName, endpoint: &EndpointAddr) -> Self {
        let labels =
            EndpointLabels { upstream: upstream.as_str().to_owned(), endpoint: endpoint.to_string() };
        let families = EndpointFamilies::get(metrics);
        let outcome = |o: UpstreamOutcome| {
            families
                .upstream_requests
                .get_or_create(&OutcomeLabels {
                    upstream: labels.upstream.clone(),
                    endpoint: labels.endpoint.clone(),
                    outcome: o.as_str(),
                })
                .clone()
        };
        Self {
            duration: families.upstream_duration.get_or_create(&labels).clone(),
            healthy: families.endpoint_healthy.get_or_create(&labels).clone(),
            in_flight: families.endpoint_in_flight.get_or_create(&labels).clone(),
            ejections: families.endpoint_ejections.get_or_create(&labels).clone(),
            lookups: Lookups(LookupOutcome::ALL.map(|o| {
                let labels = LookupLabels {
                    upstream: labels.upstream.clone(),
                    endpoint: labels.endpoint.clone(),
                    result: o.as_str(),
                };
                families.endpoint_lookups.get_or_create(&labels).clone()
            })),
            outcomes: UpstreamOutcome::ALL.map(outcome),
            body_errors: BodyError::ALL.map(|reason| {
                let labels = BodyErrorLabels {
                    upstream: labels.upstream.clone(),
                    endpoint: labels.endpoint.clone(),
                    reason: reason.as_str(),
                };
                families.upstream_body_errors.get_or_create(&labels).clone()
            }),
        }
    }

    /// Counts a response body that broke off.
    pub fn body_error(&self, reason: BodyError) {
        let i = BodyError::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.body_errors[i].inc();
    }

    /// Counts one try's outcome.
    pub fn outcome(&self, outcome: UpstreamOutcome) {
        let i = UpstreamOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].inc();
    }
}

/// Takes the health gauge of an endpoint removed from `upstream` out of the exposition, so
/// that it no longer counts as a healthy endpoint; its counters stay.
pub fn retire(metrics: &Metrics, upstream: &UpstreamName, endpoint: &EndpointAddr) {
    let labels = EndpointLabels { upstream: upstream.as_str().to_owned(), endpoint: endpoint.to_string() };
    EndpointFamilies::get(metrics).endpoint_healthy.remove(&labels);
}

/// The endpoint families, shared by every endpoint of every upstream.
struct EndpointFamilies {
    upstream_duration: HistogramFamily<EndpointLabels>,
    upstream_requests: Family<OutcomeLabels, Counter>,
    upstream_body_errors: Family<BodyErrorLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    endpoint_in_flight: Family<EndpointLabels, Gauge>,
    endpoint_ejections: Family<EndpointLabels, Counter>,
    endpoint_lookups: Family<LookupLabels, Counter>,
}

impl EndpointFamilies {
    fn get(metrics: &Metrics) -> Self {
        Self {
            upstream_duration: metrics.family(
                "upstream_request_duration_seconds",
                "Time from sending a request to an endpoint to its response headers",
                || metrics.histograms(),
            ),
            upstream_requests: metrics.family(
                "upstream_requests",
                "Tries sent to endpoints, by outcome",
                Family::default,
            ),
            upstream_body_errors: metrics.family(
                "upstream_body_errors",
                "Response bodies that broke off after their head, by reason (stalled, closed, invalid, io)",
                Family::default,
            ),
            endpoint_healthy: metrics.family(
                "endpoint_healthy",
                "1 when the active health checks pass",
                Family::default,
            ),
            endpoint_in_flight: metrics.family(
                "endpoint_in_flight",
                "Requests in flight on an endpoint, until the response body ends",
                Family::default,
            ),
            endpoint_ejections: metrics.family(
                "endpoint_ejections",
                "Passive ejections of an endpoint",
                Family::default,
            ),
            endpoint_lookups: metrics.family(
                "endpoint_lookups",
                "Lookups of an endpoint's name, by result (found, changed, failed)",
                Family::default,
            ),
        }
    }
}

/// The overflow counter of `upstream`: requests refused because every endpoint they could go
/// to was at its cap (see [`super::UpstreamConfig`]'s `max_connections_per_endpoint`).
pub fn overflow(metrics: &Metrics, upstream: &UpstreamName) -> Counter {
    metrics
        .family(
            "upstream_overflow",
            "Requests refused because every endpoint they could go to was at max_connections_per_endpoint",
            Family::<UpstreamLabels, Counter>::default,
        )
        .get_or_create(&UpstreamLabels { upstream: upstream.as_str().to_owned() })
        .clone()
}
