//! The `accel-origin` command line.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

use crate::db::DEFAULT_DATABASE_URL;
use crate::seed::Size;

/// The platform API that Accel accelerates.
#[derive(Debug, Parser)]
#[command(name = "accel-origin", version, about)]
pub struct Cli {
    /// `postgres://…` or `sqlite://…` (the file is created when missing).
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Applies the migrations, then serves the API.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: SocketAddr,
        /// Seconds between refreshes of the analytics materialized views (PostgreSQL).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        refresh_secs: u64,
        /// Most database connections this instance opens.
        #[arg(long, default_value_t = 16)]
        pool_size: u32,
        /// CPU-heavy tasks (forecasts, extraction, retrieval ranking) run at once (default: one
        /// per core).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        compute_slots: Option<u32>,
        /// Requests that may wait for a CPU-heavy task slot; the next ones get 503 (default:
        /// four per slot).
        #[arg(long)]
        compute_queue: Option<u32>,
        /// Serve as if "now" were this instant (unix seconds), e.g. the `--now` a data set was
        /// seeded with, so that its time windows (recent analyses, usage days, activity)
        /// cover the same rows on every run; default: the system clock.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Applies the migrations and exits.
    Migrate,
    /// Applies the migrations and writes a deterministic data set into an empty database.
    Seed {
        /// `small` (the demo, seconds), `bench` (100k leads, ~1M usage and activity rows), or
        /// a number of leads (other tables scale with it).
        #[arg(long, default_value = "small", value_parser = Size::parse)]
        size: Size,
        /// "Now" of the data set, unix seconds (default: the current time); the same size and
        /// `now` give the same rows.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Manages API tokens (the database keeps only their hashes).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// `accel-origin token …`.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Issues a new token for a user and prints it: the only time it is shown.
    Issue {
        /// The user's id.
        #[arg(long)]
        user: i64,
        /// Who or what holds the token (1-100 characters).
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Revokes one token, or every token of a user.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["token", "user"]))]
    Revoke {
        /// The token to revoke (`acc_…`).
        #[arg(long)]
        token: Option<String>,
        /// Revoke every live token of this user.
        #[arg(long)]
        user: Option<i64>,
    },
}
