//! Intake of messages from NATS JetStream.
//!
//! - [`jetstream`]: gateway telemetry from `telemetry.data.{tenant}.{gateway}`.

pub mod jetstream;
