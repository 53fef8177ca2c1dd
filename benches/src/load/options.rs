//! The command line of `accel-load` and the validated options a run takes.

use std::{num::NonZeroUsize, path::PathBuf, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Uri};

use super::target::Target;

/// Command line of `accel-load`.
#[derive(Debug, Parser)]
#[command(name = "accel-load", version, about = "Closed-loop HTTP/1.1 keep-alive load generator")]
pub struct Args {
    /// Absolute `http://` URL to request; repeat to spread requests round-robin.
    #[arg(long = "url", value_name = "URL", required_unless_present = "urls_file")]
    pub urls: Vec<Uri>,
    /// File with one URL per line (blank lines and `#` comments skipped), added to `--url`.
    #[arg(long, value_name = "PATH")]
    pub urls_file: Option<PathBuf>,
    /// Number of keep-alive connections, each with one request in flight.
    #[arg(long, short = 'c', default_value = "32")]
    pub concurrency: NonZeroUsize,
    /// How long to measure, after the warm-up (`10s`, `500ms`, `1m`).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to send load before measuring; not recorded.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Request header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request method.
    #[arg(long, short = 'm', default_value = "GET")]
    pub method: Method,
    /// File whose bytes are sent as every request's body.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
    /// Tokio worker threads; 1 (the default) keeps the generator on one core.
    #[arg(long, default_value = "1")]
    pub threads: NonZeroUsize,
    /// Process id of the server under test (repeatable): its CPU time over the measured phase,
    /// with its threads and child processes, goes in the report (Linux).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Print the report as one line of JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Name of this run in the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What one load test does: validated, files read.
#[derive(Debug)]
pub struct Options {
    /// Where requests go.
    pub target: Target,
    /// Number of connections, each with one request in flight.
    pub concurrency: NonZeroUsize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Length of the unrecorded phase before it.
    pub warmup: Duration,
    /// Extra request headers, sent in this order after `Host`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request method.
    pub method: Method,
    /// Request body, empty for none.
    pub body: Bytes,
    /// Name of the run in the report.
    pub label: String,
    /// Processes whose CPU time the report gives; none: not measured.
    pub server_pids: Vec<u32>,
}

impl TryFrom<Args> for Options {
    type Error = anyhow::Error;

    fn try_from(args: Args) -> anyhow::Result<Self> {
        let Args {
            mut urls,
            urls_file,
            concurrency,
            duration,
            warmup,
            headers,
            method,
            body_file,
            threads: _,
            json: _,
            label,
            server_pids,
        } = args;
        if let Some(path) = urls_file {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let url =
                    line.parse().with_context(|| format!("{}:{}: bad URL", path.display(), number + 1))?;
                urls.push(url);
            }
        }
        let body = match body_file {
            Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?.into(),
            None => Bytes::new(),
        };
        anyhow::ensure!(!duration.is_zero(), "--duration must be longer than zero");
        let target = Target::new(&urls)?;
        Ok(Self { target, concurrency, duration, warmup, headers, method, body, label, server_pids })
    }
}

/// Parses `Name: value` into a header pair.
fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) =
        line.split_once(':').ok_or_else(|| format!("expected `Name: value`, got `{line}`"))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("header name `{name}`: {e}"))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("header value `{value}`: {e}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        let (name, value) = parse_header("X-User-Id:  42 ").unwrap();
        assert_eq!(name, "x-user-id");
        assert_eq!(value, "42");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
    }

    #[test]
    fn bad_command_lines_are_errors_not_panics() {
        let parse = |line: &[&str]| Args::try_parse_from(line.iter().copied());
        assert!(parse(&["accel-load"]).is_err());
        assert!(parse(&["accel-load", "--url", "http://a/", "--concurrency", "0"]).is_err());
        assert!(parse(&["accel-load", "--url", "http://a/", "--duration", "ten"]).is_err());
        let args = parse(&["accel-load", "--url", "http://a:1/x", "-H", "A: b", "--duration", "1s"]).unwrap();
        let options = Options::try_from(args).unwrap();
        assert_eq!(options.duration, Duration::from_secs(1));
        assert_eq!(options.headers.len(), 1);
    }
}
