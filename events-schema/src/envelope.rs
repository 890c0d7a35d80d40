//! The envelope every event travels in: what the store keeps around a payload.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{DomainEvent, EventId, FleetEvent, SchemaError, StreamId, TenantId};

/// Where an event came from and why: kept with the event, never part of its meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Metadata {
    /// Groups every event caused by one request or one intake message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event (or command) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Which part of Fleetlog or which client produced it (`http`, `jetstream`, a reactor's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The network address of the client that sent it, when it came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

/// An event on its way into the store: everything but the positions the store assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id; re-appending a stored id is an idempotent success.
    pub event_id: EventId,
    /// The catalogue name of the payload's type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The tenant the event belongs to.
    pub tenant_id: TenantId,
    /// The payload as JSON.
    pub payload: Value,
    /// Opaque bytes stored verbatim beside the payload (telemetry); never decoded.
    pub data: Option<Vec<u8>>,
    /// Correlation, causation, source.
    pub metadata: Metadata,
    /// When the sender says it happened (the sender's clock).
    pub occurred_at: DateTime<Utc>,
}

impl NewEvent {
    /// Wraps a catalogue event with a fresh id and empty metadata.
    pub fn new<E: DomainEvent>(tenant_id: TenantId, event: &E, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: E::EVENT_TYPE.to_owned(),
            schema_version: E::SCHEMA_VERSION,
            tenant_id,
            payload: serde_json::to_value(event).expect("catalogue events serialize to JSON"),
            data: None,
            metadata: Metadata::default(),
            occurred_at,
        }
    }

    /// Wraps a payload of type `E` that is already JSON (built without a copy, e.g.
    /// [`InventoryReported::payload`](crate::InventoryReported::payload)).
    pub fn from_payload<E: DomainEvent>(
        tenant_id: TenantId,
        payload: Value,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: E::EVENT_TYPE.to_owned(),
            schema_version: E::SCHEMA_VERSION,
            tenant_id,
            payload,
            data: None,
            metadata: Metadata::default(),
            occurred_at,
        }
    }

    /// Wraps any event of the catalogue enum.
    pub fn from_fleet_event(
        tenant_id: TenantId,
        event: &FleetEvent,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            tenant_id,
            payload: event.to_payload(),
            data: None,
            metadata: Metadata::default(),
            occurred_at,
        }
    }

    /// Sets the event id (idempotent ingest: a client- or input-derived id).
    pub fn with_event_id(mut self, event_id: EventId) -> Self {
        self.event_id = event_id;
        self
    }

    /// Attaches opaque bytes, stored verbatim.
    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = Some(data);
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored: the envelope with the positions the store gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecordedEvent {
    /// Place in the one global, commit-ordered sequence (dense, starting at 1).
    pub position: i64,
    /// Unique id of the event.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Place within its stream (dense, starting at 1).
    pub stream_version: i64,
    /// Catalogue name of the payload's type.
    pub event_type: String,
    /// Schema version the payload was written with (it may be older than the current one).
    pub schema_version: u32,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The payload as written.
    pub payload: Value,
    /// Opaque bytes stored verbatim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_base64")]
    #[schemars(with = "Option<String>")]
    pub data: Option<Vec<u8>>,
    /// Correlation, causation, source.
    pub metadata: Metadata,
    /// The sender's clock.
    pub occurred_at: DateTime<Utc>,
    /// Fleetlog's clock (PostgreSQL's `now()`) when the appending transaction started; order by
    /// `position`, not by this.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the payload into the current version of its catalogue type, upcasting older
    /// versions step by step.
    pub fn decode(&self) -> Result<FleetEvent, SchemaError> {
        FleetEvent::decode(&self.event_type, self.schema_version, self.payload.clone())
    }
}

/// Opaque bytes travel as standard base64 in JSON.
mod opt_base64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match data {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
