//! Delay mode (nginx's `limit_req burst=N` without `nodelay`): a request over a limit's burst
//! that the limit can admit within its `delay` waits for its turn instead of being refused.
//!
//! The limiter decides the wait when it admits the request and the request's slot is taken at
//! that moment (see [`super::limiter`]), so a waiting request cannot be overtaken and the wait
//! is bounded by the rule's `delay`. The request holds its concurrency permit while it waits.
//! When several limits of a route ask for a wait, the request waits for the longest.

use std::time::Duration;

use super::metrics::LimitHandles;

/// Waits `wait` (Tokio time: paused in tests) and records it on the limits that asked for it.
pub async fn wait_turn(wait: Duration, delayed: &[(&LimitHandles, Duration)]) {
    for (handles, own) in delayed {
        handles.delayed.inc();
        handles.delay_seconds.observe(own.as_secs_f64());
    }
    tokio::time::sleep(wait).await;
}
