//! Rules files → [`RuleSet`]: every `[[route]]` of every file matched by the configured globs,
//! in match order (files sorted by path, routes in file order).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use super::Problems;
use super::file::{MatchFile, RetryFile, RouteFile, TimeoutsFile};
use crate::quantity::duration;
use crate::route::{
    HostMatch, Matcher, PathMatch, PathPattern, RetryPolicy, RouteName, RouteRule, Timeouts, Upgrades,
};
use crate::upstream::UpstreamName;

/// All routes of all rules files, validated, in match order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub routes: Vec<RouteRule>,
    /// The files that were read, in order (watched for changes).
    pub files: Vec<PathBuf>,
}

/// Expands the globs, reads and converts every file. `upstreams` are the names a route may use.
pub fn load(globs: &[String], upstreams: &HashSet<UpstreamName>) -> Result<RuleSet, Problems> {
    let mut problems = Problems::default();
    let mut files = Vec::new();
    for pattern in globs {
        match glob::glob(pattern) {
            Ok(paths) => {
                let before = files.len();
                for entry in paths {
                    match entry {
                        Ok(path) => files.push(path),
                        Err(e) => problems.at(e.path(), "", format!("cannot read: {}", e.error())),
                    }
                }
                if files.len() == before && !pattern.contains(['*', '?', '[']) {
                    problems.at(Path::new(pattern), "", "file not found");
                }
            }
            Err(e) => problems.at(Path::new(pattern), "", format!("invalid glob pattern: {e}")),
        }
    }
    files.sort();
    files.dedup();
    let mut routes = Vec::new();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => routes.extend(parse(file, &text, upstreams, &mut problems)),
            Err(e) => problems.at(file, "", format!("cannot read: {e}")),
        }
    }
    let mut seen: HashMap<&RouteName, &Path> = HashMap::new();
    for route in &routes {
        if let Some(first) = seen.insert(&route.name, &route.file) {
            problems.in_route(
                &route.file,
                &format!("{:?}", route.name.as_str()),
                "name",
                format!("duplicate route name (first defined in {})", first.display()),
            );
        }
    }
    problems.into_result(RuleSet { routes, files })
}

/// Converts one rules file's text; problems are added to `problems`.
pub fn parse(
    file: &Path,
    text: &str,
    upstreams: &HashSet<UpstreamName>,
    problems: &mut Problems,
) -> Vec<RouteRule> {
    let document: toml::Table = match toml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.at(file, "", format!("invalid TOML: {}", e.to_string().trim()));
            return Vec::new();
        }
    };
    let file_arc: Arc<Path> = Arc::from(file);
    let mut routes = Vec::new();
    for (key, value) in document {
        if key != "route" {
            problems.at(file, &key, "unknown key (a rules file holds [[route]] tables)");
            continue;
        }
        let toml::Value::Array(items) = value else {
            problems.at(file, "route", "must be an array of tables: [[route]]");
            continue;
        };
        for (i, item) in items.into_iter().enumerate() {
            let label = item
                .get("name")
                .and_then(toml::Value::as_str)
                .map_or_else(|| format!("#{}", i + 1), |n| format!("{n:?}"));
            if let Some(route) = deserialize_route(file, &label, item, problems)
                && let Some(rule) = convert(file_arc.clone(), &label, route, upstreams, problems)
            {
                routes.push(rule);
            }
        }
    }
    routes
}

/// Deserializes one `[[route]]` table, reporting every key it cannot take, not only the first.
///
/// serde stops at the first problem, so each problem's key is taken out of the table and the
/// rest deserialized again, until one pass has none. A required key taken out that way is not
/// reported again as missing. The route is only returned when it had no problem at all.
fn deserialize_route(
    file: &Path,
    label: &str,
    mut item: toml::Value,
    problems: &mut Problems,
) -> Option<RouteFile> {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, RouteFile>(item.clone()) {
            Ok(route) => return removed.is_empty().then_some(route),
            Err(error) => error,
        };
        let path = error.path();
        let key = path.to_string();
        let key = if key == "." { String::new() } else { key };
        // The first line: the key already says where (toml adds an "in `table`" line).
        let message = error.inner().to_string();
        let message = message.lines().next().unwrap_or_default();
        let repeated = removed.iter().any(|gone| is_missing_field(&key, message, gone));
        if !repeated {
            problems.in_route(file, label, &key, message.trim());
        }
        if key.is_empty() || repeated || !remove(&mut item, path) {
            // Nothing more to take out: what is left cannot be read.
            return None;
        }
        removed.push(key);
    }
}

/// True for serde's "missing field" error about `gone`, a key taken out after an earlier
/// problem.
fn is_missing_field(key: &str, message: &str, gone: &str) -> bool {
    let field = gone.rsplit('.').next().unwrap_or(gone);
    let parent = gone.strip_suffix(field).map_or("", |p| p.trim_end_matches('.'));
    message.starts_with(&format!("missing field `{field}`")) && key == parent
}

/// Takes the value at `path` out of `item`; false when the path does not lead to one.
fn remove(item: &mut toml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else { return false };
    let mut value = item;
    for segment in parents {
        let next = match (segment, value) {
            (Segment::Map { key }, toml::Value::Table(table)) => table.get_mut(key.as_str()),
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        value = next;
    }
    match (last, value) {
        (Segment::Map { key }, toml::Value::Table(table)) => table.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, toml::Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

fn convert(
    file: Arc<Path>,
    label: &str,
    route: RouteFile,
    upstreams: &HashSet<UpstreamName>,
    problems: &mut Problems,
) -> Option<RouteRule> {
    let RouteFile {
        name,
        matcher,
        upstream,
        timeouts,
        retry,
        cache,
        invalidate,
        coalesce,
        rate_limit,
        compress,
        slo,
        warm,
        timing,
        max_body_size,
        upgrades,
        upgrade_idle_timeout,
    } = route;
    let before = problems.0.len();
    let mut at = |key: &str, message: String| problems.in_route(&file, label, key, message);

    let name = RouteName::try_from(name.as_str()).map_err(|e| at("name", e)).ok();
    let matcher = compile_match(matcher, &mut at);
    let upstream_name = match UpstreamName::try_from(upstream.as_str()) {
        Ok(u) if upstreams.contains(&u) => Some(u),
        _ => {
            let mut known: Vec<&str> = upstreams.iter().map(UpstreamName::as_str).collect();
            known.sort_unstable();
            at("upstream", format!("unknown upstream {upstream:?} (defined: {})", known.join(", ")));
            None
        }
    };
    let retry = retry.map_or_else(RetryPolicy::default, |r| {
        let RetryFile { attempts, statuses } = r;
        let attempts = match attempts {
            None => NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            Some(n) => NonZeroU32::new(n).unwrap_or_else(|| {
                at("retry.attempts", "must be at least 1 (1 means no retry)".into());
                NonZeroU32::MIN
            }),
        };
        let statuses = statuses
            .iter()
            .filter_map(|&code| match StatusCode::from_u16(code) {
                Ok(s) if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Some(s),
                _ => {
                    at("retry.statuses", format!("{code} is not a retryable status (429 or 5xx)"));
                    None
                }
            })
            .collect();
        RetryPolicy { attempts, statuses }
    });
    let timeouts = {
        let TimeoutsFile { response, total } = timeouts;
        let mut scratch = Problems::default();
        let response_d = duration(&mut scratch, &file, "timeouts.response", response, 30);
        let total_d = match total {
            Some(_) => duration(&mut scratch, &file, "timeouts.total", total, 60),
            None => response_d.saturating_mul(retry.attempts.get()).min(Duration::from_secs(3600)),
        };
        for p in scratch.0 {
            at(p.key.as_deref().unwrap_or(""), p.message);
        }
        if total_d < response_d {
            at("timeouts.total", "must not be shorter than timeouts.response".into());
        }
        Timeouts { response: response_d, total: total_d }
    };
    let compress = compress.map(|c| crate::compress::CompressSettings::convert(c, &mut at));
    let cache = crate::cache::rule::convert(cache, invalidate, coalesce, &mut at);
    let rate_limit = rate_limit.map_or_else(Vec::new, |limits| {
        let params: Vec<&str> = match &matcher.path {
            PathMatch::Pattern(pattern) => pattern.param_names().collect(),
            _ => Vec::new(),
        };
        crate::limit::rule::convert(limits, &params, &mut at)
    });
    let (slo, warm) = crate::route::slo::convert(slo, warm, &mut at);
    let timing = crate::route::timing::convert(timing, &mut at);
    let max_body_size = max_body_size.and_then(|text| match crate::quantity::parse_size(&text) {
        Ok(0) => {
            at("max_body_size", "must be greater than zero".into());
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            at("max_body_size", e);
            None
        }
    });
    let upgrades = {
        let mut scratch = Problems::default();
        let idle_timeout = duration(&mut scratch, &file, "upgrade_idle_timeout", upgrade_idle_timeout, 300);
        for p in scratch.0 {
            at(p.key.as_deref().unwrap_or(""), p.message);
        }
        for protocol in &upgrades {
            if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                at("upgrades", format!("{protocol:?} is not a protocol name (as `Upgrade` names it)"));
            }
        }
        Upgrades { protocols: upgrades.iter().map(|p| p.to_ascii_lowercase()).collect(), idle_timeout }
    };
    if problems.0.len() != before {
        return None;
    }
    Some(RouteRule {
        name: name?,
        file,
        matcher,
        upstream: upstream_name?,
        timeouts,
        retry,
        cache,
        rate_limit,
        compress,
        slo,
        warm,
        timing,
        max_body_size,
        upgrades,
    })
}

fn compile_match(m: MatchFile, at: &mut impl FnMut(&str, String)) -> Matcher {
    let MatchFile { host, methods, path, path_prefix } = m;
    let host = host.and_then(|h| HostMatch::parse(&h).map_err(|e| at("match.host", e)).ok());
    let methods = methods.map(|list| {
        if list.is_empty() {
            at("match.methods", "must list at least one method (omit it for any)".into());
        }
        list.iter()
            .filter_map(|m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    at("match.methods", format!("{m:?} is not an HTTP method"));
                    None
                }
            })
            .collect()
    });
    let path = match (path, path_prefix) {
        (Some(_), Some(_)) => {
            at("match", "give either `path` or `path_prefix`, not both".into());
            PathMatch::Any
        }
        (Some(path), None) => match PathPattern::parse(&path) {
            Ok(pattern) if pattern.has_params() => PathMatch::Pattern(pattern),
            Ok(_) => PathMatch::Exact(path),
            Err(e) => {
                at("match.path", e);
                PathMatch::Any
            }
        },
        (None, Some(prefix)) if !prefix.starts_with('/') => {
            at("match.path_prefix", format!("{prefix:?} must start with /"));
            PathMatch::Any
        }
        (None, Some(prefix)) if prefix == "/" => PathMatch::Any,
        (None, Some(prefix)) => PathMatch::Prefix(prefix),
        (None, None) => PathMatch::Any,
    };
    Matcher { host, methods, path }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> HashSet<UpstreamName> {
        ["api"].into_iter().map(|n| UpstreamName::try_from(n).unwrap()).collect()
    }

    fn parse_str(text: &str) -> (Vec<RouteRule>, Problems) {
        let mut problems = Problems::default();
        let routes = parse(Path::new("rules/test.toml"), text, &upstreams(), &mut problems);
        (routes, problems)
    }

    #[test]
    fn upgrades_are_off_by_default_and_listed_protocols_pass() {
        let (routes, problems) = parse_str("[[route]]\nname = \"up\"\nupstream = \"api\"\n");
        assert!(problems.0.is_empty());
        assert!(routes[0].upgrades.protocols.is_empty());
        assert!(!routes[0].upgrades.allows("websocket"));
        assert_eq!(routes[0].upgrades.idle_timeout, Duration::from_secs(300));

        let text = "[[route]]\nname = \"up\"\nupstream = \"api\"\nupgrades = [\"WebSocket\"]\nupgrade_idle_timeout = \"1h\"\n";
        let (routes, problems) = parse_str(text);
        assert!(problems.0.is_empty(), "{problems:?}");
        assert!(routes[0].upgrades.allows("websocket") && routes[0].upgrades.allows("WEBSOCKET/13"));
        assert!(!routes[0].upgrades.allows("h2c"));
        assert_eq!(routes[0].upgrades.idle_timeout, Duration::from_secs(3600));

        let (routes, problems) =
            parse_str("[[route]]\nname = \"up\"\nupstream = \"api\"\nupgrades = [\"web socket\"]\n");
        assert!(routes.is_empty());
        assert!(format!("{problems:?}").contains("upgrades"), "{problems:?}");
    }

    #[test]
    fn the_way_back_counts_each_field_a_stage_of_the_route_adds() {
        use crate::limit::RouteLimits;
        use crate::route::Route;
        let none = RouteLimits::default();
        let (plain, _) = parse_str("[[route]]\nname = \"r\"\nupstream = \"api\"\n");
        assert_eq!(Route::added_fields(&plain[0], 0, 2, false, &none), 0);
        assert_eq!(Route::added_fields(&plain[0], 2, 2, false, &none), 2, "the id and Via");
        assert_eq!(Route::added_fields(&plain[0], 0, 2, true, &none), 2, "Content-Encoding and Vary");

        let (cached, _) =
            parse_str("[[route]]\nname = \"r\"\nupstream = \"api\"\ncache = { ttl = \"1m\" }\n");
        assert_eq!(Route::added_fields(&cached[0], 1, 1, false, &none), 2);
        assert_eq!(Route::added_fields(&cached[0], 1, 2, true, &none), 5);
        let text = "[[route]]\nname = \"r\"\nupstream = \"api\"\ntiming = { server_timing = true, response_time = true }\n";
        let (timed, _) = parse_str(text);
        assert_eq!(Route::added_fields(&timed[0], 1, 2, false, &none), 3);
        let policy = crate::forward::headers::ForwardedConfig::default();
        assert_eq!(policy.answer_fields(), 1, "ids on, no Via");
    }

    #[test]
    fn a_route_body_limit_is_a_size() {
        let (routes, problems) =
            parse_str("[[route]]\nname = \"up\"\nupstream = \"api\"\nmax_body_size = \"10MiB\"\n");
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(routes[0].max_body_size, Some(10 << 20));
        let (routes, _) = parse_str("[[route]]\nname = \"up\"\nupstream = \"api\"\n");
        assert_eq!(routes[0].max_body_size, None, "the [limits] default applies");
        let (_, problems) =
            parse_str("[[route]]\nname = \"up\"\nupstream = \"api\"\nmax_body_size = \"lots\"\n");
        assert!(problems.to_string().contains("key `max_body_size`"), "{problems}");
    }

    #[test]
    fn a_valid_route_converts() {
        let (routes, problems) = parse_str(
            r#"
            [[route]]
            name = "lead"
            match = { methods = ["get"], path = "/api/leads/{id}" }
            upstream = "api"
            timeouts = { response = "2s" }
            retry = { attempts = 3, statuses = [502, 503] }
            "#,
        );
        assert!(problems.is_empty(), "{problems}");
        let route = &routes[0];
        assert_eq!(route.name.as_str(), "lead");
        assert!(matches!(route.matcher.path, PathMatch::Pattern(_)));
        assert_eq!(route.timeouts.total, Duration::from_secs(6));
        assert_eq!(route.retry.attempts.get(), 3);
    }

    #[test]
    fn every_problem_is_reported_with_file_route_and_key() {
        let (_, problems) = parse_str(
            r#"
            [[route]]
            name = "one"
            match = { path = "/a/{}" }
            upstream = "nope"
            timeouts = { response = "soon" }

            [[route]]
            name = "two"
            upstream = "api"
            cache = { ttl = "5m", colour = "blue" }
            "#,
        );
        let text = problems.to_string();
        assert!(text.contains(r#"rules/test.toml: route "one": key `match.path`"#), "{text}");
        assert!(text.contains(r#"route "one": key `upstream`: unknown upstream "nope""#), "{text}");
        assert!(text.contains(r#"route "one": key `timeouts.response`: invalid duration"#), "{text}");
        assert!(text.contains(r#"route "two""#), "{text}");
        assert_eq!(problems.0.len(), 4, "{text}");
    }

    #[test]
    fn every_bad_key_of_one_route_is_reported_not_only_the_first() {
        let (routes, problems) = parse_str(
            r#"
            [[route]]
            name = "one"
            match = { path_prefix = "/" }
            upstream = 3
            colour = "red"
            timeouts = { total = "1s", bogus = 2 }

            [[route]]
            name = "two"
            match = { path_prefix = "/two" }
            upstream = "api"
            "#,
        );
        let text = problems.to_string();
        assert!(text.contains(r#"route "one": key `upstream`: invalid type: integer `3`"#), "{text}");
        assert!(text.contains(r#"route "one": key `colour`: unknown field `colour`"#), "{text}");
        assert!(text.contains(r#"route "one": key `timeouts.bogus`: unknown field `bogus`"#), "{text}");
        // The bad `upstream` is not reported a second time as missing.
        assert!(!text.contains("missing field"), "{text}");
        assert_eq!(problems.0.len(), 3, "{text}");
        assert_eq!(routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["two"]);
    }

    #[test]
    fn timing_tables_convert_and_their_problems_name_file_route_and_key() {
        let (routes, problems) = parse_str(
            r#"
            [[route]]
            name = "timed"
            upstream = "api"
            timing = { server_timing = true, slow = "250ms" }

            [[route]]
            name = "quiet"
            upstream = "api"
            timing = { slow = false }
            "#,
        );
        assert!(problems.is_empty(), "{problems}");
        assert!(routes[0].timing.server_timing && !routes[0].timing.response_time);
        assert_eq!(routes[0].timing.slow, Some(Duration::from_millis(250)));
        assert_eq!(routes[1].timing.slow, None);

        let (_, problems) = parse_str(
            r#"
            [[route]]
            name = "one"
            upstream = "api"
            timing = { slow = "later" }

            [[route]]
            name = "two"
            upstream = "api"
            timing = { server_timing = "yes", colour = 1 }
            "#,
        );
        let text = problems.to_string();
        assert!(
            text.contains(r#"rules/test.toml: route "one": key `timing.slow`: invalid duration"#),
            "{text}"
        );
        assert!(text.contains(r#"route "two": key `timing.server_timing`: invalid type"#), "{text}");
        assert!(text.contains(r#"route "two": key `timing.colour`: unknown field `colour`"#), "{text}");
        assert_eq!(problems.0.len(), 3, "{text}");
    }

    #[test]
    fn unknown_top_level_keys_and_bad_toml_are_errors() {
        let (_, problems) = parse_str("[routes]\nname = 1\n");
        assert!(problems.to_string().contains("key `routes`"), "{problems}");
        let (_, problems) = parse_str("[[route]\n");
        assert!(problems.to_string().contains("invalid TOML"), "{problems}");
    }

    /// Generated values for the keys a route knows: whatever the value, reading never panics,
    /// and every problem names the file, the route and a key under the one given.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        const KEYS: [&str; 13] = [
            "match",
            "upstream",
            "timeouts",
            "retry",
            "compress",
            "cache",
            "invalidate",
            "coalesce",
            "rate_limit",
            "slo",
            "warm",
            "timing",
            "max_body_size",
        ];

        /// Keys found inside the route's tables, and one no table knows.
        const INNER_KEYS: [&str; 24] = [
            "ttl",
            "stale_while_revalidate",
            "stale_if_error",
            "tags",
            "key",
            "rate",
            "burst",
            "name",
            "headers",
            "path",
            "path_prefix",
            "host",
            "methods",
            "connect",
            "response",
            "attempts",
            "level",
            "min_size",
            "encodings",
            "share_authenticated",
            "query",
            "header",
            "threshold",
            "colour",
        ];

        fn leaf() -> impl Strategy<Value = toml::Value> {
            let words = vec![
                "5m",
                "1s",
                "0s",
                "-1s",
                "fast",
                "",
                "/api/",
                "/api/{id}",
                "10MiB",
                "0B",
                "client_ip",
                "header:x-key",
                "path:id",
                "route",
                "GET",
                "br",
                "gzip",
                "{path.id}",
                "lead:{path.id}",
                "*",
                "1/s",
                "0/s",
                "99999999999999999999/s",
            ];
            prop_oneof![
                prop::sample::select(words).prop_map(|w| toml::Value::String(w.to_owned())),
                "[ -~]{0,12}".prop_map(toml::Value::String),
                any::<i64>().prop_map(toml::Value::Integer),
                (-3i64..100_000).prop_map(toml::Value::Integer),
                (-1e12f64..1e12).prop_map(toml::Value::Float),
                any::<bool>().prop_map(toml::Value::Boolean),
            ]
        }

        fn value() -> impl Strategy<Value = toml::Value> {
            leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                    prop::collection::vec((prop::sample::select(INNER_KEYS.to_vec()), inner), 0..4).prop_map(
                        |pairs| {
                            toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                        }
                    ),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_value_of_a_known_key_is_read_or_named(
                entries in prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 1..3),
            ) {
                let mut route = toml::Table::new();
                route.insert("name".into(), "r".into());
                route.insert("upstream".into(), "api".into());
                for (key, value) in &entries {
                    route.insert((*key).to_owned(), value.clone());
                }
                let mut document = toml::Table::new();
                document.insert("route".into(), toml::Value::Array(vec![toml::Value::Table(route)]));
                let Ok(text) = toml::to_string(&document) else { return Ok(()) };
                let (_, problems) = parse_str(&text);
                for problem in &problems.0 {
                    prop_assert_eq!(&problem.file, Path::new("rules/test.toml"));
                    prop_assert_eq!(problem.route.as_deref(), Some("\"r\""), "{}\n{}", problem, text);
                    let key = problem.key.as_deref().unwrap_or_default();
                    let under = |given: &&str| key == *given || key.starts_with(&format!("{given}.")) || key.starts_with(&format!("{given}["));
                    prop_assert!(entries.iter().map(|(k, _)| k).any(under), "{}\n{}", problem, text);
                }
            }
        }
    }
}
