//! The operator commands of the `fleetlog` binary, against a real database.

mod support;

use std::process::Output;

use command_side::event_store::{GroupCommitConfig, PgEventStore};
use projections::{EventTypeCounts, ProjectionRunner};
use sqlx::PgPool;

async fn fleetlog(pool: &PgPool, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetlog"))
        .args(args)
        .env("DATABASE_URL", support::database_url(pool))
        .env("LOG_LEVEL", "warn")
        .output()
        .await
        .expect("the fleetlog binary runs")
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn status_and_parked_commands_report_and_act_on_projectors(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    support::append_heartbeats(&store, 3, 1, 1).await;
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
    support::append_heartbeats(&store, 5, 1, 1).await;
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
