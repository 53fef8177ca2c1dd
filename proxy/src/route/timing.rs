//! A route's response timing (`timing`): the `Server-Timing` (W3C Server Timing) and
//! `X-Response-Time` headers on its answers, and the threshold above which a request is
//! logged as slow and counted in `accel_slow_requests_total`.
//!
//! ```toml
//! timing = { server_timing = true, response_time = true, slow = "500ms" }
//! ```
//!
//! The durations are taken when the response head is sent: the time from the request's
//! headers received to the answer's headers ready, the same span as
//! `accel_request_duration_seconds`. A body that streams for longer is not counted.
//!
//! [`SlowLog`] is the process-wide budget of slow-request log lines, so that a slow origin
//! cannot flood the log: lines above the budget are counted and the count is reported in the
//! next line written.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::time::Instant;

use crate::cache::CacheResult;
use crate::quantity::parse_duration;

/// `timing = { ... }` as written; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingFile {
    /// Add `Server-Timing: total;dur=…, upstream;dur=…, cache;desc=…`. Default false.
    #[serde(default)]
    pub server_timing: Option<bool>,
    /// Add `X-Response-Time: 12.345ms`. Default false.
    #[serde(default)]
    pub response_time: Option<bool>,
    /// Requests slower than this are logged and counted: a duration (`"500ms"`), `true` for
    /// the default (1 s) or `false` for never. Default `"1s"`.
    #[serde(default)]
    pub slow: Option<SlowFile>,
}

/// `slow = "500ms"`, or `slow = true | false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SlowFile {
    Enabled(bool),
    After(String),
}

/// A route's timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTiming {
    /// Add `Server-Timing` to answers.
    pub server_timing: bool,
    /// Add `X-Response-Time` to answers.
    pub response_time: bool,
    /// Requests that take at least this long are slow; `None`: never.
    pub slow: Option<Duration>,
}

impl RouteTiming {
    /// The slow-request threshold of routes that set none.
    pub const DEFAULT_SLOW: Duration = Duration::from_secs(1);

    /// True when `elapsed` makes a request slow on this route.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        self.slow.is_some_and(|threshold| elapsed >= threshold)
    }

    /// Adds the headers the route asks for to an answer that took `spent`. Existing values
    /// are kept: an origin's own `Server-Timing` metrics stay beside the proxy's.
    pub fn stamp(&self, headers: &mut HeaderMap, spent: &Spent) {
        if self.server_timing {
            let mut text = Text::default();
            text.push(b"total;dur=");
            text.millis(spent.total);
            if let Some(upstream) = spent.upstream {
                text.push(b", upstream;dur=");
                text.millis(upstream);
            }
            if spent.cache != CacheResult::None {
                text.push(b", cache;desc=");
                text.push(spent.cache.as_str().as_bytes());
            }
            if let Some(value) = text.value() {
                headers.append(SERVER_TIMING.clone(), value);
            }
        }
        if self.response_time {
            let mut text = Text::default();
            text.millis(spent.total);
            text.push(b"ms");
            if let Some(value) = text.value() {
                headers.insert(X_RESPONSE_TIME.clone(), value);
            }
        }
    }
}

impl Default for RouteTiming {
    /// No headers; slow above 1 s.
    fn default() -> Self {
        Self { server_timing: false, response_time: false, slow: Some(Self::DEFAULT_SLOW) }
    }
}

/// Where an answer's time went, as `Server-Timing` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    /// From the request's headers received to the answer's headers ready.
    pub total: Duration,
    /// The exchange with the upstream, when there was one (tries and retries included).
    pub upstream: Option<Duration>,
    /// The cache's part; [`CacheResult::None`] is left out of the header.
    pub cache: CacheResult,
}

static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
static X_RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

/// A header value written into a buffer on the stack: no formatting machinery per answer.
struct Text {
    bytes: [u8; 128],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self { bytes: [0; 128], len: 0 }
    }
}

impl Text {
    /// Appends `bytes`; what does not fit is cut (never the case for the values written here).
    fn push(&mut self, bytes: &[u8]) {
        let room = self.bytes.len() - self.len;
        let take = bytes.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
    }

    /// Appends `duration` in milliseconds with three decimals (`12.345`).
    fn millis(&mut self, duration: Duration) {
        let micros = duration.as_micros();
        self.integer(micros / 1000);
        let fraction = (micros % 1000) as u16;
        self.push(&[
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ]);
    }

    fn integer(&mut self, mut n: u128) {
        let mut digits = [0u8; 39];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.bytes[..self.len]).ok()
    }
}

/// Converts a route's `timing` table; problems go to `at` with the key they concern.
pub fn convert(file: Option<TimingFile>, at: &mut impl FnMut(&str, String)) -> RouteTiming {
    let TimingFile { server_timing, response_time, slow } = file.unwrap_or_default();
    let slow = match slow {
        None | Some(SlowFile::Enabled(true)) => Some(RouteTiming::DEFAULT_SLOW),
        Some(SlowFile::Enabled(false)) => None,
        Some(SlowFile::After(text)) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                at("timing.slow", "must be greater than zero (use `false` to log no request as slow)".into());
                None
            }
            Err(e) => {
                at("timing.slow", e);
                None
            }
        },
    };
    RouteTiming {
        server_timing: server_timing.unwrap_or(false),
        response_time: response_time.unwrap_or(false),
        slow,
    }
}

/// The process-wide budget of slow-request log lines: at most `per_second` lines in each
/// one-second window; the lines over budget are counted, and the next line written reports
/// how many were left out.
#[derive(Debug)]
pub struct SlowLog {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the current window began; `None` before the first line.
    start: Option<Instant>,
    /// Lines written in the current window.
    written: u32,
    /// Lines left out since the last line written.
    suppressed: u64,
}

impl SlowLog {
    /// The budget the proxy runs with: 10 lines a second.
    pub const LINES_PER_SECOND: u32 = 10;

    /// A budget of `per_second` lines in each second.
    pub fn new(per_second: u32) -> Self {
        Self { per_second, window: Mutex::new(Window { start: None, written: 0, suppressed: 0 }) }
    }

    /// Whether a slow request seen at `now` may be logged: `Some(n)`, with `n` the lines left
    /// out since the last one written, or `None` when the budget is spent (the line is counted
    /// as left out).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let expired =
            window.start.is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if expired {
            window.start = Some(now);
            window.written = 0;
        }
        if window.written >= self.per_second {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

impl Default for SlowLog {
    fn default() -> Self {
        Self::new(Self::LINES_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(file: Option<TimingFile>) -> (RouteTiming, Vec<String>) {
        let mut problems = Vec::new();
        let timing = convert(file, &mut |k: &str, m: String| problems.push(format!("{k}: {m}")));
        (timing, problems)
    }

    fn spent(total_us: u64, upstream_us: Option<u64>, cache: CacheResult) -> Spent {
        Spent {
            total: Duration::from_micros(total_us),
            upstream: upstream_us.map(Duration::from_micros),
            cache,
        }
    }

    #[test]
    fn a_route_without_timing_adds_no_header_and_is_slow_after_a_second() {
        let (timing, problems) = run(None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(timing, RouteTiming::default());
        assert!(!timing.is_slow(Duration::from_millis(999)));
        assert!(timing.is_slow(Duration::from_secs(1)));
        let mut headers = HeaderMap::new();
        timing.stamp(&mut headers, &spent(5, None, CacheResult::Hit));
        assert!(headers.is_empty());
    }

    #[test]
    fn timing_tables_convert() {
        let file = TimingFile {
            server_timing: Some(true),
            response_time: Some(true),
            slow: Some(SlowFile::After("250ms".into())),
        };
        let (timing, problems) = run(Some(file));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(timing.slow, Some(Duration::from_millis(250)));
        assert!(timing.server_timing && timing.response_time);
        let off = TimingFile { slow: Some(SlowFile::Enabled(false)), ..Default::default() };
        assert_eq!(run(Some(off)).0.slow, None);
        let on = TimingFile { slow: Some(SlowFile::Enabled(true)), ..Default::default() };
        assert_eq!(run(Some(on)).0.slow, Some(RouteTiming::DEFAULT_SLOW));
    }

    #[test]
    fn bad_thresholds_name_their_key() {
        let (_, problems) =
            run(Some(TimingFile { slow: Some(SlowFile::After("soon".into())), ..Default::default() }));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("timing.slow: invalid duration \"soon\""), "{problems:?}");
        let (_, problems) =
            run(Some(TimingFile { slow: Some(SlowFile::After("0s".into())), ..Default::default() }));
        assert!(problems[0].starts_with("timing.slow: must be greater than zero"), "{problems:?}");
    }

    #[test]
    fn headers_read_as_the_w3c_syntax_says() {
        let timing = RouteTiming { server_timing: true, response_time: true, slow: None };
        let mut headers = HeaderMap::new();
        headers.insert("server-timing", HeaderValue::from_static("db;dur=53"));
        timing.stamp(&mut headers, &spent(12_345, Some(10_002), CacheResult::Miss));
        let server: Vec<_> = headers.get_all("server-timing").iter().collect();
        assert_eq!(server, ["db;dur=53", "total;dur=12.345, upstream;dur=10.002, cache;desc=miss"]);
        assert_eq!(headers["x-response-time"], "12.345ms");

        let mut headers = HeaderMap::new();
        timing.stamp(&mut headers, &spent(7, None, CacheResult::Hit));
        assert_eq!(headers["server-timing"], "total;dur=0.007, cache;desc=hit");
        assert_eq!(headers["x-response-time"], "0.007ms");

        let mut headers = HeaderMap::new();
        timing.stamp(&mut headers, &spent(61_000_000, Some(61_000_000), CacheResult::None));
        assert_eq!(headers["server-timing"], "total;dur=61000.000, upstream;dur=61000.000");
    }

    #[test]
    fn the_slow_log_keeps_to_its_budget_and_counts_what_it_left_out() {
        let log = SlowLog::new(2);
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        assert_eq!(log.admit(start + Duration::from_millis(10)), Some(0));
        assert_eq!(log.admit(start + Duration::from_millis(20)), None);
        assert_eq!(log.admit(start + Duration::from_millis(999)), None);
        // A new second: the next line says how many were left out.
        assert_eq!(log.admit(start + Duration::from_secs(1)), Some(2));
        assert_eq!(log.admit(start + Duration::from_millis(1500)), Some(0));
        assert_eq!(log.admit(start + Duration::from_millis(1600)), None);
        assert_eq!(log.admit(start + Duration::from_secs(5)), Some(1));
    }
}
