//! Logs: tracing to standard output, text or JSON, written by a background thread so a slow
//! terminal or pipe never blocks a request. Access lines use the target `accel::access`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines the background writer may have queued before new ones are dropped. The queue is a
/// ring allocated in full at start (32 bytes a line), so its length is resident memory from
/// the first second: `tracing-appender`'s default of 128,000 lines is 4 MiB, a quarter of an
/// idle sidecar. 8,192 lines (256 KiB) hold about a second of access lines at 8,000 requests/s
/// while the standard output is stalled; past that, lines are dropped rather than a request
/// made to wait.
const BUFFERED_LINES: usize = 8_192;

/// Installs the global subscriber. Keep the guard alive until exit: dropping it flushes.
/// `RUST_LOG` wins over the configured level.
pub fn init(config: &LogConfig) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .finish(std::io::stdout());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    // `log.access` decides the access lines whatever the level: `level = "warn"` quiets the
    // rest of the log, not the one line per request the operator asked for.
    let access = if config.access { "accel::access=info" } else { "accel::access=off" };
    if let Ok(directive) = access.parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        // Already installed (tests): keep the existing one.
    }
    guard
}
