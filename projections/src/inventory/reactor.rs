//! The diff reactor: on every full inventory report it compares the document with the system's
//! previous full report and appends `InventoryChanged` with the changes, each self-contained
//! (path, op, previous and current value, category, severity), so the timeline never needs the
//! documents again. The first report of a system is its baseline: no diff.
//!
//! It also raises change notifications: for every tenant rule that some of the changes match
//! ("severity at least high in hardware", "anything under /os"), an `AlertTriggered` under the
//! dedup key `inventory:{rule}:{system id}`, in the tenant's alert namespace.
//!
//! Deterministic: the previous report and the tenant's rules are read as of the report's place in
//! the log (rule changes are in the reactor's event types and take effect from where they stand),
//! so a replay derives the same events under the same ids, and the store writes nothing twice.
//!
//! The reactor keeps the latest document of recently reported systems (a bounded cache, see
//! [`InventoryDiff::with_cached_reports`]), so the previous report of a system that reported
//! lately is neither read from PostgreSQL nor parsed again. A cached document is used only when
//! the log says it is the very report (by position) the previous one would be read from, so the
//! cache changes how fast, never what, the reactor derives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::ExpectedVersion;
use command_side::ingest::api::alert_stream;
use events_schema::{
    AlertSeverity, AlertTriggered, ChangeNotificationRule, ChangeNotificationRulesConfigured,
    ChangeSeverity, DomainEvent, InventoryChange, InventoryChanged, InventoryReported,
    InventoryRulesConfigured, NewEvent, RecordedEvent, StreamId, TenantId,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::inventory::{diff, notification_matches, DiffRules};
use crate::link_failed::{registered_systems, RegisteredSystem};
use crate::projector::FoldError;
use crate::reactor::{Reaction, Reactor};

/// The reactor's name: its checkpoint key and the namespace of the ids it derives.
pub const DIFF_REACTOR_NAME: &str = "inventory_diff";

/// The event manager id change notifications carry.
pub const INVENTORY_ALERT_SOURCE: &str = "fleetlog-inventory";

/// At most this many of the matching changes are copied into a notification.
const CHANGES_PER_NOTIFICATION: usize = 20;

/// How many systems' latest reports [`InventoryDiff::default`] keeps: a fleet of up to this many
/// machines reporting in turn never has a previous report read back from the log.
pub const DEFAULT_CACHED_REPORTS: usize = 2048;

/// The most memory the cached documents may take, as [`approximate_size`] estimates it: a few
/// large documents (inventories may be megabytes) must not make the cache grow without bound.
pub const DEFAULT_CACHED_BYTES: usize = 256 << 20;

/// How long loading a batch ahead waits for the batch before it to be done with, when the
/// previous reports it needs are in that batch; after that it reads them from the log instead
/// (the same documents, only slower).
const PENDING_REPORTS_WAIT: Duration = Duration::from_secs(5);

/// The reactor; see the module doc. Each instance has a cache of its own: one instance per runner.
#[derive(Debug)]
pub struct InventoryDiff {
    cache: ReportCache,
}

impl Default for InventoryDiff {
    fn default() -> Self {
        Self::with_cached_reports(DEFAULT_CACHED_REPORTS)
    }
}

impl InventoryDiff {
    /// A reactor that keeps the latest report of at most `capacity` systems (the ones that
    /// reported most recently) between batches; 0 reads every previous report from the log.
    pub fn with_cached_reports(capacity: usize) -> Self {
        Self {
            cache: ReportCache {
                capacity,
                max_bytes: DEFAULT_CACHED_BYTES,
                state: Mutex::default(),
                released_through: tokio::sync::watch::Sender::new(0),
            },
        }
    }
}

/// A system's latest full report: its hash and (unless retention pruned it) its document.
#[derive(Debug, Clone)]
struct LatestReport {
    hash: String,
    data: Option<Arc<Value>>,
}

/// The latest reports of the batches this reactor was done with, by system, across batches.
#[derive(Debug)]
struct ReportCache {
    capacity: usize,
    /// Budget of the cached documents' estimated memory.
    max_bytes: usize,
    state: Mutex<CacheState>,
    /// The end of the last batch released into the cache: loading a batch ahead waits on it for
    /// reports of the batch still being reacted to.
    released_through: tokio::sync::watch::Sender<i64>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// Each cached system's latest report, its position and its estimated size.
    reports: HashMap<StreamId, (i64, LatestReport, usize)>,
    /// The sum of the cached reports' estimated sizes.
    bytes: usize,
    /// The same entries by position, oldest first: what goes when the cache is full.
    by_position: BTreeMap<i64, StreamId>,
    /// The end of the last batch loaded: its reports are about to be reacted to (then cached).
    loaded_through: i64,
}

impl ReportCache {
    /// Remembers `report` (at `position`) as the latest of `stream`.
    fn insert(&self, stream: &StreamId, position: i64, report: LatestReport) {
        if self.capacity == 0 {
            return;
        }
        let size = report.data.as_deref().map_or(0, approximate_size) + report.hash.len();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _, old_size)) = state.reports.remove(stream) {
            state.by_position.remove(&old);
            state.bytes -= old_size;
        }
        if size > self.max_bytes {
            return;
        }
        state
            .reports
            .insert(stream.clone(), (position, report, size));
        state.by_position.insert(position, stream.clone());
        state.bytes += size;
        while state.reports.len() > self.capacity || state.bytes > self.max_bytes {
            let Some((_, oldest)) = state.by_position.pop_first() else {
                break;
            };
            if let Some((_, _, size)) = state.reports.remove(&oldest) {
                state.bytes -= size;
            }
        }
    }

    /// The cached report of `stream` if it is the one at `position`.
    fn get(&self, stream: &StreamId, position: i64) -> Option<LatestReport> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .reports
            .get(stream)
            .filter(|(cached, _, _)| *cached == position)
            .map(|(_, report, _)| report.clone())
    }

    /// Notes that every report up to `position` the runner was done with is in the cache.
    fn released(&self, position: i64) {
        self.released_through.send_if_modified(|through| {
            let moved = position > *through;
            *through = (*through).max(position);
            moved
        });
    }
}

/// One tenant's rules at a point of the log.
#[derive(Debug, Clone, Default)]
struct TenantRules {
    diff: Arc<DiffRules>,
    notify: Arc<Vec<ChangeNotificationRule>>,
}

/// What a batch's reactions depend on, loaded once and kept current through the batch.
#[derive(Debug, Default)]
pub struct DiffContext {
    latest: HashMap<StreamId, LatestReport>,
    /// Positions of reports followed by another report of the same system in the batch.
    reported_again: HashSet<i64>,
    rules: HashMap<TenantId, TenantRules>,
    systems: HashMap<Uuid, RegisteredSystem>,
}

const EVENT_TYPES: &[&str] = &[
    InventoryReported::EVENT_TYPE,
    InventoryRulesConfigured::EVENT_TYPE,
    ChangeNotificationRulesConfigured::EVENT_TYPE,
];

impl Reactor for InventoryDiff {
    type Context = DiffContext;

    fn name(&self) -> &'static str {
        DIFF_REACTOR_NAME
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

    /// The previous reports and the rules are inputs already in the log, never this reactor's
    /// own `InventoryChanged` or notifications.
    fn load_ahead(&self) -> bool {
        true
    }

    async fn load(
        &self,
        pool: &PgPool,
        events: &[RecordedEvent],
    ) -> Result<DiffContext, sqlx::Error> {
        let mut context = DiffContext::default();
        let Some(first) = events.first().map(|e| e.position) else {
            return Ok(context);
        };
        // Each system's latest full report before its first report in this batch.
        let mut before: HashMap<&str, i64> = HashMap::new();
        let mut tenants: Vec<String> = Vec::new();
        let mut last_report: HashMap<&str, i64> = HashMap::new();
        for event in events {
            if event.event_type == InventoryReported::EVENT_TYPE {
                let stream = event.stream_id.as_str();
                before.entry(stream).or_insert(event.position);
                if let Some(earlier) = last_report.insert(stream, event.position) {
                    context.reported_again.insert(earlier);
                }
            }
            let tenant = StreamId::tenant(event.tenant_id).as_str().to_owned();
            if !tenants.contains(&tenant) {
                tenants.push(tenant);
            }
        }
        context.latest = self.previous_reports(pool, before, events).await?;
        // Each tenant's rules as they stood before the batch.
        let rules: Vec<(String, String, Value)> = sqlx::query_as(
            "SELECT DISTINCT ON (stream_id, event_type) stream_id, event_type, payload \
             FROM events \
             WHERE stream_id = ANY($1) AND position < $2 \
               AND event_type IN ('InventoryRulesConfigured', 'ChangeNotificationRulesConfigured') \
             ORDER BY stream_id, event_type, position DESC",
        )
        .bind(&tenants)
        .bind(first)
        .fetch_all(pool)
        .await?;
        for (stream, event_type, payload) in rules {
            let Some(tenant) = stream
                .strip_prefix("tenant-")
                .and_then(|id| Uuid::parse_str(id).ok())
                .map(TenantId)
            else {
                continue;
            };
            context
                .rules
                .entry(tenant)
                .or_default()
                .apply_or_default(&event_type, payload);
        }
        context.systems = registered_systems(pool, events).await?;
        Ok(context)
    }

    /// Moves the batch's documents into the cache (no copy), each system's latest last.
    fn release(&self, events: Vec<RecordedEvent>) {
        let Some(end) = events.last().map(|e| e.position) else {
            return;
        };
        for event in events {
            if event.event_type == InventoryReported::EVENT_TYPE {
                if let Some(report) = latest_report(event.payload) {
                    self.cache.insert(&event.stream_id, event.position, report);
                }
            }
        }
        self.cache.released(end);
    }

    fn react(
        &self,
        context: &mut DiffContext,
        event: &RecordedEvent,
        _now: DateTime<Utc>,
    ) -> Result<Vec<Reaction>, FoldError> {
        if event.event_type != InventoryReported::EVENT_TYPE {
            context
                .rules
                .entry(event.tenant_id)
                .or_default()
                .apply_or_default(&event.event_type, event.payload.clone());
            return Ok(Vec::new());
        }
        // The document is copied only if a later report of this system in the batch needs it
        // (the cache takes it from the batch when the runner releases it).
        let keep_document = context.reported_again.contains(&event.position);
        let current = report_of(&event.payload, keep_document)
            .ok_or_else(|| FoldError("an InventoryReported without a content hash".into()))?;
        let current_hash = current.hash.clone();
        let previous = context.latest.insert(event.stream_id.clone(), current);
        let (Some(previous), Some(new_data)) = (previous, event.payload.get("data")) else {
            // The baseline.
            return Ok(Vec::new());
        };
        let (Some(old_data), false) = (previous.data.as_ref(), is_pruned(&event.payload)) else {
            // A report retention pruned, or one after it: its diff was stored before the prune.
            return Ok(Vec::new());
        };
        let rules = context
            .rules
            .get(&event.tenant_id)
            .cloned()
            .unwrap_or_default();
        let changes = diff(old_data, new_data, &rules.diff);
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut reactions = Vec::with_capacity(1 + rules.notify.len());
        let system_id = event.stream_id.system_id();
        for rule in rules.notify.iter() {
            let matching: Vec<&InventoryChange> = changes
                .iter()
                .filter(|change| notification_matches(rule, change))
                .collect();
            if let (false, Some(system_id)) = (matching.is_empty(), system_id) {
                let system = context.systems.get(&system_id);
                reactions.push(notification(event, system_id, system, rule, &matching));
            }
        }
        let changed = InventoryChanged {
            previous_hash: previous.hash,
            current_hash,
            changes,
        };
        reactions.insert(
            0,
            Reaction {
                stream_id: event.stream_id.clone(),
                expected: ExpectedVersion::Any,
                event: NewEvent::new(event.tenant_id, &changed, event.recorded_at),
            },
        );
        Ok(reactions)
    }
}

impl InventoryDiff {
    /// The latest full report of each system in `before` (stream → position of its first report
    /// in `events`) before that position: from the cache when it holds that very report, else
    /// from the log. Reports of the batch still being reacted to (when `events` is loaded ahead)
    /// are waited for, briefly, since reacting to them puts them in the cache.
    async fn previous_reports(
        &self,
        pool: &PgPool,
        before: HashMap<&str, i64>,
        events: &[RecordedEvent],
    ) -> Result<HashMap<StreamId, LatestReport>, sqlx::Error> {
        let (streams, positions): (Vec<&str>, Vec<i64>) = before.into_iter().unzip();
        let previous: Vec<(String, i64)> = sqlx::query_as(
            "SELECT b.stream_id, e.position \
             FROM unnest($1::text[], $2::bigint[]) AS b(stream_id, before) \
             CROSS JOIN LATERAL ( \
                 SELECT position FROM events \
                 WHERE stream_id = b.stream_id AND event_type = 'InventoryReported' \
                   AND position < b.before \
                 ORDER BY stream_version DESC LIMIT 1) e",
        )
        .bind(&streams)
        .bind(&positions)
        .fetch_all(pool)
        .await?;
        let previous: Vec<(StreamId, i64)> = previous
            .into_iter()
            .filter_map(|(stream, position)| Some((StreamId::parse(&stream).ok()?, position)))
            .collect();
        // Reports loaded with an earlier batch but not reacted to yet will be cached soon.
        let loaded_through = {
            let mut state = self.cache.state.lock().unwrap_or_else(|e| e.into_inner());
            let through = state.loaded_through;
            state.loaded_through = events.last().map_or(through, |e| e.position);
            through
        };
        let pending = previous
            .iter()
            .map(|(_, position)| *position)
            .filter(|position| *position <= loaded_through)
            .max();
        if let (Some(pending), true) = (pending, self.cache.capacity > 0) {
            let mut released = self.cache.released_through.subscribe();
            // Whether or not they came in time, the lookups below are right; waiting saves reads.
            let _ = tokio::time::timeout(
                PENDING_REPORTS_WAIT,
                released.wait_for(|through| *through >= pending),
            )
            .await;
        }
        let mut latest = HashMap::with_capacity(previous.len());
        let mut missing = Vec::new();
        for (stream, position) in previous {
            match self.cache.get(&stream, position) {
                Some(report) => {
                    latest.insert(stream, report);
                }
                None => missing.push(position),
            }
        }
        tracing::debug!(
            cached = latest.len(),
            read = missing.len(),
            "previous inventory reports"
        );
        if missing.is_empty() {
            return Ok(latest);
        }
        let read: Vec<(String, Value)> =
            sqlx::query_as("SELECT stream_id, payload FROM events WHERE position = ANY($1)")
                .bind(&missing)
                .fetch_all(pool)
                .await?;
        for (stream, payload) in read {
            if let (Ok(stream), Some(report)) = (StreamId::parse(&stream), latest_report(payload)) {
                latest.insert(stream, report);
            }
        }
        Ok(latest)
    }
}

impl TenantRules {
    /// Takes a rules event into account. Commands validate rules before they are stored; a
    /// stored set that cannot be read anyway stands for Fleetlog's defaults, the same whether it
    /// is met inside a batch or loaded before one (so replays in any batch size agree).
    fn apply_or_default(&mut self, event_type: &str, payload: Value) {
        if let Err(error) = self.apply(event_type, payload) {
            tracing::warn!(%error, "stored inventory rules unreadable; using the defaults");
            if event_type == InventoryRulesConfigured::EVENT_TYPE {
                self.diff = Arc::default();
            } else {
                self.notify = Arc::default();
            }
        }
    }

    /// Takes a rules event into account.
    fn apply(&mut self, event_type: &str, payload: Value) -> Result<(), FoldError> {
        let unreadable =
            |error: &dyn std::fmt::Display| FoldError(format!("{event_type}: {error}"));
        if event_type == InventoryRulesConfigured::EVENT_TYPE {
            let config: InventoryRulesConfigured =
                serde_json::from_value(payload).map_err(|e| unreadable(&e))?;
            self.diff = Arc::new(DiffRules::for_tenant(&config).map_err(|e| unreadable(&e))?);
        } else if event_type == ChangeNotificationRulesConfigured::EVENT_TYPE {
            let config: ChangeNotificationRulesConfigured =
                serde_json::from_value(payload).map_err(|e| unreadable(&e))?;
            self.notify = Arc::new(config.rules);
        }
        Ok(())
    }
}

/// The hash and document of a stored InventoryReported payload (`None` without a hash).
fn latest_report(payload: Value) -> Option<LatestReport> {
    let pruned = is_pruned(&payload);
    let Value::Object(mut payload) = payload else {
        return None;
    };
    let hash = payload.get("content_hash")?.as_str()?.to_owned();
    let data = payload.remove("data").filter(|_| !pruned).map(Arc::new);
    Some(LatestReport { hash, data })
}

/// Like [`latest_report`] from a borrowed payload; the document is copied only when `document`.
fn report_of(payload: &Value, document: bool) -> Option<LatestReport> {
    let hash = payload.get("content_hash")?.as_str()?.to_owned();
    let data = (document && !is_pruned(payload))
        .then(|| payload.get("data").cloned().map(Arc::new))
        .flatten();
    Some(LatestReport { hash, data })
}

/// Whether retention pruned this InventoryReported payload down to its hash.
fn is_pruned(payload: &Value) -> bool {
    payload.get("pruned").and_then(Value::as_bool) == Some(true)
}

/// The alert severity of a change severity.
fn alert_severity(severity: ChangeSeverity) -> AlertSeverity {
    match severity {
        ChangeSeverity::Critical => AlertSeverity::Critical,
        ChangeSeverity::High => AlertSeverity::Error,
        ChangeSeverity::Medium => AlertSeverity::Warning,
        ChangeSeverity::Low | ChangeSeverity::Info => AlertSeverity::Info,
    }
}

/// The notification of `rule` about the `matching` changes of one report.
fn notification(
    report: &RecordedEvent,
    system_id: Uuid,
    system: Option<&RegisteredSystem>,
    rule: &ChangeNotificationRule,
    matching: &[&InventoryChange],
) -> Reaction {
    let worst = matching
        .iter()
        .map(|change| change.severity)
        .max()
        .unwrap_or(ChangeSeverity::Info);
    let name = system.map_or_else(|| system_id.to_string(), |s| s.name.clone());
    let first = matching.first().map_or("", |change| change.path.as_str());
    let summary = match matching.len() {
        1 => format!("{name}: {first} changed (rule {})", rule.name),
        n => format!(
            "{name}: {n} inventory changes, first {first} (rule {})",
            rule.name
        ),
    };
    let mut labels = BTreeMap::from([
        ("alertname".to_owned(), "InventoryChanged".to_owned()),
        ("tenant_id".to_owned(), report.tenant_id.to_string()),
        ("system_id".to_owned(), system_id.to_string()),
        ("rule".to_owned(), rule.name.clone()),
    ]);
    if let Some(system) = system {
        labels.insert("system_key".to_owned(), system.system_key.clone());
        labels.insert("system_name".to_owned(), system.name.clone());
    }
    let dedup_key = format!("inventory:{}:{system_id}", rule.name);
    let shown: Vec<&InventoryChange> = matching
        .iter()
        .take(CHANGES_PER_NOTIFICATION)
        .copied()
        .collect();
    let custom = json!({
        "change_count": matching.len(),
        "changes": shown,
        "report_event_id": report.event_id,
    });
    let triggered = AlertTriggered {
        dedup_key: dedup_key.clone(),
        event_manager_id: INVENTORY_ALERT_SOURCE.to_owned(),
        summary,
        severity: alert_severity(worst),
        class: Some("InventoryChanged".to_owned()),
        labels,
        custom: match custom {
            Value::Object(map) => map,
            _ => Default::default(),
        },
    };
    Reaction {
        stream_id: alert_stream(report.tenant_id, None, &dedup_key),
        expected: ExpectedVersion::Any,
        event: NewEvent::new(report.tenant_id, &triggered, report.recorded_at),
    }
}

/// Roughly how much memory a parsed document takes: its strings and keys plus a fixed cost per
/// value. An estimate for the cache's budget, not an exact count.
fn approximate_size(value: &Value) -> usize {
    const PER_VALUE: usize = 32;
    PER_VALUE
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(approximate_size).sum(),
            Value::Object(map) => map
                .iter()
                .map(|(key, value)| PER_VALUE + key.len() + approximate_size(value))
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text_len: usize) -> LatestReport {
        LatestReport {
            hash: "h".into(),
            data: Some(Arc::new(json!({ "blob": "x".repeat(text_len) }))),
        }
    }

    #[test]
    fn the_cache_keeps_to_its_memory_budget_dropping_the_oldest_reports_first() {
        let cache = ReportCache {
            capacity: 100,
            max_bytes: 3_500,
            state: Mutex::default(),
            released_through: tokio::sync::watch::Sender::new(0),
        };
        let streams: Vec<StreamId> = (0..4).map(|_| StreamId::system(Uuid::now_v7())).collect();
        for (i, stream) in streams.iter().enumerate() {
            cache.insert(stream, i as i64 + 1, report(1_000));
        }
        assert!(cache.get(&streams[0], 1).is_none(), "the oldest went first");
        for (i, stream) in streams.iter().enumerate().skip(1) {
            assert!(cache.get(stream, i as i64 + 1).is_some());
        }
        let bytes = cache.state.lock().unwrap().bytes;
        assert!(bytes <= 3_500, "{bytes} bytes cached");
        // A document larger than the whole budget is not cached, and replaces nothing else.
        cache.insert(&streams[1], 10, report(10_000));
        assert!(cache.get(&streams[1], 10).is_none());
        assert!(
            cache.get(&streams[1], 2).is_none(),
            "its older report is superseded"
        );
        assert!(cache.get(&streams[2], 3).is_some());
    }
}
