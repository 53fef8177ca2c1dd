//! Purging: what an operator's purge request names, checked whole, then carried out on this
//! store and published to the other sidecars. It arrives through the admin listener's
//! `POST /cache/purge` (`crate::admin`), sent by `accel purge` (`crate::cli`).
//!
//! The request is a JSON body naming what to invalidate — any combination of:
//!
//! ```json
//! { "tags": ["lead:17", "pricing"], "urls": ["http://api.example.com/api/golden-leads/17"],
//!   "keys": ["<32 hex digits>"], "prefixes": ["/api/pricing/", "http://api.example.com/api/"],
//!   "all": false }
//! ```
//!
//! The answer counts what was invalidated: `{"purged": 3, "tags": 2, "urls": 1, "keys": 0,
//! "prefixes": 0, "all": 0}`. A URL purge reaches every variant of the URL (it is the URL's
//! implicit tag); a prefix purge walks the store and is meant for rare operator use.

use http::Uri;
use serde::{Deserialize, Serialize};

use super::Cache;
use super::key::CacheKey;
use super::metrics::PurgeKind;
use super::tag::Tag;

/// What to purge.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    pub tags: Vec<String>,
    /// Absolute URLs (`http://host/path?query`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Cache keys in hex.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Path prefixes (`/api/`, any host) or absolute URL prefixes (one host).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Everything.
    #[serde(default)]
    pub all: bool,
}

/// How many entries each part of a purge invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PurgeCounts {
    pub purged: u64,
    pub tags: u64,
    pub urls: u64,
    pub keys: u64,
    pub prefixes: u64,
    pub all: u64,
}

/// A purge request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("nothing to purge: give tags, urls, keys, prefixes or all")]
    Empty,
    #[error("{url:?} is not an absolute http(s) URL")]
    Url { url: String },
    #[error("{key:?} is not a cache key (32 hex digits)")]
    Key { key: String },
    #[error("{prefix:?} is not a path prefix (/...) or an absolute URL")]
    Prefix { prefix: String },
}

impl Cache {
    /// Carries out `request`; every part is checked before anything is purged.
    pub fn purge(&self, request: &PurgeRequest) -> Result<PurgeCounts, PurgeError> {
        let PurgeRequest { tags, urls, keys, prefixes, all } = request;
        if tags.is_empty() && urls.is_empty() && keys.is_empty() && prefixes.is_empty() && !all {
            return Err(PurgeError::Empty);
        }
        let url_tags = urls
            .iter()
            .map(|url| {
                let uri: Uri = url.parse().map_err(|_| PurgeError::Url { url: url.clone() })?;
                match (uri.scheme_str(), uri.host()) {
                    (Some("http" | "https"), Some(host)) => Ok(Tag::url(host, uri.path(), uri.query())),
                    _ => Err(PurgeError::Url { url: url.clone() }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = keys
            .iter()
            .map(|key| CacheKey::from_hex(key).ok_or_else(|| PurgeError::Key { key: key.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let prefixes = prefixes
            .iter()
            .map(|prefix| {
                if prefix.starts_with('/') {
                    return Ok((None, prefix.clone()));
                }
                let uri: Uri = prefix.parse().map_err(|_| PurgeError::Prefix { prefix: prefix.clone() })?;
                let host = uri.host().ok_or_else(|| PurgeError::Prefix { prefix: prefix.clone() })?;
                Ok((Some(host.to_ascii_lowercase()), uri.path().to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut counts = PurgeCounts::default();
        if !tags.is_empty() {
            let tags: Vec<Tag> = tags.iter().map(|t| Tag::new(t)).collect();
            counts.tags = self.store.purge_tags(&tags);
            self.metrics.purged(PurgeKind::Tag, counts.tags);
        }
        if !url_tags.is_empty() {
            counts.urls = self.store.purge_tags(&url_tags);
            self.metrics.purged(PurgeKind::Url, counts.urls);
        }
        for key in keys {
            counts.keys += self.store.purge_key(key);
        }
        if counts.keys > 0 {
            self.metrics.purged(PurgeKind::Key, counts.keys);
        }
        for (host, prefix) in &prefixes {
            counts.prefixes += self.store.purge_prefix(host.as_deref(), prefix);
        }
        if !prefixes.is_empty() {
            self.metrics.purged(PurgeKind::Prefix, counts.prefixes);
        }
        if *all {
            counts.all = self.store.purge_all();
            self.metrics.purged(PurgeKind::All, counts.all);
        }
        counts.purged = counts.tags + counts.urls + counts.keys + counts.prefixes + counts.all;
        self.publish_purge(request, &url_tags);
        Ok(counts)
    }
}

impl Cache {
    /// Sends a purge carried out here to the other sidecars (and the second level).
    fn publish_purge(&self, request: &PurgeRequest, url_tags: &[Tag]) {
        use crate::tier::Purge;
        let PurgeRequest { tags, urls: _, keys, prefixes, all } = request;
        if *all {
            self.publish(Purge::All);
            return;
        }
        let names: Vec<String> =
            tags.iter().cloned().chain(url_tags.iter().map(|t| t.name().to_owned())).collect();
        if !names.is_empty() {
            self.publish(Purge::Tags(names));
        }
        if !keys.is_empty() {
            self.publish(Purge::Keys(keys.iter().map(|k| k.to_ascii_lowercase()).collect()));
        }
        for prefix in prefixes {
            self.publish(Purge::Prefix(prefix.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_refused_before_anything_is_purged() {
        let cache = Cache::new(super::super::CacheConfig::default(), &crate::metrics::Metrics::new(&[1.0]));
        assert_eq!(cache.purge(&PurgeRequest::default()), Err(PurgeError::Empty));
        let bad_url =
            PurgeRequest { tags: vec!["a".into()], urls: vec!["/relative".into()], ..Default::default() };
        assert!(matches!(cache.purge(&bad_url), Err(PurgeError::Url { .. })));
        let bad_key = PurgeRequest { keys: vec!["xyz".into()], ..Default::default() };
        assert!(matches!(cache.purge(&bad_key), Err(PurgeError::Key { .. })));
        let ok = PurgeRequest { tags: vec!["a".into()], ..Default::default() };
        assert_eq!(cache.purge(&ok).unwrap().purged, 0);
    }
}
