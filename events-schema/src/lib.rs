//! The catalogue of every event Fleetlog stores: types, schema versions, upcasters, stream naming.
//!
//! This crate does no I/O and depends on no other Fleetlog crate; every other crate depends on it.
//!
//! # Layout
//!
//! - [`ids`]: [`TenantId`], [`EventId`], [`StreamId`] and stream categories, valid by construction.
//! - [`envelope`]: [`NewEvent`] (on its way into the store) and [`RecordedEvent`] (as stored).
//! - [`catalogue`]: one module per stream kind, the [`FleetEvent`] enum, [`json_schemas`].
//! - [`upcast`]: the registry of steps that read older schema versions as the current one.

pub mod catalogue;
pub mod envelope;
pub mod ids;
pub mod upcast;

pub use catalogue::*;
pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use ids::{EventId, StreamCategory, StreamId, TenantId, MAX_STREAM_ID_LEN};

/// Why a stream id or a stored payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The stream id is malformed.
    #[error("invalid stream id {stream_id:?}: {reason}")]
    InvalidStreamId {
        /// The offending id (first 80 characters).
        stream_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No catalogue type has this name.
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    /// The payload does not match its type's schema.
    #[error("invalid {event_type} payload: {reason}")]
    InvalidPayload {
        /// The event type.
        event_type: String,
        /// The deserializer's message.
        reason: String,
    },
    /// The event was written by a newer Fleetlog than this one.
    #[error("{event_type} schema version {stored} is newer than this build's {current}")]
    FutureSchemaVersion {
        /// The event type.
        event_type: String,
        /// Stored version.
        stored: u32,
        /// This build's current version.
        current: u32,
    },
    /// A step of the upcasting chain is missing.
    #[error("no upcaster for {event_type} from schema version {from_version}")]
    MissingUpcaster {
        /// The event type.
        event_type: String,
        /// The version without a step.
        from_version: u32,
    },
}
