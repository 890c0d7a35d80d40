//! `inventory`: every system's inventory history, folded into `inventory_systems` (its latest
//! full report and counters), `inventory_snapshots` (the reports whose full document is still
//! stored) and `inventory_changes` (the diff timeline, one row per change, kept for ever).
//!
//! Inventory documents are large (~20 KB), so the projector never reads them:
//! [`Projector::reads_payloads`] is `false`, and `load` fetches by position only what the fold
//! needs: each report's `content_hash` and whether its document is still there, and the whole
//! payload of the (small) `InventoryChanged` events. The documents stay in the events; a
//! snapshot row only says where one is.
//!
//! Retention ([`super::retention_job`]) may later prune an old report down to
//! `{"content_hash", "pruned": true}` and delete its snapshot row. The fold treats a pruned
//! report exactly like a full one, except that it writes no snapshot row, so a rebuild from
//! position 0 after pruning gives the rows the live projector has: the pruned report's row was
//! deleted there too, and the latest report of a system (the one `inventory_systems` names) is
//! never pruned.
//!
//! Odd histories never stop the projector: an inventory event on a stream that is not
//! `system-{uuid}` (or `gateway-{uuid}`), or of another tenant than the one the system's first
//! report belongs to, is ignored, and so is an `InventoryUnchanged` before any report. A report
//! without a `content_hash`, or an `InventoryChanged` that does not decode, is a [`FoldError`]
//! and is parked.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SubsecRound, Utc};
use events_schema::{
    ChangeCategory, ChangeOp, ChangeSeverity, DomainEvent, FleetEvent, InventoryChanged,
    InventoryReported, InventoryUnchanged, RecordedEvent,
};
use sqlx::types::{Json, JsonValue};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projector::{FoldError, Projector};

/// Folds inventory reports and their diffs into the inventory read models: what the read API
/// serves as a system's latest inventory, its stored snapshots and its change timeline, and what
/// snapshot retention selects from.
#[derive(Debug, Clone, Copy, Default)]
pub struct InventoryHistory;

/// Name of the projector (its checkpoint key); snapshot retention reads its checkpoint.
pub const INVENTORY_PROJECTOR: &str = "inventory";

/// Every event type the projector folds.
const HANDLED: [&str; 3] = [
    InventoryReported::EVENT_TYPE,
    InventoryUnchanged::EVENT_TYPE,
    InventoryChanged::EVENT_TYPE,
];

/// What one batch reads and changes: the systems its events touch (as loaded, with the batch's
/// changes applied in order), the snapshot and change rows to insert, and what `load` fetched
/// of the events' payloads.
#[derive(Debug, Clone, Default)]
pub struct InventoryChanges {
    /// By system id.
    systems: BTreeMap<Uuid, Slot>,
    /// Snapshot rows to insert.
    snapshots: Vec<SnapshotRow>,
    /// Timeline rows to insert.
    changes: Vec<ChangeRow>,
    /// Position -> what the fold needs of the payload of a batch event, fetched by `load`.
    facts: BTreeMap<i64, Facts>,
}

/// What the fold needs of one inventory event's payload.
#[derive(Debug, Clone, Default, PartialEq)]
struct Facts {
    /// `content_hash` (reports).
    content_hash: Option<String>,
    /// Whether the document is gone (a pruned report, or one without `data`).
    pruned: bool,
    /// The whole payload, of `InventoryChanged` events only.
    payload: Option<JsonValue>,
}

impl Facts {
    /// The facts of a payload the runtime delivered (tests, or a runtime that reads payloads).
    fn of(event: &RecordedEvent) -> Self {
        let payload = &event.payload;
        Self {
            content_hash: payload
                .get("content_hash")
                .and_then(JsonValue::as_str)
                .map(str::to_owned),
            pruned: payload.get("pruned") == Some(&JsonValue::Bool(true))
                || payload.get("data").is_none(),
            payload: (event.event_type == InventoryChanged::EVENT_TYPE).then(|| payload.clone()),
        }
    }
}

/// A system row and whether the batch changed it.
#[derive(Debug, Clone)]
struct Slot {
    row: SystemRow,
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct SystemRow {
    system_id: Uuid,
    tenant_id: Uuid,
    latest_position: i64,
    latest_hash: String,
    latest_reported_at: DateTime<Utc>,
    last_reported_at: DateTime<Utc>,
    reports: i64,
    changes: i64,
    updated_position: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct SnapshotRow {
    system_id: Uuid,
    position: i64,
    tenant_id: Uuid,
    content_hash: String,
    reported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
struct ChangeRow {
    position: i64,
    idx: i32,
    tenant_id: Uuid,
    system_id: Uuid,
    changed_at: DateTime<Utc>,
    path: String,
    op: &'static str,
    previous: Option<JsonValue>,
    current: Option<JsonValue>,
    category: &'static str,
    severity: &'static str,
    severity_rank: i16,
}

const SYSTEM_COLUMNS: &str = "system_id, tenant_id, latest_position, latest_hash, \
     latest_reported_at, last_reported_at, reports, changes, updated_position";

/// A time as PostgreSQL stores it (microseconds), so a time folded in this batch compares the
/// same as one loaded from the table.
fn stored(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

fn refused(event: &RecordedEvent, reason: impl std::fmt::Display) -> FoldError {
    FoldError(format!(
        "{} on {}: {reason}",
        event.event_type, event.stream_id
    ))
}

/// `op` as the table stores it.
pub fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Added => "added",
        ChangeOp::Removed => "removed",
        ChangeOp::Changed => "changed",
    }
}

/// `category` as the table stores it (the catalogue's JSON name).
pub fn category_name(category: ChangeCategory) -> &'static str {
    match category {
        ChangeCategory::Os => "os",
        ChangeCategory::Hardware => "hardware",
        ChangeCategory::Network => "network",
        ChangeCategory::Security => "security",
        ChangeCategory::Features => "features",
        ChangeCategory::Other => "other",
    }
}

/// `severity` as the table stores it, and its `severity_rank` (info 0 .. critical 4), which
/// "at least this severe" filters compare.
pub fn severity_name_and_rank(severity: ChangeSeverity) -> (&'static str, i16) {
    match severity {
        ChangeSeverity::Info => ("info", 0),
        ChangeSeverity::Low => ("low", 1),
        ChangeSeverity::Medium => ("medium", 2),
        ChangeSeverity::High => ("high", 3),
        ChangeSeverity::Critical => ("critical", 4),
    }
}

impl InventoryChanges {
    /// The facts of `event`'s payload: as delivered, or as `load` fetched them.
    fn facts(&self, event: &RecordedEvent) -> Result<Facts, FoldError> {
        if event.payload.is_null() {
            self.facts
                .get(&event.position)
                .cloned()
                .ok_or_else(|| refused(event, "its payload was not loaded"))
        } else {
            Ok(Facts::of(event))
        }
    }

    /// The system the event's stream names, unless the read model has it under another tenant
    /// (`None`: ignore the event).
    fn system_of(&self, event: &RecordedEvent) -> Option<Uuid> {
        let id = event.stream_id.system_id()?;
        match self.systems.get(&id) {
            Some(slot) if slot.row.tenant_id != event.tenant_id.0 => None,
            _ => Some(id),
        }
    }

    fn reported(&mut self, event: &RecordedEvent) -> Result<(), FoldError> {
        let Some(id) = self.system_of(event) else {
            return Ok(());
        };
        let facts = self.facts(event)?;
        let hash = facts
            .content_hash
            .ok_or_else(|| refused(event, "no content_hash"))?;
        let at = stored(event.recorded_at);
        if !facts.pruned {
            self.snapshots.push(SnapshotRow {
                system_id: id,
                position: event.position,
                tenant_id: event.tenant_id.0,
                content_hash: hash.clone(),
                reported_at: at,
            });
        }
        match self.systems.get_mut(&id) {
            Some(slot) => {
                let row = &mut slot.row;
                // A pruned report is never the latest in practice (retention keeps it), but
                // whatever the history, only a later report replaces the latest.
                if event.position > row.latest_position {
                    row.latest_position = event.position;
                    row.latest_hash = hash;
                    row.latest_reported_at = at;
                }
                row.last_reported_at = row.last_reported_at.max(at);
                row.reports += 1;
                row.updated_position = row.updated_position.max(event.position);
                slot.dirty = true;
            }
            None => {
                let row = SystemRow {
                    system_id: id,
                    tenant_id: event.tenant_id.0,
                    latest_position: event.position,
                    latest_hash: hash,
                    latest_reported_at: at,
                    last_reported_at: at,
                    reports: 1,
                    changes: 0,
                    updated_position: event.position,
                };
                self.systems.insert(id, Slot { row, dirty: true });
            }
        }
        Ok(())
    }

    fn unchanged(&mut self, event: &RecordedEvent) {
        let Some(id) = self.system_of(event) else {
            return;
        };
        // Unchanged before any report: nothing to say it is unchanged from.
        let Some(slot) = self.systems.get_mut(&id) else {
            return;
        };
        let row = &mut slot.row;
        // `recorded_at` is when the appending transaction began, so it may lag a little behind
        // the position order: last_reported_at never moves back.
        row.last_reported_at = row.last_reported_at.max(stored(event.recorded_at));
        row.reports += 1;
        row.updated_position = row.updated_position.max(event.position);
        slot.dirty = true;
    }

    fn changed(&mut self, event: &RecordedEvent) -> Result<(), FoldError> {
        let Some(id) = self.system_of(event) else {
            return Ok(());
        };
        let payload = self
            .facts(event)?
            .payload
            .ok_or_else(|| refused(event, "its payload was not loaded"))?;
        let decoded = FleetEvent::decode(&event.event_type, event.schema_version, payload)
            .map_err(|error| refused(event, error))?;
        let FleetEvent::InventoryChanged(e) = decoded else {
            return Err(refused(event, "did not decode as InventoryChanged"));
        };
        let n = e.changes.len() as i64;
        let changed_at = stored(event.occurred_at);
        for (idx, change) in e.changes.into_iter().enumerate() {
            let (severity, severity_rank) = severity_name_and_rank(change.severity);
            self.changes.push(ChangeRow {
                position: event.position,
                idx: i32::try_from(idx).map_err(|_| refused(event, "too many changes"))?,
                tenant_id: event.tenant_id.0,
                system_id: id,
                changed_at,
                path: change.path,
                op: op_name(change.op),
                previous: change.previous,
                current: change.current,
                category: category_name(change.category),
                severity,
                severity_rank,
            });
        }
        if let Some(slot) = self.systems.get_mut(&id) {
            slot.row.changes += n;
            slot.row.updated_position = slot.row.updated_position.max(event.position);
            slot.dirty = true;
        }
        Ok(())
    }
}

impl Projector for InventoryHistory {
    type Changes = InventoryChanges;

    fn name(&self) -> &'static str {
        INVENTORY_PROJECTOR
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "inventory_systems",
            "inventory_snapshots",
            "inventory_changes",
        ]
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&HANDLED)
    }

    fn reads_payloads(&self) -> bool {
        // Reports carry ~20 KB documents; `load` fetches only their hash and whether the
        // document is still there.
        false
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<InventoryChanges, sqlx::Error> {
        let mut changes = InventoryChanges::default();
        let handled = || {
            events
                .iter()
                .filter(|e| HANDLED.contains(&e.event_type.as_str()))
        };
        let missing: Vec<i64> = handled()
            .filter(|e| e.payload.is_null())
            .map(|e| e.position)
            .collect();
        if !missing.is_empty() {
            let rows: Vec<(i64, Option<String>, bool, Option<JsonValue>)> = sqlx::query_as(
                "SELECT position, payload ->> 'content_hash', \
                        coalesce(payload -> 'pruned' = 'true'::jsonb, false) \
                            OR NOT (payload ? 'data'), \
                        CASE WHEN event_type = $2 THEN payload END \
                 FROM events WHERE position = ANY($1)",
            )
            .bind(&missing)
            .bind(InventoryChanged::EVENT_TYPE)
            .fetch_all(&mut *tx)
            .await?;
            for (position, content_hash, pruned, payload) in rows {
                let facts = Facts {
                    content_hash,
                    pruned,
                    payload,
                };
                changes.facts.insert(position, facts);
            }
        }
        let ids: BTreeSet<Uuid> = handled().filter_map(|e| e.stream_id.system_id()).collect();
        if ids.is_empty() {
            return Ok(changes);
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let rows: Vec<SystemRow> = sqlx::query_as(&format!(
            "SELECT {SYSTEM_COLUMNS} FROM inventory_systems WHERE system_id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            changes
                .systems
                .insert(row.system_id, Slot { row, dirty: false });
        }
        Ok(changes)
    }

    fn fold(&self, changes: &mut InventoryChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        match event.event_type.as_str() {
            InventoryReported::EVENT_TYPE => changes.reported(event),
            InventoryUnchanged::EVENT_TYPE => {
                changes.unchanged(event);
                Ok(())
            }
            InventoryChanged::EVENT_TYPE => changes.changed(event),
            _ => Ok(()),
        }
    }

    async fn flush(
        &self,
        tx: &mut PgConnection,
        changes: InventoryChanges,
    ) -> Result<(), sqlx::Error> {
        flush_systems(tx, changes.systems).await?;
        flush_snapshots(tx, changes.snapshots).await?;
        flush_changes(tx, changes.changes).await?;
        Ok(())
    }
}

/// Upserts the batch's changed systems, one whole row per system.
async fn flush_systems(
    tx: &mut PgConnection,
    systems: BTreeMap<Uuid, Slot>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<SystemRow> = systems
        .into_values()
        .filter(|slot| slot.dirty)
        .map(|slot| slot.row)
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut latest_at = Vec::with_capacity(n);
    let mut last_at = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.system_id);
        tenants.push(row.tenant_id);
        positions.push(row.latest_position);
        hashes.push(row.latest_hash);
        latest_at.push(row.latest_reported_at);
        last_at.push(row.last_reported_at);
        reports.push(row.reports);
        counts.push(row.changes);
        updated.push(row.updated_position);
    }
    sqlx::query(&format!(
        "INSERT INTO inventory_systems ({SYSTEM_COLUMNS}) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], \
                              $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::bigint[], \
                              $9::bigint[]) \
         ON CONFLICT (system_id) DO UPDATE SET \
             latest_position = excluded.latest_position, \
             latest_hash = excluded.latest_hash, \
             latest_reported_at = excluded.latest_reported_at, \
             last_reported_at = excluded.last_reported_at, \
             reports = excluded.reports, \
             changes = excluded.changes, \
             updated_position = excluded.updated_position"
    ))
    .bind(&ids)
    .bind(&tenants)
    .bind(&positions)
    .bind(&hashes)
    .bind(&latest_at)
    .bind(&last_at)
    .bind(&reports)
    .bind(&counts)
    .bind(&updated)
    .execute(tx)
    .await?;
    Ok(())
}

/// Inserts the batch's snapshot rows.
async fn flush_snapshots(
    tx: &mut PgConnection,
    snapshots: Vec<SnapshotRow>,
) -> Result<(), sqlx::Error> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let n = snapshots.len();
    let mut ids = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    for row in snapshots {
        ids.push(row.system_id);
        positions.push(row.position);
        tenants.push(row.tenant_id);
        hashes.push(row.content_hash);
        at.push(row.reported_at);
    }
    sqlx::query(
        "INSERT INTO inventory_snapshots (system_id, position, tenant_id, content_hash, \
                                          reported_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], \
                              $5::timestamptz[]) \
         ON CONFLICT (system_id, position) DO NOTHING",
    )
    .bind(&ids)
    .bind(&positions)
    .bind(&tenants)
    .bind(&hashes)
    .bind(&at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Inserts the batch's timeline rows.
async fn flush_changes(tx: &mut PgConnection, changes: Vec<ChangeRow>) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = changes.len();
    let mut positions = Vec::with_capacity(n);
    let mut idxs = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut systems = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut paths = Vec::with_capacity(n);
    let mut ops = Vec::with_capacity(n);
    let mut previous = Vec::with_capacity(n);
    let mut current = Vec::with_capacity(n);
    let mut categories = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    let mut ranks = Vec::with_capacity(n);
    for row in changes {
        positions.push(row.position);
        idxs.push(row.idx);
        tenants.push(row.tenant_id);
        systems.push(row.system_id);
        at.push(row.changed_at);
        paths.push(row.path);
        ops.push(row.op);
        previous.push(row.previous.map(Json));
        current.push(row.current.map(Json));
        categories.push(row.category);
        severities.push(row.severity);
        ranks.push(row.severity_rank);
    }
    sqlx::query(
        "INSERT INTO inventory_changes (position, idx, tenant_id, system_id, changed_at, path, \
                                        op, previous, current, category, severity, \
                                        severity_rank) \
         SELECT * FROM UNNEST($1::bigint[], $2::integer[], $3::uuid[], $4::uuid[], \
                              $5::timestamptz[], $6::text[], $7::text[], $8::jsonb[], \
                              $9::jsonb[], $10::text[], $11::text[], $12::smallint[]) \
         ON CONFLICT (position, idx) DO NOTHING",
    )
    .bind(&positions)
    .bind(&idxs)
    .bind(&tenants)
    .bind(&systems)
    .bind(&at)
    .bind(&paths)
    .bind(&ops)
    .bind(&previous)
    .bind(&current)
    .bind(&categories)
    .bind(&severities)
    .bind(&ranks)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::{EventId, InventoryChange, StreamId, TenantId};
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    /// An event as the runtime delivers it (payload left out), with its facts as `load` fetches
    /// them.
    fn delivered(
        changes: &mut InventoryChanges,
        tenant: TenantId,
        stream: &StreamId,
        event_type: &str,
        payload: JsonValue,
        position: i64,
    ) -> RecordedEvent {
        let event = RecordedEvent {
            position,
            event_id: EventId::new(),
            stream_id: stream.clone(),
            stream_version: position,
            event_type: event_type.into(),
            schema_version: 1,
            tenant_id: tenant,
            payload,
            data: None,
            metadata: Default::default(),
            occurred_at: at(position - 1),
            recorded_at: at(position),
        };
        changes.facts.insert(position, Facts::of(&event));
        RecordedEvent {
            payload: JsonValue::Null,
            ..event
        }
    }

    #[test]
    fn reports_unchanged_and_diffs_fold_into_rows() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let mut changes = InventoryChanges::default();
        let diff = InventoryChanged {
            previous_hash: "a".into(),
            current_hash: "b".into(),
            changes: vec![
                InventoryChange {
                    path: "/os/version".into(),
                    op: ChangeOp::Changed,
                    previous: Some(json!("12")),
                    current: Some(json!("13")),
                    category: ChangeCategory::Os,
                    severity: ChangeSeverity::Medium,
                },
                InventoryChange {
                    path: "/hardware/disks[serial=X]".into(),
                    op: ChangeOp::Removed,
                    previous: Some(json!({"serial": "X"})),
                    current: None,
                    category: ChangeCategory::Hardware,
                    severity: ChangeSeverity::Critical,
                },
            ],
        };
        let events = [
            delivered(
                &mut changes,
                tenant,
                &stream,
                "InventoryReported",
                InventoryReported::payload("a".into(), json!({"os": {"version": "12"}})),
                1,
            ),
            delivered(
                &mut changes,
                tenant,
                &stream,
                "InventoryUnchanged",
                json!({"content_hash": "a"}),
                2,
            ),
            delivered(
                &mut changes,
                tenant,
                &stream,
                "InventoryReported",
                json!({"content_hash": "b", "pruned": true}),
                3,
            ),
            delivered(
                &mut changes,
                tenant,
                &stream,
                "InventoryChanged",
                serde_json::to_value(&diff).unwrap(),
                4,
            ),
        ];
        for event in &events {
            InventoryHistory.fold(&mut changes, event).unwrap();
        }
        let row = &changes.systems[&id].row;
        assert_eq!(
            (row.latest_position, row.latest_hash.as_str()),
            (3, "b"),
            "a pruned report still counts"
        );
        assert_eq!(
            (row.latest_reported_at, row.last_reported_at),
            (at(3), at(3))
        );
        assert_eq!((row.reports, row.changes, row.updated_position), (3, 2, 4));
        assert_eq!(changes.snapshots.len(), 1, "no snapshot of a pruned report");
        assert_eq!(changes.snapshots[0].position, 1);
        let rows: Vec<_> = changes
            .changes
            .iter()
            .map(|c| {
                (
                    c.idx,
                    c.op,
                    c.category,
                    c.severity,
                    c.severity_rank,
                    c.changed_at,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, "changed", "os", "medium", 2, at(3)),
                (1, "removed", "hardware", "critical", 4, at(3)),
            ]
        );
        assert_eq!(changes.changes[1].current, None);
    }

    #[test]
    fn odd_histories_are_ignored_and_garbage_is_refused() {
        let (tenant, other, id) = (TenantId::new(), TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let mut changes = InventoryChanges::default();
        let early = delivered(
            &mut changes,
            tenant,
            &stream,
            "InventoryUnchanged",
            json!({"content_hash": "a"}),
            1,
        );
        InventoryHistory.fold(&mut changes, &early).unwrap();
        assert!(changes.systems.is_empty());
        let report = delivered(
            &mut changes,
            tenant,
            &stream,
            "InventoryReported",
            InventoryReported::payload("a".into(), json!({})),
            2,
        );
        InventoryHistory.fold(&mut changes, &report).unwrap();
        let foreign = delivered(
            &mut changes,
            other,
            &stream,
            "InventoryReported",
            InventoryReported::payload("b".into(), json!({})),
            3,
        );
        InventoryHistory.fold(&mut changes, &foreign).unwrap();
        assert_eq!(changes.systems[&id].row.reports, 1);
        assert_eq!(changes.snapshots.len(), 1);
        let hashless = delivered(
            &mut changes,
            tenant,
            &stream,
            "InventoryReported",
            json!({"data": {}}),
            4,
        );
        assert!(InventoryHistory.fold(&mut changes, &hashless).is_err());
        let garbled = delivered(
            &mut changes,
            tenant,
            &stream,
            "InventoryChanged",
            json!({"changes": "nope"}),
            5,
        );
        assert!(InventoryHistory.fold(&mut changes, &garbled).is_err());
        let mut unloaded = report.clone();
        unloaded.position = 6;
        assert!(InventoryHistory.fold(&mut changes, &unloaded).is_err());
    }
}
