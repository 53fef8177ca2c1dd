//! Compression metrics: responses by encoding, bytes in and out of the compressors (their
//! ratio is the compression ratio), compression time, and compression runs, so that "a cached
//! variant is compressed once" can be read off a counter. Handles are resolved per route and
//! encoding when the rules load.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::Encoding;
use crate::metrics::Metrics;
use crate::name::RouteName;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncodingLabels {
    route: String,
    encoding: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: String,
    encoding: &'static str,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    route: String,
    encoding: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    route: String,
    encoding: &'static str,
    action: &'static str,
}

/// Upper bounds, in seconds, of the compression time histogram: 50 µs to 1 s.
const DURATION_BUCKETS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0];

/// What kind of compression work a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// One response compressed as it streamed to one client.
    Stream,
    /// A cached answer's variant, compressed once and reused.
    Variant,
}

impl Run {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Variant => "variant",
        }
    }
}

/// The compression metric families, registered once per proxy.
#[derive(Debug, Clone)]
pub struct CompressMetrics {
    responses: Family<EncodingLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    duration: Family<EncodingLabels, Histogram, fn() -> Histogram>,
    runs: Family<RunLabels, Counter>,
    origin_encoded: Family<OriginLabels, Counter>,
}

impl CompressMetrics {
    /// Registers the families in `metrics`' registry.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            responses: Family::default(),
            bytes: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            runs: Family::default(),
            origin_encoded: Family::default(),
        };
        metrics.register(
            "compressed_responses",
            "Responses sent compressed by the proxy, streamed or from a cached variant, by route and encoding",
            this.responses.clone(),
        );
        metrics.register(
            "compression_bytes",
            "Bytes into (identity) and out of (encoded) the compressors, by route, encoding and direction",
            this.bytes.clone(),
        );
        metrics.register(
            "compression_duration_seconds",
            "Time spent compressing one response or cached variant, by route and encoding",
            this.duration.clone(),
        );
        metrics.register(
            "compressions",
            "Compression runs: kind=stream per streamed response, kind=variant once per cached variant",
            this.runs.clone(),
        );
        metrics.register(
            "origin_encoded_responses",
            "Responses the origin sent compressed: passed through (accepted) or decoded (not accepted)",
            this.origin_encoded.clone(),
        );
        this
    }

    /// The handles of one route.
    pub fn route(&self, route: &RouteName) -> RouteCompressMetrics {
        let name = route.as_str();
        let handles = |encoding: Encoding| {
            let labels = EncodingLabels { route: name.to_owned(), encoding: encoding.as_str() };
            let bytes = |direction| {
                self.bytes
                    .get_or_create(&BytesLabels {
                        route: name.to_owned(),
                        encoding: encoding.as_str(),
                        direction,
                    })
                    .clone()
            };
            let run = |kind: Run| {
                self.runs
                    .get_or_create(&RunLabels {
                        route: name.to_owned(),
                        encoding: encoding.as_str(),
                        kind: kind.as_str(),
                    })
                    .clone()
            };
            let origin = |action| {
                self.origin_encoded
                    .get_or_create(&OriginLabels {
                        route: name.to_owned(),
                        encoding: encoding.as_str(),
                        action,
                    })
                    .clone()
            };
            EncodingMetrics {
                responses: self.responses.get_or_create(&labels).clone(),
                bytes_in: bytes("in"),
                bytes_out: bytes("out"),
                duration: self.duration.get_or_create(&labels).clone(),
                streams: run(Run::Stream),
                variants: run(Run::Variant),
                passed_through: origin("passthrough"),
                decoded: origin("decoded"),
            }
        };
        RouteCompressMetrics { encodings: Encoding::COMPRESSING.map(handles) }
    }
}

/// One route's handles, per encoding.
#[derive(Debug, Clone)]
pub struct RouteCompressMetrics {
    encodings: [EncodingMetrics; 3],
}

impl RouteCompressMetrics {
    /// The handles of `encoding`; identity has none.
    pub fn get(&self, encoding: Encoding) -> Option<&EncodingMetrics> {
        encoding.index().map(|i| &self.encodings[i])
    }
}

/// One route and encoding's handles.
#[derive(Debug, Clone)]
pub struct EncodingMetrics {
    /// Responses sent in this encoding by the proxy.
    pub responses: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    duration: Histogram,
    streams: Counter,
    variants: Counter,
    /// Origin answers in this encoding passed through untouched.
    pub passed_through: Counter,
    /// Origin answers in this encoding decoded for a client that does not accept it.
    pub decoded: Counter,
}

impl EncodingMetrics {
    /// Starts metering one compression run: counts it now, its bytes as they pass, and its
    /// time when the meter is dropped.
    pub fn start(&self, run: Run) -> Meter {
        match run {
            Run::Stream => self.streams.inc(),
            Run::Variant => self.variants.inc(),
        };
        Meter { metrics: self.clone(), busy: Duration::ZERO }
    }
}

/// Meters one compression run; records its time when dropped, whether the body ended or the
/// client went away.
#[derive(Debug)]
pub struct Meter {
    metrics: EncodingMetrics,
    busy: Duration,
}

impl Meter {
    /// Records one step: `input` identity bytes in, `output` encoded bytes out, `took` spent.
    pub fn record(&mut self, input: usize, output: usize, took: Duration) {
        self.metrics.bytes_in.inc_by(input as u64);
        self.metrics.bytes_out.inc_by(output as u64);
        self.busy += took;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.busy.as_secs_f64());
    }
}
