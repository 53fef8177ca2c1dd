//! The origin's one rescue point: every handler error becomes a JSON answer here, with a
//! status chosen per variant (no catch-all arm).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON syntax, bad query string or path parameter).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong, for the client.
        reason: String,
    },
    /// No bearer token, or one that is unknown, revoked or wrong.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The caller is authenticated but the named thing is another tenant's.
    #[error("{what} {id} is not yours")]
    Forbidden {
        /// The kind of thing (`tenant`).
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// The named thing does not exist (or belongs to another tenant or user).
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of thing (`lead`, `contact`, `material`, `tenant`).
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// The request body exceeds the endpoint's limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body's media type is not one the endpoint accepts.
    #[error("unsupported content type {content_type:?}; expected one of {expected}")]
    UnsupportedMediaType {
        /// The content type sent.
        content_type: String,
        /// The accepted types, for the message.
        expected: &'static str,
    },
    /// The body parses but its content is invalid (wrong types, out-of-range values,
    /// unreadable PDF).
    #[error("unprocessable: {reason}")]
    Unprocessable {
        /// What was wrong, for the client.
        reason: String,
    },
    /// The upload would make more chunks than one upload may (413).
    #[error("the upload makes {chunks} chunks, more than {limit}")]
    TooManyChunks {
        /// Chunks the text makes.
        chunks: usize,
        /// The cap.
        limit: usize,
    },
    /// The origin cannot take the work now: its database pool is exhausted, the SQLite file is
    /// locked by a writer, or its CPU-heavy tasks are all busy with a full queue. Answered
    /// `503` with `Retry-After`, so that a sidecar tries another instance.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is exhausted, for the client.
        reason: &'static str,
    },
    /// The database failed (an internal error).
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A computation run off the async workers panicked or was cancelled (an internal error).
    #[error("internal computation failed")]
    Computation(#[source] tokio::task::JoinError),
}

impl ApiError {
    /// A 400 for `reason`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::BadRequest { reason: reason.into() }
    }

    /// A 422 for `reason`.
    pub fn unprocessable(reason: impl Into<String>) -> Self {
        Self::Unprocessable { reason: reason.into() }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyChunks { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Computation(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Database(source) => tracing::error!(error = %source, "database error"),
            Self::Computation(source) => tracing::error!(error = %source, "computation failed"),
            _ => {}
        }
        let body = json!({ "error": self.to_string(), "status": status.as_u16() });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}

/// Seconds a client should wait after a 503: the overloads it reports pass quickly.
const RETRY_AFTER_SECS: &str = "1";

impl From<sqlx::Error> for ApiError {
    /// An exhausted pool and a locked or overloaded database are 503 (try elsewhere, or
    /// again); anything else is an internal error.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut => Self::Unavailable { reason: "no database connection free" },
            sqlx::Error::Database(db) if is_busy(db.as_ref()) => {
                Self::Unavailable { reason: "database busy" }
            }
            _ => Self::Database(error),
        }
    }
}

/// SQLite's `BUSY` and `LOCKED` (in any extended form), PostgreSQL's too many connections,
/// cannot connect now, and lock not available.
fn is_busy(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else { return false };
    if error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes keep the primary code in the low byte.
        return code.parse::<u32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6));
    }
    matches!(code.as_ref(), "53300" | "57P03" | "55P03")
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => Self::unprocessable(rejection.body_text()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::UnsupportedMediaType { content_type: String::new(), expected: "application/json" }
            }
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge { limit: crate::api::JSON_BODY_LIMIT },
            _ => Self::bad_request(rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}
