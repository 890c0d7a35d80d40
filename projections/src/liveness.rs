//! `liveness`: whether each system and gateway shows signs of life, since when, and the history
//! of its active and inactive intervals, folded into `liveness_systems`, `liveness_intervals` and
//! `liveness_tenant_policies`.
//!
//! The projector folds facts; it never decides anything from the passage of time. A system is
//! `unknown` from its registration until its first sign of life (HeartbeatReceived,
//! TelemetryReceived, InventoryReported or InventoryUnchanged), then `active`. Only the liveness
//! monitor (a reactor, which reads the clock) declares it silent (SystemWentSilent: `inactive`)
//! and back (SystemRecovered: `active`). While a system is inactive a sign of life only moves its
//! `last_seen_at`, and the batch's flush wakes the monitor on [`LIVENESS_CHANNEL`] so it records
//! the recovery without waiting for its next tick. Every time is Fleetlog's clock: the
//! `recorded_at` of a sign of life, or the time the monitor wrote into its event; never the
//! client's `occurred_at`.
//!
//! Heartbeats are the hottest events of the platform, so a batch costs one read of the touched
//! rows and one bulk upsert per table, whatever the number of events: a thousand heartbeats of
//! one system are one row update. The projector reads no payloads with the batch
//! ([`Projector::reads_payloads`] is `false`, which spares reading inventory documents and
//! telemetry bytes); `load` fetches, by position, the payloads of the few rare events whose
//! fields the fold needs (registrations, silences, recoveries, policies). Those events are
//! immutable, so this keeps a rebuild identical to the live read model.
//!
//! Odd histories never stop the projector: an event about a system the read model does not have
//! (a sign of life before its registration, a policy for a system that was never registered or
//! belongs to another tenant) or of another tenant than the system's is ignored. Decommissioned
//! is terminal: later liveness events of the system are ignored. An event of a folded type whose
//! payload does not decode, or a policy whose timeout is 0 or too large, is a [`FoldError`] and is
//! parked.
//!
//! Intervals: the open interval of a system (ended_at NULL) starts at its `status_since`.
//! Transition times never go back before the start of the interval they close (a monitor time
//! earlier than that is taken as the start itself), and an interval that would end where it began
//! (a system that goes silent at the instant it was first seen) is dropped, so
//! `(system_id, started_at)` stays unique. Pausing keeps the open interval; decommissioning closes
//! it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SubsecRound, Utc};
use events_schema::{
    DomainEvent, FleetEvent, HeartbeatReceived, InventoryReported, InventoryUnchanged,
    LivenessPolicySet, RecordedEvent, SystemDecommissioned, SystemPaused, SystemRecovered,
    SystemRegistered, SystemResumed, SystemWentSilent, TelemetryReceived,
};
use sqlx::types::JsonValue;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projector::{FoldError, Projector};

/// `NOTIFY` channel on which the projector announces that a batch folded a sign of life of an
/// inactive system (empty payload, at most once per batch), so the liveness monitor checks for
/// recoveries at once instead of at its next tick.
pub const LIVENESS_CHANNEL: &str = "fleetlog_liveness";

/// Minutes without a sign of life before a system counts as silent, when neither the system nor
/// its tenant has a policy (the `HEARTBEAT_TIMEOUT_MINUTES` default).
pub const DEFAULT_HEARTBEAT_TIMEOUT_MINUTES: i32 = 10;

/// `status` of a system registered but never seen.
pub const UNKNOWN: &str = "unknown";
/// `status` of a system that shows signs of life; also its `lifecycle` while it is watched.
pub const ACTIVE: &str = "active";
/// `status` of a system the monitor declared silent.
pub const INACTIVE: &str = "inactive";
/// `lifecycle` of a paused system (not watched until it is resumed).
pub const PAUSED: &str = "paused";
/// `lifecycle` of a system that left the fleet; terminal.
pub const DECOMMISSIONED: &str = "decommissioned";

/// Folds registrations, signs of life, silences, recoveries, lifecycle changes and liveness
/// policies into the liveness read model that the monitor watches and the read API serves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness;

/// What one batch reads and changes: the systems its events touch as loaded, with the batch's
/// changes applied in order; the interval rows to write or delete; the tenant policies set; the
/// payloads `load` fetched; and whether the monitor must be woken.
#[derive(Debug, Clone, Default)]
pub struct LivenessChanges {
    /// By system id.
    systems: BTreeMap<Uuid, Slot<SystemRow>>,
    /// By (system id, started_at): the interval row to upsert, or `None` to delete it.
    intervals: BTreeMap<(Uuid, DateTime<Utc>), Option<IntervalRow>>,
    /// Tenant id -> timeout minutes.
    tenant_policies: BTreeMap<Uuid, i32>,
    /// Position -> payload, of the batch's events whose fields the fold needs.
    payloads: BTreeMap<i64, JsonValue>,
    /// Whether a sign of life of an inactive system was folded.
    wake_monitor: bool,
}

/// A row and whether the batch changed it.
#[derive(Debug, Clone)]
struct Slot<T> {
    row: T,
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct SystemRow {
    system_id: Uuid,
    tenant_id: Uuid,
    system_key: String,
    name: String,
    kind: String,
    lifecycle: String,
    status: String,
    status_since: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
    last_seen_position: Option<i64>,
    watched_since: DateTime<Utc>,
    silent_last_seen_at: Option<DateTime<Utc>>,
    first_seen_after_silence: Option<DateTime<Utc>>,
    timeout_minutes: Option<i32>,
    updated_position: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct IntervalRow {
    tenant_id: Uuid,
    status: &'static str,
    ended_at: Option<DateTime<Utc>>,
}

const SYSTEM_COLUMNS: &str = "system_id, tenant_id, system_key, name, kind, lifecycle, status, \
     status_since, last_seen_at, last_seen_position, watched_since, silent_last_seen_at, \
     first_seen_after_silence, timeout_minutes, updated_position";

/// The event types that are signs of life.
const SIGNS_OF_LIFE: [&str; 4] = [
    HeartbeatReceived::EVENT_TYPE,
    TelemetryReceived::EVENT_TYPE,
    InventoryReported::EVENT_TYPE,
    InventoryUnchanged::EVENT_TYPE,
];

/// The event types whose payload the fold reads; `load` fetches them.
const WITH_PAYLOAD: [&str; 4] = [
    SystemRegistered::EVENT_TYPE,
    SystemWentSilent::EVENT_TYPE,
    SystemRecovered::EVENT_TYPE,
    LivenessPolicySet::EVENT_TYPE,
];

/// Every event type the projector folds.
const HANDLED: [&str; 11] = [
    SystemRegistered::EVENT_TYPE,
    HeartbeatReceived::EVENT_TYPE,
    TelemetryReceived::EVENT_TYPE,
    InventoryReported::EVENT_TYPE,
    InventoryUnchanged::EVENT_TYPE,
    SystemWentSilent::EVENT_TYPE,
    SystemRecovered::EVENT_TYPE,
    SystemPaused::EVENT_TYPE,
    SystemResumed::EVENT_TYPE,
    SystemDecommissioned::EVENT_TYPE,
    LivenessPolicySet::EVENT_TYPE,
];

/// A time as PostgreSQL stores it (microseconds), so a time folded in this batch compares the
/// same as one loaded from the table: live in many batches and rebuilt in one agree.
fn stored(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

fn refused(event: &RecordedEvent, reason: impl std::fmt::Display) -> FoldError {
    FoldError(format!(
        "{} on {}: {reason}",
        event.event_type, event.stream_id
    ))
}

impl LivenessChanges {
    /// The payload of `event`: as delivered, or as `load` fetched it.
    fn payload<'a>(&'a self, event: &'a RecordedEvent) -> Option<&'a JsonValue> {
        if event.payload.is_null() {
            self.payloads.get(&event.position)
        } else {
            Some(&event.payload)
        }
    }

    fn decode(&self, event: &RecordedEvent) -> Result<FleetEvent, FoldError> {
        let payload = self
            .payload(event)
            .ok_or_else(|| refused(event, "its payload was not loaded"))?
            .clone();
        FleetEvent::decode(&event.event_type, event.schema_version, payload)
            .map_err(|error| refused(event, error))
    }

    /// The row of the system the event's stream names, if the read model has it, it belongs to
    /// the event's tenant and it is not decommissioned.
    fn watched(&mut self, event: &RecordedEvent) -> Option<&mut Slot<SystemRow>> {
        let slot = self.systems.get_mut(&event.stream_id.system_id()?)?;
        (slot.row.tenant_id == event.tenant_id.0 && slot.row.lifecycle != DECOMMISSIONED)
            .then_some(slot)
    }

    fn register(&mut self, event: &RecordedEvent, e: SystemRegistered) {
        let Some(id) = event.stream_id.system_id() else {
            return;
        };
        if e.system_id != id || self.systems.contains_key(&id) {
            return;
        }
        let kind = e.kind.as_str();
        let row = SystemRow {
            system_id: id,
            tenant_id: event.tenant_id.0,
            system_key: e.system_key,
            name: e.name,
            kind: kind.to_owned(),
            lifecycle: ACTIVE.to_owned(),
            status: UNKNOWN.to_owned(),
            status_since: event.recorded_at,
            last_seen_at: None,
            last_seen_position: None,
            watched_since: event.recorded_at,
            silent_last_seen_at: None,
            first_seen_after_silence: None,
            timeout_minutes: None,
            updated_position: event.position,
        };
        self.systems.insert(id, Slot { row, dirty: true });
    }

    fn sign_of_life(&mut self, event: &RecordedEvent) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        let row = &mut slot.row;
        let seen = event.recorded_at;
        // `recorded_at` is when the appending transaction began, so it may lag a little behind
        // the position order: last_seen_at never moves back.
        if row.last_seen_at.is_none_or(|last| seen >= last) {
            row.last_seen_at = Some(seen);
            row.last_seen_position = Some(event.position);
        }
        row.updated_position = event.position;
        slot.dirty = true;
        let (system, tenant) = (row.system_id, row.tenant_id);
        if row.status == UNKNOWN {
            row.status = ACTIVE.to_owned();
            row.status_since = seen;
            self.open(system, tenant, ACTIVE, seen);
        } else if row.status == INACTIVE {
            // The first sign of life after the silence is when the system came back.
            if row.first_seen_after_silence.is_none()
                && row.silent_last_seen_at.is_some_and(|silent| seen > silent)
            {
                row.first_seen_after_silence = Some(seen);
            }
            self.wake_monitor = true;
        }
    }

    fn went_silent(&mut self, event: &RecordedEvent, e: SystemWentSilent) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        let row = &mut slot.row;
        if row.status == INACTIVE {
            return;
        }
        let last_seen = stored(e.last_seen_at);
        let at = last_seen.max(row.status_since);
        let (system, tenant, open) = (row.system_id, row.tenant_id, row.status == ACTIVE);
        let started = row.status_since;
        row.status = INACTIVE.to_owned();
        row.status_since = at;
        row.silent_last_seen_at = Some(last_seen);
        row.updated_position = event.position;
        slot.dirty = true;
        // A sign of life folded after the monitor read the row: the recovery is due at once.
        let seen_since = row.last_seen_at.is_some_and(|seen| seen > last_seen);
        row.first_seen_after_silence = row.last_seen_at.filter(|_| seen_since);
        if open {
            self.close(system, tenant, ACTIVE, started, at);
        }
        self.open(system, tenant, INACTIVE, at);
        self.wake_monitor |= seen_since;
    }

    fn recovered(&mut self, event: &RecordedEvent, e: SystemRecovered) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        let row = &mut slot.row;
        if row.status == ACTIVE {
            return;
        }
        let at = stored(e.seen_at).max(row.status_since);
        let (system, tenant, open) = (row.system_id, row.tenant_id, row.status == INACTIVE);
        let started = row.status_since;
        row.status = ACTIVE.to_owned();
        row.status_since = at;
        row.silent_last_seen_at = None;
        row.first_seen_after_silence = None;
        row.updated_position = event.position;
        slot.dirty = true;
        if open {
            self.close(system, tenant, INACTIVE, started, at);
        }
        self.open(system, tenant, ACTIVE, at);
    }

    fn paused(&mut self, event: &RecordedEvent) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        if slot.row.lifecycle != PAUSED {
            slot.row.lifecycle = PAUSED.to_owned();
            slot.row.updated_position = event.position;
            slot.dirty = true;
        }
    }

    fn resumed(&mut self, event: &RecordedEvent) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        if slot.row.lifecycle == PAUSED {
            slot.row.lifecycle = ACTIVE.to_owned();
            // Silence is measured from the resume: the pause was not silence.
            slot.row.watched_since = event.recorded_at;
            slot.row.updated_position = event.position;
            slot.dirty = true;
        }
    }

    fn decommissioned(&mut self, event: &RecordedEvent) {
        let Some(slot) = self.watched(event) else {
            return;
        };
        let row = &mut slot.row;
        row.lifecycle = DECOMMISSIONED.to_owned();
        row.updated_position = event.position;
        slot.dirty = true;
        let open = match row.status.as_str() {
            ACTIVE => Some(ACTIVE),
            INACTIVE => Some(INACTIVE),
            _ => None,
        };
        let (system, tenant, started) = (row.system_id, row.tenant_id, row.status_since);
        if let Some(status) = open {
            self.close(
                system,
                tenant,
                status,
                started,
                event.recorded_at.max(started),
            );
        }
    }

    fn policy(&mut self, event: &RecordedEvent, e: LivenessPolicySet) -> Result<(), FoldError> {
        let minutes = i32::try_from(e.heartbeat_timeout_minutes)
            .ok()
            .filter(|minutes| *minutes > 0)
            .ok_or_else(|| {
                refused(
                    event,
                    format!("timeout of {} minutes", e.heartbeat_timeout_minutes),
                )
            })?;
        match e.system_id {
            None => {
                self.tenant_policies.insert(event.tenant_id.0, minutes);
            }
            // Only a registered system of the event's tenant; the command refuses any other, so
            // an override of an unknown system can only come from an odd history: ignored.
            Some(id) => {
                if let Some(slot) = self.systems.get_mut(&id) {
                    if slot.row.tenant_id == event.tenant_id.0 {
                        slot.row.timeout_minutes = Some(minutes);
                        slot.row.updated_position = event.position;
                        slot.dirty = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens an interval of `status` at `at`.
    fn open(&mut self, system: Uuid, tenant: Uuid, status: &'static str, at: DateTime<Utc>) {
        let row = IntervalRow {
            tenant_id: tenant,
            status,
            ended_at: None,
        };
        self.intervals.insert((system, at), Some(row));
    }

    /// Closes the interval of `status` that began at `started` at `at`; drops it if that leaves
    /// it empty.
    fn close(
        &mut self,
        system: Uuid,
        tenant: Uuid,
        status: &'static str,
        started: DateTime<Utc>,
        at: DateTime<Utc>,
    ) {
        let row = (at > started).then_some(IntervalRow {
            tenant_id: tenant,
            status,
            ended_at: Some(at),
        });
        self.intervals.insert((system, started), row);
    }
}

/// The system a policy names, from its raw payload (for `load`, before the fold decodes it).
fn policy_system_id(payload: Option<&JsonValue>) -> Option<Uuid> {
    Uuid::parse_str(payload?.get("system_id")?.as_str()?).ok()
}

impl Projector for Liveness {
    type Changes = LivenessChanges;

    fn name(&self) -> &'static str {
        "liveness"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "liveness_systems",
            "liveness_intervals",
            "liveness_tenant_policies",
        ]
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&HANDLED)
    }

    fn reads_payloads(&self) -> bool {
        // Signs of life include inventory documents and telemetry bytes; `load` fetches the
        // payloads of the rare events that need them.
        false
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<LivenessChanges, sqlx::Error> {
        let mut changes = LivenessChanges::default();
        let missing: Vec<i64> = events
            .iter()
            .filter(|e| e.payload.is_null() && WITH_PAYLOAD.contains(&e.event_type.as_str()))
            .map(|e| e.position)
            .collect();
        if !missing.is_empty() {
            let payloads: Vec<(i64, JsonValue)> =
                sqlx::query_as("SELECT position, payload FROM events WHERE position = ANY($1)")
                    .bind(&missing)
                    .fetch_all(&mut *tx)
                    .await?;
            changes.payloads.extend(payloads);
        }
        let mut ids = BTreeSet::new();
        for event in events {
            if event.event_type == LivenessPolicySet::EVENT_TYPE {
                ids.extend(policy_system_id(changes.payload(event)));
            } else if HANDLED.contains(&event.event_type.as_str()) {
                ids.extend(event.stream_id.system_id());
            }
        }
        if ids.is_empty() {
            return Ok(changes);
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let rows: Vec<SystemRow> = sqlx::query_as(&format!(
            "SELECT {SYSTEM_COLUMNS} FROM liveness_systems WHERE system_id = ANY($1)"
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

    fn fold(&self, changes: &mut LivenessChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        let event_type = event.event_type.as_str();
        if SIGNS_OF_LIFE.contains(&event_type) {
            changes.sign_of_life(event);
            return Ok(());
        }
        match event_type {
            SystemPaused::EVENT_TYPE => changes.paused(event),
            SystemResumed::EVENT_TYPE => changes.resumed(event),
            SystemDecommissioned::EVENT_TYPE => changes.decommissioned(event),
            _ if WITH_PAYLOAD.contains(&event_type) => match changes.decode(event)? {
                FleetEvent::SystemRegistered(e) => changes.register(event, e),
                FleetEvent::SystemWentSilent(e) => changes.went_silent(event, e),
                FleetEvent::SystemRecovered(e) => changes.recovered(event, e),
                FleetEvent::LivenessPolicySet(e) => return changes.policy(event, e),
                // `decode` keeps the event type.
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    async fn flush(
        &self,
        tx: &mut PgConnection,
        changes: LivenessChanges,
    ) -> Result<(), sqlx::Error> {
        flush_systems(tx, changes.systems).await?;
        flush_tenant_policies(tx, changes.tenant_policies).await?;
        flush_intervals(tx, changes.intervals).await?;
        if changes.wake_monitor {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(LIVENESS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// Upserts the batch's changed systems, one whole row per system.
async fn flush_systems(
    tx: &mut PgConnection,
    systems: BTreeMap<Uuid, Slot<SystemRow>>,
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
    let mut keys = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut lifecycles = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut since = Vec::with_capacity(n);
    let mut seen = Vec::with_capacity(n);
    let mut seen_positions = Vec::with_capacity(n);
    let mut watched = Vec::with_capacity(n);
    let mut silent_seen = Vec::with_capacity(n);
    let mut first_seen = Vec::with_capacity(n);
    let mut timeouts = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.system_id);
        tenants.push(row.tenant_id);
        keys.push(row.system_key);
        names.push(row.name);
        kinds.push(row.kind);
        lifecycles.push(row.lifecycle);
        statuses.push(row.status);
        since.push(row.status_since);
        seen.push(row.last_seen_at);
        seen_positions.push(row.last_seen_position);
        watched.push(row.watched_since);
        silent_seen.push(row.silent_last_seen_at);
        first_seen.push(row.first_seen_after_silence);
        timeouts.push(row.timeout_minutes);
        updated.push(row.updated_position);
    }
    sqlx::query(&format!(
        "INSERT INTO liveness_systems ({SYSTEM_COLUMNS}) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], \
                              $10::bigint[], $11::timestamptz[], $12::timestamptz[], \
                              $13::timestamptz[], $14::integer[], $15::bigint[]) \
         ON CONFLICT (system_id) DO UPDATE SET \
             lifecycle = excluded.lifecycle, \
             status = excluded.status, \
             status_since = excluded.status_since, \
             last_seen_at = excluded.last_seen_at, \
             last_seen_position = excluded.last_seen_position, \
             watched_since = excluded.watched_since, \
             silent_last_seen_at = excluded.silent_last_seen_at, \
             first_seen_after_silence = excluded.first_seen_after_silence, \
             timeout_minutes = excluded.timeout_minutes, \
             updated_position = excluded.updated_position"
    ))
    .bind(&ids)
    .bind(&tenants)
    .bind(&keys)
    .bind(&names)
    .bind(&kinds)
    .bind(&lifecycles)
    .bind(&statuses)
    .bind(&since)
    .bind(&seen)
    .bind(&seen_positions)
    .bind(&watched)
    .bind(&silent_seen)
    .bind(&first_seen)
    .bind(&timeouts)
    .bind(&updated)
    .execute(tx)
    .await?;
    Ok(())
}

/// Upserts the tenant policies the batch set.
async fn flush_tenant_policies(
    tx: &mut PgConnection,
    policies: BTreeMap<Uuid, i32>,
) -> Result<(), sqlx::Error> {
    if policies.is_empty() {
        return Ok(());
    }
    let (tenants, minutes): (Vec<Uuid>, Vec<i32>) = policies.into_iter().unzip();
    sqlx::query(
        "INSERT INTO liveness_tenant_policies (tenant_id, timeout_minutes) \
         SELECT * FROM UNNEST($1::uuid[], $2::integer[]) \
         ON CONFLICT (tenant_id) DO UPDATE SET timeout_minutes = excluded.timeout_minutes",
    )
    .bind(&tenants)
    .bind(&minutes)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes the intervals the batch dropped, then upserts the ones it opened or closed.
async fn flush_intervals(
    tx: &mut PgConnection,
    intervals: BTreeMap<(Uuid, DateTime<Utc>), Option<IntervalRow>>,
) -> Result<(), sqlx::Error> {
    if intervals.is_empty() {
        return Ok(());
    }
    let (mut dropped_ids, mut dropped_starts) = (Vec::new(), Vec::new());
    let (mut ids, mut tenants, mut statuses, mut starts, mut ends) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((system, started), row) in intervals {
        match row {
            None => {
                dropped_ids.push(system);
                dropped_starts.push(started);
            }
            Some(row) => {
                ids.push(system);
                tenants.push(row.tenant_id);
                statuses.push(row.status);
                starts.push(started);
                ends.push(row.ended_at);
            }
        }
    }
    if !dropped_ids.is_empty() {
        sqlx::query(
            "DELETE FROM liveness_intervals i \
             USING UNNEST($1::uuid[], $2::timestamptz[]) AS d (system_id, started_at) \
             WHERE i.system_id = d.system_id AND i.started_at = d.started_at",
        )
        .bind(&dropped_ids)
        .bind(&dropped_starts)
        .execute(&mut *tx)
        .await?;
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO liveness_intervals (system_id, tenant_id, status, started_at, ended_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], \
                                  $5::timestamptz[]) \
             ON CONFLICT (system_id, started_at) DO UPDATE SET \
                 status = excluded.status, ended_at = excluded.ended_at",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&statuses)
        .bind(&starts)
        .bind(&ends)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::{EventId, StreamId, SystemKind, TenantId};

    /// An event as the store would record it, at `position`, recorded `position` seconds past a
    /// fixed instant.
    fn recorded<E: DomainEvent>(
        tenant: TenantId,
        stream: &StreamId,
        event: &E,
        position: i64,
    ) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: EventId::new(),
            stream_id: stream.clone(),
            stream_version: position,
            event_type: E::EVENT_TYPE.into(),
            schema_version: E::SCHEMA_VERSION,
            tenant_id: tenant,
            payload: serde_json::to_value(event).unwrap(),
            data: None,
            metadata: Default::default(),
            occurred_at: at(position),
            recorded_at: at(position),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn registration(id: Uuid) -> SystemRegistered {
        SystemRegistered {
            system_id: id,
            system_key: "FL-AAAA-BBBB-CCCC".into(),
            name: "db-01".into(),
            kind: SystemKind::System,
            secret_hash: "h".into(),
            labels: Default::default(),
        }
    }

    fn heartbeat() -> HeartbeatReceived {
        HeartbeatReceived {
            agent_version: None,
        }
    }

    fn fold_all(changes: &mut LivenessChanges, events: &[RecordedEvent]) {
        for event in events {
            Liveness.fold(changes, event).unwrap();
        }
    }

    fn interval(
        changes: &LivenessChanges,
        id: Uuid,
        started: i64,
    ) -> Option<(&'static str, Option<DateTime<Utc>>)> {
        changes.intervals[&(id, at(started))]
            .as_ref()
            .map(|row| (row.status, row.ended_at))
    }

    #[test]
    fn a_system_goes_from_unknown_to_active_to_inactive_and_back() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let mut changes = LivenessChanges::default();
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &registration(id), 1),
                recorded(tenant, &stream, &heartbeat(), 2),
                recorded(tenant, &stream, &heartbeat(), 3),
                recorded(
                    tenant,
                    &stream,
                    &SystemWentSilent {
                        last_seen_at: at(3),
                        timeout_minutes: 10,
                    },
                    700,
                ),
            ],
        );
        let row = &changes.systems[&id].row;
        assert_eq!((row.status.as_str(), row.status_since), (INACTIVE, at(3)));
        assert_eq!(row.silent_last_seen_at, Some(at(3)));
        assert_eq!(
            (row.last_seen_at, row.last_seen_position),
            (Some(at(3)), Some(3))
        );
        assert_eq!(interval(&changes, id, 2), Some((ACTIVE, Some(at(3)))));
        assert_eq!(interval(&changes, id, 3), Some((INACTIVE, None)));
        assert!(!changes.wake_monitor);

        fold_all(
            &mut changes,
            &[recorded(tenant, &stream, &heartbeat(), 800)],
        );
        assert!(changes.wake_monitor, "a sign of life of an inactive system");
        assert_eq!(
            changes.systems[&id].row.status, INACTIVE,
            "only the monitor recovers"
        );
        fold_all(
            &mut changes,
            &[recorded(
                tenant,
                &stream,
                &SystemRecovered {
                    silent_since: at(3),
                    seen_at: at(800),
                },
                801,
            )],
        );
        let row = &changes.systems[&id].row;
        assert_eq!((row.status.as_str(), row.status_since), (ACTIVE, at(800)));
        assert_eq!(row.silent_last_seen_at, None);
        assert_eq!(interval(&changes, id, 3), Some((INACTIVE, Some(at(800)))));
        assert_eq!(interval(&changes, id, 800), Some((ACTIVE, None)));
    }

    #[test]
    fn silence_at_the_instant_of_the_first_sign_of_life_drops_the_empty_active_interval() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let mut changes = LivenessChanges::default();
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &registration(id), 1),
                recorded(tenant, &stream, &heartbeat(), 2),
                recorded(
                    tenant,
                    &stream,
                    &SystemWentSilent {
                        // Earlier than the interval it closes: taken as its start.
                        last_seen_at: at(1),
                        timeout_minutes: 10,
                    },
                    3,
                ),
            ],
        );
        assert_eq!(interval(&changes, id, 2), Some((INACTIVE, None)));
        assert_eq!(changes.intervals.len(), 1);
        let row = &changes.systems[&id].row;
        assert_eq!(
            (row.status_since, row.silent_last_seen_at),
            (at(2), Some(at(1)))
        );
        assert!(changes.wake_monitor, "seen after what the monitor named");
    }

    #[test]
    fn events_about_unknown_foreign_or_decommissioned_systems_change_nothing() {
        let (tenant, other, id) = (TenantId::new(), TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let mut changes = LivenessChanges::default();
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &heartbeat(), 1),
                recorded(tenant, &stream, &SystemPaused { reason: None }, 2),
            ],
        );
        assert!(changes.systems.is_empty() && changes.intervals.is_empty());
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &registration(id), 3),
                recorded(other, &stream, &heartbeat(), 4),
                recorded(
                    other,
                    &StreamId::tenant(other),
                    &LivenessPolicySet {
                        system_id: Some(id),
                        heartbeat_timeout_minutes: 3,
                    },
                    5,
                ),
            ],
        );
        let row = &changes.systems[&id].row;
        assert_eq!((row.status.as_str(), row.timeout_minutes), (UNKNOWN, None));
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &SystemDecommissioned { reason: None }, 6),
                recorded(tenant, &stream, &heartbeat(), 7),
                recorded(tenant, &stream, &SystemResumed {}, 8),
            ],
        );
        let row = &changes.systems[&id].row;
        assert_eq!(row.lifecycle, DECOMMISSIONED);
        assert_eq!((row.last_seen_at, row.updated_position), (None, 6));
    }

    #[test]
    fn a_zero_timeout_is_refused_and_policies_land_on_tenant_or_system() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let tenant_stream = StreamId::tenant(tenant);
        let mut changes = LivenessChanges::default();
        let zero = recorded(
            tenant,
            &tenant_stream,
            &LivenessPolicySet {
                system_id: None,
                heartbeat_timeout_minutes: 0,
            },
            1,
        );
        assert!(Liveness.fold(&mut changes, &zero).is_err());
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &StreamId::system(id), &registration(id), 2),
                recorded(
                    tenant,
                    &tenant_stream,
                    &LivenessPolicySet {
                        system_id: None,
                        heartbeat_timeout_minutes: 30,
                    },
                    3,
                ),
                recorded(
                    tenant,
                    &tenant_stream,
                    &LivenessPolicySet {
                        system_id: Some(id),
                        heartbeat_timeout_minutes: 5,
                    },
                    4,
                ),
            ],
        );
        assert_eq!(changes.tenant_policies[&tenant.0], 30);
        assert_eq!(changes.systems[&id].row.timeout_minutes, Some(5));
    }

    #[test]
    fn a_batch_without_payloads_decodes_what_load_fetched() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let mut event = recorded(tenant, &StreamId::gateway(id), &registration(id), 9);
        let payload = std::mem::take(&mut event.payload);
        let mut changes = LivenessChanges::default();
        assert!(Liveness.fold(&mut changes, &event).is_err(), "not loaded");
        changes.payloads.insert(9, payload);
        Liveness.fold(&mut changes, &event).unwrap();
        assert_eq!(changes.systems[&id].row.system_key, "FL-AAAA-BBBB-CCCC");
    }
}
