//! The cache's metrics (`accel_cache_*`), registered with the proxy's registry. Per-route
//! handles ([`RouteCacheMetrics`]) are resolved when the rules load.
//!
//! - `accel_cache_lookups_total{route,result}`: every request on a caching route, by
//!   result (hit, stale, miss, expired, revalidated, bypass): the hit rate is
//!   `hit / sum` of one series;
//! - `accel_cache_stores_total`, `accel_cache_rejections_total{reason}`;
//! - `accel_cache_entries`, `accel_cache_bytes`, `accel_cache_evictions_total{cause}`;
//! - `accel_cache_purges_total{kind}`, `accel_cache_purged_entries_total`;
//! - `accel_cache_coalesced_followers_total{result}` (served, timeout, released);
//! - `accel_cache_background_refreshes_total{result}` (stored, revalidated, failed);
//! - `accel_cache_credential_keyed_total{route}`: lookups of requests with credentials whose
//!   key included the hash of their credentials (kept per user, see [`super::credential`]);
//! - `accel_cache_queries_total{route,result}`: POSTs on routes that cache queries, `keyed`
//!   on their body, or passed uncached for their `body` (over `max_body_key`, or of undeclared
//!   length) or their `precondition` headers;
//! - `accel_cache_refreshes_total{route,result}`: stale entries the origin answered again,
//!   `unchanged` (a 304, or the same ETag) or `changed` — what TTL advice rests on;
//! - `accel_cache_revalidations_total{route,result}`: conditional requests the cache sent
//!   for a stale entry with validators, by the origin's answer: `not_modified` (304),
//!   `modified` (a new answer), `failed` (no answer, or a 5xx);
//! - `accel_cache_range_answers_total{result}`: range requests answered from a stored entry,
//!   `partial` (a `206`) or `unsatisfiable` (a `416`); those served whole are not counted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::CacheResult;
use super::policy::RejectReason;
use super::status::BypassReason;
use crate::metrics::Metrics;
use crate::name::RouteName;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    route: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

/// How a follower ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerResult {
    /// It answered with its leader's response.
    Served,
    /// It stopped waiting and went upstream itself.
    Timeout,
    /// The leader failed or its answer could not be shared; the follower went itself.
    Released,
}

impl FollowerResult {
    fn index(self) -> usize {
        self as usize
    }

    const ALL: [&'static str; 3] = ["served", "timeout", "released"];
}

/// How a background refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    Stored,
    Revalidated,
    /// The origin failed or the answer could not be stored; the stale entry stays.
    Failed,
}

impl RefreshResult {
    const ALL: [&'static str; 3] = ["stored", "revalidated", "failed"];
}

/// How the origin answered the cache's conditional request for a stale entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revalidation {
    /// `304`: the entry is current; its headers were updated and it answered.
    NotModified,
    /// A new answer replaced it.
    Modified,
    /// No answer (connect error, timeout) or a `5xx`.
    Failed,
}

impl Revalidation {
    const ALL: [&'static str; 3] = ["not_modified", "modified", "failed"];
}

/// What a purge removed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeKind {
    Tag,
    Url,
    Key,
    Prefix,
    All,
    /// A successful unsafe request.
    Invalidation,
}

impl PurgeKind {
    const ALL: [&'static str; 6] = ["tag", "url", "key", "prefix", "all", "invalidation"];
}

/// Why an entry left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCause {
    /// Its stale windows ended.
    Expired,
    /// Memory was needed.
    Size,
}

/// The cache's metric handles.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    lookups: Family<LookupLabels, Counter>,
    /// Answers stored.
    pub stores: Counter,
    rejections: [Counter; RejectReason::ALL.len()],
    /// Entries in memory.
    pub entries: Gauge,
    /// Bytes the entries weigh.
    pub bytes: Gauge,
    evictions: [Counter; 2],
    purges: [Counter; 6],
    /// Entries invalidated by purges and unsafe requests.
    pub purged_entries: Counter,
    followers: [Counter; 3],
    refreshes: [Counter; 3],
    ranges: [Counter; 2],
    refreshed: Family<LookupLabels, Counter>,
    revalidations: Family<LookupLabels, Counter>,
    credential_keyed: Family<RouteLabels, Counter>,
    queries: Family<LookupLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

impl CacheMetrics {
    /// Registers the cache's metrics with `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let lookups = Family::<LookupLabels, Counter>::default();
        let rejections_family = Family::<ReasonLabels, Counter>::default();
        let evictions_family = Family::<CauseLabels, Counter>::default();
        let purges_family = Family::<KindLabels, Counter>::default();
        let followers_family = Family::<OutcomeLabels, Counter>::default();
        let refreshes_family = Family::<OutcomeLabels, Counter>::default();
        let ranges_family = Family::<OutcomeLabels, Counter>::default();
        let refreshed = Family::<LookupLabels, Counter>::default();
        let revalidations = Family::<LookupLabels, Counter>::default();
        let credential_keyed = Family::<RouteLabels, Counter>::default();
        let queries = Family::<LookupLabels, Counter>::default();
        let this = Self {
            lookups: lookups.clone(),
            stores: Counter::default(),
            rejections: RejectReason::ALL
                .map(|r| rejections_family.get_or_create(&ReasonLabels { reason: r.as_str() }).clone()),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            evictions: ["expired", "size"]
                .map(|cause| evictions_family.get_or_create(&CauseLabels { cause }).clone()),
            purges: PurgeKind::ALL.map(|kind| purges_family.get_or_create(&KindLabels { kind }).clone()),
            purged_entries: Counter::default(),
            followers: FollowerResult::ALL
                .map(|result| followers_family.get_or_create(&OutcomeLabels { result }).clone()),
            refreshes: RefreshResult::ALL
                .map(|result| refreshes_family.get_or_create(&OutcomeLabels { result }).clone()),
            ranges: ["partial", "unsatisfiable"]
                .map(|result| ranges_family.get_or_create(&OutcomeLabels { result }).clone()),
            refreshed: refreshed.clone(),
            revalidations: revalidations.clone(),
            credential_keyed: credential_keyed.clone(),
            queries: queries.clone(),
        };
        metrics.register("cache_lookups", "Requests on caching routes, by route and cache result", lookups);
        metrics.register("cache_stores", "Answers stored in the cache", this.stores.clone());
        metrics.register("cache_rejections", "Answers not stored, by reason", rejections_family);
        metrics.register("cache_entries", "Entries in the cache", this.entries.clone());
        metrics.register("cache_bytes", "Memory held by cache entries, in bytes", this.bytes.clone());
        metrics.register("cache_evictions", "Entries removed by expiry or for memory", evictions_family);
        metrics.register("cache_purges", "Purge and invalidation operations, by kind", purges_family);
        metrics.register(
            "cache_purged_entries",
            "Entries invalidated by purges and unsafe requests",
            this.purged_entries.clone(),
        );
        metrics.register(
            "cache_coalesced_followers",
            "Requests that waited for a leader's identical request, by how it ended",
            followers_family,
        );
        metrics.register(
            "cache_background_refreshes",
            "Background refreshes of stale entries, by result",
            refreshes_family,
        );
        metrics.register(
            "cache_range_answers",
            "Range requests answered from the cache, by whether the range was satisfiable",
            ranges_family,
        );
        metrics.register(
            "cache_refreshes",
            "Stale entries answered again by the origin, by route and whether the answer changed",
            refreshed,
        );
        metrics.register(
            "cache_revalidations",
            "Conditional requests for stale entries, by route and how the origin answered",
            revalidations,
        );
        metrics.register(
            "cache_credential_keyed",
            "Lookups keyed on a hash of the request's credentials (kept per user), by route",
            credential_keyed,
        );
        metrics.register(
            "cache_queries",
            "POSTs on routes that cache queries, by route and whether their body was keyed",
            queries,
        );
        this
    }

    /// Handles for `route`.
    pub fn route(&self, route: &RouteName) -> RouteCacheMetrics {
        let lookup = |result: CacheResult| match result {
            // Not a lookup: a detached counter keeps the array indexable without a series.
            CacheResult::None => Counter::default(),
            _ => self
                .lookups
                .get_or_create(&LookupLabels { route: route.as_str().to_owned(), result: result.as_str() })
                .clone(),
        };
        let refreshed = |result: &'static str| {
            self.refreshed.get_or_create(&LookupLabels { route: route.as_str().to_owned(), result }).clone()
        };
        let revalidation = |result: &'static str| {
            self.revalidations
                .get_or_create(&LookupLabels { route: route.as_str().to_owned(), result })
                .clone()
        };
        let query = |result: &'static str| {
            self.queries.get_or_create(&LookupLabels { route: route.as_str().to_owned(), result }).clone()
        };
        RouteCacheMetrics {
            lookups: CacheResult::ALL.map(lookup),
            queries: QUERY_RESULTS.map(query),
            refreshed: [refreshed("unchanged"), refreshed("changed")],
            revalidations: Revalidation::ALL.map(revalidation),
            credential_keyed: self
                .credential_keyed
                .get_or_create(&RouteLabels { route: route.as_str().to_owned() })
                .clone(),
        }
    }

    /// Counts an answer not stored.
    pub fn rejected(&self, reason: RejectReason) {
        let i = RejectReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejections[i].inc();
    }

    /// Counts an entry leaving the store.
    pub fn evicted(&self, cause: EvictionCause) {
        self.evictions[cause as usize].inc();
    }

    /// Counts a purge that invalidated `entries`.
    pub fn purged(&self, kind: PurgeKind, entries: u64) {
        self.purges[kind as usize].inc();
        self.purged_entries.inc_by(entries);
    }

    /// Counts a follower's end.
    pub fn follower(&self, result: FollowerResult) {
        self.followers[result.index()].inc();
    }

    /// Counts a range answered from a stored entry.
    pub fn range(&self, ranged: &super::range::Ranged) {
        let i = match ranged {
            super::range::Ranged::Partial(_) => 0,
            super::range::Ranged::Unsatisfiable => 1,
        };
        self.ranges[i].inc();
    }

    /// Counts a background refresh's end.
    pub fn refresh(&self, result: RefreshResult) {
        self.refreshes[result as usize].inc();
    }
}

/// One route's lookup counters.
#[derive(Debug, Clone)]
pub struct RouteCacheMetrics {
    lookups: [Counter; CacheResult::ALL.len()],
    /// Unchanged, changed.
    refreshed: [Counter; 2],
    /// In [`Revalidation`] order.
    revalidations: [Counter; 3],
    credential_keyed: Counter,
    /// By [`QUERY_RESULTS`].
    queries: [Counter; 3],
}

/// The `result` label of `accel_cache_queries_total`.
const QUERY_RESULTS: [&str; 3] = ["keyed", "body", "precondition"];

impl RouteCacheMetrics {
    /// Counts one request's cache result; `CacheResult::None` (the route does not cache) is
    /// not a lookup.
    pub fn lookup(&self, result: CacheResult) {
        if result == CacheResult::None {
            return;
        }
        let i = CacheResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.lookups[i].inc();
    }

    /// Counts a query (a POST on a route that caches them): keyed on its body (`None`), or
    /// passed uncached for `reason`.
    pub fn query(&self, reason: Option<BypassReason>) {
        let i = match reason {
            None => 0,
            Some(BypassReason::Precondition) => 2,
            Some(_) => 1,
        };
        self.queries[i].inc();
    }

    /// Counts a lookup keyed on the request's credentials.
    pub fn credential_keyed(&self) {
        self.credential_keyed.inc();
    }

    /// Counts a stale entry the origin answered again: `unchanged` for a 304 or the same
    /// ETag.
    pub fn refreshed(&self, unchanged: bool) {
        self.refreshed[usize::from(!unchanged)].inc();
    }

    /// Counts how the origin answered a revalidation.
    pub fn revalidated(&self, result: Revalidation) {
        self.revalidations[result as usize].inc();
    }
}
