//! How long a tenant's systems may stay silent before the liveness monitor declares them
//! inactive: `PUT /api/liveness/policy` records a LivenessPolicySet on the tenant's stream, for the
//! whole tenant or as an override for one of its systems.
//!
//! The answer comes once the event is durable; the liveness read model and the monitor pick the
//! policy up when the `liveness` projector folds it (moments later), so there is no catch-up wait.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use events_schema::{LivenessPolicySet, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{CommandError, Result};
use crate::http::{CommandState, JsonBody, TenantCaller};
use crate::registry::{self, SystemStatus};

/// The shortest heartbeat timeout a policy may set, in minutes.
pub const MIN_TIMEOUT_MINUTES: i64 = 1;
/// The longest heartbeat timeout a policy may set, in minutes (one week).
pub const MAX_TIMEOUT_MINUTES: i64 = 10_080;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new().routes(routes!(set_liveness_policy))
}

/// A heartbeat timeout to set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLivenessPolicy {
    /// Minutes without a sign of life before a system is declared silent, 1 to 10080.
    pub heartbeat_timeout_minutes: i64,
    /// One of the tenant's systems or gateways to override the tenant's timeout for; absent to
    /// set the tenant's timeout.
    #[serde(default)]
    pub system_id: Option<Uuid>,
}

/// The policy was recorded: the event is durable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LivenessPolicyAccepted {
    /// Id of the LivenessPolicySet event.
    pub event_id: Uuid,
    /// Its stream (`tenant-{id}`).
    pub stream_id: String,
    /// Its place in the global log.
    pub position: i64,
    /// The timeout set, in minutes.
    pub heartbeat_timeout_minutes: u32,
    /// The system it overrides the tenant's timeout for; absent for the tenant's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<Uuid>,
}

/// Decides the event of a policy command, without I/O: 422 for a timeout out of range.
pub fn decide(command: &SetLivenessPolicy) -> Result<LivenessPolicySet> {
    let minutes = command.heartbeat_timeout_minutes;
    if !(MIN_TIMEOUT_MINUTES..=MAX_TIMEOUT_MINUTES).contains(&minutes) {
        return Err(CommandError::InvalidBody(format!(
            "heartbeat_timeout_minutes must be between {MIN_TIMEOUT_MINUTES} and \
             {MAX_TIMEOUT_MINUTES}, not {minutes}"
        )));
    }
    Ok(LivenessPolicySet {
        system_id: command.system_id,
        heartbeat_timeout_minutes: u32::try_from(minutes).map_err(CommandError::internal)?,
    })
}

/// Sets the tenant's heartbeat timeout, or one system's override of it.
#[utoipa::path(put, path = "/api/liveness/policy", tag = "liveness", security(("tenant" = [])),
    request_body = SetLivenessPolicy,
    responses((status = 202, body = LivenessPolicyAccepted),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant_id))]
async fn set_liveness_policy(
    caller: TenantCaller,
    State(state): State<CommandState>,
    JsonBody(command): JsonBody<SetLivenessPolicy>,
) -> Result<(StatusCode, Json<LivenessPolicyAccepted>)> {
    let event = decide(&command)?;
    if let Some(system_id) = event.system_id {
        check_own_system(&state, caller.tenant_id, system_id).await?;
    }
    let accepted = record(&state, caller.tenant_id, event).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// 404 unless the system is the tenant's; 409 if it is decommissioned.
async fn check_own_system(state: &CommandState, tenant: TenantId, system_id: Uuid) -> Result<()> {
    let system = registry::system_of_tenant(state.pool(), tenant, system_id)
        .await?
        .ok_or_else(|| CommandError::NotFound(format!("no system {system_id} in this tenant")))?;
    if system.status == SystemStatus::Decommissioned {
        return Err(CommandError::conflict(
            "system_decommissioned",
            format!("system {system_id} is decommissioned"),
        ));
    }
    Ok(())
}

/// Appends the policy to the tenant's stream.
async fn record(
    state: &CommandState,
    tenant: TenantId,
    event: LivenessPolicySet,
) -> Result<LivenessPolicyAccepted> {
    let stored = state.append_tenant_event(tenant, &event).await?;
    tracing::info!(system_id = ?event.system_id, minutes = event.heartbeat_timeout_minutes, "liveness policy set");
    Ok(LivenessPolicyAccepted {
        event_id: stored.event_id,
        stream_id: stored.stream_id,
        position: stored.position,
        heartbeat_timeout_minutes: event.heartbeat_timeout_minutes,
        system_id: event.system_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(minutes: i64, system_id: Option<Uuid>) -> SetLivenessPolicy {
        SetLivenessPolicy {
            heartbeat_timeout_minutes: minutes,
            system_id,
        }
    }

    #[test]
    fn a_timeout_within_a_minute_and_a_week_becomes_the_event() {
        let system = Uuid::now_v7();
        for (minutes, system_id) in [(1, None), (10_080, Some(system))] {
            assert_eq!(
                decide(&command(minutes, system_id)).unwrap(),
                LivenessPolicySet {
                    system_id,
                    heartbeat_timeout_minutes: minutes as u32,
                }
            );
        }
    }

    #[test]
    fn a_timeout_out_of_range_is_refused() {
        for minutes in [0, -5, 10_081, i64::MAX] {
            let error = decide(&command(minutes, None)).unwrap_err();
            assert!(matches!(error, CommandError::InvalidBody(_)), "{minutes}");
        }
    }
}
