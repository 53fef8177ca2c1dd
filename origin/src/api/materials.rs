//! A user's study materials: list, upload (text, Markdown or PDF → chunks with embeddings, in
//! one transaction) and delete.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::ApiResult;
use crate::app::App;
use crate::auth::User;
use crate::caching::{Policy, cached, invalidating, with_invalidation};
use crate::error::ApiError;
use crate::on_db;
use crate::text::extract::{self, Format};
use crate::text::{chunk, embedding};

const LIST: Policy = Policy::per_caller("max-age=30");
/// Longest title, in characters.
const MAX_TITLE: usize = 200;
/// Chunk rows per INSERT statement (5 parameters each, well under SQLite's limit).
const CHUNK_ROWS_PER_INSERT: usize = 500;

/// A stored material.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Material {
    /// Its id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// `text/plain`, `text/markdown` or `application/pdf`.
    pub content_type: String,
    /// Size of the upload, in bytes.
    pub size_bytes: i64,
    /// Chunks stored for retrieval.
    pub chunk_count: i64,
    /// When it was uploaded, unix seconds.
    pub created_at: i64,
}

#[derive(Serialize)]
struct MaterialList {
    materials: Vec<Material>,
}

/// `GET /api/materials`: the caller's materials, newest first.
pub async fn list(State(app): State<App>, headers: HeaderMap, user: User) -> ApiResult {
    let materials = app
        .query("materials.list", async {
            on_db!(&app.db, pool => sqlx::query_as::<_, Material>(
                "SELECT id, title, content_type, size_bytes, chunk_count, created_at FROM materials \
                 WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
            )
            .bind(user.id)
            .fetch_all(pool)
            .await)
        })
        .await?;
    Ok(cached(&headers, LIST, &[user.materials_tag()], &MaterialList { materials }))
}

/// Query of the upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    title: Option<String>,
}

/// `POST /api/materials?title=`: the body is the material itself, its `Content-Type` one of
/// `text/plain`, `text/markdown`, `application/pdf`. The text is extracted, chunked and
/// embedded, then the material and all its chunks are written in one transaction: a failure
/// leaves nothing behind.
pub async fn upload(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> ApiResult {
    let Query(query) = query?;
    let title = query
        .title
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "untitled".to_owned());
    if title.chars().count() > MAX_TITLE {
        return Err(ApiError::bad_request(format!("title longer than {MAX_TITLE} characters")));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = Format::from_content_type(content_type).ok_or_else(|| ApiError::UnsupportedMediaType {
        content_type: content_type.to_owned(),
        expected: extract::ACCEPTED,
    })?;
    let limit = app.upload_limit;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request("cannot read the request body")
        }
    })?;
    let size_bytes = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let per_upload = app.limits.chunks_per_upload;
    let (chunks, embeddings) = app
        .compute
        .run(move || -> Result<_, ApiError> {
            let text = extract::extract(format, &bytes).map_err(|e| {
                if e.is_too_large() {
                    ApiError::PayloadTooLarge { limit: extract::MAX_DECOMPRESSED }
                } else {
                    ApiError::unprocessable(e.to_string())
                }
            })?;
            let chunks = chunk::chunks(&text);
            // Before embedding, the costly part.
            if chunks.len() > per_upload {
                return Err(ApiError::TooManyChunks { chunks: chunks.len(), limit: per_upload });
            }
            let embeddings: Vec<Vec<u8>> =
                embedding::embed_all(&chunks).iter().map(embedding::to_bytes).collect();
            Ok((chunks, embeddings))
        })
        .await??;
    let created_at = app.clock.now();
    let chunk_count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
    let per_user = i64::try_from(app.limits.chunks_per_user).unwrap_or(i64::MAX);
    let id = app
        .query("materials.insert", async {
            on_db!(&app.db, pool => {
                let mut tx = pool.begin().await?;
                let kept: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(sum(chunk_count), 0) AS BIGINT) FROM materials WHERE user_id = $1",
                )
                .bind(user.id)
                .fetch_one(&mut *tx)
                .await?;
                if kept.saturating_add(chunk_count) > per_user {
                    return Ok(Err(kept));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO materials (user_id, title, content_type, size_bytes, chunk_count, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(user.id)
                .bind(&title)
                .bind(format.as_str())
                .bind(size_bytes)
                .bind(chunk_count)
                .bind(created_at)
                .fetch_one(&mut *tx)
                .await?;
                let rows: Vec<(usize, (&String, &Vec<u8>))> = chunks.iter().zip(&embeddings).enumerate().collect();
                for batch in rows.chunks(CHUNK_ROWS_PER_INSERT) {
                    let mut insert = QueryBuilder::new("INSERT INTO material_chunks (material_id, user_id, ordinal, content, embedding) ");
                    insert.push_values(batch, |mut row, (ordinal, (content, embedding))| {
                        row.push_bind(id)
                            .push_bind(user.id)
                            .push_bind(i64::try_from(*ordinal).unwrap_or(i64::MAX))
                            .push_bind(content.as_str())
                            .push_bind(embedding.as_slice());
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<Result<i64, i64>, sqlx::Error>(Ok(id))
            })
        })
        .await?
        .map_err(|kept| {
            ApiError::unprocessable(format!(
                "a user keeps at most {per_user} chunks; {kept} kept, this upload makes {chunk_count}: delete some first"
            ))
        })?;
    let material =
        Material { id, title, content_type: format.as_str().to_owned(), size_bytes, chunk_count, created_at };
    Ok(invalidating(StatusCode::CREATED, &[user.materials_tag()], &material))
}

/// `DELETE /api/materials/{id}`: deletes the caller's material and its chunks (404 for another
/// user's material, or one already deleted; either names the caller's materials tag).
pub async fn delete(State(app): State<App>, user: User, id: Result<Path<i64>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    let deleted = app
        .query("materials.delete", async {
            on_db!(&app.db, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query("DELETE FROM material_chunks WHERE material_id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user.id)
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM materials WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok::<u64, sqlx::Error>(deleted)
            })
        })
        .await?;
    let invalidates = [user.materials_tag()];
    if deleted == 0 {
        // A repeated DELETE (its first answer lost) still names what the first one made stale,
        // so a cache that missed that answer purges now.
        let gone = ApiError::NotFound { what: "material", id }.into_response();
        return Ok(with_invalidation(gone, &invalidates));
    }
    Ok(invalidating(StatusCode::OK, &invalidates, &serde_json::json!({ "deleted": id })))
}
