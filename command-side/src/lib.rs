//! Fleetlog's write side: the event store and, on top of it, the ingest APIs and command handlers.
//!
//! # Layout
//!
//! - [`event_store`]: the [`EventStore`](event_store::EventStore) trait and its PostgreSQL
//!   implementation with group commit, plus the live tail readers follow the log with.

pub mod event_store;
