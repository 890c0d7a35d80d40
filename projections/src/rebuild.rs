//! Building a projector's read model somewhere else than where it is served:
//!
//! - [`rebuild`]: from position 0 into shadow tables while the live read model keeps serving,
//!   then swap them in with one transaction;
//! - [`replay_into_schema`]: as of a point in history, into a schema of its own, to be queried
//!   side by side with today's.
//!
//! Both work the same way: a schema holds empty copies of the projector's tables plus a
//! checkpoint table of its own, and the projector runs on connections whose `search_path` puts
//! that schema first. The projector's SQL is unchanged: unqualified names resolve to the copies,
//! and `events` still resolves to the one log.

use command_side::event_store::{GroupCommitConfig, PgEventStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::checkpoint;
use crate::projector::Projector;
use crate::runtime::{checkpoint_key, ProjectionRunner, RuntimeError};

/// Tables of the runtime itself that a separate build needs its own copy of.
const RUNTIME_TABLES: [&str; 2] = ["projection_checkpoints", "parked_events"];

/// Why a rebuild or replay could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The schema name is not a plain lower-case identifier.
    #[error("invalid schema name {0:?}: use lower-case letters, digits and _ (at most 63)")]
    InvalidSchema(String),
    /// Another rebuild of the same projector is running.
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    /// The target schema exists already (replays never overwrite).
    #[error("schema {0} already exists; drop it or choose another name")]
    SchemaExists(String),
    /// Running the projector failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Progress of a build: `(position reached, position to reach)`.
pub type Progress<'a> = &'a (dyn Fn(i64, i64) + Send + Sync);

/// Checks a schema name: a plain lower-case identifier, so it can be spliced into DDL.
pub fn check_schema_name(name: &str) -> Result<(), RebuildError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_")
        && name != "public";
    valid
        .then_some(())
        .ok_or_else(|| RebuildError::InvalidSchema(name.to_owned()))
}

/// Creates `schema` with empty copies (columns, defaults, constraints, indexes) of the
/// projector's tables and of the runtime's tables.
async fn create_schema<P: Projector>(
    pool: &PgPool,
    schema: &str,
    projector: &P,
) -> Result<(), RebuildError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(pool)
            .await?;
    if exists {
        return Err(RebuildError::SchemaExists(schema.to_owned()));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in projector.tables().iter().chain(RUNTIME_TABLES.iter()) {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
        // LIKE does not copy storage parameters (a fill factor that keeps updates HOT).
        let options: Option<Vec<String>> = sqlx::query_scalar(&format!(
            "SELECT reloptions FROM pg_class WHERE oid = 'public.{table}'::regclass"
        ))
        .fetch_one(&mut *tx)
        .await?;
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} SET ({})",
                options.join(", ")
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A store whose connections see `schema` first.
fn store_in_schema(pool: &PgPool, schema: &str) -> PgEventStore {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let search_path = format!("{schema},public");
    let options = options.options([("search_path", search_path.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(options);
    PgEventStore::start(pool, GroupCommitConfig::default())
}

/// Runs the projector in `store` up to `until`, reporting progress every few batches.
async fn build<P: Projector>(
    store: &PgEventStore,
    projector: P,
    batch_size: i64,
    until: i64,
    progress: Progress<'_>,
) -> Result<i64, RuntimeError> {
    let runner = ProjectionRunner::new(store.clone(), projector, batch_size);
    let mut position = checkpoint::ensure(store.pool(), runner.projector().name()).await?;
    progress(position, until);
    while position < until {
        let stop = (position + 20 * batch_size).min(until);
        let reached = runner.catch_up(Some(stop)).await?;
        if reached == position {
            break;
        }
        position = reached;
        progress(position, until);
    }
    Ok(position)
}

/// Builds the projector's read model as of `until` (a position) into `schema`, which must not
/// exist yet. Returns the position reached.
pub async fn replay_into_schema<P: Projector>(
    pool: &PgPool,
    make: impl Fn() -> P,
    schema: &str,
    until: i64,
    batch_size: i64,
    progress: Progress<'_>,
) -> Result<i64, RebuildError> {
    check_schema_name(schema)?;
    create_schema(pool, schema, &make()).await?;
    let store = store_in_schema(pool, schema);
    let reached = build(&store, make(), batch_size, until, progress).await?;
    store.pool().close().await;
    Ok(reached)
}

/// The last position recorded at or before `time`.
pub async fn position_at(
    pool: &PgPool,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= $1")
        .bind(time)
        .fetch_one(pool)
        .await
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The position the swapped-in read model was at when it went live.
    pub swapped_at: i64,
}

/// Rebuilds the projector from position 0 into shadow tables while the live read model keeps
/// serving, catches up with the head, and swaps the shadow tables in with one transaction (which
/// briefly waits for the live runner's current batch). The live runner goes on from the swapped
/// checkpoint; the old tables are dropped.
pub async fn rebuild<P: Projector>(
    pool: &PgPool,
    make: impl Fn() -> P,
    batch_size: i64,
    progress: Progress<'_>,
) -> Result<RebuildReport, RebuildError> {
    // One rebuild of a projector at a time: a session advisory lock, held on a connection of its
    // own for the whole rebuild and released explicitly (a pooled session outlives the call).
    let name = make().name();
    let lock_key = format!("fleetlog_rebuild_{name}");
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(&lock_key)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(RebuildError::AlreadyRunning(name.to_owned()));
    }
    let result = rebuild_locked(pool, make, batch_size, progress).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&lock_key)
        .execute(&mut *lock)
        .await;
    if unlocked.is_err() {
        // The lock must not outlive us in the pool: close the session instead.
        let _ = lock.close().await;
    }
    result
}

async fn rebuild_locked<P: Projector>(
    pool: &PgPool,
    make: impl Fn() -> P,
    batch_size: i64,
    progress: Progress<'_>,
) -> Result<RebuildReport, RebuildError> {
    let name = make().name();
    let shadow = format!("fleetlog_rebuild_{name}");
    let retired = format!("fleetlog_retired_{name}");
    check_schema_name(&shadow)?;
    for schema in [&shadow, &retired] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await?;
    }
    create_schema(pool, &shadow, &make()).await?;
    let store = store_in_schema(pool, &shadow);
    loop {
        let head: i64 = sqlx::query_scalar("SELECT last_position FROM event_log_head WHERE id = 1")
            .fetch_one(pool)
            .await?;
        let reached = build(&store, make(), batch_size, head, progress).await?;
        // Swap only when the shadow is close to the head, so the swap transaction is short.
        let head: i64 = sqlx::query_scalar("SELECT last_position FROM event_log_head WHERE id = 1")
            .fetch_one(pool)
            .await?;
        if head - reached <= batch_size {
            break;
        }
    }
    store.pool().close().await;

    let projector = make();
    let keys: Vec<String> = (0..projector.partitions().max(1))
        .map(|p| checkpoint_key(name, p, projector.partitions()))
        .collect();
    let mut tx = pool.begin().await?;
    for key in &keys {
        checkpoint::ensure_in(&mut tx, key).await?;
        checkpoint::lock(&mut tx, key).await?; // waits for the live runners' batches, then holds them off
    }
    let shadow_position: i64 = sqlx::query_scalar(&format!(
        "SELECT position FROM {shadow}.projection_checkpoints WHERE projector = $1"
    ))
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    // Apply, inside the swap, the few events that arrived since the shadow's last batch.
    sqlx::query(&format!("SET LOCAL search_path = {shadow}, public"))
        .execute(&mut *tx)
        .await?;
    let swapped_at = ProjectionRunner::new(
        PgEventStore::start(pool.clone(), GroupCommitConfig::default()),
        make(),
        batch_size,
    )
    .catch_up_in(&mut tx, shadow_position)
    .await?;
    sqlx::query("SET LOCAL search_path = public")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {retired}"))
        .execute(&mut *tx)
        .await?;
    for table in projector.tables() {
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {shadow}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    // Parked events found by the rebuild replace the old ones (keyed by the projector's name).
    sqlx::query("DELETE FROM parked_events WHERE projector = $1 OR projector = ANY($2)")
        .bind(name)
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO parked_events SELECT * FROM {shadow}.parked_events WHERE projector = $1"
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    for key in &keys {
        checkpoint::advance(&mut tx, key, swapped_at).await?;
    }
    sqlx::query(&format!("DROP SCHEMA {shadow} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(RebuildReport { swapped_at })
}
