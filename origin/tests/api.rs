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
    tenants_see_only_their_own_data,
    every_revenue_route_needs_a_live_token,
    stored_tokens_are_hashes_and_revocable,
    token_command_issues_and_revokes,
    repeated_price_writes_make_one_row,
    activity_and_lead_writes_name_what_they_invalidate,
    uploads_are_capped_in_chunks_and_decompression,
    busy_computations_answer_503,
    an_exhausted_pool_answers_503,
    one_instance_refreshes_the_views_per_interval,
    module_health_paths_and_the_versioned_predictive_api,
    performance_functions_report_tables_and_slow_queries,
);

/// User 1's tenant, whose data the fixture's token reaches.
const TENANT: i64 = 2;

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
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let health = client.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.header("cache-control"), "no-store");
    assert_eq!(health.json["status"], "ok");
    client.get_as(&token, "/api/golden-leads?limit=3").await;
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
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let all = client.get_as(&token, "/api/golden-leads?limit=500").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header("cache-control"), "max-age=30");
    assert_eq!(all.header("vary"), "Authorization");
    assert_eq!(all.header("cache-tag"), "leads:tenant:2");
    let leads = all.json["leads"].as_array().expect("leads");
    let mine = db.id("SELECT count(*) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    assert!(mine > 0 && mine < 200, "{mine}");
    assert_eq!(leads.len() as i64, mine);
    assert_eq!(all.json["count"], mine);
    assert!(leads.iter().all(|l| l["tenant_id"] == TENANT));
    let probabilities: Vec<f64> = leads.iter().map(|l| l["probability"].as_f64().unwrap_or(-1.0)).collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "ordered by probability");
    assert!(leads[0]["signals"]["industry"].is_string());

    let silver = client.get_as(&token, "/api/golden-leads?tier=silver&min_probability=0.4&limit=5").await;
    assert_eq!(silver.status, StatusCode::OK);
    let silver = silver.json["leads"].as_array().expect("leads").clone();
    assert!(!silver.is_empty() && silver.len() <= 5);
    assert!(silver.iter().all(|l| l["tier"] == "silver" && l["probability"].as_f64().unwrap_or(0.0) >= 0.4));
    let expected = db
        .id("SELECT count(*) FROM golden_leads WHERE tenant_id = $1 AND tier = 'silver' AND probability >= 0.4", TENANT)
        .await;
    assert_eq!(silver.len() as i64, expected.min(5));

    for bad in ["tier=diamond", "min_probability=2", "limit=0", "limit=abc", "color=red"] {
        let answer = client.get_as(&token, &format!("/api/golden-leads?{bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.json["error"].is_string(), "{bad}: JSON error body");
    }
}

async fn one_lead_has_an_etag_and_answers_304(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let id = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    let path = format!("/api/golden-leads/{id}");
    let lead = client.get_as(&token, &path).await;
    assert_eq!(lead.status, StatusCode::OK);
    assert_eq!(lead.json["id"], id);
    assert_eq!(lead.header("cache-control"), "max-age=60");
    assert_eq!(lead.header("vary"), "Authorization");
    assert_eq!(lead.header("cache-tag"), format!("lead:{id}"));
    let etag = lead.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2);
    let again = client.get_with(&token, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("etag"), etag);
    assert_eq!(again.header("cache-tag"), format!("lead:{id}"));
    let other = client.get_with(&token, &path, &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(client.get_as(&token, "/api/golden-leads/99999").await.status, StatusCode::NOT_FOUND);
    let bad = client.get_as(&token, "/api/golden-leads/abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json["error"].is_string());
}

async fn detection_scores_signals_and_rejects_bad_input(backend: Backend) {
    let Some((db, bearer)) = fixture(backend).await else { return };
    let token = Some(bearer.as_str());
    let client = db.client();
    let hot = client.json(Method::POST, "/api/golden-leads/detect", token, hot_signals()).await;
    assert_eq!(hot.status, StatusCode::OK);
    assert_eq!(hot.header("cache-control"), "no-store");
    assert_eq!(hot.json["tier"], "platinum");
    assert_eq!(hot.json["golden"], true);
    assert!(hot.json["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    let cold = hot_signals()
        .replace("\"demo_requested\": true", "\"demo_requested\": false")
        .replace("\"email_opens\": 40", "\"email_opens\": 0");
    let cold = client.json(Method::POST, "/api/golden-leads/detect", token, &cold).await;
    assert!(cold.json["probability"].as_f64() < hot.json["probability"].as_f64());

    let malformed = client.json(Method::POST, "/api/golden-leads/detect", token, "{\"email_opens\": ").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json["error"].is_string());
    let wrong_type = hot_signals().replace("\"page_views\": 120", "\"page_views\": \"many\"");
    let wrong_type = client.json(Method::POST, "/api/golden-leads/detect", token, &wrong_type).await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    let negative = hot_signals().replace("\"annual_budget\": 250000", "\"annual_budget\": -5");
    let negative = client.json(Method::POST, "/api/golden-leads/detect", token, &negative).await;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);
    let auth = format!("Bearer {bearer}");
    let no_type = client
        .send(
            Method::POST,
            "/api/golden-leads/detect",
            &[("authorization", &auth)],
            hot_signals().as_bytes().to_vec(),
        )
        .await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn predictions_forecast_a_lead(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let id = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    let contact = db.id("SELECT contact_id FROM golden_leads WHERE id = $1", id).await;
    let path = format!("/api/predictions/{id}");
    let prediction = client.get_as(&token, &path).await;
    assert_eq!(prediction.status, StatusCode::OK);
    assert_eq!(prediction.header("cache-control"), "max-age=10");
    assert_eq!(prediction.header("vary"), "Authorization");
    assert_eq!(
        prediction.header("cache-tag"),
        format!("lead:{id} predictions:lead:{id} pricing:contact:{contact}"),
        "tagged with the pricing contact it read"
    );
    let forecast = &prediction.json["forecast"];
    let (p10, p90) = (forecast["interval"]["p10"].as_f64(), forecast["interval"]["p90"].as_f64());
    assert!(p10 <= p90, "{forecast}");
    assert!(forecast["expected_value"].as_f64().is_some_and(|v| v >= 0.0));
    assert!(forecast["insights"].is_array());
    assert_eq!(client.get_as(&token, &path).await.json, prediction.json, "repeatable");
    assert_eq!(client.get_as(&token, "/api/predictions/123456").await.status, StatusCode::NOT_FOUND);
}

async fn pricing_quote_record_and_invalidate(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let c = db.id("SELECT min(id) FROM contacts WHERE tenant_id = $1", TENANT).await;
    let path = format!("/api/pricing/{c}");
    let quote = client.get_as(&token, &path).await;
    assert_eq!(quote.status, StatusCode::OK);
    assert_eq!(quote.header("cache-control"), "max-age=300");
    assert_eq!(quote.header("vary"), "Authorization");
    assert_eq!(quote.header("cache-tag"), format!("pricing:contact:{c}"));
    assert!(quote.json["price"].as_f64().is_some_and(|p| p > 0.0));
    let location = quote.json["location"].as_str().expect("location").to_owned();
    let etag = quote.header("etag").to_owned();
    assert!(!etag.is_empty());
    let elsewhere = client.get_as(&token, &format!("{path}?location=mars-base")).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    assert_eq!(elsewhere.json["location"], "mars-base");

    let put = |body: String| {
        let (client, path, token) = (client.clone(), path.clone(), token.clone());
        async move { client.json(Method::PUT, &path, Some(&token), &body).await }
    };
    let recorded = put(format!(r#"{{"price": 9999.5, "location": "{location}", "converted": true}}"#)).await;
    assert_eq!(recorded.status, StatusCode::CREATED);
    assert_eq!(recorded.header("cache-control"), "no-store");
    assert_eq!(
        recorded.header("cache-group-invalidation"),
        format!("pricing:contact:{c} pricing-analytics:tenant:{TENANT}")
    );
    assert_eq!(recorded.json["recorded_at"], NOW);
    let after = client.get_with(&token, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, StatusCode::OK, "the new point changes the quote");
    assert_ne!(after.header("etag"), etag);

    assert_eq!(put(r#"{"price": -1}"#.into()).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(r#"{"price": "cheap"}"#.into()).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(r#"{"price": 1"#.into()).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        client.json(Method::PUT, "/api/pricing/4242", Some(&token), r#"{"price": 10}"#).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(client.get_as(&token, "/api/pricing/4242").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.get_as(&token, &format!("{path}?location=Bad%20Place")).await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn pricing_analytics_match_the_history(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let from = NOW - 3 * 86_400;
    let answer = client.get_as(&token, &format!("/api/pricing/analytics?from={from}&to={NOW}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("cache-control"), "max-age=300");
    assert_eq!(answer.header("vary"), "Authorization");
    assert_eq!(answer.header("cache-tag"), "pricing-analytics:tenant:2");
    // Whole hours inside the range, as the view buckets them.
    let hour_from = from.div_euclid(3600) * 3600;
    let first_hour = if hour_from < from { hour_from + 3600 } else { hour_from };
    let expected: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pricing_history p JOIN contacts c ON c.id = p.contact_id \
         WHERE c.tenant_id = $1 AND p.recorded_at >= $2 AND p.recorded_at < $3",
    )
    .bind(TENANT)
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
    for bad in [
        format!("from={NOW}&to={from}"),
        "from=0&to=99999999".to_owned(),
        // `to - from` wraps to a small number without checked arithmetic.
        format!("from={}&to={}", i64::MIN, i64::MAX),
        format!("to={}", i64::MIN + 1),
    ] {
        let answer = client.get_as(&token, &format!("/api/pricing/analytics?{bad}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(answer.json["error"].is_string(), "{bad}");
    }
    assert_eq!(
        client.get_as(&token, "/api/pricing/analytics?from=1e99").await.status,
        StatusCode::BAD_REQUEST,
        "not a number at all"
    );
}

async fn tenant_usage_matches_the_rows(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let usage = client.get_as(&token, "/api/tenants/2/usage?days=30").await;
    assert_eq!(usage.status, StatusCode::OK);
    assert_eq!(usage.header("cache-control"), "max-age=60");
    assert_eq!(usage.header("vary"), "Authorization");
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
    assert_eq!(client.get_as(&token, "/api/tenants/99/usage").await.status, StatusCode::FORBIDDEN);
    assert_eq!(client.get_as(&token, "/api/tenants/2/usage?days=0").await.status, StatusCode::BAD_REQUEST);
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
    assert_eq!(found.header("cache-control"), "max-age=60", "retrieval answers are fresh for a minute");
    assert_eq!(found.header("vary"), "Authorization");
    assert_eq!(found.header("cache-tag"), "materials:user:1", "which uploads and deletes invalidate");
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
    let other = db.token_for(2).await;
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
    let again = client
        .send(Method::DELETE, &format!("/api/materials/{id}"), &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.header("cache-group-invalidation"),
        "materials:user:1",
        "a repeated DELETE still names it"
    );
}

/// A one-page PDF whose text is `text`.
fn pdf_with(text: &str) -> Vec<u8> {
    pdf_with_content(text, None)
}

/// A one-page PDF whose text is `text`, with `padding` bytes of spaces after it in the page's
/// content stream, Flate-compressed (a small file that inflates to `padding` bytes).
fn pdf_with_content(text: &str, padding: Option<usize>) -> Vec<u8> {
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
    let mut bytes = content.encode().expect("content");
    let mut stream = match padding {
        Some(padding) => {
            bytes.resize(bytes.len() + padding, b' ');
            let mut stream = Stream::new(dictionary! {}, bytes);
            stream.compress().expect("compress");
            stream
        }
        None => Stream::new(dictionary! {}, bytes),
    };
    stream.allows_compression = padding.is_some();
    let content_id = doc.add_object(stream);
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
        "SELECT CAST(count(*) AS TEXT) || ':' || CAST(sum(id) AS TEXT) || ':' || min(name) || max(name) || CAST(sum(tenant_id) AS TEXT) FROM users",
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
    assert_ne!(token, token_again, "tokens come from a cryptographic RNG, not from the seed");
    let (a, b) = (fingerprint(&first).await, fingerprint(&second).await);
    assert_eq!(a, b);
    assert!(a[2].starts_with("200:"), "{a:?}");
    let tenant = first.id("SELECT tenant_id FROM golden_leads WHERE id = $1", 42).await;
    let (in_first, in_second) = (first.token_of_tenant(tenant).await, second.token_of_tenant(tenant).await);
    let lead = first.client().get_as(&in_first, "/api/golden-leads/42").await;
    assert_eq!(lead.status, StatusCode::OK);
    assert_eq!(lead.json, second.client().get_as(&in_second, "/api/golden-leads/42").await.json);
    let again = accel_origin::seed::seed(&first.db, support::TEST_SIZE, NOW, false).await;
    assert!(matches!(again, Err(accel_origin::seed::SeedError::NotEmpty { tenants: 3 })), "{again:?}");
}

async fn tenants_see_only_their_own_data(backend: Backend) {
    let Some((db, mine)) = fixture(backend).await else { return };
    let client = db.client();
    let other_tenant = 3;
    let lead = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", other_tenant).await;
    let contact = db.id("SELECT min(id) FROM contacts WHERE tenant_id = $1", other_tenant).await;
    for path in [
        format!("/api/golden-leads/{lead}"),
        format!("/api/predictions/{lead}"),
        format!("/api/pricing/{contact}"),
    ] {
        let answer = client.get_as(&mine, &path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.json["error"].is_string(), "{path}");
    }
    let points = db.id("SELECT count(*) FROM pricing_history WHERE contact_id = $1", contact).await;
    let write =
        client.json(Method::PUT, &format!("/api/pricing/{contact}"), Some(&mine), r#"{"price": 1.5}"#).await;
    assert_eq!(write.status, StatusCode::NOT_FOUND);
    assert_eq!(db.id("SELECT count(*) FROM pricing_history WHERE contact_id = $1", contact).await, points);
    let usage = client.get_as(&mine, &format!("/api/tenants/{other_tenant}/usage")).await;
    assert_eq!(usage.status, StatusCode::FORBIDDEN);
    assert_eq!(usage.header("cache-control"), "no-store");
    assert!(usage.json["error"].is_string());

    let list = client.get_as(&mine, "/api/golden-leads?limit=500").await;
    let leads = list.json["leads"].as_array().expect("leads");
    assert!(!leads.is_empty() && leads.iter().all(|l| l["tenant_id"] == TENANT));
    let from = NOW - 30 * 86_400;
    let analytics = format!("/api/pricing/analytics?from={from}&to={NOW}");
    let my_points = client.get_as(&mine, &analytics).await.json["total"]["points"].as_i64().expect("points");

    // The other tenant's token reaches its own data, and only that.
    let theirs = db.token_of_tenant(other_tenant).await;
    assert_eq!(client.get_as(&theirs, &format!("/api/golden-leads/{lead}")).await.status, StatusCode::OK);
    assert_eq!(client.get_as(&theirs, &format!("/api/pricing/{contact}")).await.status, StatusCode::OK);
    assert_eq!(client.get_as(&theirs, "/api/tenants/3/usage").await.status, StatusCode::OK);
    assert_eq!(client.get_as(&theirs, "/api/tenants/2/usage").await.status, StatusCode::FORBIDDEN);
    let their_points =
        client.get_as(&theirs, &analytics).await.json["total"]["points"].as_i64().expect("points");
    let all: i64 = on_db!(&db.db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pricing_history p JOIN contacts c ON c.id = p.contact_id \
         WHERE c.tenant_id IN (2, 3) AND p.recorded_at >= $1 AND p.recorded_at < $2",
    )
    .bind(from)
    .bind(NOW)
    .fetch_one(pool)
    .await)
    .expect("count");
    assert!(my_points > 0 && their_points > 0);
    assert_eq!(my_points + their_points, all, "each tenant's analytics count only its points");
}

/// Every revenue route, with a body where it takes one.
fn revenue_routes() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (Method::GET, "/api/golden-leads", ""),
        (Method::GET, "/api/golden-leads/1", ""),
        (Method::POST, "/api/golden-leads/detect", hot_signals()),
        (Method::GET, "/api/predictions/1", ""),
        (Method::GET, "/api/pricing/1", ""),
        (Method::GET, "/api/pricing/analytics", ""),
        (Method::PUT, "/api/pricing/1", r#"{"price": 10}"#),
        (Method::GET, "/api/tenants/1/usage", ""),
        (Method::POST, "/api/golden-leads/1/score", hot_signals()),
        (Method::GET, "/api/v1/predictive/leads/1", ""),
        (Method::POST, "/api/v1/predictive/detect", hot_signals()),
    ]
}

async fn every_revenue_route_needs_a_live_token(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let revoked = db.token_for(1).await;
    assert!(accel_origin::token::revoke(&db.db, &revoked, NOW).await.expect("revoke"));
    let mut tampered = token.clone();
    let last = if tampered.ends_with('0') { "1" } else { "0" };
    tampered.replace_range(tampered.len() - 1.., last);
    let points = count(&db, "SELECT count(*) FROM pricing_history").await;
    for (method, path, body) in revenue_routes() {
        let credentials = [
            None,
            Some("Bearer".to_owned()),
            Some("Bearer tok_0123456789abcdef".to_owned()),
            Some(format!("Basic {token}")),
            Some(format!("Bearer {revoked}")),
            Some(format!("Bearer {tampered}")),
        ];
        for credential in credentials {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(credential) = &credential {
                headers.push(("authorization", credential));
            }
            let answer = client.send(method.clone(), path, &headers, body.as_bytes().to_vec()).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path} with {credential:?}");
            assert_eq!(answer.header("www-authenticate"), "Bearer");
            assert_eq!(answer.header("cache-control"), "no-store");
            assert!(answer.json["error"].is_string());
        }
    }
    assert_eq!(count(&db, "SELECT count(*) FROM pricing_history").await, points, "no write without a token");
    // Health stays open (the sidecar's health checks carry no token).
    assert_eq!(client.get("/health").await.status, StatusCode::OK);
}

async fn stored_tokens_are_hashes_and_revocable(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let stored: Vec<(String, Vec<u8>, String)> = on_db!(&db.db, pool => sqlx::query_as(
        "SELECT selector, secret_hash, label FROM api_tokens",
    )
    .fetch_all(pool)
    .await)
    .expect("tokens");
    assert_eq!(stored.len(), 1, "the seed issues one token");
    let secret = token.rsplit('_').next().expect("secret part");
    assert_eq!(secret.len(), 64);
    for (selector, hash, label) in &stored {
        assert_eq!(hash.len(), 32, "SHA-256");
        assert_ne!(hash.as_slice(), secret.as_bytes());
        let hash_hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        for column in [selector.as_str(), hash_hex.as_str(), label.as_str()] {
            assert!(!column.contains(secret) && column != token, "the database holds no usable token");
        }
    }
    assert_eq!(client.get_as(&token, "/api/tenants/2/usage").await.status, StatusCode::OK);
    let second = db.token_for(1).await;
    assert_ne!(second, token);
    assert!(accel_origin::token::revoke(&db.db, &token, NOW).await.expect("revoke"));
    assert!(!accel_origin::token::revoke(&db.db, &token, NOW).await.expect("revoke"), "already revoked");
    assert_eq!(client.get_as(&token, "/api/tenants/2/usage").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get_as(&second, "/api/tenants/2/usage").await.status, StatusCode::OK, "others live on");
    assert_eq!(accel_origin::token::revoke_all(&db.db, 1, NOW).await.expect("revoke all"), 1);
    assert_eq!(client.get_as(&second, "/api/tenants/2/usage").await.status, StatusCode::UNAUTHORIZED);
}

async fn token_command_issues_and_revokes(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let client = db.client();
    let run = |args: &'static [&'static str], extra: Option<String>| {
        let url = db.url();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_accel-origin"));
            command.arg("--database-url").arg(url).args(args).env("RUST_LOG", "warn");
            if let Some(extra) = extra {
                command.arg(extra);
            }
            command.output().await.expect("accel-origin runs")
        }
    };
    let issued = run(&["token", "issue", "--user", "3", "--label", "ops laptop"], None).await;
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let token = String::from_utf8(issued.stdout).expect("utf-8").trim().to_owned();
    assert!(token.starts_with("acc_"), "{token}");
    let tenant = db.id("SELECT tenant_id FROM users WHERE id = $1", 3).await;
    let usage = format!("/api/tenants/{tenant}/usage");
    assert_eq!(client.get_as(&token, &usage).await.status, StatusCode::OK);

    let revoked = run(&["token", "revoke", "--token"], Some(token.clone())).await;
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_eq!(client.get_as(&token, &usage).await.status, StatusCode::UNAUTHORIZED);
    let again = run(&["token", "revoke", "--token"], Some(token.clone())).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live token"));
    let nobody = run(&["token", "issue", "--user", "999"], None).await;
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user 999"));
}

async fn repeated_price_writes_make_one_row(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let c = db.id("SELECT min(id) FROM contacts WHERE tenant_id = $1", TENANT).await;
    let path = format!("/api/pricing/{c}");
    let rows = || db.id("SELECT count(*) FROM pricing_history WHERE contact_id = $1", c);
    let before = rows().await;
    let body = r#"{"price": 129.5, "location": "berlin", "converted": true}"#;
    let first = client.json(Method::PUT, &path, Some(&token), body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = client.json(Method::PUT, &path, Some(&token), body).await;
    assert_eq!(again.status, StatusCode::OK, "the repeat finds the first write");
    assert_eq!(again.json, first.json);
    assert_eq!(again.header("cache-group-invalidation"), first.header("cache-group-invalidation"));
    assert_eq!(rows().await, before + 1, "a repeated PUT makes one row");
    let other =
        client.json(Method::PUT, &path, Some(&token), r#"{"price": 130, "location": "berlin"}"#).await;
    assert_eq!(other.status, StatusCode::CREATED, "a different price is a new point");
    assert_eq!(rows().await, before + 2);

    // With an Idempotency-Key: the key decides, and reusing it for another body is refused.
    let auth = format!("Bearer {token}");
    let keyed = |key: &'static str, body: &'static str| {
        let (client, path, auth) = (client.clone(), path.clone(), auth.clone());
        async move {
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ];
            client.send(Method::PUT, &path, &headers, body.as_bytes().to_vec()).await
        }
    };
    assert_eq!(keyed("order-77", r#"{"price": 99}"#).await.status, StatusCode::CREATED);
    assert_eq!(keyed("order-77", r#"{"price": 99}"#).await.status, StatusCode::OK);
    assert_eq!(
        keyed("order-78", r#"{"price": 99}"#).await.status,
        StatusCode::CREATED,
        "another key, another point"
    );
    let reused = keyed("order-77", r#"{"price": 100}"#).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reused.json["error"].as_str().is_some_and(|e| e.contains("Idempotency-Key")));
    assert_eq!(keyed("bad key", r#"{"price": 99}"#).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(rows().await, before + 4);
}

async fn activity_and_lead_writes_name_what_they_invalidate(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let before = client.get_as(&token, "/api/learning/overview?days=1").await;
    assert_eq!(before.header("cache-tag"), "learning:user:1");
    let session = client
        .json(Method::POST, "/api/learning/sessions", Some(&token), r#"{"kind": "quiz", "minutes": 25}"#)
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.json);
    assert_eq!(session.header("cache-group-invalidation"), "learning:user:1");
    assert_eq!(session.json["xp"], 250);
    assert_eq!(session.json["occurred_at"], NOW);
    let after = client.get_as(&token, "/api/learning/overview?days=1").await;
    assert_eq!(after.json["minutes"].as_i64(), before.json["minutes"].as_i64().map(|m| m + 25));
    for bad in [
        r#"{"kind": "nap", "minutes": 5}"#,
        r#"{"kind": "quiz", "minutes": 0}"#,
        r#"{"kind": "quiz", "minutes": 5, "xp": -1}"#,
        r#"{"kind": "quiz", "minutes": 5, "occurred_at": 0}"#,
    ] {
        let answer = client.json(Method::POST, "/api/learning/sessions", Some(&token), bad).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    let id = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    let predictions = || db.id("SELECT count(*) FROM predictions WHERE lead_id = $1", id);
    let stored = predictions().await;
    let rescored = client
        .json(Method::POST, &format!("/api/golden-leads/{id}/score"), Some(&token), hot_signals())
        .await;
    assert_eq!(rescored.status, StatusCode::OK, "{:?}", rescored.json);
    assert_eq!(
        rescored.header("cache-group-invalidation"),
        format!("lead:{id} predictions:lead:{id} leads:tenant:{TENANT}")
    );
    assert_eq!(rescored.json["tier"], "platinum");
    assert_eq!(predictions().await, stored + 1, "the verdict is recorded as a prediction");
    let lead = client.get_as(&token, &format!("/api/golden-leads/{id}")).await;
    assert_eq!(lead.json["tier"], "platinum");
    assert_eq!(lead.json["analyzed_at"], NOW);
    assert_eq!(lead.json["signals"]["email_opens"], 40);
    let theirs = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", 3).await;
    let other = client
        .json(Method::POST, &format!("/api/golden-leads/{theirs}/score"), Some(&token), hot_signals())
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "another tenant's lead");
}

async fn upload(client: &support::Client, token: &str, content_type: &str, body: Vec<u8>) -> support::Answer {
    let auth = format!("Bearer {token}");
    client
        .send(
            Method::POST,
            "/api/materials",
            &[("authorization", &auth), ("content-type", content_type)],
            body,
        )
        .await
}

async fn uploads_are_capped_in_chunks_and_decompression(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let kept = db
        .id("SELECT CAST(COALESCE(sum(chunk_count), 0) AS BIGINT) FROM materials WHERE user_id = $1", 1)
        .await;
    let mut client = db.client();
    let limits = accel_origin::app::Limits {
        chunks_per_upload: 3,
        chunks_per_user: usize::try_from(kept).expect("count") + 4,
    };
    client.app = client.app.clone().with_limits(limits);
    let materials = count(&db, "SELECT count(*) FROM materials").await;
    let sentences = |n: usize| -> Vec<u8> {
        (0..n).map(|i| format!("Sentence {i} of an upload about cells. ")).collect::<String>().into_bytes()
    };
    let too_many = upload(&client, &token, "text/plain", sentences(100)).await;
    assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", too_many.json);
    assert!(too_many.json["error"].as_str().is_some_and(|e| e.contains("chunks")));
    let three = upload(&client, &token, "text/plain", sentences(40)).await;
    assert_eq!(three.status, StatusCode::CREATED, "{:?}", three.json);
    let chunks = three.json["chunk_count"].as_i64().expect("chunks");
    assert!(chunks > 1 && chunks <= 3, "{chunks}");
    // The user now keeps `kept + chunks`; the cap is `kept + 4`.
    let over = upload(&client, &token, "text/plain", sentences(40)).await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", over.json);
    assert!(over.json["error"].as_str().is_some_and(|e| e.contains("at most")));
    assert_eq!(
        upload(&client, &token, "text/plain", sentences(2)).await.status,
        StatusCode::CREATED,
        "room for one"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM materials").await, materials + 2);

    // A 40 MB page that compresses to a few kilobytes.
    let bomb = pdf_with_content("boom", Some(40 * 1024 * 1024));
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let client = db.client();
    let refused = upload(&client, &token, "application/pdf", bomb).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", refused.json);
    assert!(refused.json["error"].is_string());
    assert_eq!(count(&db, "SELECT count(*) FROM materials").await, materials + 2);
}

async fn busy_computations_answer_503(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let mut client = db.client();
    client.app = client.app.clone().with_compute(accel_origin::compute::Compute::new(1, 0));
    let id = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    let path = format!("/api/predictions/{id}");
    let held = client.app.compute.slot().await.expect("the only slot");
    let busy = client.get_as(&token, &path).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.header("retry-after"), "1");
    assert_eq!(busy.header("cache-control"), "no-store");
    assert!(busy.json["error"].is_string());
    drop(held);
    assert_eq!(client.get_as(&token, &path).await.status, StatusCode::OK);
}

async fn an_exhausted_pool_answers_503(backend: Backend) {
    use accel_origin::db::{Db, PoolSize, Waits};
    let Some((db, token)) = fixture(backend).await else { return };
    let waits = Waits {
        acquire: std::time::Duration::from_secs(1),
        sqlite_busy: std::time::Duration::from_millis(20),
    };
    let small = Db::connect_with(&db.url(), PoolSize { max: 1, min: 1 }, waits).await.expect("second pool");
    let app = accel_origin::App::new(small.clone()).with_clock(accel_origin::clock::Clock::Fixed(NOW));
    let client = support::Client { app };
    let usage = "/api/tenants/2/usage";
    assert_eq!(client.get_as(&token, usage).await.status, StatusCode::OK);
    let held: Box<dyn std::any::Any + Send> = match &small {
        Db::Postgres(pool) => Box::new(pool.acquire().await.expect("the only connection")),
        Db::Sqlite(pool) => Box::new(pool.acquire().await.expect("the only connection")),
    };
    let exhausted = client.get_as(&token, usage).await;
    assert_eq!(exhausted.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", exhausted.json);
    assert_eq!(exhausted.header("retry-after"), "1");
    assert!(exhausted.json["error"].is_string());
    drop(held);
    assert_eq!(client.get_as(&token, usage).await.status, StatusCode::OK);

    // SQLite: a writer holding the file's lock past the busy timeout is a 503 too.
    if let Db::Sqlite(pool) = &db.db {
        let mut writer = pool.acquire().await.expect("connection");
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *writer).await.expect("write lock");
        let c = db.id("SELECT min(id) FROM contacts WHERE tenant_id = $1", TENANT).await;
        let locked =
            client.json(Method::PUT, &format!("/api/pricing/{c}"), Some(&token), r#"{"price": 5}"#).await;
        assert_eq!(locked.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", locked.json);
        assert_eq!(locked.header("retry-after"), "1");
        sqlx::query("ROLLBACK").execute(&mut *writer).await.expect("unlock");
    }
    small.close().await;
}

async fn one_instance_refreshes_the_views_per_interval(backend: Backend) {
    use std::time::Duration;
    let Some((db, _)) = fixture(backend).await else { return };
    let accel_origin::Db::Postgres(pool) = &db.db else {
        // SQLite's views are computed on read: nothing to refresh, and nothing unread.
        assert!(!db.db.refresh_views_if_due(Duration::ZERO).await.expect("no-op"));
        let views = count(&db, "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = 'golden_lead_tier_distribution'").await;
        assert_eq!(views, 0, "the unread view is dropped");
        return;
    };
    let refreshes = || db.id("SELECT refreshes FROM analytics_refreshes WHERE id = $1", 1);
    let before = refreshes().await;
    assert!(before >= 1, "the seed refreshed once");
    // Three instances, each with its own pool, ticking at once.
    let mut instances = Vec::new();
    for _ in 0..3 {
        let size = accel_origin::db::PoolSize { max: 1, min: 1 };
        instances.push(accel_origin::Db::connect(&db.url(), size).await.expect("instance pool"));
    }
    let interval = Duration::from_secs(3600);
    let mut refreshed = 0;
    for instance in &instances {
        refreshed += usize::from(instance.refresh_views_if_due(Duration::ZERO).await.expect("refresh"));
    }
    assert_eq!(refreshed, 3, "due every time with a zero interval");
    let mut refreshed = 0;
    for instance in &instances {
        refreshed += usize::from(instance.refresh_views_if_due(interval).await.expect("refresh"));
    }
    assert_eq!(refreshed, 0, "the last refresh, by any instance, is recent");
    assert_eq!(refreshes().await, before + 3);

    // While one session holds the lock (a refresh in progress), the others skip rather than queue.
    let mut refreshing = pool.begin().await.expect("transaction");
    sqlx::query("SELECT pg_advisory_xact_lock(4242001, analytics_refresh_lock_key())")
        .execute(&mut *refreshing)
        .await
        .expect("lock");
    assert!(
        !instances[0].refresh_views_if_due(Duration::ZERO).await.expect("refresh"),
        "skipped while locked"
    );
    refreshing.commit().await.expect("unlock");
    assert!(instances[1].refresh_views_if_due(Duration::ZERO).await.expect("refresh"));

    // The refresh is real: a new point shows in the view only after it.
    let in_view = || async {
        count(&db, "SELECT CAST(COALESCE(sum(points), 0) AS BIGINT) FROM pricing_hourly_performance").await
    };
    let points = in_view().await;
    sqlx::query(
        "INSERT INTO pricing_history (contact_id, location, price, demand, converted, recorded_at) \
         VALUES (1, 'berlin', 10, 1, false, 0)",
    )
    .execute(pool)
    .await
    .expect("insert");
    assert_eq!(in_view().await, points);
    assert!(instances[2].refresh_views_if_due(Duration::ZERO).await.expect("refresh"));
    assert_eq!(in_view().await, points + 1);
    let unread = count(&db, "SELECT count(*) FROM pg_matviews WHERE matviewname = 'golden_lead_tier_distribution' AND schemaname = current_schema()").await;
    assert_eq!(unread, 0, "the unread view is dropped");
    for instance in instances {
        instance.close().await;
    }
}

async fn module_health_paths_and_the_versioned_predictive_api(backend: Backend) {
    let Some((db, token)) = fixture(backend).await else { return };
    let client = db.client();
    let health = client.get("/health").await;
    for path in ["/api/golden-leads/health", "/api/pricing/health", "/api/v1/predictive/health"] {
        let answer = client.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.json, health.json, "{path}");
        assert_eq!(answer.header("cache-control"), "no-store", "{path}");
    }
    let id = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", TENANT).await;
    let old = client.get_as(&token, &format!("/api/predictions/{id}")).await;
    let versioned = client.get_as(&token, &format!("/api/v1/predictive/leads/{id}")).await;
    assert_eq!(versioned.status, StatusCode::OK);
    assert_eq!(versioned.json, old.json);
    assert_eq!(versioned.header("cache-tag"), old.header("cache-tag"));
    let theirs = db.id("SELECT min(id) FROM golden_leads WHERE tenant_id = $1", 3).await;
    assert_eq!(
        client.get_as(&token, &format!("/api/v1/predictive/leads/{theirs}")).await.status,
        StatusCode::NOT_FOUND
    );
    let detected = client.json(Method::POST, "/api/v1/predictive/detect", Some(&token), hot_signals()).await;
    assert_eq!(detected.status, StatusCode::OK);
    assert_eq!(detected.json["tier"], "platinum");
}

async fn performance_functions_report_tables_and_slow_queries(backend: Backend) {
    let Some((db, _)) = fixture(backend).await else { return };
    let accel_origin::Db::Postgres(pool) = &db.db else {
        // Documented as PostgreSQL-only: SQLite has no statistics views.
        let missing = on_db!(&db.db, pool => sqlx::query("SELECT get_table_performance_stats()")
            .execute(pool)
            .await
            .map(|_| ()));
        assert!(missing.is_err());
        return;
    };
    let tables: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT table_name, total_bytes, seq_scans FROM get_table_performance_stats()")
            .fetch_all(pool)
            .await
            .expect("table stats");
    for table in ["golden_leads", "pricing_history", "usage_analytics", "api_tokens"] {
        assert!(tables.iter().any(|(name, bytes, _)| name == table && *bytes > 0), "{table}: {tables:?}");
    }
    let sizes: Vec<i64> = tables.iter().map(|t| t.1).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first");

    // A statement that runs until cancelled shows as slow while it runs.
    let mut sleeper = pool.acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *sleeper).await.expect("pid");
    let sleeping = tokio::spawn(async move {
        let _ = sqlx::query("SELECT pg_sleep(30) AS accel_slow_probe").execute(&mut *sleeper).await;
    });
    let slow = loop {
        let rows: Vec<(String, f64, String)> =
            sqlx::query_as("SELECT query, mean_ms, source FROM get_recent_slow_queries(0, 50)")
                .fetch_all(pool)
                .await
                .expect("slow queries");
        if let Some(row) = rows.into_iter().find(|r| r.0.contains("accel_slow_probe")) {
            break row;
        }
        tokio::task::yield_now().await;
    };
    assert!(slow.1 >= 0.0);
    assert!(["pg_stat_activity", "pg_stat_statements"].contains(&slow.2.as_str()), "{slow:?}");
    let none: Vec<(String,)> = sqlx::query_as("SELECT query FROM get_recent_slow_queries(1e12, 10)")
        .fetch_all(pool)
        .await
        .expect("slow queries");
    assert!(none.is_empty());
    sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(pool).await.expect("cancel");
    sleeping.await.expect("sleeper ends");
    for bad in
        ["SELECT * FROM get_recent_slow_queries(-1, 10)", "SELECT * FROM get_recent_slow_queries(0, 0)"]
    {
        assert!(sqlx::query(bad).execute(pool).await.is_err(), "{bad}");
    }
    // The on-demand refresh runs too.
    sqlx::query("SELECT refresh_performance_views()").execute(pool).await.expect("refresh");
}
