//! A tenant's systems as the read side knows them: the registry (key, name, labels, lifecycle,
//! credentials) joined with liveness (unknown, active, inactive, last sign of life), one
//! system's status intervals, and counts for the whole fleet. Every route takes a tenant token
//! and sees only that tenant's rows.
//!
//! The rows are folded by the `registry` and `liveness` projectors (`projections::registry`,
//! `projections::liveness`); these handlers only read them. The registry is caught up before a
//! registration is answered, the liveness projector moments later: until it has folded a
//! registration, the system is listed (and readable) with status `unknown` since its
//! registration.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use events_schema::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as JsonColumn;
use sqlx::{PgExecutor, Row};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::AppState;

/// Default page size of the system list and of a system's intervals.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size of the system list and of a system's intervals.
pub const MAX_LIMIT: i64 = 1000;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_systems))
        .routes(routes!(system_liveness))
        .routes(routes!(fleet_summary))
}

/// Whether a system shows signs of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LivenessStatus {
    /// Registered, never seen.
    Unknown,
    /// Showing signs of life.
    Active,
    /// Declared silent by the liveness monitor.
    Inactive,
}

/// Whether a system is watched at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Watched: silence makes it inactive.
    Active,
    /// Not watched until it is resumed.
    Paused,
    /// Gone for good; its history stays.
    Decommissioned,
}

/// Server or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    /// A server with an agent (heartbeats, inventory).
    System,
    /// An IoT gateway (telemetry).
    Gateway,
}

/// Where a system's effective heartbeat timeout comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutSource {
    /// The system's own override.
    System,
    /// The tenant's policy.
    Tenant,
    /// The server's default (HEARTBEAT_TIMEOUT_MINUTES, 10 unless configured).
    Default,
}

/// One system as the read side shows it: what the registry knows of it and its liveness. The
/// one shape of a system in the system list and in a system's liveness detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemLiveness {
    /// Its id.
    pub system_id: Uuid,
    /// Its key.
    pub system_key: String,
    /// Its name.
    pub name: String,
    /// Server or gateway.
    pub kind: SystemKind,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Watched, paused or decommissioned (the registry's status of the system).
    pub lifecycle: Lifecycle,
    /// 1 at registration, +1 per credential rotation.
    pub credentials_version: i32,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Unknown, active or inactive.
    pub status: LivenessStatus,
    /// When the current status began (the registration while `unknown`).
    pub status_since: DateTime<Utc>,
    /// When Fleetlog recorded its latest sign of life; absent if never.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Registration or latest resume: silence is measured from the later of this and
    /// `last_seen_at`.
    pub watched_since: DateTime<Utc>,
    /// Minutes of silence after which it is declared inactive.
    pub timeout_minutes: i32,
    /// Where `timeout_minutes` comes from.
    pub timeout_source: TimeoutSource,
}

/// Query of `GET /api/systems`: filters and keyset paging of the tenant's systems.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SystemListQuery {
    /// Only systems with this liveness status.
    pub status: Option<LivenessStatus>,
    /// Only systems or only gateways.
    pub kind: Option<SystemKind>,
    /// Only systems with this lifecycle.
    pub lifecycle: Option<Lifecycle>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Same as `cursor` (the list's former paging parameter); give one of them, not both.
    pub after: Option<String>,
}

/// A page of the tenant's systems, by id: the answer of `GET /api/systems`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemPage {
    /// The systems, by id.
    pub systems: Vec<SystemLiveness>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /api/systems/{system_id}/liveness`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IntervalQuery {
    /// How many intervals, newest first, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// A span of time a system spent in one status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LivenessInterval {
    /// Active or inactive.
    pub status: LivenessStatus,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it ended; absent while it lasts.
    pub ended_at: Option<DateTime<Utc>>,
}

/// One system's liveness and its latest intervals.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemLivenessDetail {
    /// Its current liveness.
    pub system: SystemLiveness,
    /// Its status intervals, newest first.
    pub intervals: Vec<LivenessInterval>,
    /// Whether older intervals were left out (raise `limit` to see more).
    pub more_intervals: bool,
}

/// Systems per status (decommissioned systems are not counted here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusCounts {
    /// Registered, never seen.
    pub unknown: i64,
    /// Showing signs of life.
    pub active: i64,
    /// Declared silent.
    pub inactive: i64,
}

/// Systems per lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LifecycleCounts {
    /// Watched.
    pub active: i64,
    /// Paused.
    pub paused: i64,
    /// Decommissioned.
    pub decommissioned: i64,
}

/// Counts of the tenant's fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FleetSummary {
    /// Every system and gateway, decommissioned ones included.
    pub total: i64,
    /// Systems that are not decommissioned, by status (paused ones with their last status).
    pub by_status: StatusCounts,
    /// Every system, by lifecycle.
    pub by_lifecycle: LifecycleCounts,
}

/// The tenant's systems and gateways with their registry data and liveness, filtered and paged
/// by id. Systems the liveness projector has not folded yet are listed as `unknown`.
#[utoipa::path(get, path = "/api/systems", tag = "systems", security(("tenant" = [])),
    params(SystemListQuery),
    responses((status = 200, body = SystemPage), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id))]
async fn list_systems(
    tenant: Tenant,
    State(state): State<AppState>,
    Query(query): Query<SystemListQuery>,
) -> Result<Json<SystemPage>> {
    let limit = page_limit(query.limit)?;
    let cursor = match (query.cursor, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give `cursor` or its alias `after`, not both",
            ))
        }
        (cursor, after) => cursor.or(after),
    };
    let after = cursor.as_deref().map(parse_cursor).transpose()?;
    let filter = Filter {
        status: query.status,
        kind: query.kind,
        lifecycle: query.lifecycle,
        after,
    };
    let mut systems = systems_of_tenant(
        state.events.pool(),
        tenant.tenant_id,
        &filter,
        limit + 1,
        state.default_timeout_minutes,
    )
    .await
    .map_err(internal)?;
    let next_cursor = if systems.len() as i64 > limit {
        systems.truncate(limit as usize);
        systems.last().map(|s| s.system_id.simple().to_string())
    } else {
        None
    };
    Ok(Json(SystemPage {
        systems,
        next_cursor,
    }))
}

/// One of the tenant's systems: its liveness and its latest status intervals.
#[utoipa::path(get, path = "/api/systems/{system_id}/liveness", tag = "liveness",
    security(("tenant" = [])), params(("system_id" = Uuid, Path), IntervalQuery),
    responses((status = 200, body = SystemLivenessDetail), (status = 400), (status = 401),
        (status = 404)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id, system.id = %system_id))]
async fn system_liveness(
    tenant: Tenant,
    State(state): State<AppState>,
    Path(system_id): Path<Uuid>,
    Query(query): Query<IntervalQuery>,
) -> Result<Json<SystemLivenessDetail>> {
    let limit = page_limit(query.limit)?;
    let pool = state.events.pool();
    let system = system_of_tenant(
        pool,
        tenant.tenant_id,
        system_id,
        state.default_timeout_minutes,
    )
    .await
    .map_err(internal)?
    .ok_or_else(|| ApiError::NotFound(format!("no system {system_id} in this tenant")))?;
    let mut intervals = intervals_of(pool, tenant.tenant_id, system_id, limit + 1)
        .await
        .map_err(internal)?;
    let more_intervals = intervals.len() as i64 > limit;
    intervals.truncate(limit as usize);
    Ok(Json(SystemLivenessDetail {
        system,
        intervals,
        more_intervals,
    }))
}

/// How many of the tenant's systems are in each status and lifecycle.
#[utoipa::path(get, path = "/api/fleet/summary", tag = "liveness", security(("tenant" = [])),
    responses((status = 200, body = FleetSummary), (status = 401)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id))]
async fn fleet_summary(
    tenant: Tenant,
    State(state): State<AppState>,
) -> Result<Json<FleetSummary>> {
    Ok(Json(
        summary_of(state.events.pool(), tenant.tenant_id)
            .await
            .map_err(internal)?,
    ))
}

fn internal(error: sqlx::Error) -> ApiError {
    ApiError::Internal(Box::new(error))
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

/// Reads a cursor this API handed out (the last system id of a page).
fn parse_cursor(cursor: &str) -> Result<Uuid> {
    Uuid::try_parse(cursor)
        .map_err(|_| ApiError::bad_request("invalid_query", "`cursor` is not one this API gave"))
}

/// Which systems a listing keeps.
#[derive(Debug)]
struct Filter {
    status: Option<LivenessStatus>,
    kind: Option<SystemKind>,
    lifecycle: Option<Lifecycle>,
    after: Option<Uuid>,
}

/// The columns of a listed system: its registry row, its liveness row if the projector has
/// folded it (`unknown` since its registration if not), and the tenant's timeout policy.
macro_rules! system_columns {
    () => {
        "r.system_id, r.system_key, r.name, r.kind, r.labels, \
         r.status AS lifecycle, r.credentials_version, r.registered_at, \
         COALESCE(l.status, 'unknown') AS status, \
         COALESCE(l.status_since, r.registered_at) AS status_since, l.last_seen_at, \
         COALESCE(l.watched_since, r.registered_at) AS watched_since, \
         l.timeout_minutes AS system_timeout, p.timeout_minutes AS tenant_timeout"
    };
}

/// The tenant's systems: every registered one (driven by the registry, so systems the liveness
/// projector has not folded yet are there too).
const SELECT_SYSTEMS: &str = concat!(
    "SELECT ",
    system_columns!(),
    " FROM registry_systems r \
     LEFT JOIN liveness_systems l ON l.system_id = r.system_id AND l.tenant_id = r.tenant_id \
     LEFT JOIN liveness_tenant_policies p ON p.tenant_id = r.tenant_id \
     WHERE r.tenant_id = $1 \
       AND ($2::text IS NULL OR COALESCE(l.status, 'unknown') = $2) \
       AND ($3::text IS NULL OR r.kind = $3) \
       AND ($4::text IS NULL OR r.status = $4)"
);

/// The systems with one liveness status, found through the read model's (tenant, status, id)
/// index.
const SELECT_SYSTEMS_BY_STATUS: &str = concat!(
    "SELECT ",
    system_columns!(),
    " FROM liveness_systems l \
     JOIN registry_systems r ON r.system_id = l.system_id AND r.tenant_id = l.tenant_id \
     LEFT JOIN liveness_tenant_policies p ON p.tenant_id = l.tenant_id \
     WHERE l.tenant_id = $1 AND l.status = $2 \
       AND ($3::text IS NULL OR r.kind = $3) \
       AND ($4::text IS NULL OR r.status = $4)"
);

/// Up to `limit` of the tenant's systems that pass `filter`, by id. A status filter leaves out
/// decommissioned systems unless the lifecycle filter asks for them (a retired machine is
/// neither up nor down). `active` and `inactive` are found through the liveness read model's
/// (tenant, status, id) index rather than by walking every system of the tenant.
async fn systems_of_tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    filter: &Filter,
    limit: i64,
    default_timeout_minutes: i32,
) -> Result<Vec<SystemLiveness>, sqlx::Error> {
    let retired_too = matches!(filter.lifecycle, Some(Lifecycle::Decommissioned));
    let not_retired = if filter.status.is_some() && !retired_too {
        " AND r.status <> 'decommissioned'"
    } else {
        ""
    };
    let sql = match filter.status {
        Some(LivenessStatus::Active | LivenessStatus::Inactive) => format!(
            "{SELECT_SYSTEMS_BY_STATUS}{not_retired} AND ($5::uuid IS NULL OR l.system_id > $5) \
             ORDER BY l.system_id LIMIT $6"
        ),
        _ => format!(
            "{SELECT_SYSTEMS}{not_retired} AND ($5::uuid IS NULL OR r.system_id > $5) \
             ORDER BY r.system_id LIMIT $6"
        ),
    };
    sqlx::query(&sql)
        .bind(tenant.0)
        .bind(filter.status.map(status_str))
        .bind(filter.kind.map(kind_str))
        .bind(filter.lifecycle.map(lifecycle_str))
        .bind(filter.after)
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(|row| system_from_row(row, default_timeout_minutes))
        .collect()
}

/// The system, if it is the tenant's.
async fn system_of_tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    system_id: Uuid,
    default_timeout_minutes: i32,
) -> Result<Option<SystemLiveness>, sqlx::Error> {
    let sql = format!("{SELECT_SYSTEMS} AND r.system_id = $5");
    let any: Option<&str> = None;
    sqlx::query(&sql)
        .bind(tenant.0)
        .bind(any)
        .bind(any)
        .bind(any)
        .bind(system_id)
        .fetch_optional(db)
        .await?
        .map(|row| system_from_row(&row, default_timeout_minutes))
        .transpose()
}

/// The system's latest `limit` intervals, newest first.
async fn intervals_of(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    system_id: Uuid,
    limit: i64,
) -> Result<Vec<LivenessInterval>, sqlx::Error> {
    sqlx::query(
        "SELECT status, started_at, ended_at FROM liveness_intervals \
         WHERE system_id = $1 AND tenant_id = $2 ORDER BY started_at DESC LIMIT $3",
    )
    .bind(system_id)
    .bind(tenant.0)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|row| {
        Ok(LivenessInterval {
            status: parse_status(row.try_get("status")?)?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
        })
    })
    .collect()
}

/// Counts of the tenant's systems per status and lifecycle.
async fn summary_of(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<FleetSummary, sqlx::Error> {
    // Driven by the registry like the list: a system not folded yet counts as unknown.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT r.status, COALESCE(l.status, 'unknown'), count(*) FROM registry_systems r \
         LEFT JOIN liveness_systems l ON l.system_id = r.system_id AND l.tenant_id = r.tenant_id \
         WHERE r.tenant_id = $1 GROUP BY 1, 2",
    )
    .bind(tenant.0)
    .fetch_all(db)
    .await?;
    let mut summary = FleetSummary::default();
    for (lifecycle, status, count) in rows {
        summary.total += count;
        let lifecycle = parse_lifecycle(&lifecycle)?;
        match lifecycle {
            Lifecycle::Active => summary.by_lifecycle.active += count,
            Lifecycle::Paused => summary.by_lifecycle.paused += count,
            Lifecycle::Decommissioned => {
                summary.by_lifecycle.decommissioned += count;
                continue;
            }
        }
        match parse_status(&status)? {
            LivenessStatus::Unknown => summary.by_status.unknown += count,
            LivenessStatus::Active => summary.by_status.active += count,
            LivenessStatus::Inactive => summary.by_status.inactive += count,
        }
    }
    Ok(summary)
}

/// A row of [`SELECT_SYSTEMS`]; `default_timeout_minutes` is the server's configured default.
fn system_from_row(
    row: &sqlx::postgres::PgRow,
    default_timeout_minutes: i32,
) -> Result<SystemLiveness, sqlx::Error> {
    let system_timeout: Option<i32> = row.try_get("system_timeout")?;
    let tenant_timeout: Option<i32> = row.try_get("tenant_timeout")?;
    let (timeout_minutes, timeout_source) = match (system_timeout, tenant_timeout) {
        (Some(minutes), _) => (minutes, TimeoutSource::System),
        (None, Some(minutes)) => (minutes, TimeoutSource::Tenant),
        (None, None) => (default_timeout_minutes, TimeoutSource::Default),
    };
    let kind: &str = row.try_get("kind")?;
    let JsonColumn(labels) = row.try_get("labels")?;
    Ok(SystemLiveness {
        system_id: row.try_get("system_id")?,
        system_key: row.try_get("system_key")?,
        name: row.try_get("name")?,
        kind: if kind == "gateway" {
            SystemKind::Gateway
        } else {
            SystemKind::System
        },
        labels,
        lifecycle: parse_lifecycle(row.try_get("lifecycle")?)?,
        credentials_version: row.try_get("credentials_version")?,
        registered_at: row.try_get("registered_at")?,
        status: parse_status(row.try_get("status")?)?,
        status_since: row.try_get("status_since")?,
        last_seen_at: row.try_get("last_seen_at")?,
        watched_since: row.try_get("watched_since")?,
        timeout_minutes,
        timeout_source,
    })
}

fn undecodable(what: &str, raw: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {raw:?}").into())
}

fn parse_status(raw: &str) -> Result<LivenessStatus, sqlx::Error> {
    match raw {
        "unknown" => Ok(LivenessStatus::Unknown),
        "active" => Ok(LivenessStatus::Active),
        "inactive" => Ok(LivenessStatus::Inactive),
        other => Err(undecodable("liveness status", other)),
    }
}

fn parse_lifecycle(raw: &str) -> Result<Lifecycle, sqlx::Error> {
    match raw {
        "active" => Ok(Lifecycle::Active),
        "paused" => Ok(Lifecycle::Paused),
        "decommissioned" => Ok(Lifecycle::Decommissioned),
        other => Err(undecodable("lifecycle", other)),
    }
}

fn status_str(status: LivenessStatus) -> &'static str {
    match status {
        LivenessStatus::Unknown => "unknown",
        LivenessStatus::Active => "active",
        LivenessStatus::Inactive => "inactive",
    }
}

fn lifecycle_str(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::Active => "active",
        Lifecycle::Paused => "paused",
        Lifecycle::Decommissioned => "decommissioned",
    }
}

fn kind_str(kind: SystemKind) -> &'static str {
    match kind {
        SystemKind::System => "system",
        SystemKind::Gateway => "gateway",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_outside_what_the_api_gives_are_refused() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        for bad in [0, -1, MAX_LIMIT + 1] {
            assert!(page_limit(Some(bad)).is_err(), "{bad}");
        }
        let id = Uuid::now_v7();
        assert_eq!(parse_cursor(&id.simple().to_string()).unwrap(), id);
        assert!(parse_cursor("not-a-cursor").is_err());
    }
}
