//! Inventory history as the read side shows it: a system's latest inventory, its inventory as
//! it was at any time, its diff timeline, and the changes across the tenant's fleet. Every route
//! takes a tenant token and sees only that tenant's systems (another tenant's system is a 404).
//!
//! The rows are folded by the `inventory` projector (`inventory_systems`, `inventory_snapshots`,
//! `inventory_changes`, see `migrations/20261125000005_inventory.sql`); the documents
//! themselves stay in the event store, as the payload of the InventoryReported event a row
//! points at.
//!
//! **As of a time** is the one read that folds events (the exception DESIGN.md allows): the
//! nearest snapshot at or before the time, then the InventoryChanged events of the reports
//! after it in the log, up to the latest report at or before the time (located through the
//! timeline's index, read from the event store; see `inventory_as_of` for the exact rule),
//! applied in position order with
//! `projections::inventory::diff::apply`. Fields the differ ignores (uptime, byte counters,
//! timestamps; see `docs/inventory.md`) never appear in a diff, so they show the snapshot's
//! values, and identity-matched arrays may come in another order than the agent sent.
//!
//! Times are Fleetlog's: a report is placed at its `recorded_at`, not at the agent's clock.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use command_side::inventory_rules::{Category, Op, Severity};
use events_schema::upcast::Upcasters;
use events_schema::{DomainEvent, InventoryChanged, InventoryReported, StreamId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Postgres, QueryBuilder, Row};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::AppState;

/// Default page size of a timeline.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size of a timeline.
pub const MAX_LIMIT: i64 = 1000;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(latest_inventory))
        .routes(routes!(inventory_as_of))
        .routes(routes!(system_timeline))
        .routes(routes!(fleet_changes))
}

/// A system's latest full inventory: the answer of `GET /api/systems/{id}/inventory/latest`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatestInventory {
    /// The system.
    pub system_id: Uuid,
    /// Position of the InventoryReported event that holds the document.
    pub position: i64,
    /// Hex SHA-256 of the document's canonical form.
    pub content_hash: String,
    /// When Fleetlog recorded that report.
    pub reported_at: DateTime<Utc>,
    /// When Fleetlog recorded the system's latest report, changed or not (an unchanged report
    /// keeps the document and moves only this).
    pub last_reported_at: DateTime<Utc>,
    /// The document as the agent sent it.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Query of `GET /api/systems/{id}/inventory`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// The time to show the inventory at (RFC 3339, e.g. `2026-11-25T12:00:00Z`).
    pub at: String,
}

/// The snapshot an as-of answer starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// Position of its InventoryReported event.
    pub position: i64,
    /// When Fleetlog recorded it.
    pub reported_at: DateTime<Utc>,
    /// Hex SHA-256 of its document.
    pub content_hash: String,
}

/// A system's inventory as it was at a time: the answer of `GET /api/systems/{id}/inventory`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InventoryAsOf {
    /// The system.
    pub system_id: Uuid,
    /// The time asked for.
    pub at: DateTime<Utc>,
    /// The nearest stored snapshot at or before `at`.
    pub snapshot: SnapshotInfo,
    /// How many InventoryChanged events were applied on top of the snapshot.
    pub changes_applied: usize,
    /// The document at `at`. Fields the differ ignores (uptime, counters, timestamps) show the
    /// snapshot's values.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// In which order a timeline comes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Newest first (the default).
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

/// Filters and paging of a timeline (`GET /api/systems/{id}/inventory/timeline` and
/// `GET /api/inventory/changes`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangeQuery {
    /// Only changes found at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Only changes found before this time (RFC 3339).
    pub to: Option<String>,
    /// Only changes of this category.
    pub category: Option<Category>,
    /// Only changes of at least this severity.
    pub severity: Option<Severity>,
    /// Only changes at this path or below it, by whole segments (`/os` matches `/os`,
    /// `/os/name` and `/os[0]`, not `/osx`).
    pub path_prefix: Option<String>,
    /// `desc` (newest first, the default) or `asc`. The changes of one diff always come in
    /// document order.
    pub order: Option<Order>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The previous page's `next_cursor` (with the same `order`).
    pub cursor: Option<String>,
}

/// One change of a system's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineChange {
    /// When Fleetlog recorded the report the change was found in.
    pub changed_at: DateTime<Utc>,
    /// Path of the field (see docs/inventory.md).
    pub path: String,
    /// Added, removed or changed.
    pub op: Op,
    /// Value before (null when added).
    pub previous: Option<Value>,
    /// Value after (null when removed).
    pub current: Option<Value>,
    /// Area of the machine.
    pub category: Category,
    /// How much it matters.
    pub severity: Severity,
    /// Position of the InventoryChanged event.
    pub position: i64,
    /// Index of the change in that event.
    pub index: i32,
}

/// A page of a system's diff timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelinePage {
    /// The changes, in the order asked for.
    pub changes: Vec<TimelineChange>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One change in the tenant's fleet, with its system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetChange {
    /// The system it happened on.
    pub system_id: Uuid,
    /// The change.
    #[serde(flatten)]
    pub change: TimelineChange,
}

/// A page of the changes across the tenant's fleet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FleetChangePage {
    /// The changes, in the order asked for.
    pub changes: Vec<FleetChange>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A system's latest full inventory document and when it last reported.
#[utoipa::path(get, path = "/api/systems/{system_id}/inventory/latest", tag = "inventory",
    security(("tenant" = [])), params(("system_id" = Uuid, Path)),
    responses((status = 200, body = LatestInventory), (status = 400), (status = 401),
        (status = 404)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id, system.id = %system_id))]
async fn latest_inventory(
    tenant: Tenant,
    State(state): State<AppState>,
    Path(system_id): Path<Uuid>,
) -> Result<Json<LatestInventory>> {
    let pool = state.events.pool();
    let row = sqlx::query(
        "SELECT s.latest_position, s.latest_hash, s.latest_reported_at, s.last_reported_at, \
                e.payload \
         FROM inventory_systems s JOIN events e ON e.position = s.latest_position \
         WHERE s.system_id = $1 AND s.tenant_id = $2",
    )
    .bind(system_id)
    .bind(tenant.tenant_id.0)
    .fetch_optional(pool)
    .await
    .map_err(internal)?;
    let Some(row) = row else {
        own_system(pool, tenant.tenant_id, system_id).await?;
        return Err(ApiError::NotFound(format!(
            "system {system_id} has not reported an inventory"
        )));
    };
    let position: i64 = row.try_get("latest_position").map_err(internal)?;
    Ok(Json(LatestInventory {
        system_id,
        position,
        content_hash: row.try_get("latest_hash").map_err(internal)?,
        reported_at: row.try_get("latest_reported_at").map_err(internal)?,
        last_reported_at: row.try_get("last_reported_at").map_err(internal)?,
        data: document(position, row.try_get("payload").map_err(internal)?)?,
    }))
}

/// A system's inventory as it was at a time: the nearest snapshot at or before `at` with the
/// diffs recorded after it and up to `at` applied. Fields the differ ignores (uptime,
/// counters, timestamps) show the snapshot's values.
#[utoipa::path(get, path = "/api/systems/{system_id}/inventory", tag = "inventory",
    security(("tenant" = [])), params(("system_id" = Uuid, Path), AsOfQuery),
    responses((status = 200, body = InventoryAsOf), (status = 400), (status = 401),
        (status = 404)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id, system.id = %system_id))]
async fn inventory_as_of(
    tenant: Tenant,
    State(state): State<AppState>,
    Path(system_id): Path<Uuid>,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<InventoryAsOf>> {
    let at = parse_time("at", &query.at)?;
    // One snapshot of the database: retention may prune a snapshot's document (and delete its
    // row) at any moment, and the row and the document must be read as of the same instant.
    let mut tx = state.events.pool().begin().await.map_err(internal)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    own_system(&mut *tx, tenant.tenant_id, system_id).await?;
    let snapshot: Option<(i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT position, content_hash, reported_at FROM inventory_snapshots \
         WHERE system_id = $1 AND tenant_id = $2 AND reported_at <= $3 \
         ORDER BY reported_at DESC, position DESC LIMIT 1",
    )
    .bind(system_id)
    .bind(tenant.tenant_id.0)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await
    .map_err(internal)?;
    let Some((position, content_hash, reported_at)) = snapshot else {
        return Err(ApiError::NotFound(format!(
            "system {system_id} had not reported an inventory by {}",
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )));
    };
    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE position = $1 AND event_type = $2")
            .bind(position)
            .bind(InventoryReported::EVENT_TYPE)
            .fetch_one(&mut *tx)
            .await
            .map_err(internal)?;
    let mut data = document(position, payload)?;
    // Which diffs to apply. A diff (InventoryChanged) belongs to the report that caused it (its
    // `causation_id`; every InventoryChanged is the diff reactor's reaction to one
    // InventoryReported), compares that report with the system's previous full report in the
    // log, and is appended after it, possibly much later (the reactor may lag behind later
    // reports). Its `changed_at` is that report's `recorded_at`. So:
    //
    // * the diffs that lead on from the snapshot are those of reports after it in the log
    //   (report position > snapshot position), in position order; the diff's own position
    //   says nothing here, as the snapshot's own diff and a lagging diff of an earlier report
    //   also come after the snapshot's report;
    // * the report the answer shows (the target) is, like the snapshot, the latest one by
    //   `(recorded_at, position)` at or before `at`: among those diffs, the one with the
    //   greatest `(changed_at, report position)` within `[snapshot.reported_at, at]` (such a
    //   report is later than the snapshot in that order, so it is one whose document
    //   retention pruned); none means the snapshot itself;
    // * the diffs form a chain, so every diff of a report after the snapshot up to the
    //   target's report (by position) is applied, even one whose `changed_at` lies outside
    //   that window (a clock out of step with the log): skipping it would apply the next
    //   diff to a document it was not computed from.
    //
    // The diffs are found through the timeline's index (a system's stream is mostly
    // heartbeats, and `events` has no index by event type within a stream), then read from the
    // event store by position. The timeline and the snapshots are folded by the same projector
    // in the same transactions, so they are consistent with each other.
    let diffs: Vec<(i64, i32, Value)> = sqlx::query_as(
        "WITH later AS ( \
             SELECT c.position, c.changed_at, r.position AS report_position \
             FROM (SELECT DISTINCT position, changed_at FROM inventory_changes \
                   WHERE system_id = $1 AND tenant_id = $2 AND position > $3) c \
             JOIN events d ON d.position = c.position \
                          AND d.stream_id = $6 AND d.event_type = $7 \
             JOIN events r ON r.event_id = (d.metadata ->> 'causation_id')::uuid \
                          AND r.stream_id = $6 \
             WHERE r.position > $3), \
         target AS ( \
             SELECT report_position FROM later \
             WHERE changed_at >= $4 AND changed_at <= $5 \
             ORDER BY changed_at DESC, report_position DESC LIMIT 1) \
         SELECT e.position, e.schema_version, e.payload \
         FROM later JOIN target ON later.report_position <= target.report_position \
         JOIN events e ON e.position = later.position \
         ORDER BY e.position",
    )
    .bind(system_id)
    .bind(tenant.tenant_id.0)
    .bind(position)
    .bind(reported_at)
    .bind(at)
    .bind(StreamId::system(system_id).as_str())
    .bind(InventoryChanged::EVENT_TYPE)
    .fetch_all(&mut *tx)
    .await
    .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    let upcasters = Upcasters::catalogue();
    for (diff_position, version, payload) in &diffs {
        let broken = |reason: String| {
            ApiError::Internal(
                format!("InventoryChanged at position {diff_position}: {reason}").into(),
            )
        };
        let payload = upcasters
            .upcast(
                InventoryChanged::EVENT_TYPE,
                u32::try_from(*version).unwrap_or(0),
                InventoryChanged::SCHEMA_VERSION,
                payload.clone(),
            )
            .map_err(|e| broken(e.to_string()))?;
        let diff: InventoryChanged =
            serde_json::from_value(payload).map_err(|e| broken(e.to_string()))?;
        data = projections::inventory::diff::apply(&data, &diff.changes)
            .map_err(|e| broken(e.to_string()))?;
    }
    Ok(Json(InventoryAsOf {
        system_id,
        at,
        snapshot: SnapshotInfo {
            position,
            reported_at,
            content_hash,
        },
        changes_applied: diffs.len(),
        data,
    }))
}

/// One system's diff timeline: every change found between its consecutive reports, filtered
/// and paged by keyset, newest first unless `order=asc`.
#[utoipa::path(get, path = "/api/systems/{system_id}/inventory/timeline", tag = "inventory",
    security(("tenant" = [])), params(("system_id" = Uuid, Path), ChangeQuery),
    responses((status = 200, body = TimelinePage), (status = 400), (status = 401),
        (status = 404)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id, system.id = %system_id))]
async fn system_timeline(
    tenant: Tenant,
    State(state): State<AppState>,
    Path(system_id): Path<Uuid>,
    Query(query): Query<ChangeQuery>,
) -> Result<Json<TimelinePage>> {
    let filter = ChangeFilter::parse(query)?;
    let pool = state.events.pool();
    own_system(pool, tenant.tenant_id, system_id).await?;
    let (rows, next_cursor) = changes_of(pool, tenant.tenant_id, Some(system_id), &filter).await?;
    Ok(Json(TimelinePage {
        changes: rows.into_iter().map(|(_, change)| change).collect(),
        next_cursor,
    }))
}

/// The changes across the tenant's fleet, with the same filters and paging as a system's
/// timeline, each with its system.
#[utoipa::path(get, path = "/api/inventory/changes", tag = "inventory",
    security(("tenant" = [])), params(ChangeQuery),
    responses((status = 200, body = FleetChangePage), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all, fields(tenant.id = %tenant.tenant_id))]
async fn fleet_changes(
    tenant: Tenant,
    State(state): State<AppState>,
    Query(query): Query<ChangeQuery>,
) -> Result<Json<FleetChangePage>> {
    let filter = ChangeFilter::parse(query)?;
    let (rows, next_cursor) =
        changes_of(state.events.pool(), tenant.tenant_id, None, &filter).await?;
    Ok(Json(FleetChangePage {
        changes: rows
            .into_iter()
            .map(|(system_id, change)| FleetChange { system_id, change })
            .collect(),
        next_cursor,
    }))
}

fn internal(error: sqlx::Error) -> ApiError {
    ApiError::Internal(Box::new(error))
}

/// 404 unless the system is the tenant's (registered by it, whatever its lifecycle).
async fn own_system(db: impl PgExecutor<'_>, tenant: TenantId, system_id: Uuid) -> Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM registry_systems WHERE system_id = $1 AND tenant_id = $2)",
    )
    .bind(system_id)
    .bind(tenant.0)
    .fetch_one(db)
    .await
    .map_err(internal)?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no system {system_id} in this tenant"
        )))
    }
}

/// The document of a stored InventoryReported payload; a pruned one here means a read model
/// points at a document retention removed, which is a bug on our side.
fn document(position: i64, payload: Value) -> Result<Value> {
    let report: InventoryReported = serde_json::from_value(payload)
        .map_err(|e| ApiError::Internal(format!("report at position {position}: {e}").into()))?;
    if report.pruned {
        return Err(ApiError::Internal(
            format!("report at position {position} was pruned but is still referenced").into(),
        ));
    }
    Ok(report.data)
}

/// An RFC 3339 time of a query parameter (400 otherwise). A `+` in the offset that arrived as a
/// space (an unencoded `+` in a query string) is read as `+`.
fn parse_time(name: &str, raw: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .or_else(|e| {
            if raw.contains(' ') {
                DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
            } else {
                Err(e)
            }
        })
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "`{name}` must be an RFC 3339 time (e.g. 2026-11-25T12:00:00Z), not {raw:?}"
                ),
            )
        })
}

/// Where a page starts: after the change `(changed_at, position, index)` in `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    order: Order,
    changed_at_micros: i64,
    position: i64,
    index: i32,
}

impl Cursor {
    /// 21 bytes (order, micros, position, index) as hex: opaque to clients, and no new
    /// dependency for an encoding.
    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(21);
        bytes.push(match self.order {
            Order::Desc => b'd',
            Order::Asc => b'a',
        });
        bytes.extend_from_slice(&self.changed_at_micros.to_be_bytes());
        bytes.extend_from_slice(&self.position.to_be_bytes());
        bytes.extend_from_slice(&self.index.to_be_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(raw: &str) -> Option<Self> {
        if raw.len() != 42 || !raw.is_ascii() {
            return None;
        }
        let bytes: Vec<u8> = (0..21)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<_>>()?;
        let order = match bytes[0] {
            b'd' => Order::Desc,
            b'a' => Order::Asc,
            _ => return None,
        };
        Some(Self {
            order,
            changed_at_micros: i64::from_be_bytes(bytes[1..9].try_into().ok()?),
            position: i64::from_be_bytes(bytes[9..17].try_into().ok()?),
            index: i32::from_be_bytes(bytes[17..21].try_into().ok()?),
        })
    }
}

/// A timeline query, checked.
#[derive(Debug)]
struct ChangeFilter {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    category: Option<Category>,
    min_rank: Option<i16>,
    path_prefix: Option<String>,
    order: Order,
    limit: i64,
    after: Option<(DateTime<Utc>, i64, i32)>,
}

impl ChangeFilter {
    fn parse(query: ChangeQuery) -> Result<Self> {
        let bad = |message: String| ApiError::bad_request("invalid_query", message);
        let from = query
            .from
            .as_deref()
            .map(|t| parse_time("from", t))
            .transpose()?;
        let to = query
            .to
            .as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(bad("`from` must not be after `to`".into()));
            }
        }
        let limit = match query.limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => n,
            n => {
                return Err(bad(format!(
                    "`limit` must be between 1 and {MAX_LIMIT}, not {n}"
                )))
            }
        };
        let path_prefix = match query.path_prefix {
            None => None,
            Some(prefix) if !prefix.starts_with('/') || prefix.len() > 1000 => {
                return Err(bad(format!(
                    "`path_prefix` must be an inventory path starting with `/`, not {prefix:?}"
                )))
            }
            // `/` alone (or a trailing `/`) is the whole document / the same prefix.
            Some(prefix) => Some(prefix.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty()),
        };
        let order = query.order.unwrap_or_default();
        let after = match query.cursor.as_deref() {
            None => None,
            Some(raw) => {
                let cursor = Cursor::decode(raw)
                    .ok_or_else(|| bad("`cursor` is not one this API gave".into()))?;
                if cursor.order != order {
                    return Err(bad(
                        "`cursor` was given for the other `order`; pass the same `order`".into(),
                    ));
                }
                // A time the database cannot hold would fail there (a 500): no cursor this
                // API gave lies outside years 1 to 9999.
                let changed_at = DateTime::from_timestamp_micros(cursor.changed_at_micros)
                    .filter(|t| (1..=9999).contains(&t.year()))
                    .ok_or_else(|| bad("`cursor` is not one this API gave".into()))?;
                Some((changed_at, cursor.position, cursor.index))
            }
        };
        Ok(Self {
            from,
            to,
            category: query.category,
            min_rank: query.severity.map(Severity::rank),
            path_prefix,
            order,
            limit,
            after,
        })
    }
}

/// A page of changes of the tenant (of one system if `system` is set), with the cursor of the
/// next page. Newest first is `(changed_at, position) DESC, idx ASC`, the order of the indexes,
/// so the changes of one diff stay in document order both ways.
async fn changes_of(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    system: Option<Uuid>,
    filter: &ChangeFilter,
) -> Result<(Vec<(Uuid, TimelineChange)>, Option<String>)> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT system_id, changed_at, path, op, previous, current, category, severity, \
                position, idx \
         FROM inventory_changes WHERE tenant_id = ",
    );
    sql.push_bind(tenant.0);
    if let Some(system) = system {
        sql.push(" AND system_id = ").push_bind(system);
    }
    if let Some(from) = filter.from {
        sql.push(" AND changed_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        sql.push(" AND changed_at < ").push_bind(to);
    }
    if let Some(category) = filter.category {
        sql.push(" AND category = ")
            .push_bind(category_str(category));
    }
    if let Some(rank) = filter.min_rank {
        sql.push(" AND severity_rank >= ").push_bind(rank);
    }
    if let Some(prefix) = &filter.path_prefix {
        sql.push(" AND (path = ")
            .push_bind(prefix.clone())
            .push(" OR starts_with(path, ")
            .push_bind(format!("{prefix}/"))
            .push(") OR starts_with(path, ")
            .push_bind(format!("{prefix}["))
            .push("))");
    }
    if let Some((changed_at, position, idx)) = filter.after {
        // After the cursor's change: a later `(changed_at, position)` in the page's order, or
        // a later `idx` of the same diff (always ascending). The OR alone is only a filter, so
        // each page would walk the index from its start to the cursor; the row comparison
        // against the cursor's own `(changed_at, position)` (inclusive, for the rest of its
        // diff) is the bound the index scan starts from.
        let (before, bound) = match filter.order {
            Order::Desc => ("<", "<="),
            Order::Asc => (">", ">="),
        };
        sql.push(format!(" AND (changed_at, position) {bound} ("))
            .push_bind(changed_at)
            .push(", ")
            .push_bind(position)
            .push(")");
        sql.push(format!(" AND ((changed_at, position) {before} ("))
            .push_bind(changed_at)
            .push(", ")
            .push_bind(position)
            .push(") OR (changed_at = ")
            .push_bind(changed_at)
            .push(" AND position = ")
            .push_bind(position)
            .push(" AND idx > ")
            .push_bind(idx)
            .push("))");
    }
    sql.push(match filter.order {
        Order::Desc => " ORDER BY changed_at DESC, position DESC, idx ASC LIMIT ",
        Order::Asc => " ORDER BY changed_at ASC, position ASC, idx ASC LIMIT ",
    });
    sql.push_bind(filter.limit + 1);
    let rows = sql.build().fetch_all(db).await.map_err(internal)?;
    let mut changes = rows
        .iter()
        .map(change_from_row)
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    let next_cursor = if changes.len() as i64 > filter.limit {
        changes.truncate(filter.limit as usize);
        changes.last().map(|(_, last)| {
            Cursor {
                order: filter.order,
                changed_at_micros: last.changed_at.timestamp_micros(),
                position: last.position,
                index: last.index,
            }
            .encode()
        })
    } else {
        None
    };
    Ok((changes, next_cursor))
}

fn change_from_row(row: &PgRow) -> Result<(Uuid, TimelineChange), sqlx::Error> {
    Ok((
        row.try_get("system_id")?,
        TimelineChange {
            changed_at: row.try_get("changed_at")?,
            path: row.try_get("path")?,
            op: parse_text(row.try_get("op")?, "op")?,
            previous: row.try_get("previous")?,
            current: row.try_get("current")?,
            category: parse_text(row.try_get("category")?, "category")?,
            severity: parse_text(row.try_get("severity")?, "severity")?,
            position: row.try_get("position")?,
            index: row.try_get("idx")?,
        },
    ))
}

/// A snake_case text column as one of the wire enums.
fn parse_text<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, sqlx::Error> {
    serde_json::from_value(Value::String(raw.to_owned()))
        .map_err(|_| sqlx::Error::Decode(format!("unknown {what} {raw:?}").into()))
}

fn category_str(category: Category) -> &'static str {
    match category {
        Category::Os => "os",
        Category::Hardware => "hardware",
        Category::Network => "network",
        Category::Security => "security",
        Category::Features => "features",
        Category::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_the_api_did_not_give() {
        let cursor = Cursor {
            order: Order::Asc,
            changed_at_micros: 1_764_000_000_123_456,
            position: 42,
            index: 7,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "zz", &"0".repeat(42), &"ä".repeat(21)] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_outside_years_1_to_9999_are_refused() {
        let with_micros = |micros: i64| ChangeQuery {
            cursor: Some(
                Cursor {
                    order: Order::Desc,
                    changed_at_micros: micros,
                    position: 1,
                    index: 0,
                }
                .encode(),
            ),
            ..ChangeQuery::default()
        };
        // 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z.
        let (first, past_last) = (-62_135_596_800_000_000, 253_402_300_800_000_000);
        for micros in [0, first, past_last - 1] {
            assert!(ChangeFilter::parse(with_micros(micros)).is_ok(), "{micros}");
        }
        for micros in [
            i64::MIN,
            -3_000_000_000_000_000_000,
            first - 1,
            past_last,
            i64::MAX,
        ] {
            assert!(
                ChangeFilter::parse(with_micros(micros)).is_err(),
                "{micros}"
            );
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let parse = |query: ChangeQuery| ChangeFilter::parse(query).map(|_| ());
        assert!(parse(ChangeQuery::default()).is_ok());
        for query in [
            ChangeQuery {
                limit: Some(0),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                limit: Some(MAX_LIMIT + 1),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                from: Some("yesterday".into()),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                from: Some("2026-02-01T00:00:00Z".into()),
                to: Some("2026-01-01T00:00:00Z".into()),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                path_prefix: Some("os".into()),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                cursor: Some("nope".into()),
                ..ChangeQuery::default()
            },
        ] {
            assert!(parse(query).is_err());
        }
        assert_eq!(
            parse_time("at", "2026-11-25T12:00:00 01:00").unwrap(),
            parse_time("at", "2026-11-25T11:00:00Z").unwrap()
        );
    }
}
