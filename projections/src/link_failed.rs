//! LinkFailed alerts: a reactor that raises an alert when the liveness monitor declares a system
//! or gateway silent, and resolves it when the system recovers.
//!
//! The alert's labels come from Fleetlog's own records (the registry), never from what a client
//! sent: `alertname`, `tenant_id`, `system_id`, `system_key`, `system_name`, `kind`. Its dedup key
//! is `LinkFailed:{system id}`, in the tenant's own alert namespace (the one tenant tools use, not
//! a system's), so every outage of one system is one alert that fires and resolves, and no system
//! can resolve it by reporting an alert of its own. Decommissioning a system whose alert is open
//! resolves it (a decommissioned system is never watched again); pausing leaves it open until the
//! system recovers or is decommissioned. A silence of a system that is paused or decommissioned
//! by then (the monitor read it just before) raises nothing. What is open, paused or
//! decommissioned is read from the system's stream as of each batch, so a replay decides alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use command_side::event_store::ExpectedVersion;
use command_side::ingest::api::alert_stream;
use events_schema::{
    AlertResolved, AlertSeverity, AlertTriggered, DomainEvent, NewEvent, RecordedEvent, StreamId,
    SystemDecommissioned, SystemPaused, SystemRecovered, SystemResumed, SystemWentSilent,
};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::projector::FoldError;
use crate::reactor::{Reaction, Reactor};

/// The event manager id LinkFailed alerts carry.
pub const LINK_FAILED_SOURCE: &str = "fleetlog-liveness";

/// The alert name (and the `alertname` label) of a silent system.
pub const LINK_FAILED: &str = "LinkFailed";

/// The reactor; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkFailedAlerts;

/// What the registry says about one system.
#[derive(Debug, Clone, FromRow)]
pub struct RegisteredSystem {
    /// The system's id.
    pub system_id: Uuid,
    /// Its public key, e.g. `FL-7K2D-Q9XM-4HTR`.
    pub system_key: String,
    /// Its name.
    pub name: String,
    /// `system` or `gateway`.
    pub kind: String,
}

/// What the registry says about the systems whose streams `events` are on.
pub async fn registered_systems(
    pool: &PgPool,
    events: &[RecordedEvent],
) -> Result<HashMap<Uuid, RegisteredSystem>, sqlx::Error> {
    let ids: Vec<Uuid> = events
        .iter()
        .filter_map(|e| e.stream_id.system_id())
        .collect();
    let systems: Vec<RegisteredSystem> = sqlx::query_as(
        "SELECT system_id, system_key, name, kind FROM registry_systems \
         WHERE system_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(systems.into_iter().map(|s| (s.system_id, s)).collect())
}

/// The dedup key of a system's LinkFailed alert.
pub fn dedup_key(system_id: Uuid) -> String {
    format!("{LINK_FAILED}:{system_id}")
}

/// What the reactions to a batch depend on.
#[derive(Debug, Default)]
pub struct LinkFailedContext {
    systems: HashMap<Uuid, RegisteredSystem>,
    /// Systems whose LinkFailed alert is open, kept current through the batch.
    open: HashSet<Uuid>,
    /// Paused or decommissioned systems (and which of the two), kept current through the batch.
    not_watched: HashMap<Uuid, String>,
}

impl Reactor for LinkFailedAlerts {
    type Context = LinkFailedContext;

    fn name(&self) -> &'static str {
        "link_failed_alerts"
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[
            SystemWentSilent::EVENT_TYPE,
            SystemRecovered::EVENT_TYPE,
            SystemPaused::EVENT_TYPE,
            SystemResumed::EVENT_TYPE,
            SystemDecommissioned::EVENT_TYPE,
        ])
    }

    async fn load(
        &self,
        pool: &PgPool,
        events: &[RecordedEvent],
    ) -> Result<Self::Context, sqlx::Error> {
        // Each system's lifecycle as it stood before the batch (read from its stream, so a
        // replay decides the same), and whether its alert is open: the latest alert this reactor
        // appended for it (all of them belong to inputs before this batch).
        let mut systems: Vec<(&str, Uuid, String)> = events
            .iter()
            .filter_map(|e| {
                let id = e.stream_id.system_id()?;
                let alerts = alert_stream(e.tenant_id, None, &dedup_key(id));
                Some((e.stream_id.as_str(), id, alerts.as_str().to_owned()))
            })
            .collect();
        systems.sort_unstable();
        systems.dedup();
        let first = events.first().map_or(0, |e| e.position);
        let streams: Vec<&str> = systems.iter().map(|s| s.0).collect();
        let alert_streams: Vec<&str> = systems.iter().map(|s| s.2.as_str()).collect();
        let latest: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT s.stream_id, \
                 (SELECT event_type FROM events \
                  WHERE stream_id = s.stream_id AND position < $3 \
                    AND event_type IN ('SystemPaused', 'SystemResumed', 'SystemDecommissioned') \
                  ORDER BY stream_version DESC LIMIT 1), \
                 (SELECT event_type FROM events \
                  WHERE stream_id = s.alert_stream \
                    AND event_type IN ('AlertTriggered', 'AlertResolved') \
                  ORDER BY stream_version DESC LIMIT 1) \
             FROM unnest($1::text[], $2::text[]) AS s(stream_id, alert_stream)",
        )
        .bind(&streams)
        .bind(&alert_streams)
        .bind(first)
        .fetch_all(pool)
        .await?;
        let mut context = LinkFailedContext {
            systems: registered_systems(pool, events).await?,
            ..Default::default()
        };
        for (stream, lifecycle, alert) in latest {
            let Some(id) = StreamId::parse(&stream).ok().and_then(|s| s.system_id()) else {
                continue;
            };
            if let Some(lifecycle) = lifecycle.filter(|t| t != SystemResumed::EVENT_TYPE) {
                context.not_watched.insert(id, lifecycle);
            }
            if alert.as_deref() == Some(AlertTriggered::EVENT_TYPE) {
                context.open.insert(id);
            }
        }
        Ok(context)
    }

    fn react(
        &self,
        context: &mut Self::Context,
        event: &RecordedEvent,
        _now: DateTime<Utc>,
    ) -> Result<Vec<Reaction>, FoldError> {
        let system_id = event
            .stream_id
            .system_id()
            .ok_or_else(|| FoldError(format!("{} is not a system stream", event.stream_id)))?;
        let event_type = event.event_type.as_str();
        let open = context.open.contains(&system_id);
        let raise = match event_type {
            _ if event_type == SystemPaused::EVENT_TYPE => {
                context.not_watched.insert(system_id, event_type.to_owned());
                return Ok(Vec::new());
            }
            _ if event_type == SystemResumed::EVENT_TYPE => {
                context.not_watched.remove(&system_id);
                return Ok(Vec::new());
            }
            // A silence that raced a pause or a decommission raises nothing: paused and
            // decommissioned systems raise no alerts.
            _ if event_type == SystemWentSilent::EVENT_TYPE => {
                if open || context.not_watched.contains_key(&system_id) {
                    return Ok(Vec::new());
                }
                true
            }
            _ => {
                if event_type == SystemDecommissioned::EVENT_TYPE {
                    context.not_watched.insert(system_id, event_type.to_owned());
                }
                if !open {
                    return Ok(Vec::new());
                }
                false
            }
        };
        if raise {
            context.open.insert(system_id);
        } else {
            context.open.remove(&system_id);
        }
        let system = context
            .systems
            .get(&system_id)
            .ok_or_else(|| FoldError(format!("system {system_id} is not in the registry (yet)")))?;
        let dedup_key = dedup_key(system_id);
        let stream_id = alert_stream(event.tenant_id, None, &dedup_key);
        let alert = if event.event_type == SystemWentSilent::EVENT_TYPE {
            let silent: SystemWentSilent = serde_json::from_value(event.payload.clone())
                .map_err(|error| FoldError(format!("unreadable SystemWentSilent: {error}")))?;
            let labels = BTreeMap::from([
                ("alertname".to_owned(), LINK_FAILED.to_owned()),
                ("tenant_id".to_owned(), event.tenant_id.to_string()),
                ("system_id".to_owned(), system_id.to_string()),
                ("system_key".to_owned(), system.system_key.clone()),
                ("system_name".to_owned(), system.name.clone()),
                ("kind".to_owned(), system.kind.clone()),
            ]);
            let triggered = AlertTriggered {
                dedup_key,
                event_manager_id: LINK_FAILED_SOURCE.to_owned(),
                summary: format!(
                    "{} {} ({}) has shown no sign of life since {} ({} min timeout)",
                    system.kind,
                    system.name,
                    system.system_key,
                    silent.last_seen_at.to_rfc3339(),
                    silent.timeout_minutes
                ),
                severity: AlertSeverity::Critical,
                class: Some(LINK_FAILED.to_owned()),
                labels,
                custom: Default::default(),
            };
            NewEvent::new(event.tenant_id, &triggered, event.recorded_at)
        } else {
            let resolved = AlertResolved {
                dedup_key,
                event_manager_id: LINK_FAILED_SOURCE.to_owned(),
            };
            NewEvent::new(event.tenant_id, &resolved, event.recorded_at)
        };
        Ok(vec![Reaction {
            stream_id,
            expected: ExpectedVersion::Any,
            event: alert,
        }])
    }
}
