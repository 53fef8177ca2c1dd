//! Invalidation by a successful unsafe request: its URL, its `Location` /
//! `Content-Location` on the same host, the route's `invalidate` tags and the tags in the
//! origin's invalidation header, here and (through the tier) on every sidecar.

use http::Uri;
use http::header::{self, HeaderMap};

use super::*;

use super::metrics::PurgeKind;

/// What a write invalidates when it succeeds.
#[derive(Debug)]
pub(super) struct Invalidation {
    /// The request's host, for `Location` on the same host.
    pub host: Box<str>,
    /// The request URL's tag and the route's rendered `invalidate` tags.
    pub tags: Vec<Tag>,
}

impl Cache {
    /// Invalidates what a successful unsafe request changed.
    pub(super) fn invalidate(&self, invalidation: Invalidation, response: &HeaderMap) {
        let Invalidation { host, mut tags } = invalidation;
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) =
                response.get(&name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Uri>().ok())
            else {
                continue;
            };
            let same_host = uri.host().is_none_or(|h| h.eq_ignore_ascii_case(&host));
            if same_host && uri.path().starts_with('/') {
                tags.push(Tag::url(&host, uri.path(), uri.query()));
            }
        }
        tags.extend(header_tags(response, &self.config.invalidation_headers));
        let purged = self.store.purge_tags(&tags);
        self.metrics.purged(PurgeKind::Invalidation, purged);
        self.publish(crate::tier::Purge::Tags(tags.iter().map(|t| t.name().to_owned()).collect()));
    }
}
