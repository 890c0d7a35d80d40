//! How a tenant's inventory changes are classified and which of them it wants to be told about:
//! `PUT /api/inventory/rules` records an InventoryRulesConfigured and
//! `PUT /api/inventory/notification-rules` a ChangeNotificationRulesConfigured on the tenant's
//! stream. Each replaces the tenant's previous rule set as a whole.
//!
//! # Validation
//!
//! The differ (`projections::inventory::rules::DiffRules::for_tenant`) parses the patterns when
//! it computes a diff, but `projections` depends on this crate, so this crate cannot call it.
//! Instead [`check_pattern`] checks the same grammar here, structurally (segments start with `/`
//! or `[`, brackets close, `~` escapes are one of `~0`..`~4`, `]` and `=` are escaped in keys,
//! `[n]`, `[key=value]` and `[*]` are the only brackets), plus what the differ does not care
//! about but an operator would regret: patterns must start with `/` (an empty pattern would
//! match every path), and there are limits on lengths and counts (at most
//! [`MAX_ANY_DEPTH_SEGMENTS`] `/**` in a pattern) so a rule set stays small enough to be applied
//! to every report. The root package's tests check that every pattern
//! accepted here parses in the differ.
//!
//! The answer comes once the event is durable; the diff reactor applies new diff rules to diffs
//! computed after the event (past diffs keep their classification).

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use events_schema::{
    ChangeCategory, ChangeNotificationRule, ChangeNotificationRulesConfigured, ChangeOp,
    ChangeSeverity, DomainEvent, InventoryPathRule, InventoryRulesConfigured, TenantId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{CommandError, Result};
use crate::http::{checked_text, CommandState, JsonBody, TenantCaller};

/// Longest path pattern or path prefix, in bytes.
pub const MAX_PATTERN_LEN: usize = 500;
/// Longest identity key name, in bytes.
pub const MAX_IDENTITY_KEY_LEN: usize = 100;
/// Most identity keys in one rule set.
pub const MAX_IDENTITY_KEYS: usize = 20;
/// Most ignored path patterns in one rule set.
pub const MAX_IGNORED_PATHS: usize = 200;
/// Most category/severity rules in one rule set.
pub const MAX_PATH_RULES: usize = 200;
/// Most change-notification rules in one rule set.
pub const MAX_NOTIFICATION_RULES: usize = 100;
/// Most `/**` segments in one pattern: each costs the differ a pass over the path, for every
/// change of every report.
pub const MAX_ANY_DEPTH_SEGMENTS: usize = 3;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(configure_inventory_rules))
        .routes(routes!(configure_notification_rules))
}

/// Which area of a machine an inventory change concerns; the wire form of
/// [`events_schema::ChangeCategory`], shared by the write and the read API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ChangeCategory)]
pub enum Category {
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

/// How much an inventory change matters; the wire form of [`events_schema::ChangeSeverity`],
/// shared by the write and the read API. Ordered from `info` to `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ChangeSeverity)]
pub enum Severity {
    /// Informational only.
    Info,
    /// Worth a look.
    Low,
    /// Should be reviewed.
    Medium,
    /// Needs attention.
    High,
    /// Needs attention now.
    Critical,
}

/// What happened to one inventory field; the wire form of [`events_schema::ChangeOp`], shared
/// by the write and the read API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ChangeOp)]
pub enum Op {
    /// The field is new.
    Added,
    /// The field is gone.
    Removed,
    /// The field has a new value.
    Changed,
}

impl From<Category> for ChangeCategory {
    fn from(category: Category) -> Self {
        match category {
            Category::Os => Self::Os,
            Category::Hardware => Self::Hardware,
            Category::Network => Self::Network,
            Category::Security => Self::Security,
            Category::Features => Self::Features,
            Category::Other => Self::Other,
        }
    }
}

impl From<Severity> for ChangeSeverity {
    fn from(severity: Severity) -> Self {
        match severity {
            Severity::Info => Self::Info,
            Severity::Low => Self::Low,
            Severity::Medium => Self::Medium,
            Severity::High => Self::High,
            Severity::Critical => Self::Critical,
        }
    }
}

impl From<Op> for ChangeOp {
    fn from(op: Op) -> Self {
        match op {
            Op::Added => Self::Added,
            Op::Removed => Self::Removed,
            Op::Changed => Self::Changed,
        }
    }
}

impl Severity {
    /// The rank the timeline stores (`inventory_changes.severity_rank`): info 0 … critical 4,
    /// so "at least" is one comparison.
    pub fn rank(self) -> i16 {
        match self {
            Self::Info => 0,
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Critical => 4,
        }
    }
}

/// One category/severity rule as a client sends it (see [`events_schema::InventoryPathRule`]).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRuleBody {
    /// Path pattern: the inventory path syntax plus `/*`, `[*]` and `/**`; it matches the
    /// paths it is a prefix of, e.g. `/hardware/disks[*]` or `/**/firewall`.
    pub pattern: String,
    /// Only changes with this op match; absent matches every op.
    #[serde(default)]
    pub op: Option<Op>,
    /// Category the change gets.
    pub category: Category,
    /// Severity the change gets.
    pub severity: Severity,
}

/// A tenant's complete inventory diff rules, replacing its previous ones (the body of
/// `PUT /api/inventory/rules`; becomes an InventoryRulesConfigured).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureInventoryRules {
    /// Identity keys of array elements, tried before the defaults (`name`, `mac`, `serial`,
    /// `id`, `device`); at most 20, each 1 to 100 printable characters, no duplicates.
    #[serde(default)]
    pub identity_keys: Vec<String>,
    /// Path patterns whose changes are not changes (counters, sensor readings), on top of the
    /// defaults; at most 200.
    #[serde(default)]
    pub ignored_paths: Vec<String>,
    /// When set, the default ignored paths no longer apply, only `ignored_paths`.
    #[serde(default)]
    pub replace_default_ignored_paths: bool,
    /// Category and severity rules, tried in order before the defaults; at most 200.
    #[serde(default)]
    pub path_rules: Vec<PathRuleBody>,
}

/// One change-notification rule as a client sends it (see
/// [`events_schema::ChangeNotificationRule`]).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRuleBody {
    /// Name of the rule, unique within the set, 1 to 200 printable characters.
    pub name: String,
    /// The least severity that notifies.
    pub min_severity: Severity,
    /// Only changes of this category notify; absent means any category.
    #[serde(default)]
    pub category: Option<Category>,
    /// Only changes at this path or below it notify, by whole segments (`/os` covers
    /// `/os/name`, not `/osx`); a path in the inventory path syntax, starting with `/`, without
    /// wildcards (`[*]`, or a key that is exactly `*` or `**`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// A tenant's complete change-notification rules, replacing its previous ones (the body of
/// `PUT /api/inventory/notification-rules`; becomes a ChangeNotificationRulesConfigured).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureNotificationRules {
    /// The rules, at most 100; an empty list removes every rule.
    pub rules: Vec<NotificationRuleBody>,
}

/// A rule set was recorded: the event is durable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RulesAccepted {
    /// Id of the event.
    pub event_id: Uuid,
    /// Its stream (`tenant-{id}`).
    pub stream_id: String,
    /// Its place in the global log.
    pub position: i64,
}

/// Checks a path pattern against the grammar the differ parses (see the module
/// documentation); `wildcards` allows `[*]`, `/*` and at most [`MAX_ANY_DEPTH_SEGMENTS`] `/**`
/// (patterns), otherwise it must be a plain path, without a key that is exactly `*` or `**`
/// (the differ would read those as wildcards, a path prefix compares them as text). The error
/// says what is wrong and where.
pub fn check_pattern(pattern: &str, wildcards: bool) -> std::result::Result<(), String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} bytes"));
    }
    if !pattern.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if pattern.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let at = |i: usize, reason: &str| format!("at byte {i}: {reason}");
    let bytes = pattern.as_bytes();
    let mut any_depth = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => {
                let start = i + 1;
                let end = pattern[start..]
                    .find(['/', '['])
                    .map_or(pattern.len(), |n| start + n);
                let key = &pattern[start..end];
                check_escaped(key).map_err(|(n, r)| at(start + n, r))?;
                if matches!(key, "*" | "**") && !wildcards {
                    return Err(at(start, &format!("`/{key}` is a pattern, not a path")));
                }
                if key == "**" {
                    any_depth += 1;
                    if any_depth > MAX_ANY_DEPTH_SEGMENTS {
                        return Err(at(
                            start,
                            &format!("at most {MAX_ANY_DEPTH_SEGMENTS} `/**` in a pattern"),
                        ));
                    }
                }
                i = end;
            }
            b'[' => {
                let start = i + 1;
                let end = pattern[start..]
                    .find(']')
                    .map(|n| start + n)
                    .ok_or_else(|| at(i, "`[` without `]`"))?;
                let inner = &pattern[start..end];
                if inner == "*" {
                    if !wildcards {
                        return Err(at(start, "`[*]` is a pattern, not a path"));
                    }
                } else if let Some(eq) = inner.find('=') {
                    check_escaped(&inner[..eq]).map_err(|(n, r)| at(start + n, r))?;
                    check_escaped(&inner[eq + 1..]).map_err(|(n, r)| at(start + eq + 1 + n, r))?;
                } else if inner.is_empty()
                    || !inner.bytes().all(|b| b.is_ascii_digit())
                    || inner.parse::<usize>().is_err()
                {
                    return Err(at(start, "expected `[n]`, `[key=value]` or `[*]`"));
                }
                i = end + 1;
            }
            _ => return Err(at(i, "a segment starts with `/` or `[`")),
        }
    }
    Ok(())
}

/// A key, identity key or identity value: `~` followed by 0 to 4, and no bare `]` or `=`.
fn check_escaped(raw: &str) -> std::result::Result<(), (usize, &'static str)> {
    let mut chars = raw.char_indices();
    while let Some((n, c)) = chars.next() {
        let reason = match c {
            '~' if matches!(chars.next(), Some((_, '0'..='4'))) => continue,
            '~' => "`~` must be followed by 0, 1, 2, 3 or 4",
            ']' | '=' => "`]` and `=` must be escaped as ~3 and ~4",
            _ => continue,
        };
        return Err((n, reason));
    }
    Ok(())
}

fn invalid(message: String) -> CommandError {
    CommandError::InvalidBody(message)
}

fn checked_pattern(field: &str, pattern: &str, wildcards: bool) -> Result<String> {
    check_pattern(pattern, wildcards)
        .map_err(|reason| invalid(format!("{field}: invalid pattern {pattern:?}: {reason}")))?;
    Ok(pattern.to_owned())
}

fn at_most(field: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(invalid(format!(
            "{field}: at most {max} entries, not {len}"
        )));
    }
    Ok(())
}

/// Decides the event of `PUT /api/inventory/rules`, without I/O: 422 for a pattern that does
/// not parse, an identity key that is empty, too long or repeated, or too many entries.
pub fn decide_inventory_rules(
    command: &ConfigureInventoryRules,
) -> Result<InventoryRulesConfigured> {
    at_most(
        "identity_keys",
        command.identity_keys.len(),
        MAX_IDENTITY_KEYS,
    )?;
    at_most(
        "ignored_paths",
        command.ignored_paths.len(),
        MAX_IGNORED_PATHS,
    )?;
    at_most("path_rules", command.path_rules.len(), MAX_PATH_RULES)?;
    let mut seen = BTreeSet::new();
    for (i, key) in command.identity_keys.iter().enumerate() {
        if key.is_empty() || key.len() > MAX_IDENTITY_KEY_LEN || key.chars().any(char::is_control) {
            return Err(invalid(format!(
                "identity_keys[{i}] must be 1 to {MAX_IDENTITY_KEY_LEN} printable characters"
            )));
        }
        if !seen.insert(key.as_str()) {
            return Err(invalid(format!("identity_keys[{i}]: {key:?} is repeated")));
        }
    }
    let ignored_paths = command
        .ignored_paths
        .iter()
        .enumerate()
        .map(|(i, p)| checked_pattern(&format!("ignored_paths[{i}]"), p, true))
        .collect::<Result<_>>()?;
    let path_rules = command
        .path_rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            Ok(InventoryPathRule {
                pattern: checked_pattern(&format!("path_rules[{i}].pattern"), &rule.pattern, true)?,
                op: rule.op.map(Into::into),
                category: rule.category.into(),
                severity: rule.severity.into(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(InventoryRulesConfigured {
        identity_keys: command.identity_keys.clone(),
        ignored_paths,
        replace_default_ignored_paths: command.replace_default_ignored_paths,
        path_rules,
    })
}

/// Decides the event of `PUT /api/inventory/notification-rules`, without I/O: 422 for more
/// than 100 rules, a name that is empty, too long or repeated, or a path prefix that is not a
/// path. Names are trimmed.
pub fn decide_notification_rules(
    command: &ConfigureNotificationRules,
) -> Result<ChangeNotificationRulesConfigured> {
    at_most("rules", command.rules.len(), MAX_NOTIFICATION_RULES)?;
    let mut names = BTreeSet::new();
    let mut rules = Vec::with_capacity(command.rules.len());
    for (i, rule) in command.rules.iter().enumerate() {
        let name = checked_text(&format!("rules[{i}].name"), &rule.name)?;
        if !names.insert(name.clone()) {
            return Err(invalid(format!("rules[{i}].name: {name:?} is repeated")));
        }
        let path_prefix = rule
            .path_prefix
            .as_deref()
            .map(|p| checked_pattern(&format!("rules[{i}].path_prefix"), p, false))
            .transpose()?;
        rules.push(ChangeNotificationRule {
            name,
            min_severity: rule.min_severity.into(),
            category: rule.category.map(Into::into),
            path_prefix,
        });
    }
    Ok(ChangeNotificationRulesConfigured { rules })
}

/// Replaces the tenant's inventory diff rules: identity keys, ignored paths, and the
/// category/severity rules tried before Fleetlog's defaults. They apply to diffs computed after
/// this command.
#[utoipa::path(put, path = "/api/inventory/rules", tag = "inventory", security(("tenant" = [])),
    request_body = ConfigureInventoryRules,
    responses((status = 202, body = RulesAccepted),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant_id))]
async fn configure_inventory_rules(
    caller: TenantCaller,
    State(state): State<CommandState>,
    JsonBody(command): JsonBody<ConfigureInventoryRules>,
) -> Result<(StatusCode, Json<RulesAccepted>)> {
    let event = decide_inventory_rules(&command)?;
    let accepted = record(&state, caller.tenant_id, &event).await?;
    tracing::info!(
        ignored_paths = event.ignored_paths.len(),
        path_rules = event.path_rules.len(),
        "inventory rules configured"
    );
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Replaces the tenant's change-notification rules: which inventory changes (by least
/// severity, category and path prefix) it wants to be told about.
#[utoipa::path(put, path = "/api/inventory/notification-rules", tag = "inventory",
    security(("tenant" = [])), request_body = ConfigureNotificationRules,
    responses((status = 202, body = RulesAccepted),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant_id))]
async fn configure_notification_rules(
    caller: TenantCaller,
    State(state): State<CommandState>,
    JsonBody(command): JsonBody<ConfigureNotificationRules>,
) -> Result<(StatusCode, Json<RulesAccepted>)> {
    let event = decide_notification_rules(&command)?;
    let accepted = record(&state, caller.tenant_id, &event).await?;
    tracing::info!(
        rules = event.rules.len(),
        "change-notification rules configured"
    );
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Appends a rules event to the tenant's stream.
async fn record<E: DomainEvent + Serialize>(
    state: &CommandState,
    tenant: TenantId,
    event: &E,
) -> Result<RulesAccepted> {
    let stored = state.append_tenant_event(tenant, event).await?;
    Ok(RulesAccepted {
        event_id: stored.event_id,
        stream_id: stored.stream_id,
        position: stored.position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_differs_grammar() {
        for ok in [
            "/os",
            "/hardware/disks[*]",
            "/**/firewall",
            "/network/interfaces[name=eth1]/addresses[0]/address",
            "/a~1b/c~0d[k~4=v~3]",
            "/*/x",
            "/",
        ] {
            assert_eq!(check_pattern(ok, true), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "os",
            "[0]/x",
            "/a[",
            "/a[]",
            "/a[x]",
            "/a[-1]",
            "/a]b",
            "/a=b",
            "/a~5",
            "/a~",
            "/a\n",
            "/a[99999999999999999999999]",
        ] {
            assert!(check_pattern(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_pattern("/a[*]", false).is_err());
        assert!(check_pattern(&format!("/{}", "a".repeat(MAX_PATTERN_LEN)), true).is_err());
        // `/**` costs the differ a pass over the path each: at most three.
        assert_eq!(check_pattern("/**/a/**/b/**/c", true), Ok(()));
        assert!(check_pattern("/**/a/**/b/**/c/**", true).is_err());
        assert!(check_pattern(&"/**".repeat(160), true).is_err());
        // `*` and `**` keys are wildcards, so not in a plain path; `*` inside a key is text.
        for wildcard in ["/*", "/**", "/os/*", "/**/os", "/a[0]/**"] {
            assert!(check_pattern(wildcard, false).is_err(), "{wildcard}");
        }
        for plain in ["/os", "/a*", "/***", "/a[0]/b*c"] {
            assert_eq!(check_pattern(plain, false), Ok(()), "{plain}");
        }
    }

    #[test]
    fn inventory_rules_become_the_event_or_a_422() {
        let command = ConfigureInventoryRules {
            identity_keys: vec!["wwn".into()],
            ignored_paths: vec!["/**/fan_rpm".into()],
            replace_default_ignored_paths: false,
            path_rules: vec![PathRuleBody {
                pattern: "/hardware/gpus[*]".into(),
                op: Some(Op::Removed),
                category: Category::Hardware,
                severity: Severity::Critical,
            }],
        };
        let event = decide_inventory_rules(&command).unwrap();
        assert_eq!(event.path_rules[0].op, Some(ChangeOp::Removed));
        assert_eq!(event.path_rules[0].severity, ChangeSeverity::Critical);
        assert_eq!(event.ignored_paths, vec!["/**/fan_rpm".to_owned()]);

        let mut bad = command.clone();
        bad.ignored_paths.push("fan".into());
        assert!(matches!(
            decide_inventory_rules(&bad),
            Err(CommandError::InvalidBody(_))
        ));
        let mut bad = command.clone();
        bad.identity_keys.push("wwn".into());
        assert!(decide_inventory_rules(&bad).is_err());
        let mut bad = command;
        bad.ignored_paths = vec!["/x".into(); MAX_IGNORED_PATHS + 1];
        assert!(decide_inventory_rules(&bad).is_err());
    }

    #[test]
    fn notification_rules_need_unique_names_and_path_prefixes() {
        let rule = |name: &str, prefix: Option<&str>| NotificationRuleBody {
            name: name.into(),
            min_severity: Severity::High,
            category: Some(Category::Hardware),
            path_prefix: prefix.map(Into::into),
        };
        let ok = ConfigureNotificationRules {
            rules: vec![rule(" disks ", None), rule("os", Some("/os"))],
        };
        let event = decide_notification_rules(&ok).unwrap();
        assert_eq!(event.rules[0].name, "disks");
        assert_eq!(event.rules[1].path_prefix.as_deref(), Some("/os"));
        for bad in [
            vec![rule("a", None), rule("a ", None)],
            vec![rule("  ", None)],
            vec![rule("a", Some("os"))],
            vec![rule("a", Some("/hardware/disks[*]"))],
            vec![rule("a", Some("/**"))],
            vec![rule("a", Some("/**/firewall"))],
            vec![rule("a", Some("/os/*"))],
            (0..=MAX_NOTIFICATION_RULES)
                .map(|i| rule(&i.to_string(), None))
                .collect(),
        ] {
            assert!(decide_notification_rules(&ConfigureNotificationRules { rules: bad }).is_err());
        }
    }
}
