//! The circuit breaker in front of Redis: after `failures` consecutive failed calls it stops
//! calling Redis for `cool_down`, then lets one probe through (half-open); the probe's success
//! closes the circuit again, its failure re-opens it. Requests never wait on a dead Redis.
//!
//! Each transition is logged once (closed → open as a warning, → closed as info) and mirrored
//! in `accel_redis_up` and `accel_redis_circuit_state`. Time is tokio's, so tests pause it.

use std::sync::Mutex;

use tokio::time::{Duration, Instant};

use super::config::BreakerConfig;
use super::metrics::TierMetrics;

/// The breaker's state, as exported (`accel_redis_circuit_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// One probe may go through.
    HalfOpen,
    /// No calls until the cool-down ends.
    Open,
}

impl CircuitState {
    /// The label / log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        until: Instant,
    },
    /// A probe is in flight; if it has not reported by `deadline` (its caller gave up),
    /// another caller may probe.
    HalfOpen {
        deadline: Instant,
    },
}

/// A circuit breaker; cheap to consult on every call.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Longest a probe may take before another caller may probe instead.
    probe_timeout: Duration,
    state: Mutex<State>,
    metrics: TierMetrics,
}

impl Breaker {
    /// A closed breaker. `probe_timeout` is the per-call timeout.
    pub fn new(config: BreakerConfig, probe_timeout: Duration, metrics: TierMetrics) -> Self {
        metrics.up.set(1);
        metrics.circuit.set(CircuitState::Closed.gauge());
        Self { config, probe_timeout, state: Mutex::new(State::Closed { failures: 0 }), metrics }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        Self::of(&self.lock())
    }

    fn of(state: &State) -> CircuitState {
        match state {
            State::Closed { .. } => CircuitState::Closed,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
        }
    }

    /// Says `accel_redis_up` 0 until [`Breaker::connected`]: for a client that has no
    /// connection yet (a cluster is connected in the background).
    pub fn disconnected(&self) {
        let _state = self.lock();
        self.metrics.up.set(0);
    }

    /// The connection exists now: `accel_redis_up` follows the circuit again.
    pub fn connected(&self) {
        let state = self.lock();
        self.publish(Self::of(&state));
    }

    /// May a call go to Redis now? `false` while open (and while another probe is in flight).
    pub fn try_acquire(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { deadline: now + self.probe_timeout * 2 };
                self.publish(CircuitState::HalfOpen);
                tracing::debug!("redis circuit half-open: probing");
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { deadline } if now >= deadline => {
                *state = State::HalfOpen { deadline: now + self.probe_timeout * 2 };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// Reports a successful call.
    pub fn success(&self) {
        let mut state = self.lock();
        match *state {
            State::Closed { ref mut failures } => *failures = 0,
            State::HalfOpen { .. } => {
                *state = State::Closed { failures: 0 };
                self.publish(CircuitState::Closed);
                tracing::info!("redis available again: circuit closed");
            }
            // A call that started before the circuit opened; the probe decides.
            State::Open { .. } => {}
        }
    }

    /// Reports a failed call (error or timeout).
    pub fn failure(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { ref mut failures } => {
                *failures += 1;
                if *failures >= self.config.failures.get() {
                    *state = State::Open { until: now + self.config.cool_down };
                    self.publish(CircuitState::Open);
                    self.metrics.circuit_opens.inc();
                    tracing::warn!(
                        failures = self.config.failures.get(),
                        cool_down = ?self.config.cool_down,
                        "redis unavailable: circuit open, serving from memory and local limits"
                    );
                }
            }
            State::HalfOpen { .. } => {
                *state = State::Open { until: now + self.config.cool_down };
                self.publish(CircuitState::Open);
                self.metrics.circuit_opens.inc();
                tracing::debug!("redis probe failed: circuit open again");
            }
            State::Open { .. } => {}
        }
    }

    fn publish(&self, state: CircuitState) {
        self.metrics.circuit.set(state.gauge());
        self.metrics.up.set(i64::from(state == CircuitState::Closed));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::metrics::Metrics;

    fn breaker(failures: u32) -> (Breaker, TierMetrics) {
        let metrics = TierMetrics::new(&Metrics::new(&[1.0]));
        let config = BreakerConfig {
            failures: NonZeroU32::new(failures).expect("non-zero"),
            cool_down: Duration::from_secs(5),
        };
        (Breaker::new(config, Duration::from_millis(50), metrics.clone()), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_recovers_through_one_probe() {
        let (breaker, metrics) = breaker(3);
        breaker.failure();
        breaker.failure();
        breaker.success();
        breaker.failure();
        breaker.failure();
        assert_eq!(breaker.state(), CircuitState::Closed, "a success resets the count");
        breaker.failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(metrics.up.get(), 0);
        assert_eq!(metrics.circuit.get(), 2);
        assert_eq!(metrics.circuit_opens.get(), 1);
        assert!(!breaker.try_acquire());

        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.try_acquire(), "the first caller after the cool-down probes");
        assert!(!breaker.try_acquire(), "only one probe at a time");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        breaker.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(metrics.up.get(), 1);
        assert!(breaker.try_acquire());
    }

    #[test]
    fn up_waits_for_the_connection() {
        let (breaker, metrics) = breaker(1);
        breaker.disconnected();
        assert_eq!((metrics.up.get(), breaker.state()), (0, CircuitState::Closed));
        breaker.connected();
        assert_eq!(metrics.up.get(), 1);
        breaker.failure();
        breaker.disconnected();
        breaker.connected();
        assert_eq!(metrics.up.get(), 0, "connected, but the circuit is open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_an_abandoned_probe_is_replaced() {
        let (breaker, metrics) = breaker(1);
        breaker.failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.try_acquire());
        breaker.failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(metrics.circuit_opens.get(), 2, "a failed probe opens it again");
        assert!(!breaker.try_acquire());

        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.try_acquire());
        // That probe's caller went away without reporting.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(breaker.try_acquire(), "a stuck probe does not keep the circuit half-open");
    }
}
