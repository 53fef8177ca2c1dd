//! The state every handler shares.

use std::future::Future;
use std::sync::Arc;

use crate::clock::Clock;
use crate::compute::Compute;
use crate::db::Db;
use crate::metrics::Metrics;

/// Largest material upload accepted, in bytes; larger bodies get 413.
pub const DEFAULT_UPLOAD_LIMIT: usize = 8 * 1024 * 1024;

/// Caps on the work one request may cause, beyond the upload size.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most chunks one upload may make (413 beyond; default 2,000, about 1.4 MB of text).
    pub chunks_per_upload: usize,
    /// Most chunks one user keeps (422 beyond; default 10,000): also the most embeddings one
    /// retrieval scans (10,000 × 1 KiB).
    pub chunks_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { chunks_per_upload: 2_000, chunks_per_user: 10_000 }
    }
}

/// The origin's state: the database, the metrics, the clock and the limits.
#[derive(Debug, Clone)]
pub struct App {
    /// The connection pool.
    pub db: Db,
    /// Metric handles (shared by all clones).
    pub metrics: Arc<Metrics>,
    /// Where "now" comes from.
    pub clock: Clock,
    /// Largest material upload, in bytes.
    pub upload_limit: usize,
    /// Caps on the work one request may cause.
    pub limits: Limits,
    /// The bounded pool of CPU-heavy tasks.
    pub compute: Compute,
}

impl App {
    /// State over `db` with the system clock and default limits.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            metrics: Arc::new(Metrics::default()),
            clock: Clock::System,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            limits: Limits::default(),
            compute: Compute::for_this_machine(),
        }
    }

    /// Uses `clock` for "now".
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Sets the largest material upload, in bytes.
    pub fn with_upload_limit(self, upload_limit: usize) -> Self {
        Self { upload_limit, ..self }
    }

    /// Sets the caps on work per request.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// Bounds CPU-heavy work with `compute`.
    pub fn with_compute(self, compute: Compute) -> Self {
        Self { compute, ..self }
    }

    /// Runs the database work `fut` as the query `name`, timing it.
    pub async fn query<T>(&self, name: &'static str, fut: impl Future<Output = T>) -> T {
        self.metrics.query(name, fut).await
    }
}
