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
//! - [`cpu`]: the server's CPU time over the measured phase (`--server-pid`).

pub mod connection;
pub mod cpu;
pub mod options;
pub mod report;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use options::{Args, Options};
pub use report::{Latency, Report};
pub use target::Target;

use connection::{ConnectionStats, Phases, Shared};
use cpu::{CpuSample, ServerCpu};

/// Runs one load test and returns its report.
///
/// Never fails: connect failures, resets and malformed responses are counted as transport
/// errors, and a target that cannot be reached gives a report with zero requests.
pub async fn run(options: Options) -> Report {
    let Options { target, concurrency, duration, warmup, headers, method, body, label, server_pids } =
        options;
    let start = Instant::now();
    let phases = Phases { measure_from: start + warmup, end: start + warmup + duration };
    let shared = Arc::new(Shared::new(target, method, headers, body));
    let cpu = (!server_pids.is_empty()).then(|| tokio::spawn(sample_cpu(server_pids, phases)));

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
    let mut report = Report::new(label, shared.target(), concurrency.get(), duration, &total);
    report.server_cpu = measured_cpu(cpu, report.requests).await;
    report
}

/// The servers' CPU samples at the start and the end of the measured phase, and the time
/// between them.
async fn sample_cpu(pids: Vec<u32>, phases: Phases) -> std::io::Result<(CpuSample, CpuSample, Duration)> {
    tokio::time::sleep_until(phases.measure_from).await;
    let before = CpuSample::take(&pids)?;
    let from = Instant::now();
    tokio::time::sleep_until(phases.end).await;
    let after = CpuSample::take(&pids)?;
    Ok((before, after, from.elapsed()))
}

async fn measured_cpu(
    sampler: Option<JoinHandle<std::io::Result<(CpuSample, CpuSample, Duration)>>>,
    requests: u64,
) -> Option<ServerCpu> {
    match sampler?.await {
        Ok(Ok((before, after, elapsed))) => Some(ServerCpu::between(before, after, requests, elapsed)),
        Ok(Err(error)) => {
            eprintln!("accel-load: server CPU not measured: {error}");
            None
        }
        Err(_) => None,
    }
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
            server_pids: Vec::new(),
        }
    }

    #[tokio::test]
    async fn reads_every_body_to_its_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = tokio::spawn(fast_origin::serve(listener, Answer::new(300, true)));

        let mut options = options(&format!("http://{addr}/x"));
        // The origin runs in this process: its CPU time is this process's.
        options.server_pids = vec![std::process::id()];
        let report = run(options).await;
        origin.abort();

        assert!(report.requests > 0);
        assert_eq!(report.bytes_received, report.requests * 300);
        assert_eq!((report.status_errors, report.transport_errors), (0, 0));
        assert!(report.latency_us.p50 <= report.latency_us.max);
        let cpu = report.server_cpu.expect("server CPU measured");
        // The origin served every request in this process: some CPU time went into them.
        assert!(cpu.us_per_request > 0.0 && cpu.cores > 0.0, "{cpu:?}");
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
