//! `registry`: tenants, their API tokens, and every registered system and gateway with its
//! credentials and status. The ingest side authenticates against these rows, so they must follow
//! the log exactly; every timestamp comes from the events' `recorded_at`, so a rebuild from
//! position 0 writes the same rows as the live projector.
//!
//! Only eight event types concern the registry. Everything else (heartbeats arrive at tens of
//! thousands a second) is not even read: the registry declares its types
//! ([`Projector::event_types`]), and `fold` still skips any other type before decoding. An event
//! of one of the eight that does not decode, or that contradicts the registry (a rotation of a
//! system it does not have, a second registration, a key or token hash already taken), is a
//! [`FoldError`]: the runtime parks it for an operator rather than guess.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events_schema::{
    CredentialsRotated, DomainEvent, FleetEvent, RecordedEvent, SystemDecommissioned, SystemPaused,
    SystemRegistered, SystemResumed, TenantCreated, TenantTokenIssued, TenantTokenRevoked,
};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projector::{FoldError, Projector};

/// `registry_systems.status` of a system that may report.
const ACTIVE: &str = "active";
/// `registry_systems.status` of a system whose reports are refused until it is resumed.
const PAUSED: &str = "paused";
/// `registry_systems.status` of a system that left the fleet; terminal.
const DECOMMISSIONED: &str = "decommissioned";

/// Folds tenants, tenant API tokens and systems/gateways into `registry_tenants`,
/// `registry_tokens` and `registry_systems`: the state the ingest side authenticates against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry;

/// What one batch reads and changes: the rows its events touch, as loaded, with the batch's own
/// changes applied in order (so a registration and a rotation of the same system in one batch
/// work). Only changed rows are written back.
#[derive(Debug, Clone, Default)]
pub struct RegistryChanges {
    /// By tenant id.
    tenants: BTreeMap<Uuid, Slot<TenantRow>>,
    /// By token id.
    tokens: BTreeMap<Uuid, Slot<TokenRow>>,
    /// Token hash -> token id, of every token in `tokens`.
    token_by_hash: BTreeMap<String, Uuid>,
    /// By system id.
    systems: BTreeMap<Uuid, Slot<SystemRow>>,
    /// System key -> system id, of every system in `systems`.
    system_by_key: BTreeMap<String, Uuid>,
}

/// A row and whether the batch changed it.
#[derive(Debug, Clone)]
struct Slot<T> {
    row: T,
    dirty: bool,
}

impl<T> Slot<T> {
    fn loaded(row: T) -> Self {
        Self { row, dirty: false }
    }

    fn new(row: T) -> Self {
        Self { row, dirty: true }
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct TenantRow {
    tenant_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct TokenRow {
    token_hash: String,
    token_id: Uuid,
    tenant_id: Uuid,
    name: String,
    issued_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct SystemRow {
    system_id: Uuid,
    tenant_id: Uuid,
    system_key: String,
    kind: String,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    secret_hash: String,
    credentials_version: i32,
    status: String,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The event types the registry folds; every other type is skipped without decoding.
const HANDLED: [&str; 8] = [
    TenantCreated::EVENT_TYPE,
    TenantTokenIssued::EVENT_TYPE,
    TenantTokenRevoked::EVENT_TYPE,
    SystemRegistered::EVENT_TYPE,
    CredentialsRotated::EVENT_TYPE,
    SystemPaused::EVENT_TYPE,
    SystemResumed::EVENT_TYPE,
    SystemDecommissioned::EVENT_TYPE,
];

/// A uuid field of a raw payload, for `load` (which must not pay for a full decode).
fn payload_uuid(event: &RecordedEvent, field: &str) -> Option<Uuid> {
    Uuid::parse_str(event.payload.get(field)?.as_str()?).ok()
}

/// A string field of a raw payload, for `load`.
fn payload_str(event: &RecordedEvent, field: &str) -> Option<String> {
    Some(event.payload.get(field)?.as_str()?.to_owned())
}

fn refused(event: &RecordedEvent, reason: impl std::fmt::Display) -> FoldError {
    FoldError(format!(
        "{} on {}: {reason}",
        event.event_type, event.stream_id
    ))
}

impl RegistryChanges {
    fn create_tenant(&mut self, event: &RecordedEvent, e: TenantCreated) -> Result<(), FoldError> {
        let id = e.tenant_id.0;
        if self.tenants.contains_key(&id) {
            return Err(refused(event, format!("tenant {id} already exists")));
        }
        let row = TenantRow {
            tenant_id: id,
            name: e.name,
            created_at: event.recorded_at,
        };
        self.tenants.insert(id, Slot::new(row));
        Ok(())
    }

    fn issue_token(
        &mut self,
        event: &RecordedEvent,
        e: TenantTokenIssued,
    ) -> Result<(), FoldError> {
        if self.tokens.contains_key(&e.token_id) {
            return Err(refused(
                event,
                format!("token {} was already issued", e.token_id),
            ));
        }
        if let Some(other) = self.token_by_hash.get(&e.token_hash) {
            return Err(refused(
                event,
                format!("the token hash is already token {other}'s"),
            ));
        }
        let row = TokenRow {
            token_hash: e.token_hash,
            token_id: e.token_id,
            tenant_id: event.tenant_id.0,
            name: e.name,
            issued_at: event.recorded_at,
            revoked_at: None,
        };
        self.token_by_hash
            .insert(row.token_hash.clone(), row.token_id);
        self.tokens.insert(row.token_id, Slot::new(row));
        Ok(())
    }

    fn revoke_token(
        &mut self,
        event: &RecordedEvent,
        e: TenantTokenRevoked,
    ) -> Result<(), FoldError> {
        let slot = self
            .tokens
            .get_mut(&e.token_id)
            .ok_or_else(|| refused(event, format!("no token {}", e.token_id)))?;
        if slot.row.revoked_at.is_none() {
            slot.row.revoked_at = Some(event.recorded_at);
            slot.dirty = true;
        }
        Ok(())
    }

    fn register(&mut self, event: &RecordedEvent, e: SystemRegistered) -> Result<(), FoldError> {
        let id = event
            .stream_id
            .system_id()
            .ok_or_else(|| refused(event, "not on a system-{uuid} or gateway-{uuid} stream"))?;
        if e.system_id != id {
            return Err(refused(
                event,
                format!(
                    "the payload's system_id {} is not the stream's",
                    e.system_id
                ),
            ));
        }
        if self.systems.contains_key(&id) {
            return Err(refused(event, format!("system {id} is already registered")));
        }
        if let Some(other) = self.system_by_key.get(&e.system_key) {
            return Err(refused(
                event,
                format!("system key {} is already system {other}'s", e.system_key),
            ));
        }
        let kind = e.kind.as_str();
        let row = SystemRow {
            system_id: id,
            tenant_id: event.tenant_id.0,
            system_key: e.system_key,
            kind: kind.to_owned(),
            name: e.name,
            labels: Json(e.labels),
            secret_hash: e.secret_hash,
            credentials_version: 1,
            status: ACTIVE.to_owned(),
            registered_at: event.recorded_at,
            updated_at: event.recorded_at,
        };
        self.system_by_key.insert(row.system_key.clone(), id);
        self.systems.insert(id, Slot::new(row));
        Ok(())
    }

    /// The registered system the event's stream names.
    fn system_mut(&mut self, event: &RecordedEvent) -> Result<&mut Slot<SystemRow>, FoldError> {
        let id = event
            .stream_id
            .system_id()
            .ok_or_else(|| refused(event, "not on a system-{uuid} or gateway-{uuid} stream"))?;
        self.systems
            .get_mut(&id)
            .ok_or_else(|| refused(event, format!("no registered system {id}")))
    }

    fn rotate(&mut self, event: &RecordedEvent, e: CredentialsRotated) -> Result<(), FoldError> {
        let slot = self.system_mut(event)?;
        slot.row.secret_hash = e.secret_hash;
        slot.row.credentials_version += 1;
        slot.row.updated_at = event.recorded_at;
        slot.dirty = true;
        Ok(())
    }

    /// Moves a system to `status`, unless it is decommissioned (which is terminal) or already
    /// there.
    fn set_status(&mut self, event: &RecordedEvent, status: &str) -> Result<(), FoldError> {
        let slot = self.system_mut(event)?;
        if slot.row.status == DECOMMISSIONED || slot.row.status == status {
            return Ok(());
        }
        slot.row.status = status.to_owned();
        slot.row.updated_at = event.recorded_at;
        slot.dirty = true;
        Ok(())
    }
}

/// Ids and keys of the rows a batch's events touch.
#[derive(Default)]
struct Wanted {
    tenants: BTreeSet<Uuid>,
    token_ids: BTreeSet<Uuid>,
    token_hashes: BTreeSet<String>,
    system_ids: BTreeSet<Uuid>,
    system_keys: BTreeSet<String>,
}

impl Wanted {
    fn of(events: &[RecordedEvent]) -> Self {
        let mut wanted = Self::default();
        for event in events {
            match event.event_type.as_str() {
                TenantCreated::EVENT_TYPE => {
                    wanted.tenants.extend(payload_uuid(event, "tenant_id"));
                }
                TenantTokenIssued::EVENT_TYPE => {
                    wanted.token_ids.extend(payload_uuid(event, "token_id"));
                    wanted.token_hashes.extend(payload_str(event, "token_hash"));
                }
                TenantTokenRevoked::EVENT_TYPE => {
                    wanted.token_ids.extend(payload_uuid(event, "token_id"));
                }
                SystemRegistered::EVENT_TYPE => {
                    wanted.system_ids.extend(event.stream_id.system_id());
                    wanted.system_keys.extend(payload_str(event, "system_key"));
                }
                CredentialsRotated::EVENT_TYPE
                | SystemPaused::EVENT_TYPE
                | SystemResumed::EVENT_TYPE
                | SystemDecommissioned::EVENT_TYPE => {
                    wanted.system_ids.extend(event.stream_id.system_id());
                }
                _ => {}
            }
        }
        wanted
    }
}

impl Projector for Registry {
    type Changes = RegistryChanges;

    fn name(&self) -> &'static str {
        "registry"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["registry_tenants", "registry_tokens", "registry_systems"]
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        // Heartbeats, telemetry and inventory reports are never even read.
        Some(&HANDLED)
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<RegistryChanges, sqlx::Error> {
        let wanted = Wanted::of(events);
        let mut changes = RegistryChanges::default();
        if !wanted.tenants.is_empty() {
            let ids: Vec<Uuid> = wanted.tenants.into_iter().collect();
            let rows: Vec<TenantRow> = sqlx::query_as(
                "SELECT tenant_id, name, created_at FROM registry_tenants \
                 WHERE tenant_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                changes.tenants.insert(row.tenant_id, Slot::loaded(row));
            }
        }
        if !wanted.token_ids.is_empty() || !wanted.token_hashes.is_empty() {
            let ids: Vec<Uuid> = wanted.token_ids.into_iter().collect();
            let hashes: Vec<String> = wanted.token_hashes.into_iter().collect();
            let rows: Vec<TokenRow> = sqlx::query_as(
                "SELECT token_hash, token_id, tenant_id, name, issued_at, revoked_at \
                 FROM registry_tokens WHERE token_id = ANY($1) OR token_hash = ANY($2)",
            )
            .bind(&ids)
            .bind(&hashes)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                changes
                    .token_by_hash
                    .insert(row.token_hash.clone(), row.token_id);
                changes.tokens.insert(row.token_id, Slot::loaded(row));
            }
        }
        if !wanted.system_ids.is_empty() || !wanted.system_keys.is_empty() {
            let ids: Vec<Uuid> = wanted.system_ids.into_iter().collect();
            let keys: Vec<String> = wanted.system_keys.into_iter().collect();
            let rows: Vec<SystemRow> = sqlx::query_as(
                "SELECT system_id, tenant_id, system_key, kind, name, labels, secret_hash, \
                        credentials_version, status, registered_at, updated_at \
                 FROM registry_systems WHERE system_id = ANY($1) OR system_key = ANY($2)",
            )
            .bind(&ids)
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                changes
                    .system_by_key
                    .insert(row.system_key.clone(), row.system_id);
                changes.systems.insert(row.system_id, Slot::loaded(row));
            }
        }
        Ok(changes)
    }

    fn fold(&self, changes: &mut RegistryChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        if !HANDLED.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let decoded = event.decode().map_err(|error| refused(event, error))?;
        match decoded {
            FleetEvent::TenantCreated(e) => changes.create_tenant(event, e),
            FleetEvent::TenantTokenIssued(e) => changes.issue_token(event, e),
            FleetEvent::TenantTokenRevoked(e) => changes.revoke_token(event, e),
            FleetEvent::SystemRegistered(e) => changes.register(event, e),
            FleetEvent::CredentialsRotated(e) => changes.rotate(event, e),
            FleetEvent::SystemPaused(_) => changes.set_status(event, PAUSED),
            FleetEvent::SystemResumed(_) => changes.set_status(event, ACTIVE),
            FleetEvent::SystemDecommissioned(_) => changes.set_status(event, DECOMMISSIONED),
            // `decode` keeps the event type, and `HANDLED` lists only the types above.
            _ => Ok(()),
        }
    }

    async fn flush(
        &self,
        tx: &mut PgConnection,
        changes: RegistryChanges,
    ) -> Result<(), sqlx::Error> {
        flush_tenants(tx, changes.tenants).await?;
        flush_tokens(tx, changes.tokens).await?;
        flush_systems(tx, changes.systems).await
    }
}

/// Inserts the batch's new tenants (the fold refuses a tenant that already exists).
async fn flush_tenants(
    tx: &mut PgConnection,
    tenants: BTreeMap<Uuid, Slot<TenantRow>>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<TenantRow> = tenants
        .into_values()
        .filter(|slot| slot.dirty)
        .map(|slot| slot.row)
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    let mut created = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.tenant_id);
        names.push(row.name);
        created.push(row.created_at);
    }
    sqlx::query(
        "INSERT INTO registry_tenants (tenant_id, name, created_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[])",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&created)
    .execute(tx)
    .await?;
    Ok(())
}

/// Upserts the batch's issued and revoked tokens.
async fn flush_tokens(
    tx: &mut PgConnection,
    tokens: BTreeMap<Uuid, Slot<TokenRow>>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<TokenRow> = tokens
        .into_values()
        .filter(|slot| slot.dirty)
        .map(|slot| slot.row)
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut hashes, mut ids, mut tenants) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut names, mut issued, mut revoked) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        hashes.push(row.token_hash);
        ids.push(row.token_id);
        tenants.push(row.tenant_id);
        names.push(row.name);
        issued.push(row.issued_at);
        revoked.push(row.revoked_at);
    }
    sqlx::query(
        "INSERT INTO registry_tokens (token_hash, token_id, tenant_id, name, issued_at, revoked_at) \
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::text[], \
                              $5::timestamptz[], $6::timestamptz[]) \
         ON CONFLICT (token_hash) DO UPDATE SET revoked_at = excluded.revoked_at",
    )
    .bind(&hashes)
    .bind(&ids)
    .bind(&tenants)
    .bind(&names)
    .bind(&issued)
    .bind(&revoked)
    .execute(tx)
    .await?;
    Ok(())
}

/// Upserts the batch's registered and changed systems, whole rows at a time.
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
    let (mut ids, mut tenants, mut keys, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut names, mut labels, mut secrets, mut versions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut statuses, mut registered, mut updated) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    // A system registered in this batch and not changed since has nothing remembered anywhere:
    // announcing it would only make processes forget pairs verified after it.
    let changed_keys: Vec<String> = rows
        .iter()
        .filter(|row| {
            !(row.credentials_version == 1
                && row.status == "active"
                && row.registered_at == row.updated_at)
        })
        .map(|row| row.system_key.clone())
        .collect();
    for row in rows {
        ids.push(row.system_id);
        tenants.push(row.tenant_id);
        keys.push(row.system_key);
        kinds.push(row.kind);
        names.push(row.name);
        labels.push(row.labels);
        secrets.push(row.secret_hash);
        versions.push(row.credentials_version);
        statuses.push(row.status);
        registered.push(row.registered_at);
        updated.push(row.updated_at);
    }
    sqlx::query(
        "INSERT INTO registry_systems (system_id, tenant_id, system_key, kind, name, labels, \
                                       secret_hash, credentials_version, status, registered_at, \
                                       updated_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                              $6::jsonb[], $7::text[], $8::integer[], $9::text[], \
                              $10::timestamptz[], $11::timestamptz[]) \
         ON CONFLICT (system_id) DO UPDATE SET \
             secret_hash = excluded.secret_hash, \
             credentials_version = excluded.credentials_version, \
             status = excluded.status, \
             updated_at = excluded.updated_at",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&keys)
    .bind(&kinds)
    .bind(&names)
    .bind(&labels)
    .bind(&secrets)
    .bind(&versions)
    .bind(&statuses)
    .bind(&registered)
    .bind(&updated)
    .execute(&mut *tx)
    .await?;
    // Every process that remembers verified credentials forgets the changed systems' when this
    // transaction commits: whoever folded the change (the live runner, a command's catch-up, a
    // rebuild) announces it, so no path that changes credentials or status can skip it.
    if !changed_keys.is_empty() {
        sqlx::query("SELECT pg_notify($1, key) FROM unnest($2::text[]) AS key")
            .bind(command_side::registry::CREDENTIALS_CHANNEL)
            .bind(&changed_keys)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::{EventId, StreamId, SystemKind, TenantId};

    /// An event as the store would record it, at `position` (and `position` seconds past a fixed
    /// instant, so expected timestamps are easy to name).
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

    fn at(position: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + position, 0).unwrap()
    }

    fn registration(id: Uuid, key: &str, kind: SystemKind) -> SystemRegistered {
        SystemRegistered {
            system_id: id,
            system_key: key.into(),
            name: "db-01".into(),
            kind,
            secret_hash: "$argon2id$first".into(),
            labels: BTreeMap::from([("rack".to_owned(), "r7".to_owned())]),
        }
    }

    fn fold_all(changes: &mut RegistryChanges, events: &[RecordedEvent]) {
        for event in events {
            Registry.fold(changes, event).unwrap();
        }
    }

    #[test]
    fn a_system_is_registered_rotated_paused_resumed_and_decommissioned_for_good() {
        let (tenant, id) = (TenantId::new(), Uuid::now_v7());
        let stream = StreamId::system(id);
        let events = [
            recorded(
                tenant,
                &stream,
                &registration(id, "FL-AAAA", SystemKind::System),
                1,
            ),
            recorded(
                tenant,
                &stream,
                &CredentialsRotated {
                    system_key: "FL-AAAA".into(),
                    secret_hash: "$argon2id$second".into(),
                },
                2,
            ),
            recorded(tenant, &stream, &SystemPaused { reason: None }, 3),
        ];
        let mut changes = RegistryChanges::default();
        fold_all(&mut changes, &events);
        let row = &changes.systems[&id].row;
        assert_eq!(
            (
                row.secret_hash.as_str(),
                row.credentials_version,
                row.status.as_str()
            ),
            ("$argon2id$second", 2, PAUSED)
        );
        assert_eq!((row.registered_at, row.updated_at), (at(1), at(3)));
        assert_eq!(row.tenant_id, tenant.0);
        assert_eq!(
            (row.kind.as_str(), row.labels.0["rack"].as_str()),
            ("system", "r7")
        );

        fold_all(
            &mut changes,
            &[recorded(tenant, &stream, &SystemResumed {}, 4)],
        );
        assert_eq!(changes.systems[&id].row.status, ACTIVE);
        fold_all(
            &mut changes,
            &[
                recorded(tenant, &stream, &SystemDecommissioned { reason: None }, 5),
                recorded(tenant, &stream, &SystemResumed {}, 6),
                recorded(tenant, &stream, &SystemPaused { reason: None }, 7),
            ],
        );
        let row = &changes.systems[&id].row;
        assert_eq!(row.status, DECOMMISSIONED, "decommissioned is terminal");
        assert_eq!(row.updated_at, at(5));
        assert!(changes.systems[&id].dirty);
    }

    #[test]
    fn a_gateway_registers_on_its_stream_and_an_old_v1_registration_is_a_server() {
        let tenant = TenantId::new();
        let (gateway, old) = (Uuid::now_v7(), Uuid::now_v7());
        let mut v1 = recorded(
            tenant,
            &StreamId::system(old),
            &registration(old, "FL-OLD", SystemKind::System),
            2,
        );
        v1.schema_version = 1;
        v1.payload = serde_json::json!({
            "system_id": old, "system_key": "FL-OLD", "name": "legacy", "secret_hash": "h"
        });
        let mut changes = RegistryChanges::default();
        fold_all(
            &mut changes,
            &[
                recorded(
                    tenant,
                    &StreamId::gateway(gateway),
                    &registration(gateway, "FL-GW", SystemKind::Gateway),
                    1,
                ),
                v1,
            ],
        );
        assert_eq!(changes.systems[&gateway].row.kind, "gateway");
        assert_eq!(changes.systems[&old].row.kind, "system");
        assert!(changes.systems[&old].row.labels.0.is_empty());
    }

    #[test]
    fn tokens_are_issued_to_the_envelopes_tenant_and_the_first_revocation_wins() {
        let tenant = TenantId::new();
        let stream = StreamId::tenant(tenant);
        let token_id = Uuid::now_v7();
        let mut changes = RegistryChanges::default();
        fold_all(
            &mut changes,
            &[
                recorded(
                    tenant,
                    &stream,
                    &TenantCreated {
                        tenant_id: tenant,
                        name: "acme".into(),
                    },
                    1,
                ),
                recorded(
                    tenant,
                    &stream,
                    &TenantTokenIssued {
                        token_id,
                        name: "provisioning".into(),
                        token_hash: "ab12".into(),
                    },
                    2,
                ),
            ],
        );
        assert_eq!(changes.tenants[&tenant.0].row.name, "acme");
        assert_eq!(changes.tenants[&tenant.0].row.created_at, at(1));
        let token = &changes.tokens[&token_id].row;
        assert_eq!((token.tenant_id, token.issued_at), (tenant.0, at(2)));
        assert_eq!(token.revoked_at, None);

        let revoke =
            |position| recorded(tenant, &stream, &TenantTokenRevoked { token_id }, position);
        fold_all(&mut changes, &[revoke(3), revoke(4)]);
        assert_eq!(changes.tokens[&token_id].row.revoked_at, Some(at(3)));
    }

    #[test]
    fn events_about_what_the_registry_does_not_have_or_already_has_are_refused() {
        let tenant = TenantId::new();
        let id = Uuid::now_v7();
        let stream = StreamId::system(id);
        let mut changes = RegistryChanges::default();
        let paused = recorded(tenant, &stream, &SystemPaused { reason: None }, 1);
        let error = Registry.fold(&mut changes, &paused).unwrap_err();
        assert!(error.0.contains("no registered system"), "{error}");
        let revoked = recorded(
            tenant,
            &StreamId::tenant(tenant),
            &TenantTokenRevoked {
                token_id: Uuid::now_v7(),
            },
            2,
        );
        assert!(Registry.fold(&mut changes, &revoked).is_err());

        let register = recorded(
            tenant,
            &stream,
            &registration(id, "FL-K", SystemKind::System),
            3,
        );
        Registry.fold(&mut changes, &register).unwrap();
        assert!(Registry.fold(&mut changes, &register).is_err(), "twice");
        let other = Uuid::now_v7();
        let same_key = recorded(
            tenant,
            &StreamId::system(other),
            &registration(other, "FL-K", SystemKind::System),
            4,
        );
        assert!(Registry.fold(&mut changes, &same_key).is_err(), "key taken");
        let elsewhere = recorded(
            tenant,
            &StreamId::system(Uuid::now_v7()),
            &registration(Uuid::now_v7(), "FL-X", SystemKind::System),
            5,
        );
        assert!(
            Registry.fold(&mut changes, &elsewhere).is_err(),
            "system_id differs from the stream's"
        );
        let mut garbled = recorded(tenant, &stream, &SystemResumed {}, 6);
        garbled.event_type = CredentialsRotated::EVENT_TYPE.into();
        let error = Registry.fold(&mut changes, &garbled).unwrap_err();
        assert!(error.0.contains("invalid"), "{error}");
        assert_eq!(changes.systems.len(), 1);
        assert_eq!(changes.systems[&id].row.credentials_version, 1);
    }

    #[test]
    fn other_events_are_ignored_without_being_decoded() {
        let tenant = TenantId::new();
        let mut heartbeat = recorded(
            tenant,
            &StreamId::system(Uuid::now_v7()),
            &events_schema::HeartbeatReceived {
                agent_version: None,
            },
            1,
        );
        heartbeat.payload = serde_json::json!("not even an object");
        let mut changes = RegistryChanges::default();
        Registry.fold(&mut changes, &heartbeat).unwrap();
        assert!(changes.systems.is_empty() && changes.tokens.is_empty());
        let wanted = Wanted::of(std::slice::from_ref(&heartbeat));
        assert!(wanted.system_ids.is_empty(), "load reads nothing for it");
    }
}
