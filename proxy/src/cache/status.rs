//! What the cache did, told to the client: `Cache-Status` (RFC 9211) and, for operators used
//! to nginx, the optional `X-Cache-Status`.
//!
//! | outcome | `Cache-Status` | `X-Cache-Status` |
//! |---|---|---|
//! | fresh hit | `accel; hit; ttl=42` | `HIT` |
//! | stale served while refreshing | `accel; hit; ttl=-3; detail=stale-while-revalidate` | `UPDATING` |
//! | stale served on origin failure | `accel; fwd=stale; fwd-status=503; ttl=-9; detail=stale-if-error` | `STALE` |
//! | miss | `accel; fwd=miss; fwd-status=200; stored` | `MISS` |
//! | a follower given its leader's answer | `accel; fwd=miss; collapsed` | `MISS` |
//! | stale, fetched again | `accel; fwd=stale; fwd-status=200; stored` | `EXPIRED` |
//! | stale, origin said 304 | `accel; fwd=stale; fwd-status=304; ttl=60` | `REVALIDATED` |
//! | stale `must-revalidate`, origin failed: `504` | `accel; fwd=stale; fwd-status=503; detail=must-revalidate` | `EXPIRED` |
//! | client asked to skip the cache | `accel; fwd=request` | `BYPASS` |
//! | method not cached | `accel; fwd=method` | `BYPASS` |
//! | credentials on a shared entry | `accel; fwd=bypass; detail=credentials` | `BYPASS` |
//! | a query whose body is not keyed | `accel; fwd=bypass; detail=body` | `BYPASS` |
//! | a query with preconditions | `accel; fwd=bypass; detail=precondition` | `BYPASS` |

use std::fmt::Write as _;

use http::HeaderValue;
use http::header::HeaderName;

/// `Cache-Status`.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Cache-Status`.
pub static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");

/// Why a request went around the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The method is not GET or HEAD.
    Method,
    /// The client sent `Cache-Control: no-store` (or `no-cache` under `revalidate`).
    Request,
    /// The request carries credentials the stored answer may not be shared with.
    Credentials,
    /// A follower's leader took too long; it went upstream on its own.
    FollowerTimeout,
    /// A query (a POST on a route that caches them) whose body could not be keyed: larger
    /// than `max_body_key`, or of undeclared length.
    Body,
    /// A query with preconditions (`If-None-Match`, …): the origin evaluates them.
    Precondition,
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh entry answered; `ttl` seconds of freshness left.
    Hit { ttl: i64 },
    /// A stale entry answered while one background request refreshes it.
    StaleWhileRevalidate { ttl: i64 },
    /// A stale entry answered because the origin failed (`fwd_status`: its status, if any).
    StaleIfError { ttl: i64, fwd_status: Option<u16> },
    /// No entry: forwarded.
    Miss { fwd_status: u16, stored: bool },
    /// A follower answered with its leader's response.
    Collapsed,
    /// A stale entry (or a client's `no-cache`) sent the request upstream, which answered anew.
    Expired { fwd_status: u16, stored: bool },
    /// A stale entry was confirmed by the origin's 304.
    Revalidated { ttl: i64 },
    /// A stale entry that must not be served stale (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`) could not be revalidated: the origin failed (`fwd_status`: its status, if
    /// it answered) and the client got a `504`.
    MustRevalidate { fwd_status: Option<u16> },
    /// The cache was not used.
    Bypass(BypassReason),
}

impl CacheStatus {
    /// The label of request metrics and access logs.
    pub fn result(self) -> CacheResult {
        match self {
            Self::Hit { .. } => CacheResult::Hit,
            Self::StaleWhileRevalidate { .. } | Self::StaleIfError { .. } => CacheResult::Stale,
            Self::Miss { .. } | Self::Collapsed => CacheResult::Miss,
            Self::Expired { .. } | Self::MustRevalidate { .. } => CacheResult::Expired,
            Self::Revalidated { .. } => CacheResult::Revalidated,
            Self::Bypass(_) => CacheResult::Bypass,
        }
    }

    /// The `X-Cache-Status` value.
    pub fn x_cache_status(self) -> &'static str {
        match self {
            Self::Hit { .. } => "HIT",
            Self::StaleWhileRevalidate { .. } => "UPDATING",
            Self::StaleIfError { .. } => "STALE",
            Self::Miss { .. } | Self::Collapsed => "MISS",
            Self::Expired { .. } | Self::MustRevalidate { .. } => "EXPIRED",
            Self::Revalidated { .. } => "REVALIDATED",
            Self::Bypass(_) => "BYPASS",
        }
    }

    /// The `Cache-Status` value.
    pub fn header_value(self) -> HeaderValue {
        let mut text = String::with_capacity(48);
        text.push_str("accel; ");
        // Writing to a String cannot fail.
        let _ = match self {
            Self::Hit { ttl } => write!(text, "hit; ttl={ttl}"),
            Self::StaleWhileRevalidate { ttl } => {
                write!(text, "hit; ttl={ttl}; detail=stale-while-revalidate")
            }
            Self::StaleIfError { ttl, fwd_status } => {
                text.push_str("fwd=stale; ");
                if let Some(status) = fwd_status {
                    let _ = write!(text, "fwd-status={status}; ");
                }
                write!(text, "ttl={ttl}; detail=stale-if-error")
            }
            Self::Miss { fwd_status, stored } => {
                write!(text, "fwd=miss; fwd-status={fwd_status}{}", if stored { "; stored" } else { "" })
            }
            Self::Collapsed => write!(text, "fwd=miss; collapsed"),
            Self::Expired { fwd_status, stored } => {
                write!(text, "fwd=stale; fwd-status={fwd_status}{}", if stored { "; stored" } else { "" })
            }
            Self::Revalidated { ttl } => write!(text, "fwd=stale; fwd-status=304; ttl={ttl}"),
            Self::MustRevalidate { fwd_status } => {
                text.push_str("fwd=stale; ");
                if let Some(status) = fwd_status {
                    let _ = write!(text, "fwd-status={status}; ");
                }
                text.write_str("detail=must-revalidate")
            }
            Self::Bypass(reason) => text.write_str(match reason {
                BypassReason::Method => "fwd=method",
                BypassReason::Request => "fwd=request",
                BypassReason::Credentials => "fwd=bypass; detail=credentials",
                BypassReason::FollowerTimeout => "fwd=miss; detail=follower-timeout",
                BypassReason::Body => "fwd=bypass; detail=body",
                BypassReason::Precondition => "fwd=bypass; detail=precondition",
            }),
        };
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("accel"))
    }
}

/// How the cache took part in answering a request: the `cache` label of request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheResult {
    /// The route does not cache.
    None,
    Hit,
    Stale,
    Miss,
    Expired,
    Revalidated,
    /// The request or its answer could not use the cache.
    Bypass,
}

impl CacheResult {
    /// Every value, in label order.
    pub const ALL: [Self; 7] =
        [Self::None, Self::Hit, Self::Stale, Self::Miss, Self::Expired, Self::Revalidated, Self::Bypass];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Expired => "expired",
            Self::Revalidated => "revalidated",
            Self::Bypass => "bypass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_rfc_9211_says() {
        assert_eq!(CacheStatus::Hit { ttl: 42 }.header_value(), "accel; hit; ttl=42");
        assert_eq!(
            CacheStatus::Miss { fwd_status: 200, stored: true }.header_value(),
            "accel; fwd=miss; fwd-status=200; stored"
        );
        assert_eq!(
            CacheStatus::StaleIfError { ttl: -9, fwd_status: Some(503) }.header_value(),
            "accel; fwd=stale; fwd-status=503; ttl=-9; detail=stale-if-error"
        );
        assert_eq!(
            CacheStatus::Revalidated { ttl: 60 }.header_value(),
            "accel; fwd=stale; fwd-status=304; ttl=60"
        );
        assert_eq!(
            CacheStatus::MustRevalidate { fwd_status: None }.header_value(),
            "accel; fwd=stale; detail=must-revalidate"
        );
        assert_eq!(CacheStatus::Bypass(BypassReason::Method).header_value(), "accel; fwd=method");
        assert_eq!(CacheStatus::Collapsed.x_cache_status(), "MISS");
        assert_eq!(CacheStatus::StaleWhileRevalidate { ttl: -1 }.result(), CacheResult::Stale);
    }
}
