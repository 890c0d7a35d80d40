//! Administration of the projection runtime: status, parked events, retry and skip.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::future::BoxFuture;
use projections::checkpoint::{self, ParkedEvent};
use projections::status::ProjectorStatus;
use projections::{ParkedRetry, RuntimeError};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::AppState;

/// The projectors this process knows, by name: what `retry` needs to run one.
pub trait ProjectorRegistry: Send + Sync {
    /// Retries a parked event with the named projector; `None` when no projector has that name.
    fn retry_parked<'a>(
        &'a self,
        projector: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Option<std::result::Result<ParkedRetry, RuntimeError>>>;
}

/// Shared handle to the registry.
pub type Projectors = Arc<dyn ProjectorRegistry>;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projections))
        .routes(routes!(list_parked))
        .routes(routes!(retry_parked))
        .routes(routes!(skip_parked))
}

/// `{"projections": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionsPage {
    /// Every projector with a checkpoint.
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<ProjectorStatus>,
}

/// `{"parked": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedPage {
    /// Parked events, by projector and position.
    #[schema(value_type = Vec<Object>)]
    pub parked: Vec<ParkedEvent>,
}

/// Query of `GET /api/admin/parked`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ParkedQuery {
    /// Only this projector's parked events.
    pub projector: Option<String>,
}

/// What a retry or skip did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParkedAction {
    /// `applied`, `still_failing` or `skipped`.
    pub outcome: String,
    /// The error of a retry that failed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/api/admin/projections", tag = "projections", security(("admin" = [])),
    responses((status = 200, body = ProjectionsPage), (status = 401)))]
#[tracing::instrument(skip_all)]
async fn list_projections(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<ProjectionsPage>> {
    let projections = projections::status::all(state.events.pool())
        .await
        .map_err(internal)?;
    Ok(Json(ProjectionsPage { projections }))
}

#[utoipa::path(get, path = "/api/admin/parked", tag = "projections", security(("admin" = [])),
    params(ParkedQuery), responses((status = 200, body = ParkedPage), (status = 401)))]
#[tracing::instrument(skip_all)]
async fn list_parked(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<ParkedQuery>,
) -> Result<Json<ParkedPage>> {
    let parked = checkpoint::parked(state.events.pool(), query.projector.as_deref())
        .await
        .map_err(internal)?;
    Ok(Json(ParkedPage { parked }))
}

#[utoipa::path(post, path = "/api/admin/parked/{projector}/{position}/retry", tag = "projections", security(("admin" = [])),
    params(("projector" = String, Path), ("position" = i64, Path)),
    responses((status = 200, body = ParkedAction), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all, fields(projector = %projector, position))]
async fn retry_parked(
    _: Admin,
    State(state): State<AppState>,
    Path((projector, position)): Path<(String, i64)>,
) -> Result<Json<ParkedAction>> {
    let outcome = state
        .projectors
        .retry_parked(&projector, position)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no projector named {projector:?}")))?
        .map_err(internal)?;
    match outcome {
        ParkedRetry::Applied => Ok(Json(ParkedAction {
            outcome: "applied".into(),
            error: None,
        })),
        ParkedRetry::StillFailing(error) => Ok(Json(ParkedAction {
            outcome: "still_failing".into(),
            error: Some(error),
        })),
        ParkedRetry::NotParked => Err(not_parked(&projector, position)),
    }
}

#[utoipa::path(post, path = "/api/admin/parked/{projector}/{position}/skip", tag = "projections", security(("admin" = [])),
    params(("projector" = String, Path), ("position" = i64, Path)),
    responses((status = 200, body = ParkedAction), (status = 404)))]
#[tracing::instrument(skip_all, fields(projector = %projector, position))]
async fn skip_parked(
    _: Admin,
    State(state): State<AppState>,
    Path((projector, position)): Path<(String, i64)>,
) -> Result<(StatusCode, Json<ParkedAction>)> {
    if checkpoint::skip(state.events.pool(), &projector, position)
        .await
        .map_err(internal)?
    {
        Ok((
            StatusCode::OK,
            Json(ParkedAction {
                outcome: "skipped".into(),
                error: None,
            }),
        ))
    } else {
        Err(not_parked(&projector, position))
    }
}

fn not_parked(projector: &str, position: i64) -> ApiError {
    ApiError::NotFound(format!(
        "{projector} has no parked event at position {position}"
    ))
}

fn internal(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::Internal(Box::new(error))
}
