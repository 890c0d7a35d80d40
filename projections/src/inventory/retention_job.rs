//! Snapshot retention, the job: applies the pure selection of [`super::retention`] to the
//! stored inventory documents, on a schedule.
//!
//! A pass walks the systems of `inventory_systems` in batches. For each batch, in one
//! transaction, it reads the systems' `inventory_snapshots` rows, asks [`expired`] which of them
//! retention would drop at `now`, and prunes those it may: it replaces each such
//! `InventoryReported` payload with exactly `{"content_hash": <hash>, "pruned": true}` (the one
//! change the event store's trigger allows) and deletes the snapshot rows. The diffs
//! (`InventoryChanged`) are never touched, so the change timeline stays whole.
//!
//! A report is pruned only when nothing still needs its document:
//!
//! - the `inventory` projector has folded it (position ≤ its checkpoint);
//! - the diff reactor (`inventory_diff`) has diffed it (position ≤ its checkpoint), and it is not
//!   the system's last report at or below that checkpoint, which is what the reactor will diff
//!   the system's next report against;
//! - it is not the system's first or latest snapshot (by time, as [`expired`] promises, and by
//!   position, in case `recorded_at` and position order disagree);
//! - neither the reactor nor the projector has a parked event on the system's stream (a retry
//!   may need the documents);
//! - no rebuild of the `inventory` projector is running: each batch takes, shared, the advisory
//!   lock a rebuild holds, and a pass stops early when a rebuild has it (a rebuild's shadow
//!   tables would otherwise keep snapshot rows of documents pruned behind its back).
//!
//! Retention is stable (see [`super::retention`]): running it often keeps exactly what one run
//! at the end would keep, so the schedule is only about how soon space is given back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::PgEventStore;
use events_schema::{DomainEvent, InventoryReported};
use futures::FutureExt;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::projector::INVENTORY_PROJECTOR;
use super::retention::{expired, SnapshotRef};
use crate::clock::Clock;
use crate::runtime::RuntimeError;

/// Lease name of the retention job (one process runs it at a time).
pub const RETENTION_NAME: &str = "inventory_retention";

/// Checkpoint name of the diff reactor: reports it has not diffed yet keep their document.
const DIFF_REACTOR: &str = super::reactor::DIFF_REACTOR_NAME;

/// Systems handled per transaction by default.
pub const DEFAULT_SYSTEMS_PER_BATCH: i64 = 200;

/// Prunes the documents of inventory snapshots that retention no longer keeps, so the event
/// store does not grow by a full ~20 KB document per changed report for ever.
#[derive(Clone)]
pub struct SnapshotRetention {
    store: PgEventStore,
    systems_per_batch: i64,
}

/// What one pass did: what an operator running `fleetlog inventory prune` reads, and what the
/// scheduled job logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionReport {
    /// The time retention was applied as of.
    pub now: Option<DateTime<Utc>>,
    /// Systems looked at.
    pub systems: u64,
    /// Reports whose document was pruned in this pass.
    pub pruned: u64,
    /// Snapshots (stored documents) left in the systems looked at.
    pub kept: u64,
    /// Snapshots retention would drop but that were kept because a projector, the diff reactor
    /// or a parked event may still need them (they go in a later pass).
    pub held_back: u64,
    /// Whether the pass stopped early, because a rebuild of the `inventory` projector runs or
    /// because the job was asked to stop.
    pub interrupted: bool,
}

/// What a batch decided for one system: the positions to prune and how many are held back.
fn select(
    snapshots: &[SnapshotRef],
    now: DateTime<Utc>,
    folded: i64,
    diffed: i64,
) -> (Vec<i64>, u64) {
    let last_by_position = snapshots.iter().map(|s| s.position).max();
    let first_by_position = snapshots.iter().map(|s| s.position).min();
    // What the reactor diffs the system's next report against.
    let diff_base = snapshots
        .iter()
        .map(|s| s.position)
        .filter(|p| *p <= diffed)
        .max();
    let mut pruned = Vec::new();
    let mut held_back = 0;
    for snapshot in expired(snapshots, now) {
        let p = snapshot.position;
        let protected = Some(p) == last_by_position
            || Some(p) == first_by_position
            || Some(p) == diff_base
            || p > folded
            || p > diffed;
        if protected {
            held_back += 1;
        } else {
            pruned.push(p);
        }
    }
    (pruned, held_back)
}

impl SnapshotRetention {
    /// A job over `store`'s database.
    pub fn new(store: PgEventStore) -> Self {
        Self {
            store,
            systems_per_batch: DEFAULT_SYSTEMS_PER_BATCH,
        }
    }

    /// Sets how many systems one transaction handles (at least 1).
    pub fn with_systems_per_batch(mut self, systems: i64) -> Self {
        self.systems_per_batch = systems.max(1);
        self
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// One pass over every system, as of `now`. Returns what it did.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RetentionReport, RuntimeError> {
        self.pass(now, || false).await
    }

    /// A pass that stops between batches once `stop()` says so.
    async fn pass(
        &self,
        now: DateTime<Utc>,
        mut stop: impl FnMut() -> bool,
    ) -> Result<RetentionReport, RuntimeError> {
        let span = tracing::info_span!("inventory_retention", %now);
        async move {
            let started = std::time::Instant::now();
            let mut report = RetentionReport {
                now: Some(now),
                ..RetentionReport::default()
            };
            let mut after = Uuid::nil();
            loop {
                if stop() {
                    report.interrupted = true;
                    break;
                }
                match self.batch(now, after, &mut report).await? {
                    Some(last) => after = last,
                    None => break,
                }
            }
            metrics::counter!("fleetlog_inventory_snapshots_pruned_total").increment(report.pruned);
            metrics::histogram!("fleetlog_inventory_retention_seconds").record(started.elapsed());
            if !report.interrupted {
                metrics::gauge!("fleetlog_inventory_snapshots_kept").set(report.kept as f64);
            }
            tracing::info!(
                systems = report.systems,
                pruned = report.pruned,
                kept = report.kept,
                held_back = report.held_back,
                interrupted = report.interrupted,
                "inventory snapshot retention"
            );
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// One batch of systems after `after`, in one transaction. Returns the last system id
    /// handled, or `None` when there were none left (or a rebuild runs: `report.interrupted`).
    async fn batch(
        &self,
        now: DateTime<Utc>,
        after: Uuid,
        report: &mut RetentionReport,
    ) -> Result<Option<Uuid>, RuntimeError> {
        let mut tx = self.pool().begin().await?;
        // A rebuild of the projector holds this lock (exclusively) for its whole run.
        let free: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock_shared(hashtext($1))")
                .bind(format!("fleetlog_rebuild_{INVENTORY_PROJECTOR}"))
                .fetch_one(&mut *tx)
                .await?;
        if !free {
            tracing::info!("a rebuild of the inventory projector runs; retention waits");
            report.interrupted = true;
            return Ok(None);
        }
        let systems: Vec<Uuid> = sqlx::query_scalar(
            "SELECT system_id FROM inventory_systems WHERE system_id > $1 \
             ORDER BY system_id LIMIT $2",
        )
        .bind(after)
        .bind(self.systems_per_batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some(&last) = systems.last() else {
            return Ok(None);
        };
        // Checkpoints only move forward: reading them now is safe for the whole batch. A
        // projector or reactor that has never run has folded nothing.
        let folded: i64 = sqlx::query_scalar(
            "SELECT coalesce(min(position), 0) FROM projection_checkpoints \
             WHERE projector = $1 OR projector LIKE $1 || '#%'",
        )
        .bind(INVENTORY_PROJECTOR)
        .fetch_one(&mut *tx)
        .await?;
        let diffed: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(position), 0) FROM projection_checkpoints WHERE projector = $1",
        )
        .bind(DIFF_REACTOR)
        .fetch_one(&mut *tx)
        .await?;
        // Streams with a parked inventory event: a retry may need their documents.
        let parked: BTreeSet<String> = sqlx::query_scalar(
            "SELECT DISTINCT e.stream_id FROM parked_events p JOIN events e USING (position) \
             WHERE p.projector IN ($1, $2) OR p.projector LIKE $1 || '#%'",
        )
        .bind(INVENTORY_PROJECTOR)
        .bind(DIFF_REACTOR)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let rows: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT system_id, position, reported_at FROM inventory_snapshots \
             WHERE system_id = ANY($1) ORDER BY system_id, position",
        )
        .bind(&systems)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_system: BTreeMap<Uuid, Vec<SnapshotRef>> = BTreeMap::new();
        for (system, position, recorded_at) in rows {
            by_system.entry(system).or_default().push(SnapshotRef {
                recorded_at,
                position,
            });
        }
        let (mut prune_systems, mut prune_positions) = (Vec::new(), Vec::new());
        let mut stored = 0u64;
        for (system, snapshots) in &by_system {
            stored += snapshots.len() as u64;
            let (pruned, held_back) = select(snapshots, now, folded, diffed);
            let skip = [format!("system-{system}"), format!("gateway-{system}")]
                .iter()
                .any(|stream| parked.contains(stream));
            if skip {
                report.held_back += held_back + pruned.len() as u64;
                continue;
            }
            report.held_back += held_back;
            for position in pruned {
                prune_systems.push(*system);
                prune_positions.push(position);
            }
        }
        let mut pruned = 0u64;
        if !prune_positions.is_empty() {
            // Only documents still there: a concurrent pass may have pruned some already.
            pruned = sqlx::query(
                "UPDATE events SET payload = jsonb_build_object( \
                     'content_hash', payload -> 'content_hash', 'pruned', true) \
                 WHERE position = ANY($1) AND event_type = $2 AND payload ? 'data'",
            )
            .bind(&prune_positions)
            .bind(InventoryReported::EVENT_TYPE)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM inventory_snapshots s \
                 USING UNNEST($1::uuid[], $2::bigint[]) AS d (system_id, position) \
                 WHERE s.system_id = d.system_id AND s.position = d.position",
            )
            .bind(&prune_systems)
            .bind(&prune_positions)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.systems += systems.len() as u64;
        report.pruned += pruned;
        report.kept += stored - prune_positions.len() as u64;
        Ok(Some(last))
    }

    /// Runs a pass at once and then every `interval` (by `clock`'s time), until `shutdown`
    /// resolves; a pass in progress stops between batches. A failed pass is logged and counted,
    /// and the next one tries again.
    pub async fn run<C: Clock>(
        self,
        clock: C,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let shutdown = shutdown.boxed().shared();
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.clone() => return Ok(()),
                _ = tokio::time::sleep_until(next) => {}
            }
            next = tokio::time::Instant::now() + interval.max(Duration::from_secs(1));
            let stopping = shutdown.clone();
            let stop = || stopping.clone().now_or_never().is_some();
            if let Err(error) = self.pass(clock.now(), stop).await {
                metrics::counter!("fleetlog_projection_errors_total", "projector" => RETENTION_NAME)
                    .increment(1);
                tracing::error!(%error, "inventory snapshot retention failed; trying again later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn only_what_everyone_is_done_with_is_pruned() {
        let now = at("2026-11-25T12:00:00Z");
        let day = |p: i64, d: &str| SnapshotRef {
            recorded_at: at(d),
            position: p,
        };
        // Three a day on 2026-11-10: the 2nd and 3rd expire; 1 is the first, 9 the latest.
        let snapshots = [
            day(1, "2026-11-01T00:00:00Z"),
            day(2, "2026-11-10T01:00:00Z"),
            day(3, "2026-11-10T02:00:00Z"),
            day(4, "2026-11-10T03:00:00Z"),
            day(9, "2026-11-24T00:00:00Z"),
        ];
        assert_eq!(select(&snapshots, now, 100, 100), (vec![3, 4], 0));
        // The reactor has diffed up to 3: 3 is what it diffs the next report against, 4 is new
        // to it.
        assert_eq!(select(&snapshots, now, 100, 3), (vec![], 2));
        assert_eq!(select(&snapshots, now, 3, 100), (vec![3], 1));
        // Nothing expires within a week.
        assert_eq!(
            select(&snapshots, at("2026-11-11T00:00:00Z"), 100, 100).0,
            Vec::<i64>::new()
        );
        // Latest by position is kept even where its recorded_at is not the latest.
        let skewed = [
            day(1, "2026-11-01T00:00:00Z"),
            day(2, "2026-11-10T01:00:00Z"),
            day(5, "2026-11-10T02:00:00Z"),
            day(3, "2026-11-10T03:00:00Z"),
        ];
        assert_eq!(expired(&skewed, now).len(), 1, "the pure selection drops 5");
        assert_eq!(select(&skewed, now, 100, 100), (vec![], 1));
    }
}
