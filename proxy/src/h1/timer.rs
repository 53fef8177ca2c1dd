//! A connection's one timer: the response head's deadline, then the response body's read
//! timeout, from one exchange to the next.
//!
//! A timer made, registered and dropped for every exchange costs about 2% of a forwarded
//! request; this one is made at the connection's first wait and kept. Setting a later
//! deadline on a registered timer costs nearly as much as making one, so a later deadline is
//! only noted: the timer fires at the earlier one it was set to, and is set to the later one
//! then (for a busy connection, once per earlier deadline). An earlier deadline is set at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::time::{Instant, Sleep};

/// A wait's deadline, and the sleep that ends it.
#[derive(Debug)]
pub(super) struct Timer {
    /// When the current wait ends.
    until: Instant,
    /// Set to `until`, or to an earlier deadline of a wait before.
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    /// When the current wait ends.
    pub(super) fn until(&self) -> Instant {
        self.until
    }

    /// Waits until `until` on the timer in `slot` (made there at the first wait): `Ready` once
    /// it has passed.
    ///
    /// The sleep is polled outside the task's budget, as tokio's `timeout` does: a wait whose
    /// other side used up the budget (an endpoint that floods `1xx` heads) still ends.
    pub(super) fn poll(slot: &mut Option<Timer>, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = match slot {
            Some(timer) => {
                timer.until = until;
                if timer.sleep.deadline() > until {
                    timer.sleep.as_mut().reset(until);
                }
                timer
            }
            None => slot.insert(Timer { until, sleep: Box::pin(tokio::time::sleep_until(until)) }),
        };
        loop {
            ready!(std::pin::pin!(tokio::task::unconstrained(timer.sleep.as_mut())).poll(cx));
            if timer.sleep.deadline() >= timer.until {
                return Poll::Ready(());
            }
            // Set for an earlier wait: on to this one's deadline.
            timer.sleep.as_mut().reset(timer.until);
        }
    }
}
