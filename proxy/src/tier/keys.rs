//! The key layout in Redis. Everything starts with the configured prefix, so several
//! deployments (or tests) share one Redis without meeting.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>c:<cache key>` | string | a second-level cache entry ([`super::entry`]) |
//! | `<prefix>lock:<cache key>` | string | cluster-wide coalescing lock, with expiry |
//! | `<prefix>rl:<route>:<limit>:<key>` | string | a cluster rate limit's GCRA state |
//! | `<prefix>{meta}:gens` | hash | purge generation per tag (`t:<tag>`), per path prefix (`p:<path>`, `p:<host><path>`) and of everything (`*`) |
//! | `<prefix>{meta}:seq` | hash | the cluster's purge sequence: `epoch`, `seq` |
//! | `<prefix>purge` | channel | purge messages |
//!
//! The two `{meta}` keys share a Redis Cluster hash slot, so the purge script may touch both.
//! Every other key is alone in its script (the GCRA bucket, the lock), so no script of the
//! tier ever spans two slots.
//!
//! # Path-prefix generations
//!
//! A purge by path prefix bumps one generation, of the prefix cut back to a path-segment
//! boundary ([`Keys::purge_prefix_field`]); each second-level entry records the generations of
//! the boundary prefixes of its own path, the first [`Keys::PREFIX_DEPTH`] of them, with and
//! without its host ([`Keys::entry_prefix_fields`]). Whatever path starts with the purged
//! prefix also starts with that boundary prefix (or with its first `PREFIX_DEPTH` segments), so
//! the entry records the bumped field and reads as purged; entries under other prefixes do not
//! record it and stay. The cut is the price of a bounded record: purging `/api/le` also drops
//! `/api/lists/...` from the second level (never from memory), and a purge deeper than the
//! depth drops its whole `PREFIX_DEPTH`-segment ancestor. A prefix of `/` is everything (`*`).

/// Builds the tier's keys for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The generation field every entry records and prefix / all purges bump.
    pub const ALL_FIELD: &'static str = "*";

    /// Path segments whose boundary prefixes an entry records (`/a/`, `/a/b/`, ...).
    pub const PREFIX_DEPTH: usize = 4;

    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A second-level cache entry.
    pub fn entry(&self, key: &str) -> String {
        format!("{}c:{key}", self.prefix)
    }

    /// The coalescing lock of a cache key.
    pub fn lock(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    /// A cluster rate limit bucket. Long client keys (API keys, header values) are hashed so
    /// a client cannot make Redis keys of any size.
    pub fn limit(&self, route: &str, limit: &str, key: &str) -> String {
        if key.len() <= 64 && !key.contains(char::is_whitespace) {
            format!("{}rl:{route}:{limit}:{key}", self.prefix)
        } else {
            format!("{}rl:{route}:{limit}:#{:016x}", self.prefix, fnv1a(key.as_bytes()))
        }
    }

    /// The generations hash.
    pub fn generations(&self) -> String {
        format!("{}{{meta}}:gens", self.prefix)
    }

    /// The purge sequence hash.
    pub fn sequence(&self) -> String {
        format!("{}{{meta}}:seq", self.prefix)
    }

    /// The purge channel.
    pub fn channel(&self) -> String {
        format!("{}purge", self.prefix)
    }

    /// The generation field of a tag.
    pub fn tag_field(tag: &str) -> String {
        format!("t:{tag}")
    }

    /// The generation field a purge of `prefix` bumps: a path (`/api/leads/`) or an absolute
    /// URL (`https://host/api/leads/`, host-qualified). The prefix is cut back to its last `/`
    /// and to [`Keys::PREFIX_DEPTH`] segments; a path prefix that cuts back to `/`, and a URL
    /// that does not parse, is everything ([`Keys::ALL_FIELD`]).
    pub fn purge_prefix_field(prefix: &str) -> String {
        let (host, path) = if prefix.starts_with('/') {
            (None, prefix.to_owned())
        } else {
            match prefix.parse::<http::Uri>() {
                // `Uri::path` is `/` for `https://host`.
                Ok(uri) => match uri.host() {
                    Some(host) => (Some(host.to_ascii_lowercase()), uri.path().to_owned()),
                    None => return Self::ALL_FIELD.to_owned(),
                },
                Err(_) => return Self::ALL_FIELD.to_owned(),
            }
        };
        let path = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let boundary = boundaries(path).last().copied().unwrap_or("/");
        match host {
            Some(host) => format!("p:{host}{boundary}"),
            None if boundary == "/" => Self::ALL_FIELD.to_owned(),
            None => format!("p:{boundary}"),
        }
    }

    /// The prefix generation fields an entry stored for `host` and `path` records: every
    /// boundary prefix of the path (up to [`Keys::PREFIX_DEPTH`] segments) bare, then with the
    /// host (where `/` too counts: a purge of `https://host/` is that host's everything).
    pub fn entry_prefix_fields(host: &str, path: &str) -> Vec<String> {
        let host = host.to_ascii_lowercase();
        let prefixes = boundaries(path);
        let bare = prefixes.iter().filter(|p| **p != "/").map(|p| format!("p:{p}"));
        let hosted = prefixes.iter().map(|p| format!("p:{host}{p}"));
        bare.chain(hosted).collect()
    }
}

/// The prefixes of `path` that end at a segment boundary (`/`, `/a/`, `/a/b/`), at most
/// [`Keys::PREFIX_DEPTH`] segments deep; empty for a path not starting with `/`.
fn boundaries(path: &str) -> Vec<&str> {
    if !path.starts_with('/') {
        return Vec::new();
    }
    path.match_indices('/').map(|(i, _)| &path[..=i]).take(Keys::PREFIX_DEPTH + 1).collect()
}

/// FNV-1a, 64 bits: stable across processes and versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_limits_scoped_by_route_and_limit() {
        let keys = Keys::new("app:");
        assert_eq!(keys.entry("ab12"), "app:c:ab12");
        assert_eq!(keys.limit("pricing", "per-client", "10.0.0.1"), "app:rl:pricing:per-client:10.0.0.1");
        assert_ne!(keys.limit("a", "x", "k"), keys.limit("b", "x", "k"));
        assert_ne!(keys.limit("a", "x", "k"), keys.limit("a", "y", "k"));
        let long = "k".repeat(500);
        assert!(keys.limit("a", "x", &long).len() < 64);
        assert_eq!(keys.generations(), "app:{meta}:gens");
    }

    #[test]
    fn purge_prefixes_cut_back_to_a_segment_boundary_and_a_bounded_depth() {
        assert_eq!(Keys::purge_prefix_field("/api/leads/"), "p:/api/leads/");
        assert_eq!(Keys::purge_prefix_field("/api/leads/1"), "p:/api/leads/");
        assert_eq!(Keys::purge_prefix_field("/api/le"), "p:/api/");
        assert_eq!(Keys::purge_prefix_field("/a/b/c/d/e/f"), "p:/a/b/c/d/");
        assert_eq!(Keys::purge_prefix_field("/api"), Keys::ALL_FIELD);
        assert_eq!(Keys::purge_prefix_field("/"), Keys::ALL_FIELD);
        assert_eq!(Keys::purge_prefix_field("https://API.example.com/v1/x"), "p:api.example.com/v1/");
        assert_eq!(Keys::purge_prefix_field("https://api.example.com"), "p:api.example.com/");
        assert_eq!(Keys::purge_prefix_field("::not a url"), Keys::ALL_FIELD);
    }

    #[test]
    fn entries_record_their_path_boundaries_bare_and_with_their_host() {
        assert_eq!(
            Keys::entry_prefix_fields("H", "/api/leads/1"),
            ["p:/api/", "p:/api/leads/", "p:h/", "p:h/api/", "p:h/api/leads/"]
        );
        assert_eq!(Keys::entry_prefix_fields("h", "/a/b/c/d/e/f/g").len(), 4 + 5);
        assert_eq!(Keys::entry_prefix_fields("h", "/"), ["p:h/"]);
    }

    /// The rule everything rests on: an entry whose path starts with a purged prefix always
    /// records the field that purge bumps (or the purge bumps everything); and an entry under
    /// another first segment never does.
    #[test]
    fn a_purge_always_reaches_the_entries_under_its_prefix_and_only_nearby_ones() {
        let paths = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/bc/d", "/a/b/c/d/e/f", "/ab/c", "/b/a/"];
        let mut prefixes: Vec<String> = Vec::new();
        for path in paths {
            for end in 1..=path.len() {
                prefixes.push(path[..end].to_owned());
            }
        }
        for prefix in &prefixes {
            let field = Keys::purge_prefix_field(prefix);
            let url = format!("https://h.test{prefix}");
            let hosted = Keys::purge_prefix_field(&url);
            for path in paths {
                let recorded = Keys::entry_prefix_fields("h.test", path);
                if path.starts_with(prefix.as_str()) {
                    assert!(field == Keys::ALL_FIELD || recorded.contains(&field), "{prefix} misses {path}");
                    assert!(recorded.contains(&hosted), "{url} misses {path}");
                    assert!(!Keys::entry_prefix_fields("other.test", path).contains(&hosted));
                }
            }
        }
        let b = Keys::entry_prefix_fields("h", "/b/1");
        assert!(!b.contains(&Keys::purge_prefix_field("/a/")));
        assert!(!b.contains(&Keys::purge_prefix_field("/a/b/c")));
    }
}
