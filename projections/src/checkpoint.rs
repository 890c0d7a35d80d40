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

/// One parked event, as `fleetlog parked list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

/// Every parked event of a projector, oldest first.
pub async fn parked(pool: &PgPool, projector: &str) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projector, position, event_type, error, attempts FROM parked_events \
         WHERE projector = $1 ORDER BY position",
    )
    .bind(projector)
    .fetch_all(pool)
    .await
}
