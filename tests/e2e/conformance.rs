//! RFC 9111 conformance, as a table: one row per requirement of a shared cache that Accel
//! meets (and per behaviour it adds: keep windows, the shared tier's variants and refreshes),
//! each naming its section. A row is data: the route, the origin's scripted answers (the
//! n-th request to the origin gets the n-th answer, the last one repeats), and the steps (a
//! request, the time that passes before it, and what the client and the origin must see).
//! Every row runs against the real proxy in front of a scripted origin, on a manual cache
//! clock; rows marked `redis` run two sidecars sharing the local Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accel::cache::Clock;
use accel_e2e::{
    Collected, FakeOrigin, Gate, TestProxy, body, eventually, eventually_async, require_redis, within,
};
use http::{Method, Response};

type Pairs = &'static [(&'static str, &'static str)];

/// One scripted answer of the origin.
#[derive(Clone, Copy)]
struct Reply {
    status: u16,
    headers: Pairs,
    body: &'static str,
    /// Held until every request of a concurrent step waits (see [`Step::concurrent`]).
    gated: bool,
}

const fn reply(status: u16, headers: Pairs, body: &'static str) -> Reply {
    Reply { status, headers, body, gated: false }
}

/// One request and what must be seen after it.
#[derive(Clone)]
struct Step {
    /// Cache time that passes before the request, in seconds.
    after: u64,
    method: Method,
    headers: Pairs,
    /// Which sidecar it goes to (rows with two share Redis).
    via: usize,
    /// The origin is stopped before the request (connect errors).
    down: bool,
    /// Identical requests sent at once (the origin's answer is gated until all wait).
    concurrent: usize,
    status: u16,
    body: Option<&'static str>,
    /// `X-Cache-Status`.
    cache: Option<&'static str>,
    /// Response headers and their values (`None`: absent).
    expect_headers: Vec<(&'static str, Option<&'static str>)>,
    /// Requests the origin has seen after the step.
    hits: usize,
    /// Headers of the origin's last request (`None`: absent).
    sent: Vec<(&'static str, Option<&'static str>)>,
    /// A metric series of the sidecar and its value after the step.
    metric: Option<(&'static str, f64)>,
    /// Wait until the sidecar has written this many entries to Redis.
    shared: f64,
}

fn get(status: u16, cache: &'static str, hits: usize) -> Step {
    Step {
        after: 0,
        method: Method::GET,
        headers: &[],
        via: 0,
        down: false,
        concurrent: 1,
        status,
        body: None,
        cache: Some(cache),
        expect_headers: Vec::new(),
        hits,
        sent: Vec::new(),
        metric: None,
        shared: 0.0,
    }
}

fn post(status: u16, hits: usize) -> Step {
    Step { method: Method::POST, cache: None, ..get(status, "", hits) }
}

impl Step {
    fn after(mut self, secs: u64) -> Self {
        self.after = secs;
        self
    }
    fn with(mut self, headers: Pairs) -> Self {
        self.headers = headers;
        self
    }
    fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }
    fn header(mut self, name: &'static str, value: Option<&'static str>) -> Self {
        self.expect_headers.push((name, value));
        self
    }
    fn sent(mut self, name: &'static str, value: Option<&'static str>) -> Self {
        self.sent.push((name, value));
        self
    }
    fn down(mut self) -> Self {
        self.down = true;
        self
    }
    fn via(mut self, sidecar: usize) -> Self {
        self.via = sidecar;
        self
    }
    fn concurrent(mut self, n: usize) -> Self {
        self.concurrent = n;
        self.cache = None;
        self
    }
    fn metric(mut self, series: &'static str, value: f64) -> Self {
        self.metric = Some((series, value));
        self
    }
    fn shared(mut self, stored: f64) -> Self {
        self.shared = stored;
        self
    }
}

/// One requirement.
struct Row {
    section: &'static str,
    behaviour: &'static str,
    /// The route's fields (a `[[route]]` body without `name`/`upstream`).
    route: &'static str,
    /// Two sidecars sharing Redis.
    redis: bool,
    replies: Vec<Reply>,
    steps: Vec<Step>,
}

fn row(section: &'static str, behaviour: &'static str, route: &'static str) -> Row {
    Row { section, behaviour, route, redis: false, replies: Vec::new(), steps: Vec::new() }
}

impl Row {
    fn replies(mut self, replies: &[Reply]) -> Self {
        self.replies = replies.to_vec();
        self
    }
    fn steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }
    fn redis(mut self) -> Self {
        self.redis = true;
        self
    }
}

const FRESH60: Pairs = &[("cache-control", "max-age=60")];
const TAGGED10: Pairs = &[("cache-control", "max-age=10"), ("etag", "\"v1\"")];
const NOT_MODIFIED: Reply = reply(304, &[("cache-control", "max-age=10"), ("etag", "\"v1\"")], "");
const UNAVAILABLE: Reply = reply(503, &[], "down");
/// A stored 200 of ten bytes with a strong `ETag` and a `Last-Modified` ([`MODIFIED`]).
const DIGITS: Pairs = &[("cache-control", "max-age=60"), ("etag", "\"d1\""), ("last-modified", MODIFIED)];
const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const KEEP: &str = r#"cache = { keep = "1h" }"#;
const NO_KEEP: &str = r#"cache = { keep = "0s" }"#;

fn rows() -> Vec<Row> {
    vec![
        // Storing (§3) and freshness (§4.2).
        row("§3", "a 200 with max-age is stored and reused", "cache = {}")
            .replies(&[reply(200, FRESH60, "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "HIT", 1).after(5).body("a").header("age", Some("5"))]),
        row("§3, §5.2.2.5", "an answer with no-store is not stored", r#"cache = { ttl = "60s" }"#)
            .replies(&[reply(200, &[("cache-control", "no-store")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2)]),
        row("§3, §5.2.2.7", "a shared cache does not store a private answer", r#"cache = { ttl = "60s" }"#)
            .replies(&[reply(200, &[("cache-control", "private, max-age=60")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2)]),
        row("§5.2.2.4", "a no-cache answer is never reused without the origin", r#"cache = { ttl = "60s" }"#)
            .replies(&[reply(200, &[("cache-control", "no-cache")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2)]),
        row("§3", "any final status with explicit freshness is storable (503, max-age)", "cache = {}")
            .replies(&[reply(503, &[("cache-control", "max-age=5")], "busy")])
            .steps(vec![
                get(503, "MISS", 1),
                get(503, "HIT", 1).after(4).body("busy"),
                get(503, "MISS", 2).after(2),
            ]),
        row(
            "§3, §4.2.2",
            "without explicit freshness only heuristically cacheable statuses",
            r#"cache = { ttl = "60s" }"#,
        )
        .replies(&[reply(302, &[("location", "/b")], "")])
        .steps(vec![get(302, "MISS", 1), get(302, "MISS", 2)]),
        row("§3.3", "a 206 is never stored as a whole answer", "cache = {}")
            .replies(&[reply(
                206,
                &[("cache-control", "max-age=60"), ("content-range", "bytes 0-0/10")],
                "a",
            )])
            .steps(vec![get(206, "MISS", 1), get(206, "MISS", 2)]),
        row("§4.2.1", "s-maxage wins over max-age in a shared cache", "cache = {}")
            .replies(&[reply(200, &[("cache-control", "max-age=5, s-maxage=30")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "HIT", 1).after(20)]),
        row("§4.2.1, §5.3", "Expires minus Date is the lifetime", "cache = {}")
            .replies(&[reply(
                200,
                &[("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("expires", "Sun, 06 Nov 1994 08:50:07 GMT")],
                "a",
            )])
            .steps(vec![get(200, "MISS", 1), get(200, "HIT", 1).after(29), get(200, "MISS", 2).after(2)]),
        row("§5.3", "an invalid Expires means already expired", "cache = {}")
            .replies(&[reply(200, &[("expires", "0")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2)]),
        row(
            "§4.2.2",
            "a heuristic lifetime (the route's ttl) when the origin is silent",
            r#"cache = { ttl = "30s" }"#,
        )
        .replies(&[reply(200, &[], "a")])
        .steps(vec![get(200, "MISS", 1), get(200, "HIT", 1).after(29), get(200, "MISS", 2).after(2)]),
        row("§4.2.3, §5.1", "Age counts the upstream's Age and the time in cache", "cache = {}")
            .replies(&[reply(200, &[("cache-control", "max-age=60"), ("age", "10")], "a")])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "HIT", 1)
                    .after(5)
                    .header("age", Some("15"))
                    .header("cache-status", Some("accel; hit; ttl=45")),
            ]),
        row("§5.1", "an Age list uses its first member", "cache = {}")
            .replies(&[reply(200, &[("cache-control", "max-age=60"), ("age", "20, 5")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "HIT", 1).header("age", Some("20"))]),
        row("§4.1", "Vary: variants are stored apart", "cache = {}")
            .replies(&[
                reply(200, &[("cache-control", "max-age=60"), ("vary", "accept-language")], "hello"),
                reply(200, &[("cache-control", "max-age=60"), ("vary", "accept-language")], "bonjour"),
            ])
            .steps(vec![
                get(200, "MISS", 1).with(&[("accept-language", "en")]),
                get(200, "MISS", 2).with(&[("accept-language", "fr")]).body("bonjour"),
                get(200, "HIT", 2).with(&[("accept-language", "en")]).body("hello"),
                get(200, "HIT", 2).with(&[("accept-language", "fr")]).body("bonjour"),
            ]),
        row("§4.1", "Vary: * is never reused", r#"cache = { ttl = "60s" }"#)
            .replies(&[reply(200, &[("vary", "*")], "a")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2)]),
        row("§5.2.1.5", "a request with no-store neither uses nor fills the cache", "cache = {}")
            .replies(&[reply(200, FRESH60, "a")])
            .steps(vec![get(200, "BYPASS", 1).with(&[("cache-control", "no-store")]), get(200, "MISS", 2)]),
        row("§4.3.2", "a matching If-None-Match gets a 304 from the cache", "cache = {}")
            .replies(&[reply(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], "a")])
            .steps(vec![
                get(200, "MISS", 1),
                get(304, "HIT", 1).with(&[("if-none-match", "\"v1\"")]).header("etag", Some("\"v1\"")),
                get(200, "HIT", 1).with(&[("if-none-match", "\"v0\"")]).body("a"),
            ]),
        row("§4.4", "a successful unsafe request invalidates the URL", "cache = {}")
            .replies(&[reply(200, FRESH60, "a"), reply(200, &[], "done"), reply(200, FRESH60, "b")])
            .steps(vec![get(200, "MISS", 1), post(200, 2), get(200, "MISS", 3).body("b")]),
        row("§4.4", "a failed unsafe request invalidates nothing", "cache = {}")
            .replies(&[reply(200, FRESH60, "a"), reply(500, &[], "oops")])
            .steps(vec![get(200, "MISS", 1), post(500, 2), get(200, "HIT", 2).body("a")]),
        // Serving stale (§4.2.4, RFC 5861).
        row("RFC 5861 §3", "stale-while-revalidate answers at once and refreshes once", "cache = {}")
            .replies(&[
                reply(200, &[("cache-control", "max-age=10, stale-while-revalidate=30")], "v1"),
                reply(200, &[("cache-control", "max-age=10, stale-while-revalidate=30")], "v2"),
            ])
            .steps(vec![get(200, "MISS", 1), get(200, "UPDATING", 2).after(15).body("v1")]),
        row("RFC 5861 §4", "stale-if-error answers when the origin fails", "cache = {}")
            .replies(&[reply(200, &[("cache-control", "max-age=10, stale-if-error=60")], "v1"), UNAVAILABLE])
            .steps(vec![get(200, "MISS", 1), get(200, "STALE", 2).after(15).body("v1")]),
        row(
            "§4.2.4, §5.2.2.2",
            "must-revalidate: never stale, a failed revalidation is a 504",
            r#"cache = { stale_if_error = "1h" }"#,
        )
        .replies(&[
            reply(200, &[("cache-control", "max-age=10, must-revalidate"), ("etag", "\"v1\"")], "v1"),
            UNAVAILABLE,
        ])
        .steps(vec![
            get(200, "MISS", 1),
            get(504, "EXPIRED", 2)
                .after(15)
                .sent("if-none-match", Some("\"v1\""))
                .header("cache-status", Some("accel; fwd=stale; fwd-status=503; detail=must-revalidate")),
        ]),
        row(
            "§5.2.2.8",
            "proxy-revalidate: an unreachable origin is a 504, not the stale copy",
            r#"cache = { stale_if_error = "1h" }"#,
        )
        .replies(&[reply(
            200,
            &[("cache-control", "max-age=10, proxy-revalidate"), ("etag", "\"v1\"")],
            "v1",
        )])
        .steps(vec![get(200, "MISS", 1), get(504, "EXPIRED", 1).after(15).down()]),
        row("§5.2.2.10", "s-maxage: never served stale", r#"cache = { stale_while_revalidate = "1h" }"#)
            .replies(&[
                reply(200, &[("cache-control", "s-maxage=10"), ("etag", "\"v1\"")], "v1"),
                reply(200, &[("cache-control", "s-maxage=10"), ("etag", "\"v2\"")], "v2"),
            ])
            .steps(vec![get(200, "MISS", 1), get(200, "EXPIRED", 2).after(15).body("v2")]),
        // Keeping expired entries to revalidate them (§4.3).
        row(
            "§4.3.1, §4.3.3",
            "an expired entry with an ETag is kept and revalidated with If-None-Match",
            KEEP,
        )
        .replies(&[reply(200, TAGGED10, "v1"), NOT_MODIFIED])
        .steps(vec![
            get(200, "MISS", 1),
            get(200, "REVALIDATED", 2)
                .after(600)
                .body("v1")
                .sent("if-none-match", Some("\"v1\""))
                .header("cache-status", Some("accel; fwd=stale; fwd-status=304; ttl=10"))
                .metric(r#"accel_cache_revalidations_total{route="api",result="not_modified"}"#, 1.0),
            get(200, "HIT", 2).after(5).body("v1"),
        ]),
        row("§4.3.1", "an entry with only Last-Modified is revalidated with If-Modified-Since", KEEP)
            .replies(&[
                reply(
                    200,
                    &[("cache-control", "max-age=10"), ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
                    "v1",
                ),
                reply(304, &[("cache-control", "max-age=10")], ""),
            ])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "REVALIDATED", 2)
                    .after(600)
                    .body("v1")
                    .sent("if-modified-since", Some("Sun, 06 Nov 1994 08:49:37 GMT"))
                    .sent("if-none-match", None),
            ]),
        row("§4.3.4", "a 304 updates the stored headers and restarts freshness", KEEP)
            .replies(&[
                reply(200, &[("cache-control", "max-age=10"), ("etag", "\"v1\""), ("x-version", "1")], "v1"),
                reply(304, &[("cache-control", "max-age=100"), ("etag", "\"v1\""), ("x-version", "2")], ""),
            ])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "REVALIDATED", 2)
                    .after(60)
                    .header("x-version", Some("2"))
                    .header("content-length", Some("2")),
                get(200, "HIT", 2).after(90).header("x-version", Some("2")).body("v1"),
            ]),
        row("§4.3.3", "a 200 to the revalidation replaces the entry", KEEP)
            .replies(&[
                reply(200, TAGGED10, "v1"),
                reply(200, &[("cache-control", "max-age=10"), ("etag", "\"v2\"")], "v2"),
            ])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "EXPIRED", 2)
                    .after(60)
                    .body("v2")
                    .metric(r#"accel_cache_revalidations_total{route="api",result="modified"}"#, 1.0),
                get(200, "HIT", 2).body("v2").header("etag", Some("\"v2\"")),
            ]),
        row("§4.3.1", "the client's If-None-Match is not sent in place of the cache's", KEEP)
            .replies(&[reply(200, TAGGED10, "v1"), NOT_MODIFIED])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "REVALIDATED", 2)
                    .after(60)
                    .with(&[("if-none-match", "\"client\"")])
                    .sent("if-none-match", Some("\"v1\""))
                    .body("v1"),
            ]),
        row("§4.3.2", "the client's matching condition is answered 304 after the revalidation", KEEP)
            .replies(&[reply(200, TAGGED10, "v1"), NOT_MODIFIED])
            .steps(vec![
                get(200, "MISS", 1),
                get(304, "REVALIDATED", 2).after(60).with(&[("if-none-match", "\"v1\"")]),
            ]),
        row("§4.3.3", "a revalidation that fails without a stale window passes the failure on", KEEP)
            .replies(&[reply(200, TAGGED10, "v1"), UNAVAILABLE])
            .steps(vec![
                get(200, "MISS", 1),
                get(503, "EXPIRED", 2)
                    .after(60)
                    .body("down")
                    .metric(r#"accel_cache_revalidations_total{route="api",result="failed"}"#, 1.0),
            ]),
        row(
            "§4.3 (keep window)",
            "past its keep window an entry is gone: fetched whole",
            r#"cache = { keep = "1m" }"#,
        )
        .replies(&[reply(200, TAGGED10, "v1"), reply(200, TAGGED10, "v1")])
        .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2).after(71).sent("if-none-match", None)]),
        row("§4.3 (keep window)", "keep = 0s: expired entries are not kept", NO_KEEP)
            .replies(&[reply(200, TAGGED10, "v1"), reply(200, TAGGED10, "v1")])
            .steps(vec![get(200, "MISS", 1), get(200, "MISS", 2).after(11).sent("if-none-match", None)]),
        row("§4 (coalescing)", "concurrent requests for one expired key send one revalidation", KEEP)
            .replies(&[reply(200, TAGGED10, "v1"), Reply { gated: true, ..NOT_MODIFIED }])
            .steps(vec![get(200, "MISS", 1), get(200, "", 2).after(60).concurrent(20).body("v1")]),
        // The shared tier (Redis).
        row("§4.1 (shared tier)", "variants are shared through Redis apart", "cache = {}")
            .redis()
            .replies(&[
                reply(200, &[("cache-control", "max-age=60"), ("vary", "accept-language")], "hello"),
                reply(200, &[("cache-control", "max-age=60"), ("vary", "accept-language")], "bonjour"),
            ])
            .steps(vec![
                // Each variant is one write, and the primary key's marker another.
                get(200, "MISS", 1).with(&[("accept-language", "en")]).shared(2.0),
                get(200, "MISS", 2).with(&[("accept-language", "fr")]).shared(4.0),
                get(200, "HIT", 2).via(1).with(&[("accept-language", "en")]).body("hello"),
                get(200, "HIT", 2).via(1).with(&[("accept-language", "fr")]).body("bonjour"),
            ]),
        row("§4.3.4 (shared tier)", "a 304 refresh is written back to Redis", KEEP)
            .redis()
            .replies(&[reply(200, TAGGED10, "v1"), NOT_MODIFIED])
            .steps(vec![
                get(200, "MISS", 1).shared(1.0),
                get(200, "REVALIDATED", 2).after(20).shared(2.0),
                get(200, "HIT", 2).via(1).body("v1"),
            ]),
        // Ranges from a stored complete answer (RFC 9110 §14).
        row("RFC 9110 §14.2", "one range of a stored 200 is a 206 with its slice", "cache = {}")
            .replies(&[reply(200, DIGITS, "0123456789")])
            .steps(vec![
                get(200, "MISS", 1),
                get(206, "HIT", 1)
                    .with(&[("range", "bytes=2-4")])
                    .body("234")
                    .header("content-range", Some("bytes 2-4/10"))
                    .header("content-length", Some("3"))
                    .metric(r#"accel_cache_range_answers_total{result="partial"}"#, 1.0),
                get(200, "HIT", 1).body("0123456789").header("accept-ranges", Some("bytes")),
            ]),
        row("RFC 9110 §14.1.2", "an open-ended range and a suffix range", "cache = {}")
            .replies(&[reply(200, DIGITS, "0123456789")])
            .steps(vec![
                get(200, "MISS", 1),
                get(206, "HIT", 1)
                    .with(&[("range", "bytes=6-")])
                    .body("6789")
                    .header("content-range", Some("bytes 6-9/10")),
                get(206, "HIT", 1)
                    .with(&[("range", "bytes=-3")])
                    .body("789")
                    .header("content-range", Some("bytes 7-9/10")),
            ]),
        row("RFC 9110 §15.5.17", "an unsatisfiable range is a 416 with the length", "cache = {}")
            .replies(&[reply(200, DIGITS, "0123456789")])
            .steps(vec![
                get(200, "MISS", 1),
                get(416, "HIT", 1)
                    .with(&[("range", "bytes=10-")])
                    .body("")
                    .header("content-range", Some("bytes */10"))
                    .metric(r#"accel_cache_range_answers_total{result="unsatisfiable"}"#, 1.0),
            ]),
        row("RFC 9110 §14.2", "an invalid Range is ignored: the whole 200", "cache = {}")
            .replies(&[reply(200, DIGITS, "0123456789")])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "HIT", 1)
                    .with(&[("range", "bytes=4-2")])
                    .body("0123456789")
                    .header("content-range", None),
            ]),
        row("RFC 9110 §14.2", "several ranges get the whole 200 (no multipart)", "cache = {}")
            .replies(&[reply(200, DIGITS, "0123456789")])
            .steps(vec![
                get(200, "MISS", 1),
                get(200, "HIT", 1).with(&[("range", "bytes=0-1, 5-6")]).body("0123456789"),
            ]),
        row(
            "RFC 9110 §13.1.5",
            "If-Range: a strong ETag or the exact date, else the whole 200",
            "cache = {}",
        )
        .replies(&[reply(200, DIGITS, "0123456789")])
        .steps(vec![
            get(200, "MISS", 1),
            get(206, "HIT", 1).with(&[("range", "bytes=0-1"), ("if-range", "\"d1\"")]).body("01"),
            get(200, "HIT", 1).with(&[("range", "bytes=0-1"), ("if-range", "\"d0\"")]).body("0123456789"),
            get(206, "HIT", 1).with(&[("range", "bytes=0-1"), ("if-range", MODIFIED)]).body("01"),
            get(200, "HIT", 1)
                .with(&[("range", "bytes=0-1"), ("if-range", "Mon, 07 Nov 1994 08:49:37 GMT")])
                .body("0123456789"),
        ]),
        row(
            "§3.3, RFC 9110 §14.2",
            "a range on a miss goes upstream as is; its 206 is not stored",
            "cache = {}",
        )
        .replies(&[
            reply(206, &[("cache-control", "max-age=60"), ("content-range", "bytes 0-1/10")], "01"),
            reply(200, DIGITS, "0123456789"),
        ])
        .steps(vec![
            get(206, "MISS", 1).with(&[("range", "bytes=0-1")]).body("01").sent("range", Some("bytes=0-1")),
            get(200, "MISS", 2).body("0123456789"),
            get(206, "HIT", 2).with(&[("range", "bytes=8-")]).body("89"),
        ]),
    ]
}

/// The scripted origin of a row: answers in order, the last one repeating.
async fn origin(replies: Vec<Reply>, gate: &Gate) -> accel_e2e::OriginHandle {
    let count = Arc::new(AtomicUsize::new(0));
    let gate = gate.clone();
    FakeOrigin::new()
        .route("/r", "")
        .handler(move |_| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let reply = replies[n.min(replies.len() - 1)];
            let gate = gate.clone();
            async move {
                if reply.gated {
                    gate.wait().await;
                }
                let mut response = Response::builder().status(reply.status);
                for (name, value) in reply.headers {
                    response = response.header(*name, *value);
                }
                response.body(body::full(reply.body)).unwrap()
            }
        })
        .start()
        .await
}

async fn send(proxy: &TestProxy, step: &Step) -> Collected {
    let mut request = proxy.request(step.method.clone(), "/r");
    for (name, value) in step.headers {
        request = request.header(*name, *value);
    }
    proxy.send(request.body(body::empty()).unwrap()).await
}

fn check(row: &Row, i: usize, step: &Step, response: &Collected) {
    let at = format!("{} {} (step {})", row.section, row.behaviour, i + 1);
    assert_eq!(response.status.as_u16(), step.status, "{at}: status");
    if let Some(cache) = step.cache {
        assert_eq!(
            response.header("x-cache-status"),
            Some(cache),
            "{at}: {:?}",
            response.header("cache-status")
        );
    }
    if let Some(body) = step.body {
        assert_eq!(response.text(), body, "{at}: body");
    }
    for (name, value) in &step.expect_headers {
        assert_eq!(response.header(name), *value, "{at}: response header {name}");
    }
}

async fn run(row: Row, redis: Option<&str>) {
    let at = |i: usize| format!("{} {} (step {})", row.section, row.behaviour, i + 1);
    let gate = Gate::new();
    let origin = origin(row.replies.clone(), &gate).await;
    // Wall time at the start: the shared tier dates entries by the wall clock.
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let clock = Clock::manual(wall.as_millis() as u64);
    let mut sidecar = String::from("[cache]\nx_cache_status = true\n");
    if let Some(url) = redis {
        let prefix = format!("e2e:conformance:{}:{}:", std::process::id(), fastrand::u64(..));
        sidecar.push_str(&format!("[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\ntimeout = \"500ms\"\n"));
    }
    let mut proxies = Vec::new();
    for _ in 0..if redis.is_some() { 2 } else { 1 } {
        let clock = clock.clone();
        let proxy = TestProxy::builder()
            .upstream("api", &[origin.addr()])
            .rules(&format!("[[route]]\nname = \"api\"\nupstream = \"api\"\n{}\n", row.route))
            .sidecar_toml(&sidecar)
            .config(move |config| config.cache.clock = clock)
            .start()
            .await;
        proxies.push(Arc::new(proxy));
    }
    for (i, step) in row.steps.iter().enumerate() {
        clock.advance(Duration::from_secs(step.after));
        if step.down {
            origin.stop();
        }
        let proxy = &proxies[step.via];
        if step.concurrent > 1 {
            let before = origin.total_hits();
            let clients: Vec<_> = (0..step.concurrent)
                .map(|_| {
                    let (proxy, step) = (proxy.clone(), step.clone());
                    tokio::spawn(async move { send(&proxy, &step).await })
                })
                .collect();
            let followers = step.concurrent - 1;
            eventually(&format!("{}: one request at the origin, the others waiting", at(i)), || {
                assert!(origin.total_hits() <= before + 1, "{}: a second request reached the origin", at(i));
                origin.total_hits() == before + 1 && proxy.proxy().cache.waiting_followers() == followers
            })
            .await;
            gate.open();
            for client in clients {
                check(&row, i, step, &within("an answer", client).await.unwrap());
            }
        } else {
            check(&row, i, step, &send(proxy, step).await);
        }
        eventually(&format!("{}: origin requests", at(i)), || origin.total_hits() == step.hits).await;
        if !step.sent.is_empty() {
            let seen = origin.last_request().expect("the origin saw a request");
            for (name, value) in &step.sent {
                assert_eq!(seen.header(name), *value, "{}: sent {name}", at(i));
            }
        }
        if let Some((series, value)) = step.metric {
            assert_eq!(proxy.metric(series).await, value, "{}: {series}", at(i));
        }
        if step.shared > 0.0 {
            eventually_async(&format!("{}: the entry reached Redis", at(i)), || async {
                proxy.metric("accel_redis_l2_total{result=\"stored\"}").await >= step.shared
            })
            .await;
        }
    }
}

#[tokio::test]
async fn the_cache_meets_rfc_9111_row_by_row() {
    let redis = require_redis();
    let mut ran = 0;
    for row in rows() {
        if row.redis && redis.is_none() {
            continue;
        }
        let url = if row.redis { redis.as_deref() } else { None };
        run(row, url).await;
        ran += 1;
    }
    assert!(ran >= 30, "{ran} rows ran");
}
