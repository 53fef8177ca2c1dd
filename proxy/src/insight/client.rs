//! `accel advise`: reads a running proxy's `/health/summary` and prints its status, score,
//! factors and recommendations for a terminal (or the JSON as it came, with `--json`).

use std::fmt::Write as _;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The admin listener's base URL from `host:port` or a URL.
pub fn admin_base(admin: &str) -> String {
    if admin.contains("://") { admin.trim_end_matches('/').to_owned() } else { format!("http://{admin}") }
}

/// `GET {admin}/health/summary`, parsed.
pub async fn summary(admin: &str) -> anyhow::Result<Value> {
    let uri: http::Uri = format!("{}/health/summary", admin_base(admin)).parse().context("admin address")?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client.get(uri.clone()).await.with_context(|| format!("cannot reach {uri}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("{uri}: {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    serde_json::from_slice(&body).with_context(|| format!("{uri} did not answer JSON"))
}

/// The summary for a terminal: one status line, the factors, then the recommendations.
pub fn render(summary: &Value) -> String {
    let mut out = String::new();
    let m = &summary["metrics_summary"];
    let number = |v: &Value| v.as_f64().map_or_else(|| "–".to_owned(), |x| format!("{x}"));
    let share = |v: &Value| v.as_f64().map_or_else(|| "–".to_owned(), |x| format!("{:.1} %", x * 100.0));
    let _ = writeln!(
        out,
        "{} · health score {} (last {} s: {} requests, {} req/s, hit rate {}, p95 {} ms, p99 {} ms, {} 5xx)",
        summary["status"].as_str().unwrap_or("?"),
        number(&summary["health_score"]),
        number(&m["window_seconds"]),
        number(&m["requests"]),
        number(&m["requests_per_second"]),
        share(&m["hit_rate"]),
        number(&m["p95_ms"]),
        number(&m["p99_ms"]),
        number(&m["errors_5xx"]),
    );
    for factor in summary["factors"].as_array().into_iter().flatten() {
        let score =
            factor["score"].as_f64().map_or_else(|| "   –".to_owned(), |s| format!("{:3.0} %", s * 100.0));
        let _ = writeln!(
            out,
            "  {:<10} {score}  {}",
            factor["name"].as_str().unwrap_or("?"),
            factor["detail"].as_str().unwrap_or("")
        );
    }
    let advice = summary["recommendations"].as_array().map_or(&[][..], Vec::as_slice);
    if advice.is_empty() {
        out.push_str("no recommendations from the last 15 minutes\n");
    } else {
        let _ = writeln!(out, "{} recommendation(s):", advice.len());
        for a in advice {
            let _ = writeln!(
                out,
                "  - [{}] {}: {}",
                a["kind"].as_str().unwrap_or("?"),
                a["route"].as_str().unwrap_or("cache"),
                a["message"].as_str().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_reads_as_lines() {
        let summary = json!({
            "status": "degraded", "health_score": 72,
            "factors": [
                { "name": "latency", "score": 0.5, "weight": 30, "detail": "1 route(s) over target" },
                { "name": "redis", "score": null, "weight": 10, "detail": "not configured" },
            ],
            "metrics_summary": { "window_seconds": 300.0, "requests": 1200, "requests_per_second": 4.0,
                "hit_rate": 0.875, "p95_ms": 120.5, "p99_ms": 180.0, "errors_5xx": 3 },
            "recommendations": [{ "kind": "raise_ttl", "route": "rates", "message": "raise cache.ttl" }],
        });

        let text = render(&summary);

        assert_eq!(
            text,
            "degraded · health score 72 (last 300 s: 1200 requests, 4 req/s, hit rate 87.5 %, p95 120.5 ms, p99 180 ms, 3 5xx)\n\
             \x20 latency     50 %  1 route(s) over target\n\
             \x20 redis         –  not configured\n\
             1 recommendation(s):\n\
             \x20 - [raise_ttl] rates: raise cache.ttl\n"
        );
        assert_eq!(admin_base("127.0.0.1:9901"), "http://127.0.0.1:9901");
        assert_eq!(admin_base("http://h:1/"), "http://h:1");
    }
}
