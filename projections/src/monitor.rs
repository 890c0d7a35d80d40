//! The liveness monitor: a reactor driven by time. Every tick it reads the `liveness` read model
//! and appends `SystemWentSilent` for each watched system whose last sign of life is older than
//! its timeout, and `SystemRecovered` for each silent one that has shown life again.
//!
//! Exactly once, across restarts and concurrent monitors: each transition's event id is derived
//! from what identifies it (the system and the sign of life it went silent after; the system and
//! the silence it recovered from), so a second monitor, or the same one after a restart before
//! the projector folded its last appends, re-appends ids the store already has and writes nothing.
//!
//! Never a false alarm from Fleetlog's own state:
//! - after the monitor starts, it declares nobody silent for a grace period, so agents that kept
//!   trying while Fleetlog was down have time to report again; and it measures silence from no
//!   earlier than its start, so an agent that reports every few minutes is not declared silent
//!   the moment the grace period ends;
//! - it declares silence only once the `liveness` projector has folded the whole log as it was
//!   when the tick began (a lagging projector would make live systems look silent);
//! - paused systems are not watched; decommissioned ones leave the monitor; a resumed system is
//!   watched from its resumption.

use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use command_side::registry::system_stream;
use events_schema::{EventId, NewEvent, SystemKind, SystemRecovered, SystemWentSilent, TenantId};
use sqlx::postgres::PgListener;
use sqlx::FromRow;
use uuid::Uuid;

use crate::clock::Clock;
use crate::liveness::{Liveness, DEFAULT_HEARTBEAT_TIMEOUT_MINUTES, LIVENESS_CHANNEL};
use crate::runtime::RuntimeError;
use crate::Projector;

/// The name of the monitor: its lease key and the namespace of the ids it derives.
pub const MONITOR_NAME: &str = "liveness_monitor";

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Time between ticks (HEARTBEAT_CHECK_INTERVAL_S, default 60 s).
    pub tick: Duration,
    /// After start, how long nobody is declared silent (LIVENESS_GRACE_S, default 120 s).
    pub grace: Duration,
    /// Minutes without a sign of life before a system is silent, unless its tenant or the
    /// system itself sets another (HEARTBEAT_TIMEOUT_MINUTES, default 10).
    pub default_timeout_minutes: i32,
    /// How long a tick waits for the `liveness` projector to reach the head before it skips
    /// the silence check (recoveries are checked regardless).
    pub projector_wait: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(60),
            grace: Duration::from_secs(120),
            default_timeout_minutes: DEFAULT_HEARTBEAT_TIMEOUT_MINUTES,
            projector_wait: Duration::from_secs(10),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// `SystemWentSilent` events appended (or found already stored).
    pub went_silent: usize,
    /// `SystemRecovered` events appended (or found already stored).
    pub recovered: usize,
    /// Whether silence was checked (false within the grace period or while the projector lags).
    pub checked_silence: bool,
}

/// The liveness monitor of one process.
pub struct LivenessMonitor<C: Clock> {
    store: PgEventStore,
    clock: C,
    config: MonitorConfig,
    started_at: DateTime<Utc>,
}

/// A watched system whose last sign of life is older than its timeout.
#[derive(Debug, FromRow)]
struct Overdue {
    system_id: Uuid,
    tenant_id: Uuid,
    kind: String,
    seen_at: DateTime<Utc>,
    last_seen_position: Option<i64>,
    timeout_minutes: i32,
}

/// A silent system that has shown life again.
#[derive(Debug, FromRow)]
struct Recovering {
    system_id: Uuid,
    tenant_id: Uuid,
    kind: String,
    silent_last_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
}

impl<C: Clock> LivenessMonitor<C> {
    /// A monitor whose grace period starts now (by `clock`).
    pub fn new(store: PgEventStore, clock: C, config: MonitorConfig) -> Self {
        let started_at = clock.now();
        Self {
            store,
            clock,
            config,
            started_at,
        }
    }

    /// Sets when the monitor counts as started (its grace period and the earliest point silence
    /// is measured from); [`new`](Self::new) takes the clock's time.
    pub fn started_at(mut self, at: DateTime<Utc>) -> Self {
        self.started_at = at;
        self
    }

    /// One tick: recoveries first, then (past the grace period, with the projector caught up)
    /// silences. Returns what it appended.
    pub async fn tick(&self) -> Result<TickReport, RuntimeError> {
        let span = tracing::info_span!("liveness_tick");
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut report = TickReport {
            recovered: self.recover().await?,
            ..TickReport::default()
        };
        let in_grace = now < self.started_at + self.config.grace;
        if !in_grace && self.projector_caught_up().await? {
            report.went_silent = self.declare_silent(now).await?;
            report.checked_silence = true;
        }
        metrics::histogram!("fleetlog_liveness_tick_seconds").record(started.elapsed());
        metrics::counter!("fleetlog_liveness_transitions_total", "to" => "inactive")
            .increment(report.went_silent as u64);
        metrics::counter!("fleetlog_liveness_transitions_total", "to" => "active")
            .increment(report.recovered as u64);
        if report.went_silent + report.recovered > 0 {
            tracing::info!(
                went_silent = report.went_silent,
                recovered = report.recovered,
                "liveness transitions"
            );
        }
        Ok(report)
    }

    /// Ticks every `config.tick`, and checks recoveries at once when the projector says a
    /// silent system showed life, until `shutdown` resolves. Failures are logged and counted;
    /// the next tick tries again.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(LIVENESS_CHANNEL).await?;
        tokio::pin!(shutdown);
        let mut next_tick = tokio::time::Instant::now();
        loop {
            let woken_for_recovery = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep_until(next_tick) => false,
                notified = listener.recv() => match notified {
                    Ok(_) => true,
                    Err(error) => {
                        // The listener reconnects on its next receive; the ticks go on meanwhile.
                        tracing::warn!(%error, "liveness notifications interrupted");
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        false
                    }
                }
            };
            if !woken_for_recovery && tokio::time::Instant::now() < next_tick {
                continue;
            }
            let result = if woken_for_recovery {
                while listener.next_buffered().is_some() {}
                self.recover().await.map(|_| ())
            } else {
                next_tick = (next_tick + self.config.tick).max(tokio::time::Instant::now());
                self.tick().await.map(|_| ())
            };
            if let Err(error) = result {
                metrics::counter!("fleetlog_projection_errors_total", "projector" => MONITOR_NAME)
                    .increment(1);
                tracing::error!(%error, "liveness tick failed; trying again next tick");
            }
        }
    }

    /// Whether the `liveness` projector has folded everything committed before this call,
    /// waiting up to `projector_wait` for it.
    async fn projector_caught_up(&self) -> Result<bool, RuntimeError> {
        let head = self.store.head_position().await?;
        let deadline = tokio::time::Instant::now() + self.config.projector_wait;
        loop {
            let folded: Option<i64> = sqlx::query_scalar(
                "SELECT min(position) FROM projection_checkpoints \
                 WHERE projector = $1 OR projector LIKE $1 || '#%'",
            )
            .bind(Liveness.name())
            .fetch_one(self.store.pool())
            .await?;
            let folded = folded.unwrap_or(0);
            metrics::gauge!("fleetlog_liveness_projector_behind_events")
                .set((head - folded).max(0) as f64);
            if folded >= head {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    head,
                    folded,
                    "the liveness projector lags; no silence is declared this tick"
                );
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn declare_silent(&self, now: DateTime<Utc>) -> Result<usize, RuntimeError> {
        let overdue: Vec<Overdue> = sqlx::query_as(
            "SELECT s.system_id, s.tenant_id, s.kind, \
                    greatest(s.last_seen_at, s.watched_since) AS seen_at, s.last_seen_position, \
                    coalesce(s.timeout_minutes, p.timeout_minutes, $2) AS timeout_minutes \
             FROM liveness_systems s LEFT JOIN liveness_tenant_policies p USING (tenant_id) \
             WHERE s.lifecycle = 'active' AND s.status = 'active' \
               AND s.last_seen_at < $1 - interval '1 minute' \
               AND greatest(s.last_seen_at, s.watched_since, $3) \
                   < $1 - make_interval(mins => coalesce(s.timeout_minutes, p.timeout_minutes, $2))",
        )
        .bind(now)
        .bind(self.config.default_timeout_minutes)
        .bind(self.started_at)
        .fetch_all(self.store.pool())
        .await?;
        let appends = overdue.iter().map(|system| {
            let mut key = system.system_id.as_bytes().to_vec();
            key.extend_from_slice(b"silent");
            key.extend_from_slice(&system.last_seen_position.unwrap_or(0).to_be_bytes());
            key.extend_from_slice(&system.seen_at.timestamp_micros().to_be_bytes());
            let event = SystemWentSilent {
                last_seen_at: system.seen_at,
                timeout_minutes: system.timeout_minutes.max(0) as u32,
            };
            let event = NewEvent::new(TenantId(system.tenant_id), &event, now)
                .with_event_id(EventId::derived(MONITOR_NAME, &key));
            (
                system_stream(SystemKind::from_name(&system.kind), system.system_id),
                event,
            )
        });
        self.append_all(appends.collect()).await
    }

    async fn recover(&self) -> Result<usize, RuntimeError> {
        let recovering: Vec<Recovering> = sqlx::query_as(
            "SELECT system_id, tenant_id, kind, silent_last_seen_at, \
                    coalesce(first_seen_after_silence, last_seen_at) AS last_seen_at \
             FROM liveness_systems \
             WHERE status = 'inactive' AND first_seen_after_silence IS NOT NULL \
               AND lifecycle <> 'decommissioned' AND last_seen_at > silent_last_seen_at",
        )
        .fetch_all(self.store.pool())
        .await?;
        let now = self.clock.now();
        let appends = recovering.iter().map(|system| {
            let mut key = system.system_id.as_bytes().to_vec();
            key.extend_from_slice(b"recovered");
            key.extend_from_slice(&system.silent_last_seen_at.timestamp_micros().to_be_bytes());
            let event = SystemRecovered {
                silent_since: system.silent_last_seen_at,
                seen_at: system.last_seen_at,
            };
            let event = NewEvent::new(TenantId(system.tenant_id), &event, now)
                .with_event_id(EventId::derived(MONITOR_NAME, &key));
            (
                system_stream(SystemKind::from_name(&system.kind), system.system_id),
                event,
            )
        });
        self.append_all(appends.collect()).await
    }

    /// Appends one event per stream, all concurrently (the store's group commit batches them).
    async fn append_all(
        &self,
        appends: Vec<(events_schema::StreamId, NewEvent)>,
    ) -> Result<usize, RuntimeError> {
        let count = appends.len();
        for chunk in appends.chunks(4096) {
            let results = futures::future::join_all(chunk.iter().map(|(stream, event)| {
                let mut event = event.clone();
                event.metadata.source = Some(MONITOR_NAME.to_owned());
                self.store.append(stream, ExpectedVersion::Any, vec![event])
            }))
            .await;
            for result in results {
                result?;
            }
        }
        Ok(count)
    }
}
