//! `redis-tier`: latency of memory vs Redis vs origin lookups and purge propagation between
//! two sidecars. See `accel_benches::shared_tier`.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use accel_benches::{runtime, shared_tier};
use clap::Parser;

/// Command line of `redis-tier`.
#[derive(Debug, Parser)]
#[command(name = "redis-tier", about = "Shared Redis tier: lookup latencies and purge propagation")]
struct Args {
    /// Redis to measure against (keys under a fresh `bench:` prefix, never flushed).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Samples per measurement.
    #[arg(long, default_value_t = 5000)]
    iterations: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Tokio worker threads.
    #[arg(long, default_value = "2")]
    threads: NonZeroUsize,
}

fn main() -> ExitCode {
    let Args { redis, iterations, size, threads } = Args::parse();
    let runtime = match runtime::build(threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("redis-tier: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shared_tier::run(&redis, iterations.max(1), size)) {
        Ok(figures) => {
            println!("{:<48} {:>10} {:>10} {:>10}", "measurement", "p50", "p99", "mean");
            for f in figures {
                println!("{:<48} {:>10.1?} {:>10.1?} {:>10.1?}", f.name, f.p50, f.p99, f.mean);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redis-tier: {e:#}");
            ExitCode::FAILURE
        }
    }
}
