//! The state every handler shares.

use std::future::Future;
use std::sync::Arc;

use crate::clock::Clock;
use crate::db::Db;
use crate::metrics::Metrics;

/// Largest material upload accepted, in bytes; larger bodies get 413.
pub const DEFAULT_UPLOAD_LIMIT: usize = 8 * 1024 * 1024;

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
}

impl App {
    /// State over `db` with the system clock and default limits.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            metrics: Arc::new(Metrics::default()),
            clock: Clock::System,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
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

    /// Runs the database work `fut` as the query `name`, timing it.
    pub async fn query<T>(&self, name: &'static str, fut: impl Future<Output = T>) -> T {
        self.metrics.query(name, fut).await
    }
}
