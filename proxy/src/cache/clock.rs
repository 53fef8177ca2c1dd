//! The cache's clock: wall-clock milliseconds, injected so that tests control time.
//!
//! Entries record when they were stored as milliseconds since the Unix epoch (so an entry
//! means the same thing in another process, e.g. a second-level tier). The default clock
//! reads the wall clock once at start and then advances with Tokio's clock, so
//! `tokio::time::pause()` / `advance()` move cache time in tests; [`Clock::manual`] is a
//! clock that only moves when told.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A source of cache time.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    /// Wall time at `start`, advanced by Tokio's clock since.
    Tokio { wall: Millis, start: tokio::time::Instant },
    /// Set by hand.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The wall clock, advancing with Tokio's (paused) clock.
    pub fn system() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self(Source::Tokio { wall, start: tokio::time::Instant::now() })
    }

    /// A clock at `start` that moves only by [`Clock::advance`].
    pub fn manual(start: Millis) -> Self {
        Self(Source::Manual(Arc::new(AtomicU64::new(start))))
    }

    /// Now.
    pub fn now(&self) -> Millis {
        match &self.0 {
            Source::Tokio { wall, start } => wall + start.elapsed().as_millis() as u64,
            Source::Manual(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(now) = &self.0 {
            now.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_follows_paused_tokio_time() {
        let clock = Clock::system();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - before, 90_000);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), 1_250);
    }
}
