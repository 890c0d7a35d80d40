//! Lookups in the registry read model (tenants, tokens, systems), and how commands that change
//! it make their change visible before they answer.
//!
//! The tables are folded by the `registry` projector (in the projections crate) from
//! TenantCreated, TenantTokenIssued/Revoked, SystemRegistered, CredentialsRotated and the
//! pause/resume/decommission events. A command that appends one of those waits, through
//! [`RegistrySync`], until the projector has folded it, so a key or token handed to a client
//! works on the client's very next request. The projector's fold announces every changed system
//! on [`CREDENTIALS_CHANNEL`], so every process drops what it cached about it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events_schema::{StreamId, SystemKind, TenantId};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

/// `NOTIFY` channel on which a changed system's key is announced (payload: the system key).
pub const CREDENTIALS_CHANNEL: &str = "fleetlog_credentials";

/// Where a registered system stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemStatus {
    /// Reports are accepted.
    Active,
    /// Reports are refused until it is resumed.
    Paused,
    /// Gone for good; its history stays.
    Decommissioned,
}

impl SystemStatus {
    /// Reads a stored status; anything unknown is an error, never "active".
    fn parse(raw: &str) -> Result<Self, sqlx::Error> {
        match raw {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "decommissioned" => Ok(Self::Decommissioned),
            other => Err(sqlx::Error::Decode(
                format!("unknown system status {other:?}").into(),
            )),
        }
    }
}

/// A system or gateway as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemRecord {
    /// Its id (derived from its key).
    pub system_id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The public key it authenticates with.
    pub system_key: String,
    /// Server or gateway.
    pub kind: SystemKind,
    /// Human-readable name.
    pub name: String,
    /// Labels chosen at registration.
    pub labels: BTreeMap<String, String>,
    /// argon2id hash of its current secret.
    pub secret_hash: String,
    /// 1 at registration, +1 per rotation.
    pub credentials_version: i32,
    /// Active, paused or decommissioned.
    pub status: SystemStatus,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// When its credentials or status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A tenant as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantRecord {
    /// Its id.
    #[schema(value_type = Uuid)]
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A tenant API token as the registry knows it (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// The token's id.
    pub token_id: Uuid,
    /// The tenant it acts for.
    pub tenant_id: TenantId,
    /// What it is for.
    pub name: String,
    /// Set once revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Waits until the registry projector has folded the log up to a position. The binary wires it
/// to the projector's runner; command handlers call it after appending registry events.
pub trait RegistrySync: Send + Sync {
    /// Resolves once every event up to and including `position` is in the registry tables.
    fn caught_up(&self, position: i64) -> BoxFuture<'_, Result<(), String>>;
}

/// The stream of a system (`system-{id}`) or gateway (`gateway-{id}`).
pub fn system_stream(kind: SystemKind, system_id: Uuid) -> StreamId {
    match kind {
        SystemKind::System => StreamId::system(system_id),
        SystemKind::Gateway => StreamId::gateway(system_id),
    }
}

const SYSTEM_COLUMNS: &str = "system_id, tenant_id, system_key, kind, name, labels, secret_hash, \
     credentials_version, status, registered_at, updated_at";

fn system_from_row(row: &sqlx::postgres::PgRow) -> Result<SystemRecord, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let labels: sqlx::types::Json<BTreeMap<String, String>> = row.try_get("labels")?;
    let status: String = row.try_get("status")?;
    Ok(SystemRecord {
        system_id: row.try_get("system_id")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        system_key: row.try_get("system_key")?,
        kind: SystemKind::from_name(&kind),
        name: row.try_get("name")?,
        labels: labels.0,
        secret_hash: row.try_get("secret_hash")?,
        credentials_version: row.try_get("credentials_version")?,
        status: SystemStatus::parse(&status)?,
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The system or gateway with this key, in any tenant.
pub async fn system_by_key(
    db: impl PgExecutor<'_>,
    system_key: &str,
) -> Result<Option<SystemRecord>, sqlx::Error> {
    let sql = format!("SELECT {SYSTEM_COLUMNS} FROM registry_systems WHERE system_key = $1");
    sqlx::query(&sql)
        .bind(system_key)
        .fetch_optional(db)
        .await?
        .map(|row| system_from_row(&row))
        .transpose()
}

/// The system or gateway with this id, if it belongs to `tenant`.
pub async fn system_of_tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    system_id: Uuid,
) -> Result<Option<SystemRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {SYSTEM_COLUMNS} FROM registry_systems WHERE tenant_id = $1 AND system_id = $2"
    );
    sqlx::query(&sql)
        .bind(tenant.0)
        .bind(system_id)
        .fetch_optional(db)
        .await?
        .map(|row| system_from_row(&row))
        .transpose()
}

/// The tenant with this id.
pub async fn tenant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<Option<TenantRecord>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tenant_id, name, created_at FROM registry_tenants WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_optional(db)
    .await?;
    row.map(|row| tenant_from_row(&row)).transpose()
}

/// Every tenant, by name.
pub async fn tenants(db: impl PgExecutor<'_>) -> Result<Vec<TenantRecord>, sqlx::Error> {
    sqlx::query("SELECT tenant_id, name, created_at FROM registry_tenants ORDER BY name, tenant_id")
        .fetch_all(db)
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
}

/// Whether a tenant with this name exists.
pub async fn tenant_name_taken(db: impl PgExecutor<'_>, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM registry_tenants WHERE name = $1)")
        .bind(name)
        .fetch_one(db)
        .await
}

fn tenant_from_row(row: &sqlx::postgres::PgRow) -> Result<TenantRecord, sqlx::Error> {
    Ok(TenantRecord {
        tenant_id: TenantId(row.try_get("tenant_id")?),
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The token stored under this hash.
pub async fn token_by_hash(
    db: impl PgExecutor<'_>,
    token_hash: &str,
) -> Result<Option<TokenRecord>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT token_id, tenant_id, name, revoked_at FROM registry_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        Ok(TokenRecord {
            token_id: row.try_get("token_id")?,
            tenant_id: TenantId(row.try_get("tenant_id")?),
            name: row.try_get("name")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    })
    .transpose()
}

/// The tenant a token id belongs to, if it exists.
pub async fn token_tenant(
    db: impl PgExecutor<'_>,
    token_id: Uuid,
) -> Result<Option<TenantId>, sqlx::Error> {
    let tenant: Option<Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM registry_tokens WHERE token_id = $1")
            .bind(token_id)
            .fetch_optional(db)
            .await?;
    Ok(tenant.map(TenantId))
}
