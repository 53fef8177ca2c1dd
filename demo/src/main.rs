//! `cargo run --release -p accel-demo`: creates, migrates and seeds `data/origin.db` when
//! missing, starts three origin instances on 127.0.0.1:8001–8003 sharing it (each with its own
//! connection pool, as separate processes would), starts the sidecar with
//! `deploy/accel.toml` on :8080 (admin on :9901), prints curl lines to try, and stops
//! everything on Ctrl-C.
//!
//! Paths are relative to the repository root; `DATABASE_URL` overrides the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use accel::sidecar::{self, Sidecar};
use accel_origin::clock::Clock;
use accel_origin::db::{Db, PoolSize};
use accel_origin::seed::{self, Size};
use accel_origin::token;
use accel_origin::{App, DEFAULT_REFRESH_INTERVAL};
use anyhow::Context;
use tokio::sync::watch;

/// The origin instances, as `deploy/accel.toml`'s upstream `api` lists them.
const INSTANCES: [&str; 3] = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];

fn main() -> ExitCode {
    let root = repository_root();
    let config_path = root.join("deploy/accel.toml");
    let (config, rules) = match sidecar::load(Some(&config_path)) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(64);
        }
    };
    let _log = accel::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&root, config, rules)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: the current directory when it holds `deploy/accel.toml`, else the
/// one this crate was built from.
fn repository_root() -> PathBuf {
    let here = PathBuf::from(".");
    if here.join("deploy/accel.toml").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn run(
    root: &Path,
    config: accel::config::Config,
    rules: accel::config::RuleSet,
) -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", root.join("data/origin.db").display()));
    let setup =
        Db::connect(&url, PoolSize { max: 2, min: 1 }).await.with_context(|| format!("opening {url}"))?;
    setup.migrate().await.context("applying migrations")?;
    if seed::is_empty(&setup).await? {
        println!("seeding the demo data set into {url} …");
        seed::seed(&setup, Size::SMALL, Clock::System.now(), false).await.context("seeding")?;
    }
    // Tokens are stored hashed: the demo issues a fresh one for user 1 on every start.
    let token =
        token::issue(&setup, 1, "demo", Clock::System.now()).await.context("issuing the demo token")?;
    let token = token.token.as_str().to_owned();
    let examples = seed::sample(&setup, 1).await.context("finding example ids")?;
    setup.close().await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut origins = Vec::new();
    for addr in INSTANCES {
        let addr: SocketAddr = addr.parse()?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding origin {addr}"))?;
        let db = Db::connect(&url, PoolSize { max: 8, min: 1 }).await?;
        let app = App::new(db);
        origins.push(tokio::spawn(accel_origin::serve(listener, app, DEFAULT_REFRESH_INTERVAL, stopped())));
    }
    let sidecar = Sidecar::bind(config, rules).await.context("binding the sidecar")?;
    let proxy = sidecar.local_addr()?;
    let admin = sidecar.admin_addr()?;
    let proxy_task = tokio::spawn(sidecar.run(stopped()));
    print_try_lines(proxy, admin, &token, &examples);

    sidecar::shutdown_signal().await;
    println!("stopping …");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(35), proxy_task).await;
    for origin in origins {
        let _ = tokio::time::timeout(Duration::from_secs(5), origin).await;
    }
    Ok(())
}

fn print_try_lines(proxy: SocketAddr, admin: SocketAddr, token: &str, examples: &seed::Sample) {
    let seed::Sample { tenant, lead, contact } = examples;
    println!();
    println!(
        "accel demo: sidecar on http://{proxy} (admin http://{admin}), origins on {}",
        INSTANCES.join(", ")
    );
    println!("try (every API route needs the token; it reaches tenant {tenant}'s data):");
    let auth = format!("-H 'Authorization: Bearer {token}'");
    println!("  curl -i {auth} 'http://{proxy}/api/golden-leads?tier=gold&limit=5'");
    println!("  curl -i {auth} http://{proxy}/api/golden-leads/{lead}");
    println!("  curl -i {auth} http://{proxy}/api/predictions/{lead}");
    println!("  curl -i {auth} 'http://{proxy}/api/pricing/{contact}?location=berlin'");
    println!(
        "  curl -i {auth} -X PUT -H 'content-type: application/json' -d '{{\"price\": 129.5}}' http://{proxy}/api/pricing/{contact}"
    );
    println!("  curl -i {auth} http://{proxy}/api/tenants/{tenant}/usage");
    println!(
        "  curl -i {auth} -X POST -H 'content-type: application/json' -d '{{\"email_opens\":12,\"email_clicks\":4,\"page_views\":40,\"pricing_page_views\":5,\"demo_requested\":true,\"trial_active\":false,\"company_size\":150,\"annual_budget\":50000,\"days_since_last_activity\":3,\"support_tickets\":1,\"industry\":\"software\"}}' http://{proxy}/api/golden-leads/detect"
    );
    println!("  curl -i {auth} 'http://{proxy}/api/learning/overview?days=30'");
    println!(
        "  curl -i {auth} -H 'content-type: application/json' -d '{{\"query\":\"photosynthesis\",\"k\":3}}' http://{proxy}/api/retrieval/query"
    );
    println!("  curl -s http://{admin}/metrics | head");
    println!("Ctrl-C stops everything.");
}
