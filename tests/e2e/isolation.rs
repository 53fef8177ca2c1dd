//! Credentials are never shared by default: answers to requests with `Authorization` (or a
//! credential cookie) are cached per user whatever the origin's `Cache-Control` says, and a
//! route shares them only with `cache.share_authenticated = true`, as RFC 9111 §3.5 allows.
//!
//! The fake origin names the user it saw in every body, so a leak shows as another user's
//! name. Cache time is a manual clock that never moves: nothing expires during a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use accel::cache::Clock;
use accel_e2e::{FakeOrigin, OriginHandle, TestProxy, body, eventually_async, ms, require_redis};
use http::{Method, Response};

const USERS: usize = 50;
const PATHS: usize = 20;
const REQUESTS: usize = 6_000;
const CONCURRENCY: usize = 48;

/// The origin's answer headers, one variant per path family `/v{n}/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Public,
    MaxAgeOnly,
    SMaxAge,
    Private,
    NoCache,
    PublicVaryAuthorization,
    MaxAgeVaryAuthorization,
    /// `public, max-age=60` with a per-user ETag; clients send `If-None-Match` at random.
    PublicEtag,
}

impl Variant {
    const ALL: [Self; 8] = [
        Self::Public,
        Self::MaxAgeOnly,
        Self::SMaxAge,
        Self::Private,
        Self::NoCache,
        Self::PublicVaryAuthorization,
        Self::MaxAgeVaryAuthorization,
        Self::PublicEtag,
    ];

    fn of_path(path: &str) -> Self {
        let n: usize =
            path.split('/').nth(1).and_then(|v| v.strip_prefix('v')).and_then(|v| v.parse().ok()).unwrap();
        Self::ALL[n]
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap()
    }

    fn headers(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Public | Self::PublicEtag => ("public, max-age=60", None),
            Self::MaxAgeOnly => ("max-age=60", None),
            Self::SMaxAge => ("s-maxage=60", None),
            Self::Private => ("private, max-age=60", None),
            Self::NoCache => ("no-cache", None),
            Self::PublicVaryAuthorization => ("public, max-age=60", Some("Authorization")),
            Self::MaxAgeVaryAuthorization => ("max-age=60", Some("Authorization")),
        }
    }

    /// Shared among users on a route with `share_authenticated = true` (RFC 9111 §3.5).
    fn shareable(self) -> bool {
        matches!(self, Self::Public | Self::SMaxAge | Self::PublicEtag)
    }
}

/// Who a request is: users 0..USERS authenticate by bearer token (even) or session cookie
/// (odd); `None` is anonymous.
fn identify(user: Option<usize>) -> Vec<(&'static str, String)> {
    match user {
        None => vec![("cookie", "theme=dark".to_owned())],
        Some(u) if u % 2 == 0 => vec![("authorization", format!("Bearer user{u}"))],
        Some(u) => vec![("cookie", format!("theme=dark; session=user{u}"))],
    }
}

fn name(user: Option<usize>) -> String {
    user.map_or_else(|| "anonymous".to_owned(), |u| format!("user{u}"))
}

fn etag(user: &str, path: &str) -> String {
    format!("\"{user}{}\"", path.replace('/', "-"))
}

/// The origin: every answer names the user it saw (bearer token, else session cookie),
/// with the path's variant's headers; a little latency makes concurrent misses overlap.
fn origin() -> FakeOrigin {
    FakeOrigin::new().route("/v*", "").handler(|request| async move {
        tokio::time::sleep(ms(2)).await;
        let headers = request.headers();
        let path = request.uri().path().to_owned();
        let cookie_user = headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("session=").map(str::to_owned));
        let user = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or(cookie_user)
            .unwrap_or_else(|| "anonymous".to_owned());
        let variant = Variant::of_path(&path);
        let (cache_control, vary) = variant.headers();
        let mut answer = Response::builder().header("cache-control", cache_control);
        if let Some(vary) = vary {
            answer = answer.header("vary", vary);
        }
        if variant == Variant::PublicEtag {
            answer = answer.header("etag", etag(&user, &path));
        }
        answer.body(body::full(format!("{user} {path}"))).unwrap()
    })
}

/// A proxy with one route `api` (`cache = {cache}`) in front of `origin`, `sidecar` added to
/// `[cache]` of `accel.toml`, and a cache clock that never moves.
async fn proxy(origin: &OriginHandle, cache: &str, sidecar: &str) -> TestProxy {
    let clock = Clock::manual(1_700_000_000_000);
    builder(origin, cache, sidecar).config(move |config| config.cache.clock = clock).start().await
}

fn builder(origin: &OriginHandle, cache: &str, sidecar: &str) -> accel_e2e::TestProxyBuilder {
    TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&format!("[[route]]\nname = \"api\"\nupstream = \"api\"\ncache = {cache}\n"))
        .sidecar_toml(&format!("[cache]\nx_cache_status = true\npurge_token = \"t0ken\"\n{sidecar}"))
}

/// One request of a run, drawn from the seeded generator.
#[derive(Debug, Clone)]
struct Planned {
    user: Option<usize>,
    path: String,
    /// `If-None-Match` with this user's ETag (ETag variant only).
    if_none_match: Option<Option<usize>>,
}

fn plan(seed: u64) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..REQUESTS)
        .map(|_| {
            // One request in 25 is anonymous.
            let user = (rng.usize(..25) != 0).then(|| rng.usize(..USERS));
            let variant = Variant::ALL[rng.usize(..Variant::ALL.len())];
            let path = format!("/v{}/report/{}", variant.index(), rng.usize(..PATHS));
            let if_none_match = (variant == Variant::PublicEtag && rng.bool())
                .then(|| if rng.bool() { user } else { Some(rng.usize(..USERS)) });
            Planned { user, path, if_none_match }
        })
        .collect()
}

/// What a run saw: cross-user answers per variant, and requests with credentials.
#[derive(Debug, Default)]
struct Seen {
    crossed: [usize; Variant::ALL.len()],
    /// Of those, the ones where the asker or the answer's user has a bearer token
    /// (`Vary: Authorization` cannot tell cookie users and anonymous requests apart).
    crossed_bearer: [usize; Variant::ALL.len()],
    problems: Vec<String>,
    credentialed: usize,
}

/// Sends the planned requests, `CONCURRENCY` at a time in the planned order, and checks
/// every answer against the user who asked.
async fn run(proxy: &Arc<TestProxy>, planned: Vec<Planned>) -> Seen {
    let queue = Arc::new(std::sync::Mutex::new(planned.into_iter()));
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (proxy, queue, seen, done) = (proxy.clone(), queue.clone(), seen.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let Some(next) = queue.lock().unwrap().next() else { break };
                    check(&proxy, &next, &seen).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), REQUESTS);
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

async fn check(proxy: &TestProxy, planned: &Planned, seen: &std::sync::Mutex<Seen>) {
    let mut request = proxy.request(Method::GET, &planned.path);
    for (name, value) in identify(planned.user) {
        request = request.header(name, value);
    }
    if let Some(other) = planned.if_none_match {
        request = request.header("if-none-match", etag(&name(other), &planned.path));
    }
    let answer = proxy.send(request.body(body::empty()).unwrap()).await;
    let who = name(planned.user);
    let variant = Variant::of_path(&planned.path);
    let mut seen = seen.lock().unwrap();
    seen.credentialed += usize::from(planned.user.is_some());
    let bearer = |user: Option<usize>| user.is_some_and(|u| u % 2 == 0);
    let text = answer.text();
    let crossed_with = match answer.status.as_u16() {
        200 if text == format!("{who} {}", planned.path) => None,
        200 => match text.strip_suffix(&format!(" {}", planned.path)) {
            Some(other) => Some(other.strip_prefix("user").and_then(|n| n.parse::<usize>().ok())),
            None => {
                seen.problems.push(format!("{who} {}: {text:?}", planned.path));
                None
            }
        },
        // A 304 confirms the ETag sent: it must be the asker's own.
        304 if planned.if_none_match == Some(planned.user) => None,
        304 => planned.if_none_match,
        status => {
            seen.problems.push(format!("{who} {}: {status} {text:?}", planned.path));
            None
        }
    };
    if let Some(other) = crossed_with {
        seen.crossed[variant.index()] += 1;
        if bearer(planned.user) || bearer(other) {
            seen.crossed_bearer[variant.index()] += 1;
        }
    }
}

fn seed() -> u64 {
    std::env::var("ACCEL_ISOLATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

const SIDECAR_COOKIES: &str = "credential_cookies = [\"session\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_user_ever_gets_another_users_answer() {
    let seed = seed();
    let origin = origin().start().await;
    let proxy = Arc::new(proxy(&origin, "{}", SIDECAR_COOKIES).await);

    let seen = run(&proxy, plan(seed)).await;

    let rerun = format!("seed {seed} (rerun with ACCEL_ISOLATION_SEED={seed})");
    assert!(seen.problems.is_empty(), "{rerun}: {:?}", &seen.problems[..seen.problems.len().min(5)]);
    let crossed: Vec<_> = Variant::ALL.iter().zip(seen.crossed).filter(|(_, n)| *n > 0).collect();
    assert!(crossed.is_empty(), "{rerun}: cross-user answers {crossed:?}");
    assert!(
        origin.total_hits() < REQUESTS,
        "{rerun}: some answers came from the cache ({} of {REQUESTS} reached the origin)",
        origin.total_hits()
    );
    let keyed = proxy.metric(r#"accel_cache_credential_keyed_total{route="api"}"#).await;
    assert_eq!(keyed, seen.credentialed as f64, "{rerun}: every request with credentials was keyed per user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_share_authenticated_the_public_answers_are_shared_and_no_others() {
    let seed = seed();
    let origin = origin().start().await;
    let proxy = Arc::new(
        proxy(&origin, "{ share_authenticated = true, credential_cookies = [\"session\"] }", "").await,
    );

    let planned = plan(seed);
    let asked = |variant: Variant| {
        let pairs: std::collections::HashSet<_> = planned
            .iter()
            .filter(|p| Variant::of_path(&p.path) == variant)
            .map(|p| (p.user, p.path.clone()))
            .collect();
        pairs.len()
    };
    let asked: Vec<usize> = Variant::ALL.iter().map(|v| asked(*v)).collect();
    let seen = run(&proxy, planned).await;

    let rerun = format!("seed {seed} (rerun with ACCEL_ISOLATION_SEED={seed})");
    assert!(seen.problems.is_empty(), "{rerun}: {:?}", &seen.problems[..seen.problems.len().min(5)]);
    for variant in Variant::ALL {
        let crossed = seen.crossed[variant.index()];
        if variant.shareable() {
            assert!(crossed > 0, "{rerun}: {variant:?} answers were shared among users");
            // About one fetch per path, shared by everyone (concurrent misses coalesce; a
            // request that missed just before a leader stored may still fetch again), where
            // answers kept per user would need one per user and path.
            let hits: usize =
                (0..PATHS).map(|p| origin.hits(&format!("/v{}/report/{p}", variant.index()))).sum();
            let pairs = asked[variant.index()];
            assert!(
                hits * 4 < pairs,
                "{rerun}: {variant:?} reached the origin {hits} times for {pairs} (user, path) pairs"
            );
        } else if variant.headers().1.is_some() {
            // `Vary: Authorization` keeps bearer users apart, not cookie users: what the
            // origin said, which the opt-in trusts.
            let crossed = seen.crossed_bearer[variant.index()];
            assert_eq!(crossed, 0, "{rerun}: {variant:?} shared among bearer users despite Vary");
        } else {
            assert_eq!(crossed, 0, "{rerun}: {variant:?} must not be shared even with the opt-in");
        }
    }
    assert_eq!(proxy.metric(r#"accel_cache_credential_keyed_total{route="api"}"#).await, 0.0);
}

async fn get(proxy: &TestProxy, path: &str, user: Option<usize>) -> accel_e2e::Collected {
    let mut request = proxy.request(Method::GET, path);
    for (name, value) in identify(user) {
        request = request.header(name, value);
    }
    proxy.send(request.body(body::empty()).unwrap()).await
}

#[tokio::test]
async fn a_public_answer_is_kept_per_user_unless_the_route_opts_in() {
    let origin = origin().start().await;
    let isolated = proxy(&origin, "{}", SIDECAR_COOKIES).await;
    let shared = proxy(&origin, "{ share_authenticated = true }", SIDECAR_COOKIES).await;
    let path = "/v0/report/1";

    for proxy in [&isolated, &shared] {
        assert_eq!(get(proxy, path, Some(0)).await.header("x-cache-status"), Some("MISS"));
        assert_eq!(get(proxy, path, Some(0)).await.header("x-cache-status"), Some("HIT"));
    }
    let bob = get(&isolated, path, Some(2)).await;
    assert_eq!((bob.text(), bob.header("x-cache-status")), ("user2 /v0/report/1".into(), Some("MISS")));
    let carol = get(&isolated, path, Some(3)).await;
    assert_eq!(carol.text(), "user3 /v0/report/1", "a session cookie is a credential too");
    let anonymous = get(&isolated, path, None).await;
    assert_eq!(anonymous.text(), "anonymous /v0/report/1");
    assert_eq!(origin.hits(path), 5, "isolated: one fetch per user; shared: one for all");

    let bob = get(&shared, path, Some(2)).await;
    assert_eq!((bob.text(), bob.header("x-cache-status")), ("user0 /v0/report/1".into(), Some("HIT")));
    let max_age_only = get(&shared, "/v1/report/1", Some(0)).await;
    assert_eq!(
        max_age_only.header("cache-status"),
        Some("accel; fwd=miss; fwd-status=200"),
        "max-age alone does not let a shared cache store an answer to credentials"
    );
}

#[tokio::test]
async fn a_write_and_a_tag_purge_empty_every_users_entry() {
    let origin = origin().start().await;
    let proxy = proxy(&origin, "{ tags = [\"reports\"] }", SIDECAR_COOKIES).await;
    let path = "/v0/report/7";
    for user in [Some(0), Some(1), None] {
        get(&proxy, path, user).await;
        assert_eq!(get(&proxy, path, user).await.header("x-cache-status"), Some("HIT"));
    }
    let write = proxy.request(Method::POST, path).header("authorization", "Bearer user0");
    let written = proxy.send(write.body(body::empty()).unwrap()).await;
    assert_eq!(written.status, 200);
    for user in [Some(1), None, Some(0)] {
        let after = get(&proxy, path, user).await;
        assert_eq!(after.header("x-cache-status"), Some("MISS"), "user {user:?}'s entry was invalidated");
        assert_eq!(after.text(), format!("{} {path}", name(user)));
    }

    // Entries the write invalidated are swept now, so that the purge counts only live ones.
    proxy.proxy().cache.store.run_pending_tasks();
    let purge = accel::cache::purge::PurgeRequest { tags: vec!["reports".into()], ..Default::default() };
    let counts = proxy.proxy().cache.purge(&purge).expect("purge");
    assert_eq!(counts.tags, 3, "one entry per user");
    for user in [Some(0), Some(1), None] {
        assert_eq!(get(&proxy, path, user).await.header("x-cache-status"), Some("MISS"));
    }
}

#[tokio::test]
async fn per_user_entries_reach_redis_only_with_a_configured_credential_key() {
    let Some(url) = require_redis() else { return };
    let origin = origin().start().await;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let redis = |test: &str, key: &str| {
        format!(
            "{SIDECAR_COOKIES}{key}\n[redis]\nurl = \"{url}\"\nprefix = \"e2e:isolation:{test}:{}:{nanos}:\"\ntimeout = \"500ms\"\n",
            std::process::id()
        )
    };
    let key = "credential_key = \"0123456789abcdef0123456789abcdef\"";
    for (test, key, shared) in [("keyed", key, true), ("unkeyed", "", false)] {
        let config = redis(test, key);
        // The system clock: Redis keeps entries by wall-clock lifetime.
        let a = builder(&origin, "{}", &config).start().await;
        let b = builder(&origin, "{}", &config).start().await;
        super::redis::redis_up("both sidecars subscribed", &[&a, &b]).await;
        let path = format!("/v0/report/{}", usize::from(shared) + 10);

        assert_eq!(get(&a, &path, Some(0)).await.text(), format!("user0 {path}"));
        get(&a, &path, None).await;
        // The anonymous answer goes to Redis in any case: once it is there, so would the
        // per-user one have been (both are written after their bodies end).
        let expected = if shared { 2.0 } else { 1.0 };
        eventually_async("A's answers reached Redis", || async {
            a.metric(r#"accel_redis_l2_total{result="stored"}"#).await == expected
        })
        .await;
        let alice = get(&b, &path, Some(0)).await;
        assert_eq!(alice.text(), format!("user0 {path}"));
        assert_eq!(
            alice.header("x-cache-status"),
            Some(if shared { "HIT" } else { "MISS" }),
            "{test}: B finds alice's entry in Redis only with a configured key"
        );
        let bob = get(&b, &path, Some(2)).await;
        assert_eq!((bob.text(), bob.header("x-cache-status")), (format!("user2 {path}"), Some("MISS")));
        let stored = a.metric(r#"accel_redis_l2_total{result="stored"}"#).await;
        assert_eq!(stored, expected, "{test}: A wrote {stored} entries to Redis");
    }
}
