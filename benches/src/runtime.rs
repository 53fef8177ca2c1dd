//! The tokio runtime the benchmark binaries run on.

use std::num::NonZeroUsize;

/// Builds a runtime with `threads` worker threads.
///
/// One thread gives a current-thread runtime: with a single worker there is nothing to steal,
/// and a current-thread scheduler avoids the cross-thread wake-ups of a one-worker
/// multi-thread runtime, so a process pinned to one core spends its time on the work itself.
pub fn build(threads: NonZeroUsize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads.get() == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads.get()).enable_all().build()
    }
}
