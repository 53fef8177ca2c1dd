//! The key layout in Redis. Everything starts with the configured prefix, so several
//! deployments (or tests) share one Redis without meeting.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>c:<cache key>` | string | a second-level cache entry ([`super::entry`]) |
//! | `<prefix>lock:<cache key>` | string | cluster-wide coalescing lock, with expiry |
//! | `<prefix>rl:<route>:<limit>:<key>` | string | a cluster rate limit's GCRA state |
//! | `<prefix>{meta}:gens` | hash | purge generation per tag (`t:<tag>`) and of everything (`*`) |
//! | `<prefix>{meta}:seq` | hash | the cluster's purge sequence: `epoch`, `seq` |
//! | `<prefix>purge` | channel | purge messages |
//!
//! The two `{meta}` keys share a Redis Cluster hash slot, so the purge script may touch both.

/// Builds the tier's keys for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The generation field every entry records and prefix / all purges bump.
    pub const ALL_FIELD: &'static str = "*";

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
}
