//! The in-memory store: a moka cache bounded by weight (bytes), with a tag index whose
//! purges are O(1).
//!
//! Every insert takes a sequence number. Purging a tag records the current sequence number
//! as the tag's *purge mark*: an entry carrying the tag with an older number is gone from
//! then on — a lookup that meets it drops it — and a background sweep reclaims the memory of
//! the rest. Purging 100,000 entries of one tag therefore costs one map update, not 100,000
//! removals while requests wait. While no purge has happened since an entry was stored, a
//! lookup checks no marks at all.
//!
//! `Vary`: the primary key then holds a marker naming the varying headers, and each variant
//! is stored under [`CacheKey::variant`].
//!
//! Entries leave at the end of their keep window (after the stale windows; zero for answers
//! without validators), or earlier when memory is needed (moka's TinyLFU admission and LRU
//! eviction).
//!
//! Memory pressure goes to kept entries first. moka has no eviction priority, so the store
//! watches its evictions: when one removes an entry for size while entries past their stale
//! windows (kept only to be revalidated) are held, the next insert schedules one sweep that
//! drops every such entry (at most one sweep a second). The memory they held then goes to
//! answers that can still be served, before LRU eviction reaches another of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::HeaderName;
use moka::Expiry;
use moka::notification::RemovalCause;

use super::clock::{Clock, Millis};
use super::entry::{CacheEntry, Staleness};
use super::key::CacheKey;
use super::metrics::{CacheMetrics, EvictionCause};
use super::policy::vary_names;
use super::tag::Tag;

/// A sequence number taken before an answer is fetched: a purge after it invalidates the
/// answer even if it is stored later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(u64);

#[derive(Debug, Clone)]
enum Slot {
    Entry { entry: Arc<CacheEntry>, seq: Seq },
    Vary { names: Arc<[HeaderName]>, lifetime: Duration },
}

impl Slot {
    fn lifetime(&self) -> Duration {
        match self {
            Self::Entry { entry, .. } => entry.freshness.retention().saturating_sub(entry.initial_age),
            Self::Vary { lifetime, .. } => *lifetime,
        }
    }

    fn weight(&self) -> u32 {
        match self {
            Self::Entry { entry, .. } => u32::try_from(entry.weight()).unwrap_or(u32::MAX),
            Self::Vary { names, .. } => 64 + names.iter().map(|n| n.as_str().len() as u32 + 16).sum::<u32>(),
        }
    }
}

struct SlotExpiry;

impl Expiry<CacheKey, Slot> for SlotExpiry {
    fn expire_after_create(&self, _key: &CacheKey, slot: &Slot, _now: Instant) -> Option<Duration> {
        Some(slot.lifetime())
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        slot: &Slot,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.lifetime())
    }
}

/// Purge marks and live counts per tag.
#[derive(Debug, Default)]
struct Marks {
    /// The last sequence number handed out.
    seq: AtomicU64,
    /// The sequence number of the latest purge (0: none yet).
    last_purge: AtomicU64,
    tags: RwLock<HashMap<u64, TagState>>,
}

/// Tag marks kept before those of tags without entries are dropped.
const PRUNE_AT: usize = 1 << 17;

#[derive(Debug, Default, Clone, Copy)]
struct TagState {
    /// Entries with this tag and a sequence number below are gone.
    purged_at: u64,
    /// Entries stored with this tag since its last purge and not yet removed.
    live: u64,
}

impl Marks {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// True when a purge after `seq` reached one of `tags`.
    fn is_purged(&self, tags: &[Tag], seq: Seq) -> bool {
        if seq.0 > self.last_purge.load(Ordering::Acquire) {
            return false;
        }
        let marks = self.tags.read().unwrap_or_else(|e| e.into_inner());
        tags.iter().any(|t| marks.get(&t.hash()).is_some_and(|m| m.purged_at > seq.0))
    }

    fn attach(&self, tags: &[Tag]) {
        let mut marks = self.tags.write().unwrap_or_else(|e| e.into_inner());
        for tag in tags {
            marks.entry(tag.hash()).or_default().live += 1;
        }
    }

    fn detach(&self, tags: &[Tag], seq: Seq) {
        let mut marks = self.tags.write().unwrap_or_else(|e| e.into_inner());
        for tag in tags {
            if let Some(state) = marks.get_mut(&tag.hash())
                && state.purged_at <= seq.0
            {
                state.live = state.live.saturating_sub(1);
                if state.live == 0 && state.purged_at == 0 {
                    marks.remove(&tag.hash());
                }
            }
        }
    }

    /// Marks `tags` purged; returns how many live entries they held.
    fn purge(&self, tags: &[Tag]) -> u64 {
        let mark = self.next();
        let mut purged = 0;
        {
            let mut marks = self.tags.write().unwrap_or_else(|e| e.into_inner());
            if marks.len() >= PRUNE_AT {
                // Marks of tags without live entries only matter while a sweep of their
                // purged entries or a fetch started before the purge is pending, both short.
                marks.retain(|_, state| state.live > 0);
            }
            for tag in tags {
                // A mark even for a tag with no entries: a fetch in flight may store one.
                let state = marks.entry(tag.hash()).or_default();
                purged += state.live;
                state.live = 0;
                state.purged_at = mark;
            }
        }
        self.last_purge.fetch_max(mark, Ordering::AcqRel);
        purged
    }
}

/// The cache's entries.
pub struct CacheStore {
    entries: moka::sync::Cache<CacheKey, Slot>,
    marks: Arc<Marks>,
    metrics: CacheMetrics,
    pressure: Arc<Pressure>,
    clock: Clock,
}

/// What the store knows of memory pressure (see the module doc).
#[derive(Debug, Default)]
struct Pressure {
    /// Entries held with a keep window.
    keepers: AtomicI64,
    /// An entry left for size since the last sweep.
    evicted: AtomicBool,
    /// Cache time of the last sweep of kept entries.
    swept_at: AtomicU64,
}

/// Sweeps of kept entries are at least this far apart (milliseconds of cache time).
const SWEEP_EVERY: u64 = 1_000;

/// True when `entry` is past its stale windows at `now`: kept only to be revalidated.
fn kept_only(entry: &CacheEntry, now: Millis) -> bool {
    matches!(entry.staleness(now), Staleness::Stale { by } if entry.freshness.in_keep(by))
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore").field("entries", &self.entries.entry_count()).finish_non_exhaustive()
    }
}

impl CacheStore {
    /// A store holding at most `memory` bytes of entries; `clock` tells kept entries (see
    /// the module doc) from usable ones.
    pub fn new(memory: u64, metrics: CacheMetrics, clock: Clock) -> Self {
        let marks = Arc::new(Marks::default());
        let pressure = Arc::new(Pressure::default());
        let listener = {
            let marks = marks.clone();
            let metrics = metrics.clone();
            let pressure = pressure.clone();
            move |_key: Arc<CacheKey>, slot: Slot, cause: RemovalCause| {
                if let Slot::Entry { entry, seq } = &slot {
                    marks.detach(&entry.tags, *seq);
                    metrics.entries.dec();
                    metrics.bytes.dec_by(i64::from(slot.weight()));
                    if !entry.freshness.keep.is_zero() {
                        pressure.keepers.fetch_sub(1, Ordering::Relaxed);
                    }
                    match cause {
                        RemovalCause::Expired => metrics.evicted(EvictionCause::Expired),
                        RemovalCause::Size => {
                            pressure.evicted.store(true, Ordering::Relaxed);
                            metrics.evicted(EvictionCause::Size);
                        }
                        RemovalCause::Explicit | RemovalCause::Replaced => {}
                    }
                }
            }
        };
        let entries = moka::sync::Cache::builder()
            .max_capacity(memory)
            .weigher(|_key: &CacheKey, slot: &Slot| slot.weight())
            .expire_after(SlotExpiry)
            .eviction_listener(listener)
            .support_invalidation_closures()
            .build();
        Self { entries, marks, metrics, pressure, clock }
    }

    /// A sequence number for an answer about to be fetched; pass it to [`CacheStore::insert`].
    pub fn reserve(&self) -> Seq {
        Seq(self.marks.next())
    }

    /// The usable entry for `key` and a request with `request` headers (they pick the
    /// variant when the answer varies), or `None`.
    pub fn get(&self, key: CacheKey, request: &HeaderMap) -> Option<Arc<CacheEntry>> {
        match self.entries.get(&key)? {
            Slot::Entry { entry, seq } => self.live(key, entry, seq),
            Slot::Vary { names, .. } => {
                let variant = key.variant(&names, request);
                match self.entries.get(&variant)? {
                    Slot::Entry { entry, seq } => self.live(variant, entry, seq),
                    Slot::Vary { .. } => None,
                }
            }
        }
    }

    fn live(&self, key: CacheKey, entry: Arc<CacheEntry>, seq: Seq) -> Option<Arc<CacheEntry>> {
        if self.marks.is_purged(&entry.tags, seq) {
            self.entries.invalidate(&key);
            return None;
        }
        Some(entry)
    }

    /// Stores `entry` under `key` for requests like `request` (its headers pick the variant
    /// when the entry has `Vary`). `seq` comes from [`CacheStore::reserve`] before the fetch:
    /// an entry a purge has already reached is not stored.
    pub fn insert(&self, key: CacheKey, request: &HeaderMap, entry: Arc<CacheEntry>, seq: Seq) {
        if self.marks.is_purged(&entry.tags, seq) {
            return;
        }
        let names: Vec<HeaderName> =
            vary_names(&entry.headers).filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        let key = if names.is_empty() {
            key
        } else {
            let names: Arc<[HeaderName]> = names.into();
            let variant = key.variant(&names, request);
            let lifetime = entry.freshness.retention();
            self.entries.insert(key, Slot::Vary { names, lifetime });
            variant
        };
        self.marks.attach(&entry.tags);
        if !entry.freshness.keep.is_zero() {
            self.pressure.keepers.fetch_add(1, Ordering::Relaxed);
        }
        let slot = Slot::Entry { entry, seq };
        self.metrics.entries.inc();
        self.metrics.bytes.inc_by(i64::from(slot.weight()));
        self.metrics.stores.inc();
        self.entries.insert(key, slot);
        self.relieve();
    }

    /// After an eviction for size, drops the entries kept only to be revalidated (at most
    /// once every [`SWEEP_EVERY`]), so that usable entries are not the next to go.
    fn relieve(&self) {
        if self.pressure.keepers.load(Ordering::Relaxed) <= 0
            || !self.pressure.evicted.swap(false, Ordering::Relaxed)
        {
            return;
        }
        let now = self.clock.now();
        let last = self.pressure.swept_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY
            || self
                .pressure
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let sweep = self.entries.invalidate_entries_if(move |_, slot| match slot {
            Slot::Entry { entry, .. } => kept_only(entry, now),
            Slot::Vary { .. } => false,
        });
        if let Err(e) = sweep {
            tracing::warn!(error = %e, "cannot schedule the sweep of kept entries");
        }
    }

    /// Invalidates every entry carrying one of `tags`; returns how many there were. O(number
    /// of tags): memory is reclaimed in the background.
    pub fn purge_tags(&self, tags: &[Tag]) -> u64 {
        if tags.is_empty() {
            return 0;
        }
        let purged = self.marks.purge(tags);
        if purged > 0 {
            let marks = self.marks.clone();
            let sweep = self.entries.invalidate_entries_if(move |_, slot| match slot {
                Slot::Entry { entry, seq } => marks.is_purged(&entry.tags, *seq),
                Slot::Vary { .. } => false,
            });
            if let Err(e) = sweep {
                tracing::warn!(error = %e, "cannot schedule the sweep of purged entries");
            }
        }
        purged
    }

    /// Removes the entry stored under `key` (a primary key removes its variants' marker,
    /// which makes them unreachable); returns 1 if there was one.
    pub fn purge_key(&self, key: CacheKey) -> u64 {
        u64::from(self.entries.remove(&key).is_some())
    }

    /// Removes every entry whose path starts with `prefix` (on `host` when given); returns
    /// how many. Walks the whole store: meant for operators, not for the request path.
    pub fn purge_prefix(&self, host: Option<&str>, prefix: &str) -> u64 {
        let doomed: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .filter(|(_, slot)| match slot {
                Slot::Entry { entry, .. } => {
                    entry.path.starts_with(prefix) && host.is_none_or(|h| entry.host.eq_ignore_ascii_case(h))
                }
                Slot::Vary { .. } => false,
            })
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.entries.invalidate(&**key);
        }
        doomed.len() as u64
    }

    /// Removes everything; returns how many entries there were.
    pub fn purge_all(&self) -> u64 {
        let count = self.metrics.entries.get().max(0) as u64;
        self.entries.invalidate_all();
        count
    }

    /// Runs moka's pending maintenance (evictions, listener calls, sweeps) now.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    /// Entries in the store (approximate until pending tasks have run).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::tests::entry;
    use crate::metrics::Metrics;

    fn store() -> CacheStore {
        CacheStore::new(64 << 20, CacheMetrics::new(&Metrics::new(&[1.0])), Clock::manual(0))
    }

    fn put(store: &CacheStore, key: u128, e: CacheEntry) {
        let seq = store.reserve();
        store.insert(CacheKey(key), &HeaderMap::new(), Arc::new(e), seq);
    }

    #[test]
    fn a_stored_entry_is_found_by_its_key() {
        let s = store();
        put(&s, 1, entry("one", 0, 60));
        assert_eq!(s.get(CacheKey(1), &HeaderMap::new()).unwrap().body, "one");
        assert!(s.get(CacheKey(2), &HeaderMap::new()).is_none());
    }

    #[test]
    fn purging_a_tag_removes_its_entries_and_counts_them() {
        let s = store();
        let mut other = entry("other", 0, 60);
        other.tags = vec![Tag::new("pricing")];
        put(&s, 1, entry("a", 0, 60));
        put(&s, 2, entry("b", 0, 60));
        put(&s, 3, other);
        assert_eq!(s.purge_tags(&[Tag::new("leads")]), 2);
        assert!(s.get(CacheKey(1), &HeaderMap::new()).is_none());
        assert!(s.get(CacheKey(2), &HeaderMap::new()).is_none());
        assert!(s.get(CacheKey(3), &HeaderMap::new()).is_some());
        assert_eq!(s.purge_tags(&[Tag::new("leads")]), 0, "nothing left to purge");
        put(&s, 1, entry("a2", 0, 60));
        assert_eq!(s.get(CacheKey(1), &HeaderMap::new()).unwrap().body, "a2", "a new entry is not purged");
    }

    #[test]
    fn an_answer_fetched_before_a_purge_is_not_stored_after_it() {
        let s = store();
        let seq = s.reserve();
        s.purge_tags(&[Tag::new("leads")]);
        put(&s, 9, entry("unrelated", 0, 60));
        s.insert(CacheKey(1), &HeaderMap::new(), Arc::new(entry("old", 0, 60)), seq);
        assert!(s.get(CacheKey(1), &HeaderMap::new()).is_none());
    }

    #[test]
    fn variants_are_kept_apart() {
        let s = store();
        let mut en = entry("hello", 0, 60);
        en.headers.insert("vary", "Accept-Language".parse().unwrap());
        let mut fr = entry("bonjour", 0, 60);
        fr.headers.insert("vary", "Accept-Language".parse().unwrap());
        let mut english = HeaderMap::new();
        english.insert("accept-language", "en".parse().unwrap());
        let mut french = HeaderMap::new();
        french.insert("accept-language", "fr".parse().unwrap());
        s.insert(CacheKey(1), &english, Arc::new(en), s.reserve());
        s.insert(CacheKey(1), &french, Arc::new(fr), s.reserve());
        assert_eq!(s.get(CacheKey(1), &english).unwrap().body, "hello");
        assert_eq!(s.get(CacheKey(1), &french).unwrap().body, "bonjour");
        assert!(s.get(CacheKey(1), &HeaderMap::new()).is_none());
    }

    #[test]
    fn prefix_key_and_all_purges() {
        let s = store();
        let mut pricing = entry("p", 0, 60);
        pricing.path = "/api/pricing/1".into();
        put(&s, 1, pricing);
        put(&s, 2, entry("a", 0, 60));
        put(&s, 3, entry("b", 0, 60));
        s.run_pending_tasks();
        assert_eq!(s.purge_prefix(None, "/api/pricing/"), 1);
        assert_eq!(s.purge_prefix(Some("other.host"), "/"), 0);
        assert_eq!(s.purge_key(CacheKey(2)), 1);
        assert_eq!(s.purge_key(CacheKey(2)), 0);
        s.run_pending_tasks();
        assert_eq!(s.purge_all(), 1);
        assert!(s.get(CacheKey(3), &HeaderMap::new()).is_none());
    }

    #[test]
    fn entries_kept_only_for_revalidation_go_first_under_memory_pressure() {
        let clock = Clock::manual(1_700_000_000_000);
        let s = CacheStore::new(64 << 10, CacheMetrics::new(&Metrics::new(&[1.0])), clock.clone());
        let sized = |stored_at: Millis| {
            let mut e = entry("x", stored_at, 60);
            e.body = bytes::Bytes::from(vec![b'x'; 4096]);
            e
        };
        // Stored two minutes ago: past ttl (60 s) and stale window (10 s), within keep (1 h).
        let old = clock.now() - 120_000;
        for i in 0..6 {
            put(&s, i, sized(old));
        }
        s.run_pending_tasks();
        clock.advance(Duration::from_secs(2));
        for i in 100..130 {
            // Read often: by recency and frequency alone they would outlive the new entries.
            for _ in 0..3 {
                (0..6).for_each(|k| _ = s.get(CacheKey(k), &HeaderMap::new()));
            }
            put(&s, i, sized(clock.now()));
            s.run_pending_tasks();
        }
        assert!((0..6).all(|i| s.get(CacheKey(i), &HeaderMap::new()).is_none()), "kept entries swept");
        assert!(s.entries.weighted_size() <= 64 << 10);
    }

    #[test]
    fn memory_is_bounded_by_weight() {
        let s = CacheStore::new(64 << 10, CacheMetrics::new(&Metrics::new(&[1.0])), Clock::manual(0));
        for i in 0..200 {
            let mut e = entry("x", 0, 60);
            e.body = bytes::Bytes::from(vec![b'x'; 4096]);
            put(&s, i, e);
        }
        s.run_pending_tasks();
        assert!(s.entries.weighted_size() <= 64 << 10, "{}", s.entries.weighted_size());
    }
}
