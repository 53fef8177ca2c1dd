//! The `accel` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Accel: a sidecar reverse proxy with per-route rules.
#[derive(Debug, Parser)]
#[command(name = "accel", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// The sidecar configuration (`accel.toml`).
        #[arg(short, long, env = "ACCEL_CONFIG", default_value = "accel.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and every rules file it names, like `nginx -t`.
    Check {
        /// The sidecar configuration (`accel.toml`).
        #[arg(short, long, env = "ACCEL_CONFIG", default_value = "accel.toml")]
        config: PathBuf,
    },
}
