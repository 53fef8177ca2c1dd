//! Content codings (RFC 9110 §8.4.1) the proxy speaks: brotli, zstd, gzip, and identity (none).

use std::fmt;

use http::HeaderValue;

/// A content coding of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// No coding: the body as the origin made it.
    Identity,
    /// `br`, RFC 7932.
    Brotli,
    /// `zstd`, RFC 8878.
    Zstd,
    /// `gzip`, RFC 1952.
    Gzip,
}

impl Encoding {
    /// The codings that compress, in the default server preference (smallest output first).
    pub const COMPRESSING: [Self; 3] = [Self::Brotli, Self::Zstd, Self::Gzip];

    /// The token used in `Accept-Encoding`, `Content-Encoding`, rules and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    /// The coding named by a token, case-insensitively (`x-gzip` is gzip, RFC 9110 §8.4.1.3).
    /// `None` for codings the proxy does not speak (`deflate`, `compress`, …).
    pub fn from_token(token: &str) -> Option<Self> {
        let token = token.trim();
        [
            ("identity", Self::Identity),
            ("br", Self::Brotli),
            ("zstd", Self::Zstd),
            ("gzip", Self::Gzip),
            ("x-gzip", Self::Gzip),
        ]
        .into_iter()
        .find_map(|(name, encoding)| token.eq_ignore_ascii_case(name).then_some(encoding))
    }

    /// The `Content-Encoding` value; `None` for identity (the header is absent then).
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            Self::Identity => None,
            coding => Some(HeaderValue::from_static(coding.as_str())),
        }
    }

    /// Position in [`Encoding::COMPRESSING`], for per-encoding tables; `None` for identity.
    pub(crate) fn index(self) -> Option<usize> {
        match self {
            Self::Identity => None,
            Self::Brotli => Some(0),
            Self::Zstd => Some(1),
            Self::Gzip => Some(2),
        }
    }

    /// The valid compression levels of the coding: brotli 0–11, zstd 1–22, gzip 1–9.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Self::Identity => 0..=0,
            Self::Brotli => 0..=11,
            Self::Zstd => 1..=22,
            Self::Gzip => 1..=9,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_case_insensitively() {
        for encoding in [Encoding::Identity, Encoding::Brotli, Encoding::Zstd, Encoding::Gzip] {
            assert_eq!(Encoding::from_token(encoding.as_str()), Some(encoding));
            assert_eq!(Encoding::from_token(&encoding.as_str().to_uppercase()), Some(encoding));
        }
        assert_eq!(Encoding::from_token(" x-gzip "), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_token("deflate"), None);
        assert_eq!(Encoding::Identity.header_value(), None);
        assert_eq!(Encoding::Brotli.header_value().unwrap(), "br");
    }
}
