//! Targeted cache control (RFC 9213): `CDN-Cache-Control`, and a field of Accel's own
//! (`[cache] targeted_field`, default `Accel-Cache-Control`), let an origin tell this cache
//! something other than what `Cache-Control` tells browsers.
//!
//! The fields are Structured Field Dictionaries (RFC 8941): `max-age=60, stale-if-error=600`,
//! `no-store`, `private`. The first field of the target list (ours, then `CDN-Cache-Control`)
//! whose value is valid and not empty is the answer's caching policy *for this cache*: its
//! directives replace `Cache-Control` and `Expires` wholesale (all of them: freshness, `no-store`,
//! `no-cache`, `private`, `public`, `must-revalidate`, the stale windows). A field that does
//! not parse is ignored as if absent, and with no usable field `Cache-Control` decides as usual.
//! A directive of the wrong type (`max-age="60"`, `max-age=-1`) is ignored alone.
//!
//! Whether the fields reach the client is configured: by default Accel removes its own field
//! (it was addressed to Accel alone) and forwards `CDN-Cache-Control` for CDNs downstream
//! (RFC 9213 §2.2 lets a cache that uses a field remove it, and does not ask it to).

use http::header::{HeaderMap, HeaderName};

use super::policy::CacheControl;

/// `CDN-Cache-Control` (RFC 9213).
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The target list of this cache, in precedence order, and which of its fields reach clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetedFields {
    /// Fields obeyed, most specific first.
    pub targets: Vec<HeaderName>,
    /// Fields removed from answers to clients (a subset of `targets`).
    pub removed: Vec<HeaderName>,
}

impl Default for TargetedFields {
    /// `Accel-Cache-Control` (removed), then `CDN-Cache-Control` (forwarded).
    fn default() -> Self {
        let own = HeaderName::from_static("accel-cache-control");
        Self { targets: vec![own.clone(), CDN_CACHE_CONTROL.clone()], removed: vec![own] }
    }
}

impl TargetedFields {
    /// The directives of the first targeted field of `headers` with a valid, non-empty
    /// value; `None` when there is none (then `Cache-Control` and `Expires` apply).
    pub fn select(&self, headers: &HeaderMap) -> Option<CacheControl> {
        self.targets.iter().find_map(|name| parse_field(headers, name))
    }
}

/// One targeted field's directives, `None` when absent, empty or invalid. Several field lines
/// are one dictionary, joined with commas (RFC 8941 §4.2).
fn parse_field(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut text = String::new();
    for line in lines {
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(line.to_str().ok()?);
    }
    let members = dictionary(&text)?;
    if members.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, value) in members {
        let flag = !matches!(value, Value::Boolean(false));
        let seconds = match value {
            Value::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        };
        match key {
            "no-store" => cc.no_store = flag,
            "no-cache" => cc.no_cache = flag,
            "private" => cc.private = flag,
            "public" => cc.public = flag,
            "must-revalidate" | "proxy-revalidate" => cc.must_revalidate |= flag,
            "max-age" => cc.max_age = seconds,
            "s-maxage" => cc.s_maxage = seconds,
            "stale-while-revalidate" => cc.stale_while_revalidate = seconds,
            "stale-if-error" => cc.stale_if_error = seconds,
            _ => {}
        }
    }
    Some(cc)
}

/// A dictionary member's value, as far as cache directives care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Integer(i64),
    Boolean(bool),
    /// A decimal, string, token, byte sequence or inner list.
    Other,
}

/// Parses an RFC 8941 dictionary (§4.2.2); `None` when the text is not one. A later member
/// overrides an earlier one of the same key.
fn dictionary(text: &str) -> Option<Vec<(&str, Value)>> {
    let mut input = Input { text, at: 0 };
    let mut members: Vec<(&str, Value)> = Vec::new();
    input.skip(|b| b == b' ');
    while !input.done() {
        let key = input.key()?;
        let value = if input.eat(b'=') {
            if input.peek() == Some(b'(') { input.inner_list()? } else { input.item()? }
        } else {
            input.parameters()?;
            Value::Boolean(true)
        };
        members.retain(|(k, _)| *k != key);
        members.push((key, value));
        input.skip(|b| b == b' ' || b == b'\t');
        if input.done() {
            break;
        }
        if !input.eat(b',') {
            return None;
        }
        input.skip(|b| b == b' ' || b == b'\t');
        if input.done() {
            return None; // a trailing comma
        }
    }
    Some(members)
}

struct Input<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn skip(&mut self, mut while_: impl FnMut(u8) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&mut while_) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`
    fn key(&mut self) -> Option<&'a str> {
        if !self.peek().is_some_and(|b| b.is_ascii_lowercase() || b == b'*') {
            return None;
        }
        Some(self.skip(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)))
    }

    /// `parameters = *( ";" *SP key [ "=" bare-item ] )`: checked, not kept.
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(|b| b == b' ');
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn item(&mut self) -> Option<Value> {
        let value = self.bare_item()?;
        self.parameters()?;
        Some(value)
    }

    /// `inner-list = "(" *SP [ sf-item *( 1*SP sf-item ) *SP ] ")" parameters`
    fn inner_list(&mut self) -> Option<Value> {
        self.eat(b'(');
        loop {
            self.skip(|b| b == b' ');
            if self.eat(b')') {
                break;
            }
            self.item()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
        self.parameters()?;
        Some(Value::Other)
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.at += 1;
                loop {
                    match self.peek()? {
                        b'"' => break,
                        b'\\' => {
                            self.at += 1;
                            if !matches!(self.peek()?, b'"' | b'\\') {
                                return None;
                            }
                        }
                        0x20..=0x7e => {}
                        _ => return None,
                    }
                    self.at += 1;
                }
                self.at += 1;
                Some(Value::Other)
            }
            b':' => {
                self.at += 1;
                self.skip(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.eat(b':').then_some(Value::Other)
            }
            b'?' => {
                self.at += 1;
                let value = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.at += 1;
                Some(Value::Boolean(value))
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
                Some(Value::Other)
            }
            _ => None,
        }
    }

    /// `sf-integer = ["-"] 1*15DIGIT`, `sf-decimal = ["-"] 1*12DIGIT "." 1*3DIGIT`.
    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let whole = self.skip(|b| b.is_ascii_digit());
        if whole.is_empty() {
            return None;
        }
        if self.eat(b'.') {
            let fraction = self.skip(|b| b.is_ascii_digit());
            return (whole.len() <= 12 && (1..=3).contains(&fraction.len())).then_some(Value::Other);
        }
        if whole.len() > 15 {
            return None;
        }
        let n: i64 = whole.parse().ok()?;
        Some(Value::Integer(if negative { -n } else { n }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn select(pairs: &[(&str, &str)]) -> Option<CacheControl> {
        TargetedFields::default().select(&headers(pairs))
    }

    #[test]
    fn every_directive_is_read() {
        let cc = select(&[(
            "cdn-cache-control",
            "max-age=60, s-maxage=30, stale-while-revalidate=10, stale-if-error=600, public, must-revalidate",
        )])
        .unwrap();
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(30)));
        assert_eq!((cc.stale_while_revalidate, cc.stale_if_error), (Some(10), Some(600)));
        assert!(cc.public && cc.must_revalidate && !cc.no_store);
        let cc = select(&[("cdn-cache-control", "no-store, no-cache, private")]).unwrap();
        assert!(cc.no_store && cc.no_cache && cc.private);
        let cc = select(&[("cdn-cache-control", "private=?0, no-cache=(\"set-cookie\")")]).unwrap();
        assert!(!cc.private && cc.no_cache, "?0 is off; a qualified no-cache counts whole");
    }

    #[test]
    fn our_field_comes_first_then_cdn_cache_control() {
        let both = [("cdn-cache-control", "max-age=10"), ("accel-cache-control", "max-age=99")];
        assert_eq!(select(&both).unwrap().max_age, Some(99));
        let invalid_ours = [("cdn-cache-control", "max-age=10"), ("accel-cache-control", "max-age=")];
        assert_eq!(select(&invalid_ours).unwrap().max_age, Some(10), "an invalid field is skipped");
        assert_eq!(select(&[("cache-control", "max-age=5")]), None);
    }

    #[test]
    fn an_invalid_or_empty_field_is_ignored() {
        for bad in
            ["max-age=60,", "Max-Age=60", "max-age=60;", "max-age=\"60", "max-age=60 no-store", ", max-age=1"]
        {
            assert_eq!(select(&[("cdn-cache-control", bad)]), None, "{bad:?}");
        }
        assert_eq!(select(&[("cdn-cache-control", "")]), None, "empty");
    }

    #[test]
    fn a_directive_of_the_wrong_type_is_ignored_alone() {
        let cc =
            select(&[("cdn-cache-control", "max-age=\"60\", s-maxage=-5, stale-if-error=1.5, no-store")])
                .unwrap();
        assert_eq!((cc.max_age, cc.s_maxage, cc.stale_if_error), (None, None, None));
        assert!(cc.no_store);
    }

    #[test]
    fn several_lines_make_one_dictionary_and_the_last_member_wins() {
        let cc = select(&[("cdn-cache-control", "max-age=10"), ("cdn-cache-control", "max-age=20, public")])
            .unwrap();
        assert_eq!(cc.max_age, Some(20));
        assert!(cc.public);
        let cc = select(&[("cdn-cache-control", "max-age=10;a=1, x=(1 2);b, y=:aGk=:, z=tok/en")]).unwrap();
        assert_eq!(cc.max_age, Some(10), "parameters, inner lists and other items parse");
    }
}
