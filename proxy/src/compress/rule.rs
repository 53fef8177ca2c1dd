//! Compression rules: what operators write (`compress = { ... }` on a route, `[compress]` in
//! `accel.toml` for the defaults of every route) and the policy a route runs on.
//!
//! Three layers: [`CompressFile`] mirrors the TOML; [`CompressSettings`] is the same, validated,
//! with `None` for "not given here"; [`CompressPolicy`] is a route's complete policy, the
//! route's settings over the `[compress]` defaults over the built-in defaults.

use serde::Deserialize;

use super::Encoding;
use crate::quantity::parse_size;

/// `compress = { ... }` of a route, or the `[compress]` section of `accel.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressFile {
    /// On or off. A route's `compress` table turns it on unless it says `enabled = false`;
    /// routes without one follow `[compress] enabled` (default false).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Codings offered, in server preference order. Default `["br", "zstd", "gzip"]`.
    #[serde(default)]
    pub encodings: Option<Vec<String>>,
    /// Answers whose `Content-Length` is below this stay uncompressed. Default `"1KiB"`.
    #[serde(default)]
    pub min_size: Option<SizeFile>,
    /// Media types compressed: exact (`"application/json"`) or with one `*`
    /// (`"text/*"`, `"application/*+json"`). Default: JSON, text, JavaScript, CSS, SVG, XML.
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
    /// Levels for answers compressed as they stream. Default `{ br = 4, zstd = 3, gzip = 6 }`.
    #[serde(default)]
    pub level: Option<LevelsFile>,
    /// Levels for cached answers, compressed once per encoding and then reused.
    /// Default `{ br = 9, zstd = 12, gzip = 9 }`.
    #[serde(default)]
    pub cached_level: Option<LevelsFile>,
    /// Compress every encoding's variant of a cached answer when it is stored, rather than
    /// when a client first asks for it. Default false.
    #[serde(default)]
    pub eager: Option<bool>,
}

/// A size: a number of bytes or a string with a unit (`"1KiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeFile {
    Bytes(u64),
    Text(String),
}

/// `{ br = 4, zstd = 3, gzip = 6 }`: a level per coding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelsFile {
    /// Brotli quality, 0–11.
    #[serde(default)]
    pub br: Option<i32>,
    /// Zstandard level, 1–22.
    #[serde(default)]
    pub zstd: Option<i32>,
    /// Gzip level, 1–9.
    #[serde(default)]
    pub gzip: Option<i32>,
}

/// A level per compressing coding, indexed like [`Encoding::COMPRESSING`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels([Option<i32>; 3]);

impl Levels {
    /// The level of `encoding`, if given (never for identity).
    pub fn get(&self, encoding: Encoding) -> Option<i32> {
        encoding.index().and_then(|i| self.0[i])
    }

    fn or(self, fallback: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i].or(fallback.0[i])))
    }
}

/// One media range of `content_types`, lower case: `prefix*suffix`, or exact without `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    prefix: String,
    /// `None`: exact match on `prefix`.
    suffix: Option<String>,
}

impl MediaRange {
    /// Parses `type/subtype`, with at most one `*` (`text/*`, `application/*+json`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let valid = lower.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
            && lower.matches('/').count() == 1
            && lower.matches('*').count() <= 1
            && lower.bytes().all(|b| b.is_ascii_alphanumeric() || b"/*+-.!#$&^_".contains(&b));
        if !valid {
            return Err(format!("{text:?} is not a media type such as \"application/json\" or \"text/*\""));
        }
        Ok(match lower.split_once('*') {
            Some((prefix, suffix)) => Self { prefix: prefix.to_owned(), suffix: Some(suffix.to_owned()) },
            None => Self { prefix: lower, suffix: None },
        })
    }

    /// True when `media_type` (lower case, no parameters) is in the range.
    pub fn matches(&self, media_type: &str) -> bool {
        match &self.suffix {
            None => media_type == self.prefix,
            Some(suffix) => {
                media_type.len() >= self.prefix.len() + suffix.len()
                    && media_type.starts_with(&self.prefix)
                    && media_type.ends_with(suffix.as_str())
            }
        }
    }
}

/// Default `content_types`: JSON, text (HTML, CSS, plain, CSV, JavaScript, …), JavaScript,
/// SVG and XML.
pub const DEFAULT_CONTENT_TYPES: [&str; 8] = [
    "application/json",
    "application/*+json",
    "text/*",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
];

/// Default streamed levels: brotli 4, zstd 3, gzip 6 (fast enough to run per request).
pub const DEFAULT_LEVEL: [i32; 3] = [4, 3, 6];
/// Default cached levels: brotli 9, zstd 12, gzip 9 (paid once per cached object, by the first
/// client that asks for the coding: brotli 11 / zstd 19 take about 0.5 s per 100 KB).
pub const DEFAULT_CACHED_LEVEL: [i32; 3] = [9, 12, 9];
/// Default `min_size`: 1 KiB. Below that the coding's framing eats most of the gain.
pub const DEFAULT_MIN_SIZE: u64 = 1024;

/// [`CompressFile`], validated; `None` where the operator wrote nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompressSettings {
    pub enabled: Option<bool>,
    pub encodings: Option<Vec<Encoding>>,
    pub min_size: Option<u64>,
    pub content_types: Option<Vec<MediaRange>>,
    pub level: Levels,
    pub cached_level: Levels,
    pub eager: Option<bool>,
}

impl CompressSettings {
    /// Validates `file`. Each problem goes to `at(key, message)`, with keys such as
    /// `compress.level.br`; the returned settings leave out what was wrong.
    pub fn convert(file: CompressFile, at: &mut impl FnMut(&str, String)) -> Self {
        let CompressFile { enabled, encodings, min_size, content_types, level, cached_level, eager } = file;
        let encodings = encodings.map(|names| {
            let mut list = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                match Encoding::from_token(name) {
                    Some(Encoding::Identity) | None => at(
                        &format!("compress.encodings[{i}]"),
                        format!("{name:?} is not one of \"br\", \"zstd\", \"gzip\""),
                    ),
                    Some(encoding) if list.contains(&encoding) => {
                        at(&format!("compress.encodings[{i}]"), format!("{name:?} is listed twice"));
                    }
                    Some(encoding) => list.push(encoding),
                }
            }
            if names.is_empty() {
                at("compress.encodings", "must list at least one coding (or set enabled = false)".into());
            }
            list
        });
        let min_size = min_size.and_then(|size| match size {
            SizeFile::Bytes(n) => Some(n),
            SizeFile::Text(text) => parse_size(&text).map_err(|e| at("compress.min_size", e)).ok(),
        });
        let content_types = content_types.map(|list| {
            if list.is_empty() {
                at("compress.content_types", "must list at least one media type".into());
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    MediaRange::parse(text).map_err(|e| at(&format!("compress.content_types[{i}]"), e)).ok()
                })
                .collect()
        });
        Self {
            enabled,
            encodings,
            min_size,
            content_types,
            level: levels(level, "compress.level", at),
            cached_level: levels(cached_level, "compress.cached_level", at),
            eager,
        }
    }

    /// The complete policy of a route with `route` settings (`None`: the route has no
    /// `compress` table) under the `[compress]` `defaults`; `None` when it does not compress.
    pub fn resolve(route: Option<&Self>, defaults: &Self) -> Option<CompressPolicy> {
        let blank = Self::default();
        let enabled = match route {
            Some(route) => route.enabled.unwrap_or(true),
            None => defaults.enabled.unwrap_or(false),
        };
        if !enabled {
            return None;
        }
        let route = route.unwrap_or(&blank);
        let content_types = route.content_types.as_ref().or(defaults.content_types.as_ref()).cloned();
        let content_types = content_types.unwrap_or_else(|| {
            DEFAULT_CONTENT_TYPES.iter().filter_map(|t| MediaRange::parse(t).ok()).collect()
        });
        let complete = |levels: Levels, builtin: [i32; 3]| -> [i32; 3] {
            std::array::from_fn(|i| levels.0[i].unwrap_or(builtin[i]))
        };
        Some(CompressPolicy {
            encodings: route
                .encodings
                .clone()
                .or_else(|| defaults.encodings.clone())
                .unwrap_or_else(|| Encoding::COMPRESSING.to_vec()),
            min_size: route.min_size.or(defaults.min_size).unwrap_or(DEFAULT_MIN_SIZE),
            content_types,
            level: complete(route.level.or(defaults.level), DEFAULT_LEVEL),
            cached_level: complete(route.cached_level.or(defaults.cached_level), DEFAULT_CACHED_LEVEL),
            eager: route.eager.or(defaults.eager).unwrap_or(false),
        })
    }
}

fn levels(file: Option<LevelsFile>, key: &str, at: &mut impl FnMut(&str, String)) -> Levels {
    let Some(LevelsFile { br, zstd, gzip }) = file else { return Levels::default() };
    let mut check = |encoding: Encoding, level: Option<i32>| {
        let level = level?;
        let range = encoding.levels();
        if range.contains(&level) {
            Some(level)
        } else {
            at(
                &format!("{key}.{encoding}"),
                format!("{level} is out of range ({}–{})", range.start(), range.end()),
            );
            None
        }
    };
    Levels([check(Encoding::Brotli, br), check(Encoding::Zstd, zstd), check(Encoding::Gzip, gzip)])
}

/// A route's complete compression policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressPolicy {
    /// Codings offered, in server preference order; never empty, never identity.
    pub encodings: Vec<Encoding>,
    /// Answers with a `Content-Length` below this are not compressed.
    pub min_size: u64,
    /// Media types compressed.
    pub content_types: Vec<MediaRange>,
    /// Levels of streamed compression, indexed like [`Encoding::COMPRESSING`].
    pub level: [i32; 3],
    /// Levels of cached variants, indexed like [`Encoding::COMPRESSING`].
    pub cached_level: [i32; 3],
    /// Compress every variant of a cached answer when it is stored.
    pub eager: bool,
}

impl CompressPolicy {
    /// The streamed level of `encoding` (0 for identity).
    pub fn level(&self, encoding: Encoding) -> i32 {
        encoding.index().map_or(0, |i| self.level[i])
    }

    /// The cached level of `encoding` (0 for identity).
    pub fn cached_level(&self, encoding: Encoding) -> i32 {
        encoding.index().map_or(0, |i| self.cached_level[i])
    }

    /// True when a `Content-Type` value names a media type the policy compresses.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = media_type.to_ascii_lowercase();
            return self.content_types.iter().any(|range| range.matches(&lower));
        }
        self.content_types.iter().any(|range| range.matches(media_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(toml_text: &str) -> (CompressSettings, Vec<(String, String)>) {
        let file: CompressFile = toml::from_str(toml_text).expect("valid TOML");
        let mut problems = Vec::new();
        let settings =
            CompressSettings::convert(file, &mut |k: &str, m: String| problems.push((k.to_owned(), m)));
        (settings, problems)
    }

    #[test]
    fn a_route_table_turns_compression_on_with_defaults() {
        let (route, problems) = convert("min_size = \"2KiB\"\nlevel = { br = 5 }\n");
        assert!(problems.is_empty(), "{problems:?}");
        let policy = CompressSettings::resolve(Some(&route), &CompressSettings::default()).unwrap();
        assert_eq!(policy.encodings, Encoding::COMPRESSING.to_vec());
        assert_eq!(policy.min_size, 2048);
        assert_eq!(policy.level, [5, 3, 6]);
        assert_eq!(policy.cached_level, DEFAULT_CACHED_LEVEL);
        assert!(!policy.eager);
        assert!(policy.compresses_type("application/json; charset=utf-8"));
        assert!(policy.compresses_type("Application/Problem+JSON"));
        assert!(policy.compresses_type("text/event-stream"));
        assert!(!policy.compresses_type("image/png"));
        assert!(!policy.compresses_type(""));
    }

    #[test]
    fn routes_inherit_the_section_and_override_it() {
        let (defaults, _) = convert("enabled = true\nencodings = [\"gzip\"]\nlevel = { gzip = 1 }\n");
        let none = CompressSettings::resolve(None, &defaults).unwrap();
        assert_eq!(none.encodings, vec![Encoding::Gzip]);
        assert_eq!(none.level, [4, 3, 1]);
        let (route, _) = convert("encodings = [\"zstd\", \"gzip\"]\nlevel = { zstd = 9 }\n");
        let policy = CompressSettings::resolve(Some(&route), &defaults).unwrap();
        assert_eq!(policy.encodings, vec![Encoding::Zstd, Encoding::Gzip]);
        assert_eq!(policy.level, [4, 9, 1]);
        let (off, _) = convert("enabled = false\n");
        assert_eq!(CompressSettings::resolve(Some(&off), &defaults), None);
        assert_eq!(CompressSettings::resolve(None, &CompressSettings::default()), None);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let (_, problems) = convert(
            r#"
            encodings = ["br", "deflate", "br"]
            min_size = "lots"
            content_types = ["json", "text/*"]
            level = { br = 12, gzip = 0 }
            cached_level = { zstd = 23 }
            "#,
        );
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "compress.encodings[1]",
                "compress.encodings[2]",
                "compress.min_size",
                "compress.content_types[0]",
                "compress.level.br",
                "compress.level.gzip",
                "compress.cached_level.zstd",
            ],
            "{problems:?}"
        );
        assert!(problems[4].1.contains("0–11"), "{problems:?}");
    }

    #[test]
    fn media_ranges() {
        let range = MediaRange::parse("application/*+json").unwrap();
        assert!(range.matches("application/problem+json"));
        assert!(!range.matches("application/json"));
        assert!(MediaRange::parse("text/*").unwrap().matches("text/html"));
        assert!(MediaRange::parse("TEXT/CSS").unwrap().matches("text/css"));
        assert!(MediaRange::parse("text/*/*").is_err());
        assert!(MediaRange::parse("text").is_err());
        assert!(MediaRange::parse("text/plain; charset=utf-8").is_err());
    }
}
