//! Tags: labels on cached entries that purge them together.
//!
//! A route's rule names tags as templates (`leads`, `lead:{path.id}`, `tenant:{query.t}`,
//! `user:{header.x-user-id}`); the origin adds tags in its tag header (`Cache-Tag`,
//! `Surrogate-Key`, `xkey`: space or comma separated). Every entry also carries the implicit
//! tag of its URL ([`Tag::url`]), so that purging a URL reaches all of its variants.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use xxhash_rust::xxh3::xxh3_64;

use crate::params::PathParams;

/// A tag: its name and the name's hash (what the store indexes by).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    name: Arc<str>,
    hash: u64,
}

impl Tag {
    /// The tag called `name`.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), hash: xxh3_64(name.as_bytes()) }
    }

    /// The implicit tag of a URL: host (lower case, no port) + path + query as sent.
    pub fn url(host: &str, path: &str, query: Option<&str>) -> Self {
        let mut name = String::with_capacity(5 + host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        name.push_str("\0url:");
        name.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        name.push_str(path);
        if let Some(query) = query {
            name.push('?');
            name.push_str(query);
        }
        Self::new(&name)
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hash the store indexes by.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The tags named in a tag or invalidation header value: space or comma separated.
pub fn split_tags(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', ',', '\t']).filter(|t| !t.is_empty())
}

/// The tags in every listed header of `headers`.
pub fn header_tags<'h>(headers: &'h HeaderMap, names: &'h [HeaderName]) -> impl Iterator<Item = Tag> + 'h {
    names
        .iter()
        .flat_map(move |name| headers.get_all(name).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(split_tags)
        .map(Tag::new)
}

/// A tag template from a rule: literal text with `{path.NAME}`, `{query.NAME}` and
/// `{header.NAME}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Path(Box<str>),
    Query(Box<str>),
    Header(HeaderName),
}

/// What a template is rendered from: the request's path, its captured parameters, its query
/// and its headers.
#[derive(Debug, Clone, Copy)]
pub struct TagSource<'r> {
    pub path: &'r str,
    pub params: &'r PathParams,
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
}

impl TagTemplate {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a tag cannot be empty".into());
        }
        if text.contains([' ', ',', '\t']) {
            return Err(format!("{text:?}: tags cannot contain spaces or commas"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].into()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{text:?}: unclosed `{{`"));
            };
            let inner = &rest[open + 1..open + close];
            let part = match inner.split_once('.') {
                Some(("path", name)) if !name.is_empty() => Part::Path(name.into()),
                Some(("query", name)) if !name.is_empty() => Part::Query(name.into()),
                Some(("header", name)) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(header) => Part::Header(header),
                    Err(_) => return Err(format!("{text:?}: {name:?} is not a header name")),
                },
                _ => {
                    return Err(format!(
                        "{text:?}: unknown placeholder {{{inner}}} (use {{path.NAME}}, {{query.NAME}} or {{header.NAME}})"
                    ));
                }
            };
            parts.push(part);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: unmatched `}}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.into()));
        }
        Ok(Self { parts })
    }

    /// The path parameters the template uses.
    pub fn path_params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Path(name) => Some(&**name),
            _ => None,
        })
    }

    /// The tag for one request; `None` when a placeholder has no value in it (an absent tag
    /// is better than a tag shared by every request missing the value).
    pub fn render(&self, source: &TagSource<'_>) -> Option<Tag> {
        if let [Part::Literal(text)] = self.parts.as_slice() {
            return Some(Tag::new(text));
        }
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Path(param) => name.push_str(source.params.get(source.path, param)?),
                Part::Query(param) => name.push_str(query_value(source.query, param)?),
                Part::Header(header) => {
                    let value = source.headers.get(header)?.to_str().ok()?.trim();
                    if value.is_empty() || value.contains([' ', ',']) {
                        return None;
                    }
                    name.push_str(value);
                }
            }
        }
        Some(Tag::new(&name))
    }
}

impl fmt::Display for TagTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Path(name) => write!(f, "{{path.{name}}}")?,
                Part::Query(name) => write!(f, "{{query.{name}}}")?,
                Part::Header(name) => write!(f, "{{header.{name}}}")?,
            }
        }
        Ok(())
    }
}

fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `template` for `path`, whose last segment a `{id}` pattern captured.
    fn render(template: &str, path: &str, query: Option<&str>, headers: &HeaderMap) -> Option<String> {
        let mut params = PathParams::default();
        let id = path.rfind('/').unwrap() + 1;
        params.capture("id".into(), id..path.len());
        let source = TagSource { path, params: &params, query, headers };
        TagTemplate::parse(template).unwrap().render(&source).map(|t| t.name().to_owned())
    }

    #[test]
    fn templates_take_path_query_and_header_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", "42".parse().unwrap());
        let r = |t: &str, q: Option<&str>| render(t, "/api/leads/17", q, &headers);
        assert_eq!(r("leads", None).as_deref(), Some("leads"));
        assert_eq!(r("lead:{path.id}", None).as_deref(), Some("lead:17"));
        assert_eq!(r("tier:{query.tier}", Some("x=1&tier=gold")).as_deref(), Some("tier:gold"));
        assert_eq!(r("user:{header.x-user-id}:l{path.id}", None).as_deref(), Some("user:42:l17"));
    }

    #[test]
    fn a_missing_value_renders_no_tag() {
        let headers = HeaderMap::new();
        assert_eq!(render("tier:{query.tier}", "/a/1", None, &headers), None);
        assert_eq!(render("u:{header.x-user-id}", "/a/1", None, &headers), None);
        assert_eq!(render("x:{path.nope}", "/a/1", None, &headers), None);
    }

    #[test]
    fn bad_templates_are_rejected_with_a_reason() {
        assert!(TagTemplate::parse("").is_err());
        assert!(TagTemplate::parse("a b").is_err());
        assert!(TagTemplate::parse("lead:{path.id").unwrap_err().contains("unclosed"));
        assert!(TagTemplate::parse("lead:{cookie.x}").unwrap_err().contains("unknown placeholder"));
        assert!(TagTemplate::parse("lead}").is_err());
        assert_eq!(TagTemplate::parse("lead:{path.id}").unwrap().to_string(), "lead:{path.id}");
    }

    #[test]
    fn header_tags_split_on_spaces_and_commas() {
        let mut headers = HeaderMap::new();
        headers.insert("cache-tag", "leads lead:1,lead:2".parse().unwrap());
        headers.insert("xkey", "  pricing ".parse().unwrap());
        let names = [HeaderName::from_static("cache-tag"), HeaderName::from_static("xkey")];
        let tags: Vec<String> = header_tags(&headers, &names).map(|t| t.name().to_owned()).collect();
        assert_eq!(tags, ["leads", "lead:1", "lead:2", "pricing"]);
    }

    #[test]
    fn url_tags_ignore_host_case() {
        assert_eq!(Tag::url("API.x", "/a", Some("b=1")), Tag::url("api.x", "/a", Some("b=1")));
        assert_ne!(Tag::url("api.x", "/a", Some("b=1")), Tag::url("api.x", "/a", None));
    }
}
