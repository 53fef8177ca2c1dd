//! The real servers tests may need: the machine's Redis (127.0.0.1:6379) and PostgreSQL
//! (127.0.0.1:5432), or a private `redis-server` on a free port for outage tests.
//!
//! When a server is absent the helpers print `SKIPPED: <why>` and return `None` (the test
//! returns early), unless `ACCEL_REQUIRE_SERVICES=1` is set: then they panic, so CI that
//! promises the services cannot pass by skipping.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared Redis URL, or `None` (after printing why) when no server answers.
pub fn require_redis() -> Option<String> {
    require("Redis", "127.0.0.1:6379", "redis://127.0.0.1:6379/")
}

/// The shared PostgreSQL URL (database `test`, user `postgres`, trust auth), or `None`
/// (after printing why) when no server answers.
pub fn require_postgres() -> Option<String> {
    require("PostgreSQL", "127.0.0.1:5432", "postgres://postgres@127.0.0.1:5432/test")
}

fn require(what: &str, addr: &str, url: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => Some(url.to_owned()),
        Err(e) => absent(&format!("{what} is not reachable at {addr}: {e}")),
    }
}

/// Prints `SKIPPED: why` and returns `None`, or panics when services are required.
pub(crate) fn absent<T>(why: &str) -> Option<T> {
    if services_required() {
        panic!("ACCEL_REQUIRE_SERVICES=1 but {why}");
    }
    println!("SKIPPED: {why}");
    None
}

/// True when `ACCEL_REQUIRE_SERVICES=1`.
pub fn services_required() -> bool {
    std::env::var("ACCEL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A `redis-server` of this test's own, on a free port; killed on drop (or with
/// [`kill`](Self::kill)) for outage tests. The shared server is never touched.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

/// Starts a private `redis-server` (no persistence) and waits until it accepts connections;
/// `None` (after printing why) when `redis-server` is not installed or does not start.
pub async fn private_redis() -> Option<PrivateRedis> {
    let mut redis = PrivateRedis { port: free_port(), child: None };
    match redis.start().await {
        Ok(()) => Some(redis),
        Err(why) => absent(&why),
    }
}

impl PrivateRedis {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port, empty, after [`kill`](Self::kill) (a Redis
    /// that came back after an outage); waits until it accepts connections. Does nothing
    /// while it runs.
    pub async fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        self.start().await
    }

    async fn start(&mut self) -> Result<(), String> {
        let port = self.port;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                self.kill();
                return Err(format!("redis-server did not start on port {port}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Kills the server now (connections drop, new ones are refused).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
