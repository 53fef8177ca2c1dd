//! Header rules at the proxy boundary: hop-by-hop headers stop here; a request's forwarding
//! headers, `Via` and id go out with its head (written after its own fields, not put in its
//! map), an answer's `Via` is appended; everything else passes untouched, in order.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::trace::{RequestId, X_REQUEST_ID};
use crate::downstream::Downstream;
use crate::h1::Fields;

/// Who may set `X-Forwarded-*` and `X-Request-Id`, what goes in `Via`, and whether traces
/// are started (see [`super::trace`]).
#[derive(Debug, Clone)]
pub struct ForwardedConfig {
    /// Peers whose forwarding headers (and request ids) are trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `Via` entries from the configured pseudonym; `None`: no `Via` header is added.
    pub via: Option<Via>,
    /// Every request carries an `X-Request-Id` (a trusted peer's, or a new one), sent upstream
    /// and returned to the client. Default true.
    pub request_id: bool,
    /// A request without a valid `traceparent` gets a new one. Default false.
    pub start_traces: bool,
}

impl ForwardedConfig {
    /// How many fields this policy adds to every answer: the request id and `Via`.
    pub fn answer_fields(&self) -> usize {
        usize::from(self.request_id) + usize::from(self.via.is_some())
    }
}

impl Default for ForwardedConfig {
    /// No trusted proxy, no `Via`, request ids on, no trace started.
    fn default() -> Self {
        Self { trusted_proxies: Vec::new(), via: None, request_id: true, start_traces: false }
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = header::FORWARDED;
static VIA: HeaderName = header::VIA;

/// The `Via` entries (RFC 9110 §7.6.3) the proxy appends, made once from the configured
/// pseudonym: `1.1 accel` for an HTTP/1.1 hop, `2 accel` for HTTP/2, and so on.
#[derive(Debug, Clone)]
pub struct Via {
    /// One entry per protocol, in the order of [`Via::PROTOCOLS`].
    entries: [HeaderValue; 5],
}

impl Via {
    const PROTOCOLS: [&'static str; 5] = ["0.9", "1.0", "1.1", "2", "3"];

    /// The entries for `pseudonym` (visible ASCII, as configuration checks).
    pub fn new(pseudonym: &HeaderValue) -> Self {
        let entries = Self::PROTOCOLS.map(|protocol| {
            let mut entry = Vec::with_capacity(protocol.len() + 1 + pseudonym.len());
            entry.extend_from_slice(protocol.as_bytes());
            entry.push(b' ');
            entry.extend_from_slice(pseudonym.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(entry)).unwrap_or_else(|_| pseudonym.clone())
        });
        Self { entries }
    }

    /// The entry for a hop that spoke `version`.
    pub fn entry(&self, version: Version) -> &HeaderValue {
        let index = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        &self.entries[index]
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE` (but `TE: trailers`), `Transfer-Encoding`, `Upgrade`,
/// `Proxy-Authenticate`, `Proxy-Authorization`. The other headers keep their order.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads have none: one pass over the names, without a lookup (`Connection`, which
    // names the others, is one of them).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let hop = |name: &HeaderName| is_hop_by_hop(name) || named.contains(name);
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    // `HeaderMap::remove` fills the hole with the last header, reordering the others: rebuild
    // the map in order instead (only when there is something to strip).
    // The same room: an answer's map was made with room for the fields the way back adds.
    let mut kept = HeaderMap::with_capacity(headers.capacity());
    let mut current: Option<HeaderName> = None;
    for (name, value) in std::mem::take(headers) {
        if let Some(name) = name {
            current = Some(name);
        }
        let Some(name) = &current else { continue };
        if *name == header::TE && te_trailers {
            if !kept.contains_key(header::TE) {
                kept.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        } else if !hop(name) {
            kept.append(name.clone(), value);
        }
    }
    *headers = kept;
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ]
    .contains(&name)
}

/// The forwarding fields a request gets on its way upstream (`X-Forwarded-For`, `-Proto`,
/// `-Host`, `Via` and `X-Request-Id`), made by [`to_upstream`], and the request's own fields
/// they replace. Both apply as the head is written ([`Forwarding::fields`]): the map is left
/// as it is. It is the one hyper made from the client connection's last answer, so each
/// insert would hash, probe and often grow it, and each removal would move its last field
/// into the hole.
#[derive(Debug)]
pub struct Forwarding {
    /// The first `len` are the fields, in the order they go out.
    added: [(&'static HeaderName, HeaderValue); 5],
    len: usize,
    /// The first `replaced` are the names of the request's fields not sent.
    left_out: [&'static HeaderName; 5],
    replaced: usize,
    /// The request has a `Host` (its own, or one made from its HTTP/2 authority).
    host: bool,
}

impl Forwarding {
    /// No fields.
    fn none() -> Self {
        Self {
            added: std::array::from_fn(|_| (&VIA, HeaderValue::from_static(""))),
            len: 0,
            left_out: [&VIA; 5],
            replaced: 0,
            host: false,
        }
    }

    /// True when the request has a `Host` field.
    pub fn has_host(&self) -> bool {
        self.host
    }

    /// What the request's head says besides its map.
    pub fn fields(&self) -> Fields<'_> {
        Fields { added: &self.added[..self.len], left_out: &self.left_out[..self.replaced] }
    }

    fn add(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.added[self.len] = (name, value);
        self.len += 1;
    }

    /// The request's own fields named `name` are not sent (when it has any).
    fn leave_out(&mut self, name: &'static HeaderName, present: bool) {
        if present {
            self.left_out[self.replaced] = name;
            self.replaced += 1;
        }
    }
}

/// Which of the fields [`to_upstream`] sets a request has of its own, found in one pass over
/// its names (a lookup hashes the name and probes the map, each time).
#[derive(Default)]
struct Own {
    forwarded: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: bool,
    host: Option<HeaderValue>,
}

impl Own {
    fn of(headers: &HeaderMap) -> Self {
        let mut own = Self::default();
        for (name, value) in headers {
            if *name == header::HOST {
                own.host.get_or_insert_with(|| value.clone());
            } else if *name == header::FORWARDED {
                own.forwarded = true;
            } else if *name == X_FORWARDED_FOR {
                own.forwarded_for = true;
            } else if *name == X_FORWARDED_PROTO {
                own.forwarded_proto = true;
            } else if *name == X_FORWARDED_HOST {
                own.forwarded_host = true;
            } else if *name == X_REQUEST_ID {
                own.request_id = true;
            }
        }
        own
    }
}

/// Prepares a downstream request's headers for the upstream: strips hop-by-hop headers, sets
/// `Host` for HTTP/2 clients (from `:authority`), and returns the forwarding fields to send
/// with them: `X-Forwarded-For`/`-Proto`/`-Host` (extending a trusted proxy's, replacing
/// anyone else's; an untrusted client's `Forwarded` is not sent), our `Via` entry after any
/// the request has, and its `id` (replacing the request's own).
pub fn to_upstream(
    headers: &mut HeaderMap,
    version: Version,
    authority: Option<&http::uri::Authority>,
    downstream: &Downstream,
    policy: &ForwardedConfig,
    id: Option<&RequestId>,
) -> Forwarding {
    strip_hop_by_hop(headers);
    let mut own = Own::of(headers);
    if own.host.is_none()
        && let Some(value) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, value.clone());
        own.host = Some(value);
    }
    let mut forwarding = Forwarding::none();
    forwarding.host = own.host.is_some();
    let proto = HeaderValue::from_static(if downstream.tls { "https" } else { "http" });
    if downstream.peer_trusted {
        let chain = {
            let existing: Vec<&str> = if own.forwarded_for {
                headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect()
            } else {
                Vec::new()
            };
            let peer = downstream.client_ip();
            if existing.is_empty() { peer.to_string() } else { format!("{}, {peer}", existing.join(", ")) }
        };
        forwarding.leave_out(&X_FORWARDED_FOR, own.forwarded_for);
        if let Ok(chain) = HeaderValue::from_str(&chain) {
            forwarding.add(&X_FORWARDED_FOR, chain);
        }
        if !own.forwarded_proto {
            forwarding.add(&X_FORWARDED_PROTO, proto);
        }
        if !own.forwarded_host
            && let Some(host) = own.host
        {
            forwarding.add(&X_FORWARDED_HOST, host);
        }
    } else {
        // RFC 7239 `Forwarded` says the same things as `X-Forwarded-*`: an untrusted client
        // may not say them either.
        forwarding.leave_out(&FORWARDED, own.forwarded);
        forwarding.leave_out(&X_FORWARDED_FOR, own.forwarded_for);
        forwarding.leave_out(&X_FORWARDED_PROTO, own.forwarded_proto);
        forwarding.leave_out(&X_FORWARDED_HOST, own.forwarded_host);
        forwarding.add(&X_FORWARDED_FOR, downstream.forwarded_for.clone());
        forwarding.add(&X_FORWARDED_PROTO, proto);
        if let Some(host) = own.host {
            forwarding.add(&X_FORWARDED_HOST, host);
        }
    }
    if let Some(via) = &policy.via {
        forwarding.add(&VIA, via.entry(version).clone());
    }
    if let Some(id) = id {
        forwarding.leave_out(&X_REQUEST_ID, own.request_id);
        forwarding.add(&X_REQUEST_ID, id.value().clone());
    }
    forwarding
}

/// Prepares an upstream response's headers for the client: strips hop-by-hop headers and
/// appends `Via` (the upstream spoke HTTP/1.1).
pub fn to_downstream(headers: &mut HeaderMap, policy: &ForwardedConfig) {
    strip_hop_by_hop(headers);
    if let Some(via) = &policy.via {
        append_via(headers, Version::HTTP_11, via);
    }
}

fn append_via(headers: &mut HeaderMap, version: Version, via: &Via) {
    headers.append(header::VIA, via.entry(version).clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream(peer: &str, trusted: bool) -> Downstream {
        let policy = ForwardedConfig {
            trusted_proxies: if trusted {
                vec![peer.parse::<std::net::SocketAddr>().unwrap().ip().into()]
            } else {
                vec![]
            },
            ..ForwardedConfig::default()
        };
        Downstream::new(peer.parse().unwrap(), false, &policy.trusted_proxies)
    }

    /// The head `headers` go upstream with: their own fields, then the forwarding ones.
    fn sent(h: HeaderMap, version: Version, downstream: &Downstream) -> HeaderMap {
        sent_with_id(h, version, downstream, None)
    }

    fn sent_with_id(
        mut h: HeaderMap,
        version: Version,
        downstream: &Downstream,
        id: Option<&RequestId>,
    ) -> HeaderMap {
        let forwarding = to_upstream(&mut h, version, None, downstream, &policy(), id);
        let fields = forwarding.fields();
        let mut sent = HeaderMap::new();
        for (name, value) in &h {
            if !fields.left_out.contains(&name) {
                sent.append(name, value.clone());
            }
        }
        for (name, value) in fields.added {
            sent.append(*name, value.clone());
        }
        sent
    }

    fn policy() -> ForwardedConfig {
        ForwardedConfig {
            via: Some(Via::new(&HeaderValue::from_static("accel"))),
            ..ForwardedConfig::default()
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn stripping_keeps_the_room_a_map_was_made_with() {
        let mut h = HeaderMap::with_capacity(12);
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        let room = h.capacity();
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.capacity(), room, "a chunked answer's map keeps the room for the way back");
    }

    #[test]
    fn an_untrusted_client_cannot_forge_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", "api.example.com".parse().unwrap());
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        h.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        let h = sent(h, Version::HTTP_11, &downstream("203.0.113.5:4000", false));
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
            assert_eq!(h.get_all(name).iter().count(), 1, "{name}: {h:?}");
        }
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.1 accel");
    }

    #[test]
    fn a_trusted_proxy_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        h.insert("via", "1.1 edge".parse().unwrap());
        let h = sent(h, Version::HTTP_2, &downstream("10.0.0.2:4000", true));
        let chain: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(chain, ["1.2.3.4, 5.6.7.8, 10.0.0.2"]);
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        let via: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "2 accel"]);
    }

    #[test]
    fn the_request_id_replaces_the_clients_own_and_goes_out_once() {
        let id = RequestId::generate();
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            h.insert("host", "api.example.com".parse().unwrap());
            h.insert("x-request-id", "client's".parse().unwrap());
            let h = sent_with_id(h, Version::HTTP_11, &downstream("10.0.0.2:4000", trusted), Some(&id));
            let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
            assert_eq!(ids, [id.as_str()], "trusted: {trusted}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "client's".parse().unwrap());
        let h = sent(h, Version::HTTP_11, &downstream("10.0.0.2:4000", false));
        assert_eq!(h["x-request-id"], "client's", "without ids, a client's passes as any field");
    }

    #[test]
    fn the_other_fields_keep_their_order_whatever_is_replaced() {
        let id = RequestId::generate();
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for (name, value) in [
                ("host", "api.example.com"),
                ("x-request-id", "client's"),
                ("x-forwarded-for", "1.2.3.4"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
            ] {
                h.append(name, value.parse().unwrap());
            }
            let h = sent_with_id(h, Version::HTTP_11, &downstream("10.0.0.2:4000", trusted), Some(&id));
            let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(names[..4], ["host", "a", "b", "c"], "trusted: {trusted}");
        }
    }

    #[test]
    fn via_entries_name_the_protocol_of_the_hop() {
        let via = Via::new(&HeaderValue::from_static("edge-7"));
        assert_eq!(via.entry(Version::HTTP_10), "1.0 edge-7");
        assert_eq!(via.entry(Version::HTTP_11), "1.1 edge-7");
        assert_eq!(via.entry(Version::HTTP_2), "2 edge-7");
    }
}
