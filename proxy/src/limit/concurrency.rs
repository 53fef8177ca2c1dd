//! The per-client concurrency cap: at most `max` requests of one client address in flight at
//! once, on every route. A request over the cap is refused at once with its own answer (`429`,
//! `Retry-After: 1`, body `too many concurrent requests`). A request holds its
//! [`ConcurrencyPermit`] until the last byte of its response body has been sent (or the client
//! went away), including any time it waits in a rate limit's delay mode.
//!
//! Memory: one entry per client with requests in flight, removed with its last request; a
//! table left mostly empty after a crowd of clients gives its room back ([`shrink_sparse`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use crate::body::{Body, Guard, Guarded};

/// Lock shards: requests of different clients rarely contend.
const SHARDS: usize = 16;

/// Entries a per-client table keeps room for, however empty: shrinking below is not worth it.
const KEPT_CAPACITY: usize = 64;

/// Gives a per-client table's memory back once it is less than a quarter full; call it after
/// removing an entry. A hash table never shrinks by itself, so without this a crowd of distinct
/// client addresses (a storm, a scan, a spoofed range) would hold its largest size for good.
/// Halving at a quarter keeps the cost amortised: a table shrinks to twice its entries, and
/// must lose half of those again before it shrinks anew.
pub fn shrink_sparse<K: Eq + Hash, V, S: BuildHasher>(table: &mut HashMap<K, V, S>) {
    if table.capacity() > KEPT_CAPACITY && table.len() < table.capacity() / 4 {
        table.shrink_to((table.len() * 2).max(KEPT_CAPACITY));
    }
}

/// In-flight requests per client address.
#[derive(Debug)]
pub struct ClientConcurrency {
    max: NonZeroU32,
    hasher: RandomState,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

/// One request's place in its client's count; given back on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    owner: Arc<ClientConcurrency>,
    client: IpAddr,
}

impl ClientConcurrency {
    /// A cap of `max` requests in flight per client.
    pub fn new(max: NonZeroU32) -> Self {
        Self { max, hasher: RandomState::new(), shards: Default::default() }
    }

    /// The cap.
    pub fn max(&self) -> NonZeroU32 {
        self.max
    }

    fn shard(&self, client: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(client) as usize % SHARDS]
    }

    /// A permit for one more request of `client`, or `None` when it has `max` in flight.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<ConcurrencyPermit> {
        let mut counts = self.shard(&client).lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(client).or_insert(0);
        if *count >= self.max.get() {
            return None;
        }
        *count += 1;
        Some(ConcurrencyPermit { owner: self.clone(), client })
    }

    /// Requests of `client` in flight now.
    pub fn in_flight(&self, client: IpAddr) -> u32 {
        self.shard(&client).lock().unwrap_or_else(|e| e.into_inner()).get(&client).copied().unwrap_or(0)
    }

    /// Clients with requests in flight now.
    pub fn clients(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        let mut counts = self.owner.shard(&self.client).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
                shrink_sparse(&mut counts);
            }
        }
    }
}

impl<E> Guard<E> for ConcurrencyPermit {}

/// A response body that holds a concurrency permit until its end.
pub type PermitBody = Guarded<Body, ConcurrencyPermit>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_per_client_and_permits_give_back_on_drop() {
        let cap = Arc::new(ClientConcurrency::new(NonZeroU32::new(2).unwrap()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = cap.acquire(a).unwrap();
        let second = cap.acquire(a).unwrap();
        assert!(cap.acquire(a).is_none());
        assert!(cap.acquire(b).is_some(), "another client is not affected");
        assert_eq!(cap.in_flight(a), 2);
        drop(first);
        let third = cap.acquire(a).unwrap();
        drop((second, third));
        assert_eq!(cap.in_flight(a), 0);
        assert_eq!(cap.clients(), 0, "idle clients are forgotten");
    }

    #[test]
    fn a_crowd_of_clients_gone_leaves_no_table_behind() {
        let cap = Arc::new(ClientConcurrency::new(NonZeroU32::new(1).unwrap()));
        let crowd: Vec<_> =
            (0..20_000u32).map(|n| cap.acquire(IpAddr::from(n.to_be_bytes())).unwrap()).collect();
        let room = |cap: &ClientConcurrency| -> usize {
            cap.shards.iter().map(|s| s.lock().unwrap().capacity()).sum()
        };
        assert!(room(&cap) >= 20_000);
        drop(crowd);
        assert_eq!(cap.clients(), 0);
        assert!(room(&cap) <= SHARDS * 2 * KEPT_CAPACITY, "room for {} clients kept", room(&cap));
    }

    #[test]
    fn a_mostly_empty_table_shrinks_to_twice_its_entries() {
        let mut table: HashMap<usize, usize> = (0..1000).map(|n| (n, n)).collect();
        let full = table.capacity();
        table.retain(|n, _| *n < full / 8);
        shrink_sparse(&mut table);
        assert!(table.capacity() < full && table.capacity() >= 2 * table.len());
        table.clear();
        shrink_sparse(&mut table);
        assert!(table.capacity() >= KEPT_CAPACITY && table.capacity() < 2 * KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn a_permit_lives_until_the_body_ends() {
        use http_body_util::BodyExt;
        let cap = Arc::new(ClientConcurrency::new(NonZeroU32::new(1).unwrap()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut body = PermitBody::new(Body::full("hello"), cap.acquire(a).unwrap());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert_eq!(cap.in_flight(a), 1, "held while the body is being sent");
        assert!(body.frame().await.is_none());
        assert_eq!(cap.in_flight(a), 0, "given back at the end of the body");
        drop(body);
    }
}
