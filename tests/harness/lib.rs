//! The end-to-end test harness: the real `accel` sidecar on `127.0.0.1:0` in front of fake
//! origins, driven over sockets, with tests that read like the scenario:
//!
//! ```no_run
//! # async fn demo() {
//! use accel_e2e::{FakeOrigin, TestProxy};
//! let origin = FakeOrigin::new().route("/a", "hi").start().await;
//! let proxy = TestProxy::builder()
//!     .upstream("api", &[origin.addr()])
//!     .rules(r#"
//!         [[route]]
//!         name = "all"
//!         upstream = "api"
//!     "#)
//!     .start()
//!     .await;
//! let response = proxy.get("/a").await;
//! assert_eq!(response.text(), "hi");
//! assert_eq!(origin.hits("/a"), 1);
//! # }
//! ```
//!
//! # Layout
//!
//! - [`origin`]: [`FakeOrigin`], a real HTTP/1.1 server that answers by route and records
//!   every request it saw; it can be killed and restarted on the same port;
//! - [`proxy`]: [`TestProxy`], the sidecar started from a temporary `accel.toml` and rules
//!   file, with HTTP/1.1 and h2c clients and admin helpers;
//! - [`client`]: request bodies for clients ([`body`]) and collected responses;
//! - [`raw`]: HTTP/1.1 by hand, for what client libraries hide, and a listener's accept queue;
//! - [`h2c`]: HTTP/2 with prior knowledge frame by frame, for shapes client libraries refuse;
//! - [`services`]: the real Redis and PostgreSQL servers of the machine, or a private
//!   `redis-server` for outage tests;
//! - [`cluster`]: a private six-node Redis Cluster (three masters, three replicas);
//! - [`browser`]: headless Chromium, for the admin listener's status page.
//!
//! No test here depends on wall-clock speed: waits are for events (a request reached the
//! origin, a counter changed), bounded by a generous deadline that only fails a broken test.

pub mod browser;
pub mod client;
pub mod cluster;
pub mod h2c;
pub mod origin;
pub mod proxy;
pub mod raw;
pub mod services;

use std::future::Future;
use std::time::Duration;

pub use browser::{Chromium, require_chromium};
pub use client::{Collected, TestBody, body};
pub use cluster::{ClusterNode, PrivateCluster, private_cluster};
pub use h2c::H2Connection;
pub use origin::{FakeOrigin, Gate, OriginHandle, SeenRequest};
pub use proxy::{TestProxy, TestProxyBuilder};
pub use raw::{RawConnection, RawHead, accept_queue};
pub use services::{PrivateRedis, private_redis, require_postgres, require_redis};

/// How long a wait for an event may take before the test fails: long enough for a loaded
/// two-core machine, so only a broken proxy ever reaches it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Milliseconds, for builders: `latency(ms(50))`.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Waits until `condition` holds, polling every few milliseconds; panics with `what` after
/// [`DEADLINE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the async `condition` holds (see [`eventually`]).
pub async fn eventually_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition().await {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `future`, panicking with `what` after [`DEADLINE`] (a hang is a failure, not a
/// stuck test run).
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}
