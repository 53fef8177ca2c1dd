//! Who is calling: `Authorization: Bearer <token>` on every revenue and learning endpoint,
//! checked against the hashed tokens of [`crate::token`]. A caller sees and changes only its
//! tenant's revenue data and its own learning data.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::app::App;
use crate::error::ApiError;
use crate::token;

/// The caller, authenticated by `Authorization: Bearer <token>` (401 without a live token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// The user's tenant: the only tenant whose revenue data the caller reaches.
    pub tenant_id: i64,
}

impl User {
    /// The cache tag of everything that depends on this user's learning data.
    pub fn learning_tag(&self) -> String {
        format!("learning:user:{}", self.id)
    }

    /// The cache tag of this user's materials (the list and retrieval answers).
    pub fn materials_tag(&self) -> String {
        format!("materials:user:{}", self.id)
    }

    /// The cache tag of this tenant's lead list.
    pub fn leads_tag(&self) -> String {
        format!("leads:tenant:{}", self.tenant_id)
    }

    /// The cache tag of this tenant's pricing analytics.
    pub fn pricing_analytics_tag(&self) -> String {
        format!("pricing-analytics:tenant:{}", self.tenant_id)
    }

    /// 403 unless `tenant_id` is the caller's tenant.
    pub fn check_tenant(&self, tenant_id: i64) -> Result<(), ApiError> {
        if tenant_id == self.tenant_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden { what: "tenant", id: tenant_id })
        }
    }
}

impl FromRequestParts<App> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let user = app.query("users.by_token", token::authenticate(&app.db, token)).await?;
        user.ok_or(ApiError::Unauthorized)
    }
}
