//! The cache's side of the shared Redis tier ([`crate::tier`], `[redis]` in `accel.toml`):
//!
//! - on a memory miss, the leader (or a request that does not coalesce) looks in the second
//!   level before the origin; a fresh hit fills memory and answers the followers too, a stale
//!   one becomes the entry to revalidate or fall back on;
//! - a filled entry is written to the second level in the background;
//! - purges (admin API, invalidations) are published to the other sidecars, and theirs are
//!   applied to this store ([`LocalPurge`]).
//!
//! Answers that vary (`Vary`) are stored under their variant's key ([`CacheKey::variant`],
//! the same as in memory), and the primary key holds a marker: an entry with the answer's
//! `Vary` and no body, never served, that names the headers choosing the variant. A lookup
//! that finds a marker reads the request's variant next (two reads), so variants never
//! overwrite each other. A `304` that refreshes an entry is written back too. Entries leave
//! Redis at the end of their stale windows (the keep window is memory's only).
//! Second-level entries do not record whether they may answer requests with
//! `Authorization`, so on routes with `share_authenticated` such requests use them only when
//! the rule keys on the credential.
//!
//! Per-user entries (keyed on a hash of the request's credentials, [`super::credential`]) go
//! to the second level only when `[cache] credential_key` is configured: every sidecar with
//! that key computes the same per-user keys. With the default per-process random key no
//! other sidecar could find them, so they stay in this process's memory (and no per-user
//! answer is written to Redis).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::Uri;

use super::credential::Credentials;
use super::entry::{CacheEntry, Staleness};
use super::key::CacheKey;
use super::policy::{Freshness, vary_names};
use super::status::CacheStatus;
use super::tag::Tag;
use super::{Asked, Cache, Coalesced, Flight, Handoff, Mode, Pass, Stale, collect};
use crate::tier::metrics::LockResult;
use crate::tier::{
    ClusterLock, L2Lookup, LocalPurge, LockOutcome, Purge, PurgePoint, RedisTier, SharedEntry,
};

impl Cache {
    /// Shares this cache through `tier`: second-level lookups and stores, and purges both
    /// ways. Only the first call counts.
    pub fn share(self: &Arc<Self>, tier: Arc<RedisTier>) {
        if self.shared.set(tier.clone()).is_ok() {
            if !self.config.credential_key.is_configured() {
                tracing::info!(
                    "answers to requests with credentials stay in memory: set cache.credential_key to share them through redis"
                );
            }
            tier.attach(self.clone());
        }
    }

    /// Writes a freshly filled entry to the second level, in the background, then releases
    /// the cluster lock its request holds (at once when the entry is not shared). `since` is
    /// the tier's purge point taken before the fetch: after a purge since then the entry is
    /// not written (it may be the purged answer, and would carry the purge's generations).
    pub(super) fn share_entry(
        &self,
        key: CacheKey,
        variant: CacheKey,
        entry: &CacheEntry,
        cluster_lock: Option<ClusterLock>,
        since: PurgePoint,
    ) {
        let Some(tier) = self.shared.get() else { return };
        if entry.freshness.lifetime().is_zero() {
            return;
        }
        let (tier, shared) = (tier.clone(), to_shared(entry));
        tokio::spawn(async move {
            if variant == key {
                tier.l2_put(&key.to_string(), &shared, &since).await;
            } else {
                // The variant before the marker: whoever reads the marker finds the variant.
                let marker = vary_marker(&shared);
                if tier.l2_put(&variant.to_string(), &shared, &since).await {
                    tier.l2_put(&key.to_string(), &marker, &since).await;
                }
            }
            if let Some(lock) = cluster_lock {
                lock.release().await;
            }
        });
    }

    /// True when an entry for a request with `credentials` may be written to (and read from)
    /// the second level: always, except per-user entries under a per-process key.
    pub(super) fn may_leave_memory(&self, credentials: Credentials) -> bool {
        match credentials {
            Credentials::None | Credentials::Shared => true,
            Credentials::Keyed(_) => self.config.credential_key.is_configured(),
        }
    }

    /// Sends a purge already applied to this store to the other sidecars and the second level.
    pub(super) fn publish(&self, purge: Purge) {
        if let Some(tier) = self.shared.get() {
            let tier = tier.clone();
            tokio::spawn(async move { tier.purge(purge).await });
        }
    }
}

impl LocalPurge for Cache {
    fn purge_local(&self, purge: &Purge) -> u64 {
        match purge {
            Purge::Tags(tags) => {
                let tags: Vec<Tag> = tags.iter().map(|t| Tag::new(t)).collect();
                self.store.purge_tags(&tags)
            }
            Purge::Keys(keys) => {
                keys.iter().filter_map(|k| CacheKey::from_hex(k)).map(|k| self.store.purge_key(k)).sum()
            }
            Purge::Prefix(prefix) if prefix.starts_with('/') => self.store.purge_prefix(None, prefix),
            Purge::Prefix(url) => match url.parse::<Uri>() {
                Ok(uri) => self.store.purge_prefix(uri.host(), uri.path()),
                Err(_) => self.store.purge_all(),
            },
            Purge::All => self.store.purge_all(),
        }
    }
}

impl Pass {
    /// The second-level lookup of a miss, before it goes upstream: the cluster's answer, if
    /// another sidecar has it. A released follower does not look again (its leader did).
    ///
    /// With `redis.l2.lock`, a second-level miss of this sidecar's leader (or of a request
    /// that does not coalesce here) takes the key's cluster-wide lock: the holder goes
    /// upstream and keeps the lock until its answer is stored in the second level; a request
    /// that finds the lock taken waits for that answer (at most the lock's lifetime and the
    /// route's `follower_timeout`), and goes upstream itself when it does not come. Redis
    /// unavailable: no lock, upstream as without it.
    pub async fn second_level(mut self) -> Coalesced {
        let Some(tier) = self.cache.shared.get().cloned() else { return Coalesced::Forward(self) };
        let Mode::Fill(fill) = &mut self.mode else { return Coalesced::Forward(self) };
        let Some(rule) = fill.rule.clone() else { return Coalesced::Forward(self) };
        if !fill.store
            || fill.stale.entry().is_some()
            || fill.bypass.is_some()
            || matches!(fill.flight, Flight::Released)
        {
            return Coalesced::Forward(self);
        }
        let usable = match fill.credentials {
            Credentials::None => true,
            Credentials::Shared => rule.key.includes_credentials(),
            Credentials::Keyed(_) => self.cache.may_leave_memory(fill.credentials),
        };
        if !usable {
            return Coalesced::Forward(self);
        }
        let key = fill.key.to_string();
        let shared = match tier.l2_get(&key).await {
            L2Lookup::Hit(shared) => *shared,
            L2Lookup::Unavailable => {
                // Fail-open: no lock, upstream as without the tier.
                if fill.asked != Asked::Head && tier.l2().is_some_and(|l2| l2.lock_ttl().is_some()) {
                    tier.metrics().lock(LockResult::Unavailable);
                }
                return Coalesced::Forward(self);
            }
            L2Lookup::Miss if fill.asked == Asked::Head => return Coalesced::Forward(self),
            L2Lookup::Miss => match tier.l2_lock(&key).await {
                // Look again under the lock: the previous holder may have stored the entry
                // and released the lock between the miss and the lock.
                LockOutcome::Leader(lock) => match tier.l2_get(&key).await {
                    L2Lookup::Hit(shared) => {
                        lock.release().await;
                        *shared
                    }
                    L2Lookup::Miss | L2Lookup::Unavailable => {
                        fill.cluster_lock = Some(lock);
                        return Coalesced::Forward(self);
                    }
                },
                LockOutcome::Alone => return Coalesced::Forward(self),
                LockOutcome::Follower => {
                    match tier.l2_wait(&key, self.route.settings.coalesce.follower_timeout).await {
                        Some(shared) => shared,
                        None => return Coalesced::Forward(self),
                    }
                }
            },
        };
        let mut variant = fill.key;
        let mut entry = from_shared(shared);
        if vary_names(&entry.headers).next().is_some() {
            // A marker: the request's variant is stored under its own key.
            variant = collect::key_for(&entry, fill.key, &fill.request);
            let L2Lookup::Hit(shared) = tier.l2_get(&variant.to_string()).await else {
                return Coalesced::Forward(self);
            };
            entry = from_shared(*shared);
            if collect::key_for(&entry, fill.key, &fill.request) != variant {
                return Coalesced::Forward(self);
            }
        }
        entry.freshness.keep = self.cache.keep_for(&rule, &entry.headers);
        let entry = Arc::new(entry);
        let now = self.cache.clock.now();
        let Staleness::Fresh { remaining } = entry.staleness(now) else {
            // Stale: revalidate it with the origin, or fall back on it if the origin fails.
            fill.stale = Stale::Kept(entry);
            return Coalesced::Forward(self);
        };
        self.cache.store.insert(fill.key, &fill.request, entry.clone(), fill.seq);
        if let Some(leader) = fill.flight.take_leader() {
            leader.publish(Arc::new(Handoff { entry: entry.clone(), variant }));
        }
        let status = CacheStatus::Hit { ttl: remaining.as_secs() as i64 };
        let answer = self.cache.answer(&self.route, &entry, &fill.method(), &fill.request, now, status);
        self.route.metrics.lookup(answer.result);
        Coalesced::Answer(answer)
    }
}

/// The shared form of an entry. The upstream's `Age` is folded into `stored_at`, so that the
/// age computed from it is the same everywhere.
fn to_shared(entry: &CacheEntry) -> SharedEntry {
    let stored_at = UNIX_EPOCH + Duration::from_millis(entry.stored_at);
    SharedEntry {
        status: entry.status,
        headers: entry.headers.clone(),
        body: entry.body.clone(),
        stored_at: stored_at.checked_sub(entry.initial_age).unwrap_or(stored_at),
        ttl: entry.freshness.ttl,
        stale_while_revalidate: entry.freshness.stale_while_revalidate,
        stale_if_error: entry.freshness.stale_if_error,
        tags: entry.tags.iter().map(|t| t.name().to_owned()).collect(),
        host: entry.host.to_string(),
        path: entry.path.to_string(),
    }
}

/// The primary key's marker of a varying answer: its `Vary` and lifetime, no body.
fn vary_marker(shared: &SharedEntry) -> SharedEntry {
    let mut headers = http::HeaderMap::new();
    for value in shared.headers.get_all(http::header::VARY) {
        headers.append(http::header::VARY, value.clone());
    }
    SharedEntry { headers, body: bytes::Bytes::new(), ..shared.clone() }
}

/// An entry from the shared form.
fn from_shared(shared: SharedEntry) -> CacheEntry {
    let SharedEntry {
        status,
        headers,
        body,
        stored_at,
        ttl,
        stale_while_revalidate,
        stale_if_error,
        tags,
        host,
        path,
    } = shared;
    CacheEntry {
        status,
        headers,
        body,
        stored_at: stored_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        initial_age: Duration::ZERO,
        freshness: Freshness {
            ttl,
            stale_while_revalidate,
            stale_if_error,
            // Set by the reader: the keep window is this sidecar's rule's.
            keep: Duration::ZERO,
            shared_with_credentials: false,
        },
        tags: tags.iter().map(|t| Tag::new(t)).collect(),
        host: host.into(),
        path: path.into(),
        variants: Default::default(),
        hit: Default::default(),
    }
}
