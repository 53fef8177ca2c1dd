//! `POST /api/retrieval/query`: the caller's chunks most similar to a question.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::ApiResult;
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached};
use crate::error::ApiError;
use crate::on_db;
use crate::text::embedding;

const ANSWER: Policy = Policy::per_caller("max-age=60");

/// Most chunks one query returns.
pub const MAX_K: u32 = 50;
const DEFAULT_K: u32 = 5;
/// Longest query, in characters.
const MAX_QUERY: usize = 2000;

/// Body of the query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalQuery {
    /// The question.
    query: String,
    /// How many chunks to return (1..=50, default 5).
    k: Option<u32>,
}

#[derive(Debug, sqlx::FromRow)]
struct Vector {
    id: i64,
    embedding: Vec<u8>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Hit {
    chunk_id: i64,
    material_id: i64,
    title: String,
    ordinal: i64,
    content: String,
    #[sqlx(skip)]
    score: f32,
}

#[derive(Serialize)]
struct Answer {
    query: String,
    k: u32,
    searched: usize,
    results: Vec<Hit>,
}

/// Embeds the query, ranks all the caller's chunks by cosine similarity, and returns the top
/// `k` with their text. Two queries: the vectors, then the winners' text. The answer depends
/// only on the body and the caller's materials: it is fresh for a minute, per caller, and
/// tagged `materials:user:{id}`, which uploads and deletes invalidate (a cache keying POST
/// lookups on their body can keep it).
pub async fn query(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    body: Result<Json<RetrievalQuery>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let text = body.query.trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_QUERY {
        return Err(ApiError::unprocessable(format!("query must be 1 to {MAX_QUERY} characters")));
    }
    let k = body.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::unprocessable(format!("k must be between 1 and {MAX_K}")));
    }
    // The newest chunks, at most as many as a user may keep (uploads enforce that cap; this
    // bounds a scan even of rows written before it).
    let scan = i64::try_from(app.limits.chunks_per_user).unwrap_or(i64::MAX);
    let vectors = app
        .query("retrieval.vectors", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Vector>(
                "SELECT id, embedding FROM material_chunks WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(user.id)
            .bind(scan)
            .fetch_all(pool)
            .await)
        })
        .await?;
    let searched = vectors.len();
    let query_text = text.clone();
    let top = app
        .compute
        .run(move || {
            let q = embedding::embed(&query_text);
            let mut scored: Vec<(i64, f32)> = vectors
                .iter()
                .filter_map(|v| embedding::cosine(&q, &v.embedding).map(|s| (v.id, s)))
                .collect();
            let k = (k as usize).min(scored.len());
            if k > 0 {
                scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                scored.truncate(k);
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            } else {
                scored.clear();
            }
            scored
        })
        .await?;
    let mut results = if top.is_empty() {
        Vec::new()
    } else {
        app.query("retrieval.chunks", async {
            on_db!(&app.db, pool => {
                let mut select = QueryBuilder::new(
                    "SELECT c.id AS chunk_id, c.material_id, m.title, c.ordinal, c.content \
                     FROM material_chunks c JOIN materials m ON m.id = c.material_id WHERE c.id IN (",
                );
                let mut ids = select.separated(", ");
                for (id, _) in &top {
                    ids.push_bind(*id);
                }
                select.push(")");
                select.build_query_as::<Hit>().fetch_all(pool).await
            })
        })
        .await?
    };
    for hit in &mut results {
        hit.score = top
            .iter()
            .find(|(id, _)| *id == hit.chunk_id)
            .map_or(0.0, |(_, s)| (s * 10_000.0).round() / 10_000.0);
    }
    results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk_id.cmp(&b.chunk_id)));
    Ok(cached(&headers, ANSWER, &[user.materials_tag()], &Answer { query: text, k, searched, results }))
}
