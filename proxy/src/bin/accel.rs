//! `accel`: parse, load, bind, serve. Exits 64 on a bad configuration.

use std::process::ExitCode;

use accel::cache::purge::PurgeRequest;
use accel::cli::purge;
use accel::cli::{AdviseArgs, Cli, Command, PurgeArgs, WarmArgs};
use accel::sidecar::{self, Sidecar};
use clap::Parser;

/// jemalloc with a background thread that gives freed pages back to the system (after its
/// 10-second decay; `MALLOC_CONF` tunes it), so the memory of a storm of connections is
/// returned once it is over. glibc's malloc keeps most of it (docs/operations.md, "Memory").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `EX_USAGE` from sysexits.h: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, running } => match sidecar::load(Some(&config)) {
            Ok((next, rules)) => {
                println!(
                    "{}: ok ({} routes in {} files)",
                    config.display(),
                    rules.routes.len(),
                    rules.files.len()
                );
                match running {
                    Some(running) => compare_running(&running, &next),
                    None => ExitCode::SUCCESS,
                }
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{}: {} problem(s)", config.display(), problems.0.len());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Purge(args) => purge_command(args),
        Command::Advise(args) => advise_command(args),
        Command::Warm(args) => warm_command(args),
        Command::Run { config } => {
            let (config, rules) = match sidecar::load(Some(&config)) {
                Ok(loaded) => loaded,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let _log = accel::logging::init(&config.log);
            // One worker: a single-threaded runtime, which schedules without cross-thread
            // synchronisation (the pinned-core deployment the benchmarks measure).
            let mut runtime = match config.worker_threads.map(|n| n.get()) {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(threads) => {
                    let mut runtime = tokio::runtime::Builder::new_multi_thread();
                    runtime.worker_threads(threads);
                    runtime
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            runtime.enable_all();
            let runtime = match runtime.build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                let sidecar = match Sidecar::bind(config, rules).await {
                    Ok(sidecar) => sidecar,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot bind");
                        return ExitCode::FAILURE;
                    }
                };
                sidecar.run(sidecar::shutdown_signal()).await;
                ExitCode::SUCCESS
            })
        }
    }
}

/// `accel purge`: one request to the running proxy's admin listener.
fn purge_command(args: PurgeArgs) -> ExitCode {
    let PurgeArgs { config, admin, token, tags, urls, prefixes, keys, all } = args;
    let loaded = if admin.is_none() || token.is_none() {
        Some(accel::config::load_sidecar(Some(&config)))
    } else {
        None
    };
    let loaded = match loaded.transpose() {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let admin = admin.or_else(|| loaded.as_ref().map(|c| c.admin.addr.to_string())).unwrap_or_default();
    let Some(token) = token.or_else(|| {
        loaded.as_ref().and_then(|c| c.cache.purge_token.as_ref().map(|t| t.expose().to_owned()))
    }) else {
        eprintln!("no purge token: pass --token or set cache.purge_token in {}", config.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let request = PurgeRequest { tags, urls, keys, prefixes, all };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(purge::send(&admin, &token, &request)) {
        Ok(counts) => {
            println!(
                "purged {} entries (tags {}, urls {}, keys {}, prefixes {}, all {})",
                counts.purged, counts.tags, counts.urls, counts.keys, counts.prefixes, counts.all
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("purge failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `accel advise`: the running proxy's `/health/summary`, for a terminal.
fn advise_command(args: AdviseArgs) -> ExitCode {
    let AdviseArgs { config, admin, json } = args;
    let admin = match admin {
        Some(admin) => admin,
        None => match accel::config::load_sidecar(Some(&config)) {
            Ok(loaded) => loaded.admin.addr.to_string(),
            Err(problems) => {
                eprintln!("{problems}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(accel::insight::client::summary(&admin)) {
        Ok(summary) if json => {
            println!("{summary:#}");
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            print!("{}", accel::insight::client::render(&summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("advise failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `accel warm`: exits 0 when every target is cached, 1 when one failed.
fn warm_command(args: WarmArgs) -> ExitCode {
    let WarmArgs { proxy, file, concurrency, headers } = args;
    let headers: http::HeaderMap = headers.into_iter().collect();
    let input = match file.as_deref().filter(|f| f.as_os_str() != "-") {
        Some(file) => {
            std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
        }
        None => {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))
        }
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(accel::warm::run_command(&proxy, &input, &headers, concurrency)) {
        Ok(summary) if summary.failed.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("warm failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `accel check --running`: which changes from the `running` file a reload applies, and which
/// start-only settings wait for a restart.
fn compare_running(running: &std::path::Path, next: &accel::config::Config) -> ExitCode {
    let was = match accel::config::load_sidecar(Some(running)) {
        Ok(was) => was,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{}: the running configuration is invalid", running.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let restart = accel::config::restart::restart_needed(&was, next);
    if restart.is_empty() {
        println!("reload applies every change from {}", running.display());
    } else {
        let names: Vec<&str> = restart.iter().map(|s| s.as_str()).collect();
        println!("restart needed for: {} (a reload applies the rest)", names.join(", "));
    }
    ExitCode::SUCCESS
}
