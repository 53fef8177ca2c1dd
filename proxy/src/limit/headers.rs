//! The headers that tell a client about its limits, after the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers` (structured-field lists, one item per policy):
//!
//! - `RateLimit-Policy: "client_ip";q=20;w=1` — the policy: `q` requests per `w` seconds (the
//!   configured rate as written: `20/s` is `q=20;w=1`, `600/m` is `q=600;w=60`);
//! - `RateLimit: "client_ip";r=4;t=1` — this client's state: `r` requests it may still make at
//!   once, `t` seconds until its bucket is full again (rounded up);
//! - `Retry-After: 1` on a refusal — seconds until a retry can be admitted (rounded up, at
//!   least 1).

use std::fmt::Write;
use std::time::Duration;

use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

use super::rule::LimitRule;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Appends the `RateLimit-Policy` item of `rule` to `out` (comma-separated list).
pub fn push_policy(out: &mut String, rule: &LimitRule) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let _ = write!(out, "\"{}\";q={};w={}", rule.name, rule.rate.count, rule.rate.per.as_secs());
}

/// Appends the `RateLimit` item of `rule` for a client with `remaining` requests and `reset`
/// until its bucket is full.
pub fn push_state(out: &mut String, rule: &LimitRule, remaining: u32, reset: Duration) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let _ = write!(out, "\"{}\";r={remaining};t={}", rule.name, ceil_secs(reset));
}

/// Sets `Retry-After` to `after`, rounded up to at least one second.
pub fn set_retry_after(headers: &mut HeaderMap, after: Duration) {
    headers.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(after).max(1)));
}

/// A header value from a list built by `push_*` (names are validated visible ASCII).
pub fn value(list: String) -> Option<HeaderValue> {
    HeaderValue::try_from(list).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::rule::{OneOrMany, convert};

    fn rule(text: &str) -> LimitRule {
        let file: OneOrMany<crate::limit::rule::LimitFile> = OneOrMany(vec![toml::from_str(text).unwrap()]);
        convert(file, &[], &mut |k, m| panic!("{k}: {m}")).remove(0)
    }

    #[test]
    fn policy_and_state_items_follow_the_draft() {
        let per_client = rule(r#"rate = "20/s""#);
        let per_route = rule(
            r#"rate = "600/m"
key = "route""#,
        );
        let mut policy = String::new();
        push_policy(&mut policy, &per_client);
        push_policy(&mut policy, &per_route);
        assert_eq!(policy, r#""client_ip";q=20;w=1, "route";q=600;w=60"#);
        let mut state = String::new();
        push_state(&mut state, &per_client, 4, Duration::from_millis(250));
        push_state(&mut state, &per_route, 0, Duration::from_secs(2));
        assert_eq!(state, r#""client_ip";r=4;t=1, "route";r=0;t=2"#);
        assert!(value(state).is_some());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let mut headers = HeaderMap::new();
        set_retry_after(&mut headers, Duration::from_millis(1));
        assert_eq!(headers[RETRY_AFTER], "1");
        set_retry_after(&mut headers, Duration::from_millis(1500));
        assert_eq!(headers[RETRY_AFTER], "2");
        set_retry_after(&mut headers, Duration::ZERO);
        assert_eq!(headers[RETRY_AFTER], "1");
    }
}
