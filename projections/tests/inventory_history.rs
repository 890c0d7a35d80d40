//! The `inventory` projector and snapshot retention against a real PostgreSQL and event store,
//! one database per test.

use chrono::{DateTime, Duration, Utc};
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{
    ChangeCategory, ChangeOp, ChangeSeverity, InventoryChange, InventoryChanged, InventoryReported,
    InventoryUnchanged, NewEvent, StreamId, TenantId,
};
use projections::inventory::retention::{retained, SnapshotRef};
use projections::inventory::{InventoryHistory, SnapshotRetention};
use projections::testing::{self, assert_rebuild_matches_live};
use projections::ProjectionRunner;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

/// A realistic (if small) inventory document; `version` makes each one different.
fn document(version: usize) -> Value {
    json!({
        "hostname": "db-01",
        "os": {"name": "debian", "version": format!("12.{version}"), "kernel": "6.1.0-18-amd64"},
        "memory": [{"serial": "S00A1B2C3D4", "size_gb": 32}, {"serial": "S00A1B2C3D5", "size_gb": 32}],
        "network": {"interfaces": [{"name": "eth0", "mac": "52:54:00:12:34:56",
                                    "addresses": [{"address": format!("10.0.0.{version}")}]}]},
        "packages": (0..40).map(|p| format!("pkg-{p}-1.{version}")).collect::<Vec<_>>(),
        "uptime_s": 1000 + version,
    })
}

fn hash(system: Uuid, version: usize) -> String {
    format!("{:032x}{version:032x}", system.as_u128() >> 64)
}

async fn append(store: &PgEventStore, stream: &StreamId, event: NewEvent) -> i64 {
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .events[0]
        .position
}

async fn recorded_at(pool: &PgPool, position: i64) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn payload(pool: &PgPool, position: i64) -> Value {
    sqlx::query_scalar("SELECT payload FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// One machine's inventory history, as the agent and the diff reactor write it.
struct Machine {
    tenant: TenantId,
    id: Uuid,
    stream: StreamId,
    /// Position and hash of every full report, in order.
    reports: Vec<(i64, String)>,
    /// Positions of the InventoryChanged events.
    diffs: Vec<i64>,
}

impl Machine {
    fn new(tenant: TenantId) -> Self {
        let id = Uuid::now_v7();
        Self {
            tenant,
            id,
            stream: StreamId::system(id),
            reports: Vec::new(),
            diffs: Vec::new(),
        }
    }

    /// A full report of `document(version)`, then (from the second on) the reactor's diff
    /// against the previous one, at the report's `recorded_at`.
    async fn report(&mut self, store: &PgEventStore, version: usize) -> i64 {
        let content_hash = hash(self.id, version);
        let event = NewEvent::from_payload::<InventoryReported>(
            self.tenant,
            InventoryReported::payload(content_hash.clone(), document(version)),
            Utc::now(),
        );
        let position = append(store, &self.stream, event).await;
        if let Some((_, previous_hash)) = self.reports.last() {
            let changed = InventoryChanged {
                previous_hash: previous_hash.clone(),
                current_hash: content_hash.clone(),
                changes: vec![
                    InventoryChange {
                        path: "/os/version".into(),
                        op: ChangeOp::Changed,
                        previous: Some(json!(format!("12.{}", version - 1))),
                        current: Some(json!(format!("12.{version}"))),
                        category: ChangeCategory::Os,
                        severity: ChangeSeverity::Medium,
                    },
                    InventoryChange {
                        path: "/network/interfaces[name=eth0]/addresses[0]/address".into(),
                        op: ChangeOp::Changed,
                        previous: Some(json!(format!("10.0.0.{}", version - 1))),
                        current: Some(json!(format!("10.0.0.{version}"))),
                        category: ChangeCategory::Network,
                        severity: ChangeSeverity::Low,
                    },
                ],
            };
            let at = recorded_at(store.pool(), position).await;
            let diff = append(
                store,
                &self.stream,
                NewEvent::new(self.tenant, &changed, at),
            )
            .await;
            self.diffs.push(diff);
        }
        self.reports.push((position, content_hash));
        position
    }

    async fn unchanged(&self, store: &PgEventStore) -> i64 {
        let (_, content_hash) = self.reports.last().unwrap();
        let event = InventoryUnchanged {
            content_hash: content_hash.clone(),
        };
        append(
            store,
            &self.stream,
            NewEvent::new(self.tenant, &event, Utc::now()),
        )
        .await
    }
}

/// Rebuilds the projector from position 0 (after pruning, say) and asserts that it gives exactly
/// the rows it has now; then that live runs in small batches with restarts give them too.
async fn assert_rebuild_matches_current(store: &PgEventStore) -> Vec<(String, Vec<String>)> {
    let pool = store.pool();
    let current = testing::snapshot(pool, &InventoryHistory).await.unwrap();
    testing::reset(pool, &InventoryHistory).await.unwrap();
    catch_up(store).await;
    let rebuilt = testing::snapshot(pool, &InventoryHistory).await.unwrap();
    assert_eq!(
        current, rebuilt,
        "a rebuild from 0 differs from the live rows"
    );
    testing::reset(pool, &InventoryHistory).await.unwrap();
    assert_eq!(
        assert_rebuild_matches_live(store, || InventoryHistory, 2).await,
        current
    );
    current
}

async fn catch_up(store: &PgEventStore) {
    let head = store.head_position().await.unwrap();
    let runner = ProjectionRunner::new(store.clone(), InventoryHistory, 7);
    assert_eq!(runner.catch_up(None).await.unwrap(), head);
}

/// Says the diff reactor has diffed everything up to `position`.
async fn diffed_up_to(pool: &PgPool, position: i64) {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projector, position) VALUES ('inventory_diff', $1) \
         ON CONFLICT (projector) DO UPDATE SET position = excluded.position",
    )
    .bind(position)
    .execute(pool)
    .await
    .unwrap();
}

async fn snapshot_positions(pool: &PgPool, system: Uuid) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT position FROM inventory_snapshots WHERE system_id = $1 ORDER BY position",
    )
    .bind(system)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Positions of the reports of `system` whose payload is pruned.
async fn pruned_positions(pool: &PgPool, stream: &StreamId) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT position FROM events WHERE stream_id = $1 AND event_type = 'InventoryReported' \
         AND payload ? 'pruned' ORDER BY position",
    )
    .bind(stream.as_str())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn reports_unchanged_and_diffs_fold_into_the_read_models(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let mut db = Machine::new(tenant);
    let mut web = Machine::new(tenant);
    db.report(&store, 1).await;
    db.unchanged(&store).await;
    web.report(&store, 7).await;
    let second = db.report(&store, 2).await;
    db.unchanged(&store).await;
    let third = db.report(&store, 3).await;
    // Live in batches of two with restarts, then rebuilt from 0: the same rows.
    assert_rebuild_matches_live(&store, || InventoryHistory, 2).await;

    let row: (Uuid, i64, String, DateTime<Utc>, DateTime<Utc>, i64, i64) = sqlx::query_as(
        "SELECT tenant_id, latest_position, latest_hash, latest_reported_at, last_reported_at, \
                reports, changes FROM inventory_systems WHERE system_id = $1",
    )
    .bind(db.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let last = pool_last_report_at(&pool, &db.stream).await;
    assert_eq!(row.0, tenant.0);
    assert_eq!((row.1, row.2.as_str()), (third, db.reports[2].1.as_str()));
    assert_eq!(row.3, recorded_at(&pool, third).await);
    assert_eq!(row.4, last, "an InventoryUnchanged is a report too");
    assert_eq!(
        (row.5, row.6),
        (5, 4),
        "five reports, two diffs of two changes"
    );

    let snapshots: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT position, content_hash, reported_at FROM inventory_snapshots \
         WHERE system_id = $1 ORDER BY position",
    )
    .bind(db.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(snapshots.len(), 3);
    assert_eq!(
        (snapshots[1].0, &snapshots[1].1, snapshots[1].2),
        (second, &db.reports[1].1, recorded_at(&pool, second).await)
    );

    type Change = (
        i64,
        i32,
        String,
        String,
        Option<Value>,
        Option<Value>,
        String,
        String,
        i16,
    );
    let changes: Vec<Change> = sqlx::query_as(
        "SELECT position, idx, path, op, previous, current, category, severity, severity_rank \
         FROM inventory_changes WHERE system_id = $1 ORDER BY position, idx",
    )
    .bind(db.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(changes.len(), 4);
    assert_eq!(
        changes[0],
        (
            db.diffs[0],
            0,
            "/os/version".into(),
            "changed".into(),
            Some(json!("12.1")),
            Some(json!("12.2")),
            "os".into(),
            "medium".into(),
            2
        )
    );
    assert_eq!((changes[1].1, changes[1].8), (1, 1), "network, low");
    let changed_at: DateTime<Utc> = sqlx::query_scalar(
        "SELECT changed_at FROM inventory_changes WHERE position = $1 AND idx = 0",
    )
    .bind(db.diffs[1])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        changed_at,
        recorded_at(&pool, third).await,
        "the report's time"
    );

    let web_row: (i64, i64) =
        sqlx::query_as("SELECT reports, changes FROM inventory_systems WHERE system_id = $1")
            .bind(web.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(web_row, (1, 0));
}

/// `recorded_at` of the last inventory event of a stream.
async fn pool_last_report_at(pool: &PgPool, stream: &StreamId) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT max(recorded_at) FROM events WHERE stream_id = $1 \
         AND event_type IN ('InventoryReported', 'InventoryUnchanged')",
    )
    .bind(stream.as_str())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Retention over a history that spans more than a year: the selection reads
/// `inventory_snapshots.reported_at`, which the test spreads out over 400 days (every report was
/// really appended a moment ago), then puts back before checking a rebuild.
#[sqlx::test(migrations = "../migrations")]
async fn retention_prunes_expired_documents_and_a_rebuild_still_matches(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let mut machine = Machine::new(tenant);
    // Days ago of each report: several a day, a week, a month and a quarter apart.
    let ages: [f64; 16] = [
        400.0, 399.5, 399.0, 380.0, 200.0, 199.0, 120.0, 100.0, 60.0, 59.0, 20.0, 19.8, 19.5, 3.0,
        1.0, 0.0,
    ];
    for version in 0..ages.len() {
        machine.report(&store, version).await;
        if version % 5 == 0 {
            machine.unchanged(&store).await;
        }
    }
    let mut other = Machine::new(tenant);
    other.report(&store, 1).await;
    other.report(&store, 2).await;
    catch_up(&store).await;
    let head = store.head_position().await.unwrap();
    diffed_up_to(&pool, head).await;

    let now = Utc::now();
    let mut history = Vec::new();
    for ((position, _), days) in machine.reports.iter().zip(ages) {
        let at = now - Duration::seconds((days * 86_400.0) as i64);
        sqlx::query("UPDATE inventory_snapshots SET reported_at = $2 WHERE position = $1")
            .bind(position)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
        history.push(SnapshotRef {
            recorded_at: at,
            position: *position,
        });
    }
    let expected_kept: Vec<i64> = retained(&history, now).iter().map(|s| s.position).collect();
    let expected_pruned: Vec<i64> = machine
        .reports
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !expected_kept.contains(p))
        .collect();
    assert!(expected_pruned.len() >= 5, "{expected_pruned:?}");
    let diffs_before: Vec<Value> = payloads(&pool, &machine.diffs).await;

    let report = SnapshotRetention::new(store.clone())
        .with_systems_per_batch(1)
        .run_once(now)
        .await
        .unwrap();
    assert_eq!(report.pruned as usize, expected_pruned.len());
    assert_eq!((report.systems, report.held_back), (2, 0));
    assert_eq!(report.kept as usize, expected_kept.len() + 2);
    assert!(!report.interrupted);

    // The first and the latest are kept, with their documents.
    let first = machine.reports[0].0;
    let latest = machine.reports.last().unwrap().0;
    assert_eq!(snapshot_positions(&pool, machine.id).await, expected_kept);
    assert!(expected_kept.contains(&first) && expected_kept.contains(&latest));
    assert_eq!(payload(&pool, first).await["data"], document(0));
    assert_eq!(
        pruned_positions(&pool, &machine.stream).await,
        expected_pruned
    );
    assert!(pruned_positions(&pool, &other.stream).await.is_empty());
    // Pruned payloads are exactly the hash and the flag; nothing else of the event changed.
    for (position, content_hash) in &machine.reports {
        if expected_pruned.contains(position) {
            assert_eq!(
                payload(&pool, *position).await,
                json!({"content_hash": content_hash, "pruned": true})
            );
            let decoded: InventoryReported =
                serde_json::from_value(payload(&pool, *position).await).unwrap();
            assert!(decoded.pruned && decoded.data.is_null());
        }
    }
    assert_eq!(
        payloads(&pool, &machine.diffs).await,
        diffs_before,
        "diffs are never touched"
    );

    // A second pass has nothing left to do.
    let again = SnapshotRetention::new(store.clone())
        .run_once(now)
        .await
        .unwrap();
    assert_eq!((again.pruned, again.kept), (0, report.kept));

    // The store still refuses every other change.
    let pruned = expected_pruned[0];
    let refused = [
        format!("UPDATE events SET payload = '{{}}' WHERE position = {latest}"),
        format!(
            "UPDATE events SET payload = jsonb_build_object('content_hash', payload -> \
             'content_hash', 'pruned', true, 'x', 1) WHERE position = {latest}"
        ),
        format!(
            "UPDATE events SET payload = jsonb_build_object('content_hash', 'forged', \
             'pruned', true) WHERE position = {latest}"
        ),
        format!(
            "UPDATE events SET payload = jsonb_build_object('content_hash', payload -> \
             'content_hash', 'pruned', true) WHERE position = {}",
            machine.diffs[0]
        ),
        format!(
            "UPDATE events SET payload = jsonb_build_object('content_hash', payload -> \
             'content_hash', 'pruned', true), occurred_at = now() WHERE position = {latest}"
        ),
        format!("UPDATE events SET occurred_at = now() WHERE position = {pruned}"),
        format!("DELETE FROM events WHERE position = {pruned}"),
        "TRUNCATE events".to_owned(),
    ];
    for sql in refused {
        let error = sqlx::query(&sql).execute(&pool).await.unwrap_err();
        assert!(
            error.to_string().contains("events are immutable"),
            "{sql}: {error}"
        );
    }
    assert_eq!(payload(&pool, latest).await["data"], document(15));

    // After pruning, a rebuild from position 0 gives exactly the live rows (once the test's
    // made-up snapshot times are put back to the reports' real ones).
    sqlx::query(
        "UPDATE inventory_snapshots s SET reported_at = e.recorded_at FROM events e \
         WHERE e.position = s.position",
    )
    .execute(&pool)
    .await
    .unwrap();
    let live = assert_rebuild_matches_current(&store).await;
    let snapshots = &live
        .iter()
        .find(|(t, _)| t == "inventory_snapshots")
        .unwrap()
        .1;
    assert_eq!(snapshots.len(), expected_kept.len() + 2);
    let changes = &live
        .iter()
        .find(|(t, _)| t == "inventory_changes")
        .unwrap()
        .1;
    assert_eq!(
        changes.len(),
        2 * (ages.len() - 1) + 2,
        "the timeline is whole"
    );
}

async fn payloads(pool: &PgPool, positions: &[i64]) -> Vec<Value> {
    let mut payloads = Vec::new();
    for position in positions {
        payloads.push(payload(pool, *position).await);
    }
    payloads
}

/// Every report was recorded moments ago; seen two years later they all lie in one quarter, so
/// retention keeps the first and the latest: except what the diff reactor has not diffed yet.
#[sqlx::test(migrations = "../migrations")]
async fn reports_the_diff_reactor_still_needs_keep_their_documents(pool: PgPool) {
    let store = store(&pool);
    let mut machine = Machine::new(TenantId::new());
    for version in 0..6 {
        machine.report(&store, version).await;
    }
    catch_up(&store).await;
    let reports: Vec<i64> = machine.reports.iter().map(|(p, _)| *p).collect();
    let later = Utc::now() + Duration::days(2 * 365);
    let retention = SnapshotRetention::new(store.clone());

    // The reactor has never run: nothing is pruned.
    let report = retention.run_once(later).await.unwrap();
    assert_eq!((report.pruned, report.held_back), (0, 4));

    // It has diffed up to the third report: the second goes; the third is what it will diff
    // the fourth against, and the fourth and fifth are not diffed yet.
    diffed_up_to(&pool, reports[2]).await;
    let report = retention.run_once(later).await.unwrap();
    assert_eq!((report.pruned, report.held_back, report.kept), (1, 3, 5));
    assert_eq!(
        pruned_positions(&pool, &machine.stream).await,
        vec![reports[1]]
    );

    // A rebuild of the projector is running: retention waits for it.
    let mut rebuild = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('fleetlog_rebuild_inventory'))")
        .execute(&mut *rebuild)
        .await
        .unwrap();
    diffed_up_to(&pool, store.head_position().await.unwrap()).await;
    let report = retention.run_once(later).await.unwrap();
    assert!(report.interrupted);
    assert_eq!((report.pruned, report.systems), (0, 0));
    sqlx::query("SELECT pg_advisory_unlock(hashtext('fleetlog_rebuild_inventory'))")
        .execute(&mut *rebuild)
        .await
        .unwrap();
    drop(rebuild);

    // A parked diff of the system holds its documents back too.
    sqlx::query(
        "INSERT INTO parked_events (projector, position, event_id, event_type, error, attempts) \
         SELECT 'inventory_diff', position, event_id, event_type, 'test', 1 FROM events \
         WHERE position = $1",
    )
    .bind(reports[4])
    .execute(&pool)
    .await
    .unwrap();
    let report = retention.run_once(later).await.unwrap();
    assert_eq!((report.pruned, report.held_back), (0, 3));
    sqlx::query("DELETE FROM parked_events")
        .execute(&pool)
        .await
        .unwrap();

    // Everything diffed: only the first and the latest keep their documents.
    let report = retention.run_once(later).await.unwrap();
    assert_eq!((report.pruned, report.held_back, report.kept), (3, 0, 2));
    assert_eq!(
        snapshot_positions(&pool, machine.id).await,
        vec![reports[0], reports[5]]
    );
    assert_eq!(
        pruned_positions(&pool, &machine.stream).await,
        reports[1..5].to_vec()
    );

    // A rebuild from 0 after pruning gives the live rows, and the latest report is still whole.
    assert_rebuild_matches_current(&store).await;
    let latest: (i64, String) =
        sqlx::query_as("SELECT latest_position, latest_hash FROM inventory_systems")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(latest, machine.reports[5]);
    assert_eq!(payload(&pool, reports[5]).await["data"], document(5));
}

/// The rebuild command's path (shadow tables and swap) works after pruning too.
#[sqlx::test(migrations = "../migrations")]
async fn a_shadow_rebuild_after_pruning_swaps_in_the_same_rows(pool: PgPool) {
    let store = store(&pool);
    let mut machine = Machine::new(TenantId::new());
    for version in 0..4 {
        machine.report(&store, version).await;
    }
    catch_up(&store).await;
    diffed_up_to(&pool, store.head_position().await.unwrap()).await;
    let report = SnapshotRetention::new(store.clone())
        .run_once(Utc::now() + Duration::days(800))
        .await
        .unwrap();
    assert_eq!(report.pruned, 2);
    let before = projections::testing::snapshot(&pool, &InventoryHistory)
        .await
        .unwrap();
    projections::rebuild::rebuild(&pool, || InventoryHistory, 3, &|_, _| {})
        .await
        .unwrap();
    let after = projections::testing::snapshot(&pool, &InventoryHistory)
        .await
        .unwrap();
    assert_eq!(before, after);
}

/// The scheduled job runs a pass as soon as it starts, by its clock, and stops when asked.
#[sqlx::test(migrations = "../migrations")]
async fn the_scheduled_job_prunes_at_once_and_stops_on_shutdown(pool: PgPool) {
    let store = store(&pool);
    let mut machine = Machine::new(TenantId::new());
    for version in 0..3 {
        machine.report(&store, version).await;
    }
    catch_up(&store).await;
    diffed_up_to(&pool, store.head_position().await.unwrap()).await;
    let clock = projections::clock::ManualClock::at(Utc::now() + Duration::days(800));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(SnapshotRetention::new(store.clone()).run(
        clock,
        std::time::Duration::from_secs(3600),
        async move {
            let _ = stopped.await;
        },
    ));
    let middle = machine.reports[1].0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pruned_positions(&pool, &machine.stream).await != vec![middle] {
        assert!(std::time::Instant::now() < deadline, "no pass ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    job.await.unwrap().unwrap();
}
