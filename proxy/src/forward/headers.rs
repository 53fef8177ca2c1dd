//! Header rules at the proxy boundary: hop-by-hop headers stop here; forwarding headers and
//! `Via` are added; everything else passes untouched, in order.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::trace::{RequestId, X_REQUEST_ID};
use crate::downstream::Downstream;

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
    let mut kept = HeaderMap::with_capacity(headers.len());
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
/// `-Host`, `Via` and `X-Request-Id`), made by [`to_upstream`]. They go out after the
/// request's own fields, written with its head, and are never inserted into its map: that map
/// is the one hyper made from the client connection's last answer, and each insert would
/// hash, probe and often grow it.
#[derive(Debug)]
pub struct Forwarding {
    /// The first `len` are the fields, in the order they go out.
    fields: [(&'static HeaderName, HeaderValue); 5],
    len: usize,
}

impl Forwarding {
    /// No fields.
    pub fn none() -> Self {
        Self { fields: std::array::from_fn(|_| (&VIA, HeaderValue::from_static(""))), len: 0 }
    }

    /// The fields, in the order they go out.
    pub fn fields(&self) -> &[(&'static HeaderName, HeaderValue)] {
        &self.fields[..self.len]
    }

    fn push(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }
}

static VIA: HeaderName = header::VIA;

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
/// anyone else's, whose own leave `headers`; an untrusted client's `Forwarded` is dropped),
/// our `Via` entry after any the request has, and its `id` (replacing the request's own).
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
        if own.forwarded_for {
            headers.remove(&X_FORWARDED_FOR);
        }
        if let Ok(chain) = HeaderValue::from_str(&chain) {
            forwarding.push(&X_FORWARDED_FOR, chain);
        }
        if !own.forwarded_proto {
            forwarding.push(&X_FORWARDED_PROTO, proto);
        }
        if !own.forwarded_host
            && let Some(host) = own.host
        {
            forwarding.push(&X_FORWARDED_HOST, host);
        }
    } else {
        // RFC 7239 `Forwarded` says the same things as `X-Forwarded-*`: an untrusted client
        // may not say them either.
        for (said, name) in [
            (own.forwarded, &header::FORWARDED),
            (own.forwarded_for, &X_FORWARDED_FOR),
            (own.forwarded_proto, &X_FORWARDED_PROTO),
            (own.forwarded_host, &X_FORWARDED_HOST),
        ] {
            if said {
                headers.remove(name);
            }
        }
        forwarding.push(&X_FORWARDED_FOR, downstream.forwarded_for.clone());
        forwarding.push(&X_FORWARDED_PROTO, proto);
        if let Some(host) = own.host {
            forwarding.push(&X_FORWARDED_HOST, host);
        }
    }
    if let Some(via) = &policy.via {
        forwarding.push(&VIA, via.entry(version).clone());
    }
    if let Some(id) = id {
        if own.request_id {
            headers.remove(&X_REQUEST_ID);
        }
        forwarding.push(&X_REQUEST_ID, id.value().clone());
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
        for (name, value) in forwarding.fields() {
            h.append(*name, value.clone());
        }
        h
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
    fn via_entries_name_the_protocol_of_the_hop() {
        let via = Via::new(&HeaderValue::from_static("edge-7"));
        assert_eq!(via.entry(Version::HTTP_10), "1.0 edge-7");
        assert_eq!(via.entry(Version::HTTP_11), "1.1 edge-7");
        assert_eq!(via.entry(Version::HTTP_2), "2 edge-7");
    }
}
