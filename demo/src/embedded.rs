//! The embedded topology (the default): creates, migrates and seeds `data/origin.db` when
//! missing, starts three origin instances on 127.0.0.1:8001–8003 sharing it, starts the
//! sidecar with `deploy/accel.toml` on :8080 (admin on :9901), prints curl lines to try, and
//! stops everything on Ctrl-C. `DATABASE_URL` overrides the database.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use accel::sidecar::{self, Sidecar};
use accel_origin::clock::Clock;
use accel_origin::db::{Db, PoolSize};
use accel_origin::seed::{self, Size};
use anyhow::Context;

use crate::origins::{Origins, Stop};

/// The origin instances, as `deploy/accel.toml`'s upstream `api` lists them.
const INSTANCES: [&str; 3] = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];

/// The admin token the demo sets when the configuration has none, so that the documented
/// purge commands work against it. Never a default outside the demo.
pub const DEMO_ADMIN_TOKEN: &str = "accel-demo-admin";

/// Runs the embedded topology until Ctrl-C.
pub fn main(root: &Path) -> ExitCode {
    let config_path = root.join("deploy/accel.toml");
    let (mut config, rules) = match sidecar::load(Some(&config_path)) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    if config.admin.token.is_none() {
        config.admin.token = Some(DEMO_ADMIN_TOKEN.into());
    }
    if config.cache.purge_token.is_none() {
        config.cache.purge_token.clone_from(&config.admin.token);
    }
    let _log = accel::logging::init(&config.log);
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run(root, config, rules)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    let (token, sample) = crate::origins::demo_user(&setup).await?;
    setup.close().await;

    let stop = Stop::new();
    let addrs = INSTANCES.iter().map(|a| a.parse()).collect::<Result<Vec<SocketAddr>, _>>()?;
    let origins = Origins::start(&url, &addrs, &stop).await?;
    let admin_token = config.admin.token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
    let sidecar = Sidecar::bind(config, rules).await.context("binding the sidecar")?;
    let proxy = sidecar.local_addr()?;
    let admin = sidecar.admin_addr()?;
    let proxy_task = tokio::spawn(sidecar.run(stop.stopped()));
    print_try_lines(proxy, admin, &token, &sample, &admin_token);

    sidecar::shutdown_signal().await;
    println!("stopping …");
    stop.stop();
    let _ = tokio::time::timeout(Duration::from_secs(35), proxy_task).await;
    origins.join().await;
    Ok(())
}

fn print_try_lines(
    proxy: SocketAddr,
    admin: SocketAddr,
    token: &str,
    sample: &seed::Sample,
    admin_token: &str,
) {
    let seed::Sample { tenant, lead, contact } = sample;
    println!();
    println!(
        "accel demo: sidecar on http://{proxy} (admin http://{admin}), origins on {}",
        INSTANCES.join(", ")
    );
    println!("try (every API route needs the token; it reaches tenant {tenant}'s data):");
    println!("  export TOKEN={token}   # a demo user's bearer token");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN\" 'http://{proxy}/api/golden-leads?tier=gold&limit=5'"
    );
    println!("  curl -i -H \"Authorization: Bearer $TOKEN\" http://{proxy}/api/golden-leads/{lead}");
    println!("  curl -i -H \"Authorization: Bearer $TOKEN\" http://{proxy}/api/predictions/{lead}");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN\" 'http://{proxy}/api/pricing/{contact}?location=berlin'"
    );
    println!(
        "  curl -i -X PUT -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"price\": 129.5}}' http://{proxy}/api/pricing/{contact}"
    );
    println!(
        "  curl -i -X POST -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{}' http://{proxy}/api/golden-leads/detect",
        crate::cluster::DETECT_BODY
    );
    println!("  curl -i -H \"Authorization: Bearer $TOKEN\" 'http://{proxy}/api/learning/overview?days=30'");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"query\":\"photosynthesis\",\"k\":3}}' http://{proxy}/api/retrieval/query"
    );
    println!("  curl -i -H \"Authorization: Bearer $TOKEN\" http://{proxy}/api/tenants/{tenant}/usage");
    println!("  curl -s http://{admin}/metrics | head");
    println!(
        "  curl -s -X POST -H 'Authorization: Bearer {admin_token}' -d '{{\"tags\":[\"lead:{lead}\"]}}' http://{admin}/cache/purge"
    );
    println!("Ctrl-C stops everything.");
}
