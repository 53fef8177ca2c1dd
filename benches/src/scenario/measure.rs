//! Measuring one target: closed-loop load for latency, throughput and success rate, and
//! repeated single requests for the cache hit rate (read from each answer's `Cache-Status`).

use std::num::NonZeroUsize;

use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::file::{Endpoint, Measure, Scenario, Target};
use crate::load::{self, Options, Report};

/// What a measurement found.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The value compared with the target; `None` when nothing answered.
    pub actual: Option<f64>,
    /// Requests the value rests on.
    pub samples: u64,
    /// Answers among them that were not 2xx/3xx, and failed exchanges: a latency measured on
    /// refusals (429) or errors says nothing of the API.
    pub errors: u64,
    /// Each endpoint's own value, where the measure has one.
    pub by_endpoint: Vec<(String, Option<f64>)>,
}

/// `base` (`http://host:port`) joined with an endpoint's path.
fn url(base: &Uri, path: &str) -> anyhow::Result<Uri> {
    Ok(format!("{}{path}", base.to_string().trim_end_matches('/')).parse()?)
}

fn options(base: &Uri, target: &Target, endpoints: &[&Endpoint]) -> anyhow::Result<Options> {
    let urls = endpoints.iter().map(|e| url(base, &e.path)).collect::<anyhow::Result<Vec<_>>>()?;
    let first = endpoints[0];
    Ok(Options {
        target: load::Target::new(&urls)?,
        concurrency: NonZeroUsize::new(target.concurrency).unwrap_or(NonZeroUsize::MIN),
        duration: target.duration,
        warmup: target.warmup,
        headers: first.headers.clone(),
        method: first.method.clone(),
        body: first.body.clone(),
        label: target.name.clone(),
        server_pids: Vec::new(),
    })
}

/// Measures `target` of `scenario` against `base`.
pub async fn measure(base: &Uri, scenario: &Scenario, target: &Target) -> anyhow::Result<Measured> {
    let endpoints: Vec<&Endpoint> = target.endpoints.iter().map(|&i| &scenario.endpoints[i]).collect();
    match target.measure {
        Measure::RequestsPerSecond => {
            let report = load::run(options(base, target, &endpoints)?).await;
            // Only answers that served the request count: a 429 or a 5xx is not throughput.
            let served = report.requests - report.status_errors;
            let actual = (served > 0).then(|| served as f64 / report.duration_secs);
            let errors = report.status_errors + report.transport_errors;
            Ok(Measured { actual, samples: served, errors, by_endpoint: Vec::new() })
        }
        Measure::Latency(percentile) => {
            let mut measured = Measured { actual: Some(0.0), samples: 0, errors: 0, by_endpoint: Vec::new() };
            for endpoint in endpoints {
                let report = load::run(options(base, target, &[endpoint])?).await;
                let value = latency_ms(&report, percentile);
                measured.samples += report.requests;
                measured.errors += report.status_errors + report.transport_errors;
                measured.actual = match (measured.actual, value) {
                    (Some(worst), Some(v)) => Some(worst.max(v)),
                    _ => None,
                };
                measured.by_endpoint.push((endpoint.name.clone(), value));
            }
            Ok(measured)
        }
        Measure::SuccessRate => {
            let (mut good, mut all) = (0u64, 0u64);
            let mut by_endpoint = Vec::new();
            for endpoint in endpoints {
                let report = load::run(options(base, target, &[endpoint])?).await;
                let answered = report.requests + report.transport_errors;
                let ok = report.requests - report.status_errors;
                good += ok;
                all += answered;
                by_endpoint.push((endpoint.name.clone(), share(ok, answered)));
            }
            Ok(Measured { actual: share(good, all), samples: all, errors: all - good, by_endpoint })
        }
        Measure::CacheHitRate => {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
            let (mut hits, mut all) = (0u64, 0u64);
            let mut by_endpoint = Vec::new();
            for endpoint in endpoints {
                let mut endpoint_hits = 0;
                for _ in 0..target.repeats {
                    if is_hit(&client, base, endpoint).await? {
                        endpoint_hits += 1;
                    }
                }
                hits += endpoint_hits;
                all += target.repeats as u64;
                by_endpoint.push((endpoint.name.clone(), share(endpoint_hits, target.repeats as u64)));
            }
            Ok(Measured { actual: share(hits, all), samples: all, errors: 0, by_endpoint })
        }
    }
}

fn latency_ms(report: &Report, percentile: u8) -> Option<f64> {
    if report.requests == 0 {
        return None;
    }
    let us = match percentile {
        50 => report.latency_us.p50,
        95 => report.latency_us.p95,
        _ => report.latency_us.p99,
    };
    Some(us as f64 / 1000.0)
}

/// `part` of `whole` in percent.
fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// One request; true when its `Cache-Status` says the cache answered (RFC 9211 `hit`).
async fn is_hit(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
    base: &Uri,
    endpoint: &Endpoint,
) -> anyhow::Result<bool> {
    let mut request = Request::builder().method(endpoint.method.clone()).uri(url(base, &endpoint.path)?);
    for (name, value) in &endpoint.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(endpoint.body.clone()))?;
    let Ok(response) = client.request(request).await else { return Ok(false) };
    let hit = response
        .headers()
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(';').nth(1).is_some_and(|p| p.trim() == "hit"));
    let _ = response.into_body().collect().await;
    Ok(hit)
}
