//! The database: PostgreSQL in production, embedded SQLite by default.
//!
//! Both backends run the same SQL text wherever they can (times are unix seconds, booleans and
//! counters decode the same way); [`on_db!`](crate::on_db) runs one query expression against
//! whichever pool is configured, so each query is written once and type-checked for both.
//! Where the SQL must differ, the two texts sit next to each other in a [`Sql`] pair.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The default database: a SQLite file under `data/`, created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/origin.db?mode=rwc";

/// Runs `$body` with `$pool` bound to the configured pool (`&PgPool` or `&SqlitePool`); the
/// body is compiled once per backend.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// A connection pool on one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL (`postgres://…`).
    Postgres(PgPool),
    /// SQLite (`sqlite://…`), in WAL mode with a busy timeout so that several processes can
    /// share the file.
    Sqlite(SqlitePool),
}

/// One statement written for each backend, where their dialects differ.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    /// The PostgreSQL text.
    pub postgres: &'static str,
    /// The SQLite text.
    pub sqlite: &'static str,
}

impl Sql {
    /// The text for `db`'s backend.
    pub fn for_db(&self, db: &Db) -> &'static str {
        match db {
            Db::Postgres(_) => self.postgres,
            Db::Sqlite(_) => self.sqlite,
        }
    }
}

/// Why the database could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names neither `postgres://` nor `sqlite://`.
    #[error("unsupported database url scheme (expected postgres:// or sqlite://): {url}")]
    Scheme {
        /// The URL as given.
        url: String,
    },
    /// The URL could not be parsed or the server refused the connection.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Refreshing the analytics views failed.
    #[error("cannot refresh the analytics views")]
    Refresh(#[source] sqlx::Error),
}

/// Pool sizes: enough connections for the handlers in flight on a small machine; SQLite
/// writes serialise anyway, reads run in parallel under WAL.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Most connections open at once.
    pub max: u32,
    /// Connections kept open when idle.
    pub min: u32,
}

impl Default for PoolSize {
    fn default() -> Self {
        Self { max: 16, min: 2 }
    }
}

/// How long a request waits for the database before the origin gives up and answers `503` with
/// `Retry-After` (so that a sidecar tries another instance).
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For a connection from the pool (default 5 s).
    pub acquire: Duration,
    /// For another connection's write lock on a SQLite file (default 5 s: three demo instances
    /// share one file, so writers queue rather than fail at once).
    pub sqlite_busy: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self { acquire: Duration::from_secs(5), sqlite_busy: Duration::from_secs(5) }
    }
}

impl Db {
    /// Opens a pool for `url` (`postgres://…` or `sqlite://…`) with the default [`Waits`].
    pub async fn connect(url: &str, size: PoolSize) -> Result<Self, DbError> {
        Self::connect_with(url, size, Waits::default()).await
    }

    /// Opens a pool for `url` (`postgres://…` or `sqlite://…`).
    pub async fn connect_with(url: &str, size: PoolSize, waits: Waits) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(DbError::Connect)?;
            Self::connect_postgres(options, size, waits).await
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(DbError::Connect)?;
            Self::connect_sqlite(options, size, waits).await
        } else {
            Err(DbError::Scheme { url: url.to_owned() })
        }
    }

    /// Opens a PostgreSQL pool (tests pass options with their own `search_path`).
    pub async fn connect_postgres(
        options: PgConnectOptions,
        size: PoolSize,
        waits: Waits,
    ) -> Result<Self, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(size.max)
            .min_connections(size.min)
            .acquire_timeout(waits.acquire)
            .connect_with(options)
            .await
            .map_err(DbError::Connect)?;
        Ok(Self::Postgres(pool))
    }

    /// Opens a SQLite pool in WAL mode, with a busy timeout and foreign keys enforced; the
    /// parent directory of the file is created when missing.
    pub async fn connect_sqlite(
        options: SqliteConnectOptions,
        size: PoolSize,
        waits: Waits,
    ) -> Result<Self, DbError> {
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Connect(sqlx::Error::Io(e)))?;
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(waits.sqlite_busy)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(size.max)
            .min_connections(size.min.min(size.max))
            .acquire_timeout(waits.acquire)
            .connect_with(options)
            .await
            .map_err(DbError::Connect)?;
        Ok(Self::Sqlite(pool))
    }

    /// Applies the backend's migrations (`migrations/postgres` or `migrations/sqlite`).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Self::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await,
            Self::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await,
        }
        .map_err(DbError::Migrate)
    }

    /// Refreshes the analytics materialized views (PostgreSQL) now, waiting for a refresh in
    /// progress elsewhere to finish; SQLite's plain views need nothing.
    pub async fn refresh_views(&self) -> Result<(), DbError> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query("SELECT refresh_performance_views()")
                    .execute(pool)
                    .await
                    .map_err(DbError::Refresh)?;
            }
            Self::Sqlite(_) => {}
        }
        Ok(())
    }

    /// Refreshes the analytics materialized views (PostgreSQL) if no instance did in the last
    /// `min_interval` and none is refreshing now (an advisory lock): however many instances
    /// call this every interval, the views refresh about once per interval. Whether this call
    /// refreshed; always `false` on SQLite, whose views are computed on read.
    pub async fn refresh_views_if_due(&self, min_interval: Duration) -> Result<bool, DbError> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar("SELECT refresh_analytics_views_if_due($1)")
                .bind(min_interval.as_secs_f64())
                .fetch_one(pool)
                .await
                .map_err(DbError::Refresh),
            Self::Sqlite(_) => Ok(false),
        }
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Connections open (idle and in use).
    pub fn size(&self) -> u32 {
        on_db!(self, pool => pool.size())
    }

    /// Idle connections.
    pub fn idle(&self) -> usize {
        on_db!(self, pool => pool.num_idle())
    }

    /// The pool's connection limit.
    pub fn max_connections(&self) -> u32 {
        on_db!(self, pool => pool.options().get_max_connections())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }
}
