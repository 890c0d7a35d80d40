//! Where every projector is: position, lag, parked events, lease holder.

use serde::Serialize;
use sqlx::PgPool;

/// One projector's progress, as `fleetlog status` and `GET /api/admin/projections` show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ProjectorStatus {
    /// Projector name.
    pub projector: String,
    /// Last position applied.
    pub position: i64,
    /// Last position in the log.
    pub head: i64,
    /// Events not yet applied.
    pub lag_positions: i64,
    /// Age of the oldest event not yet applied, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events parked for this projector.
    pub parked: i64,
    /// The process running it, if any holds a live lease.
    pub lease_holder: Option<String>,
}

/// The status of every projector that has a checkpoint, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<ProjectorStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.projector, c.position, h.last_position AS head, \
                h.last_position - c.position AS lag_positions, \
                coalesce((SELECT extract(epoch FROM now() - e.recorded_at)::float8 \
                          FROM events e WHERE e.position = c.position + 1), 0) AS lag_seconds, \
                (SELECT count(*) FROM parked_events p WHERE p.projector = c.projector) AS parked, \
                (SELECT l.holder FROM projection_leases l \
                  WHERE l.projector = c.projector AND l.expires_at > now()) AS lease_holder \
         FROM projection_checkpoints c CROSS JOIN event_log_head h \
         WHERE h.id = 1 ORDER BY c.projector",
    )
    .fetch_all(pool)
    .await
}
