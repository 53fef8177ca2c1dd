//! `[cache]` of `accel.toml`: what operators write and the validated [`CacheConfig`].

use std::path::Path;
use std::time::Duration;

use http::header::{self, HeaderName};
use serde::Deserialize;

use super::credential::{CredentialKey, MIN_CONFIGURED_LEN};
use super::rule::cookie_names;
use super::targeted::{CDN_CACHE_CONTROL, TargetedFields};
use crate::problem::Problems;
use crate::quantity::{parse_duration, parse_size};

/// `[cache]`: the response cache shared by every route that caches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    /// Memory for entries (bodies, headers, tags). Default `256MiB`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Response headers whose values tag the entry. Default `["Cache-Tag", "Surrogate-Key", "xkey"]`.
    #[serde(default)]
    pub tag_headers: Option<Vec<String>>,
    /// Response headers of unsafe requests naming tags to invalidate. Default
    /// `["Cache-Group-Invalidation"]`.
    #[serde(default)]
    pub invalidation_headers: Option<Vec<String>>,
    /// Remove tag and invalidation headers from answers to clients. Default true.
    #[serde(default)]
    pub strip_tag_headers: Option<bool>,
    /// Add `X-Cache-Status` (HIT, MISS, …) next to `Cache-Status`. Default false.
    #[serde(default)]
    pub x_cache_status: Option<bool>,
    /// Bearer token of `POST /cache/purge` on the admin listener. Default: `admin.token`.
    #[serde(default)]
    pub purge_token: Option<crate::secret::Secret>,
    /// Cookies that are credentials on every route, like `Authorization`: answers to requests
    /// carrying them are kept per user. Default none.
    #[serde(default)]
    pub credential_cookies: Vec<String>,
    /// Secret (at least 32 bytes) keying the hash of credentials in cache keys, the same on
    /// every sidecar sharing `[redis]`. Default: a random key per process, and per-user
    /// entries stay in memory. Set it from the environment (`ACCEL_CACHE__CREDENTIAL_KEY`).
    #[serde(default)]
    pub credential_key: Option<crate::secret::Secret>,
    /// How long an expired answer with `ETag` or `Last-Modified` stays after its stale
    /// windows, to be revalidated rather than fetched whole (a route's `cache.keep` wins).
    /// Default `1h`; `0s` turns it off.
    #[serde(default)]
    pub keep: Option<String>,
    /// Accel's own targeted cache-control field (RFC 9213), obeyed before
    /// `CDN-Cache-Control` and `Cache-Control`. Default `"Accel-Cache-Control"`; `""`: none.
    #[serde(default)]
    pub targeted_field: Option<String>,
    /// Obey `CDN-Cache-Control` (RFC 9213) before `Cache-Control`. Default true.
    #[serde(default)]
    pub cdn_cache_control: Option<bool>,
    /// Forward `targeted_field` to clients. Default false: it was addressed to Accel alone.
    #[serde(default)]
    pub forward_targeted_field: Option<bool>,
    /// Forward `CDN-Cache-Control` to clients. Default true, for CDNs downstream.
    #[serde(default)]
    pub forward_cdn_cache_control: Option<bool>,
}

/// The validated `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes.
    pub memory: u64,
    pub tag_headers: Vec<HeaderName>,
    pub invalidation_headers: Vec<HeaderName>,
    pub strip_tag_headers: bool,
    pub x_cache_status: bool,
    /// Bearer token of the purge endpoint (`cache.purge_token`, else `admin.token`); `None`
    /// disables it.
    pub purge_token: Option<crate::secret::Secret>,
    /// Cookie names that are credentials on every route (a route may add its own).
    pub credential_cookies: Vec<Box<str>>,
    /// The key of the credential hash in per-user cache keys (see [`super::credential`]).
    pub credential_key: CredentialKey,
    /// Default `keep` of routes that do not set `cache.keep` (see [`super::policy::Freshness`]).
    pub keep: Duration,
    /// The targeted cache-control fields obeyed and those removed (see [`super::targeted`]).
    pub targeted: TargetedFields,
    /// Cache time: the system clock (following Tokio's), or a manual one injected by tests.
    pub clock: super::Clock,
}

/// Default `cache.memory`.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Default `cache.keep`: one hour.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(3600);

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY,
            tag_headers: default_tag_headers(),
            invalidation_headers: vec![HeaderName::from_static("cache-group-invalidation")],
            strip_tag_headers: true,
            x_cache_status: false,
            purge_token: None,
            credential_cookies: Vec::new(),
            credential_key: CredentialKey::random(),
            keep: DEFAULT_KEEP,
            targeted: TargetedFields::default(),
            clock: super::Clock::system(),
        }
    }
}

fn default_tag_headers() -> Vec<HeaderName> {
    ["cache-tag", "surrogate-key", "xkey"].into_iter().map(HeaderName::from_static).collect()
}

/// Converts `[cache]`; `admin_token` is the purge token's fallback.
pub fn convert(
    file: CacheFile,
    admin_token: Option<&crate::secret::Secret>,
    p: &mut Problems,
    shown: &Path,
) -> CacheConfig {
    let CacheFile {
        memory,
        tag_headers,
        invalidation_headers,
        strip_tag_headers,
        x_cache_status,
        purge_token,
        credential_cookies,
        credential_key,
        keep,
        targeted_field,
        cdn_cache_control,
        forward_targeted_field,
        forward_cdn_cache_control,
    } = file;
    let defaults = CacheConfig::default();
    let memory = match memory {
        None => DEFAULT_MEMORY,
        Some(text) => match parse_size(&text) {
            Ok(0) => {
                p.at(shown, "cache.memory", "must be greater than zero");
                DEFAULT_MEMORY
            }
            Ok(bytes) => bytes,
            Err(e) => {
                p.at(shown, "cache.memory", e);
                DEFAULT_MEMORY
            }
        },
    };
    let mut names = |key: &str, list: Option<Vec<String>>, default: Vec<HeaderName>| match list {
        None => default,
        Some(list) => list
            .iter()
            .filter_map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| p.at(shown, key, format!("{name:?} is not a header name")))
                    .ok()
            })
            .collect(),
    };
    let tag_headers = names("cache.tag_headers", tag_headers, defaults.tag_headers);
    let invalidation_headers =
        names("cache.invalidation_headers", invalidation_headers, defaults.invalidation_headers);
    let credential_cookies = cookie_names(credential_cookies, "cache.credential_cookies", |key, message| {
        p.at(shown, key, message)
    });
    let credential_key = match credential_key {
        None => defaults.credential_key,
        Some(secret) if secret.expose().len() < MIN_CONFIGURED_LEN => {
            // The length only: the secret itself is never repeated.
            p.at(
                shown,
                "cache.credential_key",
                format!(
                    "is {} bytes long; use at least {MIN_CONFIGURED_LEN} random bytes (e.g. `openssl rand -hex 32`)",
                    secret.expose().len()
                ),
            );
            defaults.credential_key
        }
        Some(secret) => CredentialKey::configured(secret.expose().as_bytes()),
    };
    let keep = match keep.map(|text| parse_duration(&text)) {
        None => DEFAULT_KEEP,
        Some(Ok(keep)) => keep,
        Some(Err(e)) => {
            p.at(shown, "cache.keep", e);
            DEFAULT_KEEP
        }
    };
    let mut targeted = TargetedFields { targets: Vec::new(), removed: Vec::new() };
    let own = match targeted_field.as_deref() {
        None => Some(HeaderName::from_static("accel-cache-control")),
        Some("") => None,
        Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(own) if own == header::CACHE_CONTROL || own == CDN_CACHE_CONTROL => {
                p.at(shown, "cache.targeted_field", format!("{name:?} is not a field of Accel's own"));
                None
            }
            Ok(own) => Some(own),
            Err(_) => {
                p.at(shown, "cache.targeted_field", format!("{name:?} is not a header name"));
                None
            }
        },
    };
    let mut target = |name: HeaderName, forward: bool| {
        if !forward {
            targeted.removed.push(name.clone());
        }
        targeted.targets.push(name);
    };
    if let Some(own) = own {
        target(own, forward_targeted_field.unwrap_or(false));
    }
    if cdn_cache_control.unwrap_or(true) {
        target(CDN_CACHE_CONTROL.clone(), forward_cdn_cache_control.unwrap_or(true));
    }
    CacheConfig {
        memory,
        tag_headers,
        invalidation_headers,
        strip_tag_headers: strip_tag_headers.unwrap_or(true),
        x_cache_status: x_cache_status.unwrap_or(false),
        purge_token: purge_token.filter(|t| !t.is_empty()).or_else(|| admin_token.cloned()),
        credential_cookies,
        credential_key,
        keep,
        targeted,
        clock: defaults.clock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn defaults_and_problems() {
        let mut p = Problems::default();
        let config = convert(CacheFile::default(), Some(&"admin".into()), &mut p, Path::new("accel.toml"));
        assert!(p.is_empty());
        assert_eq!(config.memory, 256 << 20);
        assert_eq!(config.tag_headers.len(), 3);
        assert_eq!(config.purge_token.as_ref().map(Secret::expose), Some("admin"));
        let file = CacheFile {
            memory: Some("lots".into()),
            tag_headers: Some(vec!["bad header".into()]),
            purge_token: Some("p".into()),
            keep: Some("forever".into()),
            ..CacheFile::default()
        };
        let config = convert(file, Some(&"admin".into()), &mut p, Path::new("accel.toml"));
        assert_eq!(config.purge_token.as_ref().map(Secret::expose), Some("p"));
        let text = p.to_string();
        assert!(text.contains("key `cache.memory`") && text.contains("key `cache.tag_headers`"), "{text}");
        assert!(text.contains("key `cache.keep`"), "{text}");
        assert_eq!(config.keep, DEFAULT_KEEP);
        let file = CacheFile { keep: Some("10m".into()), ..CacheFile::default() };
        assert_eq!(convert(file, None, &mut Problems::default(), Path::new("a")).keep.as_secs(), 600);
    }

    #[test]
    fn targeted_fields_are_ours_then_cdn_cache_control_and_ours_is_removed() {
        let mut p = Problems::default();
        let config = convert(CacheFile::default(), None, &mut p, Path::new("accel.toml"));
        assert_eq!(config.targeted, TargetedFields::default());
        let file = CacheFile {
            targeted_field: Some("Edge-Control".into()),
            forward_targeted_field: Some(true),
            forward_cdn_cache_control: Some(false),
            ..CacheFile::default()
        };
        let config = convert(file, None, &mut p, Path::new("accel.toml"));
        assert!(p.is_empty(), "{p}");
        assert_eq!(
            config.targeted.targets,
            [HeaderName::from_static("edge-control"), CDN_CACHE_CONTROL.clone()]
        );
        assert_eq!(config.targeted.removed, std::slice::from_ref(&CDN_CACHE_CONTROL));
        let file = CacheFile {
            targeted_field: Some(String::new()),
            cdn_cache_control: Some(false),
            ..CacheFile::default()
        };
        assert!(convert(file, None, &mut p, Path::new("accel.toml")).targeted.targets.is_empty());
        let file = CacheFile { targeted_field: Some("Cache-Control".into()), ..CacheFile::default() };
        convert(file, None, &mut p, Path::new("accel.toml"));
        assert!(p.to_string().contains("key `cache.targeted_field`"), "{p}");
    }

    #[test]
    fn a_credential_key_is_configured_or_random_and_short_ones_are_refused() {
        let mut p = Problems::default();
        let config = convert(CacheFile::default(), None, &mut p, Path::new("accel.toml"));
        assert!(!config.credential_key.is_configured() && config.credential_cookies.is_empty());
        let file = CacheFile {
            credential_key: Some("k".repeat(MIN_CONFIGURED_LEN).into()),
            credential_cookies: vec!["session".into()],
            ..CacheFile::default()
        };
        let config = convert(file, None, &mut p, Path::new("accel.toml"));
        assert!(p.is_empty(), "{p}");
        assert!(config.credential_key.is_configured());
        assert_eq!(config.credential_cookies, vec![Box::<str>::from("session")]);
        let file = CacheFile {
            credential_key: Some("hunter2".into()),
            credential_cookies: vec!["bad cookie".into()],
            ..CacheFile::default()
        };
        convert(file, None, &mut p, Path::new("accel.toml"));
        let text = p.to_string();
        assert!(text.contains("key `cache.credential_key`") && !text.contains("hunter2"), "{text}");
        assert!(text.contains("key `cache.credential_cookies`"), "{text}");
    }
}
