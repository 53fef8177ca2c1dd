//! Origin instances run in-process (each with its own connection pool, as separate processes
//! would have), and the stop signal every part of a demo waits for.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use accel_origin::clock::Clock;
use accel_origin::db::{Db, PoolSize};
use accel_origin::seed::{self, Sample};
use accel_origin::token;
use accel_origin::{App, DEFAULT_REFRESH_INTERVAL};
use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Connections of each instance's pool.
const POOL: PoolSize = PoolSize { max: 8, min: 1 };

/// One stop signal for everything a demo started.
#[derive(Debug)]
pub struct Stop {
    tx: watch::Sender<bool>,
}

impl Stop {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self { tx: watch::channel(false).0 }
    }

    /// A future that completes once [`stop`](Self::stop) is called.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Gives the signal.
    pub fn stop(&self) {
        let _ = self.tx.send(true);
    }
}

/// Running origin instances.
#[derive(Debug)]
pub struct Origins {
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Origins {
    /// Binds each address and serves the API on the database at `url` until `stop`.
    pub async fn start(url: &str, addrs: &[SocketAddr], stop: &Stop) -> anyhow::Result<Self> {
        let mut tasks = Vec::new();
        for &addr in addrs {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding origin {addr}"))?;
            let db = Db::connect(url, POOL).await.with_context(|| format!("opening {url}"))?;
            let app = App::new(db);
            tasks.push(tokio::spawn(accel_origin::serve(
                listener,
                app,
                DEFAULT_REFRESH_INTERVAL,
                stop.stopped(),
            )));
        }
        Ok(Self { tasks })
    }

    /// Waits (a few seconds at most each) for the instances to finish once stopped.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// The demo user's credentials: a fresh bearer token for user 1 (tokens are stored hashed,
/// so the demo issues one on every start) and ids of its tenant's data for the curl lines.
pub async fn demo_user(setup: &Db) -> anyhow::Result<(String, Sample)> {
    let issued =
        token::issue(setup, 1, "demo", Clock::System.now()).await.context("issuing the demo token")?;
    let sample = seed::sample(setup, 1).await.context("finding example ids")?;
    Ok((issued.token.as_str().to_owned(), sample))
}
