//! The HTTP surface: one module per resource, assembled by [`crate::router`].

pub mod health;
pub mod leads;
pub mod learning;
pub mod materials;
pub mod predictions;
pub mod pricing;
pub mod retrieval;
pub mod usage;

use axum::response::Response;

use crate::error::ApiError;

/// Largest JSON request body, in bytes (axum's default limit, named so errors can cite it).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// What handlers return: an answer, or an error the rescue point turns into one.
pub type ApiResult = Result<Response, ApiError>;
