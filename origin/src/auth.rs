//! Who is calling: the bearer token of the learning endpoints, looked up in `users`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::app::App;
use crate::error::ApiError;
use crate::on_db;

/// The caller of a per-user endpoint, authenticated by `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// The user's tenant.
    pub tenant_id: i64,
}

impl User {
    /// The cache tag of everything that depends on this user's learning data.
    pub fn learning_tag(&self) -> String {
        format!("learning:user:{}", self.id)
    }

    /// The cache tag of this user's material list.
    pub fn materials_tag(&self) -> String {
        format!("materials:user:{}", self.id)
    }
}

impl FromRequestParts<App> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let user = app
            .query(
                "users.by_token",
                async {
                    on_db!(&app.db, pool => sqlx::query_as::<_, User>("SELECT id, tenant_id FROM users WHERE api_token = $1")
                        .bind(token)
                        .fetch_optional(pool)
                        .await)
                },
            )
            .await?;
        user.ok_or(ApiError::Unauthorized)
    }
}
