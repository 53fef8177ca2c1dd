//! Purge propagation: a purge on any sidecar reaches every sidecar's memory and the shared
//! second-level cache.
//!
//! Publishing is one Lua script ([`PURGE_SCRIPT`]) that, atomically: bumps the purged tags' or
//! path prefix's generations (so second-level entries stored before the purge read as gone;
//! see [`super::keys`] for prefixes), bumps the
//! cluster's purge *sequence*, and publishes `<epoch> <seq> <json>` on `<prefix>purge`. Every
//! sidecar's subscriber applies the purges of the others to its memory. The sidecar that made
//! a purge applied it to its memory at once, before the script ran; it applies it again when
//! its own message comes back, since a memory miss in between may have read the purged answer
//! from the second level (whose generations the script had not bumped yet) and stored it.
//!
//! # Staleness after a disconnect
//!
//! Pub/sub delivers only to connected subscribers. We chose **sequence-checked flushes**: each
//! sidecar remembers the last `(epoch, seq)` it saw. When it (re)subscribes it reads the
//! current position; if it differs, it missed purges while away and flushes its whole memory
//! (the second-level cache, checked by tag generations on every read, stays valid). A gap in
//! the sequence while connected (a dropped message) flushes too. The epoch is a random id set
//! when the sequence is first created, so a restarted, empty Redis never looks like "nothing
//! missed". The price is a cold memory after an outage during which someone purged — never a
//! stale answer — and nothing is paid on the hit path.
//!
//! Purges made while Redis is unavailable are applied locally at once and kept in a bounded
//! outbox; they are published when Redis is back (an overflowing outbox becomes one purge of
//! everything), so the other sidecars and the second-level cache learn of them too.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::time::Duration;

use super::client::{RedisClient, TierError};
use super::config::RedisServers;
use super::keys::Keys;
use super::metrics::{Op, TierMetrics};

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// Every entry carrying any of these tags.
    Tags(Vec<String>),
    /// Entries by cache key (the store's own key text).
    Keys(Vec<String>),
    /// Entries whose path starts with this prefix (`/api/leads/`), or whose host is the URL's
    /// and path starts with its path (`https://host/api/leads/`). In the second level it bumps
    /// the prefix's generation cut back to a segment boundary ([`Keys::purge_prefix_field`]).
    Prefix(String),
    /// Everything.
    All,
}

impl Purge {
    /// The generation fields the purge bumps: `t:<tag>` per tag, the prefix's `p:` field, `*`
    /// for all.
    pub(crate) fn generation_fields(&self) -> Vec<String> {
        match self {
            Self::Tags(tags) => tags.iter().map(|t| Keys::tag_field(t)).collect(),
            Self::Keys(_) => Vec::new(),
            Self::Prefix(prefix) => vec![Keys::purge_prefix_field(prefix)],
            Self::All => vec![Keys::ALL_FIELD.to_owned()],
        }
    }
}

/// This sidecar's memory, as the bus sees it: the in-memory cache implements it.
pub trait LocalPurge: Send + Sync + fmt::Debug + 'static {
    /// Removes the entries `purge` names from this sidecar's memory; returns how many.
    fn purge_local(&self, purge: &Purge) -> u64;
}

/// The body of a purge message.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sidecar that purged (it has applied the purge already).
    origin: String,
    purge: Purge,
}

/// Where in the cluster's purge sequence this sidecar is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    epoch: String,
    seq: u64,
}

/// Where this sidecar stood in the cluster's purge sequence when it was taken
/// ([`PurgeBus::point`]): an answer fetched after that may be written to the second level
/// only while Redis's sequence still stands there — a purge in between (its tag or prefix
/// generations already bumped when the entry's are read) would otherwise leave the purged
/// answer in Redis labelled as current. Unknown (before the first subscription, or when its
/// read of the sequence failed) checks nothing: the entry is stored as it would be without
/// the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgePoint(Option<Position>);

impl PurgePoint {
    /// Redis's purge sequence as read (`epoch`, `seq`; absent before the first purge).
    pub(crate) fn at(epoch: Option<String>, seq: Option<u64>) -> Self {
        Self(Some(Position { epoch: epoch.unwrap_or_default(), seq: seq.unwrap_or(0) }))
    }

    /// False when this point is known and `now` is another: a purge happened in between.
    pub fn unchanged_at(&self, now: &Self) -> bool {
        self.0.is_none() || self == now
    }
}

/// Bumps tag generations and the purge sequence, and publishes, atomically.
/// KEYS: generations hash, sequence hash. ARGV: channel, epoch candidate, payload, fields...
pub const PURGE_SCRIPT: &str = r"
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[2])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local epoch = redis.call('HGET', KEYS[2], 'epoch')
for i = 4, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. seq .. ' ' .. ARGV[3])
return seq
";

/// Purges kept while Redis is unavailable; beyond this, they collapse into one purge of all.
const OUTBOX_LIMIT: usize = 1024;

/// The purge bus of one sidecar.
#[derive(Debug)]
pub struct PurgeBus {
    /// This sidecar's id, in every message it publishes.
    id: String,
    keys: Keys,
    script: Script,
    metrics: TierMetrics,
    local: OnceLock<Arc<dyn LocalPurge>>,
    position: Mutex<Option<Position>>,
    outbox: Mutex<VecDeque<Purge>>,
}

impl PurgeBus {
    /// A bus for the sidecar `id`.
    pub fn new(id: String, keys: Keys, metrics: TierMetrics) -> Self {
        Self {
            id,
            keys,
            script: Script::new(PURGE_SCRIPT),
            metrics,
            local: OnceLock::new(),
            position: Mutex::new(None),
            outbox: Mutex::new(VecDeque::new()),
        }
    }

    /// This sidecar's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Attaches this sidecar's memory; purges from other sidecars are applied to it. Only the
    /// first call counts.
    pub fn attach(&self, local: Arc<dyn LocalPurge>) {
        let _ = self.local.set(local);
    }

    /// Publishes a purge that was already applied to this sidecar's memory. When Redis is
    /// unavailable the purge waits in the outbox for [`PurgeBus::replay`].
    pub async fn publish(&self, client: &RedisClient, purge: Purge) {
        if let Err(error) = self.send(client, &purge).await {
            tracing::debug!(error = %error, "purge kept for later: redis unavailable");
            self.keep(purge);
        }
    }

    /// Publishes the purges kept while Redis was unavailable, oldest first; stops at the first
    /// failure. Returns how many were sent.
    pub async fn replay(&self, client: &RedisClient) -> usize {
        let mut sent = 0;
        loop {
            let Some(purge) = self.lock_outbox().pop_front() else { return sent };
            if self.send(client, &purge).await.is_err() {
                self.lock_outbox().push_front(purge);
                return sent;
            }
            self.metrics.purges_replayed.inc();
            sent += 1;
        }
    }

    /// Where this sidecar stands in the purge sequence now: take it before fetching an answer
    /// that may go to the second level.
    pub fn point(&self) -> PurgePoint {
        PurgePoint(self.lock_position().clone())
    }

    /// Purges waiting to be published.
    pub fn pending(&self) -> usize {
        self.lock_outbox().len()
    }

    async fn send(&self, client: &RedisClient, purge: &Purge) -> Result<(), TierError> {
        let payload = serde_json::to_string(&Message { origin: self.id.clone(), purge: purge.clone() })
            .map_err(|_| TierError::Decode { key: self.keys.channel() })?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.generations())
            .key(self.keys.sequence())
            .arg(self.keys.channel())
            .arg(random_id())
            .arg(payload);
        for field in purge.generation_fields() {
            invocation.arg(field);
        }
        let seq: u64 =
            client.run(Op::Purge, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        self.advance_to(seq);
        if let Purge::Keys(keys) = purge {
            // One DEL per key: in a cluster they live in different slots.
            for key in keys {
                client.query::<()>(Op::Purge, redis::cmd("DEL").arg(self.keys.entry(key))).await?;
            }
        }
        self.metrics.purges_published.inc();
        Ok(())
    }

    fn keep(&self, purge: Purge) {
        self.metrics.purges_kept.inc();
        let mut outbox = self.lock_outbox();
        if outbox.len() >= OUTBOX_LIMIT {
            outbox.clear();
            outbox.push_back(Purge::All);
        } else if !outbox.contains(&Purge::All) {
            outbox.push_back(purge);
        }
    }

    /// Subscribes to the purge channel and applies other sidecars' purges until `shutdown`;
    /// reconnects with a back-off after any disconnect, checking the purge sequence each time.
    pub async fn run(self: Arc<Self>, client: Arc<RedisClient>, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = self.subscribe_forever(&client) => {}
            () = shutdown => {}
        }
    }

    async fn subscribe_forever(&self, client: &RedisClient) {
        let mut backoff = Duration::from_millis(50);
        let mut connected_once = false;
        loop {
            match self.subscribe_once(client, &mut connected_once).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(error) => tracing::debug!(error = %error, "purge subscription failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One subscription: connect, subscribe, check the sequence, then apply messages until the
    /// connection drops.
    async fn subscribe_once(&self, client: &RedisClient, connected_once: &mut bool) -> Result<(), TierError> {
        let pubsub = connect_pubsub(client).await?;
        let (mut sink, mut stream) = pubsub.split();
        sink.subscribe(self.keys.channel())
            .await
            .map_err(|source| TierError::Redis { op: Op::Sequence, source })?;
        // Subscribed first, then read the position: a purge in between is both counted in the
        // position and delivered, and applying it twice is harmless.
        let current = self.read_position(client).await;
        self.check_position(current);
        if *connected_once {
            tracing::info!("purge subscription restored");
        }
        *connected_once = true;
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    self.receive(message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    // A half-open TCP connection never ends the stream: probe it.
                    let pong = tokio::time::timeout(client.timeout() * 20, sink.ping::<Vec<Vec<u8>>>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("purge subscription lost: reconnecting");
        Ok(())
    }

    /// Our own purge took `seq`: when it directly follows the position last seen, this
    /// sidecar stands there now, without waiting for its message to come back (fills started
    /// meanwhile keep a current point). Anything else (a purge of another sidecar not yet
    /// received, no position yet) waits for the messages, which check for gaps.
    fn advance_to(&self, seq: u64) {
        let mut last = self.lock_position();
        if let Some(seen) = last.as_mut()
            && !seen.epoch.is_empty()
            && seq == seen.seq + 1
        {
            seen.seq = seq;
        }
    }

    async fn read_position(&self, client: &RedisClient) -> Option<Position> {
        let cmd = redis::cmd("HMGET").arg(self.keys.sequence()).arg("epoch").arg("seq").clone();
        let (epoch, seq): (Option<String>, Option<u64>) = client.query(Op::Sequence, &cmd).await.ok()?;
        Some(Position { epoch: epoch.unwrap_or_default(), seq: seq.unwrap_or(0) })
    }

    /// After a (re)subscription: flush memory unless the position is the one last seen.
    fn check_position(&self, current: Option<Position>) {
        let mut last = self.lock_position();
        if current.is_none() || *last != current {
            self.flush(last.is_some());
        }
        *last = current;
    }

    /// Handles one message from the channel.
    fn receive(&self, payload: &[u8]) {
        self.metrics.purges_received.inc();
        let Some((position, message)) = parse(payload) else {
            tracing::warn!("unreadable purge message ignored");
            return;
        };
        {
            let mut last = self.lock_position();
            match &*last {
                Some(seen) if seen.epoch == position.epoch && position.seq <= seen.seq => {}
                Some(seen) if seen.epoch == position.epoch && position.seq == seen.seq + 1 => {
                    *last = Some(position);
                }
                // The sequence did not exist when we subscribed; this is its first purge.
                Some(seen) if seen.epoch.is_empty() && seen.seq == 0 && position.seq == 1 => {
                    *last = Some(position);
                }
                // First message, a new epoch, or a gap: something may have been missed.
                _ => {
                    self.flush(true);
                    *last = Some(position);
                }
            }
        }
        // Our own purges are applied again when they come back: memory was purged before the
        // purge reached Redis, and a memory miss in between could read the purged answer back
        // from the second level (its generations not yet bumped) and store it again.
        if let Some(local) = self.local.get() {
            local.purge_local(&message.purge);
        }
        if message.origin != self.id {
            self.metrics.purges_applied.inc();
        }
    }

    fn flush(&self, missed: bool) {
        if let Some(local) = self.local.get() {
            let removed = local.purge_local(&Purge::All);
            if missed {
                self.metrics.flushes.inc();
                tracing::info!(removed, "purges may have been missed while disconnected: memory flushed");
            }
        }
    }

    fn lock_position(&self) -> std::sync::MutexGuard<'_, Option<Position>> {
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<Purge>> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pub/sub connection: to the single Redis, or to the first cluster node that answers, in
/// the configured order (a cluster broadcasts every classic PUBLISH to all its nodes, replicas
/// included, so any node will do). Each node gets `connect_timeout`.
async fn connect_pubsub(client: &RedisClient) -> Result<redis::aio::PubSub, TierError> {
    let nodes = match client.servers() {
        RedisServers::Single(info) => std::slice::from_ref(&**info),
        RedisServers::Cluster(nodes) => nodes.as_slice(),
    };
    let mut last = TierError::NotConnected;
    for info in nodes {
        let connect = async {
            let redis = redis::Client::open(info.clone())?;
            redis.get_async_pubsub().await
        };
        let after = client.connect_timeout();
        match tokio::time::timeout(after, connect).await {
            Ok(Ok(pubsub)) => return Ok(pubsub),
            Ok(Err(source)) => last = TierError::Redis { op: Op::Sequence, source },
            Err(_) => last = TierError::Timeout { op: Op::Sequence, after },
        }
    }
    Err(last)
}

/// `<epoch> <seq> <json>` → position and message.
fn parse(payload: &[u8]) -> Option<(Position, Message)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let epoch = parts.next()?.to_owned();
    let seq = parts.next()?.parse().ok()?;
    let message = serde_json::from_str(parts.next()?).ok()?;
    Some((Position { epoch, seq }, message))
}

/// A random 128-bit id in hex: sidecar ids and sequence epochs.
pub(crate) fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    /// A memory that records what it was asked to purge.
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<Purge>>, AtomicU64);

    impl LocalPurge for Recorded {
        fn purge_local(&self, purge: &Purge) -> u64 {
            self.0.lock().unwrap().push(purge.clone());
            self.1.fetch_add(1, Ordering::Relaxed)
        }
    }

    fn bus() -> (PurgeBus, Arc<Recorded>) {
        let metrics = TierMetrics::new(&Metrics::new(&[1.0]));
        let bus = PurgeBus::new("me".into(), Keys::new("t:"), metrics);
        let local = Arc::new(Recorded::default());
        bus.attach(local.clone());
        (bus, local)
    }

    fn message(epoch: &str, seq: u64, origin: &str, purge: &Purge) -> Vec<u8> {
        let json = serde_json::to_string(&Message { origin: origin.into(), purge: purge.clone() }).unwrap();
        format!("{epoch} {seq} {json}").into_bytes()
    }

    #[test]
    fn others_purges_are_applied_and_own_applied_again() {
        let (bus, local) = bus();
        bus.check_position(Some(Position { epoch: "e".into(), seq: 4 }));
        local.0.lock().unwrap().clear();
        let tags = Purge::Tags(vec!["lead:1".into()]);
        bus.receive(&message("e", 5, "other", &tags));
        // Applied here before it was published: applied again once Redis has it, which
        // removes what a second-level read in between brought back.
        let own = Purge::Keys(vec!["k".into()]);
        bus.receive(&message("e", 6, "me", &own));
        assert_eq!(*local.0.lock().unwrap(), vec![tags, own]);
        assert_eq!(bus.metrics.purges_applied.get(), 1, "applied counts other sidecars' purges");
    }

    #[test]
    fn an_own_purge_that_follows_the_position_advances_it_at_once() {
        let (bus, local) = bus();
        bus.check_position(Some(Position { epoch: "e".into(), seq: 4 }));
        bus.advance_to(5);
        assert_eq!(bus.point(), PurgePoint::at(Some("e".into()), Some(5)));
        bus.advance_to(7);
        assert_eq!(bus.point(), PurgePoint::at(Some("e".into()), Some(5)), "6 not seen yet: wait for it");
        local.0.lock().unwrap().clear();
        bus.receive(&message("e", 5, "me", &Purge::All));
        bus.receive(&message("e", 6, "other", &Purge::All));
        assert_eq!(local.0.lock().unwrap().len(), 2, "no gap: applied, no flush");
        assert_eq!(bus.metrics.flushes.get(), 0, "nothing was missed");
    }

    #[test]
    fn a_changed_position_or_a_gap_flushes_memory() {
        let (bus, local) = bus();
        bus.check_position(Some(Position { epoch: "e".into(), seq: 4 }));
        local.0.lock().unwrap().clear();
        bus.check_position(Some(Position { epoch: "e".into(), seq: 4 }));
        assert!(local.0.lock().unwrap().is_empty(), "same position: nothing missed");
        bus.check_position(Some(Position { epoch: "e".into(), seq: 6 }));
        assert_eq!(*local.0.lock().unwrap(), vec![Purge::All], "missed purges: flush");
        local.0.lock().unwrap().clear();
        bus.receive(&message("e", 8, "other", &Purge::Keys(vec!["k".into()])));
        assert_eq!(local.0.lock().unwrap()[0], Purge::All, "a gap flushes before applying");
        local.0.lock().unwrap().clear();
        bus.check_position(Some(Position { epoch: "restarted".into(), seq: 8 }));
        assert_eq!(*local.0.lock().unwrap(), vec![Purge::All], "a new epoch: flush");
    }

    #[test]
    fn the_outbox_is_bounded() {
        let (bus, _) = bus();
        for i in 0..OUTBOX_LIMIT + 5 {
            bus.keep(Purge::Tags(vec![format!("t{i}")]));
        }
        assert!(bus.pending() <= OUTBOX_LIMIT);
        assert!(bus.lock_outbox().contains(&Purge::All));
    }
}
