//! `accel-bench`: measures a scenario's targets against a base URL, prints a table, writes
//! `performance_benchmark_report.json`, and exits 1 when a target is missed (64 on a bad
//! command line or scenario). See `accel_benches::scenario`.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use accel_benches::runtime;
use accel_benches::scenario::{self, BenchReport, Scenario, TestResult};
use clap::Parser;
use http::Uri;

/// Command line of `accel-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "accel-bench",
    version,
    about = "Measures an API's performance targets and writes the report"
)]
struct Args {
    /// Where requests go: `http://host:port` of the proxy (or of the origin).
    #[arg(long)]
    base: Uri,
    /// The scenario file: endpoints and targets (see benches/scenarios/platform.toml).
    #[arg(long, default_value = "benches/scenarios/platform.toml")]
    scenario: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = "performance_benchmark_report.json")]
    out: PathBuf,
    /// Every target's measured phase, instead of the scenario's (a short run for CI).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Load generator threads.
    #[arg(long, default_value = "1")]
    threads: NonZeroUsize,
    /// A header sent with every endpoint's requests, `Name: value`, as `curl -H` takes it
    /// (repeatable): e.g. the API's bearer token.
    #[arg(long = "header", short = 'H', value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// `Name: value` as a header.
fn parse_header(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = http::HeaderName::try_from(name.trim()).map_err(|e| format!("{name:?}: {e}"))?;
    let value = http::HeaderValue::try_from(value.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    Ok((name, value))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match std::fs::read_to_string(&args.scenario)
        .map_err(anyhow::Error::from)
        .and_then(|text| Scenario::parse(&text))
    {
        Ok(scenario) => {
            let mut scenario = args.duration.map_or(scenario.clone(), |d| scenario.with_duration(d));
            for endpoint in &mut scenario.endpoints {
                endpoint.headers.extend(args.headers.iter().cloned());
            }
            scenario
        }
        Err(error) => {
            eprintln!("accel-bench: {}: {error:#}", args.scenario.display());
            return ExitCode::from(64);
        }
    };
    let runtime = match runtime::build(args.threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("accel-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run(&args.base, &scenario)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("accel-bench: {error:#}");
            return ExitCode::from(64);
        }
    };
    print!("{}", report.table());
    let written = serde_json::to_vec_pretty(&report)
        .map_err(anyhow::Error::from)
        .and_then(|json| Ok(std::fs::write(&args.out, json)?));
    if let Err(error) = written {
        eprintln!("accel-bench: cannot write {}: {error:#}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!("report: {}", args.out.display());
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn run(base: &Uri, scenario: &Scenario) -> anyhow::Result<BenchReport> {
    let mut stderr = std::io::stderr();
    let bar = stderr.is_terminal();
    let total = scenario.targets.len();
    let mut results = Vec::new();
    for (i, target) in scenario.targets.iter().enumerate() {
        if bar {
            let filled = i * 20 / total;
            let _ = write!(
                stderr,
                "\r[{}{}] {i}/{total} {:<30}",
                "#".repeat(filled),
                ".".repeat(20 - filled),
                target.name
            );
            let _ = stderr.flush();
        }
        let measured = scenario::measure::measure(base, scenario, target).await?;
        results.push((target.measure, TestResult::new(target, measured)));
    }
    if bar {
        let _ = writeln!(stderr, "\r[{}] {total}/{total} {:<30}", "#".repeat(20), "done");
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(BenchReport::new(base.to_string().trim_end_matches('/').to_owned(), now, results))
}
