//! Fleetlog's write side: the event store and, on top of it, the ingest APIs and command handlers.
//!
//! # Layout
//!
//! - [`event_store`]: the [`EventStore`](event_store::EventStore) trait and its PostgreSQL
//!   implementation with group commit, plus the live tail readers follow the log with.
//! - [`error`]: [`CommandError`](error::CommandError), the one error type, mapped to HTTP once.
//! - [`credentials`]: system keys, secrets and argon2id hashes, tenant API tokens.
//! - [`registry`]: lookups in the registry read model, and read-your-writes for its commands.
//! - [`auth`]: who is calling; verified system credentials are remembered, not re-hashed.
//! - [`http`]: state, extractors, body limits and the router with its OpenAPI description.
//! - [`extract`]: `Query` and `Path` whose rejections use our error shape.
//! - [`admin`]: tenants, tokens, and registering and managing systems and gateways.
//! - [`lifecycle`]: what pause, resume and decommission do, decided without I/O.
//! - [`liveness_policy`]: a tenant's heartbeat timeout, or one system's override of it.
//! - [`ingest`]: what ingest clients send (heartbeats, inventory, hardware, telemetry, metrics,
//!   alerts), checked and turned into events.
//! - [`intake`]: NATS JetStream intake of gateway telemetry.
//! - [`inventory_rules`]: a tenant's inventory diff rules and change-notification rules.

pub mod admin;
pub mod auth;
pub mod credentials;
pub mod error;
pub mod event_store;
pub mod extract;
pub mod http;
pub mod ingest;
pub mod intake;
pub mod inventory_rules;
pub mod lifecycle;
pub mod liveness_policy;
pub mod registry;
