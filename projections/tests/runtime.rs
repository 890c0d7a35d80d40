//! The projection runtime against a real PostgreSQL, one database per test.

use std::time::Duration;

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{NewEvent, RecordedEvent, StreamId, TenantId};
use projections::event_type_counts::CountChanges;
use projections::testing::{assert_rebuild_matches_live, table_rows};
use projections::{
    EventTypeCounts, FoldError, ParkedRetry, ProjectionRunner, Projector, RetryPolicy,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

fn event(tenant: TenantId, event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        payload,
        ..NewEvent::new(
            tenant,
            &events_schema::HeartbeatReceived {
                agent_version: None,
            },
            Utc::now(),
        )
    }
}

/// A scripted history: three tenants, several types, 300 events over 30 streams.
async fn append_history(store: &PgEventStore) -> Vec<TenantId> {
    let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::new()).collect();
    let types = [
        "HeartbeatReceived",
        "InventoryReported",
        "SystemPaused",
        "TelemetryReceived",
    ];
    // Fixed stream ids: the partition that owns each stream is the same on every run.
    let streams: Vec<StreamId> = (0..30u128)
        .map(|i| {
            StreamId::system(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0000 + i,
            ))
        })
        .collect();
    for i in 0..300usize {
        let e = event(tenants[i % 3], types[(i * 7) % 4], json!({"n": i}));
        store
            .append(&streams[i % 30], ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    tenants
}

async fn counts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT event_type, sum(events)::bigint FROM event_type_counts GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn expected_counts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn event_type_counts_rebuilt_from_zero_equal_the_live_rows(pool: PgPool) {
    let store = store(&pool);
    append_history(&store).await;
    let snapshot = assert_rebuild_matches_live(&store, || EventTypeCounts, 7).await;
    assert_eq!(snapshot[0].1.len(), 12, "3 tenants x 4 types");
    assert_eq!(counts(&pool).await, expected_counts(&pool).await);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_projector_killed_at_random_moments_applies_every_event_exactly_once(pool: PgPool) {
    let store = store(&pool);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_history(&store).await })
    };
    // Crash the live runner again and again while events arrive: each abort drops a transaction
    // wherever it was; the next runner resumes from the committed checkpoint.
    let mut progress = Vec::new();
    for round in 0..12u64 {
        let runner = ProjectionRunner::new(store.clone(), EventTypeCounts, 5);
        let live = tokio::spawn(runner.run(std::future::pending()));
        tokio::time::sleep(Duration::from_millis(7 + (round * 13) % 31)).await;
        live.abort();
        let _ = live.await;
        // After every crash, the rows count exactly the events up to the committed checkpoint.
        let (checkpoint, counted): (i64, i64) = sqlx::query_as(
            "SELECT coalesce((SELECT position FROM projection_checkpoints WHERE projector = 'event_type_counts'), 0), \
                    coalesce((SELECT sum(events)::bigint FROM event_type_counts), 0)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            counted, checkpoint,
            "round {round}: rows and checkpoint disagree"
        );
        progress.push(checkpoint);
    }
    writer.await.unwrap();
    assert!(
        progress.iter().any(|&p| p > 0),
        "the live runner never got to apply anything: {progress:?}"
    );
    let head = store.head_position().await.unwrap();
    let final_run = ProjectionRunner::new(store.clone(), EventTypeCounts, 5);
    assert_eq!(final_run.catch_up(None).await.unwrap(), head);
    assert_eq!(counts(&pool).await, expected_counts(&pool).await);
}

#[sqlx::test(migrations = "../migrations")]
async fn two_runners_of_one_projector_never_apply_an_event_twice(pool: PgPool) {
    let store = store(&pool);
    append_history(&store).await;
    let runners: Vec<_> = [3, 11]
        .into_iter()
        .map(|batch| {
            let runner = ProjectionRunner::new(store.clone(), EventTypeCounts, batch);
            tokio::spawn(async move { runner.catch_up(None).await.unwrap() })
        })
        .collect();
    for runner in runners {
        runner.await.unwrap();
    }
    assert_eq!(counts(&pool).await, expected_counts(&pool).await);
}

/// Counts like [`EventTypeCounts`], but (unless it forgives) refuses payloads marked
/// `"poison": "error"` and panics on `"poison": "panic"`.
struct Fussy {
    forgive: bool,
}

impl Projector for Fussy {
    type Changes = CountChanges;

    fn name(&self) -> &'static str {
        "fussy_counts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_type_counts"]
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<CountChanges, sqlx::Error> {
        EventTypeCounts.load(tx, events).await
    }

    fn fold(&self, changes: &mut CountChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        match event.payload["poison"].as_str().filter(|_| !self.forgive) {
            Some("error") => Err(FoldError("this event is poison".into())),
            Some("panic") => panic!("fold blew up"),
            _ => EventTypeCounts.fold(changes, event),
        }
    }

    async fn flush(&self, tx: &mut PgConnection, changes: CountChanges) -> Result<(), sqlx::Error> {
        EventTypeCounts.flush(tx, changes).await
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn poison_events_are_retried_then_parked_and_the_projector_goes_on(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for i in 0..20 {
        let poison = match i {
            5 => json!({"poison": "error"}),
            13 => json!({"poison": "panic"}),
            _ => json!({"n": i}),
        };
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event(tenant, "HeartbeatReceived", poison)],
            )
            .await
            .unwrap();
    }
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let runner =
        ProjectionRunner::new(store.clone(), Fussy { forgive: false }, 8).with_retry(retry);
    assert_eq!(runner.catch_up(None).await.unwrap(), 20);

    let parked = projections::checkpoint::parked(&pool, Some("fussy_counts"))
        .await
        .unwrap();
    let summary: Vec<(i64, i32)> = parked.iter().map(|p| (p.position, p.attempts)).collect();
    assert_eq!(summary, [(6, 3), (14, 3)]);
    assert!(parked[0].error.contains("poison"), "{}", parked[0].error);
    assert!(parked[1].error.contains("panicked"), "{}", parked[1].error);
    assert_eq!(
        table_rows(&pool, "event_type_counts").await.unwrap().len(),
        1
    );
    assert_eq!(counts(&pool).await, [("HeartbeatReceived".to_owned(), 18)]);

    // Retrying while the fold still refuses: still parked, one more attempt.
    let outcome = runner.retry_parked(6).await.unwrap();
    assert!(
        matches!(outcome, ParkedRetry::StillFailing(_)),
        "{outcome:?}"
    );
    let parked = projections::checkpoint::parked(&pool, Some("fussy_counts"))
        .await
        .unwrap();
    assert_eq!((parked[0].position, parked[0].attempts), (6, 4));

    // Once the projector is fixed, a retry applies it (late) and unparks it; skip forgets one.
    let fixed = ProjectionRunner::new(store.clone(), Fussy { forgive: true }, 8);
    assert_eq!(fixed.retry_parked(6).await.unwrap(), ParkedRetry::Applied);
    assert!(projections::checkpoint::skip(&pool, "fussy_counts", 14)
        .await
        .unwrap());
    assert!(projections::checkpoint::parked(&pool, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(counts(&pool).await, [("HeartbeatReceived".to_owned(), 19)]);
    assert_eq!(fixed.retry_parked(6).await.unwrap(), ParkedRetry::NotParked);
    assert_eq!(
        fixed.catch_up(None).await.unwrap(),
        20,
        "the checkpoint did not move back"
    );
}

/// [`EventTypeCounts`] split into three partitions by stream.
struct PartitionedCounts;

impl Projector for PartitionedCounts {
    type Changes = CountChanges;

    fn name(&self) -> &'static str {
        "partitioned_counts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_type_counts"]
    }

    fn partitions(&self) -> u32 {
        3
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<CountChanges, sqlx::Error> {
        EventTypeCounts.load(tx, events).await
    }

    fn fold(&self, changes: &mut CountChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        EventTypeCounts.fold(changes, event)
    }

    async fn flush(&self, tx: &mut PgConnection, changes: CountChanges) -> Result<(), sqlx::Error> {
        EventTypeCounts.flush(tx, changes).await
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn partitions_each_apply_their_own_streams_and_together_equal_a_rebuild(pool: PgPool) {
    let store = store(&pool);
    append_history(&store).await;
    assert_rebuild_matches_live(&store, || PartitionedCounts, 9).await;

    // Run live again, partition by partition: each applies only its own streams.
    projections::testing::reset(&pool, &PartitionedCounts)
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    let mut applied = Vec::new();
    for partition in 0..3 {
        let runner =
            ProjectionRunner::new(store.clone(), PartitionedCounts, 9).for_partition(partition);
        assert_eq!(runner.key(), format!("partitioned_counts#{partition}"));
        assert_eq!(
            runner.catch_up(None).await.unwrap(),
            head,
            "every partition's checkpoint reaches the head"
        );
        let total: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM event_type_counts")
                .fetch_one(&pool)
                .await
                .unwrap();
        applied.push(total);
    }
    assert!(
        applied[0] > 0 && applied[0] < applied[1] && applied[1] < applied[2],
        "{applied:?}"
    );
    assert_eq!(counts(&pool).await, expected_counts(&pool).await);
}
