//! Coalesce: identical concurrent requests send one request upstream.
//!
//! The first request for a key becomes the *leader* and goes upstream; the ones that arrive
//! while it is in flight become *followers* and wait for the leader's answer. The leader
//! either [`Leader::publish`]es an answer every follower may use, or is dropped without one
//! (it failed, its client went away, or its answer cannot be shared), which releases the
//! followers to go upstream on their own: they never queue behind one another. A follower
//! waits at most its route's `follower_timeout` ([`Follower::wait`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The requests in flight, by key; `T` is what a leader shares.
#[derive(Debug)]
pub struct Coalescer<K, T> {
    flights: Arc<Mutex<HashMap<K, watch::Sender<Flight<T>>>>>,
}

impl<K, T> Default for Coalescer<K, T> {
    fn default() -> Self {
        Self { flights: Arc::default() }
    }
}

/// The state of one flight, as followers see it.
#[derive(Debug, Clone)]
enum Flight<T> {
    Pending,
    Done(T),
    Released,
}

/// The part a request plays for its key.
#[derive(Debug)]
pub enum Role<K: Eq + Hash + Clone, T> {
    Leader(Leader<K, T>),
    Follower(Follower<T>),
}

/// How a follower's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    /// The leader's answer.
    Shared(T),
    /// The leader ended without an answer to share.
    Released,
    /// The follower stopped waiting.
    TimedOut,
}

impl<K: Eq + Hash + Clone, T: Clone> Coalescer<K, T> {
    /// Joins the flight for `key`: leads a new one, or follows the one in flight.
    pub fn join(&self, key: K) -> Role<K, T> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = flights.get(&key) {
            return Role::Follower(Follower { receiver: sender.subscribe() });
        }
        let (sender, _) = watch::channel(Flight::Pending);
        flights.insert(key.clone(), sender.clone());
        Role::Leader(Leader { flights: self.flights.clone(), key, sender, done: false })
    }

    /// Leads a new flight for `key` unless one is in flight (then `None`: someone is
    /// already fetching it).
    pub fn lead(&self, key: K) -> Option<Leader<K, T>> {
        match self.join(key) {
            Role::Leader(leader) => Some(leader),
            Role::Follower(_) => None,
        }
    }

    /// Followers waiting now, over all flights.
    pub fn followers(&self) -> usize {
        self.flights.lock().map_or(0, |f| f.values().map(watch::Sender::receiver_count).sum())
    }

    /// Flights in progress.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map_or(0, |f| f.len())
    }
}

/// The request that goes upstream for its key. Dropping it without publishing releases the
/// followers.
#[derive(Debug)]
pub struct Leader<K: Eq + Hash + Clone, T> {
    flights: Arc<Mutex<HashMap<K, watch::Sender<Flight<T>>>>>,
    key: K,
    sender: watch::Sender<Flight<T>>,
    done: bool,
}

impl<K: Eq + Hash + Clone, T> Leader<K, T> {
    /// Gives every follower `answer` and ends the flight.
    pub fn publish(mut self, answer: T) {
        self.end(Flight::Done(answer));
    }

    /// Ends the flight without an answer: followers go upstream on their own.
    pub fn release(mut self) {
        self.end(Flight::Released);
    }

    fn end(&mut self, state: Flight<T>) {
        if self.done {
            return;
        }
        self.done = true;
        // Leave the map first: a request arriving from now on starts a new flight.
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.get(&self.key).is_some_and(|s| s.same_channel(&self.sender)) {
                flights.remove(&self.key);
            }
        }
        self.sender.send_replace(state);
    }
}

impl<K: Eq + Hash + Clone, T> Drop for Leader<K, T> {
    fn drop(&mut self) {
        self.end(Flight::Released);
    }
}

/// A request waiting for its leader.
#[derive(Debug)]
pub struct Follower<T> {
    receiver: watch::Receiver<Flight<T>>,
}

impl<T: Clone> Follower<T> {
    /// Waits at most `timeout` for the leader.
    pub async fn wait(mut self, timeout: Duration) -> Waited<T> {
        let ended =
            tokio::time::timeout(timeout, self.receiver.wait_for(|f| !matches!(f, Flight::Pending))).await;
        match ended {
            Err(_) => Waited::TimedOut,
            Ok(Err(_)) => Waited::Released,
            Ok(Ok(state)) => match &*state {
                Flight::Done(answer) => Waited::Shared(answer.clone()),
                Flight::Pending | Flight::Released => Waited::Released,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(role: Role<u32, &'static str>) -> Follower<&'static str> {
        match role {
            Role::Follower(f) => f,
            Role::Leader(_) => panic!("expected a follower"),
        }
    }

    fn leader(role: Role<u32, &'static str>) -> Leader<u32, &'static str> {
        match role {
            Role::Leader(l) => l,
            Role::Follower(_) => panic!("expected a leader"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn followers_get_the_leaders_answer() {
        let coalescer = Coalescer::default();
        let lead = leader(coalescer.join(1));
        let waits: Vec<_> =
            (0..5).map(|_| follower(coalescer.join(1)).wait(Duration::from_secs(1))).collect();
        assert!(matches!(coalescer.join(2), Role::Leader(_)), "another key has its own flight");
        lead.publish("answer");
        for wait in waits {
            assert_eq!(wait.await, Waited::Shared("answer"));
        }
        assert_eq!(coalescer.in_flight(), 0);
        assert!(matches!(coalescer.join(1), Role::Leader(_)), "a finished flight makes room for a new one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_leader_releases_its_followers() {
        let coalescer = Coalescer::<u32, &str>::default();
        let lead = leader(coalescer.join(1));
        let wait = follower(coalescer.join(1)).wait(Duration::from_secs(10));
        // The follower is polled first: it is waiting when its leader drops.
        let drop_lead = async {
            assert_eq!(coalescer.followers(), 1);
            drop(lead);
        };
        let (waited, ()) = futures_util::future::join(wait, drop_lead).await;
        assert_eq!(waited, Waited::Released);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_give_up_after_their_timeout() {
        let coalescer = Coalescer::<u32, &str>::default();
        let _lead = leader(coalescer.join(1));
        let started = tokio::time::Instant::now();
        let waited = follower(coalescer.join(1)).wait(Duration::from_millis(250)).await;
        assert_eq!(waited, Waited::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert!(coalescer.lead(1).is_none(), "the slow leader still holds the flight");
    }
}
