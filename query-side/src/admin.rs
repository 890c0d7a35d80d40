//! Administration of the projection runtime: status, parked events, retry and skip.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use projections::checkpoint::{self, ParkedEvent};
use projections::status::ProjectorStatus;
use projections::{ParkedRetry, RuntimeError};
use serde::{Deserialize, Serialize};

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
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/projections", get(list_projections))
        .route("/api/admin/parked", get(list_parked))
        .route(
            "/api/admin/parked/{projector}/{position}/retry",
            post(retry_parked),
        )
        .route(
            "/api/admin/parked/{projector}/{position}/skip",
            post(skip_parked),
        )
}

/// `{"projections": [...]}`.
#[derive(Debug, Serialize)]
pub struct ProjectionsPage {
    /// Every projector with a checkpoint.
    pub projections: Vec<ProjectorStatus>,
}

/// `{"parked": [...]}`.
#[derive(Debug, Serialize)]
pub struct ParkedPage {
    /// Parked events, by projector and position.
    pub parked: Vec<ParkedEvent>,
}

/// Query of `GET /api/admin/parked`.
#[derive(Debug, Deserialize)]
pub struct ParkedQuery {
    /// Only this projector's parked events.
    pub projector: Option<String>,
}

/// What a retry or skip did.
#[derive(Debug, Serialize, Deserialize)]
pub struct ParkedAction {
    /// `applied`, `still_failing` or `skipped`.
    pub outcome: String,
    /// The error of a retry that failed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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
