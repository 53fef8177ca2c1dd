//! The request path as routes see it: dot segments removed (RFC 3986 §5.2.4), so that
//! `/public/../admin` is routed — and forwarded — as `/admin`, not under a `/public/` rule.
//! Percent-encoded dots (`%2e`) count as dots, as an origin that decodes them would read them.
//! A path that climbs above the root (`/../etc`) is refused, as nginx does.

use std::borrow::Cow;

/// The path climbs above the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboveRoot;

/// `path` without dot segments; borrowed (no work beyond one scan) when it has none.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, AboveRoot> {
    if !may_have_dot_segments(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // `path` starts with '/' (origin-form); `split` yields "" first.
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match dots(segment) {
            1 => trailing_slash = true,
            2 => {
                if segments.pop().is_none() {
                    return Err(AboveRoot);
                }
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Ok(if normalized == path { Cow::Borrowed(path) } else { Cow::Owned(normalized) })
}

/// Some segment starts with `.` or `%2`: one pass over the bytes.
fn may_have_dot_segments(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(i, &byte)| {
        byte == b'/'
            && match bytes.get(i + 1) {
                Some(b'.') => true,
                Some(b'%') => bytes.get(i + 2) == Some(&b'2'),
                _ => false,
            }
    })
}

/// 1 for a `.` segment, 2 for `..`, 0 otherwise (`%2e` / `%2E` read as `.`).
fn dots(segment: &str) -> u8 {
    let mut rest = segment.as_bytes();
    let mut count = 0u8;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e')
        {
            rest = &rest[3..];
        } else {
            return 0;
        }
        count += 1;
        if count > 2 {
            return 0;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, AboveRoot> {
        normalize(path).map(Cow::into_owned)
    }

    #[test]
    fn paths_without_dot_segments_are_borrowed_unchanged() {
        for path in ["/", "/api/leads/42", "/a.b/c..d/.e", "/files/.well-known", "/x/%2fy"] {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path), "{path}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/public/../admin").unwrap(), "/admin");
        assert_eq!(norm("/public/./a/../b").unwrap(), "/public/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/a//../b").unwrap(), "/a/b");
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/public/.%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(norm("/a/.../b").unwrap(), "/a/.../b", "three dots are a name");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(norm("/.."), Err(AboveRoot));
        assert_eq!(norm("/../etc/passwd"), Err(AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(AboveRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(AboveRoot));
    }

    /// Generated paths: never a panic; the answer is a rooted path without dot segments (as
    /// an origin that decodes `%2e` would read them), normalizing it again changes nothing,
    /// and it is what resolving the segments one by one gives.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// One segment, and what it does to the path.
        #[derive(Debug, Clone)]
        enum Segment {
            Name(String),
            Dot(&'static str),
            DotDot(&'static str),
        }

        impl Segment {
            fn text(&self) -> &str {
                match self {
                    Self::Name(name) => name,
                    Self::Dot(text) | Self::DotDot(text) => text,
                }
            }
        }

        fn segment() -> impl Strategy<Value = Segment> {
            prop_oneof![
                3 => "[a-zA-Z0-9_~%.-]{0,6}".prop_filter_map("a dot segment", |name| {
                    let decoded = name.to_ascii_lowercase().replace("%2e", ".");
                    (decoded != "." && decoded != "..").then_some(Segment::Name(name))
                }),
                1 => prop::sample::select(vec![".", "%2e", "%2E"]).prop_map(Segment::Dot),
                1 => prop::sample::select(vec!["..", "%2e%2e", "%2E.", ".%2e", "%2e%2E"]).prop_map(Segment::DotDot),
            ]
        }

        /// The path the segments resolve to, one by one (RFC 3986 §5.2.4), or `AboveRoot`.
        fn resolved(segments: &[Segment]) -> Result<String, AboveRoot> {
            let mut names: Vec<&str> = Vec::new();
            for segment in segments {
                match segment {
                    Segment::Name(name) => names.push(name),
                    Segment::Dot(_) => {}
                    Segment::DotDot(_) => {
                        names.pop().ok_or(AboveRoot)?;
                    }
                }
            }
            let ends_in_dots = matches!(segments.last(), Some(Segment::Dot(_) | Segment::DotDot(_)));
            let mut path: String = names.iter().map(|name| format!("/{name}")).collect();
            if ends_in_dots || path.is_empty() {
                path.push('/');
            }
            Ok(path)
        }

        fn is_dot_segment(segment: &str) -> bool {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            decoded == "." || decoded == ".."
        }

        proptest! {
            #[test]
            fn a_path_resolves_as_its_segments_do(segments in prop::collection::vec(segment(), 0..12)) {
                let path: String = segments.iter().map(|s| format!("/{}", s.text())).collect();
                let path = if path.is_empty() { "/".to_owned() } else { path };
                let expected = if segments.is_empty() { Ok("/".to_owned()) } else { resolved(&segments) };
                prop_assert_eq!(normalize(&path).map(Cow::into_owned), expected);
            }

            #[test]
            fn any_path_normalizes_to_a_rooted_path_without_dot_segments(path in "/[ -~]{0,60}") {
                let Ok(normalized) = normalize(&path) else { return Ok(()) };
                prop_assert!(normalized.starts_with('/'));
                prop_assert!(!normalized.split('/').any(is_dot_segment), "{normalized}");
                let again = normalize(&normalized);
                prop_assert!(matches!(again, Ok(Cow::Borrowed(p)) if p == normalized), "{again:?}");
                if !path.split('/').any(is_dot_segment) {
                    prop_assert!(matches!(normalized, Cow::Borrowed(_)), "{path} changed");
                }
            }

            #[test]
            fn no_text_makes_it_panic(path in "[ -~]{0,40}") {
                let _ = normalize(&path);
            }
        }
    }
}
