//! The bounded key store behind a limiter: one GCRA state (8 bytes) per tracked key, at most
//! `max_keys` of them.
//!
//! What happens at the bound: idle keys — keys whose bucket has refilled, so forgetting them
//! changes no decision — are dropped by the periodic cleanup ([`KeyStore::retain_recent`],
//! driven by `governor`'s `retain_recent`). When the store is still full, a request with a
//! key that is not tracked is counted in one **overflow bucket** shared by all such keys, with
//! the limit's own rate and burst. Keys already tracked keep their own bucket. A flood of
//! distinct keys (spoofed API keys, many addresses) therefore cannot grow memory past the
//! bound, and what it gains is at most one more bucket's worth of requests; the price is that
//! a genuinely new client, while the flood lasts, shares that overflow bucket with it.

use std::sync::atomic::{AtomicUsize, Ordering};

use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use prometheus_client::metrics::gauge::Gauge;

use super::key::{LimitKey, Prehashed};

/// Per-key GCRA states, bounded; see the module documentation.
#[derive(Debug)]
pub struct KeyStore {
    keys: DashMapStateStore<LimitKey, Prehashed>,
    /// Shared by every untracked key while `keys` is full.
    overflow: InMemoryState,
    max_keys: usize,
    /// Entries in `keys`, including slots reserved by inserts in progress; never above
    /// `max_keys`.
    tracked: AtomicUsize,
    /// `accel_rate_limit_keys` of this limiter.
    gauge: Gauge,
}

impl KeyStore {
    /// An empty store of at most `max_keys` keys that reports its size on `gauge`.
    pub fn new(max_keys: usize, gauge: Gauge) -> Self {
        gauge.set(0);
        Self {
            keys: DashMapStateStore::with_hasher(Prehashed),
            overflow: InMemoryState::default(),
            max_keys,
            tracked: AtomicUsize::new(0),
            gauge,
        }
    }

    /// Keys with their own bucket now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Claims a slot for a new key; false when the store is full.
    fn reserve(&self) -> bool {
        self.tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_keys).then_some(n + 1))
            .is_ok()
    }

    /// The key's last theoretical arrival time, without changing it.
    fn peek(state: &InMemoryState) -> Option<Nanos> {
        state.measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>).err().flatten()
    }
}

impl StateStore for KeyStore {
    type Key = LimitKey;

    fn measure_and_replace<T, F, E>(&self, key: &LimitKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // The hot path: a tracked key, under a shard read lock.
        if let Some(state) = self.keys.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if !self.reserve() {
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let mut inserted = false;
        let entry = self.keys.entry(*key).or_insert_with(|| {
            inserted = true;
            InMemoryState::default()
        });
        if inserted {
            self.gauge.set(self.tracked() as i64);
        } else {
            // Another request inserted the key meanwhile: give the slot back.
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
        entry.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<LimitKey> for KeyStore {
    /// Drops the keys whose state is at or before `drop_below` (refilled buckets).
    fn retain_recent(&self, drop_below: Nanos) {
        let mut dropped = 0;
        self.keys.retain(|_, state| {
            let keep = Self::peek(state).is_some_and(|tat| tat > drop_below);
            dropped += usize::from(!keep);
            keep
        });
        self.tracked.fetch_sub(dropped, Ordering::AcqRel);
        self.gauge.set(self.tracked() as i64);
    }

    fn shrink_to_fit(&self) {
        self.keys.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.tracked()
    }

    fn is_empty(&self) -> bool {
        self.tracked() == 0
    }
}
