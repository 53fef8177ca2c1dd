//! What may be stored and for how long (RFC 9111 for a shared cache).
//!
//! - Stored: answers to GET without `no-store`, `private` or `no-cache`, without `Set-Cookie`
//!   (unless the rule allows it), without `Vary: *`, whose status is heuristically cacheable
//!   (RFC 9110 §15.1: 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501), or any final
//!   status when the origin gives an explicit lifetime (`max-age`, `s-maxage`, `Expires`; a
//!   `503` with `max-age=5` is kept 5 s, RFC 9111 §3), on that lifetime. `206` and `304` are
//!   never stored as whole answers.
//! - `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving the answer stale
//!   (§4.2.4, §5.2.2.2, §5.2.2.10): no stale window applies to it, the origin's or the route's.
//! - An answer to a request carrying credentials (`Authorization`, or a credential cookie) is
//!   stored only when the response says a shared cache may (`public`, `s-maxage`,
//!   `must-revalidate`, §3.5) or the route's key includes the credential. Where it is stored
//!   is the key's business: per user unless the route has `share_authenticated`
//!   ([`super::credential`]).
//! - Targeted fields (RFC 9213, [`super::targeted`]): a valid `Accel-Cache-Control` or
//!   `CDN-Cache-Control` replaces `Cache-Control` and `Expires` in every rule below.
//! - Freshness: by default the origin's `s-maxage`, then `max-age`, then `Expires` win, and
//!   the rule's `ttl` applies when the origin is silent (as nginx's `proxy_cache_valid`); with
//!   `origin_cache_control = false` the rule's `ttl` wins. The stale windows are the rule's,
//!   or the origin's `stale-while-revalidate` / `stale-if-error` (RFC 5861) when it sends them.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{HeaderValue, StatusCode};

use super::rule::{CacheRule, ClientNoCache};
use super::targeted::TargetedFields;

/// The directives of `Cache-Control` a shared cache acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// The directives of every `Cache-Control` header in `headers`, names in any case, with
    /// any spacing. Unknown directives are ignored; a malformed number (anything but digits,
    /// quoted or not) makes its directive absent, and one past 2^31 seconds counts as 2^31
    /// (RFC 9111 §1.2.2), so that no lifetime computed from them overflows.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(delta_seconds);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `no-cache="field"` only restricts the named fields; treat it as no-cache.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => cc.max_age = seconds(),
                    "s-maxage" => cc.s_maxage = seconds(),
                    "stale-while-revalidate" => cc.stale_while_revalidate = seconds(),
                    "stale-if-error" => cc.stale_if_error = seconds(),
                    _ => {}
                }
            }
        }
        cc
    }

    /// True when the response explicitly states how long it stays fresh.
    fn has_freshness(&self) -> bool {
        self.max_age.is_some() || self.s_maxage.is_some()
    }

    /// True when a shared cache must not use the answer stale: `must-revalidate`,
    /// `proxy-revalidate` or `s-maxage` (§4.2.4, §5.2.2.2, §5.2.2.10).
    pub fn never_stale(&self) -> bool {
        self.must_revalidate || self.s_maxage.is_some()
    }
}

/// How a stored answer ages: fresh for `ttl`, then usable while revalidating for `swr` and,
/// when the origin fails, for `sie` (both counted from the end of `ttl`), then kept for
/// `keep` more only to be revalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// After the stale windows, how long the entry stays to be revalidated with its
    /// validators (never served without the origin's `304`); zero for an answer without
    /// `ETag` or `Last-Modified`. Varnish's `beresp.keep`.
    pub keep: Duration,
    /// The answer may be served to requests that carry `Authorization`.
    pub shared_with_credentials: bool,
}

impl Freshness {
    /// How long the entry may answer at all: fresh plus the longer stale window.
    pub fn lifetime(&self) -> Duration {
        self.ttl + self.stale_while_revalidate.max(self.stale_if_error)
    }

    /// How long the entry is worth keeping: its [`Freshness::lifetime`], then `keep`.
    pub fn retention(&self) -> Duration {
        self.lifetime() + self.keep
    }

    /// True when an entry stale `by` is still kept (within a stale window or `keep`);
    /// past that it is as good as gone.
    pub fn retains(&self, by: Duration) -> bool {
        by < self.stale_while_revalidate.max(self.stale_if_error) + self.keep
    }

    /// True when an entry stale `by` is past its stale windows, kept only to be revalidated.
    pub fn in_keep(&self, by: Duration) -> bool {
        by >= self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// Why an answer was not stored: the `reason` label of `accel_cache_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The status is not one a cache keeps.
    Status,
    NoStore,
    Private,
    NoCache,
    SetCookie,
    /// `Vary: *`.
    VaryAll,
    /// The request carried credentials and the answer does not say it may be shared.
    Credentials,
    /// Neither the origin nor the rule gives a freshness lifetime, or it is zero.
    NoFreshness,
    /// The body is larger than the rule's `max_object_size`.
    TooLarge,
    /// The body ended early or failed.
    Truncated,
    /// The client said `Cache-Control: no-store`.
    Request,
}

impl RejectReason {
    /// Every value, in label order.
    pub const ALL: [Self; 11] = [
        Self::Status,
        Self::NoStore,
        Self::Private,
        Self::NoCache,
        Self::SetCookie,
        Self::VaryAll,
        Self::Credentials,
        Self::NoFreshness,
        Self::TooLarge,
        Self::Truncated,
        Self::Request,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::NoStore => "no_store",
            Self::Private => "private",
            Self::NoCache => "no_cache",
            Self::SetCookie => "set_cookie",
            Self::VaryAll => "vary_star",
            Self::Credentials => "credentials",
            Self::NoFreshness => "no_freshness",
            Self::TooLarge => "too_large",
            Self::Truncated => "truncated",
            Self::Request => "request",
        }
    }
}

/// Statuses stored on the rule's TTL when the origin says nothing: the heuristically
/// cacheable ones (RFC 9110 §15.1), 206 excepted (ranges are not cached).
const HEURISTIC: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// Statuses never stored as whole answers, whatever the origin says: a part of one (`206`)
/// and an answer about one (`304`).
const NEVER: [u16; 2] = [206, 304];

/// The largest delta-seconds (`Age`, `max-age`, …) taken as is; a larger one counts as this
/// (RFC 9111 §1.2.2).
const AGE_CAP: u64 = 1 << 31;

/// A delta-seconds value (`1*DIGIT`), capped at [`AGE_CAP`]; `None` unless all digits.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().map_or(AGE_CAP, |secs| secs.min(AGE_CAP)))
}

/// The `Age` an answer arrives with (RFC 9111 §5.1): the first member of the first field
/// (`Age: 5, 7` is 5); an invalid one is ignored (zero), a huge one capped at 2^31 seconds.
pub fn initial_age(headers: &HeaderMap) -> Duration {
    let Some(first) = headers.get(header::AGE).and_then(|v| v.to_str().ok()) else {
        return Duration::ZERO;
    };
    let member = first.split(',').next().unwrap_or("").trim();
    Duration::from_secs(delta_seconds(member).unwrap_or(0))
}

/// Decides whether the answer `status` + `headers` to a request (with credentials or not)
/// may be stored under `rule`, and for how long. `now` dates `Expires`. A valid targeted field
/// (`targeted`, RFC 9213) stands in for `Cache-Control` and `Expires`.
pub fn storable(
    rule: &CacheRule,
    targeted: &TargetedFields,
    credentials: bool,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Freshness, RejectReason> {
    let (mut cc, mut expires) = match targeted.select(headers) {
        Some(cc) => (cc, None),
        None => (CacheControl::parse(headers), headers.get(header::EXPIRES)),
    };
    // What the route ignores of the origin (`cache.ignore`).
    let ignore = &rule.ignore;
    cc.no_cache &= !ignore.no_cache;
    cc.private &= !ignore.private;
    if ignore.expires {
        expires = None;
    }
    let code = status.as_u16();
    let explicit = cc.has_freshness() || expires.is_some();
    let heuristic = HEURISTIC.contains(&code);
    if NEVER.contains(&code) || !(heuristic || explicit) {
        return Err(RejectReason::Status);
    }
    if cc.no_store {
        return Err(RejectReason::NoStore);
    }
    if cc.private {
        return Err(RejectReason::Private);
    }
    if cc.no_cache {
        return Err(RejectReason::NoCache);
    }
    if headers.contains_key(header::SET_COOKIE) && !rule.allow_set_cookie && !ignore.set_cookie {
        return Err(RejectReason::SetCookie);
    }
    if vary_names(headers).any(|name| name == "*") {
        return Err(RejectReason::VaryAll);
    }
    let shared_with_credentials = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if credentials && !shared_with_credentials && !rule.key.includes_credentials() {
        return Err(RejectReason::Credentials);
    }
    // A status kept only for its explicit lifetime keeps that lifetime, whatever the rule.
    let origin_ttl =
        if rule.origin_cache_control || !heuristic { origin_ttl(&cc, expires, headers, now) } else { None };
    let ttl = if heuristic { origin_ttl.or(rule.ttl) } else { origin_ttl };
    let ttl = ttl.ok_or(RejectReason::NoFreshness)?;
    // Never served stale: the answer says a shared cache must revalidate it once stale.
    let revalidate = cc.never_stale();
    let window = |origin: Option<u64>, rule: Duration| match origin {
        _ if revalidate => Duration::ZERO,
        // The origin's stale windows count when its freshness does.
        Some(secs) if origin_ttl.is_some() => Duration::from_secs(secs),
        _ => rule,
    };
    let freshness = Freshness {
        ttl,
        stale_while_revalidate: window(cc.stale_while_revalidate, rule.stale_while_revalidate),
        stale_if_error: window(cc.stale_if_error, rule.stale_if_error),
        // The cache's business, not the answer's: see `Cache::keep_for`.
        keep: Duration::ZERO,
        shared_with_credentials,
    };
    if freshness.lifetime().is_zero() {
        return Err(RejectReason::NoFreshness);
    }
    Ok(freshness)
}

/// The lifetime the origin gives: `s-maxage`, `max-age`, or `expires` − `Date` (or now).
fn origin_ttl(
    cc: &CacheControl,
    expires: Option<&HeaderValue>,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(secs));
    }
    let expires = http_date(expires?);
    let Some(expires) = expires else {
        // An invalid Expires (such as "0") means already expired (RFC 9111 §5.3).
        return Some(Duration::ZERO);
    };
    let date = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// Parses an HTTP date.
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// The header names listed in `Vary` (lower case, as written).
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// What the client's own `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientDirective {
    /// Use the cache normally.
    Normal,
    /// `no-cache` or `max-age=0` under `client_no_cache = "revalidate"`: go to the origin,
    /// store what comes back.
    Revalidate,
    /// `no-store`: neither answer from nor store into the cache.
    NoStore,
}

/// Reads the request's `Cache-Control` (and `Pragma: no-cache`) under the rule's policy.
pub fn client_directive(headers: &HeaderMap, policy: ClientNoCache) -> ClientDirective {
    if !headers.contains_key(header::CACHE_CONTROL) && !headers.contains_key(header::PRAGMA) {
        return ClientDirective::Normal;
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return ClientDirective::NoStore;
    }
    let pragma = headers
        .get(header::PRAGMA)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
    let wants_fresh = cc.no_cache || cc.max_age == Some(0) || pragma;
    match policy {
        ClientNoCache::Revalidate if wants_fresh => ClientDirective::Revalidate,
        _ => ClientDirective::Normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::KeySpec;

    fn rule(ttl: Option<u64>) -> CacheRule {
        CacheRule { ttl: ttl.map(Duration::from_secs), ..CacheRule::default() }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn check(rule: &CacheRule, status: u16, h: &[(&str, &str)]) -> Result<Freshness, RejectReason> {
        storable(
            rule,
            &TargetedFields::default(),
            false,
            StatusCode::from_u16(status).unwrap(),
            &headers(h),
            SystemTime::now(),
        )
    }

    #[test]
    fn the_origins_lifetime_wins_and_the_rule_fills_in_when_it_is_silent() {
        let r = rule(Some(300));
        assert_eq!(check(&r, 200, &[("cache-control", "public, max-age=30")]).unwrap().ttl.as_secs(), 30);
        assert_eq!(
            check(&r, 200, &[("cache-control", "max-age=30, s-maxage=90")]).unwrap().ttl.as_secs(),
            90
        );
        assert_eq!(check(&r, 200, &[]).unwrap().ttl.as_secs(), 300);
        assert_eq!(check(&rule(None), 200, &[]), Err(RejectReason::NoFreshness));
        let rule_wins = CacheRule { origin_cache_control: false, ..rule(Some(300)) };
        assert_eq!(check(&rule_wins, 200, &[("cache-control", "max-age=30")]).unwrap().ttl.as_secs(), 300);
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_and_expires_for_this_cache() {
        let r = rule(Some(300));
        let ttl = |h: &[(&str, &str)]| check(&r, 200, h).map(|f| f.ttl.as_secs());
        // RFC 9213 §2.2: the field's directives, and only them.
        assert_eq!(ttl(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")]), Ok(60));
        assert_eq!(ttl(&[("cache-control", "private"), ("accel-cache-control", "max-age=5")]), Ok(5));
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")]),
            Err(RejectReason::NoStore)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("cdn-cache-control", "private")]),
            Err(RejectReason::Private)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("cdn-cache-control", "no-cache")]),
            Err(RejectReason::NoCache)
        );
        let expired =
            [("expires", "Thu, 01 Jan 1970 00:00:00 GMT"), ("cdn-cache-control", "stale-if-error=9")];
        assert_eq!(ttl(&expired), Ok(300), "Expires is ignored too: the rule's ttl fills in");
        // Invalid: ignored, Cache-Control decides.
        assert_eq!(ttl(&[("cache-control", "max-age=30"), ("cdn-cache-control", "max-age=60,")]), Ok(30));
        assert_eq!(ttl(&[("cache-control", "max-age=30"), ("cdn-cache-control", "")]), Ok(30));
        // The stale directives, and what forbids them.
        let f = check(
            &r,
            200,
            &[("cache-control", "max-age=1"), ("cdn-cache-control", "max-age=10, stale-if-error=60")],
        )
        .unwrap();
        assert_eq!((f.ttl.as_secs(), f.stale_if_error.as_secs()), (10, 60));
        let f = check(
            &r,
            200,
            &[("cache-control", "stale-if-error=60"), ("cdn-cache-control", "max-age=10, must-revalidate")],
        )
        .unwrap();
        assert_eq!(f.stale_if_error, Duration::ZERO);
        assert!(f.shared_with_credentials, "must-revalidate lets a shared cache keep it");
        // A status kept only on an explicit lifetime: the targeted one counts.
        assert_eq!(check(&r, 503, &[("cdn-cache-control", "max-age=5")]).map(|f| f.ttl.as_secs()), Ok(5));
    }

    #[test]
    fn a_route_may_ignore_the_origins_no_cache_private_expires_and_set_cookie() {
        use crate::cache::rule::OriginIgnores;
        let uncacheable = [
            ("cache-control", "private, no-cache"),
            ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("set-cookie", "sid=1"),
        ];
        assert_eq!(check(&rule(Some(60)), 200, &uncacheable), Err(RejectReason::Private));
        let all = OriginIgnores {
            no_cache: true,
            private: true,
            expires: true,
            set_cookie: true,
            vary: Vec::new(),
        };
        let ignoring = CacheRule { ignore: all.clone(), ..rule(Some(60)) };
        assert_eq!(check(&ignoring, 200, &uncacheable).map(|f| f.ttl.as_secs()), Ok(60));
        let only_no_cache = CacheRule {
            ignore: OriginIgnores { no_cache: true, ..OriginIgnores::default() },
            ..rule(Some(60))
        };
        assert_eq!(
            check(&only_no_cache, 200, &uncacheable),
            Err(RejectReason::Private),
            "each one is chosen"
        );
        assert_eq!(
            check(&ignoring, 200, &[("cache-control", "no-store")]),
            Err(RejectReason::NoStore),
            "no-store is never ignored"
        );
    }

    #[test]
    fn expires_counts_from_date() {
        let r = rule(None);
        let f = check(
            &r,
            200,
            &[("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")],
        )
        .unwrap();
        assert_eq!(f.ttl.as_secs(), 60);
        assert_eq!(check(&r, 200, &[("expires", "0")]), Err(RejectReason::NoFreshness));
    }

    #[test]
    fn what_must_not_be_stored_is_not() {
        let r = rule(Some(60));
        assert_eq!(check(&r, 200, &[("cache-control", "no-store")]), Err(RejectReason::NoStore));
        assert_eq!(check(&r, 200, &[("cache-control", "private, max-age=60")]), Err(RejectReason::Private));
        assert_eq!(check(&r, 200, &[("cache-control", "no-cache")]), Err(RejectReason::NoCache));
        assert_eq!(check(&r, 200, &[("set-cookie", "a=1")]), Err(RejectReason::SetCookie));
        assert_eq!(check(&r, 200, &[("vary", "Accept, *")]), Err(RejectReason::VaryAll));
        assert_eq!(check(&r, 500, &[]), Err(RejectReason::Status));
        assert_eq!(check(&r, 302, &[]), Err(RejectReason::Status));
        assert!(check(&r, 302, &[("cache-control", "max-age=5")]).is_ok());
        assert!(check(&r, 404, &[]).is_ok());
        assert_eq!(check(&r, 206, &[("cache-control", "max-age=60")]), Err(RejectReason::Status));
        assert_eq!(check(&r, 304, &[("cache-control", "max-age=60")]), Err(RejectReason::Status));
        let cookies_ok = CacheRule { allow_set_cookie: true, ..rule(Some(60)) };
        assert!(check(&cookies_ok, 200, &[("set-cookie", "a=1")]).is_ok());
    }

    #[test]
    fn any_final_status_with_an_explicit_lifetime_is_kept_for_that_lifetime() {
        let r = rule(Some(300));
        for status in [400, 403, 500, 503] {
            let kept = check(&r, status, &[("cache-control", "max-age=5")]);
            assert_eq!(kept.map(|f| f.ttl.as_secs()), Ok(5), "{status}");
            assert_eq!(check(&r, status, &[]), Err(RejectReason::Status), "{status} without a lifetime");
        }
        let expires =
            [("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("expires", "Sun, 06 Nov 1994 08:49:47 GMT")];
        assert_eq!(check(&r, 503, &expires).map(|f| f.ttl.as_secs()), Ok(10));
        // The rule's TTL never stretches a lifetime the status is only kept for.
        let rule_wins = CacheRule { origin_cache_control: false, ..rule(Some(300)) };
        assert_eq!(check(&rule_wins, 503, &[("cache-control", "max-age=5")]).map(|f| f.ttl.as_secs()), Ok(5));
        assert_eq!(
            check(&rule_wins, 200, &[("cache-control", "max-age=5")]).map(|f| f.ttl.as_secs()),
            Ok(300)
        );
    }

    #[test]
    fn answers_that_must_be_revalidated_get_no_stale_window() {
        let r = CacheRule {
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(60),
            ..rule(Some(300))
        };
        let windows = |cc: &str| {
            let f = check(&r, 200, &[("cache-control", cc)]).unwrap();
            (f.stale_while_revalidate.as_secs(), f.stale_if_error.as_secs())
        };
        assert_eq!(windows("max-age=10"), (30, 60), "the route's windows");
        assert_eq!(windows("max-age=10, stale-while-revalidate=5"), (5, 60), "the origin's");
        for cc in [
            "max-age=10, must-revalidate",
            "max-age=10, proxy-revalidate, stale-if-error=600",
            "s-maxage=10, stale-while-revalidate=5",
        ] {
            assert_eq!(windows(cc), (0, 0), "{cc}");
        }
    }

    #[test]
    fn age_is_the_first_member_and_an_invalid_one_is_ignored() {
        let age = |v: &str| initial_age(&headers(&[("age", v)])).as_secs();
        assert_eq!(age("5"), 5);
        assert_eq!(age("5, 7"), 5);
        assert_eq!(age(" 12 "), 12);
        assert_eq!(age("-3"), 0);
        assert_eq!(age("1.5"), 0);
        assert_eq!(age(""), 0);
        assert_eq!(age("99999999999999999999999"), 1 << 31);
        assert_eq!(initial_age(&HeaderMap::new()).as_secs(), 0);
    }

    #[test]
    fn credentials_need_a_shareable_answer_or_a_keyed_credential() {
        let r = rule(Some(60));
        let ask = |rule: &CacheRule, h: &[(&str, &str)]| {
            storable(rule, &TargetedFields::default(), true, StatusCode::OK, &headers(h), SystemTime::now())
        };
        assert_eq!(ask(&r, &[("cache-control", "max-age=60")]), Err(RejectReason::Credentials));
        assert!(ask(&r, &[("cache-control", "public, max-age=60")]).unwrap().shared_with_credentials);
        assert!(ask(&r, &[("cache-control", "s-maxage=60")]).is_ok());
        let keyed = CacheRule {
            key: KeySpec { headers: vec![header::AUTHORIZATION], ..KeySpec::default() },
            ..rule(Some(60))
        };
        assert!(ask(&keyed, &[("cache-control", "max-age=60")]).is_ok());
        assert!(ask(&r, &[("cache-control", "must-revalidate, max-age=60")]).is_ok());
        assert_eq!(ask(&r, &[("cache-control", "public, private, max-age=60")]), Err(RejectReason::Private));
        let sharing = CacheRule { share_authenticated: true, ..rule(Some(60)) };
        assert_eq!(
            ask(&sharing, &[("cache-control", "max-age=60")]),
            Err(RejectReason::Credentials),
            "sharing routes store only what §3.5 allows"
        );
    }

    #[test]
    fn stale_windows_come_from_the_rule_or_the_origin() {
        let r = CacheRule {
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
            ..rule(Some(60))
        };
        let f = check(&r, 200, &[]).unwrap();
        assert_eq!((f.stale_while_revalidate.as_secs(), f.stale_if_error.as_secs()), (10, 100));
        assert_eq!(f.lifetime().as_secs(), 160);
        let f = check(&r, 200, &[("cache-control", "max-age=5, stale-while-revalidate=7")]).unwrap();
        assert_eq!((f.stale_while_revalidate.as_secs(), f.stale_if_error.as_secs()), (7, 100));
    }

    #[test]
    fn client_no_cache_is_ignored_or_revalidates_per_rule() {
        let h = headers(&[("cache-control", "no-cache")]);
        assert_eq!(client_directive(&h, ClientNoCache::Ignore), ClientDirective::Normal);
        assert_eq!(client_directive(&h, ClientNoCache::Revalidate), ClientDirective::Revalidate);
        let h = headers(&[("cache-control", "max-age=0")]);
        assert_eq!(client_directive(&h, ClientNoCache::Revalidate), ClientDirective::Revalidate);
        let h = headers(&[("cache-control", "no-store")]);
        assert_eq!(client_directive(&h, ClientNoCache::Ignore), ClientDirective::NoStore);
        assert_eq!(client_directive(&HeaderMap::new(), ClientNoCache::Revalidate), ClientDirective::Normal);
    }

    /// Generated `Cache-Control` fields: whatever the bytes, parsing and deciding never panic;
    /// the known directives are read under any case and spacing, quoted or not, over one
    /// field or several.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        const FLAGS: [&str; 6] =
            ["no-store", "no-cache", "private", "public", "must-revalidate", "proxy-revalidate"];
        const SECONDS: [&str; 4] = ["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"];

        /// One directive: its text as an origin might write it, and what it sets.
        #[derive(Debug, Clone)]
        struct Written {
            text: String,
            set: Set,
        }

        #[derive(Debug, Clone)]
        enum Set {
            Flag(&'static str),
            Seconds(&'static str, Option<u64>),
            Nothing,
        }

        fn any_case(name: &'static str) -> impl Strategy<Value = String> {
            prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
                name.chars().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect()
            })
        }

        fn space() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["", "", " ", "  ", "\t", " \t "])
        }

        /// Seconds as digits: small, near 2^31, past u64; or not a number at all.
        fn seconds() -> impl Strategy<Value = (String, Option<u64>)> {
            let capped = |digits: &str| digits.parse::<u64>().map_or(AGE_CAP, |n| n.min(AGE_CAP));
            prop_oneof![
                (0u64..100_000).prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "[0-9]{20,30}",
            ]
            .prop_map(move |digits| {
                let value = capped(&digits);
                (digits, Some(value))
            })
            .boxed()
            .prop_union(
                prop::sample::select(vec!["", "-1", "+5", "1.5", "ten", "0x10"])
                    .prop_map(|t| (t.to_owned(), None))
                    .boxed(),
            )
        }

        fn directive() -> impl Strategy<Value = Written> {
            let flag = (prop::sample::select(FLAGS.to_vec()), space(), space()).prop_flat_map(
                |(name, before, after)| {
                    any_case(name).prop_map(move |cased| Written {
                        text: format!("{before}{cased}{after}"),
                        set: Set::Flag(name),
                    })
                },
            );
            let seconds =
                (prop::sample::select(SECONDS.to_vec()), seconds(), any::<bool>(), space(), space())
                    .prop_flat_map(|(name, (digits, value), quoted, before, after)| {
                        any_case(name).prop_map(move |cased| {
                            let arg = if quoted { format!("\"{digits}\"") } else { digits.clone() };
                            Written {
                                text: format!("{before}{cased}={arg}{after}"),
                                set: Set::Seconds(name, value),
                            }
                        })
                    });
            let unknown = ("[a-z][a-z-]{0,14}", prop::option::of("[a-z0-9]{0,6}"))
                .prop_filter("not a known directive", |(name, _)| {
                    !FLAGS.contains(&name.as_str()) && !SECONDS.contains(&name.as_str())
                })
                .prop_map(|(name, arg)| Written {
                    text: arg.map_or_else(|| name.clone(), |arg| format!("{name}={arg}")),
                    set: Set::Nothing,
                });
            prop_oneof![flag, seconds, unknown]
        }

        /// What `directives` set, in order (a later number replaces an earlier one).
        fn expected(directives: &[Written]) -> CacheControl {
            let mut cc = CacheControl::default();
            for written in directives {
                match written.set {
                    Set::Flag("no-store") => cc.no_store = true,
                    Set::Flag("no-cache") => cc.no_cache = true,
                    Set::Flag("private") => cc.private = true,
                    Set::Flag("public") => cc.public = true,
                    Set::Flag(_) => cc.must_revalidate = true,
                    Set::Seconds("max-age", v) => cc.max_age = v,
                    Set::Seconds("s-maxage", v) => cc.s_maxage = v,
                    Set::Seconds("stale-while-revalidate", v) => cc.stale_while_revalidate = v,
                    Set::Seconds(_, v) => cc.stale_if_error = v,
                    Set::Nothing => {}
                }
            }
            cc
        }

        proptest! {
            #[test]
            fn known_directives_are_read_in_any_case_and_spacing(
                directives in prop::collection::vec(directive(), 0..12),
                fields in 1usize..4,
            ) {
                // The directives spread over `fields` Cache-Control fields, in order.
                let mut headers = HeaderMap::new();
                let per_field = directives.len().div_ceil(fields).max(1);
                for chunk in directives.chunks(per_field) {
                    let text: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
                    headers.append(header::CACHE_CONTROL, HeaderValue::from_str(&text.join(",")).unwrap());
                }
                prop_assert_eq!(CacheControl::parse(&headers), expected(&directives));
            }

            #[test]
            fn no_field_makes_parsing_or_deciding_panic(
                value in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..120),
                    prop::collection::vec(directive(), 0..8).prop_map(|d| {
                        d.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join(",").into_bytes()
                    }),
                ],
                status in 100u16..600,
                credentials in any::<bool>(),
                ttl in prop::option::of(0u64..(10 * 365 * 86_400)),
                windows in (0u64..(10 * 365 * 86_400), 0u64..(10 * 365 * 86_400)),
                expires in prop::option::of("[ -~]{0,40}"),
            ) {
                let Ok(value) = HeaderValue::from_bytes(&value) else { return Ok(()) };
                let mut headers = HeaderMap::new();
                headers.insert(header::CACHE_CONTROL, value);
                if let Some(expires) = expires.and_then(|e| HeaderValue::from_str(&e).ok()) {
                    headers.insert(header::EXPIRES, expires);
                }
                let rule = CacheRule {
                    ttl: ttl.map(Duration::from_secs),
                    stale_while_revalidate: Duration::from_secs(windows.0),
                    stale_if_error: Duration::from_secs(windows.1),
                    ..CacheRule::default()
                };
                let status = StatusCode::from_u16(status).unwrap();
                if let Ok(freshness) = storable(&rule, &TargetedFields::default(), credentials, status, &headers, SystemTime::now()) {
                    // Every lifetime fits an `Instant` a century on.
                    let lifetime = freshness.lifetime();
                    prop_assert!(tokio::time::Instant::now().checked_add(lifetime).is_some());
                }
            }
        }
    }
}
