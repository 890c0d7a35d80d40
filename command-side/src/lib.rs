//! Fleetlog's write side: the event store and, on top of it, the ingest APIs and command handlers.
//!
//! # Layout
//!
//! - [`event_store`]: the [`EventStore`](event_store::EventStore) trait and its PostgreSQL
//!   implementation with group commit, plus the live tail readers follow the log with.
//! - [`ingest`]: what ingest clients send, parsed and checked before it becomes events
//!   (canonical inventory hashes, `lshw -json` observations).
//! - [`intake`]: NATS JetStream intake of gateway telemetry.

pub mod event_store;
pub mod ingest;
pub mod intake;
