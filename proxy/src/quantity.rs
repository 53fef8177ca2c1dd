//! Units operators write: durations (`"250ms"`, `"5m"`) and byte sizes (`"256MiB"`).

use std::path::Path;
use std::time::Duration;

use crate::problem::Problems;

/// Parses a duration such as `"250ms"`, `"15s"`, `"5m"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses an optional duration, `default_secs` when absent.
pub fn duration(
    p: &mut Problems,
    shown: &Path,
    key: &str,
    text: Option<String>,
    default_secs: u64,
) -> Duration {
    match text {
        None => Duration::from_secs(default_secs),
        Some(text) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.at(shown, key, "must be greater than zero");
                Duration::from_secs(default_secs)
            }
            Err(e) => {
                p.at(shown, key, e);
                Duration::from_secs(default_secs)
            }
        },
    }
}

/// Parses a byte size: a plain number of bytes, or a number with a unit
/// (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`; `K`, `M`, `G` are binary).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 =
        number.parse().map_err(|_| format!("invalid size {text:?}: expected a number such as \"64MiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("invalid size {text:?}: unknown unit {other:?}")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {text:?}: out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("five").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
