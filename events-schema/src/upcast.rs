//! Upcasters: each turns one stored schema version of one event type into the next version.
//!
//! A stored event is never rewritten. On read, [`Upcasters::upcast`] applies the steps
//! `v1 -> v2 -> ... -> current` in order; a missing step is an error, not a guess.

use serde_json::Value;

use crate::catalogue::{system, DomainEvent, SystemRegistered};
use crate::SchemaError;

/// One step: `event_type` at `from_version` becomes `from_version + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type this step applies to.
    pub event_type: &'static str,
    /// The version it reads; it produces `from_version + 1`.
    pub from_version: u32,
    /// The conversion.
    pub step: fn(Value) -> Result<Value, SchemaError>,
}

/// The registry of every upcasting step.
#[derive(Debug, Clone, Default)]
pub struct Upcasters {
    steps: Vec<Upcaster>,
}

impl Upcasters {
    /// The steps of Fleetlog's catalogue.
    pub fn catalogue() -> Self {
        Self::default().with(Upcaster {
            event_type: SystemRegistered::EVENT_TYPE,
            from_version: 1,
            step: system_registered_v1_to_v2,
        })
    }

    /// Adds a step.
    pub fn with(mut self, upcaster: Upcaster) -> Self {
        self.steps.push(upcaster);
        self
    }

    /// Brings `payload` from `stored_version` to `current_version`.
    pub fn upcast(
        &self,
        event_type: &str,
        stored_version: u32,
        current_version: u32,
        mut payload: Value,
    ) -> Result<Value, SchemaError> {
        if stored_version > current_version {
            return Err(SchemaError::FutureSchemaVersion {
                event_type: event_type.to_owned(),
                stored: stored_version,
                current: current_version,
            });
        }
        for version in stored_version..current_version {
            let step = self
                .steps
                .iter()
                .find(|u| u.event_type == event_type && u.from_version == version)
                .ok_or_else(|| SchemaError::MissingUpcaster {
                    event_type: event_type.to_owned(),
                    from_version: version,
                })?;
            payload = (step.step)(payload)?;
        }
        Ok(payload)
    }
}

/// `SystemRegistered` v1 predates gateways and labels: every v1 registration is a server.
fn system_registered_v1_to_v2(payload: Value) -> Result<Value, SchemaError> {
    let v1: system::v1::SystemRegistered =
        serde_json::from_value(payload).map_err(|e| SchemaError::InvalidPayload {
            event_type: SystemRegistered::EVENT_TYPE.to_owned(),
            reason: format!("as schema version 1: {e}"),
        })?;
    Ok(serde_json::to_value(SystemRegistered::from(v1)).expect("catalogue events serialize"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use crate::{FleetEvent, SchemaError, SystemKind};

    #[test]
    fn a_v1_system_registration_reads_back_as_a_v2_server_without_labels() {
        let id = Uuid::now_v7();
        let v1 = json!({"system_id": id, "system_key": "FL-AAAA-BBBB-CCCC", "name": "db-1", "secret_hash": "$argon2id$x"});
        let FleetEvent::SystemRegistered(v2) =
            FleetEvent::decode("SystemRegistered", 1, v1).unwrap()
        else {
            panic!("wrong variant");
        };
        assert_eq!(v2.system_id, id);
        assert_eq!(v2.kind, SystemKind::System);
        assert!(v2.labels.is_empty());
    }

    #[test]
    fn a_version_newer_than_the_catalogue_is_an_error() {
        let err = FleetEvent::decode("HeartbeatReceived", 2, json!({})).unwrap_err();
        assert!(matches!(
            err,
            SchemaError::FutureSchemaVersion {
                stored: 2,
                current: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_malformed_v1_payload_is_an_invalid_payload_error() {
        let err = FleetEvent::decode("SystemRegistered", 1, json!({"name": 3})).unwrap_err();
        assert!(matches!(err, SchemaError::InvalidPayload { .. }));
    }

    #[test]
    fn unknown_event_types_are_reported_by_name() {
        let err = FleetEvent::decode("PrinterJammed", 1, json!({})).unwrap_err();
        assert_eq!(err, SchemaError::UnknownEventType("PrinterJammed".into()));
    }
}
