//! Benchmarks for Accel: the load generator, the fast origin it is measured against, and the
//! report that compares runs.
//!
//! # Layout
//!
//! - [`load`]: `accel-load`, a closed-loop HTTP/1.1 keep-alive load generator (one task per
//!   connection, latency in an HDR histogram) and its [`load::Report`].
//! - [`fast_origin`]: `fast-origin`, a minimal hyper server answering every GET with a fixed
//!   body, the upstream that every proxy case of `benches/load.sh` shares.
//! - [`comparison`]: `load-report`, the side-by-side table and combined JSON report of several
//!   runs, with each case's medians when it ran in several rounds.
//! - [`shared_tier`]: `redis-tier`, lookup latency of memory vs Redis vs origin and purge
//!   propagation between two sidecars over Redis.
//! - [`scale`]: `accel-scale`, N sidecar processes on a private Redis and a private Redis
//!   Cluster: cold-key storms, purge propagation under load, cluster rate-limit accuracy and a
//!   Redis outage.
//! - [`scenario`]: `accel-bench`, the platform's targets measured from a scenario file and
//!   written as `performance_benchmark_report.json`.
//!
//! The binaries in `src/bin/` only parse arguments, build the runtime and call these modules.

pub mod comparison;
pub mod fast_origin;
pub mod load;
pub mod runtime;
pub mod scale;
pub mod scenario;
pub mod shared_tier;
