//! One sidecar of the scale benchmark: the release `accel` binary as its own process, with a
//! generated `accel.toml` and rules file in front of the counting origin and on the shared
//! tier; killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use accel_e2e::proxy::metric_value;
use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Bearer token of every sidecar's admin listener (loopback only).
const ADMIN_TOKEN: &str = "scale-benchmark-token";
/// Longest wait for a sidecar to start and reach Redis.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait for one request of the benchmark's own (polls, purges, metrics).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer, read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The `Cache-Status` header, empty when absent.
    pub fn cache_status(&self) -> &str {
        self.headers.get("cache-status").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// A running sidecar process.
#[derive(Debug)]
pub struct Sidecar {
    name: String,
    listen: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    child: Child,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Sidecar {
    /// Writes `accel.toml` (one worker thread, `redis` as its `[redis]` section) and
    /// `rules.toml` under `dir`, starts `accel run` and waits until it is connected to Redis
    /// with its circuit closed.
    pub async fn start(
        accel: &Path,
        dir: PathBuf,
        origin: SocketAddr,
        rules: &str,
        redis: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let (listen, admin) = (free_addr()?, free_addr()?);
        let rules_path = dir.join("rules.toml");
        std::fs::write(&rules_path, rules)?;
        let config = format!(
            "[listen]\nhttp = \"{listen}\"\n\n[admin]\naddr = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [runtime]\nworker_threads = 1\n\n[log]\naccess = false\nlevel = \"warn\"\n\n\
             [upstreams.api]\nendpoints = [\"{origin}\"]\n\n[rules]\nfiles = [\"{}\"]\n\n{redis}\n",
            rules_path.display()
        );
        let config_path = dir.join("accel.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("accel.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(accel)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", accel.display()))?;
        let name = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut sidecar = Self { name, listen, admin, log, child, client };
        sidecar.wait_up().await?;
        Ok(sidecar)
    }

    /// Its name (the directory's), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its client listener.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// `GET path` on the client listener.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let request = Request::get(format!("http://{}{path}", self.listen)).body(Full::default())?;
        self.send(request).await
    }

    /// `POST /cache/purge` on the admin listener with `json`; fails unless it answers 200.
    pub async fn purge(&self, json: &str) -> anyhow::Result<()> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/cache/purge", self.admin))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json.to_owned())))?;
        let answer = self.send(request).await?;
        if answer.status != StatusCode::OK {
            bail!(
                "{}: purge answered {}: {}",
                self.name,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }

    /// The value of one metric series (`name{labels}` exactly as exposed); 0 when absent.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        Ok(metric_value(&self.metrics_text().await?, series))
    }

    /// Whether it is connected to Redis with its circuit closed.
    pub async fn redis_up(&self) -> bool {
        match self.metrics_text().await {
            Ok(text) => {
                metric_value(&text, "accel_redis_up") == 1.0
                    && metric_value(&text, "accel_redis_circuit_state") == 0.0
            }
            Err(_) => false,
        }
    }

    /// Its admin `/metrics` exposition.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let request = Request::get(format!("http://{}/metrics", self.admin)).body(Full::default())?;
        let answer = self.send(request).await?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let what = format!("{} {} on {}", request.method(), request.uri(), self.name);
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{what}: no answer in {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what.clone())
    }

    async fn wait_up(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) at start; its log:\n{}", self.name, self.log_tail());
            }
            if self.redis_up().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not reach Redis in {START_DEADLINE:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A loopback address whose port was free a moment ago.
fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
