//! `load-report`: combines `accel-load --json` outputs into a table and one JSON report.
//! See `accel_benches::comparison`.

use std::{path::PathBuf, process::ExitCode};

use accel_benches::{comparison::Comparison, load::Report};
use anyhow::Context;
use clap::Parser;
use serde_json::{Map, Value};

/// Command line of `load-report`.
#[derive(Debug, Parser)]
#[command(name = "load-report", version, about = "Side-by-side table of accel-load JSON reports")]
struct Args {
    /// Files each holding one `accel-load --json` report, in table order.
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Where to write the combined JSON report.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// A setting shared by the runs, `key=value`, recorded in the JSON report (as JSON when the
    /// value parses as JSON, else as a string); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("expected key=value, got `{text}`"))?;
    Ok((key.to_owned(), value.to_owned()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load-report: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(Args { reports, out, params }: Args) -> anyhow::Result<()> {
    let cases = reports
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Report>(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A value that is JSON (a number, a list) stays JSON in the report; anything else is a string.
    let params: Map<String, Value> = params
        .into_iter()
        .map(|(key, value)| {
            let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
            (key, value)
        })
        .collect();
    let comparison = Comparison::new(params, cases);
    print!("{comparison}");
    if let Some(path) = out {
        let json = serde_json::to_string_pretty(&comparison)?;
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
