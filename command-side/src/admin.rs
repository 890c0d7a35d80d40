//! Tenants, their API tokens, and the systems and gateways of a tenant: every change an event.
//!
//! The administrator (ADMIN_TOKEN) creates tenants and issues them tokens; a tenant token
//! registers systems and gateways, rotates their credentials, pauses, resumes and decommissions
//! them. Each command appends its event, waits until the registry read model has folded it (so
//! a new key or token works at once), and, for systems, announces the change so every process
//! forgets cached verifications.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use events_schema::{
    CredentialsRotated, FleetEvent, Metadata, NewEvent, StreamId, SystemKind, SystemRegistered,
    TenantCreated, TenantId, TenantTokenIssued, TenantTokenRevoked,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::credentials::{self, SystemKey};
use crate::error::{CommandError, Result};
use crate::event_store::{EventStore, ExpectedVersion};
use crate::extract::Path;
use crate::http::{checked_text, AdminCaller, CommandState, JsonBody, MaybeJson, TenantCaller};
use crate::lifecycle::{self, StatusCommand, StatusRefusal};
use crate::registry::{self, system_stream, SystemRecord, SystemStatus, TenantRecord};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(register_system))
        .routes(routes!(get_system))
        .routes(routes!(rotate_credentials))
        .routes(routes!(pause_system))
        .routes(routes!(resume_system))
        .routes(routes!(decommission_system))
}

fn admin_metadata() -> Metadata {
    Metadata {
        source: Some("admin-api".into()),
        ..Metadata::default()
    }
}

/// Appends one registry event and waits until the registry has folded it (read-your-writes).
/// The event is durable once appended: if only the wait fails, the command still succeeds (the
/// live projector folds it moments later) rather than answering 500 for something that happened,
/// which a client would retry into a second credential.
async fn committed(
    state: &CommandState,
    tenant: TenantId,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: FleetEvent,
) -> Result<i64> {
    let event =
        NewEvent::from_fleet_event(tenant, &event, Utc::now()).with_metadata(admin_metadata());
    let outcome = state.store.append(stream, expected, vec![event]).await?;
    let position = outcome.events.last().map_or(0, |e| e.position);
    if let Err(error) = state.registry_caught_up(position).await {
        metrics::counter!("fleetlog_registry_catch_up_errors_total").increment(1);
        tracing::warn!(%error, position, "registry catch-up failed; the live projector will fold the event");
    }
    Ok(position)
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTenant {
    /// Unique name.
    pub name: String,
}

/// A tenant was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreatedResponse {
    /// The new tenant's id.
    #[schema(value_type = Uuid)]
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Position of the TenantCreated event.
    pub position: i64,
}

/// Creates a tenant.
#[utoipa::path(post, path = "/api/admin/tenants", tag = "admin", security(("admin" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = TenantCreatedResponse), (status = 409, body = crate::error::ErrorBody)))]
async fn create_tenant(
    _: AdminCaller,
    State(state): State<CommandState>,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreatedResponse>)> {
    let name = checked_text("name", &body.name)?;
    if registry::tenant_name_taken(state.pool(), &name).await? {
        return Err(CommandError::conflict(
            "tenant_exists",
            format!("a tenant named {name:?} exists"),
        ));
    }
    let tenant_id = TenantId::new();
    let event = TenantCreated {
        tenant_id,
        name: name.clone(),
    };
    let position = committed(
        &state,
        tenant_id,
        &StreamId::tenant(tenant_id),
        ExpectedVersion::NoStream,
        event.into(),
    )
    .await?;
    tracing::info!(%tenant_id, %name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreatedResponse {
            tenant_id,
            name,
            position,
        }),
    ))
}

/// Every tenant.
#[utoipa::path(get, path = "/api/admin/tenants", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Vec<TenantRecord>)))]
async fn list_tenants(
    _: AdminCaller,
    State(state): State<CommandState>,
) -> Result<Json<Vec<TenantRecord>>> {
    Ok(Json(registry::tenants(state.pool()).await?))
}

/// A token to issue.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueToken {
    /// What the token is for.
    pub name: String,
}

/// A token was issued; the token itself is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssuedResponse {
    /// The token's id (to revoke it by).
    pub token_id: Uuid,
    /// The token: send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    /// The tenant it acts for.
    #[schema(value_type = Uuid)]
    pub tenant_id: TenantId,
    /// What it is for.
    pub name: String,
}

/// Issues an API token to a tenant.
#[utoipa::path(post, path = "/api/admin/tenants/{tenant_id}/tokens", tag = "admin", security(("admin" = [])),
    params(("tenant_id" = Uuid, Path)), request_body = IssueToken,
    responses((status = 201, body = TokenIssuedResponse), (status = 404, body = crate::error::ErrorBody)))]
async fn issue_token(
    _: AdminCaller,
    State(state): State<CommandState>,
    Path(tenant_id): Path<Uuid>,
    JsonBody(body): JsonBody<IssueToken>,
) -> Result<(StatusCode, Json<TokenIssuedResponse>)> {
    let tenant_id = TenantId(tenant_id);
    let name = checked_text("name", &body.name)?;
    registry::tenant(state.pool(), tenant_id)
        .await?
        .ok_or_else(|| CommandError::NotFound(format!("no tenant {tenant_id}")))?;
    let token = credentials::generate_token();
    let token_id = Uuid::now_v7();
    let event = TenantTokenIssued {
        token_id,
        name: name.clone(),
        token_hash: credentials::token_hash(&token),
    };
    committed(
        &state,
        tenant_id,
        &StreamId::tenant(tenant_id),
        ExpectedVersion::Any,
        event.into(),
    )
    .await?;
    tracing::info!(%tenant_id, %token_id, "tenant token issued");
    Ok((
        StatusCode::CREATED,
        Json(TokenIssuedResponse {
            token_id,
            token,
            tenant_id,
            name,
        }),
    ))
}

/// Revokes a tenant API token.
#[utoipa::path(delete, path = "/api/admin/tenants/{tenant_id}/tokens/{token_id}", tag = "admin", security(("admin" = [])),
    params(("tenant_id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn revoke_token(
    _: AdminCaller,
    State(state): State<CommandState>,
    Path((tenant_id, token_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let tenant_id = TenantId(tenant_id);
    if registry::token_tenant(state.pool(), token_id).await? != Some(tenant_id) {
        return Err(CommandError::NotFound(format!(
            "no token {token_id} of tenant {tenant_id}"
        )));
    }
    committed(
        &state,
        tenant_id,
        &StreamId::tenant(tenant_id),
        ExpectedVersion::Any,
        TenantTokenRevoked { token_id }.into(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Server or gateway, on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A server with an agent (heartbeats, inventory).
    #[default]
    System,
    /// An IoT gateway (telemetry).
    Gateway,
}

impl From<Kind> for SystemKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::System => Self::System,
            Kind::Gateway => Self::Gateway,
        }
    }
}

impl From<SystemKind> for Kind {
    fn from(kind: SystemKind) -> Self {
        match kind {
            SystemKind::System => Self::System,
            SystemKind::Gateway => Self::Gateway,
        }
    }
}

/// A system or gateway to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSystem {
    /// Human-readable name.
    pub name: String,
    /// `system` (default) or `gateway`.
    #[serde(default)]
    pub kind: Kind,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Credentials of a system: the secret is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsResponse {
    /// The system's id.
    pub system_id: Uuid,
    /// Its key: the user part of HTTP Basic.
    pub system_key: String,
    /// Its secret: the password part of HTTP Basic. Shown once; only its argon2id hash is kept.
    pub secret: String,
    /// Server or gateway.
    pub kind: Kind,
    /// Position of the event that set these credentials.
    pub position: i64,
}

/// A system as the registry knows it (never its secret or hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemView {
    /// Its id.
    pub system_id: Uuid,
    /// Its key.
    pub system_key: String,
    /// Server or gateway.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Active, paused or decommissioned.
    pub status: SystemStatus,
    /// 1 at registration, +1 per rotation.
    pub credentials_version: i32,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// When its credentials or status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<SystemRecord> for SystemView {
    fn from(r: SystemRecord) -> Self {
        Self {
            system_id: r.system_id,
            system_key: r.system_key,
            kind: r.kind.into(),
            name: r.name,
            labels: r.labels,
            status: r.status,
            credentials_version: r.credentials_version,
            registered_at: r.registered_at,
            updated_at: r.updated_at,
        }
    }
}

/// Registers a system or gateway and returns its credentials.
#[utoipa::path(post, path = "/api/systems", tag = "systems", security(("tenant" = [])),
    request_body = RegisterSystem,
    responses((status = 201, body = CredentialsResponse), (status = 422, body = crate::error::ErrorBody)))]
async fn register_system(
    caller: TenantCaller,
    State(state): State<CommandState>,
    JsonBody(body): JsonBody<RegisterSystem>,
) -> Result<(StatusCode, Json<CredentialsResponse>)> {
    let name = checked_text("name", &body.name)?;
    if body.labels.len() > 64
        || body
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 100 || v.len() > 500)
    {
        return Err(CommandError::InvalidBody(
            "at most 64 labels, keys 1-100 and values up to 500 characters".into(),
        ));
    }
    let (secret, secret_hash) = new_secret().await?;
    let kind = SystemKind::from(body.kind);
    // The id derives from the key, so a (vanishingly rare) key collision shows up as an existing
    // stream: draw another key.
    for _ in 0..3 {
        let key = SystemKey::generate();
        let system_id = key.system_id();
        let event = SystemRegistered {
            system_id,
            system_key: key.to_string(),
            name: name.clone(),
            kind,
            secret_hash: secret_hash.clone(),
            labels: body.labels.clone(),
        };
        let stream = system_stream(kind, system_id);
        match committed(
            &state,
            caller.tenant_id,
            &stream,
            ExpectedVersion::NoStream,
            event.into(),
        )
        .await
        {
            Ok(position) => {
                metrics::counter!("fleetlog_systems_registered_total").increment(1);
                tracing::info!(tenant_id = %caller.tenant_id, %system_id, system_key = %key, "system registered");
                return Ok((
                    StatusCode::CREATED,
                    Json(CredentialsResponse {
                        system_id,
                        system_key: key.to_string(),
                        secret,
                        kind: body.kind,
                        position,
                    }),
                ));
            }
            Err(CommandError::Conflict {
                code: "wrong_expected_version",
                ..
            }) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(CommandError::internal(std::io::Error::other(
        "could not draw an unused system key",
    )))
}

/// A fresh secret and its argon2id hash, hashed off the async runtime.
async fn new_secret() -> Result<(String, String)> {
    let secret = credentials::generate_secret();
    let for_hashing = secret.clone();
    let hash = tokio::task::spawn_blocking(move || credentials::hash_secret(&for_hashing))
        .await
        .map_err(CommandError::internal)?;
    Ok((secret, hash))
}

async fn own_system(
    state: &CommandState,
    caller: &TenantCaller,
    system_id: Uuid,
) -> Result<SystemRecord> {
    registry::system_of_tenant(state.pool(), caller.tenant_id, system_id)
        .await?
        .ok_or_else(|| CommandError::NotFound(format!("no system {system_id} in this tenant")))
}

/// One system or gateway of the tenant.
#[utoipa::path(get, path = "/api/systems/{system_id}", tag = "systems", security(("tenant" = [])),
    params(("system_id" = Uuid, Path)), responses((status = 200, body = SystemView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_system(
    caller: TenantCaller,
    State(state): State<CommandState>,
    Path(system_id): Path<Uuid>,
) -> Result<Json<SystemView>> {
    Ok(Json(own_system(&state, &caller, system_id).await?.into()))
}

/// Appends a change of a system and waits for the registry (whose fold makes every process forget
/// cached verifications of it).
async fn change_system(
    state: &CommandState,
    system: &SystemRecord,
    event: FleetEvent,
) -> Result<i64> {
    let stream = system_stream(system.kind, system.system_id);
    let position = committed(
        state,
        system.tenant_id,
        &stream,
        ExpectedVersion::Any,
        event,
    )
    .await?;
    // The registry projector announces the change to every process when it folds it; this
    // process forgets at once.
    state.systems.forget(&system.system_key);
    Ok(position)
}

fn refuse_if_decommissioned(system: &SystemRecord) -> Result<()> {
    if system.status == SystemStatus::Decommissioned {
        return Err(CommandError::conflict(
            "system_decommissioned",
            StatusRefusal::Decommissioned.to_string(),
        ));
    }
    Ok(())
}

/// Decides a status command ([`lifecycle::decide`]) and records its event, if any.
async fn apply_status_command(
    state: &CommandState,
    caller: &TenantCaller,
    system_id: Uuid,
    command: StatusCommand,
) -> Result<Json<StatusResponse>> {
    let system = own_system(state, caller, system_id).await?;
    let decision = lifecycle::decide(system.status, command)
        .map_err(|refusal| CommandError::conflict("system_decommissioned", refusal.to_string()))?;
    let changed = decision.event.is_some();
    if let Some(event) = decision.event {
        change_system(state, &system, event).await?;
    }
    Ok(Json(StatusResponse {
        system_id,
        status: decision.status,
        changed,
    }))
}

/// Replaces a system's secret; the old one stops working at once.
#[utoipa::path(post, path = "/api/systems/{system_id}/credentials", tag = "systems", security(("tenant" = [])),
    params(("system_id" = Uuid, Path)),
    responses((status = 201, body = CredentialsResponse), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
async fn rotate_credentials(
    caller: TenantCaller,
    State(state): State<CommandState>,
    Path(system_id): Path<Uuid>,
) -> Result<(StatusCode, Json<CredentialsResponse>)> {
    let system = own_system(&state, &caller, system_id).await?;
    refuse_if_decommissioned(&system)?;
    let (secret, secret_hash) = new_secret().await?;
    let event = CredentialsRotated {
        system_key: system.system_key.clone(),
        secret_hash,
    };
    let position = change_system(&state, &system, event.into()).await?;
    tracing::info!(%system_id, "credentials rotated");
    Ok((
        StatusCode::CREATED,
        Json(CredentialsResponse {
            system_id,
            system_key: system.system_key,
            secret,
            kind: system.kind.into(),
            position,
        }),
    ))
}

/// Why a system is paused or decommissioned, for the audit trail.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Free text.
    pub reason: Option<String>,
}

/// A system's status after a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// The system.
    pub system_id: Uuid,
    /// Its status now.
    pub status: SystemStatus,
    /// Whether this command changed anything (false when it already was in that status).
    pub changed: bool,
}

/// Refuses the system's reports until it is resumed; it raises no liveness alerts meanwhile.
#[utoipa::path(post, path = "/api/systems/{system_id}/pause", tag = "systems", security(("tenant" = [])),
    params(("system_id" = Uuid, Path)), request_body(content = Option<Reason>),
    responses((status = 200, body = StatusResponse), (status = 409, body = crate::error::ErrorBody)))]
async fn pause_system(
    caller: TenantCaller,
    State(state): State<CommandState>,
    Path(system_id): Path<Uuid>,
    MaybeJson(body): MaybeJson<Reason>,
) -> Result<Json<StatusResponse>> {
    apply_status_command(
        &state,
        &caller,
        system_id,
        StatusCommand::Pause {
            reason: body.and_then(|b| b.reason),
        },
    )
    .await
}

/// Accepts a paused system's reports again.
#[utoipa::path(post, path = "/api/systems/{system_id}/resume", tag = "systems", security(("tenant" = [])),
    params(("system_id" = Uuid, Path)),
    responses((status = 200, body = StatusResponse), (status = 409, body = crate::error::ErrorBody)))]
async fn resume_system(
    caller: TenantCaller,
    State(state): State<CommandState>,
    Path(system_id): Path<Uuid>,
) -> Result<Json<StatusResponse>> {
    apply_status_command(&state, &caller, system_id, StatusCommand::Resume).await
}

/// Retires a system for good: its credentials stop working; its history stays.
#[utoipa::path(post, path = "/api/systems/{system_id}/decommission", tag = "systems", security(("tenant" = [])),
    params(("system_id" = Uuid, Path)), request_body(content = Option<Reason>),
    responses((status = 200, body = StatusResponse)))]
async fn decommission_system(
    caller: TenantCaller,
    State(state): State<CommandState>,
    Path(system_id): Path<Uuid>,
    MaybeJson(body): MaybeJson<Reason>,
) -> Result<Json<StatusResponse>> {
    apply_status_command(
        &state,
        &caller,
        system_id,
        StatusCommand::Decommission {
            reason: body.and_then(|b| b.reason),
        },
    )
    .await
}
