//! A route's cache fields: what operators write (`cache = { ... }`, `invalidate = [...]`,
//! `coalesce = { ... }`) and the validated [`RouteCache`] the proxy runs on.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use serde::Deserialize;

use super::key::{KeySpec, QueryKey};
use super::tag::TagTemplate;
use crate::quantity::{parse_duration, parse_size};

/// `cache = { ... }` of a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRuleFile {
    /// Default true; false turns caching off while keeping the settings.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Freshness lifetime when the origin gives none (or always, with
    /// `origin_cache_control = false`).
    #[serde(default)]
    pub ttl: Option<String>,
    /// After `ttl`, how long a stale entry is served while one background request refreshes it.
    #[serde(default)]
    pub stale_while_revalidate: Option<String>,
    /// After `ttl`, how long a stale entry is served when the origin fails.
    #[serde(default)]
    pub stale_if_error: Option<String>,
    /// After the stale windows, how long an answer with `ETag` or `Last-Modified` stays to be
    /// revalidated. Default: `[cache] keep` of `accel.toml` (`1h`).
    #[serde(default)]
    pub keep: Option<String>,
    /// Tag templates attached to every entry of the route.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Largest body stored; larger ones stream through uncached. Default `1MiB`.
    #[serde(default)]
    pub max_object_size: Option<String>,
    /// Whether the origin's freshness directives win over `ttl`. Default true.
    #[serde(default)]
    pub origin_cache_control: Option<bool>,
    /// `"ignore"` (default) or `"revalidate"`: what a client's `no-cache` / `max-age=0` does.
    #[serde(default)]
    pub client_no_cache: Option<String>,
    /// Store answers that set cookies. Default false.
    #[serde(default)]
    pub allow_set_cookie: Option<bool>,
    /// Which request parts form the key.
    #[serde(default)]
    pub key: Option<KeyFile>,
    /// Share answers among requests with credentials as RFC 9111 §3.5 allows (`public`,
    /// `s-maxage`, `must-revalidate`). Default false: they are kept per user.
    #[serde(default)]
    pub share_authenticated: Option<bool>,
    /// Cookies that are credentials on this route, besides `Authorization` and
    /// `[cache] credential_cookies` of `accel.toml`.
    #[serde(default)]
    pub credential_cookies: Vec<String>,
    /// Methods whose answers are cached: `["GET", "HEAD"]` (default), plus `"POST"` for query
    /// caching (answers to POSTs keyed on a hash of their body).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Largest POST body hashed into the key (default `64KiB`); a larger one, or one without
    /// `Content-Length`, passes uncached.
    #[serde(default)]
    pub max_body_key: Option<String>,
    /// Origin directives the route ignores (nginx's `proxy_ignore_headers`): `"no-cache"`,
    /// `"private"`, `"expires"`, `"set-cookie"`, `"vary:NAME"`.
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// `key = { ... }` of a route's cache.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Default true.
    #[serde(default)]
    pub host: Option<bool>,
    /// `"all"` (default), `"none"`, or a list of parameter names.
    #[serde(default)]
    pub query: Option<QueryFile>,
    /// Request headers whose values enter the key.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Cookie names whose values enter the key.
    #[serde(default)]
    pub cookies: Vec<String>,
}

/// `query = "all" | "none" | ["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QueryFile {
    Mode(String),
    List(Vec<String>),
}

/// `coalesce = { ... }` of a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalesceFile {
    /// Default: true on caching routes, false elsewhere.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long a follower waits for the leader before going upstream itself. Default `5s`.
    #[serde(default)]
    pub follower_timeout: Option<String>,
}

/// A route's validated cache behaviour.
#[derive(Debug, Clone, Default)]
pub struct RouteCache {
    /// How the route caches; `None`: it does not.
    pub rule: Option<Arc<CacheRule>>,
    /// Tags invalidated when an unsafe request on the route succeeds.
    pub invalidate: Vec<TagTemplate>,
    /// Collapsing of identical concurrent misses.
    pub coalesce: CoalesceRule,
}

/// How a route caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Lifetime when the origin gives none; `None`: store only what the origin dates.
    pub ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Keep window of answers with validators; `None`: the sidecar's `[cache] keep`.
    pub keep: Option<Duration>,
    pub tags: Vec<TagTemplate>,
    /// Bytes.
    pub max_object_size: usize,
    pub origin_cache_control: bool,
    pub client_no_cache: ClientNoCache,
    pub allow_set_cookie: bool,
    pub key: KeySpec,
    /// Requests with credentials share answers as RFC 9111 §3.5 allows; false (the
    /// default): their key includes a keyed hash of the credentials (see
    /// [`super::credential`]).
    pub share_authenticated: bool,
    /// Cookie names that are credentials on this route (added to the sidecar's).
    pub credential_cookies: Vec<Box<str>>,
    /// Which methods' answers are cached.
    pub methods: CachedMethods,
    /// Largest POST body, in bytes, hashed into the key (query caching): a larger one passes
    /// uncached, and so does one without a declared length.
    pub max_body_key: u64,
    /// Origin directives the route ignores.
    pub ignore: OriginIgnores,
}

/// What of the origin's answer a route ignores when it decides to store (`cache.ignore`), for
/// an origin that marks everything uncacheable: its `no-cache` and `private` directives, its
/// `Expires`, its `Set-Cookie` (the stored copy then has none), members of its `Vary` (the
/// stored copy's `Vary` leaves them out, so one entry answers every value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginIgnores {
    pub no_cache: bool,
    pub private: bool,
    pub expires: bool,
    pub set_cookie: bool,
    /// `Vary` members ignored, lower case.
    pub vary: Vec<HeaderName>,
}

impl OriginIgnores {
    /// Trims what is ignored from the headers of a copy about to be stored: `Set-Cookie`, and
    /// the ignored members of `Vary` (a `Vary` left empty is removed).
    pub fn trim(&self, headers: &mut http::HeaderMap) {
        if self.set_cookie {
            headers.remove(http::header::SET_COOKIE);
        }
        if self.vary.is_empty() || !headers.contains_key(http::header::VARY) {
            return;
        }
        let kept: Vec<String> = super::policy::vary_names(headers)
            .filter(|name| !self.vary.iter().any(|ignored| ignored.as_str().eq_ignore_ascii_case(name)))
            .map(str::to_owned)
            .collect();
        headers.remove(http::header::VARY);
        if let Ok(value) = http::HeaderValue::try_from(kept.join(", "))
            && !kept.is_empty()
        {
            headers.insert(http::header::VARY, value);
        }
    }
}

/// Which methods' answers a route caches (`cache.methods`). A HEAD is answered from the GET
/// entry; a POST is a query, keyed on its body ([`super::key::CacheKey::query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedMethods {
    pub get: bool,
    pub head: bool,
    pub post: bool,
}

impl Default for CachedMethods {
    fn default() -> Self {
        Self { get: true, head: true, post: false }
    }
}

impl CachedMethods {
    /// True when answers to `method` are looked up and stored.
    pub fn includes(self, method: &http::Method) -> bool {
        match *method {
            http::Method::GET => self.get,
            http::Method::HEAD => self.head,
            http::Method::POST => self.post,
            _ => false,
        }
    }
}

/// Default `max_body_key`: 64 KiB.
pub const DEFAULT_MAX_BODY_KEY: u64 = 64 << 10;

impl Default for CacheRule {
    fn default() -> Self {
        Self {
            ttl: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            keep: None,
            tags: Vec::new(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            origin_cache_control: true,
            client_no_cache: ClientNoCache::Ignore,
            allow_set_cookie: false,
            key: KeySpec::default(),
            share_authenticated: false,
            credential_cookies: Vec::new(),
            methods: CachedMethods::default(),
            max_body_key: DEFAULT_MAX_BODY_KEY,
            ignore: OriginIgnores::default(),
        }
    }
}

/// Default `max_object_size`: 1 MiB.
pub const DEFAULT_MAX_OBJECT_SIZE: usize = 1 << 20;
/// Default `coalesce.follower_timeout`.
pub const DEFAULT_FOLLOWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client's `Cache-Control: no-cache` (or `max-age=0`, `Pragma: no-cache`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNoCache {
    /// Answer from the cache anyway: clients cannot force load onto the origin (nginx and
    /// Varnish do the same).
    Ignore,
    /// Go to the origin and store its answer.
    Revalidate,
}

/// Collapsing of identical concurrent misses into one upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceRule {
    pub enabled: bool,
    /// How long a follower waits for its leader.
    pub follower_timeout: Duration,
}

impl Default for CoalesceRule {
    fn default() -> Self {
        Self { enabled: false, follower_timeout: DEFAULT_FOLLOWER_TIMEOUT }
    }
}

/// Converts a route's `cache`, `invalidate` and `coalesce` fields; problems go to `at` with
/// the key they concern.
pub fn convert(
    cache: Option<CacheRuleFile>,
    invalidate: Vec<String>,
    coalesce: Option<CoalesceFile>,
    at: &mut impl FnMut(&str, String),
) -> RouteCache {
    let rule = cache.and_then(|file| convert_rule(file, at)).map(Arc::new);
    let invalidate = templates(&invalidate, "invalidate", at);
    let coalesce = {
        let CoalesceFile { enabled, follower_timeout } = coalesce.unwrap_or_default();
        let follower_timeout = match follower_timeout {
            None => DEFAULT_FOLLOWER_TIMEOUT,
            Some(text) => match parse_duration(&text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    at("coalesce.follower_timeout", "must be greater than zero".into());
                    DEFAULT_FOLLOWER_TIMEOUT
                }
                Err(e) => {
                    at("coalesce.follower_timeout", e);
                    DEFAULT_FOLLOWER_TIMEOUT
                }
            },
        };
        CoalesceRule { enabled: enabled.unwrap_or(rule.is_some()), follower_timeout }
    };
    RouteCache { rule, invalidate, coalesce }
}

fn convert_rule(file: CacheRuleFile, at: &mut impl FnMut(&str, String)) -> Option<CacheRule> {
    let CacheRuleFile {
        enabled,
        ttl,
        stale_while_revalidate,
        stale_if_error,
        keep,
        tags,
        max_object_size,
        origin_cache_control,
        client_no_cache,
        allow_set_cookie,
        key,
        share_authenticated,
        credential_cookies,
        methods,
        max_body_key,
        ignore,
    } = file;
    let mut duration = |key: &str, text: Option<String>| -> Option<Duration> {
        parse_duration(&text?).map_err(|e| at(key, e)).ok()
    };
    let ttl = duration("cache.ttl", ttl);
    let stale_while_revalidate = duration("cache.stale_while_revalidate", stale_while_revalidate);
    let stale_if_error = duration("cache.stale_if_error", stale_if_error);
    let keep = duration("cache.keep", keep);
    if ttl.is_some_and(|t| t.is_zero()) {
        at("cache.ttl", "must be greater than zero (omit it to store only what the origin dates)".into());
    }
    if ttl.is_none() && origin_cache_control == Some(false) {
        at("cache.ttl", "is required when `origin_cache_control = false`".into());
    }
    let tags = templates(&tags, "cache.tags", at);
    let max_object_size = match max_object_size {
        None => DEFAULT_MAX_OBJECT_SIZE,
        Some(text) => match parse_size(&text) {
            Ok(0) => {
                at("cache.max_object_size", "must be greater than zero".into());
                DEFAULT_MAX_OBJECT_SIZE
            }
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(e) => {
                at("cache.max_object_size", e);
                DEFAULT_MAX_OBJECT_SIZE
            }
        },
    };
    let client_no_cache = match client_no_cache.as_deref() {
        None | Some("ignore") => ClientNoCache::Ignore,
        Some("revalidate") => ClientNoCache::Revalidate,
        Some(other) => {
            at("cache.client_no_cache", format!("{other:?} is not one of \"ignore\", \"revalidate\""));
            ClientNoCache::Ignore
        }
    };
    let key = key.map_or_else(KeySpec::default, |k| convert_key(k, at));
    let credential_cookies = cookie_names(credential_cookies, "cache.credential_cookies", &mut *at);
    let methods = methods.map_or_else(CachedMethods::default, |m| cached_methods(&m, at));
    let max_body_key = match max_body_key {
        None => DEFAULT_MAX_BODY_KEY,
        Some(text) => parse_size(&text).unwrap_or_else(|e| {
            at("cache.max_body_key", e);
            DEFAULT_MAX_BODY_KEY
        }),
    };
    let ignore = origin_ignores(&ignore, at);
    let separates_users = key.includes_credentials()
        || !key.cookies.is_empty()
        || (!share_authenticated.unwrap_or(false) && !credential_cookies.is_empty());
    for (ignored, name) in [(ignore.private, "private"), (ignore.set_cookie, "set-cookie")] {
        if ignored && !separates_users {
            at(
                "cache.ignore",
                format!(
                    "ignoring {name:?} could serve one user's answer to another: key the route on \
                     the user (`key.headers = [\"authorization\"]`, `key.cookies`, or \
                     `credential_cookies`) first"
                ),
            );
        }
    }
    if enabled == Some(false) {
        return None;
    }
    Some(CacheRule {
        ttl: ttl.filter(|t| !t.is_zero()),
        stale_while_revalidate: stale_while_revalidate.unwrap_or_default(),
        stale_if_error: stale_if_error.unwrap_or_default(),
        keep,
        tags,
        max_object_size,
        origin_cache_control: origin_cache_control.unwrap_or(true),
        client_no_cache,
        allow_set_cookie: allow_set_cookie.unwrap_or(false),
        key,
        share_authenticated: share_authenticated.unwrap_or(false),
        credential_cookies,
        methods,
        max_body_key,
        ignore,
    })
}

/// `cache.ignore`: `no-cache`, `private`, `expires`, `set-cookie`, `vary:NAME`.
fn origin_ignores(names: &[String], at: &mut impl FnMut(&str, String)) -> OriginIgnores {
    let mut ignore = OriginIgnores::default();
    for name in names {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "no-cache" => ignore.no_cache = true,
            "private" => ignore.private = true,
            "expires" => ignore.expires = true,
            "set-cookie" => ignore.set_cookie = true,
            other => match other
                .strip_prefix("vary:")
                .map(|member| HeaderName::from_bytes(member.trim().as_bytes()))
            {
                Some(Ok(member)) => ignore.vary.push(member),
                _ => at(
                    "cache.ignore",
                    format!(
                        "{name:?} is not one of \"no-cache\", \"private\", \"expires\", \"set-cookie\", \"vary:NAME\""
                    ),
                ),
            },
        }
    }
    ignore
}

/// `cache.methods`: GET, HEAD and POST, any of them, at least one.
fn cached_methods(names: &[String], at: &mut impl FnMut(&str, String)) -> CachedMethods {
    let mut methods = CachedMethods { get: false, head: false, post: false };
    for name in names {
        match name.to_ascii_uppercase().as_str() {
            "GET" => methods.get = true,
            "HEAD" => methods.head = true,
            "POST" => methods.post = true,
            _ => at("cache.methods", format!("{name:?} cannot be cached: only GET, HEAD and POST")),
        }
    }
    if names.is_empty() {
        at("cache.methods", "lists no method (use `enabled = false` to stop caching)".into());
        return CachedMethods::default();
    }
    if methods.head && !methods.get {
        at("cache.methods", "HEAD is answered from the GET entry: list GET with it".into());
    }
    methods
}

fn convert_key(file: KeyFile, at: &mut impl FnMut(&str, String)) -> KeySpec {
    let KeyFile { host, query, headers, cookies } = file;
    let query = match query {
        None => QueryKey::All,
        Some(QueryFile::Mode(mode)) => match mode.as_str() {
            "all" => QueryKey::All,
            "none" => QueryKey::None,
            other => {
                at("cache.key.query", format!("{other:?} is not \"all\", \"none\" or a list of names"));
                QueryKey::All
            }
        },
        Some(QueryFile::List(names)) => QueryKey::Only(names.into_iter().map(Into::into).collect()),
    };
    let headers = headers
        .iter()
        .filter_map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| at("cache.key.headers", format!("{name:?} is not a header name")))
                .ok()
        })
        .collect();
    let cookies = cookie_names(cookies, "cache.key.cookies", &mut *at);
    KeySpec { host: host.unwrap_or(true), query, headers, cookies }
}

/// The valid cookie names of `names`; the others are problems at `key`.
pub fn cookie_names(names: Vec<String>, key: &str, mut at: impl FnMut(&str, String)) -> Vec<Box<str>> {
    names
        .into_iter()
        .filter(|name| {
            let ok = !name.is_empty() && !name.contains([';', '=', ' ', ',']);
            if !ok {
                at(key, format!("{name:?} is not a cookie name"));
            }
            ok
        })
        .map(Into::into)
        .collect()
}

fn templates(texts: &[String], key: &str, at: &mut impl FnMut(&str, String)) -> Vec<TagTemplate> {
    texts.iter().filter_map(|text| TagTemplate::parse(text).map_err(|e| at(key, e)).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (RouteCache, Vec<(String, String)>) {
        #[derive(Deserialize)]
        struct Fields {
            cache: Option<CacheRuleFile>,
            #[serde(default)]
            invalidate: Vec<String>,
            coalesce: Option<CoalesceFile>,
        }
        let fields: Fields = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let route = convert(fields.cache, fields.invalidate, fields.coalesce, &mut |k: &str, m: String| {
            problems.push((k.to_owned(), m))
        });
        (route, problems)
    }

    #[test]
    fn every_field_converts() {
        let (route, problems) = parse(
            r#"
            cache = { ttl = "5m", stale_while_revalidate = "30s", stale_if_error = "1h", keep = "2h", tags = ["lead:{path.id}"],
                      max_object_size = "64KiB", origin_cache_control = false, client_no_cache = "revalidate",
                      allow_set_cookie = true, key = { host = false, query = ["tier"], headers = ["Authorization"], cookies = ["sid"] },
                      share_authenticated = true, credential_cookies = ["session"] }
            invalidate = ["leads"]
            coalesce = { follower_timeout = "2s" }
            "#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let rule = route.rule.unwrap();
        assert_eq!(rule.ttl, Some(Duration::from_secs(300)));
        assert_eq!(rule.stale_if_error, Duration::from_secs(3600));
        assert_eq!(rule.keep, Some(Duration::from_secs(7200)));
        assert_eq!(rule.max_object_size, 64 << 10);
        assert!(!rule.origin_cache_control && rule.allow_set_cookie);
        assert_eq!(rule.client_no_cache, ClientNoCache::Revalidate);
        assert!(rule.key.includes_credentials());
        assert_eq!(rule.key.query, QueryKey::Only(vec!["tier".into()]));
        assert!(rule.share_authenticated);
        assert_eq!(rule.credential_cookies, vec![Box::<str>::from("session")]);
        assert_eq!(route.invalidate.len(), 1);
        assert_eq!(route.coalesce, CoalesceRule { enabled: true, follower_timeout: Duration::from_secs(2) });
    }

    #[test]
    fn coalescing_defaults_to_on_only_where_the_route_caches() {
        let (route, _) = parse("invalidate = []");
        assert!(route.rule.is_none() && !route.coalesce.enabled);
        let (route, _) = parse("coalesce = { enabled = true }");
        assert!(route.coalesce.enabled);
        let (route, _) = parse("cache = { enabled = false, ttl = \"1m\" }");
        assert!(route.rule.is_none() && !route.coalesce.enabled);
    }

    #[test]
    fn credentials_are_kept_per_user_unless_the_route_shares_them() {
        let (route, problems) = parse("cache = {}");
        assert!(problems.is_empty(), "{problems:?}");
        let rule = route.rule.unwrap();
        assert!(!rule.share_authenticated && rule.credential_cookies.is_empty());
    }

    #[test]
    fn queries_are_cached_only_where_the_route_lists_post() {
        let (route, problems) = parse("cache = {}");
        assert!(problems.is_empty(), "{problems:?}");
        let rule = route.rule.unwrap();
        assert_eq!(rule.methods, CachedMethods { get: true, head: true, post: false });
        assert_eq!(rule.max_body_key, DEFAULT_MAX_BODY_KEY);
        assert!(!rule.methods.includes(&http::Method::POST));
        let (route, problems) =
            parse(r#"cache = { methods = ["GET", "head", "POST"], max_body_key = "8KiB" }"#);
        assert!(problems.is_empty(), "{problems:?}");
        let rule = route.rule.unwrap();
        assert!(rule.methods.includes(&http::Method::POST) && rule.methods.includes(&http::Method::HEAD));
        assert!(!rule.methods.includes(&http::Method::PUT));
        assert_eq!(rule.max_body_key, 8 << 10);
        let (route, problems) = parse(r#"cache = { methods = ["POST"] }"#);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!route.rule.unwrap().methods.includes(&http::Method::GET), "a query-only route");
    }

    #[test]
    fn ignoring_private_or_set_cookie_needs_a_key_that_separates_users() {
        let (route, problems) =
            parse(r#"cache = { ignore = ["no-cache", "Expires", "vary:Accept-Language"] }"#);
        assert!(problems.is_empty(), "{problems:?}");
        let ignore = route.rule.unwrap().ignore.clone();
        assert!(ignore.no_cache && ignore.expires && !ignore.private && !ignore.set_cookie);
        assert_eq!(ignore.vary, [HeaderName::from_static("accept-language")]);
        for shared in [
            r#"cache = { ignore = ["private"] }"#,
            r#"cache = { ignore = ["set-cookie"], share_authenticated = true, credential_cookies = ["sid"] }"#,
        ] {
            let (_, problems) = parse(shared);
            assert_eq!(problems.len(), 1, "{shared}: {problems:?}");
            assert_eq!(problems[0].0, "cache.ignore");
        }
        for separated in [
            r#"cache = { ignore = ["private", "set-cookie"], key = { headers = ["authorization"] } }"#,
            r#"cache = { ignore = ["private"], key = { cookies = ["session"] } }"#,
            r#"cache = { ignore = ["set-cookie"], credential_cookies = ["session"] }"#,
        ] {
            let (_, problems) = parse(separated);
            assert!(problems.is_empty(), "{separated}: {problems:?}");
        }
        let (_, problems) = parse(r#"cache = { ignore = ["everything", "vary:bad name"] }"#);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn the_stored_copy_loses_what_is_ignored() {
        let ignore = OriginIgnores {
            set_cookie: true,
            vary: vec![HeaderName::from_static("accept-language")],
            ..OriginIgnores::default()
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("set-cookie", "sid=1".parse().unwrap());
        headers.insert("vary", "Accept-Language, Accept".parse().unwrap());
        ignore.trim(&mut headers);
        assert!(!headers.contains_key("set-cookie"));
        assert_eq!(headers["vary"], "Accept");
        headers.insert("vary", "accept-language".parse().unwrap());
        ignore.trim(&mut headers);
        assert!(!headers.contains_key("vary"), "a Vary left empty goes");
    }

    #[test]
    fn problems_name_their_key() {
        let (_, problems) = parse(
            r#"
            cache = { ttl = "soon", keep = "long", max_object_size = "big", client_no_cache = "always", tags = ["a {b}"],
                      key = { query = "some", headers = ["bad header"] }, credential_cookies = ["a=b"],
                      methods = ["PUT", "HEAD"], max_body_key = "lots" }
            invalidate = ["x:{nope.y}"]
            coalesce = { follower_timeout = "0s" }
            "#,
        );
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cache.ttl",
                "cache.keep",
                "cache.tags",
                "cache.max_object_size",
                "cache.client_no_cache",
                "cache.key.query",
                "cache.key.headers",
                "cache.credential_cookies",
                "cache.methods",
                "cache.methods",
                "cache.max_body_key",
                "invalidate",
                "coalesce.follower_timeout"
            ]
        );
    }
}
