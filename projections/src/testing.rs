//! The determinism helper every projector's tests use: the read model a projector builds live,
//! in small batches with restarts, must equal row for row the one a rebuild from position 0 builds.

use command_side::event_store::PgEventStore;
use sqlx::PgPool;

use crate::projector::Projector;
use crate::runtime::ProjectionRunner;

/// Every row of `table`, as JSON text, sorted: a comparable snapshot.
pub async fn table_rows(pool: &PgPool, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT row_to_json(t)::text FROM {table} t ORDER BY 1"
    ))
    .fetch_all(pool)
    .await
}

/// Snapshots of every table of `projector`.
pub async fn snapshot<P: Projector>(
    pool: &PgPool,
    projector: &P,
) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    let mut tables = Vec::new();
    for table in projector.tables() {
        tables.push(((*table).to_owned(), table_rows(pool, table).await?));
    }
    Ok(tables)
}

/// Empties the projector's tables and removes its checkpoint and parked events.
pub async fn reset<P: Projector>(pool: &PgPool, projector: &P) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in projector.tables() {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    for table in ["projection_checkpoints", "parked_events"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE projector = $1 OR projector LIKE $1 || '#%'"
        ))
        .bind(projector.name())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Runs `make()` live over the stored history in batches of `live_batch` events (every partition,
/// when it is partitioned), restarting it (new runners, resuming from their checkpoints) after
/// each third of the log; then rebuilds from position 0 in one unpartitioned pass; panics unless
/// both give exactly the same rows. Returns the snapshot.
pub async fn assert_rebuild_matches_live<P: Projector>(
    store: &PgEventStore,
    make: impl Fn() -> P,
    live_batch: i64,
) -> Vec<(String, Vec<String>)> {
    let pool = store.pool();
    let head = store.head_position().await.expect("head");
    for stop in [head / 3, 2 * head / 3, head] {
        for partition in 0..make().partitions().max(1) {
            let runner =
                ProjectionRunner::new(store.clone(), make(), live_batch).for_partition(partition);
            let reached = runner.catch_up(Some(stop)).await.expect("live run");
            assert_eq!(reached, stop, "live run stopped early");
        }
    }
    let live = snapshot(pool, &make()).await.expect("live snapshot");

    reset(pool, &make()).await.expect("reset");
    let rebuilt = ProjectionRunner::new(store.clone(), make(), 10_000);
    assert_eq!(rebuilt.catch_up(None).await.expect("rebuild"), head);
    let rebuilt = snapshot(pool, &make()).await.expect("rebuilt snapshot");
    assert_eq!(
        live, rebuilt,
        "a rebuild from position 0 differs from the live read model"
    );
    live
}
