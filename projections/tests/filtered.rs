//! Projectors that declare the event types they fold, against a real PostgreSQL: they read only
//! those types, and their checkpoints still move over the stretches of the log they ignore.

use std::time::Duration;

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{NewEvent, RecordedEvent, StreamId, TenantId};
use projections::event_type_counts::CountChanges;
use projections::rebuild::{rebuild, replay_into_schema};
use projections::testing::{assert_rebuild_matches_live, reset, snapshot, table_rows};
use projections::{
    EventTypeCounts, FoldError, ParkedRetry, ProjectionRunner, Projector, RetryPolicy,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// The only types [`OnlySome`] folds.
const WANTED: [&str; 2] = ["SystemPaused", "SystemResumed"];

/// Counts events of the [`WANTED`] types per tenant and type; with `declare`, it tells the
/// runtime so (and is only given those), without it it reads everything and skips the rest.
/// Unless it forgives, it refuses payloads marked `"poison": "error"`.
#[derive(Debug, Clone, Copy)]
struct OnlySome {
    declare: bool,
    partitions: u32,
    forgive: bool,
}

const FILTERED: OnlySome = OnlySome {
    declare: true,
    partitions: 1,
    forgive: true,
};
const UNFILTERED: OnlySome = OnlySome {
    declare: false,
    partitions: 1,
    forgive: true,
};

impl Projector for OnlySome {
    type Changes = CountChanges;

    fn name(&self) -> &'static str {
        match (self.declare, self.partitions > 1) {
            (true, false) => "only_some_filtered",
            (false, false) => "only_some_unfiltered",
            (true, true) => "only_some_filtered_partitioned",
            (false, true) => "only_some_unfiltered_partitioned",
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_type_counts"]
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        self.declare.then_some(&WANTED[..])
    }

    async fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<CountChanges, sqlx::Error> {
        if self.declare {
            assert!(
                events
                    .iter()
                    .all(|e| WANTED.contains(&e.event_type.as_str())),
                "a filtered projector was given a type it did not ask for"
            );
        }
        EventTypeCounts.load(tx, events).await
    }

    fn fold(&self, changes: &mut CountChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        if !WANTED.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        if !self.forgive && event.payload["poison"] == "error" {
            return Err(FoldError("this event is poison".into()));
        }
        EventTypeCounts.fold(changes, event)
    }

    async fn flush(&self, tx: &mut PgConnection, changes: CountChanges) -> Result<(), sqlx::Error> {
        EventTypeCounts.flush(tx, changes).await
    }
}

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

/// `n` events over two tenants and twelve fixed streams, mostly heartbeats and inventory reports,
/// with a few [`WANTED`] ones interleaved and none among the last 150. Event `poison` (if any)
/// is a wanted one marked poison.
async fn append_history(store: &PgEventStore, n: usize, poison: Option<usize>) {
    let tenants = [TenantId::new(), TenantId::new()];
    // Fixed stream ids, so that which partition owns which stream (and so which wanted events
    // each partition counts) is the same on every run.
    let streams: Vec<StreamId> = (0..12u128)
        .map(|i| {
            StreamId::system(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0000 + i,
            ))
        })
        .collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let stream = &streams[chunk[0] / 10 % streams.len()];
        let events = chunk
            .iter()
            .map(|&i| {
                let event_type = match i {
                    i if i + 150 >= n => "HeartbeatReceived",
                    i if i % 53 == 17 || Some(i) == poison => "SystemPaused",
                    i if i % 71 == 40 => "SystemResumed",
                    i if i % 2 == 0 => "HeartbeatReceived",
                    _ => "InventoryReported",
                };
                let payload = if Some(i) == poison {
                    json!({"poison": "error"})
                } else {
                    json!({"n": i})
                };
                event(tenants[i % 2], event_type, payload)
            })
            .collect();
        store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

async fn checkpoint_of(pool: &PgPool, key: &str) -> i64 {
    sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projector = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The rows the unfiltered projector builds up to `until`; its tables are left empty again.
async fn unfiltered_rows(store: &PgEventStore, until: Option<i64>) -> Vec<(String, Vec<String>)> {
    let pool = store.pool();
    reset(pool, &UNFILTERED).await.unwrap();
    ProjectionRunner::new(store.clone(), UNFILTERED, 3)
        .catch_up(until)
        .await
        .unwrap();
    let rows = snapshot(pool, &UNFILTERED).await.unwrap();
    reset(pool, &UNFILTERED).await.unwrap();
    rows
}

async fn wanted_in_log(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = ANY($1)")
        .bind(&WANTED[..])
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_filtered_projector_builds_the_same_rows_and_its_checkpoint_reaches_the_head(
    pool: PgPool,
) {
    let store = store(&pool);
    append_history(&store, 1200, None).await;
    let head = store.head_position().await.unwrap();
    let expected = unfiltered_rows(&store, None).await;
    assert!(wanted_in_log(&pool).await > 20);
    assert_eq!(expected[0].1.len(), 4, "2 tenants x 2 wanted types");

    // Batches of 3 scan windows of 192 positions: most windows hold no wanted event at all.
    let runner = ProjectionRunner::new(store.clone(), FILTERED, 3);
    assert_eq!(runner.catch_up(None).await.unwrap(), head);
    assert_eq!(
        checkpoint_of(&pool, "only_some_filtered").await,
        head,
        "the checkpoint moves over the ignored events at the end of the log"
    );
    assert_eq!(snapshot(&pool, &FILTERED).await.unwrap(), expected);
    // Nothing new: a second catch-up reads nothing and stays at the head.
    assert_eq!(runner.catch_up(None).await.unwrap(), head);
    assert_eq!(snapshot(&pool, &FILTERED).await.unwrap(), expected);

    // Only ignored events arrive: the checkpoint follows the head all the same.
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    let heartbeats = (0..40)
        .map(|i| event(tenant, "HeartbeatReceived", json!({"n": i})))
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, heartbeats)
        .await
        .unwrap();
    assert_eq!(runner.catch_up(None).await.unwrap(), head + 40);
    assert_eq!(checkpoint_of(&pool, "only_some_filtered").await, head + 40);

    // A big batch (one window beyond the head) gives the same rows too.
    reset(&pool, &FILTERED).await.unwrap();
    let big = ProjectionRunner::new(store.clone(), FILTERED, 10_000);
    assert_eq!(big.catch_up(None).await.unwrap(), head + 40);
    assert_eq!(snapshot(&pool, &FILTERED).await.unwrap(), expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn catch_up_until_a_position_stops_exactly_there(pool: PgPool) {
    let store = store(&pool);
    append_history(&store, 1200, None).await;
    let head = store.head_position().await.unwrap();
    // Wanted events sit at positions 18, 41, 71, ...; the last 150 are all ignored.
    for until in [1, 17, 18, 19, 40, 41, 500, 777, head - 100, head - 1, head] {
        reset(&pool, &FILTERED).await.unwrap();
        let runner = ProjectionRunner::new(store.clone(), FILTERED, 4);
        assert_eq!(runner.catch_up(Some(until)).await.unwrap(), until);
        assert_eq!(checkpoint_of(&pool, "only_some_filtered").await, until);
        assert_eq!(
            snapshot(&pool, &FILTERED).await.unwrap(),
            unfiltered_rows(&store, Some(until)).await,
            "rows up to {until}"
        );
    }

    // Stepping through the log, one runner after another, ends where one pass does.
    reset(&pool, &FILTERED).await.unwrap();
    for until in (0..=head).step_by(37).chain([head]) {
        let runner = ProjectionRunner::new(store.clone(), FILTERED, 2);
        assert_eq!(runner.catch_up(Some(until)).await.unwrap(), until);
    }
    assert_eq!(
        snapshot(&pool, &FILTERED).await.unwrap(),
        unfiltered_rows(&store, None).await
    );
    // Past the head, it stops at the head.
    let runner = ProjectionRunner::new(store.clone(), FILTERED, 2);
    assert_eq!(runner.catch_up(Some(head + 50)).await.unwrap(), head);
}

#[sqlx::test(migrations = "../migrations")]
async fn filtered_projectors_rebuilt_from_zero_equal_the_live_rows_partitioned_or_not(
    pool: PgPool,
) {
    let store = store(&pool);
    append_history(&store, 900, None).await;
    let head = store.head_position().await.unwrap();
    let expected = unfiltered_rows(&store, None).await;

    let rows = assert_rebuild_matches_live(&store, || FILTERED, 3).await;
    assert_eq!(rows, expected);
    reset(&pool, &FILTERED).await.unwrap();

    let partitioned = OnlySome {
        partitions: 3,
        ..FILTERED
    };
    let rows = assert_rebuild_matches_live(&store, || partitioned, 4).await;
    assert_eq!(rows, expected);

    // Partition by partition: each reaches the head and applies only its own streams' events.
    reset(&pool, &partitioned).await.unwrap();
    let mut counted = Vec::new();
    for partition in 0..3 {
        let runner = ProjectionRunner::new(store.clone(), partitioned, 5).for_partition(partition);
        assert_eq!(runner.catch_up(None).await.unwrap(), head);
        assert_eq!(checkpoint_of(&pool, runner.key()).await, head);
        let total: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM event_type_counts")
                .fetch_one(&pool)
                .await
                .unwrap();
        counted.push(total);
    }
    assert!(
        counted[0] > 0 && counted[0] < counted[1] && counted[1] < counted[2],
        "{counted:?}"
    );
    assert_eq!(counted[2], wanted_in_log(&pool).await);
    assert_eq!(snapshot(&pool, &partitioned).await.unwrap(), expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_live_filtered_runner_follows_the_head_through_ignored_events(pool: PgPool) {
    let store = store(&pool);
    append_history(&store, 600, None).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(
        ProjectionRunner::new(store.clone(), FILTERED, 3).run(async {
            let _ = stopped.await;
        }),
    );
    let wait_for_head = |head: i64| {
        let pool = pool.clone();
        async move {
            for _ in 0..1000 {
                let at: Option<i64> = sqlx::query_scalar(
                    "SELECT position FROM projection_checkpoints WHERE projector = $1",
                )
                .bind("only_some_filtered")
                .fetch_optional(&pool)
                .await
                .unwrap();
                if at == Some(head) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the live runner did not reach {head}");
        }
    };
    wait_for_head(store.head_position().await.unwrap()).await;

    // While it waits: ignored events, a wanted one, ignored ones again.
    append_history(&store, 400, None).await;
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for event_type in ["HeartbeatReceived", "SystemResumed", "InventoryReported"] {
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event(tenant, event_type, json!({}))],
            )
            .await
            .unwrap();
    }
    wait_for_head(store.head_position().await.unwrap()).await;
    stop.send(()).unwrap();
    live.await.unwrap().unwrap();
    assert_eq!(
        snapshot(&pool, &FILTERED).await.unwrap(),
        unfiltered_rows(&store, None).await
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poison_wanted_event_is_parked_and_retried_and_the_checkpoint_still_reaches_the_head(
    pool: PgPool,
) {
    let store = store(&pool);
    append_history(&store, 400, Some(120)).await;
    let head = store.head_position().await.unwrap();
    let fussy = OnlySome {
        forgive: false,
        ..FILTERED
    };
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
    };
    let runner = ProjectionRunner::new(store.clone(), fussy, 3).with_retry(retry);
    assert_eq!(runner.catch_up(None).await.unwrap(), head);
    assert_eq!(checkpoint_of(&pool, "only_some_filtered").await, head);
    let parked = projections::checkpoint::parked(&pool, Some("only_some_filtered"))
        .await
        .unwrap();
    let summary: Vec<(i64, &str, i32)> = parked
        .iter()
        .map(|p| (p.position, p.event_type.as_str(), p.attempts))
        .collect();
    assert_eq!(summary, [(121, "SystemPaused", 2)]);
    let total = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(events), 0)::bigint FROM event_type_counts",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(total(pool.clone()).await, wanted_in_log(&pool).await - 1);

    let fixed = ProjectionRunner::new(store.clone(), FILTERED, 3);
    assert_eq!(fixed.retry_parked(121).await.unwrap(), ParkedRetry::Applied);
    assert_eq!(total(pool.clone()).await, wanted_in_log(&pool).await);
    assert_eq!(fixed.catch_up(None).await.unwrap(), head);
}

fn no_progress(_: i64, _: i64) {}

#[sqlx::test(migrations = "../migrations")]
async fn a_filtered_projector_rebuilds_and_replays_like_an_unfiltered_one(pool: PgPool) {
    let store = store(&pool);
    append_history(&store, 700, None).await;
    let head = store.head_position().await.unwrap();
    let expected = unfiltered_rows(&store, None).await;

    ProjectionRunner::new(store.clone(), FILTERED, 5)
        .catch_up(Some(head / 2))
        .await
        .unwrap();
    sqlx::query("UPDATE event_type_counts SET events = events + 1000")
        .execute(&pool)
        .await
        .unwrap();
    let report = rebuild(&pool, || FILTERED, 3, &no_progress).await.unwrap();
    assert_eq!(
        report.swapped_at, head,
        "the swap covers the ignored tail too"
    );
    assert_eq!(checkpoint_of(&pool, "only_some_filtered").await, head);
    assert_eq!(snapshot(&pool, &FILTERED).await.unwrap(), expected);

    let until = head - 120; // inside the ignored tail
    let reached = replay_into_schema(
        &pool,
        || FILTERED,
        "filtered_replay",
        until,
        3,
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(reached, until);
    assert_eq!(
        table_rows(&pool, "filtered_replay.event_type_counts")
            .await
            .unwrap(),
        expected[0].1,
        "no wanted event after {until}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn event_type_counts_reads_no_payloads_and_still_counts_everything(pool: PgPool) {
    let store = store(&pool);
    append_history(&store, 300, None).await;
    assert!(!EventTypeCounts.reads_payloads());
    let head = store.head_position().await.unwrap();
    let runner = ProjectionRunner::new(store.clone(), EventTypeCounts, 7);
    assert_eq!(runner.catch_up(None).await.unwrap(), head);
    let total: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM event_type_counts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(total, head);
}
