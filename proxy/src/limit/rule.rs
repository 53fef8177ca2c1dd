//! A route's `rate_limit`: what operators write ([`LimitFile`], one table or a list of tables)
//! and the validated model the proxy runs on ([`LimitRule`]).

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer, StrDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::key::KeySpec;
use crate::quantity::parse_duration;

/// One `rate_limit` table of a route.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFile {
    /// Names the limit in metrics and headers; unique within the route. Default: the key.
    #[serde(default)]
    pub name: Option<String>,
    /// `"20/s"`, `"600/m"`, `"1000/h"`.
    pub rate: String,
    /// Requests a key may make at once. Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `"client_ip"` (default), `"header:NAME"`, `"path:NAME"`, `"route"`, or a list of parts.
    #[serde(default)]
    pub key: Option<OneOrMany<String>>,
    /// Delay mode: requests over the burst wait up to this long instead of being refused.
    #[serde(default)]
    pub delay: Option<String>,
    /// Status of a refusal. Default 429.
    #[serde(default)]
    pub status: Option<u16>,
    /// `RateLimit-Policy` and `RateLimit` on passing responses too. Default false.
    #[serde(default)]
    pub headers: Option<bool>,
    /// Where the state lives: `"local"` (default, this process).
    #[serde(default)]
    pub scope: Option<String>,
}

/// A value written either alone or as a list: `key = "client_ip"` or
/// `key = ["client_ip", "header:x-api-key"]`; `rate_limit = { ... }` or `rate_limit = [{ ... }]`.
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(StrDeserializer::new(v)).map(|one| OneOrMany(vec![one]))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|one| OneOrMany(vec![one]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// A steady rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// Time between two requests at this rate.
    pub fn interval(self) -> Duration {
        self.per / self.count.get()
    }

    /// Whole intervals in `span`.
    pub fn slots_in(interval: Duration, span: Duration) -> u32 {
        u32::try_from(span.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid rate {text:?}: expected requests per unit, such as \"20/s\", \"600/m\", \"1000/h\""
            )
        };
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count =
            NonZeroU32::new(count).ok_or_else(|| format!("invalid rate {text:?}: must be at least 1"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if per.as_nanos() < u128::from(count.get()) {
            return Err(format!("invalid rate {text:?}: more than one request per nanosecond"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A limit's name: unique within its route; the `limit` label of metrics and the policy name in
/// `RateLimit-Policy` / `RateLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitName(Arc<str>);

impl LimitName {
    /// The name as written (or derived from the key).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for LimitName {
    type Error = String;

    fn try_from(name: &str) -> Result<Self, String> {
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'))
        {
            return Err(format!("{name:?}: limit names use letters, digits, '-', '_', '.', ':' and '+'"));
        }
        Ok(Self(name.into()))
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a limit's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// In this process: each sidecar counts its own requests.
    Local,
    /// In the shared Redis tier (`[redis]`): all sidecars together let through what the
    /// limit says. Without `[redis]` it counts locally.
    Cluster,
}

/// One validated rate limit of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitRule {
    pub name: LimitName,
    pub rate: Rate,
    /// Requests a key may make at once after being idle (the bucket size).
    pub burst: NonZeroU32,
    pub key: KeySpec,
    /// Delay mode: the longest a request over the burst waits for its turn; `None`: such
    /// requests are refused at once.
    pub delay: Option<Duration>,
    /// Status of a refusal (429 unless configured).
    pub status: StatusCode,
    /// Passing responses carry `RateLimit-Policy` and `RateLimit` too.
    pub headers: bool,
    pub scope: Scope,
}

/// Converts a route's `rate_limit`. `path_params` are the parameters of the route's path
/// pattern; every problem goes to `at` with its key (`rate_limit.rate`, `rate_limit[1].key`).
pub fn convert(
    file: OneOrMany<LimitFile>,
    path_params: &[&str],
    at: &mut impl FnMut(&str, String),
) -> Vec<LimitRule> {
    let many = file.0.len() > 1;
    let mut rules: Vec<LimitRule> = Vec::new();
    for (i, limit) in file.0.into_iter().enumerate() {
        let prefix = if many { format!("rate_limit[{i}]") } else { "rate_limit".to_owned() };
        let mut problem = |key: &str, message: String| at(&format!("{prefix}.{key}"), message);
        if let Some(rule) = convert_one(limit, path_params, &mut problem) {
            if rules.iter().any(|r| r.name == rule.name) {
                problem(
                    "name",
                    format!(
                        "{:?} is used by another limit of this route; give each a `name`",
                        rule.name.as_str()
                    ),
                );
            } else {
                rules.push(rule);
            }
        }
    }
    rules
}

fn convert_one(
    limit: LimitFile,
    path_params: &[&str],
    at: &mut impl FnMut(&str, String),
) -> Option<LimitRule> {
    let LimitFile { name, rate, burst, key, delay, status, headers, scope } = limit;
    let mut ok = true;
    let mut fail = |key: &str, message: String| {
        ok = false;
        at(key, message);
    };
    let rate = rate.parse::<Rate>().map_err(|e| fail("rate", e)).ok();
    let burst = match burst {
        Some(n) => NonZeroU32::new(n).or_else(|| {
            fail("burst", "must be at least 1 (the requests a client may make at once)".into());
            None
        }),
        None => rate.map(|r| r.count),
    };
    let key = KeySpec::parse(&key.map_or_else(|| vec!["client_ip".to_owned()], |k| k.0))
        .map_err(|e| fail("key", e))
        .ok();
    if let Some(key) = &key {
        for param in key.path_params() {
            if !path_params.contains(&param) {
                fail("key", format!("path parameter {param:?} is not in the route's `match.path` pattern"));
            }
        }
    }
    let delay = delay.and_then(|text| match parse_duration(&text) {
        Ok(d) if d.is_zero() => {
            fail("delay", "must be greater than zero (omit it to refuse at once)".into());
            None
        }
        Ok(d) => match rate {
            Some(r) if Rate::slots_in(r.interval(), d) == 0 => {
                fail(
                    "delay",
                    format!("{text:?} is shorter than one request interval at {r} ({:?})", r.interval()),
                );
                None
            }
            _ => Some(d),
        },
        Err(e) => {
            fail("delay", e);
            None
        }
    });
    let status = match status {
        None => Some(StatusCode::TOO_MANY_REQUESTS),
        Some(code) => match StatusCode::from_u16(code) {
            Ok(s) if s.is_client_error() || s.is_server_error() => Some(s),
            _ => {
                fail("status", format!("{code} is not an error status (429 and 503 are usual)"));
                None
            }
        },
    };
    let scope = match scope.as_deref().unwrap_or("local") {
        "local" => Some(Scope::Local),
        "cluster" if delay.is_some() => {
            fail(
                "scope",
                "`delay` is not available with \"cluster\" (requests over the limit are refused)".into(),
            );
            None
        }
        "cluster" => Some(Scope::Cluster),
        other => {
            fail("scope", format!("{other:?} is not a scope (\"local\", \"cluster\")"));
            None
        }
    };
    let name = match (name, &key) {
        (Some(name), _) => LimitName::try_from(name.as_str()).map_err(|e| fail("name", e)).ok(),
        (None, Some(key)) => LimitName::try_from(key.to_string().as_str()).map_err(|e| fail("name", e)).ok(),
        (None, None) => None,
    };
    if !ok {
        return None;
    }
    Some(LimitRule {
        name: name?,
        rate: rate?,
        burst: burst?,
        key: key?,
        delay,
        status: status?,
        headers: headers.unwrap_or(false),
        scope: scope?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Route {
        rate_limit: OneOrMany<LimitFile>,
    }

    fn convert_str(text: &str, params: &[&str]) -> (Vec<LimitRule>, Vec<String>) {
        let route: Route = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let rules =
            convert(route.rate_limit, params, &mut |key, message| problems.push(format!("{key}: {message}")));
        (rules, problems)
    }

    #[test]
    fn rates_parse() {
        let rate: Rate = "20/s".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_millis(50));
        assert_eq!("600/m".parse::<Rate>().unwrap().interval(), Duration::from_millis(100));
        assert_eq!("1000/h".parse::<Rate>().unwrap().to_string(), "1000/h");
        for bad in ["20", "0/s", "20/d", "x/s", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_table_with_defaults() {
        let (rules, problems) = convert_str(r#"rate_limit = { rate = "20/s" }"#, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        let rule = &rules[0];
        assert_eq!(rule.name.as_str(), "client_ip");
        assert_eq!(rule.burst.get(), 20);
        assert_eq!(rule.key, KeySpec::parse(&["client_ip".into()]).unwrap());
        assert_eq!(rule.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rule.delay, None);
        assert!(!rule.headers);
    }

    #[test]
    fn a_list_of_tables_with_every_field() {
        let (rules, problems) = convert_str(
            r#"rate_limit = [
                { name = "per-client", rate = "20/s", burst = 5, key = ["client_ip", "header:x-api-key"], delay = "500ms", status = 503, headers = true, scope = "local" },
                { rate = "100/s", key = "route" },
                { rate = "5/s", key = "path:id" },
            ]"#,
            &["id"],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].name.as_str(), "per-client");
        assert_eq!(rules[0].delay, Some(Duration::from_millis(500)));
        assert_eq!(rules[0].status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(rules[0].headers);
        assert_eq!(rules[1].name.as_str(), "route");
        assert_eq!(rules[2].name.as_str(), "path:id");
    }

    #[test]
    fn every_problem_names_its_key() {
        let (_, problems) = convert_str(
            r#"rate_limit = [
                { rate = "20/x", burst = 0, key = "ip", delay = "1ms", status = 200, scope = "cluster" },
                { rate = "1/s", key = "path:id", delay = "soon" },
                { rate = "1/s" },
                { rate = "2/s" },
            ]"#,
            &[],
        );
        let text = problems.join("\n");
        for expected in [
            "rate_limit[0].rate: invalid rate",
            "rate_limit[0].burst: must be at least 1",
            "rate_limit[0].key: \"ip\" is not a key",
            "rate_limit[0].status: 200 is not an error status",
            "rate_limit[0].scope: `delay` is not available with \"cluster\"",
            "rate_limit[1].key: path parameter \"id\" is not in the route",
            "rate_limit[1].delay: invalid duration",
            "rate_limit[3].name: \"client_ip\" is used by another limit",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let (_, problems) = convert_str(r#"rate_limit = { rate = "10/s", delay = "50ms" }"#, &[]);
        assert!(problems[0].contains("shorter than one request interval"), "{problems:?}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let route: Result<Route, _> = toml::from_str(r#"rate_limit = { rate = "1/s", colour = "red" }"#);
        assert!(route.err().unwrap().to_string().contains("unknown field `colour`"));
    }
}
