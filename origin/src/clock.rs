//! The origin's notion of "now", injected so that tests and seeds agree on time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a day; activity days are `unix seconds / DAY`.
pub const DAY: i64 = 86_400;

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, in unix seconds (tests).
    Fixed(i64),
}

impl Clock {
    /// Now, in unix seconds.
    pub fn now(self) -> i64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Self::Fixed(now) => now,
        }
    }

    /// The current day number (days since the unix epoch, UTC).
    pub fn today(self) -> i64 {
        self.now().div_euclid(DAY)
    }
}

/// The calendar date (`YYYY-MM-DD`, UTC) of day number `day` (days since 1970-01-01).
pub fn date_of_day(day: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_days() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(19_782), "2024-02-29");
        assert_eq!(date_of_day(-1), "1969-12-31");
    }
}
