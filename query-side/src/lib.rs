//! Fleetlog's read side: HTTP queries over read models and over the event log itself.
//!
//! # Layout
//!
//! - [`error`]: [`ApiError`](error::ApiError), the one error type, mapped to HTTP once.
//! - [`auth`]: extractors that say who is asking (the admin token, for now).
//! - [`extract`]: `Query` and `Path` whose rejections use our error shape.
//! - [`admin`]: projection status and parked events (list, retry, skip).
//! - [`event_log`]: paged reads of one stream or of the whole log, for analysts and exports.

use std::sync::Arc;

use axum::Router;
use command_side::event_store::PgEventStore;

pub mod admin;
pub mod auth;
pub mod error;
pub mod event_log;
pub mod extract;

/// What every read handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The event store (read side of it).
    pub events: PgEventStore,
    /// The administrator's bearer token.
    pub admin_token: Arc<str>,
    /// The projectors of this process, for retrying parked events.
    pub projectors: admin::Projectors,
}

/// Every read route, ready to be merged into the server's router.
pub fn router(state: AppState) -> Router {
    event_log::routes().merge(admin::routes()).with_state(state)
}
