//! `tenant-{id}`: a tenant and the policies it sets for its fleet.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DomainEvent, TenantId};

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
