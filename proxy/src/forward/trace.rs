//! A request's identity across hops: its `X-Request-Id`, and W3C Trace Context
//! (`traceparent`, `tracestate`).
//!
//! The request id is taken from a trusted peer (`[forwarded] trusted_proxies`) when it is
//! well-formed, and made up otherwise, like nginx's `$request_id` or Envoy's `x-request-id`:
//! it goes upstream with the request, back to the client on the answer, and into the access
//! and slow-request log lines. A valid `traceparent` (and its `tracestate`) passes through
//! unchanged; an invalid one is dropped with its `tracestate`, as the Trace Context spec asks
//! of a participant that cannot parse it, and with `start_traces` a new trace is started in its
//! place, as it is for a request without one.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::headers::ForwardedConfig;
use crate::downstream::Downstream;

/// The field that carries a request's id, both ways.
pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request's id: 1 to [`RequestId::MAX_LEN`] visible ASCII characters, as received from a
/// trusted peer, or 32 lower-case hex digits (128 random bits) made up by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The longest id taken from a client (Envoy and nginx ids are 32 to 36 characters).
    pub const MAX_LEN: usize = 128;

    /// A client's id, when it is 1 to [`Self::MAX_LEN`] visible ASCII characters.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid = (1..=Self::MAX_LEN).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic());
        valid.then(|| Self(value.clone()))
    }

    /// A new id: 128 random bits as 32 lower-case hex digits. The bits come from a fast
    /// thread-local generator: ids are unique in practice, not secrets.
    pub fn generate() -> Self {
        let mut text = [0u8; 32];
        hex(&mut text, &fastrand::u128(..).to_be_bytes());
        Self(header_value(text))
    }

    /// The id as text (always ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a field value.
    pub(super) fn value(&self) -> &HeaderValue {
        &self.0
    }

    /// Sets the id as `X-Request-Id` of `headers`, replacing any other.
    pub fn set(&self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID.clone(), self.0.clone());
    }
}

/// Sets a downstream request's trace context for the upstream (the policy's `start_traces`,
/// see the module doc) and returns its id (the policy's `request_id`); `None` when request ids
/// are off, and then a client's `X-Request-Id` passes through as any other header.
///
/// The id is not written into `headers` here: the forward sends it with the request's
/// forwarding fields ([`super::headers::to_upstream`]), and the pipeline sets it on the
/// answer ([`RequestId::set`]).
pub fn identify(
    headers: &mut HeaderMap,
    downstream: &Downstream,
    policy: &ForwardedConfig,
) -> Option<RequestId> {
    trace_context(headers, policy.start_traces);
    if !policy.request_id {
        return None;
    }
    let id = downstream
        .peer_trusted
        .then(|| only(headers, &X_REQUEST_ID).and_then(RequestId::parse))
        .flatten()
        .unwrap_or_else(RequestId::generate);
    Some(id)
}

/// Keeps a valid `traceparent` with its `tracestate`; drops an invalid one (several, or one
/// that does not parse) with its `tracestate`; with `start`, a request left without a
/// `traceparent` gets a new one (and loses a `tracestate` that came without one).
fn trace_context(headers: &mut HeaderMap, start: bool) {
    let mut parents = headers.get_all(&TRACEPARENT).iter();
    match (parents.next(), parents.next()) {
        (Some(parent), None) if is_valid_traceparent(parent.as_bytes()) => {
            if !headers.get_all(&TRACESTATE).iter().all(|v| is_valid_tracestate(v.as_bytes())) {
                // The parent stays; a `tracestate` that does not parse is dropped alone.
                headers.remove(&TRACESTATE);
            }
            return;
        }
        // No parent: nothing to check, and a lone `tracestate` (which belongs to no trace the
        // proxy can see) passes like any header, unless a new trace replaces it below.
        (None, _) if !start => return,
        (None, _) => {
            headers.remove(&TRACESTATE);
        }
        _ => {
            headers.remove(&TRACEPARENT);
            headers.remove(&TRACESTATE);
        }
    }
    if start {
        headers.insert(TRACEPARENT.clone(), new_traceparent());
    }
}

/// The one value of `name`; `None` when there is none or more than one.
fn only<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// A `traceparent` as Trace Context Level 1 §3.2 reads it: `version-traceid-parentid-flags`,
/// lower-case hex; version `ff` is invalid; trace id and parent id not all zeros; version
/// `00` is exactly 55 characters, a later version may carry more after a `-`.
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    if value.len() < 55 {
        return false;
    }
    let lower_hex = |field: &[u8]| field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let not_zero = |field: &[u8]| field.iter().any(|b| *b != b'0');
    let (version, trace_id, parent_id, flags) = (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let fields = lower_hex(version)
        && version != b"ff"
        && lower_hex(trace_id)
        && not_zero(trace_id)
        && lower_hex(parent_id)
        && not_zero(parent_id)
        && lower_hex(flags);
    let rest = match (version, value.len()) {
        (b"00", len) => len == 55,
        (_, 55) => true,
        (_, _) => value[55] == b'-',
    };
    dashes && fields && rest
}

/// A `tracestate` value as Trace Context Level 1 §3.3 reads it: at most 32 comma-separated
/// `key=value` members (empty members allowed), keys in lower case `a-z0-9_-*/` with an
/// optional `@vendor`, values of printable ASCII without `,` and `=`, at most 256 characters.
pub fn is_valid_tracestate(value: &[u8]) -> bool {
    let mut members = 0;
    for member in value.split(|b| *b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = member.iter().position(|b| *b == b'=') else { return false };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        let key_char = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
        let (tenant, system) = match key.iter().position(|b| *b == b'@') {
            Some(at) => (&key[..at], &key[at + 1..]),
            None => (key, &b""[..]),
        };
        let key_ok = !tenant.is_empty()
            && tenant.len() <= 256
            && system.len() <= 14
            && tenant.iter().all(key_char)
            && system.iter().all(key_char)
            && (key.len() == tenant.len() || !system.is_empty());
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value.iter().all(|b| matches!(b, 0x20..=0x7e) && *b != b',' && *b != b'=')
            && value.last() != Some(&b' ');
        if !key_ok || !value_ok {
            return false;
        }
    }
    members <= 32
}

/// A new trace: version 00, a random trace id and parent id (never all zeros), sampled.
fn new_traceparent() -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut text[3..35], &nonzero(fastrand::u128(..)).to_be_bytes());
    hex(&mut text[36..52], &nonzero(fastrand::u64(..)).to_be_bytes());
    header_value(text)
}

fn nonzero<T: PartialEq + From<u8>>(n: T) -> T {
    if n == T::from(0) { T::from(1) } else { n }
}

/// Writes `bytes` as lower-case hex into `out`, two digits a byte (`out` is twice as long):
/// one look-up a byte.
fn hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

/// Every byte's two lower-case hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    pairs
};

/// A value made of hex digits and dashes, which is always a valid header value. The bytes
/// are owned by the value's `Bytes`: one allocation, and every copy of the value (an id goes
/// upstream and back to the client) is a reference count, not a second allocation.
fn header_value<const N: usize>(text: [u8; N]) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn policy(request_id: bool, start_traces: bool) -> ForwardedConfig {
        ForwardedConfig { request_id, start_traces, ..ForwardedConfig::default() }
    }

    fn downstream(trusted: bool) -> Downstream {
        let peer: std::net::SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted_proxies: Vec<ipnet::IpNet> = if trusted { vec![peer.ip().into()] } else { vec![] };
        Downstream::new(peer, false, &trusted_proxies)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn traceparents_are_read_as_the_spec_says() {
        assert!(is_valid_traceparent(PARENT.as_bytes()));
        assert!(is_valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        // A later version may carry more fields after a dash.
        assert!(is_valid_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        assert!(is_valid_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(bad.as_bytes()), "{bad:?} read as valid");
        }
    }

    #[test]
    fn tracestates_are_read_as_the_spec_says() {
        assert!(is_valid_tracestate(b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        assert!(is_valid_tracestate(b"fw529a3039@dt=abc, ,vendor/x=1"));
        assert!(!is_valid_tracestate(b"Rojo=1"));
        assert!(!is_valid_tracestate(b"rojo"));
        assert!(!is_valid_tracestate(b"rojo=a=b"));
        assert!(!is_valid_tracestate(b"rojo@=1"));
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(!is_valid_tracestate(many.join(",").as_bytes()));
    }

    #[test]
    fn a_trusted_peer_s_well_formed_id_is_kept_and_anyone_else_s_replaced() {
        let mut h = headers(&[("x-request-id", "edge-7f3a")]);
        let id = identify(&mut h, &downstream(true), &policy(true, false)).unwrap();
        assert_eq!(id.as_str(), "edge-7f3a");

        let mut h = headers(&[("x-request-id", "edge-7f3a"), ("x-request-id", "again")]);
        let id = identify(&mut h, &downstream(false), &policy(true, false)).unwrap();
        assert_ne!(id.as_str(), "edge-7f3a");
        // Set on the request the forward sends, it replaces every value the client sent.
        id.set(&mut h);
        assert_eq!(h.get_all("x-request-id").iter().collect::<Vec<_>>(), [id.as_str()]);

        // Malformed, too long, or given twice: replaced even from a trusted peer.
        let long = "a".repeat(RequestId::MAX_LEN + 1);
        for sent in [
            vec![("x-request-id", "has space")],
            vec![("x-request-id", long.as_str())],
            vec![("x-request-id", "a"), ("x-request-id", "b")],
        ] {
            let mut h = headers(&sent);
            let id = identify(&mut h, &downstream(true), &policy(true, false)).unwrap();
            assert_eq!(id.as_str().len(), 32, "{sent:?}");
        }
    }

    #[test]
    fn generated_ids_are_128_bits_of_hex() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a:?}");
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn bytes_are_written_as_two_lower_case_hex_digits_each() {
        let mut out = [0u8; 10];
        hex(&mut out, &[0x00, 0x0f, 0xa5, 0x7e, 0xff]);
        assert_eq!(&out, b"000fa57eff");
    }

    #[test]
    fn with_request_ids_off_the_client_s_header_passes_untouched() {
        let mut h = headers(&[("x-request-id", "client's")]);
        assert_eq!(identify(&mut h, &downstream(false), &policy(false, false)), None);
        assert_eq!(h["x-request-id"], "client's");
        let mut h = HeaderMap::new();
        identify(&mut h, &downstream(false), &policy(false, false));
        assert!(h.is_empty());
    }

    #[test]
    fn a_valid_trace_passes_unchanged_and_an_invalid_one_is_dropped_or_restarted() {
        let mut h = headers(&[("traceparent", PARENT), ("tracestate", "rojo=1")]);
        identify(&mut h, &downstream(false), &policy(false, true));
        assert_eq!(
            (&h["traceparent"], &h["tracestate"]),
            (&HeaderValue::from_static(PARENT), &HeaderValue::from_static("rojo=1"))
        );

        let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let mut h = headers(&[("traceparent", bad), ("tracestate", "rojo=1")]);
        identify(&mut h, &downstream(false), &policy(false, false));
        assert!(h.is_empty(), "{h:?}");

        let mut h = headers(&[("traceparent", bad), ("tracestate", "rojo=1")]);
        identify(&mut h, &downstream(false), &policy(false, true));
        let started = h["traceparent"].as_bytes();
        assert!(is_valid_traceparent(started) && started.starts_with(b"00-") && started.ends_with(b"-01"));
        assert!(!h.contains_key("tracestate"));

        // A lone state passes untouched, unless a new trace is started.
        let mut h = headers(&[("tracestate", "rojo=1")]);
        identify(&mut h, &downstream(false), &policy(false, false));
        assert_eq!(h["tracestate"], "rojo=1");
        identify(&mut h, &downstream(false), &policy(false, true));
        assert!(!h.contains_key("tracestate") && h.contains_key("traceparent"), "{h:?}");

        // A valid parent keeps its place when only its state is broken.
        let mut h = headers(&[("traceparent", PARENT), ("tracestate", "Bad State")]);
        identify(&mut h, &downstream(false), &policy(false, false));
        assert_eq!(h["traceparent"], PARENT);
        assert!(!h.contains_key("tracestate"));
    }

    #[test]
    fn traces_are_started_only_when_configured() {
        let mut h = HeaderMap::new();
        identify(&mut h, &downstream(false), &policy(false, false));
        assert!(!h.contains_key("traceparent"));
        identify(&mut h, &downstream(false), &policy(false, true));
        let first = h["traceparent"].clone();
        let mut again = HeaderMap::new();
        identify(&mut again, &downstream(false), &policy(false, true));
        assert_ne!(first, again["traceparent"], "each trace has its own ids");
    }
}
