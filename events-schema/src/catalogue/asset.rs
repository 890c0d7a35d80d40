//! `asset-{id}`: a hardware asset, what was observed in it, and the component history derived from it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;

/// A hardware asset (a server chassis, a switch) was registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssetRegistered {
    /// The asset's id.
    pub asset_id: Uuid,
    /// Manufacturer serial number, unique per tenant.
    pub serial: String,
    /// Vendor, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Model, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl DomainEvent for AssetRegistered {
    const EVENT_TYPE: &'static str = "AssetRegistered";
    const SCHEMA_VERSION: u32 = 1;
}

/// One component as seen inside an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObservedComponent {
    /// Component class: `disk`, `memory`, `cpu`, `network`, `psu`, ...
    pub class: String,
    /// Vendor, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Model, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number: the component's identity across assets.
    pub serial: String,
    /// Firmware version, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Slot or bus position, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Capacity in bytes (disks, memory), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
}

/// A full hardware observation of one asset arrived (idempotent on the client's bundle id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HardwareObserved {
    /// The client's id for this upload; a second upload of the same bundle writes nothing.
    pub bundle_id: String,
    /// Serial number of the asset observed.
    pub asset_serial: String,
    /// Every component with a serial number.
    pub components: Vec<ObservedComponent>,
}

impl DomainEvent for HardwareObserved {
    const EVENT_TYPE: &'static str = "HardwareObserved";
    const SCHEMA_VERSION: u32 = 1;
}

/// A component appeared in an asset (derived from observations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentInstalled {
    /// The component as observed.
    pub component: ObservedComponent,
}

impl DomainEvent for ComponentInstalled {
    const EVENT_TYPE: &'static str = "ComponentInstalled";
    const SCHEMA_VERSION: u32 = 1;
}

/// A component is no longer in an asset (derived from observations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentRemoved {
    /// Serial number of the component.
    pub serial: String,
    /// Its class.
    pub class: String,
    /// The slot it was in, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl DomainEvent for ComponentRemoved {
    const EVENT_TYPE: &'static str = "ComponentRemoved";
    const SCHEMA_VERSION: u32 = 1;
}

/// A component's firmware version changed (derived from observations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FirmwareChanged {
    /// Serial number of the component.
    pub serial: String,
    /// Version before, if it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Version now.
    pub current: String,
}

impl DomainEvent for FirmwareChanged {
    const EVENT_TYPE: &'static str = "FirmwareChanged";
    const SCHEMA_VERSION: u32 = 1;
}

/// A component failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FailureRecorded {
    /// Serial number of the failed component.
    pub serial: String,
    /// What went wrong.
    pub description: String,
}

impl DomainEvent for FailureRecorded {
    const EVENT_TYPE: &'static str = "FailureRecorded";
    const SCHEMA_VERSION: u32 = 1;
}

/// A ticket in an external tracker was linked to the asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketLinked {
    /// The tracker's reference, e.g. `OPS-1234`.
    pub ticket_ref: String,
    /// A link to it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl DomainEvent for TicketLinked {
    const EVENT_TYPE: &'static str = "TicketLinked";
    const SCHEMA_VERSION: u32 = 1;
}
