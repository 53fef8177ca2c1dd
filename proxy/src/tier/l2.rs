//! The second-level cache: on an in-memory miss the cache looks here before the origin, and
//! stores storable answers here too, so N sidecars make one origin request per key instead of
//! N. Entries live in Redis until the end of their longest stale window, compressed, and are
//! checked against the current tag and path-prefix generations on every read (see
//! [`super::bus`] and [`super::keys`]): one GET and one HMGET per lookup. A write reads the
//! generations together with the purge sequence, and is dropped (`outdated`) when a purge
//! happened since the answer's fetch began ([`PurgePoint`]): the answer may be the purged one,
//! and it would carry the purge's generations.
//!
//! Optional cluster-wide coalescing (`l2.lock`): a miss takes `SET NX PX` on the key's lock
//! with a token of its own; the sidecar that gets it is the cluster's leader and holds a
//! [`ClusterLock`] until its answer is stored here, the others poll for that answer up to a
//! deadline and then go upstream themselves. The lock is released by compare-and-delete on
//! the token (a holder whose lock expired never deletes the next holder's), at once when the
//! guard drops without a stored answer, and expires anyway, so a crashed leader never blocks
//! anyone for longer than `l2.lock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use redis::Script;
use tokio::time::{Duration, Instant};

use super::bus::PurgePoint;
use super::client::RedisClient;
use super::config::L2Config;
use super::entry::{self, Generations, SharedEntry};
use super::keys::Keys;
use super::metrics::{L2Result, LockResult, Op, TierMetrics};

/// Releases a lock only if its holder still holds it. KEYS: lock. ARGV: token.
const UNLOCK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// An entry's generations and the purge sequence, read together. KEYS: generations hash,
/// sequence hash (one slot: `{meta}`). ARGV: generation fields.
const GENERATIONS_SCRIPT: &str = r"
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('HMGET', KEYS[2], 'epoch', 'seq')}
";

/// What [`GENERATIONS_SCRIPT`] answers: the fields' generations, then the sequence's epoch
/// and number.
type GenerationsReply = (Vec<Option<u64>>, (Option<String>, Option<u64>));

/// The result of a second-level lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum L2Lookup {
    /// A usable entry (fresh or within a stale window: the cache decides).
    Hit(Box<SharedEntry>),
    /// Not there, expired, or purged since it was stored.
    Miss,
    /// Redis did not answer: go on as if there were no second level.
    Unavailable,
}

/// Who fetches a missed key for the cluster.
#[derive(Debug)]
pub enum LockOutcome {
    /// This request holds the lock: go upstream, store, then release it.
    Leader(ClusterLock),
    /// Another request holds it: wait for its answer with [`SecondLevel::wait`].
    Follower,
    /// Cluster coalescing is off, or Redis is unavailable: go upstream.
    Alone,
}

/// A held cluster-wide coalescing lock. [`ClusterLock::release`] releases it; dropping it
/// unreleased (no storable answer, an error, a cancelled request) releases it in the
/// background. Either way only while its token is still the lock's value.
#[derive(Debug)]
pub struct ClusterLock {
    client: Arc<RedisClient>,
    key: String,
    token: String,
    unlock: Script,
    held: bool,
}

impl ClusterLock {
    /// The lock's Redis key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This holder's token: the lock's value while it holds it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Releases the lock if it still holds this token; true when it deleted it.
    pub async fn release(mut self) -> bool {
        self.held = false;
        unlock(&self.client, &self.unlock, &self.key, &self.token).await
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (client, unlock_script) = (self.client.clone(), self.unlock.clone());
        let (key, token) = (std::mem::take(&mut self.key), std::mem::take(&mut self.token));
        runtime.spawn(async move { unlock(&client, &unlock_script, &key, &token).await });
    }
}

/// Compare-and-delete of `key` against `token`.
async fn unlock(client: &RedisClient, script: &Script, key: &str, token: &str) -> bool {
    let mut invocation = script.prepare_invoke();
    invocation.key(key).arg(token);
    let deleted: Result<i64, _> =
        client.run(Op::Lock, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await;
    matches!(deleted, Ok(1))
}

/// The second-level cache.
#[derive(Debug)]
pub struct SecondLevel {
    keys: Keys,
    config: L2Config,
    /// Lock owner id: this sidecar's; each lock taken adds a sequence number to it.
    owner: String,
    locks: AtomicU64,
    unlock: Script,
    generations: Script,
    metrics: TierMetrics,
}

impl SecondLevel {
    /// The second level under `keys`; `owner` identifies this sidecar's locks.
    pub fn new(keys: Keys, config: L2Config, owner: String, metrics: TierMetrics) -> Self {
        Self {
            keys,
            config,
            owner,
            locks: AtomicU64::new(0),
            unlock: Script::new(UNLOCK_SCRIPT),
            generations: Script::new(GENERATIONS_SCRIPT),
            metrics,
        }
    }

    /// The settings.
    pub fn config(&self) -> &L2Config {
        &self.config
    }

    /// Looks `key` up: one GET, then one HMGET of the entry's tag and prefix generations.
    pub async fn get(&self, client: &RedisClient, key: &str) -> L2Lookup {
        let result = self.lookup(client, key).await;
        self.metrics.l2(match &result {
            Ok(L2Lookup::Hit(_)) => L2Result::Hit,
            Ok(L2Lookup::Miss) => L2Result::Miss,
            Ok(L2Lookup::Unavailable) | Err(()) => L2Result::Unavailable,
        });
        result.unwrap_or(L2Lookup::Unavailable)
    }

    async fn lookup(&self, client: &RedisClient, key: &str) -> Result<L2Lookup, ()> {
        let entry_key = self.keys.entry(key);
        let bytes: Option<Vec<u8>> =
            client.query(Op::L2Get, redis::cmd("GET").arg(&entry_key)).await.map_err(|_| ())?;
        let Some(bytes) = bytes else { return Ok(L2Lookup::Miss) };
        let Ok(stored) = entry::decode(&bytes) else {
            tracing::debug!(key = entry_key, "unreadable second-level entry treated as a miss");
            return Ok(L2Lookup::Miss);
        };
        if stored.entry.remaining(SystemTime::now()).is_zero() {
            return Ok(L2Lookup::Miss);
        }
        let current = self.generations(client, &stored.entry).await.map_err(|_| ())?;
        if current != stored.generations {
            self.metrics.l2(L2Result::Purged);
            return Ok(L2Lookup::Miss);
        }
        Ok(L2Lookup::Hit(Box::new(stored.entry)))
    }

    /// Stores `entry`, fetched after `since`, under `key` until the end of its longest stale
    /// window. Returns whether it was stored (not when too large, already over, purged since
    /// `since`, or Redis is unavailable).
    pub async fn put(
        &self,
        client: &RedisClient,
        key: &str,
        entry: &SharedEntry,
        since: &PurgePoint,
    ) -> bool {
        let lifetime = entry.remaining(SystemTime::now());
        if lifetime.is_zero() {
            return false;
        }
        // Generations are read before the write: a purge after this read makes the entry
        // read as purged. A purge between the fetch and this read bumped them already, so
        // the entry would carry the new ones: it is not stored then.
        let Ok((generations, now)) = self.generations_now(client, entry).await else { return false };
        if !since.unchanged_at(&now) {
            self.metrics.l2(L2Result::Outdated);
            return false;
        }
        let bytes = entry::encode(entry, &generations);
        if bytes.len() > self.config.max_object_size {
            self.metrics.l2(L2Result::TooLarge);
            return false;
        }
        let millis = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = redis::cmd("SET").arg(self.keys.entry(key)).arg(bytes).arg("PX").arg(millis).clone();
        let stored = client.query::<()>(Op::L2Set, &cmd).await.is_ok();
        if stored {
            self.metrics.l2(L2Result::Stored);
        }
        stored
    }

    /// The current generations `entry` falls under, in one HMGET: `*`, its tags', and those of
    /// the path prefixes of its host and path (0 when never purged).
    async fn generations(&self, client: &RedisClient, entry: &SharedEntry) -> Result<Generations, ()> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.generations()).arg(Self::generation_fields(entry));
        let values: Vec<Option<u64>> = client.query(Op::Generations, &cmd).await.map_err(|_| ())?;
        Ok(Self::read_generations(entry, values))
    }

    /// [`SecondLevel::generations`] and the purge sequence at that moment, in one script.
    async fn generations_now(
        &self,
        client: &RedisClient,
        entry: &SharedEntry,
    ) -> Result<(Generations, PurgePoint), ()> {
        let mut invocation = self.generations.prepare_invoke();
        invocation.key(self.keys.generations()).key(self.keys.sequence()).arg(Self::generation_fields(entry));
        let (values, (epoch, seq)): GenerationsReply = client
            .run(Op::Generations, |mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
            .map_err(|_| ())?;
        Ok((Self::read_generations(entry, values), PurgePoint::at(epoch, seq)))
    }

    /// `*`, the entry's tags' and its path prefixes' generation fields, in that order.
    fn generation_fields(entry: &SharedEntry) -> Vec<String> {
        let mut fields = vec![Keys::ALL_FIELD.to_owned()];
        fields.extend(entry.tags.iter().map(|t| Keys::tag_field(t)));
        fields.extend(Keys::entry_prefix_fields(&entry.host, &entry.path));
        fields
    }

    fn read_generations(entry: &SharedEntry, values: Vec<Option<u64>>) -> Generations {
        let mut values = values.into_iter().map(Option::unwrap_or_default);
        let all = values.next().unwrap_or(0);
        let tags = values.by_ref().take(entry.tags.len()).collect();
        Generations { all, tags, prefixes: values.collect() }
    }

    /// Tries to become the cluster's leader for `key`: [`LockOutcome::Alone`] when
    /// `l2.lock` is off (not counted) or Redis does not answer.
    pub async fn try_lock(&self, client: &Arc<RedisClient>, key: &str) -> LockOutcome {
        let Some(ttl) = self.config.lock else { return LockOutcome::Alone };
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let token = format!("{}:{}", self.owner, self.locks.fetch_add(1, Ordering::Relaxed));
        let lock = self.keys.lock(key);
        let cmd = redis::cmd("SET").arg(&lock).arg(&token).arg("NX").arg("PX").arg(millis).clone();
        match client.query::<Option<String>>(Op::Lock, &cmd).await {
            Ok(Some(_)) => {
                self.metrics.lock(LockResult::Leader);
                LockOutcome::Leader(ClusterLock {
                    client: client.clone(),
                    key: lock,
                    token,
                    unlock: self.unlock.clone(),
                    held: true,
                })
            }
            Ok(None) => LockOutcome::Follower,
            Err(_) => {
                self.metrics.lock(LockResult::Unavailable);
                LockOutcome::Alone
            }
        }
    }

    /// The lock's lifetime, when cluster-wide coalescing is on.
    pub fn lock_ttl(&self) -> Option<Duration> {
        self.config.lock
    }

    /// A follower's wait: polls for the leader's answer (backing off from 5 ms to 50 ms) until
    /// `timeout`; `None` when it did not come (the follower then goes upstream on its own),
    /// as soon as the lock is gone without an entry or Redis fails. Counted.
    pub async fn wait(&self, client: &RedisClient, key: &str, timeout: Duration) -> Option<SharedEntry> {
        let (entry, result) = self.poll(client, key, timeout).await;
        self.metrics.lock(result);
        entry
    }

    async fn poll(
        &self,
        client: &RedisClient,
        key: &str,
        timeout: Duration,
    ) -> (Option<SharedEntry>, LockResult) {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            // Lock first, then the entry: the leader stores before it unlocks, so a lock seen
            // gone means the entry (if storable) is already there.
            let locked: Result<bool, _> =
                client.query(Op::Lock, redis::cmd("EXISTS").arg(self.keys.lock(key))).await;
            match self.lookup(client, key).await {
                Ok(L2Lookup::Hit(entry)) => return (Some(*entry), LockResult::FollowerHit),
                Ok(_) => {}
                Err(()) => return (None, LockResult::Unavailable),
            }
            match locked {
                Ok(true) => {}
                // The leader is done (its answer was not storable) or gone.
                Ok(false) => return (None, LockResult::FollowerReleased),
                Err(_) => return (None, LockResult::Unavailable),
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        (None, LockResult::FollowerTimeout)
    }
}
