//! Metric names: every `accel_*` name used by an alert or recording rule
//! (`monitoring/alerts.yml`), a dashboard panel (`monitoring/grafana-dashboard.json`) or the
//! metrics reference (`docs/metrics.md`) exists in a real `/metrics` scrape, and every family
//! in the scrape is documented. A renamed metric fails here.
//!
//! The scrape comes from a sidecar that has done what makes each family appear (labelled
//! families show up at their first count): cached and compressed answers, a rate-limit
//! refusal, a purge, a good and a bad rules reload, an endpoint named by host name, and the
//! Redis tier.

use std::collections::BTreeSet;

use accel_e2e::{FakeOrigin, TestProxy, body, require_redis};
use http::Method;

const TOKEN: &str = "metrics-test-token";

const RULES: &str = r#"
[[route]]
name = "cached"
match = { path_prefix = "/cached/" }
upstream = "api"
cache = { ttl = "60s", tags = ["cached"] }

[[route]]
name = "limited"
match = { path_prefix = "/limited/" }
upstream = "api"
rate_limit = { rate = "1/m", burst = 1, key = "client_ip" }

[[route]]
name = "socket"
match = { path_prefix = "/socket/" }
upstream = "api"
upgrades = ["websocket"]
"#;

/// Metric names in a PromQL expression (`quotes`: skipping quoted label values) or in
/// Markdown (where backticks mark names, not values): identifiers starting with `accel_`, or
/// naming a recording rule (with colons).
fn names_in(expr: &str, quotes: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut quoted = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quoted {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quoted = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if quotes && (c == '"' || c == '\'' || c == '`') {
            quoted = Some(c);
        }
        if is_name(&word) {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    if is_name(&word) {
        names.push(word);
    }
    names
}

/// `accel_` and more, or a recording rule of an `accel_` metric.
fn is_name(word: &str) -> bool {
    (word.starts_with("accel_") && word.len() > "accel_".len()) || word.contains(":accel_")
}

/// (expressions, recording rule names) of `monitoring/alerts.yml`.
fn alert_rules() -> (Vec<String>, BTreeSet<String>) {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&crate::read("monitoring/alerts.yml")).expect("alerts.yml is YAML");
    let mut exprs = Vec::new();
    let mut records = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("an expr").to_owned());
            if let Some(record) = rule["record"].as_str() {
                records.insert(record.to_owned());
            }
        }
    }
    (exprs, records)
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&crate::read("monitoring/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    exprs
}

/// Series names and family names (from `# TYPE`) of a scrape.
fn scraped_names(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut series = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().expect("a name").to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            series.insert(line.split(['{', ' ']).next().expect("a name").to_owned());
        }
    }
    (series, families)
}

async fn scrape() -> Option<String> {
    let redis = require_redis()?;
    let origin = FakeOrigin::new()
        .route("/cached/*", "x".repeat(4096))
        .header("cache-control", "public, max-age=60")
        .header("content-type", "text/plain")
        .route("/*", "ok")
        .start()
        .await;
    let port = origin.addr().port();
    let proxy = TestProxy::builder()
        .upstream("api", &[origin.addr()])
        .rules(RULES)
        .sidecar_toml(&format!(
            "[compress]\nenabled = true\n\n[redis]\nurl = \"{redis}\"\nprefix = \"accel-test-metrics-{}:\"\n",
            std::process::id()
        ))
        .config(move |config| {
            config.admin.token = Some(TOKEN.into());
            config.cache.purge_token = Some(TOKEN.into());
            // A host name, so that the endpoint is looked up.
            config.upstreams[0].endpoints = vec![format!("localhost:{port}").parse().expect("an endpoint")];
        })
        .start()
        .await;

    for _ in 0..2 {
        let request = proxy.request(Method::GET, "/cached/a").header("accept-encoding", "gzip");
        assert_eq!(proxy.send(request.body(body::empty()).unwrap()).await.status, 200);
    }
    assert_eq!(proxy.get("/limited/a").await.status, 200);
    assert_eq!(proxy.get("/limited/a").await.status, 429);
    let purge = http::Request::post(proxy.admin_url("/cache/purge"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body::full(r#"{"tags":["cached"]}"#.to_owned()))
        .unwrap();
    assert_eq!(proxy.send(purge).await.status, 200);
    assert!(proxy.reload().is_ok());
    proxy.rewrite_rules("[[route]]\nname = \"broken\"\nupstream = \"nowhere\"\n");
    assert!(proxy.reload().is_err());
    Some(proxy.metrics_text().await)
}

#[tokio::test]
async fn every_metric_name_used_by_alerts_dashboards_and_docs_is_scraped() {
    let Some(text) = scrape().await else { return };
    let (series, families) = scraped_names(&text);
    let (alert_exprs, records) = alert_rules();
    let docs = crate::read("docs/metrics.md");
    let dashboard = dashboard_exprs();

    let mut missing = Vec::new();
    let used = alert_exprs
        .iter()
        .map(|e| ("monitoring/alerts.yml", e.as_str()))
        .chain(dashboard.iter().map(|e| ("monitoring/grafana-dashboard.json", e.as_str())))
        .chain(std::iter::once(("docs/metrics.md", docs.as_str())));
    for (file, text) in used {
        for name in names_in(text, file.ends_with(".json") || file.ends_with(".yml")) {
            let known = if name.contains(':') {
                records.contains(&name)
            } else {
                series.contains(&name) || families.contains(&name)
            };
            if !known {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "names that no scrape has (renamed or misspelt?):\n{}", missing.join("\n"));

    let undocumented: Vec<&String> = families.iter().filter(|f| !docs.contains(f.as_str())).collect();
    assert!(undocumented.is_empty(), "metrics missing from docs/metrics.md: {undocumented:?}");
}

#[test]
fn names_are_found_outside_label_values() {
    assert_eq!(
        names_in(r#"sum(rate(accel_a_total{x="accel_not_a_name"}[5m])) / route:accel_b:rate5m"#, true),
        ["accel_a_total", "route:accel_b:rate5m"]
    );
    assert_eq!(names_in("`accel_a_total` and `accel_b`", false), ["accel_a_total", "accel_b"]);
}
