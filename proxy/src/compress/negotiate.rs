//! `Accept-Encoding` (RFC 9110 §12.5.3): what the client accepts, with q-values, `q=0`
//! exclusions, `*` and `identity`; and the choice of a coding in the server's preference order.

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

use super::Encoding;

/// A quality value (RFC 9110 §12.4.2) in thousandths, 0 ("not acceptable") to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quality(u16);

impl Quality {
    /// `q=0`: not acceptable.
    pub const ZERO: Self = Self(0);
    /// `q=1`, the default weight.
    pub const ONE: Self = Self(1000);

    /// Parses a `qvalue`: `0`, `0.` and up to three digits, `1`, or `1.` and up to three zeros.
    pub fn parse(text: &str) -> Option<Self> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths = fraction
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
        match whole {
            "0" => Some(Self(thousandths)),
            "1" if thousandths == 0 => Some(Self::ONE),
            _ => None,
        }
    }

    /// True above zero.
    pub fn is_acceptable(self) -> bool {
        self.0 > 0
    }
}

/// A request's `Accept-Encoding`, reduced to the codings the proxy speaks. Copy-sized: reading
/// it allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    /// The header was sent (possibly empty: then only identity is acceptable).
    present: bool,
    /// Qualities given by name to identity, br, zstd, gzip.
    named: [Option<Quality>; 4],
    /// The quality of `*`: every coding not named.
    any: Option<Quality>,
}

fn slot(encoding: Encoding) -> usize {
    encoding.index().map_or(0, |i| i + 1)
}

impl AcceptEncoding {
    /// Reads every `Accept-Encoding` field of `headers`; values that are not visible ASCII
    /// are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut accept = Self::default();
        for value in headers.get_all(ACCEPT_ENCODING) {
            accept.present = true;
            if let Ok(text) = value.to_str() {
                accept.add(text);
            }
        }
        accept
    }

    /// Parses one field value such as `br;q=1.0, gzip;q=0.8, *;q=0.1`. Malformed members (a
    /// bad q-value) are ignored; a coding named twice keeps its highest quality.
    pub fn parse(value: &str) -> Self {
        let mut accept = Self { present: true, ..Self::default() };
        accept.add(value);
        accept
    }

    fn add(&mut self, value: &str) {
        for member in value.split(',') {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let mut quality = Some(Quality::ONE);
            for param in parts {
                let Some((name, value)) = param.split_once('=') else { continue };
                if name.trim().eq_ignore_ascii_case("q") {
                    quality = Quality::parse(value.trim());
                }
            }
            let Some(quality) = quality else { continue };
            let entry = if coding == "*" {
                &mut self.any
            } else {
                match Encoding::from_token(coding) {
                    Some(encoding) => &mut self.named[slot(encoding)],
                    None => continue,
                }
            };
            *entry = Some(entry.map_or(quality, |q| q.max(quality)));
        }
    }

    /// True when the request sent `Accept-Encoding` at all.
    pub fn is_present(&self) -> bool {
        self.present
    }

    /// The client's weight for `encoding`. Without the header only identity is taken: the
    /// RFC allows any coding then, but clients that send nothing rarely decode anything.
    /// Identity is acceptable unless excluded by `identity;q=0`, or by `*;q=0` without an
    /// `identity` member.
    pub fn quality(&self, encoding: Encoding) -> Quality {
        if let Some(q) = self.named[slot(encoding)] {
            return q;
        }
        match encoding {
            Encoding::Identity => match self.any {
                Some(q) if !q.is_acceptable() => Quality::ZERO,
                _ => Quality::ONE,
            },
            _ if !self.present => Quality::ZERO,
            _ => self.any.unwrap_or(Quality::ZERO),
        }
    }

    /// True when the client can decode `encoding`.
    pub fn accepts(&self, encoding: Encoding) -> bool {
        self.quality(encoding).is_acceptable()
    }

    /// The coding to answer with: among `preference` (the route's codings, in server
    /// preference order) the one the client weighs highest, the earlier on a tie; identity
    /// when the client accepts none of them or names identity with a higher weight.
    pub fn negotiate(&self, preference: &[Encoding]) -> Encoding {
        let mut best = (Quality::ZERO, Encoding::Identity);
        for &encoding in preference {
            let q = self.quality(encoding);
            if q > best.0 {
                best = (q, encoding);
            }
        }
        let (q, encoding) = best;
        // Identity competes only when named: clients that do not mention it do not prefer it.
        let identity = self.named[slot(Encoding::Identity)];
        if !q.is_acceptable() || identity.is_some_and(|identity| identity > q) {
            return Encoding::Identity;
        }
        encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Brotli as Br, Gzip, Identity, Zstd};

    const ALL: [Encoding; 3] = [Br, Zstd, Gzip];

    #[test]
    fn negotiation_table() {
        let table: &[(Option<&str>, &[Encoding], Encoding)] = &[
            (None, &ALL, Identity),
            (Some(""), &ALL, Identity),
            (Some("gzip"), &ALL, Gzip),
            (Some("gzip, deflate, br"), &ALL, Br),
            (Some("gzip, deflate, br, zstd"), &ALL, Br),
            (Some("gzip, br, zstd"), &[Gzip, Zstd, Br], Gzip),
            (Some("br;q=0.5, gzip;q=0.8"), &ALL, Gzip),
            (Some("br;q=0.8, gzip;q=0.8"), &ALL, Br),
            (Some("br;q=0, gzip"), &ALL, Gzip),
            (Some("br;q=0, gzip;q=0, zstd;q=0"), &ALL, Identity),
            (Some("*"), &ALL, Br),
            (Some("*;q=0.5, br;q=0"), &ALL, Zstd),
            (Some("*;q=0"), &ALL, Identity),
            (Some("identity"), &ALL, Identity),
            (Some("identity;q=1, gzip;q=0.5"), &ALL, Identity),
            (Some("identity;q=0.5, gzip"), &ALL, Gzip),
            (Some("identity, gzip"), &ALL, Gzip),
            (Some("GZIP;Q=1.000"), &ALL, Gzip),
            (Some("x-gzip"), &ALL, Gzip),
            (Some("gzip;q=2, br;q=abc, zstd;q=0.001"), &ALL, Zstd),
            (Some("deflate, compress"), &ALL, Identity),
            (Some("br"), &[Gzip], Identity),
            (Some("gzip"), &[], Identity),
        ];
        for (header, preference, expected) in table {
            let accept = header.map_or_else(AcceptEncoding::default, AcceptEncoding::parse);
            assert_eq!(accept.negotiate(preference), *expected, "Accept-Encoding: {header:?}");
        }
    }

    #[test]
    fn identity_is_excluded_only_explicitly() {
        assert!(AcceptEncoding::default().accepts(Identity));
        assert!(AcceptEncoding::parse("gzip").accepts(Identity));
        assert!(!AcceptEncoding::parse("identity;q=0").accepts(Identity));
        assert!(!AcceptEncoding::parse("*;q=0").accepts(Identity));
        assert!(AcceptEncoding::parse("*;q=0, identity").accepts(Identity));
        assert!(!AcceptEncoding::default().accepts(Gzip));
    }

    #[test]
    fn every_header_field_counts() {
        let mut headers = HeaderMap::new();
        headers.append(ACCEPT_ENCODING, "gzip;q=0.5".parse().unwrap());
        headers.append(ACCEPT_ENCODING, "zstd".parse().unwrap());
        let accept = AcceptEncoding::from_headers(&headers);
        assert!(accept.is_present());
        assert_eq!(accept.negotiate(&ALL), Zstd);
        assert_eq!(accept.negotiate(&[Gzip, Br]), Gzip);
    }

    #[test]
    fn quality_values() {
        assert_eq!(Quality::parse("1"), Some(Quality::ONE));
        assert_eq!(Quality::parse("1.000"), Some(Quality::ONE));
        assert_eq!(Quality::parse("0.5"), Some(Quality(500)));
        assert_eq!(Quality::parse("0.05"), Some(Quality(50)));
        assert_eq!(Quality::parse("0"), Some(Quality::ZERO));
        assert_eq!(Quality::parse("0."), Some(Quality::ZERO));
        for bad in ["1.5", "0.1234", "2", "-1", "", ".5", "0.x"] {
            assert_eq!(Quality::parse(bad), None, "{bad:?}");
        }
    }

    /// Generated `Accept-Encoding` fields against a model of RFC 9110 §12.5.3: the coding
    /// chosen is one the route offers and the client accepts (never one it gave `q=0`), with
    /// no offered coding weighed higher; identity is chosen only when nothing offered is
    /// acceptable or the client weighs identity higher.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// One member: its text, and (coding token, quality in thousandths; `None`: a bad
        /// q-value, which drops the member).
        #[derive(Debug, Clone)]
        struct Member {
            text: String,
            token: &'static str,
            quality: Option<u16>,
        }

        fn qvalue() -> impl Strategy<Value = (String, Option<u16>)> {
            prop_oneof![
                (0u16..1000, any::<bool>()).prop_map(|(q, trim)| {
                    let text = format!("0.{q:03}");
                    let text = if trim { text.trim_end_matches('0').to_owned() } else { text };
                    (text, Some(q))
                }),
                prop::sample::select(vec!["1", "1.", "1.0", "1.000"])
                    .prop_map(|t| (t.to_owned(), Some(1000))),
                prop::sample::select(vec!["0", "0."]).prop_map(|t| (t.to_owned(), Some(0))),
                prop::sample::select(vec!["2", "1.5", "0.1234", "-1", "", "x", ".5"])
                    .prop_map(|t| (t.to_owned(), None)),
            ]
        }

        fn member() -> impl Strategy<Value = Member> {
            let tokens = vec![
                "br", "BR", "gzip", "x-gzip", "GZip", "zstd", "identity", "IDENTITY", "*", "deflate",
                "compress", "x-foo",
            ];
            let space = || prop::sample::select(vec!["", " ", "\t"]);
            (
                prop::sample::select(tokens),
                prop::option::of((qvalue(), any::<bool>())),
                any::<bool>(),
                space(),
                space(),
            )
                .prop_map(|(token, q, extra, before, after)| {
                    let mut text = format!("{before}{token}");
                    if extra {
                        text.push_str(";level=1");
                    }
                    let quality = match q {
                        None => Some(1000),
                        Some(((q_text, q), upper)) => {
                            text.push_str(&format!("{after};{}={q_text}", if upper { "Q" } else { "q" }));
                            q
                        }
                    };
                    text.push_str(after);
                    Member { text, token, quality }
                })
        }

        /// The client's weight for `encoding`, read off the members as RFC 9110 says.
        fn weight(members: &[Member], encoding: Encoding) -> u16 {
            let named = |wanted: &dyn Fn(&str) -> bool| {
                members.iter().filter(|m| wanted(m.token)).filter_map(|m| m.quality).max()
            };
            let names = |token: &str| Encoding::from_token(token) == Some(encoding);
            match (named(&names), named(&|token| token == "*"), encoding) {
                (Some(q), _, _) => q,
                (None, Some(0), Encoding::Identity) => 0,
                (None, _, Encoding::Identity) => 1000,
                (None, star, _) => star.unwrap_or(0),
            }
        }

        fn offered() -> impl Strategy<Value = Vec<Encoding>> {
            Just(ALL.to_vec())
                .prop_shuffle()
                .prop_flat_map(|all| (0..=all.len()).prop_map(move |n| all[..n].to_vec()))
        }

        proptest! {
            #[test]
            fn the_coding_chosen_is_acceptable_and_weighed_highest(
                members in prop::collection::vec(member(), 0..8),
                preference in offered(),
            ) {
                let text: Vec<&str> = members.iter().map(|m| m.text.as_str()).collect();
                let accept = AcceptEncoding::parse(&text.join(","));
                for encoding in [Identity, Br, Zstd, Gzip] {
                    prop_assert_eq!(accept.accepts(encoding), weight(&members, encoding) > 0, "{:?}", encoding);
                }
                let chosen = accept.negotiate(&preference);
                let best = preference.iter().map(|&e| weight(&members, e)).max().unwrap_or(0);
                let identity_named = members.iter().filter(|m| m.token.eq_ignore_ascii_case("identity")).filter_map(|m| m.quality).max();
                if chosen == Identity {
                    prop_assert!(best == 0 || identity_named.is_some_and(|q| q > best), "best {}", best);
                } else {
                    prop_assert!(preference.contains(&chosen));
                    prop_assert!(weight(&members, chosen) > 0, "q=0 chosen");
                    prop_assert_eq!(weight(&members, chosen), best);
                    prop_assert!(identity_named.is_none_or(|q| q <= best));
                }
            }

            #[test]
            fn no_text_makes_it_panic(text in "[ -~]{0,60}") {
                let _ = AcceptEncoding::parse(&text).negotiate(&ALL);
            }
        }
    }
}
