//! The `fleetlog` binary's pieces: configuration, start-up, the HTTP server, and the commands.
//!
//! # Layout
//!
//! - [`config`]: every setting, from environment variables with local defaults.
//! - [`telemetry`]: logs and the Prometheus recorder, set up once.
//! - [`database`]: connecting, creating the database, migrating.
//! - [`http`]: the one router (read API, health, readiness, metrics).
//! - [`serve`]: `fleetlog serve`.
//! - [`schemas`]: the JSON Schemas of the catalogue in `docs/events/`.
//! - [`bench`]: `fleetlog bench ...`, each against a baseline from the same run.

pub mod bench;
pub mod config;
pub mod database;
pub mod http;
pub mod schemas;
pub mod serve;
pub mod telemetry;
