//! Credentials and the cache key: answers to requests that carry credentials are kept per
//! user unless a route opts in to sharing them.
//!
//! A request *carries credentials* when it has an `Authorization` header or one of the
//! credential cookies (`[cache] credential_cookies` of `accel.toml`, plus the route's
//! `cache.credential_cookies`). By default its key includes a keyed hash of those credentials
//! ([`Credentials::Keyed`]): an entry it stores is found only by requests with the same
//! credentials, whatever the origin's `Cache-Control` says — one `public` on a per-user answer
//! must not leak it. A route with `cache.share_authenticated = true` keys such requests like
//! any other ([`Credentials::Shared`]); RFC 9111 §3.5 then decides whether the answer may be
//! shared (`public`, `s-maxage`, `must-revalidate`).
//!
//! The hash is HMAC-SHA256 under a [`CredentialKey`]: a per-process random key, or
//! `[cache] credential_key` when sidecars share entries through Redis (they must then agree on
//! the key to find each other's per-user entries). Without a configured key, per-user entries
//! stay in this process's memory and never reach the second level. The raw credential is
//! never stored, logged or sent anywhere: only the MAC enters the key, and the key is a hash
//! of that.

use std::fmt;

use http::header::{self, HeaderMap};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::key::cookie;

/// Field separator in the MAC's input (a byte no header value or cookie holds).
const SEP: &[u8] = &[0xff];

/// The key of the credential MAC. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct CredentialKey {
    key: hmac::Key,
    /// Configured (`cache.credential_key`), so every sidecar with the same configuration
    /// computes the same per-user keys; false: random, this process only.
    configured: bool,
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialKey").field("configured", &self.configured).finish_non_exhaustive()
    }
}

/// Shortest `cache.credential_key`, in bytes: 32, the MAC's own strength.
pub const MIN_CONFIGURED_LEN: usize = 32;

impl CredentialKey {
    /// A random key known to this process only: per-user entries cannot be found by another
    /// sidecar, so they are kept out of the second level.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        // The operating system's generator; should it fail, a key from the clock and the
        // process keeps per-user keys apart all the same (it only has to differ per user,
        // and the MAC still never reveals the credential).
        if SystemRandom::new().fill(&mut bytes).is_err() {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ u128::from(std::process::id());
            bytes[..16].copy_from_slice(&seed.to_le_bytes());
            bytes[16..].copy_from_slice(&fastrand::u128(..).to_le_bytes());
        }
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes), configured: false }
    }

    /// The configured key `secret` (at least [`MIN_CONFIGURED_LEN`] bytes: checked where the
    /// configuration is converted).
    pub fn configured(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret), configured: true }
    }

    /// True when the key was configured: per-user entries may go to the second level, where
    /// other sidecars with the same key find them.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// True when both keys compute the same per-user keys: both random (a running random key
    /// stays in use), or both configured with the same secret (compared through one MAC under
    /// each, so the secret itself is never held twice).
    pub fn same_as(&self, other: &Self) -> bool {
        const PROBE: &[u8] = b"accel credential key comparison";
        match (self.configured, other.configured) {
            (false, false) => true,
            (true, true) => hmac::sign(&self.key, PROBE).as_ref() == hmac::sign(&other.key, PROBE).as_ref(),
            _ => false,
        }
    }

    /// The keyed hash of the credentials of a request with `headers`: `Authorization` (every
    /// value, in order) and the listed cookies (`sidecar` then `route`), or `None` when it
    /// carries none of them.
    pub fn credentials(
        &self,
        headers: &HeaderMap,
        sidecar: &[Box<str>],
        route: &[Box<str>],
    ) -> Option<CredentialHash> {
        let has_cookie = has_cookie(headers, sidecar, route);
        if !has_cookie && !headers.contains_key(header::AUTHORIZATION) {
            return None;
        }
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"authorization");
        for value in headers.get_all(header::AUTHORIZATION) {
            context.update(SEP);
            context.update(&[1]);
            context.update(value.as_bytes());
        }
        context.update(SEP);
        if has_cookie {
            for name in sidecar.iter().chain(route) {
                context.update(SEP);
                context.update(name.as_bytes());
                if let Some(value) = cookie(headers, name) {
                    context.update(&[1]);
                    context.update(value.as_bytes());
                }
            }
        }
        let tag = context.sign();
        let mut first = [0u8; 16];
        first.copy_from_slice(&tag.as_ref()[..16]);
        Some(CredentialHash(u128::from_le_bytes(first)))
    }
}

/// True when `headers` carry one of the listed cookies.
fn has_cookie(headers: &HeaderMap, sidecar: &[Box<str>], route: &[Box<str>]) -> bool {
    headers.contains_key(header::COOKIE)
        && sidecar.iter().chain(route).any(|name| cookie(headers, name).is_some())
}

/// A keyed hash of one request's credentials (the first 128 bits of their HMAC-SHA256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialHash(pub u128);

/// How a request's credentials bear on the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization`, no credential cookie: the route's key as it is.
    None,
    /// Credentials on a route with `share_authenticated`: the route's key, and RFC 9111 §3.5
    /// decides whether an answer may be shared with them.
    Shared,
    /// Credentials: the key includes their hash, so only requests with the same credentials
    /// find the entry.
    Keyed(CredentialHash),
}

impl Credentials {
    /// Classifies a request with `headers` on a route that shares answers among authenticated
    /// requests (`share`) or not.
    pub fn of(
        key: &CredentialKey,
        headers: &HeaderMap,
        sidecar_cookies: &[Box<str>],
        route_cookies: &[Box<str>],
        share: bool,
    ) -> Self {
        if share {
            // Nothing to hash: only whether there are credentials matters.
            let carries = headers.contains_key(header::AUTHORIZATION)
                || has_cookie(headers, sidecar_cookies, route_cookies);
            return if carries { Self::Shared } else { Self::None };
        }
        key.credentials(headers, sidecar_cookies, route_cookies).map_or(Self::None, Self::Keyed)
    }

    /// True when the request carries credentials (what RFC 9111 §3.5 asks of the answer).
    pub fn present(self) -> bool {
        !matches!(self, Self::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn session() -> Vec<Box<str>> {
        vec!["session".into()]
    }

    #[test]
    fn only_authorization_and_listed_cookies_are_credentials() {
        let key = CredentialKey::random();
        let hash = |h: &[(&str, &str)]| key.credentials(&headers(h), &session(), &[]);
        assert_eq!(hash(&[]), None);
        assert_eq!(hash(&[("cookie", "theme=dark")]), None);
        assert!(hash(&[("authorization", "Bearer a")]).is_some());
        assert!(hash(&[("authorization", "")]).is_some(), "an empty Authorization is one too");
        assert!(hash(&[("cookie", "theme=dark; session=s1")]).is_some());
        assert!(key.credentials(&headers(&[("cookie", "sid=1")]), &[], &["sid".into()]).is_some());
    }

    #[test]
    fn different_credentials_hash_apart_and_other_cookies_do_not_count() {
        let key = CredentialKey::random();
        let hash = |h: &[(&str, &str)]| key.credentials(&headers(h), &session(), &[]).unwrap();
        let alice = hash(&[("authorization", "Bearer alice")]);
        assert_eq!(alice, hash(&[("authorization", "Bearer alice")]));
        assert_ne!(alice, hash(&[("authorization", "Bearer bob")]));
        assert_ne!(alice, hash(&[("authorization", "Bearer alice"), ("cookie", "session=s1")]));
        let s1 = hash(&[("cookie", "session=s1; theme=dark")]);
        assert_eq!(s1, hash(&[("cookie", "theme=light; session=s1")]));
        assert_ne!(s1, hash(&[("cookie", "session=s2")]));
    }

    #[test]
    fn random_keys_differ_and_configured_keys_agree() {
        let h = headers(&[("authorization", "Bearer alice")]);
        let random = |k: &CredentialKey| k.credentials(&h, &[], &[]);
        assert_ne!(random(&CredentialKey::random()), random(&CredentialKey::random()));
        let secret = [7u8; MIN_CONFIGURED_LEN];
        let (a, b) = (CredentialKey::configured(&secret), CredentialKey::configured(&secret));
        assert!(a.is_configured() && !CredentialKey::random().is_configured());
        assert_eq!(random(&a), random(&b));
        assert_ne!(random(&a), random(&CredentialKey::configured(&[8u8; MIN_CONFIGURED_LEN])));
    }

    #[test]
    fn keys_compare_by_what_they_compute() {
        let secret = [7u8; MIN_CONFIGURED_LEN];
        let configured = CredentialKey::configured(&secret);
        assert!(configured.same_as(&CredentialKey::configured(&secret)));
        assert!(!configured.same_as(&CredentialKey::configured(&[8u8; MIN_CONFIGURED_LEN])));
        assert!(!configured.same_as(&CredentialKey::random()));
        assert!(CredentialKey::random().same_as(&CredentialKey::random()), "the running one stays");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let text = format!("{:?}", CredentialKey::configured(b"a-secret-of-thirty-two-bytes-!!!"));
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_sharing_route_keeps_the_key_and_others_key_on_the_credentials() {
        let key = CredentialKey::random();
        let h = headers(&[("authorization", "Bearer alice")]);
        assert_eq!(Credentials::of(&key, &h, &[], &[], true), Credentials::Shared);
        assert!(matches!(Credentials::of(&key, &h, &[], &[], false), Credentials::Keyed(_)));
        assert_eq!(Credentials::of(&key, &HeaderMap::new(), &[], &[], false), Credentials::None);
        assert!(!Credentials::None.present() && Credentials::Shared.present());
    }
}
