//! What ingest clients send, checked and turned into events.
//!
//! - [`api`]: the ingest endpoints (heartbeat, inventory, hardware observations, telemetry,
//!   metrics, alert events).
//! - [`canonical`]: the SHA-256 of an inventory document's canonical form.
//! - [`latest_hashes`]: each system's latest inventory hash, remembered for dedup.
//! - [`lshw`]: the components with serial numbers in the output of `lshw -json`.

pub mod api;
pub mod canonical;
pub mod latest_hashes;
pub mod lshw;

pub use api::routes;
