//! The rules the differ follows: identity keys, ignored paths, and category/severity by path;
//! Fleetlog's defaults, merged with a tenant's [`InventoryRulesConfigured`]. Also the pure test
//! of a tenant's change-notification rules, [`notification_matches`].
//!
//! # Patterns
//!
//! A pattern is written like a path (see [`diff`](super::diff)) and may use three wildcards:
//! `/*` (any one object key), `[*]` (any one array element, by position or identity) and
//! `/**` (any number of segments, none included). A pattern matches a path when it matches
//! a prefix of it, so `/os` covers `/os/name` and `/**/counters` covers
//! `/network/interfaces[name=eth0]/counters/rx_bytes`. A key that is exactly `*` or `**`
//! is always a wildcard.

use events_schema::{
    ChangeCategory, ChangeNotificationRule, ChangeOp, ChangeSeverity, InventoryChange,
    InventoryRulesConfigured,
};

use super::diff::{tokenize, PathError, SegmentRef, Token};

/// Keys that identify array elements, tried in order, unless a tenant puts its own first.
pub const DEFAULT_IDENTITY_KEYS: &[&str] = &["name", "mac", "serial", "id", "device"];

/// Paths whose values change on every report and so are not changes: uptime, byte and packet
/// counters, load averages, free memory, sensor readings and the report's own timestamps.
pub const DEFAULT_IGNORED_PATHS: &[&str] = &[
    "/**/uptime",
    "/**/uptime_seconds",
    "/**/counters",
    "/**/statistics",
    "/**/rx_bytes",
    "/**/tx_bytes",
    "/**/rx_packets",
    "/**/tx_packets",
    "/**/rx_errors",
    "/**/tx_errors",
    "/**/rx_dropped",
    "/**/tx_dropped",
    "/**/load",
    "/**/loadavg",
    "/**/load_average",
    "/**/load_averages",
    "/**/free_bytes",
    "/**/available_bytes",
    "/**/temperature_c",
    "/**/collected_at",
    "/**/reported_at",
    "/**/current_time",
    "/**/timestamp",
];

use ChangeCategory as C;
use ChangeOp as O;
use ChangeSeverity as S;

/// Fleetlog's category and severity rules, first match wins, tried after a tenant's:
/// `(pattern, only this op, category, severity)`. A path no rule matches is `other`/`low`.
pub const DEFAULT_PATH_RULES: &[(&str, Option<ChangeOp>, ChangeCategory, ChangeSeverity)] = &[
    // Security first: certificates, firewall, VPN and platform security features live anywhere.
    ("/security", None, C::Security, S::High),
    ("/**/certificates", None, C::Security, S::High),
    ("/**/firewall", None, C::Security, S::High),
    ("/**/vpn", None, C::Security, S::High),
    ("/features/selinux", None, C::Security, S::High),
    ("/features/apparmor", None, C::Security, S::High),
    ("/features/secure_boot", None, C::Security, S::High),
    ("/features/tpm", None, C::Security, S::Medium),
    // Operating system.
    ("/os/name", None, C::Os, S::High),
    ("/os/version", None, C::Os, S::High),
    ("/os/kernel", None, C::Os, S::Medium),
    ("/os", None, C::Os, S::Low),
    ("/packages", None, C::Os, S::Low),
    // Hardware: a disk, DIMM or CPU that disappears needs attention now.
    (
        "/hardware/disks[*]",
        Some(O::Removed),
        C::Hardware,
        S::Critical,
    ),
    (
        "/hardware/memory[*]",
        Some(O::Removed),
        C::Hardware,
        S::Critical,
    ),
    (
        "/hardware/cpus[*]",
        Some(O::Removed),
        C::Hardware,
        S::Critical,
    ),
    (
        "/hardware/disks[*]/smart/status",
        None,
        C::Hardware,
        S::High,
    ),
    ("/hardware/**/serial", None, C::Hardware, S::High),
    ("/hardware/bios", None, C::Hardware, S::Medium),
    ("/hardware/**/firmware", None, C::Hardware, S::Medium),
    ("/hardware/memory", None, C::Hardware, S::Medium),
    ("/hardware/disks", None, C::Hardware, S::Medium),
    ("/hardware/cpus", None, C::Hardware, S::Medium),
    ("/hardware", None, C::Hardware, S::Low),
    // Network: addresses are medium, a vanished interface high.
    (
        "/network/interfaces[*]",
        Some(O::Removed),
        C::Network,
        S::High,
    ),
    (
        "/network/interfaces[*]/addresses",
        None,
        C::Network,
        S::Medium,
    ),
    ("/network/**/address", None, C::Network, S::Medium),
    ("/network/**/ipv4", None, C::Network, S::Medium),
    ("/network/**/ipv6", None, C::Network, S::Medium),
    ("/network/default_gateway", None, C::Network, S::Medium),
    ("/network/dns", None, C::Network, S::Medium),
    ("/network/**/mac", None, C::Network, S::Medium),
    ("/network", None, C::Network, S::Low),
    // Features and services.
    ("/features", None, C::Features, S::Low),
    ("/services", None, C::Features, S::Low),
    // Everything else that is known.
    ("/hostname", None, C::Other, S::Medium),
    ("/agent", None, C::Other, S::Info),
];

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern: {0}")]
pub struct PatternError(#[from] pub PathError);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternSegment {
    Key(String),
    AnyKey,
    Index(usize),
    Id { key: String, value: String },
    AnyElement,
    AnyDepth,
}

/// A parsed path pattern (see the module documentation), so rules are parsed once, not per
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<PatternSegment>,
}

impl PathPattern {
    /// Parses a pattern. Consecutive `/**` segments mean the same as one and are merged.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let mut segments: Vec<PatternSegment> = Vec::new();
        for token in tokenize(pattern)? {
            let segment = match token {
                Token::Key(k) if k == "*" => PatternSegment::AnyKey,
                Token::Key(k) if k == "**" => PatternSegment::AnyDepth,
                Token::Key(k) => PatternSegment::Key(k),
                Token::Index(i) => PatternSegment::Index(i),
                Token::Id(key, value) => PatternSegment::Id { key, value },
                Token::AnyElement => PatternSegment::AnyElement,
            };
            if segment == PatternSegment::AnyDepth && segments.last() == Some(&segment) {
                continue;
            }
            segments.push(segment);
        }
        Ok(Self {
            source: pattern.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches a prefix of `path`; a path that does not parse matches
    /// nothing.
    pub fn matches(&self, path: &str) -> bool {
        super::diff::parse_path(path).is_ok_and(|segments| {
            let borrowed: Vec<SegmentRef<'_>> = segments.iter().map(|s| s.as_ref()).collect();
            self.matches_segments(&borrowed)
        })
    }

    pub(crate) fn matches_segments(&self, path: &[SegmentRef<'_>]) -> bool {
        matches_from(&self.segments, path)
    }
}

/// Whether `pattern` matches a prefix of `path`, by dynamic programming over (pattern
/// segment, path segment): O(pattern × path) time and O(path) memory, however many `/**` the
/// pattern has (trying every skip of every `/**` recursively is exponential in their number).
///
/// `next[j]` says whether the pattern's segments after the current one match a prefix of
/// `path[j..]`; the pattern's end matches anything.
fn matches_from(pattern: &[PatternSegment], path: &[SegmentRef<'_>]) -> bool {
    let n = path.len();
    let mut next = vec![true; n + 1];
    let mut here = vec![false; n + 1];
    for segment in pattern.iter().rev() {
        if *segment == PatternSegment::AnyDepth {
            // `/**` skips zero or more segments: the rest matches at j or at any later place.
            here[n] = next[n];
            for j in (0..n).rev() {
                here[j] = next[j] || here[j + 1];
            }
        } else {
            here[n] = false;
            for j in 0..n {
                here[j] = next[j + 1] && segment_matches(segment, &path[j]);
            }
        }
        std::mem::swap(&mut next, &mut here);
    }
    next[0]
}

/// Whether one pattern segment other than `/**` matches one path segment.
fn segment_matches(pattern: &PatternSegment, segment: &SegmentRef<'_>) -> bool {
    match (pattern, segment) {
        (PatternSegment::Key(k), SegmentRef::Key(s)) => k == s,
        (PatternSegment::AnyKey, SegmentRef::Key(_)) => true,
        (PatternSegment::Index(i), SegmentRef::Index(j)) => i == j,
        (PatternSegment::Id { key, value }, SegmentRef::Id { key: k, value: v }) => {
            key == k && v.renders_as(value)
        }
        (PatternSegment::AnyElement, SegmentRef::Index(_) | SegmentRef::Id { .. }) => true,
        _ => false,
    }
}

/// One compiled category/severity rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Paths the rule covers.
    pub pattern: PathPattern,
    /// Only changes with this op; `None` for every op.
    pub op: Option<ChangeOp>,
    /// Category given to matching changes.
    pub category: ChangeCategory,
    /// Severity given to matching changes.
    pub severity: ChangeSeverity,
}

/// Everything the differ needs to know besides the two documents: built once per tenant (when
/// its [`InventoryRulesConfigured`] is folded) and shared by every diff of its systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRules {
    identity_keys: Vec<String>,
    ignored: Vec<PathPattern>,
    rules: Vec<PathRule>,
}

impl Default for DiffRules {
    /// Fleetlog's defaults: [`DEFAULT_IDENTITY_KEYS`], [`DEFAULT_IGNORED_PATHS`],
    /// [`DEFAULT_PATH_RULES`].
    fn default() -> Self {
        Self::for_tenant(&InventoryRulesConfigured::default()).expect("the default patterns parse")
    }
}

impl DiffRules {
    /// The tenant's rules merged over the defaults: its identity keys tried first, its ignored
    /// paths added to the defaults (or replacing them if it says so), its path rules tried
    /// before the defaults. Fails on the first pattern that does not parse.
    pub fn for_tenant(config: &InventoryRulesConfigured) -> Result<Self, PatternError> {
        let mut identity_keys: Vec<String> = Vec::new();
        for key in config
            .identity_keys
            .iter()
            .map(String::as_str)
            .chain(DEFAULT_IDENTITY_KEYS.iter().copied())
        {
            if !key.is_empty() && !identity_keys.iter().any(|k| k == key) {
                identity_keys.push(key.to_owned());
            }
        }
        let defaults: &[&str] = if config.replace_default_ignored_paths {
            &[]
        } else {
            DEFAULT_IGNORED_PATHS
        };
        let ignored = config
            .ignored_paths
            .iter()
            .map(String::as_str)
            .chain(defaults.iter().copied())
            .map(PathPattern::parse)
            .collect::<Result<_, _>>()?;
        let tenant_rules = config.path_rules.iter().map(|rule| {
            Ok(PathRule {
                pattern: PathPattern::parse(&rule.pattern)?,
                op: rule.op,
                category: rule.category,
                severity: rule.severity,
            })
        });
        let default_rules = DEFAULT_PATH_RULES
            .iter()
            .map(|&(pattern, op, category, severity)| {
                Ok(PathRule {
                    pattern: PathPattern::parse(pattern)?,
                    op,
                    category,
                    severity,
                })
            });
        let rules = tenant_rules
            .chain(default_rules)
            .collect::<Result<_, PatternError>>()?;
        Ok(Self {
            identity_keys,
            ignored,
            rules,
        })
    }

    /// Identity keys of array elements, in the order they are tried.
    pub fn identity_keys(&self) -> &[String] {
        &self.identity_keys
    }

    /// Whether changes at `path` are ignored.
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignored.iter().any(|p| p.matches(path))
    }

    /// Category and severity of a change with `op` at `path`: the first matching rule's, or
    /// `other`/`low`.
    pub fn classify(&self, path: &str, op: ChangeOp) -> (ChangeCategory, ChangeSeverity) {
        match super::diff::parse_path(path) {
            Ok(segments) => {
                let borrowed: Vec<SegmentRef<'_>> = segments.iter().map(|s| s.as_ref()).collect();
                self.classify_segments(&borrowed, op)
            }
            Err(_) => (ChangeCategory::Other, ChangeSeverity::Low),
        }
    }

    pub(crate) fn ignores(&self, path: &[SegmentRef<'_>]) -> bool {
        self.ignored.iter().any(|p| p.matches_segments(path))
    }

    pub(crate) fn classify_segments(
        &self,
        path: &[SegmentRef<'_>],
        op: ChangeOp,
    ) -> (ChangeCategory, ChangeSeverity) {
        self.rules
            .iter()
            .find(|rule| rule.op.is_none_or(|o| o == op) && rule.pattern.matches_segments(path))
            .map_or((ChangeCategory::Other, ChangeSeverity::Low), |rule| {
                (rule.category, rule.severity)
            })
    }
}

/// Whether a change-notification rule asks to be told about `change`: severity at least the
/// rule's, the rule's category if it names one, and at or below its path prefix if it has one
/// (by whole segments: `/os` covers `/os/name` and `/os[0]`, not `/osx`).
pub fn notification_matches(rule: &ChangeNotificationRule, change: &InventoryChange) -> bool {
    let under = |prefix: &str| {
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        change
            .path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '[']))
    };
    change.severity >= rule.min_severity
        && rule.category.is_none_or(|c| c == change.category)
        && rule.path_prefix.as_deref().is_none_or(under)
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::InventoryPathRule;

    fn change(path: &str, category: ChangeCategory, severity: ChangeSeverity) -> InventoryChange {
        InventoryChange {
            path: path.into(),
            op: ChangeOp::Changed,
            previous: None,
            current: None,
            category,
            severity,
        }
    }

    #[test]
    fn patterns_match_prefixes_with_wildcards_over_segments() {
        let p = |s| PathPattern::parse(s).unwrap();
        assert!(p("/os").matches("/os/name"));
        assert!(p("/os").matches("/os"));
        assert!(!p("/os").matches("/osx"));
        assert!(!p("/os/name").matches("/os"));
        assert!(p("/network/interfaces[*]/counters")
            .matches("/network/interfaces[name=eth0]/counters/rx"));
        assert!(p("/network/interfaces[*]").matches("/network/interfaces[3]"));
        assert!(!p("/network/interfaces[*]").matches("/network/interfaces/x"));
        assert!(p("/*/name").matches("/os/name"));
        assert!(!p("/*/name").matches("/os/x/name"));
        assert!(p("/**/uptime").matches("/uptime"));
        assert!(p("/**/uptime").matches("/a[1]/b/uptime"));
        assert!(!p("/**/uptime").matches("/a/uptime_seconds"));
        assert!(p("/nics[name=eth0]").matches("/nics[name=eth0]/mtu"));
        assert!(!p("/nics[name=eth0]").matches("/nics[name=eth1]/mtu"));
        assert!(!p("/nics[2]").matches("/nics[name=2]"));
        assert!(PathPattern::parse("no-slash").is_err());
    }

    #[test]
    fn defaults_classify_os_disks_dimms_and_addresses_as_the_issue_asks() {
        let rules = DiffRules::default();
        let c = |path, op| rules.classify(path, op);
        assert_eq!(c("/os/version", O::Changed), (C::Os, S::High));
        assert_eq!(c("/os/name", O::Changed), (C::Os, S::High));
        assert_eq!(
            c("/hardware/disks[serial=X]", O::Removed),
            (C::Hardware, S::Critical)
        );
        assert_eq!(
            c("/hardware/memory[serial=X]", O::Removed),
            (C::Hardware, S::Critical)
        );
        assert_eq!(
            c("/hardware/memory[serial=X]", O::Added),
            (C::Hardware, S::Medium)
        );
        assert_eq!(
            c(
                "/network/interfaces[name=eth1]/addresses[0]/address",
                O::Changed
            ),
            (C::Network, S::Medium)
        );
        assert_eq!(
            c("/network/firewall/rules", O::Changed),
            (C::Security, S::High)
        );
        assert_eq!(
            c("/packages[name=bash]/version", O::Changed),
            (C::Os, S::Low)
        );
        assert_eq!(c("/something/else", O::Added), (C::Other, S::Low));
        assert!(rules.is_ignored("/os/uptime_seconds"));
        assert!(rules.is_ignored("/network/interfaces[name=eth0]/counters/rx_bytes"));
        assert!(!rules.is_ignored("/os/boot_time"));
    }

    #[test]
    fn tenant_rules_come_before_the_defaults_and_can_replace_the_ignores() {
        let config = InventoryRulesConfigured {
            identity_keys: vec!["slot".into(), "name".into()],
            ignored_paths: vec!["/hardware/**/percentage_used".into()],
            replace_default_ignored_paths: true,
            path_rules: vec![InventoryPathRule {
                pattern: "/os/version".into(),
                op: Some(O::Changed),
                category: C::Os,
                severity: S::Critical,
            }],
        };
        let rules = DiffRules::for_tenant(&config).unwrap();
        assert_eq!(
            rules.identity_keys(),
            ["slot", "name", "mac", "serial", "id", "device"]
        );
        assert_eq!(
            rules.classify("/os/version", O::Changed),
            (C::Os, S::Critical)
        );
        assert_eq!(rules.classify("/os/version", O::Added), (C::Os, S::High));
        assert!(rules.is_ignored("/hardware/disks[0]/smart/percentage_used"));
        assert!(!rules.is_ignored("/os/uptime_seconds"));
        let bad = InventoryRulesConfigured {
            ignored_paths: vec!["oops".into()],
            ..Default::default()
        };
        assert!(DiffRules::for_tenant(&bad).is_err());
    }

    #[test]
    fn notification_rules_filter_by_severity_category_and_path_prefix() {
        let rule = |min, category, prefix: Option<&str>| ChangeNotificationRule {
            name: "r".into(),
            min_severity: min,
            category,
            path_prefix: prefix.map(Into::into),
        };
        let hardware_high = rule(S::High, Some(C::Hardware), None);
        assert!(notification_matches(
            &hardware_high,
            &change("/hardware/memory[serial=1]", C::Hardware, S::Critical)
        ));
        assert!(!notification_matches(
            &hardware_high,
            &change("/hardware/bios", C::Hardware, S::Medium)
        ));
        assert!(!notification_matches(
            &hardware_high,
            &change("/os/name", C::Os, S::High)
        ));
        let under_os = rule(S::Info, None, Some("/os"));
        assert!(notification_matches(
            &under_os,
            &change("/os/kernel", C::Os, S::Medium)
        ));
        assert!(notification_matches(
            &under_os,
            &change("/os", C::Os, S::Info)
        ));
        assert!(!notification_matches(
            &under_os,
            &change("/osx/kernel", C::Os, S::High)
        ));
        assert!(notification_matches(
            &rule(S::Info, None, Some("/")),
            &change("/a", C::Other, S::Info)
        ));
    }
}
