//! Leases: at most one live process runs a projector at a time.
//!
//! A lease is a row with a holder and an expiry. A process takes a lease that is free or expired,
//! renews it well before it expires, and gives it up when it stops. A process that dies stops
//! renewing; once the lease expires, another process takes over from the checkpoint. Leases
//! avoid duplicate work; exactly-once does not depend on them (the checkpoint row lock does that).

use std::time::Duration;

use sqlx::PgPool;

/// Takes or renews the lease on `projector` for `holder`; true when `holder` holds it now.
pub async fn acquire(
    pool: &PgPool,
    projector: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let held: Option<String> = sqlx::query_scalar(
        "INSERT INTO projection_leases (projector, holder, expires_at) \
         VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
         ON CONFLICT (projector) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE projection_leases.holder = excluded.holder OR projection_leases.expires_at < now() \
         RETURNING holder",
    )
    .bind(projector)
    .bind(holder)
    .bind(ttl.as_millis() as f64)
    .fetch_optional(pool)
    .await?;
    Ok(held.is_some())
}

/// Gives the lease up (if `holder` holds it), so another process can take over at once.
pub async fn release(pool: &PgPool, projector: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM projection_leases WHERE projector = $1 AND holder = $2")
        .bind(projector)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

/// The current holder of a projector's lease, if it has not expired.
pub async fn holder(pool: &PgPool, projector: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT holder FROM projection_leases WHERE projector = $1 AND expires_at > now()",
    )
    .bind(projector)
    .fetch_optional(pool)
    .await
}
