//! `redis-tier`: what the shared Redis tier costs and buys, in one run against a real Redis.
//!
//! - lookup latency of one 2 KB answer: in memory (a moka lookup, the in-memory cache's
//!   store), in Redis (the second level: GET, tag generations, decode), and from the origin
//!   (an HTTP/1.1 keep-alive GET to an in-process `fast-origin` — the best case of a miss);
//! - a cluster rate limit check (one Lua script);
//! - purge propagation: from a purge call on sidecar A to its application in sidecar B's
//!   memory, over pub/sub.
//!
//! Requests run one at a time (latency, not throughput); each figure is over `iterations`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use accel::metrics::Metrics;
use accel::tier::{ClusterLimit, L2Lookup, LocalPurge, Purge, RedisConfig, RedisTier, SharedEntry};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::fast_origin::{self, Answer};

/// Latency figures of one measurement.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: &'static str,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Figures {
    fn from(name: &'static str, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
        Self { name, p50: at(0.5), p99: at(0.99), mean }
    }
}

/// Runs every measurement against Redis at `url`, `iterations` times each, with a body of
/// `size` bytes.
pub async fn run(url: &str, iterations: usize, size: usize) -> anyhow::Result<Vec<Figures>> {
    let prefix = format!("bench:{}:{}:", std::process::id(), fastrand::u32(..));
    let config = RedisConfig::single(url, &prefix).map_err(anyhow::Error::msg)?;
    let answer = Answer::new(size, true);
    let entry = SharedEntry {
        status: StatusCode::OK,
        headers: {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers
        },
        body: answer.body().clone(),
        stored_at: SystemTime::now(),
        ttl: Duration::from_secs(300),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::from_secs(60),
        tags: vec!["lead:1".into(), "leads".into()],
        host: "127.0.0.1".into(),
        path: "/api/pricing/1".into(),
    };
    let mut figures = Vec::new();

    // In memory.
    let memory: moka::future::Cache<String, Arc<SharedEntry>> = moka::future::Cache::new(10_000);
    memory.insert("k".into(), Arc::new(entry.clone())).await;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let hit = memory.get("k").await.map(|e| e.body.clone());
        samples.push(started.elapsed());
        anyhow::ensure!(hit.is_some(), "memory lookup missed");
    }
    figures.push(Figures::from("memory hit (moka get, 2 KB)", samples));

    // In Redis.
    let metrics = Metrics::new(&[1.0]);
    let a = Arc::new(RedisTier::new(&config, &metrics)?);
    anyhow::ensure!(a.l2_put("k", &entry, &a.purge_point()).await, "cannot store in Redis at {url}");
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let hit = a.l2_get("k").await;
        samples.push(started.elapsed());
        anyhow::ensure!(matches!(hit, L2Lookup::Hit(_)), "Redis lookup missed: {hit:?}");
    }
    figures.push(Figures::from("redis hit (GET + generations + decode)", samples));

    // From the origin.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let origin = listener.local_addr()?;
    let server = tokio::spawn(fast_origin::serve(listener, answer));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{origin}/api/pricing/1").parse()?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let response = client.get(uri.clone()).await?;
        let body = response.into_body().collect().await?.to_bytes();
        samples.push(started.elapsed());
        anyhow::ensure!(body.len() == size, "origin answered {} bytes", body.len());
    }
    server.abort();
    figures.push(Figures::from("origin miss (HTTP GET to fast-origin)", samples));

    // A cluster limit check.
    let limit = ClusterLimit {
        route: "bench".into(),
        limit: "l".into(),
        rate: std::num::NonZeroU32::new(1_000_000).unwrap_or(std::num::NonZeroU32::MIN),
        period: Duration::from_secs(1),
        burst: std::num::NonZeroU32::new(1_000_000).unwrap_or(std::num::NonZeroU32::MIN),
    };
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let _ = a.check_limit(&limit, "10.0.0.1").await;
        samples.push(started.elapsed());
    }
    figures.push(Figures::from("cluster limit check (GCRA script)", samples));

    // Purge propagation A → B.
    let b = Arc::new(RedisTier::new(&config, &metrics)?);
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.attach(Arc::new(Arrivals(tx)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let subscriber = tokio::spawn(b.clone().run(async move {
        let _ = stop_rx.await;
    }));
    // The first message only establishes B's position; wait until B is subscribed.
    loop {
        a.purge(Purge::Tags(vec!["warm-up".into()])).await;
        if tokio::time::timeout(Duration::from_millis(100), rx.recv()).await.is_ok() {
            break;
        }
    }
    while rx.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        a.purge(Purge::Tags(vec![format!("lead:{i}")])).await;
        let arrived = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("subscriber stopped"))?;
        samples.push(arrived.duration_since(started));
    }
    let _ = stop_tx.send(());
    let _ = subscriber.await;
    figures.push(Figures::from("purge propagation A -> B (publish to applied)", samples));
    Ok(figures)
}

/// B's memory: reports when each purge arrives.
#[derive(Debug)]
struct Arrivals(mpsc::UnboundedSender<Instant>);

impl LocalPurge for Arrivals {
    fn purge_local(&self, purge: &Purge) -> u64 {
        if matches!(purge, Purge::Tags(_)) {
            let _ = self.0.send(Instant::now());
        }
        0
    }
}
