//! Strict request framing on HTTP/1 client connections: every request head is checked from
//! the raw bytes before hyper parses it, and refused with `400`, `414` or `431` and a closed
//! connection when two parsers could read it two ways or it is over a limit.
//!
//! # Why a wrapper around the connection
//!
//! hyper's HTTP/1 server (through httparse) accepts heads an edge must refuse, and cannot say
//! that it did: with both `Content-Length` and `Transfer-Encoding` it drops the length
//! silently; httparse takes a bare LF as a line end; neither refuses `Transfer-Encoding:
//! gzip, chunked`. No builder option covers these (`http1().max_headers()` and
//! `max_buf_size()` bound counts and sizes only). So [`FramedIo`] sits between the socket
//! and hyper on every HTTP/1 connection (HTTP/2, told apart by its preface, passes through
//! untouched): it holds each head back until it is whole, checks it ([`head::check`]), and
//! only then hands it on. Body bytes are handed on as they come, counted against the length
//! or followed through the chunk framing ([`chunked::Chunked`]), so that the next head of a
//! pipelined connection is checked from its true first byte.
//!
//! A refused head never reaches hyper: in its place hyper is given a stand-in request
//! (`GET / HTTP/1.1`) and the connection's [`Verdict`] tells the service that this request is
//! the refused one, so the refusal is answered in order after any earlier pipelined
//! responses, with `Connection: close`, and nothing more is read. Nothing of a refused
//! request goes to a route or an upstream.
//!
//! Cost: one scan of each head's bytes for line ends, one check pass, and a header timer made
//! once per connection. Bytes are read straight into hyper's buffer and checked there, so
//! whole heads and their bodies are not copied again and a connection holds no buffer of its
//! own between heads; only a head that arrives in part is held back, in a buffer (8 KiB,
//! grown only for a larger head) let go once the head has gone on. About 0.9 µs for a
//! 620-byte head (`cargo bench -p accel-benches --bench framing`; see `docs/operations.md`).
//!
//! HTTP/2 is framed by the protocol and bounded by the h2 library itself; [`h2`] reads back
//! why it ended a client's connection, so that those ends are counted and logged with the
//! HTTP/1 refusals ([`Rejections::record_h2`]).

pub mod chunked;
pub mod connection;
pub mod h2;
pub mod head;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

pub use connection::FramedIo;
pub use h2::H2Abuse;

use crate::body::{Guard, Until};
use crate::metrics::{Metrics, WarnBudget};

/// Bounds of one request head, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes of the whole head, request line and blank line included (`max_header_size`).
    pub max_head: usize,
    /// Header fields (`max_headers`).
    pub max_headers: usize,
    /// Bytes of the request target (`max_target_length`).
    pub max_target: usize,
}

/// Why a request was refused before it reached the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndEncoding,
    /// A `Transfer-Encoding` other than a lone `chunked`, or in an HTTP/1.0 request.
    TransferEncoding,
    /// A `Content-Length` that is not one run of digits, or more than one.
    ContentLength,
    /// A header line starting with a space or tab.
    ObsFold,
    /// Whitespace between a field name and its colon.
    SpaceBeforeColon,
    /// A line feed without its carriage return.
    BareLf,
    /// A control character in a field value.
    ControlCharacter,
    /// A field name that is not a token, or a line without a colon.
    FieldName,
    /// A request line that is not `method SP target SP HTTP/1.x`.
    RequestLine,
    /// A request target with a control character, space or non-ASCII byte.
    Target,
    /// The chunked framing of a request body is broken.
    Chunked,
    /// The head is longer than `max_header_size`.
    HeadTooLarge,
    /// More than `max_headers` fields.
    TooManyHeaders,
    /// A request target longer than `max_target_length`.
    TargetTooLong,
    /// A request body over its route's `max_body_size`.
    BodyTooLarge,
    /// The client already has `max_connections_per_client` connections open.
    ClientConnections,
}

impl Reason {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LengthAndEncoding => "length_and_encoding",
            Self::TransferEncoding => "transfer_encoding",
            Self::ContentLength => "content_length",
            Self::ObsFold => "obs_fold",
            Self::SpaceBeforeColon => "space_before_colon",
            Self::BareLf => "bare_lf",
            Self::ControlCharacter => "control_character",
            Self::FieldName => "field_name",
            Self::RequestLine => "request_line",
            Self::Target => "target",
            Self::Chunked => "chunked",
            Self::HeadTooLarge => "head_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::TargetTooLong => "target_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::ClientConnections => "client_connections",
        }
    }

    /// The status the client gets.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::LengthAndEncoding
            | Self::TransferEncoding
            | Self::ContentLength
            | Self::ObsFold
            | Self::SpaceBeforeColon
            | Self::BareLf
            | Self::ControlCharacter
            | Self::FieldName
            | Self::RequestLine
            | Self::Target
            | Self::Chunked => StatusCode::BAD_REQUEST,
        }
    }

    const ALL: [Self; 16] = [
        Self::LengthAndEncoding,
        Self::TransferEncoding,
        Self::ContentLength,
        Self::ObsFold,
        Self::SpaceBeforeColon,
        Self::BareLf,
        Self::ControlCharacter,
        Self::FieldName,
        Self::RequestLine,
        Self::Target,
        Self::Chunked,
        Self::HeadTooLarge,
        Self::TooManyHeaders,
        Self::TargetTooLong,
        Self::BodyTooLarge,
        Self::ClientConnections,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// One connection's word to its service: which request (counted from 1 in the order hyper
/// dispatches them) stands in for a refused head, and why; and, back from the answers, how
/// many have gone out and when the last one did (the keep-alive idle time starts then).
#[derive(Debug)]
pub struct Verdict {
    /// The stand-in request's number; 0 while no head was refused.
    refused_at: AtomicU64,
    reason: AtomicU64,
    /// Requests dispatched so far.
    dispatched: AtomicU64,
    /// The answer going out switches the connection to another protocol (a `101`).
    switching: std::sync::atomic::AtomicBool,
    /// Answers out whole (or dropped) so far: see [`Answering`].
    answered: AtomicU64,
    /// When the last answer went out, in nanoseconds after `opened`; 0 before the first.
    idle_since: AtomicU64,
    opened: Instant,
}

impl Default for Verdict {
    /// A connection opened now.
    fn default() -> Self {
        Self {
            refused_at: AtomicU64::new(0),
            reason: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            switching: std::sync::atomic::AtomicBool::new(false),
            answered: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }
}

impl Verdict {
    /// Request number `at` stands in for a head refused for `reason`.
    fn refuse(&self, at: u64, reason: Reason) {
        self.reason.store(reason.index() as u64, Ordering::Relaxed);
        self.refused_at.store(at, Ordering::Release);
    }

    /// The answer about to go out is a `101`: the bytes after it are the new protocol's.
    pub fn switch(&self) {
        self.switching.store(true, Ordering::Release);
    }

    fn is_switching(&self) -> bool {
        self.switching.load(Ordering::Acquire)
    }

    /// Answers out whole (or dropped) so far.
    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// When the last answer went out (when the connection opened, before the first).
    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }

    /// Counts one dispatched request; the refusal's reason when it is the stand-in.
    pub fn next_request(&self) -> Option<Reason> {
        let number = self.dispatched.fetch_add(1, Ordering::Relaxed) + 1;
        if self.refused_at.load(Ordering::Acquire) != number {
            return None;
        }
        Reason::ALL.get(self.reason.load(Ordering::Relaxed) as usize).copied()
    }
}

/// Held by an answer's body until its last frame is out (or the body is dropped), then
/// counted in its connection's [`Verdict`]: the keep-alive idle time starts once every answer
/// is out, never while a slow answer still streams.
#[derive(Debug)]
pub struct Answering(Arc<Verdict>);

impl Answering {
    /// Counts the answer to a request of the connection `verdict` speaks for.
    pub fn new(verdict: Arc<Verdict>) -> Self {
        Self(verdict)
    }
}

impl<E> Guard<E> for Answering {
    const UNTIL: Until = Until::LastFrame;
}

impl Drop for Answering {
    fn drop(&mut self) {
        let verdict = &self.0;
        let since = u64::try_from(verdict.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        verdict.idle_since.store(since, Ordering::Release);
        verdict.answered.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `accel_downstream_rejections_total{reason}` and a warning within a [`WarnBudget`], so a
/// flood of bad requests cannot flood the log.
#[derive(Debug, Clone)]
pub struct Rejections {
    counters: Family<ReasonLabels, Counter>,
    warnings: WarnBudget,
}

impl Rejections {
    /// Registers the counter in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let counters = metrics.family(
            "downstream_rejections",
            "Client requests and connections refused before routing (bad framing, limits), by reason",
            Family::<ReasonLabels, Counter>::default,
        );
        // Every reason from zero, so that a first refusal is an increase `rate()` can see.
        let labels = Reason::ALL.map(Reason::as_str).into_iter().chain(H2Abuse::ALL.map(H2Abuse::as_str));
        for reason in labels {
            counters.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        Self { counters, warnings: WarnBudget::default() }
    }

    /// Counts one refusal, and logs it unless one was logged within [`WarnBudget::EVERY`].
    pub fn record(&self, reason: Reason, peer: std::net::SocketAddr) {
        self.counters.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
        if let Some(suppressed) = self.warnings.due() {
            tracing::warn!(
                reason = reason.as_str(),
                status = reason.status().as_u16(),
                %peer,
                suppressed,
                "refused a client request"
            );
        }
    }

    /// Counts one HTTP/2 connection h2 ended with `GOAWAY goaway` for `abuse`, and logs it
    /// within the same budget as [`record`](Self::record).
    pub fn record_h2(&self, abuse: H2Abuse, goaway: ::h2::Reason, peer: std::net::SocketAddr) {
        self.counters.get_or_create(&ReasonLabels { reason: abuse.as_str() }).inc();
        if let Some(suppressed) = self.warnings.due() {
            tracing::warn!(
                reason = abuse.as_str(),
                goaway = ?goaway,
                %peer,
                suppressed,
                "ended a client's HTTP/2 connection"
            );
        }
    }
}
