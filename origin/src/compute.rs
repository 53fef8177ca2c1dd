//! CPU-heavy work (the forecast's simulation, PDF extraction, chunking and embedding, ranking
//! a retrieval) runs off the async workers on the blocking pool, at most `slots` at a time.
//! Beyond that, up to `queue` requests wait for a slot; a request that finds the queue full is
//! answered `503` with `Retry-After` at once, so that a burst sheds load (and a sidecar fails
//! over) instead of piling up threads and memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The bounded pool of CPU-heavy tasks; clones share it.
#[derive(Debug, Clone)]
pub struct Compute {
    total: usize,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
}

/// A held slot: the task it was taken for runs while it lives.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Compute {
    /// At most `slots` tasks at once (at least one), and `queue` requests waiting for one.
    pub fn new(slots: usize, queue: usize) -> Self {
        let total = slots.max(1);
        Self { total, slots: Arc::new(Semaphore::new(total)), waiting: Arc::new(AtomicUsize::new(0)), queue }
    }

    /// How many tasks may run at once.
    pub fn slots(&self) -> usize {
        self.total
    }

    /// One slot per core, and a queue four times as long.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self::new(cores, 4 * cores)
    }

    /// A slot now, or after waiting in the queue; `503` when the queue is full.
    pub async fn slot(&self) -> Result<Slot, ApiError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _queued = Queued(&self.waiting);
        if waiting >= self.queue {
            return Err(ApiError::Unavailable { reason: "too many computations in progress" });
        }
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable { reason: "shutting down" })?;
        Ok(Slot { _permit: permit })
    }

    /// Runs `work` on the blocking pool once it has a slot.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = self.slot().await?;
        let result = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await;
        result.map_err(ApiError::Computation)
    }
}

/// Leaves the queue when dropped (also when the waiting request is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_is_a_503_and_a_freed_slot_serves_the_next() {
        let compute = Compute::new(1, 1);
        let held = compute.slot().await.expect("the free slot");
        let queued = tokio::spawn({
            let compute = compute.clone();
            async move { compute.slot().await.map(|_| ()) }
        });
        while compute.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = compute.slot().await;
        assert!(matches!(refused, Err(ApiError::Unavailable { .. })), "{refused:?}");
        drop(held);
        assert!(queued.await.expect("joins").is_ok(), "the queued request gets the slot");
        assert_eq!(compute.waiting.load(Ordering::Acquire), 0);
        assert_eq!(compute.run(|| 6 * 7).await.expect("runs"), 42);
    }
}
