//! SQL of the runtime's own tables: checkpoints and parked events.

use events_schema::RecordedEvent;
use sqlx::{PgConnection, PgPool};

/// Creates the projector's checkpoint at 0 if it has none, and returns its position.
pub async fn ensure(pool: &PgPool, projector: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projector) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(projector)
    .execute(pool)
    .await?;
    sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projector = $1")
        .bind(projector)
        .fetch_one(pool)
        .await
}

/// Like [`ensure`], inside a transaction.
pub async fn ensure_in(tx: &mut PgConnection, projector: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projector) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(projector)
    .execute(tx)
    .await?;
    Ok(())
}

/// Locks the checkpoint row for the rest of the transaction and returns its position. Two
/// runners of one projector serialize here, and neither applies an event twice.
pub async fn lock(tx: &mut PgConnection, projector: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projector = $1 FOR UPDATE",
    )
    .bind(projector)
    .fetch_one(tx)
    .await
}

/// Moves the checkpoint, in the transaction that wrote the read-model rows.
pub async fn advance(
    tx: &mut PgConnection,
    projector: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE projector = $1",
    )
    .bind(projector)
    .bind(position)
    .execute(tx)
    .await?;
    Ok(())
}

/// Parks an event the projector could not apply and moves the checkpoint past it.
pub async fn park(
    tx: &mut PgConnection,
    projector: &str,
    event: &RecordedEvent,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO parked_events (projector, position, event_id, event_type, error, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (projector, position) DO UPDATE \
         SET error = excluded.error, attempts = parked_events.attempts + excluded.attempts, parked_at = now()",
    )
    .bind(projector)
    .bind(event.position)
    .bind(event.event_id.0)
    .bind(&event.event_type)
    .bind(error)
    .bind(attempts as i32)
    .execute(&mut *tx)
    .await?;
    advance(tx, projector, event.position).await
}

/// Records another failed attempt at a parked event.
pub async fn note_failed_retry(
    pool: &PgPool,
    projector: &str,
    position: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE parked_events SET error = $3, attempts = attempts + 1, parked_at = now() \
         WHERE projector = $1 AND position = $2",
    )
    .bind(projector)
    .bind(position)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// One parked event, as `fleetlog parked list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ParkedEvent {
    /// The projector that could not apply it.
    pub projector: String,
    /// Its position in the log.
    pub position: i64,
    /// Its type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: i32,
}

/// Every parked event of a projector (of all projectors when `None`), oldest first.
pub async fn parked(
    pool: &PgPool,
    projector: Option<&str>,
) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projector, position, event_type, error, attempts FROM parked_events \
         WHERE $1::text IS NULL OR projector = $1 ORDER BY projector, position",
    )
    .bind(projector)
    .fetch_all(pool)
    .await
}

/// Forgets a parked event (it stays unapplied); false when there was none.
pub async fn skip(pool: &PgPool, projector: &str, position: i64) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM parked_events WHERE projector = $1 AND position = $2")
        .bind(projector)
        .bind(position)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}
