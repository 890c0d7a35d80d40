//! The event store against a real PostgreSQL, one database per test.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use command_side::event_store::{
    EventStore, EventStoreError, EventTail, ExpectedVersion, GroupCommitConfig, PgEventStore,
};
use events_schema::{EventId, HeartbeatReceived, NewEvent, StreamId, TelemetryReceived, TenantId};
use serde_json::json;
use sqlx::PgPool;

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

fn heartbeat(tenant: TenantId) -> NewEvent {
    NewEvent::new(
        tenant,
        &HeartbeatReceived {
            agent_version: Some("1.0".into()),
        },
        Utc::now(),
    )
}

fn heartbeats(tenant: TenantId, n: usize) -> Vec<NewEvent> {
    (0..n).map(|_| heartbeat(tenant)).collect()
}

fn system_stream() -> StreamId {
    StreamId::system(uuid::Uuid::now_v7())
}

#[sqlx::test(migrations = "../migrations")]
async fn appended_events_read_back_in_stream_and_global_order(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let (a, b) = (system_stream(), system_stream());
    let first = store
        .append(&a, ExpectedVersion::NoStream, heartbeats(tenant, 2))
        .await
        .unwrap();
    let second = store
        .append(&b, ExpectedVersion::Any, heartbeats(tenant, 1))
        .await
        .unwrap();
    let third = store
        .append(&a, ExpectedVersion::Exact(2), heartbeats(tenant, 1))
        .await
        .unwrap();

    assert_eq!(
        first.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(second.events[0].position, 3);
    assert_eq!((third.events[0].position, third.stream_version()), (4, 3));

    let stream_a = store.read_stream(&a, 1, 100).await.unwrap();
    assert_eq!(
        stream_a
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(stream_a
        .iter()
        .all(|e| e.stream_id == a && e.tenant_id == tenant));
    assert_eq!(store.read_stream(&a, 3, 100).await.unwrap().len(), 1);

    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(store.read_all(2, 1).await.unwrap()[0].position, 3);
    let decoded = all[0].decode().unwrap();
    assert_eq!(decoded.event_type(), "HeartbeatReceived");
    assert_eq!(store.head_position().await.unwrap(), 4);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wrong_expected_version_is_a_typed_conflict_that_writes_nothing(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let stream = system_stream();
    store
        .append(&stream, ExpectedVersion::NoStream, heartbeats(tenant, 2))
        .await
        .unwrap();

    let err = store
        .append(&stream, ExpectedVersion::NoStream, heartbeats(tenant, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EventStoreError::WrongExpectedVersion {
            actual: 2,
            expected: ExpectedVersion::NoStream,
            ..
        }
    ));
    let err = store
        .append(&stream, ExpectedVersion::Exact(1), heartbeats(tenant, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EventStoreError::WrongExpectedVersion { actual: 2, .. }
    ));
    let err = store
        .append(
            &system_stream(),
            ExpectedVersion::Exact(3),
            heartbeats(tenant, 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EventStoreError::WrongExpectedVersion { actual: 0, .. }
    ));

    assert_eq!(store.read_all(0, 100).await.unwrap().len(), 2);
    store
        .append(&stream, ExpectedVersion::Exact(2), heartbeats(tenant, 1))
        .await
        .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn re_appending_stored_event_ids_succeeds_with_the_original_positions(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let stream = system_stream();
    let events = heartbeats(tenant, 3);
    let original = store
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::Any, heartbeats(tenant, 1))
        .await
        .unwrap();

    // A retry carries the same ids and the same (now stale) expectation: still a success.
    let retry = store
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.events, original.events);
    assert_eq!(store.read_all(0, 100).await.unwrap().len(), 4);

    // Reusing one stored id next to a new one is not a retry.
    let mut mixed = heartbeats(tenant, 1);
    mixed.push(events[0].clone());
    let err = store
        .append(&stream, ExpectedVersion::Any, mixed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::EventIdReused { event_id } if event_id == events[0].event_id)
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_appends_are_refused_before_they_reach_the_writer(pool: PgPool) {
    let store = store(&pool);
    let stream = system_stream();
    let err = store
        .append(&stream, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::InvalidAppend(_)));
    let event = heartbeat(TenantId::new());
    let err = store
        .append(&stream, ExpectedVersion::Any, vec![event.clone(), event])
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::InvalidAppend(_)));
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_appends_share_transactions_and_a_conflict_fails_only_its_own_append(
    pool: PgPool,
) {
    let config = GroupCommitConfig {
        max_wait: Duration::from_millis(200),
        ..GroupCommitConfig::default()
    };
    let store = PgEventStore::start(pool.clone(), config);
    let tenant = TenantId::new();
    let contested = system_stream();
    store
        .append(&contested, ExpectedVersion::NoStream, heartbeats(tenant, 1))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        let contested = contested.clone();
        tasks.push(tokio::spawn(async move {
            if i % 25 == 0 {
                // Four appends race for version 1 -> 2 of one stream: exactly one may win.
                store
                    .append(&contested, ExpectedVersion::Exact(1), heartbeats(tenant, 1))
                    .await
            } else {
                store
                    .append(
                        &system_stream(),
                        ExpectedVersion::NoStream,
                        heartbeats(tenant, 1),
                    )
                    .await
            }
        }));
    }
    let mut conflicts = 0;
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(EventStoreError::WrongExpectedVersion { actual: 2, .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!((ok, conflicts), (97, 3));

    // One transaction gives one `now()`: far fewer distinct commit times than appends.
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT recorded_at) FROM events WHERE position > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        transactions < 20,
        "97 appends took {transactions} transactions"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_append_postgres_refuses_fails_alone_and_its_batch_mates_are_stored(pool: PgPool) {
    let config = GroupCommitConfig {
        max_wait: Duration::from_millis(200),
        ..GroupCommitConfig::default()
    };
    let store = PgEventStore::start(pool.clone(), config);
    let tenant = TenantId::new();
    let mut poison = heartbeat(tenant);
    poison.payload = json!({"agent_version": "nul \u{0000} inside"});

    let bad = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(&system_stream(), ExpectedVersion::Any, vec![poison])
                .await
        })
    };
    let good: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &system_stream(),
                        ExpectedVersion::Any,
                        heartbeats(tenant, 1),
                    )
                    .await
            })
        })
        .collect();
    assert!(matches!(
        bad.await.unwrap(),
        Err(EventStoreError::Rejected(_))
    ));
    for task in good {
        task.await.unwrap().unwrap();
    }
    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(
        all.last().unwrap().position,
        10,
        "positions stay dense after a failed batch"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn large_documents_and_opaque_bytes_are_stored_verbatim(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let packages: Vec<_> = (0..60_000)
        .map(|i| json!({"name": format!("package-{i}"), "version": "1.2.3-build.4567"}))
        .collect();
    let document = json!({"os": {"name": "Debian", "version": "12"}, "packages": packages});
    assert!(document.to_string().len() > 3_000_000);
    let mut inventory = heartbeat(tenant);
    inventory.event_type = "InventoryReported".into();
    inventory.payload = json!({"content_hash": "00", "data": document});

    let bytes: Vec<u8> = (0..=255u8).cycle().take(1_000_000).collect();
    let telemetry = NewEvent::new(
        tenant,
        &TelemetryReceived {
            content_type: None,
            size_bytes: bytes.len() as u64,
            subject: None,
            jetstream_sequence: None,
        },
        Utc::now(),
    )
    .with_data(bytes.clone());

    let stream = StreamId::gateway(uuid::Uuid::now_v7());
    store
        .append(
            &system_stream(),
            ExpectedVersion::Any,
            vec![inventory.clone()],
        )
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![telemetry])
        .await
        .unwrap();
    let all = store.read_all(0, 10).await.unwrap();
    assert_eq!(all[0].payload, inventory.payload);
    assert_eq!(all[1].data.as_deref(), Some(bytes.as_slice()));
}

#[sqlx::test(migrations = "../migrations")]
async fn stored_events_cannot_be_updated_or_deleted(pool: PgPool) {
    let store = store(&pool);
    store
        .append(
            &system_stream(),
            ExpectedVersion::Any,
            heartbeats(TenantId::new(), 1),
        )
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET event_type = 'Other'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_tail_wakes_on_commit_instead_of_waiting_for_its_poll(pool: PgPool) {
    let store = store(&pool);
    let mut tail = EventTail::start(store.clone(), 0, 100).await.unwrap();
    let reader = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let batch = tail.next_batch().await.unwrap();
        (batch.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .append(
            &system_stream(),
            ExpectedVersion::Any,
            heartbeats(TenantId::new(), 2),
        )
        .await
        .unwrap();
    let (len, waited) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(len, 2);
    // The idle poll is 5 s; a wake-up well before it can only come from NOTIFY.
    assert!(waited < Duration::from_secs(3), "woke after {waited:?}");
}

/// The reader-never-skips proof: 8 independent writers (each its own writer task, so their
/// transactions really overlap) append while a tail follows; the tail must see every committed
/// event exactly once, in the same order as a full read afterwards, with dense positions.
#[sqlx::test(migrations = "../migrations")]
async fn a_tailing_reader_sees_every_event_of_concurrent_writers_exactly_once_in_order(
    pool: PgPool,
) {
    const WRITERS: usize = 8;
    const APPENDS_PER_WRITER: usize = 150;
    let tenant = TenantId::new();
    let reader_store = store(&pool);
    let mut tail = EventTail::start(reader_store.clone(), 0, 37).await.unwrap();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            let streams: Vec<StreamId> = (0..4).map(|_| system_stream()).collect();
            for i in 0..APPENDS_PER_WRITER {
                let events = heartbeats(tenant, 1 + (i + w) % 3);
                written.extend(events.iter().map(|e| e.event_id));
                store
                    .append(&streams[i % 4], ExpectedVersion::Any, events)
                    .await
                    .unwrap();
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        }));
    }
    let mut written: HashSet<EventId> = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }

    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let batch = tokio::time::timeout(Duration::from_secs(30), tail.next_batch())
            .await
            .unwrap()
            .unwrap();
        seen.extend(batch);
    }
    let full = reader_store.read_all(0, 1_000_000).await.unwrap();
    assert_eq!(seen.len(), written.len(), "the tail saw extra events");
    assert_eq!(
        seen.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        full.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "the tail's order differs from the stored order"
    );
    assert_eq!(
        seen.iter().map(|e| e.event_id).collect::<HashSet<_>>(),
        written
    );
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=written.len() as i64).collect::<Vec<_>>(),
        "positions must be dense"
    );
}

/// Two processes' writers (two stores) take turns on one stream with exact expectations: each
/// one's remembered versions go stale when the other writes, and it must notice, not overwrite.
#[sqlx::test(migrations = "../migrations")]
async fn writers_in_two_processes_see_each_others_appends_to_one_stream(pool: PgPool) {
    let (first, second) = (store(&pool), store(&pool));
    let tenant = TenantId::new();
    let stream = system_stream();
    for version in 0..6i64 {
        let writer = if version % 2 == 0 { &first } else { &second };
        let outcome = writer
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                heartbeats(tenant, 1),
            )
            .await
            .unwrap();
        assert_eq!(outcome.stream_version(), version + 1);
        // The other writer's memory says `version`; the stream is at `version + 1` now.
        let other = if version % 2 == 0 { &second } else { &first };
        let err = other
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                heartbeats(tenant, 1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, EventStoreError::WrongExpectedVersion { actual, .. } if actual == version + 1)
        );
    }
    let positions: Vec<i64> = first
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
}

/// A session that other code left inside a transaction sqlx does not know about (what a future
/// cancelled during `BEGIN` leaves behind) goes back to the shared pool. Appends must not run
/// inside it: an acknowledged event must survive that transaction's rollback.
#[sqlx::test(migrations = "../migrations")]
async fn a_connection_left_inside_a_transaction_cannot_swallow_acknowledged_appends(
    _: sqlx::postgres::PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let shared = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    {
        let mut conn = shared.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    } // back to the pool, still inside the transaction
    let store = PgEventStore::start(shared.clone(), GroupCommitConfig::default());
    let outcome = store
        .append(
            &system_stream(),
            ExpectedVersion::Any,
            heartbeats(TenantId::new(), 1),
        )
        .await
        .unwrap();

    sqlx::raw_sql("ROLLBACK").execute(&shared).await.unwrap();
    let other = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position = $1")
        .bind(outcome.events[0].position)
        .fetch_one(&other)
        .await
        .unwrap();
    assert_eq!(
        stored, 1,
        "the acknowledged event was rolled back with someone else's transaction"
    );
}
