//! The write API's plumbing: shared state, who-is-calling extractors, bodies with our limits and
//! error shape, and the router with its OpenAPI description.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::Router;
use events_schema::{DomainEvent, Metadata, NewEvent, StreamId, TenantId};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{self, AuthenticatedSystem, SystemAuthenticator};
use crate::credentials;
use crate::error::{Challenge, CommandError};
use crate::event_store::{EventStore, ExpectedVersion, PgEventStore};
use crate::ingest::latest_hashes::LatestInventoryHashes;
use crate::registry::{self, RegistrySync};

/// Limits on what ingest clients may send.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest request body in bytes (API_MAX_REQUEST_SIZE); larger ones get 413.
    pub max_request_bytes: usize,
    /// How far ahead of Fleetlog's clock a report's timestamp may be.
    pub max_clock_skew: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 10 * 1024 * 1024,
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// What every command handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct CommandState {
    /// The event store every accepted command appends to.
    pub store: PgEventStore,
    /// The administrator's bearer token.
    pub admin_token: Arc<str>,
    /// Verifies and remembers system credentials.
    pub systems: Arc<SystemAuthenticator>,
    /// Waits for the registry read model to fold registry events.
    pub registry: Arc<dyn RegistrySync>,
    /// Body size and clock limits.
    pub limits: IngestLimits,
    /// Each system's latest inventory hash, so dedup need not read the latest document.
    pub inventory_hashes: Arc<LatestInventoryHashes>,
}

impl CommandState {
    /// The database pool (registry lookups).
    pub fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }

    /// Waits until the registry has folded everything up to `position`.
    pub async fn registry_caught_up(&self, position: i64) -> Result<(), CommandError> {
        self.registry
            .caught_up(position)
            .await
            .map_err(|reason| CommandError::Internal(reason.into()))
    }

    /// Appends one policy event a tenant set (rules, timeouts) to its `tenant-{id}` stream, as
    /// the tenant API; returns where it was stored.
    pub async fn append_tenant_event<E: DomainEvent + serde::Serialize>(
        &self,
        tenant: TenantId,
        event: &E,
    ) -> Result<StoredEvent, CommandError> {
        let stream = StreamId::tenant(tenant);
        let metadata = Metadata {
            source: Some("tenant-api".into()),
            ..Metadata::default()
        };
        let new = NewEvent::new(tenant, event, chrono::Utc::now()).with_metadata(metadata);
        let outcome = self
            .store
            .append(&stream, ExpectedVersion::Any, vec![new])
            .await?;
        let appended = outcome.events.first().ok_or_else(|| {
            CommandError::internal(std::io::Error::other("an empty append outcome"))
        })?;
        Ok(StoredEvent {
            event_id: appended.event_id.0,
            stream_id: stream.to_string(),
            position: appended.position,
        })
    }
}

/// Where an accepted command's event was stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// The stream it was appended to.
    pub stream_id: String,
    /// Its position in the log.
    pub position: i64,
}

/// Reads a whole body, refusing more than `limit` bytes with a 413.
pub async fn read_limited(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, CommandError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(CommandError::PayloadTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(CommandError::PayloadTooLarge { limit })
        }
        Err(error) => Err(CommandError::bad_request(
            "unreadable_body",
            format!("the request body could not be read: {error}"),
        )),
    }
}

/// The administrator (bearer ADMIN_TOKEN).
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

impl FromRequestParts<CommandState> for AdminCaller {
    type Rejection = CommandError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or(CommandError::Unauthorized(Challenge::Bearer))?;
        if auth::constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
            Ok(Self)
        } else {
            Err(CommandError::Unauthorized(Challenge::Bearer))
        }
    }
}

/// A tenant, through one of its API tokens.
#[derive(Debug, Clone, Copy)]
pub struct TenantCaller {
    /// The tenant the token acts for.
    pub tenant_id: TenantId,
}

impl FromRequestParts<CommandState> for TenantCaller {
    type Rejection = CommandError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or(CommandError::Unauthorized(Challenge::Bearer))?;
        tenant_of_token(state, token).await
    }
}

async fn tenant_of_token(state: &CommandState, token: &str) -> Result<TenantCaller, CommandError> {
    if !token.starts_with(credentials::TOKEN_PREFIX) {
        return Err(CommandError::Unauthorized(Challenge::Bearer));
    }
    let record = registry::token_by_hash(state.pool(), &credentials::token_hash(token)).await?;
    match record {
        Some(record) if record.revoked_at.is_none() => Ok(TenantCaller {
            tenant_id: record.tenant_id,
        }),
        _ => Err(CommandError::Unauthorized(Challenge::Bearer)),
    }
}

/// A system or gateway, through HTTP Basic `system_key:secret`.
#[derive(Debug, Clone)]
pub struct SystemCaller(pub AuthenticatedSystem);

impl FromRequestParts<CommandState> for SystemCaller {
    type Rejection = CommandError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        let (key, secret) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_basic)
            .ok_or(CommandError::Unauthorized(Challenge::Basic))?;
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        state
            .systems
            .authenticate(client, &key, &secret)
            .await
            .map(Self)
    }
}

/// Whoever may report facts that are not tied to one system's own stream (hardware observations,
/// metrics, alerts): a system (Basic) or a tenant (bearer token).
#[derive(Debug, Clone)]
pub enum Reporter {
    /// A system or gateway.
    System(AuthenticatedSystem),
    /// A tenant's tool.
    Tenant(TenantId),
}

impl Reporter {
    /// The tenant the report belongs to.
    pub fn tenant_id(&self) -> TenantId {
        match self {
            Self::System(system) => system.tenant_id,
            Self::Tenant(tenant) => *tenant,
        }
    }

    /// A stable name of the reporter, for idempotency keys and metadata.
    pub fn source(&self) -> String {
        match self {
            Self::System(system) => format!("system:{}", system.system_id),
            Self::Tenant(tenant) => format!("tenant:{tenant}"),
        }
    }
}

impl FromRequestParts<CommandState> for Reporter {
    type Rejection = CommandError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers) {
            return tenant_of_token(state, token)
                .await
                .map(|t| Self::Tenant(t.tenant_id));
        }
        SystemCaller::from_request_parts(parts, state)
            .await
            .map(|s| Self::System(s.0))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::parse_bearer)
}

/// A JSON body read within API_MAX_REQUEST_SIZE: 415 for a non-JSON content type, 413 when too
/// large, 400 for malformed JSON, 422 for JSON of the wrong shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<CommandState> for JsonBody<T> {
    type Rejection = CommandError;

    async fn from_request(request: Request, state: &CommandState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or_default();
            if !is_json(content_type) {
                return Err(CommandError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got {content_type:?}"
                )));
            }
        }
        let bytes = read_limited(&parts.headers, body, state.limits.max_request_bytes).await?;
        parse_json(&bytes).map(Self)
    }
}

/// An optional JSON body: `None` when the body is empty, otherwise like [`JsonBody`].
#[derive(Debug)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<CommandState> for MaybeJson<T> {
    type Rejection = CommandError;

    async fn from_request(request: Request, state: &CommandState) -> Result<Self, Self::Rejection> {
        let body = RawBody::from_request(request, state).await?;
        if body.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if let Some(content_type) = &body.content_type {
            if !is_json(content_type) {
                return Err(CommandError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got {content_type:?}"
                )));
            }
        }
        parse_json(&body.bytes).map(|value| Self(Some(value)))
    }
}

/// Whether a content type is JSON (`application/json`, `application/*+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Longest free-text field a client may send (names, serials, bundle ids, dedup keys).
pub const MAX_FIELD_LEN: usize = 200;

/// A required text field, trimmed: 1 to [`MAX_FIELD_LEN`] bytes, no control characters (422
/// otherwise, naming the field).
pub fn checked_text(field: &str, value: &str) -> Result<String, CommandError> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_FIELD_LEN || value.chars().any(char::is_control) {
        return Err(CommandError::InvalidBody(format!(
            "{field} must be 1 to {MAX_FIELD_LEN} printable characters"
        )));
    }
    Ok(value.to_owned())
}

/// Parses JSON with our error split: syntax → 400, shape → 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CommandError> {
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => CommandError::InvalidBody(error.to_string()),
        _ => CommandError::bad_request("invalid_json", format!("malformed JSON: {error}")),
    })
}

/// Any body, as bytes, within API_MAX_REQUEST_SIZE (telemetry, `lshw -json` uploads).
#[derive(Debug)]
pub struct RawBody {
    /// The declared content type, if any.
    pub content_type: Option<String>,
    /// The bytes as sent.
    pub bytes: axum::body::Bytes,
}

impl FromRequest<CommandState> for RawBody {
    type Rejection = CommandError;

    async fn from_request(request: Request, state: &CommandState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_limited(&parts.headers, body, state.limits.max_request_bytes).await?;
        Ok(Self {
            content_type,
            bytes,
        })
    }
}

/// The OpenAPI description's frame; paths come from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Fleetlog API", description = "Ingest, administration and the event log of Fleetlog."),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, scheme, description) in [
            ("admin", HttpAuthScheme::Bearer, "ADMIN_TOKEN"),
            (
                "tenant",
                HttpAuthScheme::Bearer,
                "a tenant API token (flt_...)",
            ),
            ("system", HttpAuthScheme::Basic, "system_key:secret"),
        ] {
            let http = HttpBuilder::new()
                .scheme(scheme)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(http));
        }
    }
}

fn routes() -> OpenApiRouter<CommandState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::admin::routes())
        .merge(crate::ingest::routes())
        .merge(crate::liveness_policy::routes())
        .merge(crate::inventory_rules::routes())
}

/// Every write route and its OpenAPI description, ready to be merged into the server's router.
pub fn router(state: CommandState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = routes().split_for_parts();
    (router.with_state(state), openapi)
}

/// The OpenAPI description of the write API alone (no state needed).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}
