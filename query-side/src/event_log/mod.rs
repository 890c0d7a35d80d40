//! The event log for analysts: any stream, or the whole log, page by page with cursors, so that
//! history can be exported and replayed elsewhere.

use axum::extract::State;
use axum::Json;
use command_side::event_store::EventStore;
use events_schema::{RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::AppState;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size.
pub const MAX_LIMIT: i64 = 1000;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(list_stream_events))
}

/// Query of `GET /api/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Exclusive position cursor: events after this one (0 = from the start).
    #[serde(default)]
    pub after: i64,
    /// Page size, 1..=1000.
    pub limit: Option<i64>,
    /// Comma-separated event types to keep (all when absent).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

/// A page of the global log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    /// Events in position order.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<RecordedEvent>,
    /// Pass as `after` to get the next page.
    pub next_after: i64,
    /// Whether the page was full (there may be more right now).
    pub has_more: bool,
}

/// Query of `GET /api/streams/{stream}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// Inclusive stream-version cursor (1 = from the start).
    pub from_version: Option<i64>,
    /// Page size, 1..=1000.
    pub limit: Option<i64>,
}

/// A page of one stream.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamPage {
    /// The stream.
    #[schema(value_type = String)]
    pub stream_id: StreamId,
    /// Events in stream order.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<RecordedEvent>,
    /// Pass as `from_version` to get the next page.
    pub next_from_version: i64,
    /// Whether the page was full.
    pub has_more: bool,
}

/// The whole event log in position order, a page at a time (admin).
#[utoipa::path(get, path = "/api/events", tag = "event log", security(("admin" = [])),
    params(LogQuery), responses((status = 200, body = LogPage), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all, fields(after = query.after))]
async fn list_events(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>> {
    let limit = page_limit(query.limit)?;
    if query.after < 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`after` must be 0 or a position",
        ));
    }
    let types = parse_types(query.event_type.as_deref())?;
    let events = state
        .events
        .read_all_of_types(query.after, limit, &types)
        .await?;
    let next_after = events.last().map_or(query.after, |e| e.position);
    Ok(Json(LogPage {
        has_more: events.len() as i64 == limit,
        next_after,
        events,
    }))
}

/// One stream in version order, a page at a time (admin).
#[utoipa::path(get, path = "/api/streams/{stream}/events", tag = "event log", security(("admin" = [])),
    params(("stream" = String, Path, description = "stream id, e.g. system-{uuid}"), StreamQuery),
    responses((status = 200, body = StreamPage), (status = 400), (status = 401), (status = 404)))]
#[tracing::instrument(skip_all, fields(stream.id = %stream))]
async fn list_stream_events(
    _: Admin,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Json<StreamPage>> {
    let stream_id = StreamId::parse(&stream)
        .map_err(|e| ApiError::bad_request("invalid_stream_id", e.to_string()))?;
    let limit = page_limit(query.limit)?;
    let from_version = query.from_version.unwrap_or(1);
    if from_version < 1 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`from_version` starts at 1",
        ));
    }
    let events = state
        .events
        .read_stream(&stream_id, from_version, limit)
        .await?;
    if events.is_empty() && from_version == 1 {
        return Err(ApiError::NotFound(format!(
            "stream {stream_id} has no events"
        )));
    }
    let next_from_version = events.last().map_or(from_version, |e| e.stream_version + 1);
    Ok(Json(StreamPage {
        stream_id,
        has_more: events.len() as i64 == limit,
        next_from_version,
        events,
    }))
}

fn page_limit(limit: Option<i64>) -> Result<i64> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_LIMIT}, not {n}"),
        )),
    }
}

fn parse_types(raw: Option<&str>) -> Result<Vec<String>> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let types: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(unknown) = types
        .iter()
        .find(|t| !events_schema::EVENT_TYPES.iter().any(|(name, _)| name == t))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("unknown event type {unknown:?}"),
        ));
    }
    Ok(types)
}
