//! The `accel` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod purge;

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
        /// The `accel.toml` the proxy runs with (a copy of it): also say which changes a
        /// reload applies and which wait for a restart.
        #[arg(long, value_name = "ACCEL_TOML")]
        running: Option<PathBuf>,
    },
    /// Invalidate cached entries of a running proxy (its admin `POST /cache/purge`).
    Purge(PurgeArgs),
    /// Print a running proxy's health and recommendations (its admin `/health/summary`).
    Advise(AdviseArgs),
    /// Fetch URLs through a running proxy so that they are cached before clients ask.
    Warm(WarmArgs),
}

/// `accel warm`: the targets and the proxy to fetch them through.
#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    /// The proxy's client listener (`host:port` or URL), e.g. `127.0.0.1:8080`.
    #[arg(long, env = "ACCEL_PROXY")]
    pub proxy: String,
    /// Targets, one a line (paths, or absolute URLs whose host is sent as `Host`);
    /// `-` or nothing: standard input.
    pub file: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// A header sent with every request, `Name: value`, as `curl -H` takes it (repeatable):
    /// credentials, where the route caches per credential.
    #[arg(long = "header", short = 'H', value_name = "HEADER", value_parser = parse_header)]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// `Name: value` as a header.
fn parse_header(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = http::HeaderName::try_from(name.trim()).map_err(|e| format!("{name:?}: {e}"))?;
    let value = http::HeaderValue::try_from(value.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    Ok((name, value))
}

/// `accel advise`: where the running proxy's admin listener is.
#[derive(Debug, clap::Args)]
pub struct AdviseArgs {
    /// The sidecar configuration: the admin address is read from it when `--admin` is absent.
    #[arg(short, long, env = "ACCEL_CONFIG", default_value = "accel.toml")]
    pub config: PathBuf,
    /// The admin listener (`host:port` or URL); default: `admin.addr` of the configuration.
    #[arg(long, env = "ACCEL_ADMIN")]
    pub admin: Option<String>,
    /// Print the summary's JSON as it came.
    #[arg(long)]
    pub json: bool,
}

/// `accel purge`: what to invalidate, and where the running proxy's admin listener is.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The sidecar configuration: the admin address and purge token are read from it.
    #[arg(short, long, env = "ACCEL_CONFIG", default_value = "accel.toml")]
    pub config: PathBuf,
    /// The admin listener (`host:port` or URL); default: `admin.addr` of the configuration.
    #[arg(long, env = "ACCEL_ADMIN")]
    pub admin: Option<String>,
    /// The purge token; default: `cache.purge_token` (or `admin.token`) of the configuration.
    #[arg(long, env = "ACCEL_PURGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Entries with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Entries of this absolute URL, every variant (repeatable).
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Entries whose path starts with this prefix, or absolute URL prefix (repeatable).
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// The entry with this cache key, 32 hex digits (repeatable).
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Everything.
    #[arg(long)]
    pub all: bool,
}
