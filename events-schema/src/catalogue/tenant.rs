//! `tenant-{id}`: a tenant and the policies it sets for its fleet.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ChangeCategory, ChangeOp, ChangeSeverity, DomainEvent, TenantId};

/// A tenant was created by an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantCreated {
    /// The new tenant's id.
    pub tenant_id: TenantId,
    /// Human-readable name, unique per installation.
    pub name: String,
}

impl DomainEvent for TenantCreated {
    const EVENT_TYPE: &'static str = "TenantCreated";
    const SCHEMA_VERSION: u32 = 1;
}

/// The administrator issued an API token to the tenant. The token is shown once; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantTokenIssued {
    /// The token's id (to revoke it by).
    pub token_id: Uuid,
    /// What the token is for, e.g. `provisioning`.
    pub name: String,
    /// Hex SHA-256 of the token. Tokens are 256 random bits, so a fast hash is enough.
    pub token_hash: String,
}

impl DomainEvent for TenantTokenIssued {
    const EVENT_TYPE: &'static str = "TenantTokenIssued";
    const SCHEMA_VERSION: u32 = 1;
}

/// A tenant API token stopped working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantTokenRevoked {
    /// The token's id.
    pub token_id: Uuid,
}

impl DomainEvent for TenantTokenRevoked {
    const EVENT_TYPE: &'static str = "TenantTokenRevoked";
    const SCHEMA_VERSION: u32 = 1;
}

/// One rule that groups alerts under a parent alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertGroupingRule {
    /// Name of the rule, shown on parent alerts.
    pub name: String,
    /// Labels an alert must carry (exact values) for the rule to apply.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Labels whose values form the group key.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a group stays open for new children, in seconds.
    pub window_seconds: u32,
}

/// The tenant replaced its alert grouping rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertRulesConfigured {
    /// The complete new rule set (replaces the previous one).
    pub rules: Vec<AlertGroupingRule>,
}

impl DomainEvent for AlertRulesConfigured {
    const EVENT_TYPE: &'static str = "AlertRulesConfigured";
    const SCHEMA_VERSION: u32 = 1;
}

/// The tenant set how long its systems may stay silent before they count as inactive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LivenessPolicySet {
    /// `None` sets the tenant default; `Some` overrides it for one system or gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<Uuid>,
    /// Minutes without a sign of life before a system is declared silent.
    pub heartbeat_timeout_minutes: u32,
}

impl DomainEvent for LivenessPolicySet {
    const EVENT_TYPE: &'static str = "LivenessPolicySet";
    const SCHEMA_VERSION: u32 = 1;
}

/// One tenant rule that classifies inventory changes by path: the first rule whose pattern
/// matches a change's path (and whose `op`, if set, is the change's) gives its category and
/// severity. Tenant rules are tried before Fleetlog's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryPathRule {
    /// Path pattern: the inventory path syntax plus `/*` (any key), `[*]` (any array element)
    /// and `/**` (any number of segments); it matches a path that it is a prefix of,
    /// e.g. `/hardware/disks[*]` or `/**/firewall`.
    pub pattern: String,
    /// Only changes with this op match; absent matches every op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<ChangeOp>,
    /// Category the change gets.
    pub category: ChangeCategory,
    /// Severity the change gets.
    pub severity: ChangeSeverity,
}

/// The tenant replaced its inventory diff rules; they apply to diffs computed after this event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRulesConfigured {
    /// Identity keys of array elements, tried before the defaults (`name`, `mac`, `serial`,
    /// `id`, `device`).
    #[serde(default)]
    pub identity_keys: Vec<String>,
    /// Path patterns whose changes are not changes (counters, sensor readings), on top of the
    /// defaults.
    #[serde(default)]
    pub ignored_paths: Vec<String>,
    /// When set, the default ignored paths no longer apply, only `ignored_paths`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_default_ignored_paths: bool,
    /// Category and severity rules, tried in order before the defaults.
    #[serde(default)]
    pub path_rules: Vec<InventoryPathRule>,
}

impl DomainEvent for InventoryRulesConfigured {
    const EVENT_TYPE: &'static str = "InventoryRulesConfigured";
    const SCHEMA_VERSION: u32 = 1;
}

/// One rule saying which inventory changes the tenant wants to be told about, e.g. "severity at
/// least high in hardware" or "any change under /os". Every condition that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeNotificationRule {
    /// Name of the rule, shown on notifications.
    pub name: String,
    /// The least severity that notifies.
    pub min_severity: ChangeSeverity,
    /// Only changes of this category notify; absent means any category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<ChangeCategory>,
    /// Only changes at this path or below it notify (segment-wise: `/os` covers `/os/name`,
    /// not `/osx`); absent means any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// The tenant replaced its change-notification rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ChangeNotificationRulesConfigured {
    /// The complete new rule set (replaces the previous one).
    pub rules: Vec<ChangeNotificationRule>,
}

impl DomainEvent for ChangeNotificationRulesConfigured {
    const EVENT_TYPE: &'static str = "ChangeNotificationRulesConfigured";
    const SCHEMA_VERSION: u32 = 1;
}
