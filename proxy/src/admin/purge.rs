//! `POST /cache/purge`: the request carries `Authorization: Bearer <cache.purge_token>` (401
//! without a token, 403 with a wrong one, 404 when no token is configured) and a JSON
//! [`PurgeRequest`]; the answer is the [`crate::cache::purge::PurgeCounts`] as JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cache::purge::PurgeRequest;
use crate::proxy::Proxy;

/// `POST /cache/purge`.
pub async fn handle(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = proxy.purge_token.load_full();
    let Some(token) = token.as_deref() else {
        return (StatusCode::NOT_FOUND, "purging is disabled: set cache.purge_token or admin.token\n")
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "bearer token required\n",
            )
                .into_response();
        }
        Some(given) if !constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) => {
            return (StatusCode::FORBIDDEN, "wrong token\n").into_response();
        }
        Some(_) => {}
    }
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid purge request: {e}\n")).into_response(),
    };
    match proxy.cache.purge(&request) {
        Ok(counts) => {
            tracing::info!(?request, purged = counts.purged, "cache purge");
            axum::Json(counts).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// Whether the tokens are equal, in a time that depends on neither: their SHA-256 digests
/// (which hide the lengths) are compared in constant time.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let digest = |token: &[u8]| ring::digest::digest(&ring::digest::SHA256, token);
    digest(a).as_ref().ct_eq(digest(b).as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
