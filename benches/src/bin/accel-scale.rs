//! `accel-scale`: N sidecars on one shared Redis tier, measured end to end. See
//! `accel_benches::scale`.

use std::process::ExitCode;

use accel_benches::{runtime, scale};
use clap::Parser;

fn main() -> ExitCode {
    let options = scale::Options::parse();
    let runtime = match runtime::build(options.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("accel-scale: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(scale::run(&options)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("accel-scale: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    let written =
        options.out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            std::fs::write(&options.out, serde_json::to_vec_pretty(&report).unwrap_or_default())
        });
    match written {
        Ok(()) => println!("\nreport: {}", options.out.display()),
        Err(e) => eprintln!("accel-scale: cannot write {}: {e}", options.out.display()),
    }
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
