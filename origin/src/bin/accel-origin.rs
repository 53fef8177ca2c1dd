//! `accel-origin`: parse, connect, migrate, then serve or seed (thin: the work is in the
//! library). Exits 1 on a runtime failure; clap exits 2 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use accel_origin::cli::{Cli, Command, TokenAction};
use accel_origin::clock::Clock;
use accel_origin::compute::Compute;
use accel_origin::db::{Db, PoolSize};
use accel_origin::{App, seed, token};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-origin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let pool = match &cli.command {
        Command::Serve { pool_size, .. } => PoolSize { max: *pool_size, min: 2.min(*pool_size) },
        Command::Migrate | Command::Seed { .. } | Command::Token { .. } => PoolSize { max: 4, min: 1 },
    };
    let db = Db::connect(&cli.database_url, pool).await?;
    db.migrate().await?;
    match cli.command {
        Command::Migrate => println!("migrations applied ({})", db.backend()),
        Command::Seed { size, now } => {
            let now = now.unwrap_or_else(|| Clock::System.now());
            let report = seed::seed(&db, size, now, size.rows() > 200_000).await?;
            for (table, rows) in &report.tables {
                println!("{table:>18}: {rows}");
            }
            println!("demo token (user 1): {}", report.demo_token.as_str());
        }
        Command::Token { action: TokenAction::Issue { user, label } } => {
            let issued = token::issue(&db, user, &label, Clock::System.now()).await?;
            println!("{}", issued.token.as_str());
        }
        Command::Token { action: TokenAction::Revoke { token, user } } => {
            let now = Clock::System.now();
            let revoked = match (token, user) {
                (Some(token), _) => {
                    if !token::revoke(&db, &token, now).await? {
                        anyhow::bail!("no live token matches");
                    }
                    1
                }
                (None, Some(user)) => token::revoke_all(&db, user, now).await?,
                (None, None) => 0,
            };
            println!("revoked {revoked} token(s)");
        }
        Command::Serve { listen, refresh_secs, now, compute_slots, compute_queue, .. } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(%listen, database = db.backend(), "accel-origin serving");
            let clock = now.map_or(Clock::System, Clock::Fixed);
            let default = Compute::for_this_machine();
            let slots = compute_slots.map_or(default.slots(), |n| n as usize);
            let queue = compute_queue.map_or(4 * slots, |n| n as usize);
            let app = App::new(db.clone()).with_clock(clock).with_compute(Compute::new(slots, queue));
            accel_origin::serve(listener, app, Duration::from_secs(refresh_secs), shutdown()).await?;
            tracing::info!("accel-origin stopped");
        }
    }
    db.close().await;
    Ok(())
}

async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = interrupt => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = interrupt.await;
}
