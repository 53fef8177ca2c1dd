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
    /// No or an unknown bearer token on a per-user endpoint.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The named thing does not exist (or belongs to another user).
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
    /// The database failed (an internal error).
    #[error("database error")]
    Database(#[from] sqlx::Error),
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
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
        response
    }
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
