//! What ingest clients send, parsed and checked before it becomes events.
//!
//! - [`canonical`]: the SHA-256 of an inventory document's canonical form.
//! - [`lshw`]: the components with serial numbers in the output of `lshw -json`.

pub mod canonical;
pub mod lshw;
