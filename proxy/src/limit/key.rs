//! The limit key: what a request is counted as. The client's address (trusted-proxy aware, see
//! [`ClientAddr`]), a request header such as an API key, a path parameter, a combination of
//! these, or the route as a whole.
//!
//! A key is hashed straight from the request parts into a `u64` with a per-process random
//! SipHash key: no string is built, a limiter stores 8 bytes per key whatever a client sends
//! (an 8 KiB API key costs what an IP address costs), and a client cannot aim collisions at
//! another client's bucket without knowing the process's secret.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use http::HeaderMap;
use http::header::HeaderName;

use crate::downstream::ClientAddr;
use crate::params::PathParams;

/// One component of a limit key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client's address as the proxy trusts it.
    ClientIp,
    /// A request header's value; an absent header counts as the empty value.
    Header(HeaderName),
    /// A path parameter of the route's pattern, e.g. `{id}`.
    PathParam(Arc<str>),
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// One bucket for the whole route.
    Route,
    /// One bucket per distinct value of these parts (one or more, in order).
    Parts(Box<[KeyPart]>),
}

/// A request's key for one limit: a keyed hash of the key's parts.
pub type LimitKey = u64;

/// Everything a key may be built from, gathered once per request.
#[derive(Debug)]
pub struct KeyInput<'a> {
    /// The trusted client address; `None` when no limit of the route needs it.
    pub client: Option<ClientAddr>,
    pub headers: &'a HeaderMap,
    /// The request path the route matched, into which `params` point.
    pub path: &'a str,
    pub params: &'a PathParams,
}

/// The process-wide hash key: random per process, so keys cannot be precomputed from outside.
static HASH_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl KeyPart {
    /// Parses `client_ip`, `header:NAME` or `path:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "client_ip" {
            return Ok(Self::ClientIp);
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("{text:?}: {name:?} is not a header name"));
        }
        if let Some(name) = text.strip_prefix("path:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{text:?}: a path parameter name uses letters, digits and '_'"));
            }
            return Ok(Self::PathParam(name.into()));
        }
        Err(format!(
            "{text:?} is not a key: use \"client_ip\", \"header:NAME\", \"path:NAME\", \"route\" or a list of them"
        ))
    }
}

impl KeySpec {
    /// Parses the key as written: one item (`"route"` alone, or one part) or several parts.
    pub fn parse(items: &[String]) -> Result<Self, String> {
        match items {
            [] => Err("must name at least one part".into()),
            [only] if only == "route" => Ok(Self::Route),
            _ if items.iter().any(|i| i == "route") => {
                Err("\"route\" (one bucket for the whole route) cannot be combined with other parts".into())
            }
            _ => {
                let parts = items.iter().map(|i| KeyPart::parse(i)).collect::<Result<Vec<_>, _>>()?;
                if (1..parts.len()).any(|i| parts[..i].contains(&parts[i])) {
                    return Err("a part appears twice".into());
                }
                Ok(Self::Parts(parts.into()))
            }
        }
    }

    /// True when the key needs the client's address.
    pub fn needs_client(&self) -> bool {
        matches!(self, Self::Parts(parts) if parts.contains(&KeyPart::ClientIp))
    }

    /// The path parameters the key reads.
    pub fn path_params(&self) -> impl Iterator<Item = &str> {
        let parts: &[KeyPart] = match self {
            Self::Route => &[],
            Self::Parts(parts) => parts,
        };
        parts.iter().filter_map(|p| match p {
            KeyPart::PathParam(name) => Some(&**name),
            _ => None,
        })
    }

    /// The request's key. Parts are length-delimited and tagged, so no two different inputs
    /// (`a` + `bc` and `ab` + `c`, an address and a header holding its text) share a key.
    pub fn key(&self, input: &KeyInput<'_>) -> LimitKey {
        self.hash(HASH_KEY.build_hasher(), input)
    }

    /// The request's key for a `scope = "cluster"` limit: the same parts under a fixed hash
    /// (xxh3), so that every sidecar names the same client's bucket alike.
    pub fn cluster_key(&self, input: &KeyInput<'_>) -> LimitKey {
        self.hash(xxhash_rust::xxh3::Xxh3Default::new(), input)
    }

    fn hash(&self, mut hasher: impl Hasher, input: &KeyInput<'_>) -> LimitKey {
        let Self::Parts(parts) = self else { return 0 };
        for part in parts.iter() {
            match part {
                KeyPart::ClientIp => {
                    hasher.write_u8(1);
                    match input.client.map(|c| c.0) {
                        Some(IpAddr::V4(v4)) => hasher.write(&v4.octets()),
                        Some(IpAddr::V6(v6)) => hasher.write(&v6.octets()),
                        None => hasher.write_u8(0),
                    }
                }
                KeyPart::Header(name) => {
                    hasher.write_u8(2);
                    let value = input.headers.get(name).map_or(&b""[..], |v| v.as_bytes());
                    hasher.write_usize(value.len());
                    hasher.write(value);
                }
                KeyPart::PathParam(name) => {
                    hasher.write_u8(3);
                    let value = input.params.get(input.path, name).unwrap_or("");
                    hasher.write_usize(value.len());
                    hasher.write(value.as_bytes());
                }
            }
        }
        hasher.finish()
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::PathParam(name) => write!(f, "path:{name}"),
        }
    }
}

/// As written in the rules; parts joined with `+` (the default limit name).
impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Route => f.write_str("route"),
            Self::Parts(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "{part}")?;
                }
                Ok(())
            }
        }
    }
}

/// A `BuildHasher` for keys that are already keyed hashes: passes the `u64` through, so the
/// limiter's map does not hash a second time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prehashed;

/// The hasher of [`Prehashed`].
#[derive(Debug, Default)]
pub struct PrehashedHasher(u64);

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys go through this hasher; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(items: &[&str]) -> KeySpec {
        KeySpec::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn key_of(spec: &KeySpec, client: &str, headers: &[(&str, &str)]) -> LimitKey {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let params = PathParams::default();
        let input = KeyInput {
            client: Some(ClientAddr(client.parse().unwrap())),
            headers: &map,
            path: "/",
            params: &params,
        };
        spec.key(&input)
    }

    #[test]
    fn keys_parse_and_display_as_written() {
        assert_eq!(spec(&["client_ip"]).to_string(), "client_ip");
        assert_eq!(spec(&["client_ip", "header:X-Api-Key"]).to_string(), "client_ip+header:x-api-key");
        assert_eq!(spec(&["route"]), KeySpec::Route);
        assert_eq!(spec(&["path:id"]).path_params().collect::<Vec<_>>(), ["id"]);
        let bad = |items: &[&str]| KeySpec::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(bad(&["ip"]).unwrap_err().contains("is not a key"));
        assert!(bad(&["route", "client_ip"]).is_err());
        assert!(bad(&["client_ip", "client_ip"]).is_err());
        assert!(bad(&["header:bad header"]).is_err());
        assert!(bad(&[]).is_err());
    }

    #[test]
    fn different_clients_and_header_values_get_different_keys() {
        let by_ip = spec(&["client_ip"]);
        assert_eq!(key_of(&by_ip, "192.0.2.1", &[]), key_of(&by_ip, "192.0.2.1", &[("x-api-key", "a")]));
        assert_ne!(key_of(&by_ip, "192.0.2.1", &[]), key_of(&by_ip, "192.0.2.2", &[]));
        let both = spec(&["client_ip", "header:x-api-key"]);
        assert_ne!(
            key_of(&both, "192.0.2.1", &[("x-api-key", "a")]),
            key_of(&both, "192.0.2.1", &[("x-api-key", "b")])
        );
        assert_ne!(
            key_of(&both, "192.0.2.1", &[("x-api-key", "a")]),
            key_of(&both, "192.0.2.2", &[("x-api-key", "a")])
        );
        // An absent header is the empty value: requests without it share a bucket.
        let by_header = spec(&["header:x-api-key"]);
        assert_eq!(
            key_of(&by_header, "192.0.2.1", &[]),
            key_of(&by_header, "192.0.2.2", &[("x-api-key", "")])
        );
        assert_eq!(key_of(&KeySpec::Route, "192.0.2.1", &[]), key_of(&KeySpec::Route, "192.0.2.2", &[]));
    }
}
