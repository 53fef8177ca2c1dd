//! Operator insight end to end: `/health/summary` scores what the proxy saw against each
//! route's targets, advice rests on observed refreshes, and the status page at `/` lists the
//! routes and draws their history in a real browser.

use std::time::Duration;

use accel::cache::Clock;
use accel_e2e::{FakeOrigin, TestProxy, eventually, ms, require_chromium};

/// Waits until the snapshotter has taken `count` snapshots, so that counts start from a
/// known baseline.
async fn snapshots(proxy: &TestProxy, count: usize) {
    let insight = &proxy.proxy().insight;
    eventually(&format!("{count} snapshots"), || insight.history().len() >= count).await;
}

async fn summary(proxy: &TestProxy) -> serde_json::Value {
    let response = proxy.admin_get("/health/summary").await;
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_str(&response.text()).expect("JSON")
}

fn factor<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["factors"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()
}

#[tokio::test]
async fn health_summary_scores_traffic_against_route_targets() {
    let origin = FakeOrigin::new()
        .route("/fast", "ok")
        .route("/slow", "ok")
        .latency(ms(20))
        .route("/broken", "no")
        .status(500)
        .start()
        .await;
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(
            r#"
            [[route]]
            name = "cached"
            match = { path = "/fast" }
            upstream = "api"
            cache = { ttl = "1m" }

            [[route]]
            name = "slow"
            match = { path = "/slow" }
            upstream = "api"
            slo = { p95 = "1ms", p99 = "2ms" }

            [[route]]
            name = "broken"
            match = { path = "/broken" }
            upstream = "api"
            "#,
        )
        .start()
        .await;
    snapshots(&proxy, 1).await;

    for _ in 0..20 {
        proxy.get("/fast").await;
    }
    for _ in 0..4 {
        proxy.get("/slow").await;
        proxy.get("/broken").await;
    }
    let summary = summary(&proxy).await;

    let metrics = &summary["metrics_summary"];
    assert_eq!(metrics["requests"], 28);
    assert_eq!(metrics["hit_rate"], 0.95, "19 hits after one miss");
    assert_eq!(metrics["errors_5xx"], 4);
    assert_eq!((metrics["endpoints_healthy"].as_u64(), metrics["redis"].as_str()), (Some(1), Some("off")));
    let names: Vec<&str> =
        summary["factors"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["latency", "hit_rate", "errors", "upstreams", "redis"]);
    assert_eq!(factor(&summary, "hit_rate")["score"], 1.0, "95 % meets the platform's 90 %");
    assert_eq!(factor(&summary, "errors")["score"], 0.0, "4 of 28 is over the 5 % limit");
    assert_eq!(factor(&summary, "errors")["detail"], "4 of 28 answers were 5xx (14 %)");
    let latency = &factor(&summary, "latency");
    assert!(latency["detail"].as_str().unwrap().contains("worst: slow p95"), "{latency}");
    assert!(latency["score"].as_f64().unwrap() < 1.0, "{latency}");
    assert_eq!(factor(&summary, "redis")["score"], serde_json::Value::Null);
    assert_ne!(summary["status"], "healthy", "{summary}");
    let score = summary["health_score"].as_u64().unwrap();
    assert!(score < 85, "{summary}");
}

#[tokio::test]
async fn a_route_whose_origin_repeats_its_etag_is_advised_a_longer_ttl() {
    let origin = FakeOrigin::new().route("/rates", "1.17").header("etag", "\"v1\"").start().await;
    let clock = Clock::manual(1_700_000_000_000);
    let cache_clock = clock.clone();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        // The stale window keeps the expired entry (it has no validator), so that each
        // fetch is a refresh the advice counts.
        .rules("[[route]]\nname = \"rates\"\nupstream = \"api\"\ncache = { ttl = \"10s\", stale_if_error = \"1m\" }\n")
        .config(move |config| config.cache.clock = cache_clock)
        .start()
        .await;
    snapshots(&proxy, 1).await;

    proxy.get("/rates").await;
    for _ in 0..12 {
        clock.advance(Duration::from_secs(11));
        let refreshed = proxy.get("/rates").await;
        assert_eq!(refreshed.header("etag"), Some("\"v1\""));
    }
    let summary = summary(&proxy).await;

    assert_eq!(origin.hits("/rates"), 13);
    let advice = summary["recommendations"].as_array().unwrap();
    let raise = advice.iter().find(|a| a["kind"] == "raise_ttl").unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(raise["route"], "rates");
    let message = raise["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "raise cache.ttl from 10s to about 40s: 12 of 12 refreshes (100 %) came back unchanged"
        ),
        "{message}"
    );
    assert_eq!(raise["evidence"]["unchanged"], 12);
    let metrics = proxy.metrics_text().await;
    assert!(
        metrics.contains("accel_cache_refreshes_total{route=\"rates\",result=\"unchanged\"} 12"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_route_whose_origin_changes_its_answer_gets_no_ttl_advice() {
    let origin = FakeOrigin::new().route("/rates", "1.17").start().await;
    let clock = Clock::manual(1_700_000_000_000);
    let cache_clock = clock.clone();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        // The stale window keeps the expired entry (it has no validator), so that each
        // fetch is a refresh the advice counts.
        .rules("[[route]]\nname = \"rates\"\nupstream = \"api\"\ncache = { ttl = \"10s\", stale_if_error = \"1m\" }\n")
        .config(move |config| config.cache.clock = cache_clock)
        .start()
        .await;
    snapshots(&proxy, 1).await;

    proxy.get("/rates").await;
    for _ in 0..12 {
        clock.advance(Duration::from_secs(11));
        proxy.get("/rates").await;
    }
    let summary = summary(&proxy).await;

    assert!(
        summary["recommendations"].as_array().unwrap().iter().all(|a| a["kind"] != "raise_ttl"),
        "{summary}"
    );
    let metrics = proxy.metrics_text().await;
    assert!(
        metrics.contains("accel_cache_refreshes_total{route=\"rates\",result=\"changed\"} 12"),
        "{metrics}"
    );
}

/// 200 routes (the page must stay usable at that size), traffic on a few of them over
/// several snapshots, then the page in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_lists_routes_and_draws_plots_in_a_browser() {
    let Some(chromium) = require_chromium() else { return };
    let origin = FakeOrigin::new().route("/*", "ok").start().await;
    let rules: String = (0..200)
        .map(|i| {
            format!(
                "[[route]]\nname = \"route-{i:03}\"\nmatch = {{ path_prefix = \"/r{i}/\" }}\nupstream = \"api\"\ncache = {{ ttl = \"1m\" }}\n\n"
            )
        })
        .collect();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(&rules)
        .config(|config| config.admin.snapshot_interval = ms(100))
        .start()
        .await;

    for round in 0..4 {
        snapshots(&proxy, round + 1).await;
        for i in 0..10 {
            for n in 0..=round + i {
                proxy.get(&format!("/r{i}/item-{n}")).await;
            }
        }
    }
    snapshots(&proxy, 5).await;
    let dom = chromium.dom(&proxy.admin_url("/")).await;

    assert!(dom.contains("data-loaded=\"true\""), "the script rendered the data:\n{dom}");
    assert_eq!(dom.matches("<tr data-route=").count(), 200, "every route has a row");
    assert!(dom.contains("<tr data-route=\"route-000\"><td>route-000</td><td>api</td>"), "{dom}");
    let rps_plot = section(&dom, "id=\"plot-rps\"", "</svg>");
    let line = section(rps_plot, "class=\"line\"", ">");
    let points = line.split("data-points=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert!(points.parse::<usize>().unwrap() >= 4, "{rps_plot}");
    let d = section(rps_plot, "<path d=\"M", "\"");
    assert!(d.matches('L').count() >= 3, "a line through the snapshots: {rps_plot}");
    assert!(dom.contains("class=\"badge "), "the health badge");

    let picture = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    chromium.screenshot(&proxy.admin_url("/"), &picture, 1400, 1100).await;
    println!("screenshot: {}", picture.display());
}

/// The text of `haystack` from `start` to the next `end` (both excluded from the search
/// result's end, `start` included).
fn section<'a>(haystack: &'a str, start: &str, end: &str) -> &'a str {
    let from = haystack.find(start).unwrap_or_else(|| panic!("{start} in:\n{haystack}"));
    let rest = &haystack[from..];
    let to = rest[start.len()..].find(end).map_or(rest.len(), |i| i + start.len());
    &rest[..to]
}
