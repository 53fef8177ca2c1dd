//! `accel-load`: closed-loop HTTP/1.1 keep-alive load generator. See `accel_benches::load`.

use std::process::ExitCode;

use accel_benches::{load, runtime};
use clap::Parser;

fn main() -> ExitCode {
    let args = load::Args::parse();
    let (threads, json) = (args.threads, args.json);
    let options = match load::Options::try_from(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("accel-load: {error:#}");
            return ExitCode::from(64);
        }
    };
    let runtime = match runtime::build(threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("accel-load: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(load::run(options));
    if json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("accel-load: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{report}");
    }
    if report.requests == 0 {
        eprintln!("accel-load: no response received");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
