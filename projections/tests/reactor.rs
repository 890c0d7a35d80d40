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
    fn name(&self) -> &'static str {
        "ping_pong"
    }

    fn react(&self, event: &RecordedEvent, now: DateTime<Utc>) -> Result<Vec<Reaction>, FoldError> {
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
