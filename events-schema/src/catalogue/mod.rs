//! The catalogue: every event type Fleetlog stores, as one enum over the per-stream modules.

pub mod alert;
pub mod asset;
pub mod metrics;
pub mod system;
pub mod tenant;

use serde_json::Value;

use crate::upcast::Upcasters;
use crate::SchemaError;

pub use alert::*;
pub use asset::*;
pub use metrics::*;
pub use system::*;
pub use tenant::*;

/// A payload type of the catalogue: its stable name and its current schema version.
pub trait DomainEvent: serde::Serialize + serde::de::DeserializeOwned {
    /// Stable name stored in `events.event_type`; never renamed.
    const EVENT_TYPE: &'static str;
    /// Current schema version; bumped (with an upcaster from the previous one) when the shape changes.
    const SCHEMA_VERSION: u32;
}

/// The JSON Schema of one catalogue event at its current version.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// Catalogue name.
    pub event_type: &'static str,
    /// Current schema version.
    pub schema_version: u32,
    /// The generated JSON Schema.
    pub schema: Value,
}

macro_rules! catalogue {
    ($($variant:ident),* $(,)?) => {
        /// Any event of the catalogue, at its current schema version.
        #[derive(Debug, Clone, PartialEq)]
        pub enum FleetEvent {
            $(
                #[doc = concat!("[`", stringify!($variant), "`]")]
                $variant($variant),
            )*
        }

        /// `(event type, current schema version)` of every catalogue event.
        pub const EVENT_TYPES: &[(&str, u32)] = &[
            $(($variant::EVENT_TYPE, $variant::SCHEMA_VERSION)),*
        ];

        impl FleetEvent {
            /// The stable catalogue name.
            pub fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $variant::EVENT_TYPE),* }
            }

            /// The current schema version of this event's type.
            pub fn schema_version(&self) -> u32 {
                match self { $(Self::$variant(_) => $variant::SCHEMA_VERSION),* }
            }

            /// The payload as stored.
            pub fn to_payload(&self) -> Value {
                let value = match self { $(Self::$variant(e) => serde_json::to_value(e)),* };
                value.expect("catalogue events serialize to JSON")
            }

            /// Reads a payload that is already at the current schema version.
            fn from_current(event_type: &str, payload: Value) -> Result<Self, SchemaError> {
                let invalid = |e: serde_json::Error| SchemaError::InvalidPayload {
                    event_type: event_type.to_owned(),
                    reason: e.to_string(),
                };
                match event_type {
                    $($variant::EVENT_TYPE => serde_json::from_value(payload).map(Self::$variant).map_err(invalid),)*
                    other => Err(SchemaError::UnknownEventType(other.to_owned())),
                }
            }
        }

        /// The JSON Schema of every catalogue event, in catalogue order.
        pub fn json_schemas() -> Vec<EventSchema> {
            vec![$(EventSchema {
                event_type: $variant::EVENT_TYPE,
                schema_version: $variant::SCHEMA_VERSION,
                schema: serde_json::to_value(schemars::schema_for!($variant))
                    .expect("schemas serialize to JSON"),
            }),*]
        }

        $(impl From<$variant> for FleetEvent {
            fn from(e: $variant) -> Self {
                Self::$variant(e)
            }
        })*
    };
}

catalogue! {
    TenantCreated,
    TenantTokenIssued,
    TenantTokenRevoked,
    AlertRulesConfigured,
    LivenessPolicySet,
    InventoryRulesConfigured,
    ChangeNotificationRulesConfigured,
    SystemRegistered,
    CredentialsRotated,
    HeartbeatReceived,
    InventoryReported,
    InventoryUnchanged,
    InventoryChanged,
    SystemWentSilent,
    SystemRecovered,
    SystemPaused,
    SystemResumed,
    SystemDecommissioned,
    TelemetryReceived,
    AssetRegistered,
    HardwareObserved,
    ComponentInstalled,
    ComponentRemoved,
    FirmwareChanged,
    FailureRecorded,
    TicketLinked,
    AlertTriggered,
    AlertResolved,
    NotificationDelivered,
    MetricsReported,
}

impl FleetEvent {
    /// Reads a stored payload of any schema version: older versions are upcast step by step
    /// to the current one, then deserialized.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        payload: Value,
    ) -> Result<Self, SchemaError> {
        let current = EVENT_TYPES
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, version)| *version)
            .ok_or_else(|| SchemaError::UnknownEventType(event_type.to_owned()))?;
        let payload =
            Upcasters::catalogue().upcast(event_type, schema_version, current, payload)?;
        Self::from_current(event_type, payload)
    }
}
