//! Cache: a TTL response cache with tag invalidation, stale serving, conditional requests and
//! request coalescing, shared by every route (it survives rules reloads: it lives in
//! [`crate::proxy::Proxy`], not in the route table).
//!
//! The request path meets it four times (see [`crate::pipeline`]):
//!
//! 1. [`Cache::lookup`] (`lookup`): a fresh entry answers at once (a HEAD from the GET entry,
//!    a `304` to a matching conditional request); an entry within `stale_while_revalidate`
//!    answers, with the [`Pass`] of the one background request that refreshes it; otherwise
//!    a pass says what the forward is for (a miss to fill, a stale entry to revalidate, a
//!    write that invalidates, or a request the cache stays out of). Expired entries with a
//!    validator stay for the route's `keep` window after their stale windows, only to be
//!    revalidated (see [`store`] for how they leave first under memory pressure).
//! 2. [`Pass::coalesce`] (`pass`): identical concurrent misses elect one leader; followers
//!    take its [`Handoff`] (or go upstream on their own when it fails, cannot be shared, or
//!    is too slow).
//! 3. [`Pass::second_level`] (`second_level`): a memory miss looks in the shared Redis tier;
//!    with its coalescing lock, one sidecar of the cluster goes upstream for a key.
//! 4. [`Pass::complete`] (`pass`): the upstream answer is stored while it streams to the
//!    client (`collect`), a `304` refreshes the stale entry (and the second level), an
//!    origin failure within `stale_if_error` is answered from the stale entry (a
//!    `must-revalidate` one gets a `504` instead), and a successful unsafe request
//!    invalidates (`invalidate`) its URL, its `Location`/`Content-Location`, the route's
//!    `invalidate` tags and the tags in the origin's invalidation header.
//!
//! One job per file: `lookup`, `pass` (coalescing and the answer's way back), `collect` (the
//! body that stores an answer as it streams), `second_level`, `invalidate`, `answer` (answers
//! from entries and the cache's headers), [`purge`] (an operator's purge request). One concept
//! per file under them: [`key`] (the 128-bit key), [`credential`] (requests with credentials
//! keyed per user unless the route shares them), [`policy`] (RFC 9111 storability and
//! freshness), [`targeted`] (`CDN-Cache-Control` and Accel's own field, RFC 9213), [`entry`]
//! (a stored answer), [`store`] (moka, weighed in bytes, with O(1) tag purges), [`tag`] (tags
//! and templates), [`conditional`] (304s both ways), [`status`] (`Cache-Status`), [`rule`] and
//! [`config`] (operator fields → runtime), [`metrics`] and
//! [`clock`].

mod answer;
pub mod clock;
mod collect;
pub mod conditional;
pub mod config;
pub mod credential;
pub mod entry;
mod invalidate;
pub mod key;
mod lookup;
pub mod metrics;
mod pass;
pub mod policy;
pub mod purge;
pub mod range;
pub mod rule;
mod second_level;
pub mod status;
pub mod store;
pub mod tag;
pub mod targeted;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;
use http::header::{self, HeaderMap};
use http_body_util::BodyExt;

pub use clock::Clock;
pub use config::CacheConfig;
pub use entry::CacheEntry;
pub use key::CacheKey;
pub use metrics::{CacheMetrics, RouteCacheMetrics};
pub use rule::{CacheRule, RouteCache};
pub use status::{CacheResult, CacheStatus};
pub use store::CacheStore;
pub use tag::Tag;

use self::collect::{CollectBody, Collecting};
use self::credential::Credentials;
use self::entry::Staleness;
use self::invalidate::Invalidation;
use self::key::KeySpec;
use self::policy::{ClientDirective, Freshness, RejectReason};
use self::status::{BypassReason, CACHE_STATUS, X_CACHE_STATUS};
use self::store::Seq;
use self::tag::{TagSource, header_tags};
use crate::body::Body;
use crate::coalesce::{Coalescer, Role, Waited};
use crate::compress::RouteCompression;
use crate::metrics::Metrics;
use crate::params::PathParams;

/// What a leader hands its followers: the entry and the key of its variant.
#[derive(Debug)]
pub struct Handoff {
    pub entry: Arc<CacheEntry>,
    /// The leader's variant key ([`CacheKey::variant`] when the answer varies): a follower
    /// whose own variant differs goes upstream itself.
    pub variant: CacheKey,
}

type FlightLeader = crate::coalesce::Leader<CacheKey, Arc<Handoff>>;

/// The response cache and the requests in flight for it.
#[derive(Debug)]
pub struct Cache {
    pub store: CacheStore,
    pub config: CacheConfig,
    pub metrics: CacheMetrics,
    pub clock: Clock,
    flights: Coalescer<CacheKey, Arc<Handoff>>,
    /// The shared Redis tier, when `[redis]` is configured (see `second_level`).
    shared: std::sync::OnceLock<Arc<crate::tier::RedisTier>>,
}

/// The key of identical GETs collapsed on routes that do not cache: credentials and cookies
/// are in it, so that different users never share an answer.
fn collapse_key() -> KeySpec {
    KeySpec { headers: vec![header::AUTHORIZATION, header::COOKIE], ..KeySpec::default() }
}

/// The result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// The cache answered.
    Answer(Answer),
    /// A stale entry within `stale_while_revalidate` answered; `refresh` is the pass of the
    /// one background request that renews it, when this request is the one to send it.
    Stale { answer: Answer, refresh: Option<Pass> },
    /// The request goes upstream; the pass decides what happens to the answer.
    Forward(Pass),
}

/// One route's part in the cache, resolved when the rules load: its caching settings, its
/// lookup counters, and its compression (eager routes compress a stored entry at once).
#[derive(Debug)]
pub struct RouteCaching {
    pub settings: RouteCache,
    pub metrics: RouteCacheMetrics,
    pub compress: Option<Arc<RouteCompression>>,
    /// The route's answers get `X-Request-Id` after the cache (`forwarded.request_id`): an
    /// answer from an entry is made with the field in place, so that setting the id replaces
    /// a value instead of growing the map.
    pub request_id: bool,
}

/// What came back from upstream for a pass: the endpoint's answer, or the proxy's own error
/// answer when the forward failed (the pipeline's rescue point made it; a stale entry may
/// still stand in for it).
pub type Forwarded = Result<Response<Body>, Response<Body>>;

/// The result of [`Pass::coalesce`].
#[derive(Debug)]
pub enum Coalesced {
    /// The leader's answer.
    Answer(Answer),
    /// This request goes upstream (as the leader, or on its own).
    Forward(Pass),
}

/// The identity body of an answer from the cache and its compressed variants, carried in the
/// response's extensions to the compress stage, which then compresses once per entry and coding.
#[derive(Debug, Clone)]
pub struct CachedBody {
    pub body: bytes::Bytes,
    pub variants: crate::compress::Variants,
}

/// A response and the cache's part in it.
#[derive(Debug)]
pub struct Answer {
    pub response: Response<Body>,
    /// The `cache` label of request metrics.
    pub result: CacheResult,
}

/// What the cache does with one forwarded request.
#[derive(Debug)]
pub struct Pass {
    cache: Arc<Cache>,
    route: Arc<RouteCaching>,
    /// Count this request in the route's lookups (background refreshes are not requests).
    count: bool,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// The cache stays out: the route does not cache, or the request cannot use it. A write
    /// may still invalidate.
    Through { status: Option<CacheStatus>, invalidation: Option<Invalidation> },
    /// A miss or a stale entry: the answer may be stored and shared.
    Fill(Box<Fill>),
}

#[derive(Debug)]
struct Fill {
    key: CacheKey,
    /// `None`: a route that only collapses identical GETs.
    rule: Option<Arc<CacheRule>>,
    request: HeaderMap,
    credentials: Credentials,
    /// What the request asks of the entry.
    asked: Asked,
    /// The stale entry it may revalidate or fall back on.
    stale: Stale,
    /// Rule tags and the URL's tag.
    tags: Vec<Tag>,
    host: Box<str>,
    path: Box<str>,
    seq: Seq,
    /// Where it stands among identical requests in flight.
    flight: Flight,
    /// Store the answer.
    store: bool,
    /// The cluster-wide coalescing lock this request holds (see `second_level`): released
    /// once its answer is in the second level, or when it drops without one.
    cluster_lock: Option<crate::tier::ClusterLock>,
    /// Where the tier's purge sequence stood before the fetch: its answer goes to the second
    /// level only if no purge happened since (the second level's [`Fill::seq`]).
    purge_point: crate::tier::PurgePoint,
    /// Report this instead of a miss.
    bypass: Option<BypassReason>,
}

impl Fill {
    /// The method the request was made with, as far as answering from an entry goes.
    fn method(&self) -> http::Method {
        match self.asked {
            Asked::Get | Asked::Range => http::Method::GET,
            Asked::Head => http::Method::HEAD,
            Asked::Query => http::Method::POST,
        }
    }
}

/// What a forwarded request asks of the entry it may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A GET: the whole answer.
    Get,
    /// A GET with `Range`: its answer (a `206`, likely) is its own, so it neither leads nor
    /// follows identical requests, and a `206` passes through unstored (a `200` is stored).
    Range,
    /// A HEAD: answered from a GET entry, never stored.
    Head,
    /// A query (a POST keyed on its body): a stale entry is fetched again whole, never
    /// revalidated with validators (a condition on a POST asks something else of the origin).
    Query,
}

/// The stale entry of a forwarded request.
#[derive(Debug, Default)]
enum Stale {
    /// None: a miss.
    #[default]
    None,
    /// One to fall back on (within `stale_if_error`), or to replace.
    Kept(Arc<CacheEntry>),
    /// One whose validators were sent upstream: a `304` refreshes it.
    Revalidating(Arc<CacheEntry>),
}

impl Stale {
    /// The stale entry, if any.
    fn entry(&self) -> Option<&Arc<CacheEntry>> {
        match self {
            Self::None => None,
            Self::Kept(entry) | Self::Revalidating(entry) => Some(entry),
        }
    }

    /// Validators were sent upstream.
    fn revalidating(&self) -> bool {
        matches!(self, Self::Revalidating(_))
    }
}

/// Where a forwarded request stands among identical requests in flight.
#[derive(Debug)]
enum Flight {
    /// It goes upstream on its own: the route does not coalesce, or the request cannot
    /// share (HEAD, a bypass, a follower that waited too long).
    Alone,
    /// It leads: its answer is handed to the followers waiting for it.
    Leader(FlightLeader),
    /// A follower whose leader failed or could not share: it goes upstream on its own, past
    /// the second level the leader already looked in.
    Released,
}

impl Flight {
    /// The leader's handle, if this request leads; it then goes on alone.
    fn take_leader(&mut self) -> Option<FlightLeader> {
        match std::mem::replace(self, Self::Alone) {
            Self::Leader(leader) => Some(leader),
            other => {
                *self = other;
                None
            }
        }
    }
}

impl Cache {
    /// An empty cache with `config`'s memory bound and clock; metrics registered with
    /// `metrics`.
    pub fn new(config: CacheConfig, metrics: &Metrics) -> Self {
        let metrics = CacheMetrics::new(metrics);
        let clock = config.clock.clone();
        Self {
            store: CacheStore::new(config.memory, metrics.clone(), clock.clone()),
            config,
            metrics,
            clock,
            flights: Coalescer::default(),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Requests waiting for a leader now.
    pub fn waiting_followers(&self) -> usize {
        self.flights.followers()
    }

    pub(super) fn now_system(&self, now: clock::Millis) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(now)
    }

    /// The keep window of an answer with `headers` under `rule`: the route's `keep`, else
    /// the sidecar's; zero without a validator (`ETag`, `Last-Modified`) to revalidate with.
    pub(super) fn keep_for(&self, rule: &CacheRule, headers: &HeaderMap) -> Duration {
        if headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED) {
            rule.keep.unwrap_or(self.config.keep)
        } else {
            Duration::ZERO
        }
    }
}

/// The `ttl` of a stale entry in `Cache-Status`: negative whole seconds, at least one.
pub(super) fn stale_ttl(by: Duration) -> i64 {
    -(by.as_secs_f64().ceil() as i64).max(1)
}

/// True when `entry` may answer a request with `credentials`. A credential-keyed entry was
/// found under a key only the same credentials compute.
pub(super) fn usable(entry: &CacheEntry, credentials: Credentials, rule: &CacheRule) -> bool {
    match credentials {
        Credentials::None | Credentials::Keyed(_) => true,
        Credentials::Shared => entry.freshness.shared_with_credentials || rule.key.includes_credentials(),
    }
}

#[cfg(test)]
mod tests {
    //! Stage tests: the cache between a request and a fabricated upstream answer, in paused
    //! time (the system clock follows Tokio's).

    use http::{HeaderValue, Request, StatusCode};
    use http_body_util::BodyExt;

    use super::*;
    use crate::name::RouteName;

    fn setup(cache_rule: CacheRule) -> (Arc<Cache>, Arc<RouteCaching>) {
        let metrics = Metrics::new(&[1.0]);
        let cache = Arc::new(Cache::new(CacheConfig::default(), &metrics));
        let route = Arc::new(RouteCaching {
            settings: RouteCache {
                rule: Some(Arc::new(cache_rule)),
                invalidate: Vec::new(),
                coalesce: rule::CoalesceRule { enabled: true, follower_timeout: Duration::from_secs(5) },
            },
            metrics: cache.metrics.route(&RouteName::try_from("leads").unwrap()),
            compress: None,
            request_id: false,
        });
        (cache, route)
    }

    fn request(path: &str) -> Request<()> {
        Request::get(path).header("host", "api.test").body(()).unwrap()
    }

    fn request_as(path: &str, token: &str) -> Request<()> {
        Request::get(path).header("host", "api.test").header("authorization", token).body(()).unwrap()
    }

    fn upstream_answer(body: &'static str, cache_control: &'static str) -> Response<Body> {
        let mut response = Response::new(Body::full(body));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
        response
    }

    /// The proxy's own answer to an upstream that timed out.
    fn gateway_timeout() -> Response<Body> {
        let mut response = Response::new(Body::full("upstream timeout\n"));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        response
    }

    fn forward(lookup: Lookup) -> Pass {
        match lookup {
            Lookup::Forward(pass) => pass,
            Lookup::Answer(answer) | Lookup::Stale { answer, .. } => {
                panic!("expected a forward, got {:?}", answer.result)
            }
        }
    }

    fn answered(lookup: Lookup) -> Answer {
        match lookup {
            Lookup::Answer(answer) | Lookup::Stale { answer, .. } => answer,
            Lookup::Forward(_) => panic!("expected an answer from the cache"),
        }
    }

    async fn text(answer: Answer) -> String {
        let bytes = answer.response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_filled_miss_answers_until_it_is_stale_then_covers_an_upstream_error() {
        let (cache, route) =
            setup(CacheRule { stale_if_error: Duration::from_secs(60), ..CacheRule::default() });
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/1"), None);

        let miss = forward(look());
        let filled = miss.complete(Ok(upstream_answer("lead 1", "max-age=10")));
        assert_eq!(filled.result, CacheResult::Miss);
        assert_eq!(text(filled).await, "lead 1", "reading the body to its end stores it");

        tokio::time::advance(Duration::from_secs(9)).await;
        let hit = answered(look());
        assert_eq!(hit.result, CacheResult::Hit);
        assert_eq!(hit.response.headers()["age"], "9");

        tokio::time::advance(Duration::from_secs(2)).await;
        let stale = forward(look());
        let rescued = stale.complete(Err(gateway_timeout()));
        assert_eq!(rescued.result, CacheResult::Stale);
        assert_eq!(rescued.response.status(), StatusCode::OK);
        assert_eq!(text(rescued).await, "lead 1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_holds_the_request_id_field_so_that_setting_the_id_adds_none() {
        let (cache, route) = setup(CacheRule::default());
        let with_ids = RouteCaching {
            settings: route.settings.clone(),
            metrics: cache.metrics.route(&RouteName::try_from("leads").unwrap()),
            compress: None,
            request_id: true,
        };
        let with_ids = Arc::new(with_ids);
        let params = PathParams::default();
        let look = |route| cache.lookup(route, &params, Some("api.test"), &request("/lead/7"), None);
        text(forward(look(&route)).complete(Ok(upstream_answer("lead 7", "max-age=60")))).await;

        for _ in 0..2 {
            // The second hit is the kept headers' clone, whose map has room for no more
            // fields: the id's field must be there already, for the id to replace its value.
            let mut headers = answered(look(&with_ids)).response.into_parts().0.headers;
            let fields = headers.keys_len();
            assert!(headers.contains_key("x-request-id"), "{headers:?}");
            // As the pipeline sets the id.
            headers.insert("x-request-id", HeaderValue::from_static("7f3a"));
            assert_eq!(headers.keys_len(), fields, "set in place");
            assert_eq!(headers.get_all("x-request-id").iter().count(), 1);
        }
        // A route without ids gets no field, though the kept headers of the same second had it.
        let hit = answered(look(&route));
        assert!(!hit.response.headers().contains_key("x-request-id"), "{:?}", hit.response.headers());
    }

    fn with_etag(mut response: Response<Body>) -> Response<Body> {
        response.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        response
    }

    fn not_modified() -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=30"));
        response
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_entry_with_a_validator_is_kept_and_revalidated_until_its_keep_ends() {
        let (cache, route) =
            setup(CacheRule { keep: Some(Duration::from_secs(100)), ..CacheRule::default() });
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/4"), None);
        text(forward(look()).complete(Ok(with_etag(upstream_answer("lead 4", "max-age=10"))))).await;

        tokio::time::advance(Duration::from_secs(60)).await;
        let mut pass = forward(look());
        let mut upstream = HeaderMap::new();
        upstream.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"client\""));
        pass.prepare(&mut upstream);
        assert_eq!(upstream[header::IF_NONE_MATCH], "\"v1\"", "the cache's validator, not the client's");
        let revalidated = pass.complete(Ok(not_modified()));
        assert_eq!(revalidated.result, CacheResult::Revalidated);
        assert_eq!(revalidated.response.headers()["cache-control"], "max-age=30", "updated from the 304");
        assert_eq!(text(revalidated).await, "lead 4");
        assert_eq!(answered(look()).result, CacheResult::Hit, "freshness restarted");

        tokio::time::advance(Duration::from_secs(131)).await;
        let mut pass = forward(look());
        let mut upstream = HeaderMap::new();
        pass.prepare(&mut upstream);
        assert!(upstream.is_empty(), "past its keep window: fetched whole");
        assert_eq!(pass.complete(Ok(upstream_answer("lead 4b", "max-age=10"))).result, CacheResult::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_is_served_from_an_entry_and_forwarded_alone_otherwise() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let ranged = || {
            let request = Request::get("/lead/6").header("host", "api.test").header("range", "bytes=1-2");
            cache.lookup(&route, &params, Some("api.test"), &request.body(()).unwrap(), None)
        };
        // A miss: the range goes upstream as it is, and the origin's 206 is not stored.
        let mut pass = forward(ranged());
        let mut upstream = HeaderMap::new();
        upstream.insert(header::RANGE, HeaderValue::from_static("bytes=1-2"));
        pass.prepare(&mut upstream);
        assert_eq!(upstream[header::RANGE], "bytes=1-2");
        let mut partial = upstream_answer("ea", "max-age=60");
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        let answer = pass.complete(Ok(partial));
        assert_eq!(answer.response.headers()[CACHE_STATUS.clone()], "accel; fwd=miss; fwd-status=206");
        text(answer).await;
        // Filled whole, then sliced.
        text(
            forward(ranged())
                .complete(Ok(upstream_answer("lead 6", "max-age=10, stale-while-revalidate=60"))),
        )
        .await;
        let hit = answered(ranged());
        assert_eq!(hit.response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(hit.response.headers()[header::CONTENT_RANGE], "bytes 1-2/6");
        assert_eq!(text(hit).await, "ea");
        // A stale entry answers the range; its background refresh asks for the whole answer.
        tokio::time::advance(Duration::from_secs(11)).await;
        let Lookup::Stale { answer, refresh: Some(mut refresh) } = ranged() else { panic!("a stale answer") };
        assert_eq!(text(answer).await, "ea");
        let mut upstream = HeaderMap::new();
        upstream.insert(header::RANGE, HeaderValue::from_static("bytes=1-2"));
        upstream.insert(header::IF_RANGE, HeaderValue::from_static("\"v1\""));
        refresh.prepare(&mut upstream);
        assert!(upstream.is_empty(), "{upstream:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_must_revalidate_entry_whose_revalidation_fails_is_a_504() {
        let (cache, route) =
            setup(CacheRule { stale_if_error: Duration::from_secs(600), ..CacheRule::default() });
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/5"), None);
        let answer = with_etag(upstream_answer("lead 5", "max-age=10, must-revalidate"));
        text(forward(look()).complete(Ok(answer))).await;

        tokio::time::advance(Duration::from_secs(11)).await;
        let mut pass = forward(look());
        pass.prepare(&mut HeaderMap::new());
        let failed = pass.complete(Err(gateway_timeout()));
        assert_eq!(failed.response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            failed.response.headers()[CACHE_STATUS.clone()],
            "accel; fwd=stale; detail=must-revalidate"
        );
        assert_ne!(text(failed).await, "lead 5");

        let mut pass = forward(look());
        pass.prepare(&mut HeaderMap::new());
        let mut unavailable = upstream_answer("down", "no-store");
        *unavailable.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let failed = pass.complete(Ok(unavailable));
        assert_eq!(failed.response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            failed.response.headers()[CACHE_STATUS.clone()],
            "accel; fwd=stale; fwd-status=503; detail=must-revalidate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_the_leaders_answer() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/2"), None);

        let Coalesced::Forward(leader) = forward(look()).coalesce().await else {
            panic!("the first one leads")
        };
        // The follower is polled first: it joins the flight and waits; then the leader answers.
        let lead = async {
            assert_eq!(cache.waiting_followers(), 1, "the second one waits for the first");
            assert_eq!(text(leader.complete(Ok(upstream_answer("scored", "max-age=60")))).await, "scored");
        };
        let (followed, ()) = futures_util::future::join(forward(look()).coalesce(), lead).await;
        let Coalesced::Answer(answer) = followed else { panic!("the follower was answered") };
        assert_eq!(answer.response.headers()[CACHE_STATUS.clone()], "accel; fwd=miss; collapsed");
        assert_eq!(text(answer).await, "scored");
    }

    #[tokio::test(start_paused = true)]
    async fn hits_within_a_second_share_their_headers_and_the_next_second_updates_them() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let look = || cache.lookup(&route, &params, Some("api.test"), &request("/lead/3"), None);
        text(forward(look()).complete(Ok(upstream_answer("lead 3", "max-age=60")))).await;

        tokio::time::advance(Duration::from_millis(2_100)).await;
        for _ in 0..3 {
            let hit = answered(look());
            assert_eq!(hit.response.headers()["age"], "2");
            assert_eq!(hit.response.headers()[CACHE_STATUS.clone()], "accel; hit; ttl=57");
            assert_eq!(hit.response.headers()["cache-control"], "max-age=60");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let hit = answered(look());
        assert_eq!(hit.response.headers()["age"], "3");
        assert_eq!(hit.response.headers()[CACHE_STATUS.clone()], "accel; hit; ttl=56");
        assert_eq!(hit.response.headers().get_all("age").iter().count(), 1);
        assert_eq!(text(hit).await, "lead 3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_public_answer_to_one_user_is_kept_from_the_others_unless_the_route_shares() {
        for share in [false, true] {
            let (cache, route) = setup(CacheRule { share_authenticated: share, ..CacheRule::default() });
            let params = PathParams::default();
            let look = |token: &str| {
                cache.lookup(&route, &params, Some("api.test"), &request_as("/me", token), None)
            };

            let alice = forward(look("Bearer alice"));
            text(alice.complete(Ok(upstream_answer("alice's", "public, max-age=60")))).await;
            assert_eq!(text(answered(look("Bearer alice"))).await, "alice's");
            let bob = look("Bearer bob");
            if share {
                assert_eq!(text(answered(bob)).await, "alice's", "shared as RFC 9111 §3.5 allows");
            } else {
                let bob = forward(bob).complete(Ok(upstream_answer("bob's", "public, max-age=60")));
                assert_eq!(bob.result, CacheResult::Miss);
                assert_eq!(text(bob).await, "bob's");
                assert_eq!(text(answered(look("Bearer alice"))).await, "alice's");
                assert_eq!(text(answered(look("Bearer bob"))).await, "bob's");
                let anonymous = cache.lookup(&route, &params, Some("api.test"), &request("/me"), None);
                assert!(matches!(anonymous, Lookup::Forward(_)), "no credentials: no user's entry");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identical_misses_of_two_users_lead_a_flight_each() {
        let (cache, route) = setup(CacheRule::default());
        let params = PathParams::default();
        let look =
            |token: &str| cache.lookup(&route, &params, Some("api.test"), &request_as("/me", token), None);

        let Coalesced::Forward(alice) = forward(look("Bearer alice")).coalesce().await else {
            panic!("alice leads")
        };
        let bob = tokio::time::timeout(Duration::from_millis(1), forward(look("Bearer bob")).coalesce());
        let Ok(Coalesced::Forward(bob)) = bob.await else {
            panic!("bob leads his own flight: he never waits for alice's answer")
        };
        // Alice's second request is polled first: it joins her flight and waits.
        let answers = async {
            assert_eq!(cache.waiting_followers(), 1);
            text(bob.complete(Ok(upstream_answer("bob's", "public, max-age=60")))).await;
            text(alice.complete(Ok(upstream_answer("alice's", "public, max-age=60")))).await;
        };
        let (alice_again, ()) =
            futures_util::future::join(forward(look("Bearer alice")).coalesce(), answers).await;
        let Coalesced::Answer(answer) = alice_again else { panic!("alice's follower") };
        assert_eq!(text(answer).await, "alice's");
    }
}
