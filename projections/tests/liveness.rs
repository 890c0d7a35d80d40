//! The `liveness` projector against a real PostgreSQL and event store, one database per test.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{
    DomainEvent, HeartbeatReceived, InventoryUnchanged, LivenessPolicySet, NewEvent, StreamId,
    SystemDecommissioned, SystemKind, SystemPaused, SystemRecovered, SystemRegistered,
    SystemResumed, SystemWentSilent, TelemetryReceived, TenantId,
};
use projections::liveness::LIVENESS_CHANNEL;
use projections::testing::assert_rebuild_matches_live;
use projections::{Liveness, ProjectionRunner};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

/// Appends one event; returns its position.
async fn append<E: DomainEvent>(
    store: &PgEventStore,
    tenant: TenantId,
    stream: &StreamId,
    event: &E,
) -> i64 {
    store
        .append(
            stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(tenant, event, Utc::now())],
        )
        .await
        .unwrap()
        .events[0]
        .position
}

async fn heartbeat(store: &PgEventStore, tenant: TenantId, stream: &StreamId) -> i64 {
    let heartbeat = HeartbeatReceived {
        agent_version: Some("2.4.1".into()),
    };
    append(store, tenant, stream, &heartbeat).await
}

async fn recorded_at(pool: &PgPool, position: i64) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn register(
    store: &PgEventStore,
    tenant: TenantId,
    kind: SystemKind,
    name: &str,
) -> (Uuid, StreamId, i64) {
    let id = Uuid::now_v7();
    let stream = match kind {
        SystemKind::System => StreamId::system(id),
        SystemKind::Gateway => StreamId::gateway(id),
    };
    let registered = SystemRegistered {
        system_id: id,
        system_key: format!("FL-{}", &id.simple().to_string()[20..]),
        name: name.into(),
        kind,
        secret_hash: "$argon2id$h".into(),
        labels: BTreeMap::new(),
    };
    let position = append(store, tenant, &stream, &registered).await;
    (id, stream, position)
}

/// A `liveness_systems` row, the parts these tests look at.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    tenant_id: Uuid,
    kind: String,
    lifecycle: String,
    status: String,
    status_since: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
    last_seen_position: Option<i64>,
    watched_since: DateTime<Utc>,
    silent_last_seen_at: Option<DateTime<Utc>>,
    timeout_minutes: Option<i32>,
    updated_position: i64,
}

async fn row(pool: &PgPool, id: Uuid) -> Row {
    sqlx::query_as(
        "SELECT tenant_id, kind, lifecycle, status, status_since, last_seen_at, \
                last_seen_position, watched_since, silent_last_seen_at, timeout_minutes, \
                updated_position \
         FROM liveness_systems WHERE system_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

type Interval = (String, DateTime<Utc>, Option<DateTime<Utc>>);

async fn intervals(pool: &PgPool, id: Uuid) -> Vec<Interval> {
    sqlx::query_as(
        "SELECT status, started_at, ended_at FROM liveness_intervals \
         WHERE system_id = $1 ORDER BY started_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn catch_up(store: &PgEventStore, batch: i64) -> i64 {
    ProjectionRunner::new(store.clone(), Liveness, batch)
        .catch_up(None)
        .await
        .unwrap()
}

async fn parked(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE projector = 'liveness'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A second, silent, recovered, paused, resumed and decommissioned life of a fleet, with
/// policies; returns what the assertions need.
struct Fleet {
    tenant: TenantId,
    server: Uuid,
    gateway: Uuid,
    quiet: Uuid,
    retired: Uuid,
    positions: BTreeMap<&'static str, i64>,
    silent_at: DateTime<Utc>,
    recovered_at: DateTime<Utc>,
}

async fn a_fleet_history(store: &PgEventStore) -> Fleet {
    let tenant = TenantId::new();
    let tenant_stream = StreamId::tenant(tenant);
    let mut positions = BTreeMap::new();
    let (server, server_stream, p) = register(store, tenant, SystemKind::System, "db-01").await;
    positions.insert("server registered", p);
    let (gateway, gateway_stream, _) = register(store, tenant, SystemKind::Gateway, "gw-01").await;
    let (quiet, _, p) = register(store, tenant, SystemKind::System, "never-seen").await;
    positions.insert("quiet registered", p);
    let (retired, retired_stream, _) = register(store, tenant, SystemKind::System, "old-01").await;

    // The server: heartbeats and an unchanged inventory, then silence, then life again.
    positions.insert(
        "server first",
        heartbeat(store, tenant, &server_stream).await,
    );
    for _ in 0..5 {
        heartbeat(store, tenant, &server_stream).await;
    }
    let unchanged = InventoryUnchanged {
        content_hash: "ab".repeat(32),
    };
    let last = append(store, tenant, &server_stream, &unchanged).await;
    positions.insert("server last", last);
    let last_seen = recorded_at(store.pool(), last).await;
    let silent_at = last_seen;
    positions.insert(
        "server silent",
        append(
            store,
            tenant,
            &server_stream,
            &SystemWentSilent {
                last_seen_at: last_seen,
                timeout_minutes: 10,
            },
        )
        .await,
    );
    let back = heartbeat(store, tenant, &server_stream).await;
    positions.insert("server back", back);
    let recovered_at = recorded_at(store.pool(), back).await;
    append(
        store,
        tenant,
        &server_stream,
        &SystemRecovered {
            silent_since: silent_at,
            seen_at: recovered_at,
        },
    )
    .await;

    // The gateway: telemetry is a sign of life; paused and resumed.
    let telemetry = TelemetryReceived {
        content_type: Some("application/octet-stream".into()),
        size_bytes: 12,
        subject: Some("telemetry.gw-01".into()),
        jetstream_sequence: Some(7),
    };
    positions.insert(
        "gateway telemetry",
        append(store, tenant, &gateway_stream, &telemetry).await,
    );
    append(
        store,
        tenant,
        &gateway_stream,
        &SystemPaused {
            reason: Some("maintenance".into()),
        },
    )
    .await;
    positions.insert(
        "gateway resumed",
        append(store, tenant, &gateway_stream, &SystemResumed {}).await,
    );

    // The retired one: seen, then decommissioned; later events change nothing.
    heartbeat(store, tenant, &retired_stream).await;
    positions.insert(
        "retired",
        append(
            store,
            tenant,
            &retired_stream,
            &SystemDecommissioned { reason: None },
        )
        .await,
    );
    heartbeat(store, tenant, &retired_stream).await;

    // Policies: the tenant's, an override, and one for a system of nobody (ignored).
    for (system_id, minutes) in [(None, 30), (Some(quiet), 60), (Some(Uuid::now_v7()), 5)] {
        append(
            store,
            tenant,
            &tenant_stream,
            &LivenessPolicySet {
                system_id,
                heartbeat_timeout_minutes: minutes,
            },
        )
        .await;
    }
    // A heartbeat of a system that was never registered: ignored.
    heartbeat(store, tenant, &StreamId::system(Uuid::now_v7())).await;
    Fleet {
        tenant,
        server,
        gateway,
        quiet,
        retired,
        positions,
        silent_at,
        recovered_at,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fleet_history_becomes_statuses_intervals_and_policies(pool: PgPool) {
    let store = store(&pool);
    let fleet = a_fleet_history(&store).await;
    let head = store.head_position().await.unwrap();
    assert_eq!(catch_up(&store, 7).await, head);
    assert_eq!(parked(&pool).await, 0);
    let at = |name: &str| fleet.positions[name];

    let server = row(&pool, fleet.server).await;
    assert_eq!(
        (
            server.tenant_id,
            server.kind.as_str(),
            server.lifecycle.as_str(),
            server.status.as_str()
        ),
        (fleet.tenant.0, "system", "active", "active")
    );
    assert_eq!(server.status_since, fleet.recovered_at);
    assert_eq!(server.last_seen_at, Some(fleet.recovered_at));
    assert_eq!(server.last_seen_position, Some(at("server back")));
    assert_eq!(server.silent_last_seen_at, None);
    assert_eq!(
        server.watched_since,
        recorded_at(&pool, at("server registered")).await
    );
    let first_seen = recorded_at(&pool, at("server first")).await;
    assert_eq!(
        intervals(&pool, fleet.server).await,
        vec![
            ("active".to_owned(), first_seen, Some(fleet.silent_at)),
            (
                "inactive".to_owned(),
                fleet.silent_at,
                Some(fleet.recovered_at)
            ),
            ("active".to_owned(), fleet.recovered_at, None),
        ]
    );

    let gateway = row(&pool, fleet.gateway).await;
    let telemetry_at = recorded_at(&pool, at("gateway telemetry")).await;
    assert_eq!(
        (
            gateway.kind.as_str(),
            gateway.lifecycle.as_str(),
            gateway.status.as_str()
        ),
        ("gateway", "active", "active")
    );
    assert_eq!(gateway.last_seen_at, Some(telemetry_at));
    assert_eq!(
        gateway.watched_since,
        recorded_at(&pool, at("gateway resumed")).await,
        "a resume restarts the watch"
    );
    assert_eq!(
        intervals(&pool, fleet.gateway).await,
        vec![("active".to_owned(), telemetry_at, None)],
        "a pause keeps the open interval"
    );

    let quiet = row(&pool, fleet.quiet).await;
    assert_eq!(
        (quiet.status.as_str(), quiet.last_seen_at),
        ("unknown", None)
    );
    assert_eq!(
        quiet.status_since,
        recorded_at(&pool, at("quiet registered")).await
    );
    assert_eq!(quiet.timeout_minutes, Some(60));
    assert!(intervals(&pool, fleet.quiet).await.is_empty());
    assert_eq!(server.timeout_minutes, None);

    let retired = row(&pool, fleet.retired).await;
    assert_eq!(
        (retired.lifecycle.as_str(), retired.updated_position),
        ("decommissioned", at("retired"))
    );
    let retired_intervals = intervals(&pool, fleet.retired).await;
    assert_eq!(retired_intervals.len(), 1);
    assert_eq!(
        retired_intervals[0].2,
        Some(recorded_at(&pool, at("retired")).await),
        "decommissioning closes the open interval"
    );

    let policies: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT tenant_id, timeout_minutes FROM liveness_tenant_policies")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(policies, vec![(fleet.tenant.0, 30)]);
    let systems: i64 = sqlx::query_scalar("SELECT count(*) FROM liveness_systems")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(systems, 4, "no row for the unregistered system");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_from_zero_matches_the_live_read_model(pool: PgPool) {
    let store = store(&pool);
    let fleet = a_fleet_history(&store).await;
    // A second tenant, interleaved, so batches mix tenants and systems.
    let other = TenantId::new();
    let (id, stream, _) = register(&store, other, SystemKind::System, "web-01").await;
    for _ in 0..4 {
        heartbeat(&store, other, &stream).await;
    }
    for batch in [1, 3, 10] {
        let snapshot = assert_rebuild_matches_live(&store, || Liveness, batch).await;
        let systems = &snapshot
            .iter()
            .find(|(table, _)| table == "liveness_systems")
            .unwrap()
            .1;
        assert_eq!(systems.len(), 5, "batch {batch}");
        assert!(systems.iter().any(|r| r.contains(&id.to_string())));
        assert!(systems
            .iter()
            .any(|r| r.contains(&fleet.server.to_string())));
        projections::testing::reset(&pool, &Liveness).await.unwrap();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn heartbeats_in_one_batch_or_one_by_one_give_the_same_row(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let (id, stream, _) = register(&store, tenant, SystemKind::System, "db-01").await;
    let mut last = 0;
    for _ in 0..50 {
        last = heartbeat(&store, tenant, &stream).await;
    }
    catch_up(&store, 1000).await;
    let one_batch = row(&pool, id).await;
    assert_eq!(one_batch.last_seen_position, Some(last));
    assert_eq!(one_batch.updated_position, last);
    let one_batch_intervals = intervals(&pool, id).await;
    assert_eq!(one_batch_intervals.len(), 1);

    projections::testing::reset(&pool, &Liveness).await.unwrap();
    catch_up(&store, 1).await;
    assert_eq!(row(&pool, id).await, one_batch);
    assert_eq!(intervals(&pool, id).await, one_batch_intervals);

    // Folding again from the checkpoint writes nothing new (exactly once).
    assert_eq!(catch_up(&store, 1).await, last);
    assert_eq!(row(&pool, id).await, one_batch);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_sign_of_life_of_a_silent_system_wakes_the_monitor_once_per_batch(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let (id, stream, _) = register(&store, tenant, SystemKind::System, "db-01").await;
    let seen = heartbeat(&store, tenant, &stream).await;
    let seen_at = recorded_at(&pool, seen).await;
    append(
        &store,
        tenant,
        &stream,
        &SystemWentSilent {
            last_seen_at: seen_at,
            timeout_minutes: 10,
        },
    )
    .await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(LIVENESS_CHANNEL).await.unwrap();
    catch_up(&store, 100).await;
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await;
    assert!(nothing.is_err(), "nothing to recover yet");

    let mut back = 0;
    for _ in 0..3 {
        back = heartbeat(&store, tenant, &stream).await;
    }
    catch_up(&store, 100).await;
    let notification = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(notification.channel(), LIVENESS_CHANNEL);
    let again = tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await;
    assert!(again.is_err(), "one notification per batch");

    let silent = row(&pool, id).await;
    assert_eq!(
        silent.status, "inactive",
        "the monitor, not the projector, recovers"
    );
    assert_eq!(silent.silent_last_seen_at, Some(seen_at));
    assert_eq!(silent.last_seen_position, Some(back));
    let recovering: Vec<Uuid> = sqlx::query_scalar(
        "SELECT system_id FROM liveness_systems \
         WHERE status = 'inactive' AND last_seen_at > silent_last_seen_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(recovering, vec![id]);
}

#[sqlx::test(migrations = "../migrations")]
async fn odd_monitor_times_never_break_the_interval_key_or_go_backwards(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let (id, stream, registered) = register(&store, tenant, SystemKind::System, "db-01").await;
    let seen = heartbeat(&store, tenant, &stream).await;
    let seen_at = recorded_at(&pool, seen).await;
    // Silent at the very instant it was first seen, twice (a duplicate is ignored) ...
    for _ in 0..2 {
        append(
            &store,
            tenant,
            &stream,
            &SystemWentSilent {
                last_seen_at: seen_at,
                timeout_minutes: 10,
            },
        )
        .await;
    }
    // ... and recovered at a time before the silence (taken as the silence's start).
    append(
        &store,
        tenant,
        &stream,
        &SystemRecovered {
            silent_since: seen_at,
            seen_at: seen_at - Duration::hours(1),
        },
    )
    .await;
    catch_up(&store, 2).await;
    assert_eq!(parked(&pool).await, 0);
    assert_eq!(
        intervals(&pool, id).await,
        vec![("active".to_owned(), seen_at, None)],
        "both empty intervals are dropped; the key stays unique"
    );
    let row = row(&pool, id).await;
    assert_eq!((row.status.as_str(), row.status_since), ("active", seen_at));
    assert!(row.status_since >= recorded_at(&pool, registered).await);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_into_shadow_tables_swaps_in_the_same_rows(pool: PgPool) {
    let store = store(&pool);
    a_fleet_history(&store).await;
    catch_up(&store, 4).await;
    let live = projections::testing::snapshot(&pool, &Liveness)
        .await
        .unwrap();
    assert!(live.iter().all(|(_, rows)| !rows.is_empty()), "{live:?}");
    let report = projections::rebuild::rebuild(&pool, || Liveness, 5, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.swapped_at, store.head_position().await.unwrap());
    assert_eq!(
        projections::testing::snapshot(&pool, &Liveness)
            .await
            .unwrap(),
        live
    );
    // The swapped-in table kept its indexes (the monitor's scans rely on them) and its fill
    // factor (room for HOT updates).
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' \
         AND tablename = 'liveness_systems' ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(indexes.len(), 4, "{indexes:?}");
    assert!(
        indexes
            .iter()
            .any(|i| i.contains("first_seen_after_silence") && i.contains("decommissioned")),
        "{indexes:?}"
    );
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT reloptions FROM pg_class WHERE oid = 'public.liveness_systems'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(options, Some(vec!["fillfactor=70".to_owned()]));
}
