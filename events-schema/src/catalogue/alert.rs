//! `alert-{dedup key}`: alerts raised by clients, the Alertmanager API or reactors.

use serde_json::{Map, Value};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// For information.
    Info,
    /// Something degrades.
    Warning,
    /// Something is broken.
    Error,
    /// Something is broken and matters now.
    Critical,
}

/// An alert fired (or fired again) under its deduplication key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertTriggered {
    /// Deduplication key: every trigger and resolve with this key is one alert.
    pub dedup_key: String,
    /// The event manager (integration) that sent it.
    pub event_manager_id: String,
    /// One-line summary.
    pub summary: String,
    /// Urgency.
    pub severity: AlertSeverity,
    /// Class of problem, used by grouping rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Labels that identify what the alert is about.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Free-form fields from the sender, kept as sent.
    #[serde(default)]
    pub custom: Map<String, Value>,
}

impl DomainEvent for AlertTriggered {
    const EVENT_TYPE: &'static str = "AlertTriggered";
    const SCHEMA_VERSION: u32 = 1;
}

/// The alert under this deduplication key is resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertResolved {
    /// Deduplication key of the alert.
    pub dedup_key: String,
    /// The event manager that resolved it.
    pub event_manager_id: String,
}

impl DomainEvent for AlertResolved {
    const EVENT_TYPE: &'static str = "AlertResolved";
    const SCHEMA_VERSION: u32 = 1;
}

/// A notification about the alert reached its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationDelivered {
    /// Channel used: `jetstream`, `webhook`, ...
    pub channel: String,
    /// Where it went (a subject, a URL).
    pub target: String,
    /// `triggered` or `resolved`: which transition was announced.
    pub transition: String,
}

impl DomainEvent for NotificationDelivered {
    const EVENT_TYPE: &'static str = "NotificationDelivered";
    const SCHEMA_VERSION: u32 = 1;
}
