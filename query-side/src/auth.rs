//! Who may read: for now, the administrator's bearer token (tenant credentials come with ingest).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::AppState;

/// Proof that the request carried the admin bearer token. Handlers that take it are admin-only.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(command_side::auth::parse_bearer)
            .ok_or(ApiError::Unauthorized)?;
        if command_side::auth::constant_time_eq(presented.as_bytes(), state.admin_token.as_bytes())
        {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
