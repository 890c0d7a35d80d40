//! `system-{id}` and `gateway-{id}`: a reporting machine, its credentials, reports and liveness.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::DomainEvent;

/// Whether a registered machine is a server with an agent or an IoT gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    /// A server reporting heartbeats and inventory (`system-{id}` stream).
    #[default]
    System,
    /// A gateway forwarding telemetry (`gateway-{id}` stream).
    Gateway,
}

impl SystemKind {
    /// The name read models store (`system`, `gateway`), the same as the serialized one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Gateway => "gateway",
        }
    }

    /// The kind a stored name stands for: `gateway`, or else a server (the read models' CHECK
    /// constraints allow only those two names).
    pub fn from_name(name: &str) -> Self {
        if name == Self::Gateway.as_str() {
            Self::Gateway
        } else {
            Self::System
        }
    }
}

/// A system or gateway was registered and given credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemRegistered {
    /// The machine's id.
    pub system_id: Uuid,
    /// Public key the machine authenticates with, e.g. `FL-7K2D-Q9XM-4HTR`.
    pub system_key: String,
    /// Human-readable name.
    pub name: String,
    /// Server or gateway. Added in schema version 2; version 1 events are servers.
    pub kind: SystemKind,
    /// argon2id hash of the secret; the secret itself is never stored.
    pub secret_hash: String,
    /// Free-form labels chosen at registration. Added in schema version 2.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl DomainEvent for SystemRegistered {
    const EVENT_TYPE: &'static str = "SystemRegistered";
    const SCHEMA_VERSION: u32 = 2;
}

/// Older shapes of [`SystemRegistered`], kept so stored events can be upcast.
pub mod v1 {
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// Schema version 1: registration before gateways and labels existed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct SystemRegistered {
        /// The machine's id.
        pub system_id: Uuid,
        /// Public key the machine authenticates with.
        pub system_key: String,
        /// Human-readable name.
        pub name: String,
        /// argon2id hash of the secret.
        pub secret_hash: String,
    }

    impl From<SystemRegistered> for super::SystemRegistered {
        fn from(v1: SystemRegistered) -> Self {
            Self {
                system_id: v1.system_id,
                system_key: v1.system_key,
                name: v1.name,
                kind: super::SystemKind::System,
                secret_hash: v1.secret_hash,
                labels: Default::default(),
            }
        }
    }
}

/// The machine's secret was replaced; the old one stops working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CredentialsRotated {
    /// The (unchanged) public key.
    pub system_key: String,
    /// argon2id hash of the new secret.
    pub secret_hash: String,
}

impl DomainEvent for CredentialsRotated {
    const EVENT_TYPE: &'static str = "CredentialsRotated";
    const SCHEMA_VERSION: u32 = 1;
}

/// The machine said it is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatReceived {
    /// Version of the reporting agent, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

impl DomainEvent for HeartbeatReceived {
    const EVENT_TYPE: &'static str = "HeartbeatReceived";
    const SCHEMA_VERSION: u32 = 1;
}

/// The machine reported an inventory that differs from its previous report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReported {
    /// Hex SHA-256 of the canonical form of `data` (object key order does not matter).
    pub content_hash: String,
    /// The whole inventory document as sent; `null` once retention pruned it.
    #[serde(default)]
    pub data: Value,
    /// Set when snapshot retention pruned the document (the diffs that record what changed are
    /// kept for ever; the hash stays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

impl InventoryReported {
    /// The stored payload of a report, built by moving `data` in (no copy of a large document);
    /// the same JSON as serializing the struct.
    pub fn payload(content_hash: String, data: Value) -> Value {
        let mut payload = serde_json::Map::with_capacity(2);
        payload.insert("content_hash".into(), Value::String(content_hash));
        payload.insert("data".into(), data);
        Value::Object(payload)
    }
}

impl DomainEvent for InventoryReported {
    const EVENT_TYPE: &'static str = "InventoryReported";
    const SCHEMA_VERSION: u32 = 1;
}

/// The machine reported the same inventory as its latest report; only the hash is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryUnchanged {
    /// Hex SHA-256 of the canonical form of the document.
    pub content_hash: String,
}

impl DomainEvent for InventoryUnchanged {
    const EVENT_TYPE: &'static str = "InventoryUnchanged";
    const SCHEMA_VERSION: u32 = 1;
}

/// What happened to one field between two inventory reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// The field is new.
    Added,
    /// The field is gone.
    Removed,
    /// The field has a new value.
    Changed,
}

/// Which area of the machine a change concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCategory {
    /// Operating system name, version, kernel, packages.
    Os,
    /// CPUs, memory, disks, devices.
    Hardware,
    /// Interfaces, addresses, routes.
    Network,
    /// Certificates, firewall, VPN.
    Security,
    /// Enabled features and services.
    Features,
    /// Anything else.
    Other,
}

/// How much a change matters to an operator.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSeverity {
    /// Informational only.
    Info,
    /// Worth a look.
    Low,
    /// Should be reviewed.
    Medium,
    /// Needs attention.
    High,
    /// Needs attention now (a disk or DIMM disappeared).
    Critical,
}

/// One self-contained change: the timeline can be rebuilt from these alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryChange {
    /// Path of the field, naming array elements by identity key where they have one.
    pub path: String,
    /// Added, removed or changed.
    pub op: ChangeOp,
    /// Value before the change (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
    /// Value after the change (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    /// Area of the machine.
    pub category: ChangeCategory,
    /// How much it matters.
    pub severity: ChangeSeverity,
}

/// The diff reactor found changes between two consecutive full inventories of one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryChanged {
    /// Hash of the previous report.
    pub previous_hash: String,
    /// Hash of the report that caused this diff.
    pub current_hash: String,
    /// The changes, in path order.
    pub changes: Vec<InventoryChange>,
}

impl DomainEvent for InventoryChanged {
    const EVENT_TYPE: &'static str = "InventoryChanged";
    const SCHEMA_VERSION: u32 = 1;
}

/// The liveness monitor found no sign of life within the machine's timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemWentSilent {
    /// The last sign of life seen.
    pub last_seen_at: DateTime<Utc>,
    /// The timeout that was exceeded, in minutes.
    pub timeout_minutes: u32,
}

impl DomainEvent for SystemWentSilent {
    const EVENT_TYPE: &'static str = "SystemWentSilent";
    const SCHEMA_VERSION: u32 = 1;
}

/// A silent machine showed a sign of life again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemRecovered {
    /// When it was declared silent.
    pub silent_since: DateTime<Utc>,
    /// The sign of life that ended the silence.
    pub seen_at: DateTime<Utc>,
}

impl DomainEvent for SystemRecovered {
    const EVENT_TYPE: &'static str = "SystemRecovered";
    const SCHEMA_VERSION: u32 = 1;
}

/// Reports from the machine are refused and it raises no liveness alerts until resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemPaused {
    /// Why, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DomainEvent for SystemPaused {
    const EVENT_TYPE: &'static str = "SystemPaused";
    const SCHEMA_VERSION: u32 = 1;
}

/// A paused machine may report again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemResumed {}

impl DomainEvent for SystemResumed {
    const EVENT_TYPE: &'static str = "SystemResumed";
    const SCHEMA_VERSION: u32 = 1;
}

/// The machine left the fleet for good; its history stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemDecommissioned {
    /// Why, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DomainEvent for SystemDecommissioned {
    const EVENT_TYPE: &'static str = "SystemDecommissioned";
    const SCHEMA_VERSION: u32 = 1;
}

/// A gateway forwarded telemetry; the bytes are in the envelope's `data`, verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryReceived {
    /// Content type the sender declared, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Length of the opaque bytes.
    pub size_bytes: u64,
    /// The JetStream subject it arrived on, when it came through NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The JetStream stream sequence, when it came through NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream_sequence: Option<u64>,
}

impl DomainEvent for TelemetryReceived {
    const EVENT_TYPE: &'static str = "TelemetryReceived";
    const SCHEMA_VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_payload_built_by_moving_is_the_serialized_struct() {
        let data = serde_json::json!({"os": {"name": "Debian", "version": "12"}, "nics": [1, 2]});
        let report = InventoryReported {
            content_hash: "abc".into(),
            data: data.clone(),
            pruned: false,
        };
        assert_eq!(
            InventoryReported::payload("abc".into(), data),
            serde_json::to_value(&report).unwrap()
        );
    }
}
