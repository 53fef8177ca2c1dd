//! Cache keys: a 128-bit hash taken straight from the request parts, with no string
//! building, so a lookup costs one pass over the bytes that matter.
//!
//! What goes in is the route's [`KeySpec`]: always the path; by default the host and the whole
//! query (parameters in any order hash the same); optionally listed headers and cookies.
//! Credentials (`Authorization`, cookies) only ever enter as hash input: the key never holds
//! them, and two different credentials never share a key when the key lists them. Getting the
//! key too coarse serves one client's answer to another; too fine only costs hit rate.
//!
//! Requests that carry credentials are keyed per user by default: [`CacheKey::credentialed`]
//! mixes in a keyed hash of them (see [`super::credential`]), never the credential itself.
//!
//! GET and HEAD share keys (a HEAD is answered from the GET entry). A POST on a route that
//! caches queries is keyed on its body too ([`CacheKey::query`]). `Vary` adds a second
//! level: [`CacheKey::variant`] mixes the values of the varying request headers into the
//! primary key.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::credential::CredentialHash;

/// A cache key: a 128-bit hash of the request parts the route keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

impl CacheKey {
    /// The key of one variant of a response that varies on `vary`: the primary key mixed with
    /// each listed request header's values (absent and empty differ).
    pub fn variant(self, vary: &[HeaderName], request: &HeaderMap) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(&self.0.to_le_bytes());
        for name in vary {
            hasher.update(name.as_str().as_bytes());
            write_values(&mut hasher, request, name);
        }
        CacheKey(hasher.digest128())
    }

    /// The key of the same request for one user: the route's key mixed with the keyed hash
    /// of the request's credentials ([`super::credential`]). Only requests with the same
    /// credentials compute it; variants (`Vary`) derive from it like from any primary key.
    pub fn credentialed(self, credentials: CredentialHash) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(&self.0.to_le_bytes());
        hasher.update(b"\xffcredentials");
        hasher.update(&credentials.0.to_le_bytes());
        CacheKey(hasher.digest128())
    }

    /// The key of a query (a POST on a route that caches them): the route's key mixed with
    /// the method, the body's `Content-Type` and `Content-Encoding`, and the body's bytes. So
    /// a query never shares an entry with a GET of its URL, nor with another body; the
    /// per-user ([`Self::credentialed`]) and variant keys derive from it like from any
    /// primary key.
    pub fn query(self, headers: &HeaderMap, body: &[u8]) -> CacheKey {
        let mut hasher = Xxh3::new();
        hasher.update(&self.0.to_le_bytes());
        hasher.update(b"\xffPOST");
        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            write_values(&mut hasher, headers, &name);
        }
        hasher.update(&xxh3_128(body).to_le_bytes());
        CacheKey(hasher.digest128())
    }

    /// Parses the 32-hex-digit form written by `Display`.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Which query parameters enter the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKey {
    /// Every parameter, in any order.
    All,
    /// None: `/a?x=1` and `/a` share an entry.
    None,
    /// Only these parameter names, in any order.
    Only(Vec<Box<str>>),
}

/// Which request parts form a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Include the host (default true; false shares entries across hosts).
    pub host: bool,
    pub query: QueryKey,
    /// Request headers whose values enter the key (e.g. `authorization`, `accept-language`).
    pub headers: Vec<HeaderName>,
    /// Cookie names whose values enter the key.
    pub cookies: Vec<Box<str>>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self { host: true, query: QueryKey::All, headers: Vec::new(), cookies: Vec::new() }
    }
}

/// Field separator: a byte that cannot occur in a host, path, query or header value, so
/// `("ab", "c")` and `("a", "bc")` hash differently.
const SEP: &[u8] = &[0xff];

impl KeySpec {
    /// The key of a request for `path` and `query` on `host` with `headers`.
    pub fn key(&self, host: Option<&str>, path: &str, query: Option<&str>, headers: &HeaderMap) -> CacheKey {
        let mut hasher = Xxh3::new();
        if self.host {
            // Hosts are case-insensitive; they are short, so lower-case byte by byte.
            for chunk in host.unwrap_or("").as_bytes().chunks(32) {
                let mut lower = [0u8; 32];
                for (l, b) in lower.iter_mut().zip(chunk) {
                    *l = b.to_ascii_lowercase();
                }
                hasher.update(&lower[..chunk.len()]);
            }
        }
        hasher.update(SEP);
        hasher.update(path.as_bytes());
        hasher.update(SEP);
        match &self.query {
            QueryKey::None => {}
            QueryKey::All => hasher.update(&query_sum(query, |_| true).to_le_bytes()),
            QueryKey::Only(names) => {
                let sum = query_sum(query, |name| names.iter().any(|n| **n == *name));
                hasher.update(&sum.to_le_bytes());
            }
        }
        for name in &self.headers {
            hasher.update(SEP);
            hasher.update(name.as_str().as_bytes());
            write_values(&mut hasher, headers, name);
        }
        for name in &self.cookies {
            hasher.update(SEP);
            hasher.update(name.as_bytes());
            hasher.update(SEP);
            if let Some(value) = cookie(headers, name) {
                hasher.update(&[1]);
                hasher.update(value.as_bytes());
            }
        }
        CacheKey(hasher.digest128())
    }

    /// True when the key includes the request's credentials (`Authorization`), so that two
    /// users can never share an entry.
    pub fn includes_credentials(&self) -> bool {
        self.headers.contains(&header::AUTHORIZATION)
    }
}

/// An order-independent digest of the query's parameters that `keep` accepts: the sum of
/// each parameter's own hash. Sorting would need a buffer; a sum needs none.
fn query_sum(query: Option<&str>, keep: impl Fn(&str) -> bool) -> u128 {
    let Some(query) = query else { return 0 };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| keep(pair.split_once('=').map_or(*pair, |(name, _)| name)))
        .fold(0u128, |sum, pair| sum.wrapping_add(xxh3_128(pair.as_bytes())))
}

/// Hashes every value of header `name` in order; marks absence apart from an empty value.
fn write_values(hasher: &mut Xxh3, headers: &HeaderMap, name: &HeaderName) {
    for value in headers.get_all(name) {
        hasher.update(SEP);
        hasher.update(&[1]);
        hasher.update(value.as_bytes());
    }
    hasher.update(SEP);
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn key(spec: &KeySpec, host: &str, path: &str, query: Option<&str>, h: &[(&str, &str)]) -> CacheKey {
        spec.key(Some(host), path, query, &headers(h))
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        let spec = KeySpec::default();
        let a = key(&spec, "h", "/p", Some("a=1&b=2"), &[]);
        assert_eq!(a, key(&spec, "h", "/p", Some("b=2&a=1"), &[]));
        assert_ne!(a, key(&spec, "h", "/p", Some("a=1&b=3"), &[]));
        assert_ne!(a, key(&spec, "h", "/p", None, &[]));
    }

    #[test]
    fn only_listed_query_parameters_count() {
        let spec = KeySpec { query: QueryKey::Only(vec!["tier".into()]), ..KeySpec::default() };
        let a = key(&spec, "h", "/p", Some("tier=gold&utm=x"), &[]);
        assert_eq!(a, key(&spec, "h", "/p", Some("utm=y&tier=gold"), &[]));
        assert_ne!(a, key(&spec, "h", "/p", Some("tier=silver"), &[]));
        let none = KeySpec { query: QueryKey::None, ..KeySpec::default() };
        assert_eq!(key(&none, "h", "/p", Some("a=1"), &[]), key(&none, "h", "/p", None, &[]));
    }

    #[test]
    fn host_is_case_insensitive_and_optional() {
        let spec = KeySpec::default();
        assert_eq!(
            key(&spec, "API.example.com", "/p", None, &[]),
            key(&spec, "api.example.com", "/p", None, &[])
        );
        assert_ne!(
            key(&spec, "a.example.com", "/p", None, &[]),
            key(&spec, "b.example.com", "/p", None, &[])
        );
        let hostless = KeySpec { host: false, ..KeySpec::default() };
        assert_eq!(key(&hostless, "a", "/p", None, &[]), key(&hostless, "b", "/p", None, &[]));
    }

    #[test]
    fn parts_do_not_run_into_each_other() {
        let spec = KeySpec::default();
        assert_ne!(key(&spec, "ab", "/c", None, &[]), key(&spec, "a", "b/c", None, &[]));
    }

    #[test]
    fn listed_headers_and_cookies_separate_users() {
        let spec = KeySpec {
            headers: vec![header::AUTHORIZATION],
            cookies: vec!["session".into()],
            ..KeySpec::default()
        };
        assert!(spec.includes_credentials());
        let alice = key(&spec, "h", "/p", None, &[("authorization", "Bearer alice")]);
        let bob = key(&spec, "h", "/p", None, &[("authorization", "Bearer bob")]);
        let nobody = key(&spec, "h", "/p", None, &[]);
        let empty = key(&spec, "h", "/p", None, &[("authorization", "")]);
        assert_ne!(alice, bob);
        assert_ne!(nobody, empty);
        let s1 = key(&spec, "h", "/p", None, &[("cookie", "theme=dark; session=1")]);
        let s2 = key(&spec, "h", "/p", None, &[("cookie", "session=2; theme=dark")]);
        let s1_other_theme = key(&spec, "h", "/p", None, &[("cookie", "session=1; theme=light")]);
        assert_ne!(s1, s2);
        assert_eq!(s1, s1_other_theme);
    }

    #[test]
    fn variants_differ_by_the_varying_header_only() {
        let primary = CacheKey(7);
        let vary = [header::ACCEPT_LANGUAGE];
        let en = primary.variant(&vary, &headers(&[("accept-language", "en"), ("x-other", "1")]));
        assert_eq!(en, primary.variant(&vary, &headers(&[("accept-language", "en")])));
        assert_ne!(en, primary.variant(&vary, &headers(&[("accept-language", "fr")])));
        assert_ne!(en, primary);
    }

    #[test]
    fn a_credentialed_key_differs_per_user_and_from_the_shared_key() {
        let primary = key(&KeySpec::default(), "h", "/p", None, &[]);
        let alice = primary.credentialed(CredentialHash(1));
        assert_eq!(alice, primary.credentialed(CredentialHash(1)));
        assert_ne!(alice, primary.credentialed(CredentialHash(2)));
        assert_ne!(alice, primary);
        let other_path = key(&KeySpec::default(), "h", "/q", None, &[]);
        assert_ne!(alice, other_path.credentialed(CredentialHash(1)));
        let vary = [header::ACCEPT_LANGUAGE];
        let en = headers(&[("accept-language", "en")]);
        assert_ne!(alice.variant(&vary, &en), primary.variant(&vary, &en));
    }

    #[test]
    fn a_query_is_keyed_on_its_body_and_never_meets_a_get() {
        let json = headers(&[("content-type", "application/json")]);
        let primary = key(&KeySpec::default(), "h", "/api/retrieval/query", None, &[]);
        let question = primary.query(&json, br#"{"query":"atp","k":5}"#);
        assert_eq!(question, primary.query(&json, br#"{"query":"atp","k":5}"#), "same body, same key");
        assert_ne!(question, primary.query(&json, br#"{"query":"atp","k":6}"#), "another body");
        assert_ne!(question, primary, "a query never answers a GET of its URL");
        assert_ne!(primary.query(&json, b""), primary, "not even with an empty body");
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_ne!(question, primary.query(&form, br#"{"query":"atp","k":5}"#), "the media type counts");
        let other_path = key(&KeySpec::default(), "h", "/api/other", None, &[]);
        assert_ne!(question, other_path.query(&json, br#"{"query":"atp","k":5}"#));
        let alice = question.credentialed(CredentialHash(1));
        assert_ne!(alice, question.credentialed(CredentialHash(2)), "one user's query is not another's");
        assert_ne!(alice, question);
    }

    #[test]
    fn keys_print_and_parse_as_hex() {
        let key = CacheKey(0xabc);
        assert_eq!(CacheKey::from_hex(&key.to_string()), Some(key));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }
}
