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
}
