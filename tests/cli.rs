//! The operator commands of the `fleetlog` binary, against a real database.

use std::process::Output;

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{HeartbeatReceived, NewEvent, StreamId, TenantId};
use projections::{EventTypeCounts, ProjectionRunner};
use sqlx::PgPool;

fn database_url(pool: &PgPool) -> String {
    let master = std::env::var("DATABASE_URL").expect("the test command sets DATABASE_URL");
    let database = pool
        .connect_options()
        .get_database()
        .expect("a test database")
        .to_owned();
    format!(
        "{}/{database}",
        master.rsplit_once('/').expect("a URL with a database").0
    )
}

async fn fleetlog(pool: &PgPool, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetlog"))
        .args(args)
        .env("DATABASE_URL", database_url(pool))
        .env("LOG_LEVEL", "warn")
        .output()
        .await
        .expect("the fleetlog binary runs")
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn status_and_parked_commands_report_and_act_on_projectors(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for _ in 0..3 {
        let event = NewEvent::new(
            TenantId::new(),
            &HeartbeatReceived {
                agent_version: None,
            },
            Utc::now(),
        );
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    ProjectionRunner::new(store.clone(), EventTypeCounts, 10)
        .catch_up(Some(2))
        .await
        .unwrap();

    let out = fleetlog(&pool, &["status", "--json", "--sample-s", "0"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["projector"], "event_type_counts");
    assert_eq!(
        (
            status[0]["position"].as_i64(),
            status[0]["lag_positions"].as_i64()
        ),
        (Some(2), Some(1))
    );

    let out = fleetlog(&pool, &["parked", "list", "--json"]).await;
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    let out = fleetlog(&pool, &["parked", "skip", "event_type_counts", "2"]).await;
    assert!(
        !out.status.success(),
        "skipping a position that is not parked must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no parked event"));
    let out = fleetlog(&pool, &["parked", "retry", "nope", "2"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no projector named"));
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn rebuild_and_replay_commands_build_read_models_from_the_log(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for _ in 0..5 {
        let event = NewEvent::new(
            TenantId::new(),
            &HeartbeatReceived {
                agent_version: None,
            },
            Utc::now(),
        );
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let sum = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT coalesce(sum(events), 0)::bigint FROM {table}"
            ))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    let out = fleetlog(
        &pool,
        &[
            "replay",
            "event_type_counts",
            "--until",
            "2",
            "--into",
            "as_of_two",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sum("as_of_two.event_type_counts").await, 2);
    let out = fleetlog(
        &pool,
        &[
            "replay",
            "event_type_counts",
            "--until",
            "2999-01-01T00:00:00Z",
            "--into",
            "as_of_later",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sum("as_of_later.event_type_counts").await, 5);
    let out = fleetlog(
        &pool,
        &[
            "replay",
            "event_type_counts",
            "--until",
            "last tuesday",
            "--into",
            "x",
        ],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither a position nor an RFC 3339 time")
    );

    let out = fleetlog(
        &pool,
        &["rebuild", "event_type_counts", "--batch-size", "2"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("swapped it in at position 5"));
    assert_eq!(sum("public.event_type_counts").await, 5);
}
