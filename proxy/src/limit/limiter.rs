//! A keyed GCRA limiter (governor) over a bounded [`KeyStore`], generic over its clock: the
//! proxy runs it on [`TokioClock`] (so stage tests pause and advance Tokio's time), unit tests
//! on governor's `FakeRelativeClock`.
//!
//! Delay mode is GCRA with a longer tolerance: a limit of burst `B` with `delay = D` admits
//! `Q = D / interval` more requests per key than `B`, and those extra requests wait for the
//! time at which plain GCRA would have admitted them. Each admitted request advances the key's
//! state when it is admitted, so waiting requests hold their slot (first come, first served)
//! and the rate holds; at most `Q` requests of a key wait at once, none longer than `D`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::gauge::Gauge;

use super::key::LimitKey;
use super::rule::Rate;
use super::store::KeyStore;

/// Tokio's clock as a governor clock: nanoseconds since the clock was made. Under
/// `tokio::time::pause()` it stands still until the test advances it.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        self.origin.elapsed().into()
    }
}

/// The answer of a limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted. `wait` is zero except in delay mode, when the request must first wait that
    /// long (never more than the limit's `delay`).
    Pass {
        /// Requests the key may still make at once without waiting.
        remaining: u32,
        wait: Duration,
        /// Until the key's bucket is full again.
        reset: Duration,
    },
    /// Refused.
    Reject {
        /// The earliest time a retry can be admitted.
        retry_after: Duration,
        /// Until the key's bucket is full again.
        reset: Duration,
    },
}

/// One limit's state: a keyed GCRA limiter and its shape.
#[derive(Debug)]
pub struct Limiter<C: Clock = TokioClock> {
    governor: RateLimiter<LimitKey, KeyStore, C, StateInformationMiddleware>,
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// Requests admitted at once: burst plus queue.
    capacity: u32,
    /// Admissions beyond the burst that wait (delay mode); 0 otherwise.
    queue: u32,
}

impl<C: Clock<Instant = Nanos>> Limiter<C> {
    /// A limiter for `rate` with `burst`, and in delay mode a bounded wait of `delay`; at most
    /// `max_keys` keys have their own bucket (see [`KeyStore`]), counted on `keys_gauge`.
    pub fn new(
        rate: Rate,
        burst: NonZeroU32,
        delay: Option<Duration>,
        max_keys: usize,
        clock: C,
        keys_gauge: Gauge,
    ) -> Self {
        let interval = rate.interval();
        let queue = delay.map_or(0, |d| Rate::slots_in(interval, d));
        let capacity = burst.get().saturating_add(queue);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(capacity).unwrap_or(NonZeroU32::MIN));
        let store = KeyStore::new(max_keys, keys_gauge);
        let governor = RateLimiter::new(quota, store, clock);
        Self { governor, interval, capacity, queue }
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: LimitKey) -> Decision {
        match self.governor.check_key(&key) {
            Ok(state) => {
                // Slots left after this request, queue included. The state only shows whole
                // slots, so a delayed request waits up to one interval more than plain GCRA
                // would make it: never less, so the rate holds.
                let left = state.remaining_burst_capacity();
                Decision::Pass {
                    remaining: left.saturating_sub(self.queue),
                    wait: self.interval * self.queue.saturating_sub(left),
                    reset: self.interval * (self.capacity - left.min(self.capacity)),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.governor.clock().now());
                Decision::Reject { retry_after, reset: retry_after + self.interval * (self.capacity - 1) }
            }
        }
    }

    /// Forgets keys whose bucket has refilled (no decision changes), and gives memory back.
    pub fn cleanup(&self) {
        self.governor.retain_recent();
        self.governor.shrink_to_fit();
    }

    /// Keys with their own bucket now.
    pub fn tracked_keys(&self) -> usize {
        self.governor.len()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        rate: &str,
        burst: u32,
        delay: Option<u64>,
        max_keys: usize,
    ) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rate: Rate = rate.parse().unwrap();
        let limiter = Limiter::new(
            rate,
            NonZeroU32::new(burst).unwrap(),
            delay.map(Duration::from_millis),
            max_keys,
            clock.clone(),
            Gauge::default(),
        );
        (limiter, clock)
    }

    fn passes(limiter: &Limiter<FakeRelativeClock>, key: LimitKey, n: usize) -> usize {
        (0..n).filter(|_| matches!(limiter.check(key), Decision::Pass { .. })).count()
    }

    #[test]
    fn a_burst_passes_at_once_then_the_rate_holds() {
        let (limiter, clock) = limiter("20/s", 5, None, 100);
        assert_eq!(passes(&limiter, 1, 10), 5, "the burst, then rejections");
        // 20/s: one request every 50 ms.
        clock.advance(Duration::from_millis(49));
        assert_eq!(passes(&limiter, 1, 3), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(passes(&limiter, 1, 3), 1);
        // One second refills 20 slots, capped at the burst.
        clock.advance(Duration::from_secs(1));
        assert_eq!(passes(&limiter, 1, 100), 5);
        // Steady traffic at the rate: 100 requests over 5 s all pass.
        clock.advance(Duration::from_secs(1));
        let mut passed = 0;
        for _ in 0..100 {
            clock.advance(Duration::from_millis(50));
            passed += passes(&limiter, 1, 1);
        }
        assert_eq!(passed, 100);
    }

    #[test]
    fn decisions_report_remaining_retry_after_and_reset() {
        let (limiter, clock) = limiter("2/s", 3, None, 100);
        let ms = Duration::from_millis;
        assert_eq!(limiter.check(7), Decision::Pass { remaining: 2, wait: ms(0), reset: ms(500) });
        assert_eq!(limiter.check(7), Decision::Pass { remaining: 1, wait: ms(0), reset: ms(1000) });
        assert_eq!(limiter.check(7), Decision::Pass { remaining: 0, wait: ms(0), reset: ms(1500) });
        assert_eq!(limiter.check(7), Decision::Reject { retry_after: ms(500), reset: ms(1500) });
        clock.advance(ms(200));
        assert_eq!(limiter.check(7), Decision::Reject { retry_after: ms(300), reset: ms(1300) });
        clock.advance(ms(300));
        assert!(matches!(limiter.check(7), Decision::Pass { remaining: 0, .. }));
    }

    #[test]
    fn keys_are_isolated() {
        let (limiter, _clock) = limiter("1/s", 2, None, 100);
        assert_eq!(passes(&limiter, 1, 5), 2);
        assert_eq!(passes(&limiter, 2, 5), 2);
        assert_eq!(passes(&limiter, 1, 5), 0);
        assert_eq!(limiter.tracked_keys(), 2);
    }

    #[test]
    fn delay_mode_admits_a_bounded_queue_with_waits_at_the_rate() {
        // 10/s (100 ms apart), burst 2, up to 300 ms of waiting: 3 more requests queue.
        let (limiter, _clock) = limiter("10/s", 2, Some(300), 100);
        let waits: Vec<Option<Duration>> = (0..7)
            .map(|_| match limiter.check(1) {
                Decision::Pass { wait, .. } => Some(wait),
                Decision::Reject { .. } => None,
            })
            .collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(waits, [ms(0), ms(0), ms(100), ms(200), ms(300), None, None]);
    }

    #[test]
    fn at_the_bound_new_keys_share_the_overflow_bucket_until_idle_keys_are_dropped() {
        let (limiter, clock) = limiter("1/s", 1, None, 3);
        for key in 1..=3 {
            assert_eq!(passes(&limiter, key, 1), 1);
        }
        assert_eq!(limiter.tracked_keys(), 3);
        // Full: keys 4, 5 and 6 share one bucket of burst 1.
        assert_eq!(passes(&limiter, 4, 1), 1);
        assert_eq!(passes(&limiter, 5, 1), 0);
        assert_eq!(passes(&limiter, 6, 1), 0);
        assert_eq!(limiter.tracked_keys(), 3);
        // Tracked keys keep their own bucket.
        clock.advance(Duration::from_millis(500));
        limiter.cleanup();
        assert_eq!(limiter.tracked_keys(), 3, "nothing is idle yet");
        clock.advance(Duration::from_millis(500));
        assert_eq!(passes(&limiter, 1, 1), 1);
        // A key is idle one interval after its bucket refilled: cleanup drops keys 2 and 3
        // (1 was just used), which makes room for two.
        clock.advance(Duration::from_secs(1));
        limiter.cleanup();
        assert_eq!(limiter.tracked_keys(), 1);
        assert_eq!(passes(&limiter, 5, 1), 1);
        assert_eq!(passes(&limiter, 6, 1), 1);
        assert_eq!(limiter.tracked_keys(), 3);
    }

    #[test]
    fn a_hundred_thousand_distinct_keys_stay_within_the_bound() {
        let (limiter, _clock) = limiter("10/s", 1, None, 1000);
        for key in 0..100_000u64 {
            let _ = limiter.check(key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        assert_eq!(limiter.tracked_keys(), 1000);
    }
}
