//! Who may read: the administrator's bearer token, or a tenant's API token for its own read models.

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

/// A tenant, through one of its API tokens (`Authorization: Bearer flt_...`): every read that
/// takes it is scoped to this tenant's rows. A missing, unknown or revoked token is a 401.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    /// The tenant the token acts for.
    pub tenant_id: events_schema::TenantId,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use command_side::credentials::{token_hash, TOKEN_PREFIX};
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(command_side::auth::parse_bearer)
            .filter(|token| token.starts_with(TOKEN_PREFIX))
            .ok_or(ApiError::Unauthorized)?;
        let record = command_side::registry::token_by_hash(state.events.pool(), &token_hash(token))
            .await
            .map_err(|error| ApiError::Internal(Box::new(error)))?;
        match record {
            Some(record) if record.revoked_at.is_none() => Ok(Tenant {
                tenant_id: record.tenant_id,
            }),
            _ => Err(ApiError::Unauthorized),
        }
    }
}
