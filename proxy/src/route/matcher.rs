//! Which requests a route takes: host, method set and one path condition, all compiled when
//! the rules load so matching does no allocation.

use std::sync::Arc;

use http::Method;

use crate::params::PathParams;

/// A route's compiled match conditions; every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub host: Option<HostMatch>,
    /// Allowed methods; `None`: any.
    pub methods: Option<Vec<Method>>,
    pub path: PathMatch,
}

/// Host condition, compared case-insensitively without the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (stored with the leading dot).
    Suffix(String),
}

/// Path condition.
#[derive(Debug, Clone, Default)]
pub enum PathMatch {
    /// Any path.
    #[default]
    Any,
    Exact(String),
    /// A prefix; when it ends with `/`, `/api/` also matches `/api`.
    Prefix(String),
    /// Segments with named parameters.
    Pattern(PathPattern),
}

/// A path pattern such as `/api/leads/{id}` or `/files/{*rest}`.
#[derive(Debug, Clone)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(Arc<str>),
    /// `{*name}`: the rest of the path (possibly empty); last only.
    Rest(Arc<str>),
}

impl PathPattern {
    /// Compiles `pattern`; `Err` says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} must start with /"));
        }
        let raw: Vec<&str> = pattern[1..].split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, seg) in raw.iter().enumerate() {
            if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inner),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("parameter {seg:?} needs a name of letters, digits and '_'"));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {name:?} appears twice"));
                }
                names.push(name);
                if rest {
                    if i + 1 != raw.len() {
                        return Err(format!("{seg:?} may only be the last segment"));
                    }
                    segments.push(Segment::Rest(name.into()));
                } else {
                    segments.push(Segment::Param(name.into()));
                }
            } else if seg.contains(['{', '}']) {
                return Err(format!("segment {seg:?}: a parameter must be a whole segment"));
            } else {
                segments.push(Segment::Literal((*seg).to_owned()));
            }
        }
        Ok(Self { segments })
    }

    /// True when the pattern has parameters (else it is an exact path).
    pub fn has_params(&self) -> bool {
        self.segments.iter().any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// The names of the pattern's parameters, in path order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Literal(_) => None,
            Segment::Param(name) | Segment::Rest(name) => Some(&**name),
        })
    }

    fn matches(&self, path: &str, params: &mut PathParams) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else { return false };
        let mut offset = 1;
        for (i, segment) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            if let Segment::Rest(name) = segment {
                params.capture(name.clone(), offset..path.len());
                return true;
            }
            let (seg, tail) = match rest.find('/') {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            match segment {
                Segment::Literal(lit) if lit == seg => {}
                Segment::Param(name) if !seg.is_empty() => {
                    params.capture(name.clone(), offset..offset + seg.len());
                }
                _ => return false,
            }
            match (tail, last) {
                (None, true) => return true,
                (None, false) => {
                    // `/files/{*rest}` also matches `/files`.
                    if let Some(Segment::Rest(name)) = self.segments.get(i + 1) {
                        params.capture(name.clone(), path.len()..path.len());
                        return true;
                    }
                    return false;
                }
                (Some(_), true) => return false,
                (Some(tail), false) => {
                    offset += seg.len() + 1;
                    rest = tail;
                }
            }
        }
        false
    }
}

impl HostMatch {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() || text.contains(['/', ' ', ':']) {
            return Err(format!("{text:?} is not a host name (no scheme, port or path)"));
        }
        match text.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => Ok(Self::Suffix(suffix.into())),
            Some(_) => Err(format!("{text:?}: a wildcard host is written *.example.com")),
            None => Ok(Self::Exact(text)),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h.eq_ignore_ascii_case(host),
            Self::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

impl Matcher {
    /// True when the request matches; on a pattern match, `params` holds the captures.
    /// `host` is the request's host without port.
    pub fn matches(&self, host: Option<&str>, method: &Method, path: &str, params: &mut PathParams) -> bool {
        params.clear();
        if let Some(want) = &self.host
            && !host.is_some_and(|h| want.matches(h))
        {
            return false;
        }
        if let Some(methods) = &self.methods
            && !methods.contains(method)
        {
            return false;
        }
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    || (prefix.len() > 1 && prefix.ends_with('/') && path == &prefix[..prefix.len() - 1])
            }
            PathMatch::Pattern(pattern) => pattern.matches(path, params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let pattern = PathPattern::parse(pattern).unwrap();
        let mut params = PathParams::default();
        pattern
            .matches(path, &mut params)
            .then(|| params.iter(path).map(|(n, v)| (n.to_owned(), v.to_owned())).collect())
    }

    #[test]
    fn pattern_captures_named_segments() {
        assert_eq!(capture("/api/leads/{id}", "/api/leads/42"), Some(vec![("id".into(), "42".into())]));
        assert_eq!(capture("/api/leads/{id}", "/api/leads/"), None);
        assert_eq!(capture("/api/leads/{id}", "/api/leads/42/x"), None);
        assert_eq!(capture("/api/leads/{id}", "/api/lead/42"), None);
        assert_eq!(
            capture("/t/{tenant}/u/{user}", "/t/a/u/b"),
            Some(vec![("tenant".into(), "a".into()), ("user".into(), "b".into())])
        );
    }

    #[test]
    fn rest_parameter_takes_the_tail() {
        assert_eq!(
            capture("/files/{*rest}", "/files/a/b.txt"),
            Some(vec![("rest".into(), "a/b.txt".into())])
        );
        assert_eq!(capture("/files/{*rest}", "/files"), Some(vec![("rest".into(), "".into())]));
        assert_eq!(capture("/files/{*rest}", "/other"), None);
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(PathPattern::parse("api/{id}").is_err());
        assert!(PathPattern::parse("/a/{*rest}/b").is_err());
        assert!(PathPattern::parse("/a/x{id}").is_err());
        assert!(PathPattern::parse("/a/{id}/{id}").is_err());
        assert!(PathPattern::parse("/a/{}").is_err());
    }

    #[test]
    fn prefix_ending_in_slash_matches_the_bare_directory() {
        let m = Matcher { path: PathMatch::Prefix("/api/".into()), ..Default::default() };
        let mut params = PathParams::default();
        assert!(m.matches(None, &Method::GET, "/api", &mut params));
        assert!(m.matches(None, &Method::GET, "/api/x", &mut params));
        assert!(!m.matches(None, &Method::GET, "/apix", &mut params));
    }

    #[test]
    fn host_and_method_conditions() {
        let m = Matcher {
            host: Some(HostMatch::parse("*.example.com").unwrap()),
            methods: Some(vec![Method::GET]),
            path: PathMatch::Any,
        };
        let mut params = PathParams::default();
        assert!(m.matches(Some("API.example.com"), &Method::GET, "/", &mut params));
        assert!(!m.matches(Some("example.com"), &Method::GET, "/", &mut params));
        assert!(!m.matches(Some("a.example.com"), &Method::POST, "/", &mut params));
        assert!(!m.matches(None, &Method::GET, "/", &mut params));
    }
}
