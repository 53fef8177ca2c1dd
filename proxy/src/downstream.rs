//! The client side: who is asking, as far as the proxy can trust it.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

/// A client connection as accepted.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The socket peer.
    pub peer: SocketAddr,
    /// True when the peer is a configured trusted proxy, whose forwarding headers are believed.
    pub peer_trusted: bool,
    /// True on the TLS listener.
    pub tls: bool,
    /// The peer's address (IPv4-mapped IPv6 as IPv4) as an `X-Forwarded-For` value, written
    /// once per connection rather than once per request.
    pub forwarded_for: HeaderValue,
}

impl Downstream {
    /// Describes a connection from `peer` behind `trusted_proxies` (peers whose forwarding headers are believed).
    pub fn new(peer: SocketAddr, tls: bool, trusted_proxies: &[IpNet]) -> Self {
        let ip = canonical(peer.ip());
        let peer_trusted = trusted_proxies.iter().any(|net| net.contains(&ip));
        Self { peer, peer_trusted, tls, forwarded_for: ip_value(ip) }
    }

    /// The peer's address, IPv4-mapped IPv6 as IPv4.
    pub fn client_ip(&self) -> IpAddr {
        canonical(self.peer.ip())
    }
}

/// An address as a header value, IPv4 without going through `fmt`.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's address as the proxy trusts it: the socket peer, or — only when the peer is a
/// trusted proxy — the right-most address of `X-Forwarded-For` (or, when that is absent, of the
/// `for=` parameters of `Forwarded`, RFC 7239) that is not itself a trusted proxy. A client can
/// never choose its address by sending a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

impl ClientAddr {
    /// Resolves the client address of a request on `downstream`.
    pub fn resolve(downstream: &Downstream, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> Self {
        let peer = canonical(downstream.peer.ip());
        if !downstream.peer_trusted {
            return Self(peer);
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        let (name, hop): (&HeaderName, fn(&str) -> Option<IpAddr>) = if headers.contains_key(&X_FORWARDED_FOR)
        {
            (&X_FORWARDED_FOR, parse_forwarded_ip)
        } else {
            (&FORWARDED, parse_forwarded_element)
        };
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else { return Self(peer) };
            for item in text.split(',') {
                match hop(item.trim()) {
                    Some(ip) => chain.push(canonical(ip)),
                    // A malformed hop: trust nothing to its left.
                    None => chain.clear(),
                }
            }
        }
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted_proxies.iter().any(|net| net.contains(ip)))
            .map_or(Self(peer), Self)
    }
}

fn parse_forwarded_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    // `[::1]:1234` or `1.2.3.4:1234`
    text.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1;proto=https`,
/// `for="[2001:db8::1]:443"`); `None` for `unknown`, obfuscated identifiers or no `for`.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    match value.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => rest.split_once(']').and_then(|(ip, _)| ip.parse().ok()),
        None => parse_forwarded_ip(value),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn resolve(peer: &str, xff: &[&str]) -> IpAddr {
        let policy = policy();
        let downstream = Downstream::new(peer.parse().unwrap(), false, &policy);
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        ClientAddr::resolve(&downstream, &headers, &policy).0
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        assert_eq!(resolve("203.0.113.9:5000", &["1.2.3.4"]), "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_trusted_peer_yields_the_rightmost_untrusted_hop() {
        assert_eq!(
            resolve("10.0.0.1:5000", &["6.6.6.6, 198.51.100.7, 10.0.0.2"]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve("10.0.0.1:5000", &["6.6.6.6", "198.51.100.7"]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve("10.0.0.1:5000", &[]), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            resolve("10.0.0.1:5000", &["198.51.100.7:443"]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    fn resolve_forwarded(peer: &str, forwarded: &[&str]) -> IpAddr {
        let policy = policy();
        let downstream = Downstream::new(peer.parse().unwrap(), false, &policy);
        let mut headers = HeaderMap::new();
        for v in forwarded {
            headers.append("forwarded", v.parse().unwrap());
        }
        ClientAddr::resolve(&downstream, &headers, &policy).0
    }

    #[test]
    fn forwarded_is_read_like_x_forwarded_for() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            resolve_forwarded("10.0.0.1:5000", &["for=6.6.6.6, for=198.51.100.7;proto=https, for=10.0.0.2"]),
            ip("198.51.100.7")
        );
        assert_eq!(resolve_forwarded("10.0.0.1:5000", &[r#"for="[2001:db8::1]:443""#]), ip("2001:db8::1"));
        assert_eq!(resolve_forwarded("10.0.0.1:5000", &["for=198.51.100.7, for=unknown"]), ip("10.0.0.1"));
        assert_eq!(resolve_forwarded("203.0.113.9:5000", &["for=1.2.3.4"]), ip("203.0.113.9"));
    }

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in
            ["0.0.0.0", "10.0.0.2", "203.0.113.5", "255.255.255.255", "100.9.10.99", "::1", "2001:db8::7"]
        {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
        let mapped = Downstream::new("[::ffff:192.0.2.9]:80".parse().unwrap(), false, &policy());
        assert_eq!(mapped.forwarded_for, "192.0.2.9");
    }

    #[test]
    fn garbage_hops_cut_the_chain() {
        assert_eq!(resolve("10.0.0.1:5000", &["198.51.100.7, junk"]), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
