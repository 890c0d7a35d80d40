//! Fleetlog's read side: HTTP queries over read models and over the event log itself.
//!
//! # Layout
//!
//! - [`error`]: [`ApiError`](error::ApiError), the one error type, mapped to HTTP once.
//! - [`auth`]: extractors that say who is asking: the admin token, or a tenant's API token.
//! - [`extract`]: `Query` and `Path` whose rejections use our error shape.
//! - [`admin`]: projection status and parked events (list, retry, skip).
//! - [`event_log`]: paged reads of one stream or of the whole log, for analysts and exports.
//! - [`liveness`]: a tenant's systems (registry and liveness joined), one system's status
//!   intervals, and counts for the fleet.
//! - [`inventory`]: a system's latest inventory, its inventory as of a time, its diff
//!   timeline, and the changes across the tenant's fleet.

use std::sync::Arc;

use axum::Router;
use command_side::event_store::PgEventStore;
use utoipa_axum::router::OpenApiRouter;

pub mod admin;
pub mod auth;
pub mod error;
pub mod event_log;
pub mod extract;
pub mod inventory;
pub mod liveness;

/// What every read handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The event store (read side of it).
    pub events: PgEventStore,
    /// The administrator's bearer token.
    pub admin_token: Arc<str>,
    /// The projectors of this process, for retrying parked events.
    pub projectors: admin::Projectors,
    /// The heartbeat timeout the liveness monitor applies when neither the system nor its tenant
    /// sets one (HEARTBEAT_TIMEOUT_MINUTES), so the read API reports the timeout that is in force.
    pub default_timeout_minutes: i32,
}

fn routes() -> OpenApiRouter<AppState> {
    event_log::routes()
        .merge(admin::routes())
        .merge(liveness::routes())
        .merge(inventory::routes())
}

/// Every read route and its OpenAPI paths, ready to be merged into the server's router.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = routes().split_for_parts();
    (router.with_state(state), openapi)
}

/// The OpenAPI paths of the read API alone (no state needed).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}
