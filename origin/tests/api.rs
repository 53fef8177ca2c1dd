//! Every endpoint of the origin, its answer and its caching headers, on SQLite and on
//! PostgreSQL (see `support` for how each test gets its own database).

mod support;

use accel_origin::on_db;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::{Backend, NOW, TestDb};

on_both_backends!(
    health_and_metrics,
    golden_lead_list_filters_and_headers,
    one_lead_has_an_etag_and_answers_304,
    detection_scores_signals_and_rejects_bad_input,
    predictions_forecast_a_lead,
    pricing_quote_record_and_invalidate,
    pricing_analytics_match_the_history,
    tenant_usage_matches_the_rows,
    learning_endpoints_need_a_token_and_aggregate,
    materials_upload_query_delete,
    materials_reject_bad_uploads,
    failed_upload_leaves_nothing_behind,
    seed_is_deterministic,
);

async fn fixture(backend: Backend) -> Option<(TestDb, String)> {
    Some(TestDb::new(backend).await?.seeded().await)
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).expect("count query")
}

fn hot_signals() -> &'static str {
    r#"{"email_opens": 40, "email_clicks": 18, "page_views": 120, "pricing_page_views": 12,
        "demo_requested": true, "trial_active": true, "company_size": 800, "annual_budget": 250000,
        "days_since_last_activity": 1, "support_tickets": 2, "industry": "software"}"#
}

async fn health_and_metrics(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let health = client.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.header("cache-control"), "no-store");
    assert_eq!(health.json["status"], "ok");
    client.get("/api/golden-leads?limit=3").await;
    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(metrics.header("cache-control"), "no-store");
    let text = client
        .send(Method::GET, "/metrics", &[], Vec::new())
        .await
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert!(text.is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let body = metrics_text(&client).await;
    assert!(body.contains("origin_http_request_duration_seconds_count{route=\"/api/golden-leads\",method=\"GET\",status=\"200\"} 1"), "{body}");
    assert!(body.contains("origin_db_query_duration_seconds_count{query=\"leads.list\"} 1"), "{body}");
    assert!(body.contains("origin_db_pool_max_connections 4"), "{body}");
    assert!(body.contains("origin_db_pool_connections"), "{body}");
    let unknown = client.get("/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json["status"], 404);
}

async fn metrics_text(client: &support::Client) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).expect("request");
    let response = accel_origin::router(client.app.clone()).oneshot(request).await.expect("infallible");
    String::from_utf8(response.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf-8")
}

async fn golden_lead_list_filters_and_headers(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let all = client.get("/api/golden-leads?limit=500").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header("cache-control"), "public, max-age=30");
    assert_eq!(all.header("cache-tag"), "leads");
    let leads = all.json["leads"].as_array().expect("leads");
    assert_eq!(leads.len(), 200);
    assert_eq!(all.json["count"], 200);
    let probabilities: Vec<f64> = leads.iter().map(|l| l["probability"].as_f64().unwrap_or(-1.0)).collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "ordered by probability");
    assert!(leads[0]["signals"]["industry"].is_string());

    let silver = client.get("/api/golden-leads?tier=silver&min_probability=0.4&limit=5").await;
    assert_eq!(silver.status, StatusCode::OK);
    let silver = silver.json["leads"].as_array().expect("leads").clone();
    assert!(!silver.is_empty() && silver.len() <= 5);
    assert!(silver.iter().all(|l| l["tier"] == "silver" && l["probability"].as_f64().unwrap_or(0.0) >= 0.4));
    let expected =
        count(&db, "SELECT count(*) FROM golden_leads WHERE tier = 'silver' AND probability >= 0.4").await;
    assert_eq!(silver.len() as i64, expected.min(5));

    for bad in ["tier=diamond", "min_probability=2", "limit=0", "limit=abc", "color=red"] {
        let answer = client.get(&format!("/api/golden-leads?{bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.json["error"].is_string(), "{bad}: JSON error body");
    }
}

async fn one_lead_has_an_etag_and_answers_304(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let lead = client.get("/api/golden-leads/7").await;
    assert_eq!(lead.status, StatusCode::OK);
    assert_eq!(lead.json["id"], 7);
    assert_eq!(lead.header("cache-control"), "public, max-age=60");
    assert_eq!(lead.header("cache-tag"), "lead:7");
    let etag = lead.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2);
    let again =
        client.send(Method::GET, "/api/golden-leads/7", &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("etag"), etag);
    assert_eq!(again.header("cache-tag"), "lead:7");
    let other =
        client.send(Method::GET, "/api/golden-leads/7", &[("if-none-match", "\"nope\"")], Vec::new()).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(client.get("/api/golden-leads/99999").await.status, StatusCode::NOT_FOUND);
    let bad = client.get("/api/golden-leads/abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json["error"].is_string());
}

async fn detection_scores_signals_and_rejects_bad_input(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let hot = client.json(Method::POST, "/api/golden-leads/detect", None, hot_signals()).await;
    assert_eq!(hot.status, StatusCode::OK);
    assert_eq!(hot.header("cache-control"), "no-store");
    assert_eq!(hot.json["tier"], "platinum");
    assert_eq!(hot.json["golden"], true);
    assert!(hot.json["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    let cold = hot_signals()
        .replace("\"demo_requested\": true", "\"demo_requested\": false")
        .replace("\"email_opens\": 40", "\"email_opens\": 0");
    let cold = client.json(Method::POST, "/api/golden-leads/detect", None, &cold).await;
    assert!(cold.json["probability"].as_f64() < hot.json["probability"].as_f64());

    let malformed = client.json(Method::POST, "/api/golden-leads/detect", None, "{\"email_opens\": ").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json["error"].is_string());
    let wrong_type = hot_signals().replace("\"page_views\": 120", "\"page_views\": \"many\"");
    let wrong_type = client.json(Method::POST, "/api/golden-leads/detect", None, &wrong_type).await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    let negative = hot_signals().replace("\"annual_budget\": 250000", "\"annual_budget\": -5");
    let negative = client.json(Method::POST, "/api/golden-leads/detect", None, &negative).await;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_type =
        client.send(Method::POST, "/api/golden-leads/detect", &[], hot_signals().as_bytes().to_vec()).await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn predictions_forecast_a_lead(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let prediction = client.get("/api/predictions/3").await;
    assert_eq!(prediction.status, StatusCode::OK);
    assert_eq!(prediction.header("cache-control"), "public, max-age=10");
    assert_eq!(prediction.header("cache-tag"), "lead:3 predictions:lead:3");
    let forecast = &prediction.json["forecast"];
    let (p10, p90) = (forecast["interval"]["p10"].as_f64(), forecast["interval"]["p90"].as_f64());
    assert!(p10 <= p90, "{forecast}");
    assert!(forecast["expected_value"].as_f64().is_some_and(|v| v >= 0.0));
    assert!(forecast["insights"].is_array());
    assert_eq!(client.get("/api/predictions/3").await.json, prediction.json, "repeatable");
    assert_eq!(client.get("/api/predictions/123456").await.status, StatusCode::NOT_FOUND);
}

async fn pricing_quote_record_and_invalidate(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let quote = client.get("/api/pricing/5").await;
    assert_eq!(quote.status, StatusCode::OK);
    assert_eq!(quote.header("cache-control"), "public, max-age=300");
    assert_eq!(quote.header("cache-tag"), "pricing pricing:contact:5");
    assert!(quote.json["price"].as_f64().is_some_and(|p| p > 0.0));
    let location = quote.json["location"].as_str().expect("location").to_owned();
    let etag = quote.header("etag").to_owned();
    assert!(!etag.is_empty());
    let elsewhere = client.get("/api/pricing/5?location=mars-base").await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    assert_eq!(elsewhere.json["location"], "mars-base");

    let recorded = client
        .json(
            Method::PUT,
            "/api/pricing/5",
            None,
            &format!(r#"{{"price": 9999.5, "location": "{location}", "converted": true}}"#),
        )
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED);
    assert_eq!(recorded.header("cache-control"), "no-store");
    assert_eq!(recorded.header("cache-group-invalidation"), "pricing:contact:5");
    assert_eq!(recorded.json["recorded_at"], NOW);
    let after = client.send(Method::GET, "/api/pricing/5", &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(after.status, StatusCode::OK, "the new point changes the quote");
    assert_ne!(after.header("etag"), etag);

    assert_eq!(
        client.json(Method::PUT, "/api/pricing/5", None, r#"{"price": -1}"#).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        client.json(Method::PUT, "/api/pricing/5", None, r#"{"price": "cheap"}"#).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        client.json(Method::PUT, "/api/pricing/5", None, r#"{"price": 1"#).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client.json(Method::PUT, "/api/pricing/4242", None, r#"{"price": 10}"#).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(client.get("/api/pricing/4242").await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get("/api/pricing/5?location=Bad%20Place").await.status, StatusCode::BAD_REQUEST);
}

async fn pricing_analytics_match_the_history(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let from = NOW - 3 * 86_400;
    let answer = client.get(&format!("/api/pricing/analytics?from={from}&to={NOW}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("cache-control"), "public, max-age=300");
    assert_eq!(answer.header("cache-tag"), "pricing");
    // Whole hours inside the range, as the view buckets them.
    let hour_from = from.div_euclid(3600) * 3600;
    let first_hour = if hour_from < from { hour_from + 3600 } else { hour_from };
    let expected: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pricing_history WHERE recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(first_hour)
    .bind(NOW.div_euclid(3600) * 3600 + if NOW % 3600 == 0 { 0 } else { 3600 })
    .fetch_one(pool)
    .await)
    .expect("count");
    assert!(expected > 0);
    assert_eq!(answer.json["total"]["points"], expected);
    let by_location: i64 = answer.json["by_location"]
        .as_object()
        .expect("map")
        .values()
        .map(|s| s["points"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(by_location, expected);
    assert_eq!(
        client.get(&format!("/api/pricing/analytics?from={NOW}&to={from}")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(client.get("/api/pricing/analytics?from=0&to=99999999").await.status, StatusCode::BAD_REQUEST);
}

async fn tenant_usage_matches_the_rows(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let usage = client.get("/api/tenants/2/usage?days=30").await;
    assert_eq!(usage.status, StatusCode::OK);
    assert_eq!(usage.header("cache-control"), "public, max-age=60");
    assert_eq!(usage.header("cache-tag"), "usage:tenant:2");
    let since = (NOW.div_euclid(86_400) - 29) * 86_400;
    let requests: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM usage_analytics WHERE tenant_id = 2 AND recorded_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await)
    .expect("count");
    assert!(requests > 0);
    assert_eq!(usage.json["requests"], requests);
    let daily: i64 = usage.json["daily"]
        .as_array()
        .expect("daily")
        .iter()
        .map(|d| d["requests"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(daily, requests);
    assert!(usage.json["slow"].as_i64().is_some_and(|s| s > 0 && s < requests));
    assert!(usage.json["failed"].as_i64().is_some_and(|f| f < requests));
    assert!(usage.json["top_endpoints"].as_array().is_some_and(|e| !e.is_empty() && e.len() <= 10));
    assert_eq!(client.get("/api/tenants/99/usage").await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get("/api/tenants/2/usage?days=0").await.status, StatusCode::BAD_REQUEST);
}

async fn learning_endpoints_need_a_token_and_aggregate(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    for path in ["/api/learning/overview", "/api/learning/heatmap", "/api/learning/xp", "/api/materials"] {
        let anonymous = client.get(path).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(anonymous.header("www-authenticate"), "Bearer");
        assert!(anonymous.json["error"].is_string());
        assert_eq!(client.get_as("tok_wrong", path).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let overview = client.get_as(&token, "/api/learning/overview?days=30").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert_eq!(overview.header("cache-control"), "max-age=60");
    assert_eq!(overview.header("vary"), "Authorization");
    assert_eq!(overview.header("cache-tag"), "learning:user:1");
    let since = (NOW.div_euclid(86_400) - 29) * 86_400;
    let minutes: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COALESCE(sum(minutes), 0) AS BIGINT) FROM learning_activity WHERE user_id = 1 AND occurred_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await)
    .expect("sum");
    assert!(minutes > 0);
    assert_eq!(overview.json["minutes"], minutes);
    let by_kind: i64 = overview.json["by_kind"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| k["minutes"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(by_kind, minutes);
    assert!(overview.json["longest_streak"].as_i64() >= overview.json["current_streak"].as_i64());
    assert_eq!(
        client.get_as(&token, "/api/learning/overview?days=999").await.status,
        StatusCode::BAD_REQUEST
    );

    let heatmap = client.get_as(&token, "/api/learning/heatmap").await;
    assert_eq!(heatmap.status, StatusCode::OK);
    assert_eq!(heatmap.header("cache-control"), "max-age=300");
    assert_eq!(heatmap.header("vary"), "Authorization");
    let days = heatmap.json["days"].as_array().expect("days");
    assert_eq!(days.len(), 365);
    assert_eq!(heatmap.json["to"], "2026-03-15");
    assert!(days.iter().all(|d| d["level"].as_u64().is_some_and(|l| l <= 4)));
    assert!(days.iter().any(|d| d["level"] == 4) && days.iter().any(|d| d["level"] == 0));

    let xp = client.get_as(&token, "/api/learning/xp?days=365").await;
    assert_eq!(xp.status, StatusCode::OK);
    assert_eq!(xp.header("cache-tag"), "learning:user:1");
    let total =
        count(&db, "SELECT CAST(COALESCE(sum(xp), 0) AS BIGINT) FROM learning_activity WHERE user_id = 1")
            .await;
    assert_eq!(xp.json["total_xp"], total);
    let history = xp.json["history"].as_array().expect("history");
    assert_eq!(history.last().map(|p| p["total"].clone()), Some(Value::from(total)));
}

const NOTES: &str = "# Cells\n\nMitochondria are the powerhouse of the cell and make ATP through respiration.\n\n\
    Chloroplasts capture light energy by photosynthesis in green plants.\n";

async fn materials_upload_query_delete(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let auth = format!("Bearer {token}");
    let before = client.get_as(&token, "/api/materials").await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.header("cache-control"), "max-age=30");
    assert_eq!(before.header("vary"), "Authorization");
    assert_eq!(before.header("cache-tag"), "materials:user:1");
    let listed = before.json["materials"].as_array().expect("materials").len();

    let long: String =
        (0..400).map(|i| format!("Filler sentence number {i} about nothing in particular. ")).collect();
    let body = format!("{NOTES}\n\n{long}");
    let uploaded = client
        .send(
            Method::POST,
            "/api/materials?title=Cell%20notes",
            &[("authorization", &auth), ("content-type", "text/markdown")],
            body.into_bytes(),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.json);
    assert_eq!(uploaded.header("cache-control"), "no-store");
    assert_eq!(uploaded.header("cache-group-invalidation"), "materials:user:1");
    assert_eq!(uploaded.json["title"], "Cell notes");
    let id = uploaded.json["id"].as_i64().expect("id");
    let chunks = uploaded.json["chunk_count"].as_i64().expect("chunks");
    assert!(chunks > 5, "long text is chunked");
    let stored: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM material_chunks WHERE material_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await)
    .expect("count");
    assert_eq!(stored, chunks);
    let after = client.get_as(&token, "/api/materials").await;
    assert_eq!(after.json["materials"].as_array().expect("materials").len(), listed + 1);

    let pdf = client
        .send(
            Method::POST,
            "/api/materials?title=Atoms",
            &[("authorization", &auth), ("content-type", "application/pdf")],
            pdf_with("Electrons orbit the nucleus of an atom."),
        )
        .await;
    assert_eq!(pdf.status, StatusCode::CREATED, "{:?}", pdf.json);
    assert_eq!(pdf.json["content_type"], "application/pdf");

    let found = client
        .json(
            Method::POST,
            "/api/retrieval/query",
            Some(&token),
            r#"{"query": "how do mitochondria make ATP?", "k": 3}"#,
        )
        .await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.header("cache-control"), "no-store");
    let results = found.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(
        results[0]["content"].as_str().is_some_and(|c| c.to_lowercase().contains("mitochondria")),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| r["material_id"] == id && r["content"].as_str().is_some_and(|c| c.contains("make ATP"))),
        "{results:?}"
    );
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap_or(0.0)).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    let atoms = client
        .json(
            Method::POST,
            "/api/retrieval/query",
            Some(&token),
            r#"{"query": "electrons nucleus atom", "k": 1}"#,
        )
        .await;
    assert_eq!(atoms.json["results"][0]["title"], "Atoms");
    assert_eq!(
        client
            .json(Method::POST, "/api/retrieval/query", Some(&token), r#"{"query": "", "k": 3}"#)
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        client
            .json(Method::POST, "/api/retrieval/query", Some(&token), r#"{"query": "x", "k": 0}"#)
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        client.json(Method::POST, "/api/retrieval/query", None, r#"{"query": "x"}"#).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Another user can neither see nor delete it.
    let other = support_token(&db, 2).await;
    let theirs = client
        .json(Method::POST, "/api/retrieval/query", Some(&other), r#"{"query": "mitochondria ATP", "k": 50}"#)
        .await;
    assert!(theirs.json["results"].as_array().expect("results").iter().all(|r| r["material_id"] != id));
    assert_eq!(
        client
            .send(
                Method::DELETE,
                &format!("/api/materials/{id}"),
                &[("authorization", &format!("Bearer {other}"))],
                Vec::new()
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let deleted = client
        .send(Method::DELETE, &format!("/api/materials/{id}"), &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.header("cache-group-invalidation"), "materials:user:1");
    let left: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM material_chunks WHERE material_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await)
    .expect("count");
    assert_eq!(left, 0);
    assert_eq!(
        client
            .send(Method::DELETE, &format!("/api/materials/{id}"), &[("authorization", &auth)], Vec::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn support_token(db: &TestDb, user: i64) -> String {
    accel_origin::seed::token_of(&db.db, user).await.expect("query").expect("user exists")
}

/// A one-page PDF whose text is `text`.
fn pdf_with(text: &str) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier", "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![50.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().expect("content")));
    let page_id =
        doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("pdf");
    out
}

async fn materials_reject_bad_uploads(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let mut client = db.client();
    client.app = client.app.clone().with_upload_limit(1024);
    let auth = format!("Bearer {token}");
    let materials = count(&db, "SELECT count(*) FROM materials").await;
    let cases: [(&str, Vec<u8>, StatusCode); 5] = [
        ("text/plain", vec![b'a'; 4096], StatusCode::PAYLOAD_TOO_LARGE),
        ("image/png", b"png".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("application/pdf", b"%PDF-1.5 broken".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("text/plain", vec![0xff, 0xfe, 0x00], StatusCode::UNPROCESSABLE_ENTITY),
        ("text/plain", b"   ".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (content_type, body, status) in cases {
        let answer = client
            .send(
                Method::POST,
                "/api/materials",
                &[("authorization", &auth), ("content-type", content_type)],
                body,
            )
            .await;
        assert_eq!(answer.status, status, "{content_type}");
        assert!(answer.json["error"].is_string(), "{content_type}: JSON error");
    }
    let long_title = format!("/api/materials?title={}", "t".repeat(300));
    assert_eq!(
        client
            .send(
                Method::POST,
                &long_title,
                &[("authorization", &auth), ("content-type", "text/plain")],
                b"hi".to_vec()
            )
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(count(&db, "SELECT count(*) FROM materials").await, materials);
}

async fn failed_upload_leaves_nothing_behind(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    // The database refuses the third chunk, after the material and two chunks were written.
    match &db.db {
        accel_origin::Db::Postgres(pool) => {
            sqlx::query(
                "CREATE FUNCTION refuse_chunk() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.ordinal = 2 THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$",
            )
            .execute(pool)
            .await
            .expect("function");
            sqlx::query("CREATE TRIGGER refuse_chunk BEFORE INSERT ON material_chunks FOR EACH ROW EXECUTE FUNCTION refuse_chunk()")
                .execute(pool)
                .await
                .expect("trigger");
        }
        accel_origin::Db::Sqlite(pool) => {
            sqlx::query(
                "CREATE TRIGGER refuse_chunk BEFORE INSERT ON material_chunks WHEN NEW.ordinal = 2 \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            )
            .execute(pool)
            .await
            .expect("trigger");
        }
    }
    let (materials, chunks) = (
        count(&db, "SELECT count(*) FROM materials").await,
        count(&db, "SELECT count(*) FROM material_chunks").await,
    );
    let client = db.client();
    let long: String = (0..300).map(|i| format!("Sentence {i} of a long upload. ")).collect();
    let answer = client
        .send(
            Method::POST,
            "/api/materials",
            &[("authorization", &format!("Bearer {token}")), ("content-type", "text/plain")],
            long.into_bytes(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.json["error"].is_string());
    assert_eq!(count(&db, "SELECT count(*) FROM materials").await, materials);
    assert_eq!(count(&db, "SELECT count(*) FROM material_chunks").await, chunks);
}

/// Every seeded table, summarised so that any differing row changes the result.
async fn fingerprint(db: &TestDb) -> Vec<String> {
    const QUERIES: [&str; 9] = [
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(id) AS TEXT) || ':' || min(api_token) || max(api_token) FROM users",
        "SELECT CAST(count(*) AS TEXT) || ':' || min(location) || max(location) FROM contacts",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(contact_id) AS TEXT) || ':' || CAST(round(CAST(sum(score) AS NUMERIC), 2) AS TEXT) || ':' || CAST(sum(analyzed_at) AS TEXT) FROM golden_leads",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(round(CAST(sum(price) AS NUMERIC), 2) AS TEXT) || ':' || CAST(sum(recorded_at) AS TEXT) FROM pricing_history",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(lead_id) AS TEXT) FROM predictions",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(status) AS TEXT) || ':' || CAST(sum(recorded_at) AS TEXT) FROM usage_analytics",
        "SELECT CAST(count(*) AS TEXT) || ':' || min(title) || max(title) || ':' || CAST(sum(size_bytes) AS TEXT) FROM materials",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(length(content)) AS TEXT) FROM material_chunks",
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(xp) AS TEXT) || ':' || CAST(sum(occurred_at) AS TEXT) FROM learning_activity",
    ];
    let mut out = Vec::new();
    for sql in QUERIES {
        let row: String = on_db!(&db.db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).expect(sql);
        out.push(row);
    }
    out
}

async fn seed_is_deterministic(backend: Backend) {
    let Some((first, token)) = fixture(backend).await else { return };
    let Some((second, token_again)) = fixture(backend).await else { return };
    assert_eq!(token, token_again);
    let (a, b) = (fingerprint(&first).await, fingerprint(&second).await);
    assert_eq!(a, b);
    assert!(a[2].starts_with("200:"), "{a:?}");
    let lead = first.client().get("/api/golden-leads/42").await.json;
    assert_eq!(lead, second.client().get("/api/golden-leads/42").await.json);
    let again = accel_origin::seed::seed(&first.db, support::TEST_SIZE, NOW, false).await;
    assert!(matches!(again, Err(accel_origin::seed::SeedError::NotEmpty { tenants: 3 })), "{again:?}");
}
