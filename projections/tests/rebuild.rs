//! Rebuild without downtime and replay as of a point in history, against a real PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{HeartbeatReceived, NewEvent, StreamId, TenantId};
use projections::rebuild::{position_at, rebuild, replay_into_schema, RebuildError};
use projections::testing::table_rows;
use projections::{EventTypeCounts, ProjectionRunner};
use sqlx::PgPool;

async fn append(store: &PgEventStore, n: usize) {
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for i in 0..n {
        let mut event = NewEvent::new(
            tenant,
            &HeartbeatReceived {
                agent_version: None,
            },
            Utc::now(),
        );
        event.event_type =
            ["HeartbeatReceived", "SystemPaused", "InventoryUnchanged"][i % 3].into();
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
}

async fn counted(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(events), 0)::bigint FROM {table}"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

fn no_progress(_: i64, _: i64) {}

#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_swaps_in_a_fresh_read_model_while_the_live_one_keeps_serving(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    append(&store, 300).await;
    let live = tokio::spawn(
        ProjectionRunner::new(store.clone(), EventTypeCounts, 10).run(std::future::pending()),
    );
    while counted(&pool, "event_type_counts").await < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An old bug left a wrong row behind: only a rebuild from the log can repair it.
    sqlx::query(
        "UPDATE event_type_counts SET events = events + 1000 WHERE event_type = 'SystemPaused'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append(&store, 150).await })
    };
    let report = rebuild(&pool, || EventTypeCounts, 7, &no_progress)
        .await
        .unwrap();
    assert!(report.swapped_at >= 300, "{report:?}");
    writer.await.unwrap();
    append(&store, 30).await; // after the swap, the live runner feeds the new tables

    let head = store.head_position().await.unwrap();
    for _ in 0..500 {
        if counted(&pool, "event_type_counts").await == head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counted(&pool, "event_type_counts").await,
        head,
        "every event counted once, the bad row gone"
    );
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'fleetlog_%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(schemas, 0, "shadow and retired schemas are dropped");
    live.abort();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replay_builds_the_read_model_as_of_a_point_into_its_own_schema(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    append(&store, 90).await;
    let reached = replay_into_schema(&pool, || EventTypeCounts, "as_of_60", 60, 7, &no_progress)
        .await
        .unwrap();
    assert_eq!(reached, 60);
    assert_eq!(counted(&pool, "as_of_60.event_type_counts").await, 60);
    assert_eq!(
        table_rows(&pool, "as_of_60.event_type_counts")
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        counted(&pool, "public.event_type_counts").await,
        0,
        "today's read model is untouched"
    );

    let recorded_at_30: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = 30")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(position_at(&pool, recorded_at_30).await.unwrap() >= 30);

    let again =
        replay_into_schema(&pool, || EventTypeCounts, "as_of_60", 60, 7, &no_progress).await;
    assert!(matches!(again, Err(RebuildError::SchemaExists(_))));
    let bad = replay_into_schema(
        &pool,
        || EventTypeCounts,
        "Robert'); DROP TABLE events;--",
        60,
        7,
        &no_progress,
    )
    .await;
    assert!(matches!(bad, Err(RebuildError::InvalidSchema(_))));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_rebuild_of_the_same_projector_is_refused_while_one_runs(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    append(&store, 5).await;
    let mut running = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('fleetlog_rebuild_event_type_counts'))")
        .execute(&mut *running)
        .await
        .unwrap();
    let refused = rebuild(&pool, || EventTypeCounts, 7, &no_progress).await;
    assert!(
        matches!(refused, Err(RebuildError::AlreadyRunning(_))),
        "{refused:?}"
    );

    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *running)
        .await
        .unwrap();
    let report = rebuild(&pool, || EventTypeCounts, 7, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.swapped_at, 5);
    let report = rebuild(&pool, || EventTypeCounts, 7, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.swapped_at, 5, "the lock is released after a rebuild");
}
