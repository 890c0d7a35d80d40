//! The `fleetlog` binary's pieces: configuration, start-up, the HTTP server, and the commands.
//!
//! # Layout
//!
//! - [`config`]: every setting, from environment variables with local defaults.
//! - [`telemetry`]: logs and the Prometheus recorder, set up once.
//! - [`database`]: connecting, creating the database, migrating.
//! - [`http`]: the one router (read API, health, readiness, metrics).
//! - [`operate`]: `fleetlog status` and `fleetlog parked ...`.
//! - [`projectors`]: every projector, by name.
//! - [`serve`]: `fleetlog serve` and `fleetlog project`.
//! - [`schemas`]: the JSON Schemas of the catalogue in `docs/events/`.
//! - [`bench`]: `fleetlog bench ...`, each against a baseline from the same run.

pub mod bench;
pub mod config;
pub mod database;
pub mod http;
pub mod operate;
pub mod projectors;
pub mod reactors;
pub mod schemas;
pub mod serve;
pub mod telemetry;
