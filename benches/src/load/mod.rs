//! `accel-load`: a closed-loop HTTP/1.1 keep-alive load generator.
//!
//! `concurrency` connections each run one task that sends a request, reads the whole response
//! body, records the latency and sends the next one, until the deadline. A warm-up phase runs
//! first and is not recorded. Requests spread over the target URLs round-robin, so a URL list
//! (`--urls-file`) exercises many cache keys.
//!
//! - [`options`]: the command line and the validated [`Options`] it becomes.
//! - [`target`]: the endpoint to connect to and the request URIs.
//! - [`connection`]: one connection's loop and its [`connection::ConnectionStats`].
//! - [`report`]: the merged [`Report`], printed as text or JSON.

pub mod connection;
pub mod options;
pub mod report;
pub mod target;

use std::sync::Arc;

use tokio::time::Instant;

pub use options::{Args, Options};
pub use report::{Latency, Report};
pub use target::Target;

use connection::{ConnectionStats, Phases, Shared};

/// Runs one load test and returns its report.
///
/// Never fails: connect failures, resets and malformed responses are counted as transport
/// errors, and a target that cannot be reached gives a report with zero requests.
pub async fn run(options: Options) -> Report {
    let Options { target, concurrency, duration, warmup, headers, method, body, label } = options;
    let start = Instant::now();
    let phases = Phases { measure_from: start + warmup, end: start + warmup + duration };
    let shared = Arc::new(Shared::new(target, method, headers, body));

    let tasks: Vec<_> = (0..concurrency.get())
        .map(|_| tokio::spawn(connection::drive(Arc::clone(&shared), phases)))
        .collect();
    let mut total = ConnectionStats::new();
    for task in tasks {
        // A panicking connection task is a bug in this crate; its counts are lost, the
        // others still make the report.
        if let Ok(stats) = task.await {
            total.merge(&stats);
        }
    }
    Report::new(label, shared.target(), concurrency.get(), duration, &total)
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroUsize, time::Duration};

    use super::*;
    use crate::fast_origin::{self, Answer};

    fn options(url: &str) -> Options {
        Options {
            target: Target::new(&[url.parse().unwrap()]).unwrap(),
            concurrency: NonZeroUsize::new(2).unwrap(),
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(50),
            headers: Vec::new(),
            method: http::Method::GET,
            body: bytes::Bytes::new(),
            label: "test".to_owned(),
        }
    }

    #[tokio::test]
    async fn reads_every_body_to_its_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(fast_origin::serve(listener, Answer::new(300, true)));

        let report = run(options(&format!("http://{addr}/x"))).await;
        origin.abort();

        assert!(report.requests > 0);
        assert_eq!(report.bytes_received, report.requests * 300);
        assert_eq!((report.status_errors, report.transport_errors), (0, 0));
        assert!(report.latency_us.p50 <= report.latency_us.max);
    }

    #[tokio::test]
    async fn counts_refused_connections_as_transport_errors() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);

        let report = run(options(&format!("http://{addr}/"))).await;

        assert_eq!(report.requests, 0);
        assert!(report.transport_errors > 0);
        assert!(!report.is_clean());
    }
}
