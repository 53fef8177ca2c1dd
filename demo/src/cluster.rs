//! The cluster topology: the platform's production shape on one machine. Three origin
//! instances on PostgreSQL (127.0.0.1:8001–8003), each with its own sidecar
//! (`deploy/cluster/accel.toml`: :8081–8083, admin :9911–9913) sharing the Redis tier, and an
//! edge Accel (`deploy/cluster/edge.toml`: :8080, admin :9901) balancing least-connections
//! over the sidecars.
//!
//! The database is `accel_demo` on 127.0.0.1:5432 (created, migrated and seeded when missing;
//! `ACCEL_DEMO_DATABASE_URL` overrides it), never the `test` database the tests use. Redis keys
//! carry the prefix `accel-demo:`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use accel::config::{Config, RuleSet};
use accel::sidecar::{self, Sidecar};
use accel_origin::clock::Clock;
use accel_origin::db::{Db, PoolSize};
use accel_origin::seed::{self, Size};
use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::origins::{Origins, Stop};

/// The demo's own database: never the `test` database the tests use.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/accel_demo";

/// How many instances (origin + sidecar) the cluster has.
const INSTANCES: u16 = 3;

/// A body `POST /api/golden-leads/detect` accepts.
pub const DETECT_BODY: &str = r#"{"email_opens":12,"email_clicks":4,"page_views":40,"pricing_page_views":5,"demo_requested":true,"trial_active":false,"company_size":150,"annual_budget":50000,"days_since_last_activity":3,"support_tickets":1,"industry":"software"}"#;

/// One instance of the cluster: its origin and the sidecar in front of it.
#[derive(Debug, Clone, Copy)]
struct Instance {
    origin: SocketAddr,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Instance {
    /// Instance `n` (0-based): the addresses of `deploy/cluster/accel.toml` (instance 0's)
    /// shifted by `n`, as a host per instance would not need.
    fn nth(base: &Config, n: u16) -> anyhow::Result<Self> {
        let origin = base
            .upstreams
            .first()
            .and_then(|u| u.endpoints.first())
            .context("deploy/cluster/accel.toml names no upstream endpoint")?;
        let origin: SocketAddr =
            origin.to_string().parse().with_context(|| format!("the endpoint {origin} is not ip:port"))?;
        let shift = |addr: SocketAddr| SocketAddr::new(addr.ip(), addr.port() + n);
        Ok(Self { origin: shift(origin), listen: shift(base.listen), admin: shift(base.admin.addr) })
    }

    /// The sidecar configuration of this instance.
    fn sidecar_config(&self, base: &Config) -> anyhow::Result<Config> {
        let mut config = base.clone();
        config.listen = self.listen;
        config.admin.addr = self.admin;
        let endpoint = accel::upstream::EndpointAddr::from_str(&self.origin.to_string())
            .map_err(|e| anyhow::anyhow!("origin address: {e}"))?;
        for upstream in &mut config.upstreams {
            upstream.endpoints = vec![endpoint.clone()];
        }
        Ok(config)
    }
}

/// Runs the cluster topology until Ctrl-C.
pub fn main(root: &Path) -> ExitCode {
    let load = |file: &str| {
        sidecar::load(Some(&root.join(file))).map_err(|problems| {
            eprintln!("{problems}");
            ExitCode::from(crate::EXIT_USAGE)
        })
    };
    let (sidecar, edge) = match (load("deploy/cluster/accel.toml"), load("deploy/cluster/edge.toml")) {
        (Ok(sidecar), Ok(edge)) => (sidecar, edge),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let _log = accel::logging::init(&edge.0.log);
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run(sidecar, edge)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(sidecar: (Config, RuleSet), edge: (Config, RuleSet)) -> anyhow::Result<()> {
    let url = std::env::var("ACCEL_DEMO_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let (token, sample) = prepare_database(&url).await?;
    let instances =
        (0..INSTANCES).map(|n| Instance::nth(&sidecar.0, n)).collect::<anyhow::Result<Vec<_>>>()?;
    let balanced: Vec<String> =
        edge.0.upstreams.iter().flat_map(|u| u.endpoints.iter().map(ToString::to_string)).collect();
    let listening: Vec<String> = instances.iter().map(|i| i.listen.to_string()).collect();
    if balanced != listening {
        bail!(
            "deploy/cluster/edge.toml balances over {balanced:?}, but the sidecars of \
             deploy/cluster/accel.toml listen on {listening:?}"
        );
    }

    let stop = Stop::new();
    let origin_addrs: Vec<SocketAddr> = instances.iter().map(|i| i.origin).collect();
    let origins = Origins::start(&url, &origin_addrs, &stop).await?;
    let mut tasks = Vec::new();
    for instance in &instances {
        let config = instance.sidecar_config(&sidecar.0)?;
        let bound = Sidecar::bind(config, sidecar.1.clone()).await.with_context(|| {
            format!("binding the sidecar on {} (admin {})", instance.listen, instance.admin)
        })?;
        tasks.push(tokio::spawn(bound.run(stop.stopped())));
    }
    let (edge_config, edge_rules) = edge;
    let admin_token = edge_config.admin.token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
    let edge = Sidecar::bind(edge_config, edge_rules).await.context("binding the edge")?;
    let edge_addr = edge.local_addr()?;
    let edge_admin = edge.admin_addr()?;
    tasks.push(tokio::spawn(edge.run(stop.stopped())));
    print_try_lines(edge_addr, edge_admin, &instances, &url, (&token, sample.lead), &admin_token);

    sidecar::shutdown_signal().await;
    println!("stopping …");
    stop.stop();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(35), task).await;
    }
    origins.join().await;
    Ok(())
}

/// Creates the database when missing, migrates and seeds it, and returns a demo user's token
/// and ids of its tenant's data.
async fn prepare_database(url: &str) -> anyhow::Result<(String, seed::Sample)> {
    create_database(url).await?;
    let setup =
        Db::connect(url, PoolSize { max: 2, min: 1 }).await.with_context(|| format!("opening {url}"))?;
    setup.migrate().await.context("applying migrations")?;
    if seed::is_empty(&setup).await? {
        println!("seeding the demo data set into {url} …");
        seed::seed(&setup, Size::SMALL, Clock::System.now(), false).await.context("seeding")?;
    }
    let credentials = crate::origins::demo_user(&setup).await?;
    setup.close().await;
    Ok(credentials)
}

/// Creates the database `url` names, connecting to the server's `postgres` database, unless
/// it exists.
async fn create_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).with_context(|| format!("parsing {url}"))?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        bail!("{url} names no database");
    };
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        bail!("database name {name:?}: only a-z, 0-9 and _ are created automatically");
    }
    let mut server = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .with_context(|| format!("connecting to the PostgreSQL server of {url}"))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut server)
        .await?;
    if !exists {
        println!("creating the database {name} …");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut server)
            .await
            .with_context(|| format!("creating the database {name}"))?;
    }
    server.close().await?;
    Ok(())
}

fn print_try_lines(
    edge: SocketAddr,
    edge_admin: SocketAddr,
    instances: &[Instance],
    url: &str,
    (token, lead): (&str, i64),
    admin_token: &str,
) {
    let [one, two] = [0, 1].map(|n| instances[n % instances.len()]);
    let ports = |f: fn(&Instance) -> SocketAddr, separator: &str| {
        instances.iter().map(|i| f(i).port().to_string()).collect::<Vec<_>>().join(separator)
    };
    let auth = "-H \"Authorization: Bearer $TOKEN\"";
    println!();
    println!("accel cluster demo:");
    println!("  edge       http://{edge} (admin http://{edge_admin}), least connections over the sidecars");
    println!(
        "  sidecars   :{} (admin :{}), sharing Redis (prefix accel-demo:)",
        ports(|i| i.listen, ", :"),
        ports(|i| i.admin, ", :")
    );
    println!("  origins    :{} on {url}", ports(|i| i.origin, ", :"));
    println!();
    println!("  export TOKEN={token}   # a demo user's bearer token");
    println!("  export ACCEL_PURGE_TOKEN={admin_token}   # the demo's admin token");
    println!();
    println!("1. A key stored by one sidecar is served by another (Redis second level):");
    println!("  curl -si {auth} http://{}/api/predictions/{lead} | grep -i cache-status", one.listen);
    println!("  curl -si {auth} http://{}/api/predictions/{lead} | grep -i cache-status", two.listen);
    println!("     # sidecar 1: fwd=miss; stored — sidecar 2, which never asked its origin: hit");
    println!();
    println!("2. A purge sent to one sidecar reaches all three:");
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $ACCEL_PURGE_TOKEN\" -d '{{\"tags\":[\"lead:{lead}\"]}}' http://{}/cache/purge",
        two.admin
    );
    println!(
        "  for port in {}; do curl -s http://127.0.0.1:$port/metrics | grep -E '^accel_redis_purges_(published|applied)_total'; done",
        ports(|i| i.admin, " ")
    );
    println!("  curl -si {auth} http://{}/api/predictions/{lead} | grep -i cache-status", one.listen);
    println!("     # sidecar 2 published it, the other two applied it: sidecar 1 answers fwd=miss again");
    println!();
    println!(
        "3. A limit enforced across all three (golden-lead detection: 20/s, burst 5, scope = \"cluster\"):"
    );
    println!(
        "  seq 0 11 | xargs -P 12 -I{{}} sh -c 'curl -s -o /dev/null -w \"%{{http_code}}\\n\" -X POST {} -H \"content-type: application/json\" -d '\"'\"'{DETECT_BODY}'\"'\"' http://127.0.0.1:$(({} + {{}} % 3))/api/golden-leads/detect' | sort | uniq -c",
        auth,
        one.listen.port()
    );
    println!(
        "     # twelve requests at once, four to each sidecar: about 5 × 200 and the rest 429 (a limit per sidecar would let 12 through)"
    );
    println!();
    println!("Through the edge, as clients see it:");
    println!("  curl -i {auth} 'http://{edge}/api/golden-leads?tier=gold&limit=5'");
    println!("  curl -i {auth} 'http://{edge}/api/pricing/7?location=berlin'");
    println!("  curl -s http://{edge_admin}/metrics | grep '^accel_upstream_requests_total'");
    println!("Ctrl-C stops everything.");
}
