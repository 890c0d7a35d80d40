//! Reactors against a real PostgreSQL: derived ids make replays and retries append nothing twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{NewEvent, RecordedEvent, StreamId, TenantId};
use projections::reactor::{Reaction, Reactor, ReactorRunner};
use projections::{FoldError, RetryPolicy};
use serde_json::json;
use sqlx::PgPool;

/// For each `Ping`, appends two `Pong`s to `alert-{input id}`; refuses pings marked poison.
struct PingPong;

impl Reactor for PingPong {
    type Context = ();

    fn name(&self) -> &'static str {
        "ping_pong"
    }

    async fn load(&self, _: &PgPool, _: &[RecordedEvent]) -> Result<(), sqlx::Error> {
        Ok(())
    }

    fn react(
        &self,
        (): &mut (),
        event: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reaction>, FoldError> {
        if event.event_type != "Ping" {
            return Ok(vec![]);
        }
        if event.payload["poison"] == true {
            return Err(FoldError("cannot answer this ping".into()));
        }
        Ok((0..2)
            .map(|n| Reaction {
                stream_id: StreamId::alert(&event.event_id.to_string()),
                expected: ExpectedVersion::Any,
                event: NewEvent {
                    event_type: "Pong".into(),
                    payload: json!({"n": n, "at": now}),
                    ..ping(event.tenant_id, json!({}))
                },
            })
            .collect())
    }
}

fn ping(tenant: TenantId, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: "Ping".into(),
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

async fn count(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn reactions_are_appended_once_even_when_the_reactor_runs_again_from_zero(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for i in 0..10 {
        let payload = if i == 4 {
            json!({"poison": true})
        } else {
            json!({"i": i})
        };
        store
            .append(&stream, ExpectedVersion::Any, vec![ping(tenant, payload)])
            .await
            .unwrap();
    }
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
    };
    let runner = ReactorRunner::new(store.clone(), PingPong, 3).with_retry(retry);
    runner.catch_up().await.unwrap();
    assert_eq!(
        count(&pool, "Pong").await,
        18,
        "two pongs for each of the 9 good pings"
    );

    let parked = projections::checkpoint::parked(&pool, Some("ping_pong"))
        .await
        .unwrap();
    assert_eq!(parked.iter().map(|p| p.position).collect::<Vec<_>>(), [5]);

    // A crash after appending but before moving the checkpoint, or a deliberate replay from 0:
    sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE projector = 'ping_pong'")
        .execute(&pool)
        .await
        .unwrap();
    let head_before = store.head_position().await.unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(
        count(&pool, "Pong").await,
        18,
        "a replay appends nothing new"
    );
    assert_eq!(store.head_position().await.unwrap(), head_before);

    let first_ping = store.read_all(0, 1).await.unwrap().remove(0);
    let pongs = store
        .read_stream(&StreamId::alert(&first_ping.event_id.to_string()), 1, 10)
        .await
        .unwrap();
    assert_eq!(pongs.len(), 2);
    assert_eq!(pongs[0].event_id, runner.derived_id(&first_ping, 0));
    assert_eq!(pongs[0].metadata.causation_id, Some(first_ping.event_id.0));
    assert_eq!(pongs[0].metadata.source.as_deref(), Some("ping_pong"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_live_reactor_answers_new_events_as_they_are_committed(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let live =
        tokio::spawn(ReactorRunner::new(store.clone(), PingPong, 10).run(std::future::pending()));
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for _ in 0..3 {
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![ping(TenantId::new(), json!({}))],
            )
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&pool, "Pong").await < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the live reactor did not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.abort();
    assert_eq!(count(&pool, "Pong").await, 6);
}

/// Echoes every `Ping` onto one shared stream with an exact expected version, counted from what
/// the stream holds (its context); a ping marked `conflict` expects a version that cannot be.
struct Echo;

impl Reactor for Echo {
    type Context = i64;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Ping"])
    }

    async fn load(&self, pool: &PgPool, events: &[RecordedEvent]) -> Result<i64, sqlx::Error> {
        assert!(events.iter().all(|e| e.event_type == "Ping"));
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = 'alert-echo'")
            .fetch_one(pool)
            .await
    }

    fn react(
        &self,
        version: &mut i64,
        event: &RecordedEvent,
        _: DateTime<Utc>,
    ) -> Result<Vec<Reaction>, FoldError> {
        let expected = if event.payload["conflict"] == true {
            ExpectedVersion::Exact(*version + 100)
        } else {
            *version += 1;
            ExpectedVersion::Exact(*version - 1)
        };
        Ok(vec![Reaction {
            stream_id: StreamId::alert("echo"),
            expected,
            event: NewEvent {
                event_type: "Echo".into(),
                payload: json!({"ping": event.payload["i"]}),
                ..ping(event.tenant_id, json!({}))
            },
        }])
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_filtered_reactor_appends_a_batch_in_order_and_parks_only_what_conflicts(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let tenant = TenantId::new();
    let streams: Vec<StreamId> = (0..5)
        .map(|_| StreamId::system(uuid::Uuid::now_v7()))
        .collect();
    for i in 0..40 {
        let payload = json!({"i": i, "conflict": i == 13});
        let mut events = vec![ping(tenant, payload)];
        events[0].event_type = if i % 3 == 0 { "Heartbeat" } else { "Ping" }.into();
        store
            .append(&streams[i % 5], ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let runner = ReactorRunner::new(store.clone(), Echo, 8);
    let reached = runner.catch_up().await.unwrap();
    assert_eq!(
        reached,
        store.head_position().await.unwrap(),
        "the checkpoint passes the ignored events and the echoes too"
    );

    let echoes = store
        .read_stream(&StreamId::alert("echo"), 1, 100)
        .await
        .unwrap();
    let pinged: Vec<i64> = echoes
        .iter()
        .map(|e| e.payload["ping"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..40).filter(|i| i % 3 != 0 && *i != 13).collect();
    assert_eq!(pinged, expected, "one echo per ping, in log order");
    let parked = projections::checkpoint::parked(&pool, Some("echo"))
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, 14, "the conflicting ping, and only it");

    // Running again appends nothing, however far back the checkpoint goes.
    sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE projector = 'echo'")
        .execute(&pool)
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(count(&pool, "Echo").await, expected.len() as i64);
}
