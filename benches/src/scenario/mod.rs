//! `accel-bench`: the platform's benchmark. A scenario file names the endpoints of an API and
//! the targets they must meet; each target is measured against a base URL (the proxy, or the
//! origin directly) with the closed-loop load generator of [`crate::load`], and the results
//! are written as the platform's `performance_benchmark_report.json`.
//!
//! - [`file`]: the scenario file and the validated [`Scenario`];
//! - [`measure`]: running one target's measurement;
//! - [`report`]: results, grade, recommendations, the table and the JSON.

pub mod file;
pub mod measure;
pub mod report;

pub use file::{Endpoint, Measure, Scenario, Target, Threshold};
pub use report::{BenchReport, TestResult};
