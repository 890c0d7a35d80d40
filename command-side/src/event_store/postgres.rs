//! [`PgEventStore`]: the event store on PostgreSQL.
//!
//! Appends go through the group-commit writer ([`super::writer`]); reads go straight to the pool.
//! Every append transaction, in any process, locks the single `event_log_head` row before it
//! writes, so writers commit one after another: positions are dense and commit-ordered, and a
//! reader that sees position N sees every position below it
//! (docs/adr/001-commit-ordered-positions.md).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use events_schema::{EventId, NewEvent, RecordedEvent, StreamId};
use futures::TryStreamExt;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::writer::{run_writer, GroupCommitConfig, PendingAppend};
use super::{AppendOutcome, EventStore, EventStoreError, ExpectedVersion, Result};

/// The `LISTEN`/`NOTIFY` channel on which every commit announces the new head position.
pub const EVENTS_CHANNEL: &str = "fleetlog_events"; // also named in fleetlog_append_batch()

/// The PostgreSQL event store. Cheap to clone; every clone feeds the same writer task.
#[derive(Clone)]
pub struct PgEventStore {
    pool: PgPool,
    queue: mpsc::Sender<PendingAppend>,
}

impl PgEventStore {
    /// Starts the writer task on the current Tokio runtime. It stops when every clone of the
    /// store is dropped, after writing what was queued.
    ///
    /// Reads use `pool`; the writer gets connections of its own (same options, at most two),
    /// which nothing else touches. A connection that other code returned to the shared pool in a
    /// bad state (a future cancelled during `BEGIN` leaves the session inside a transaction that
    /// sqlx does not know about, sqlx issue #4393) can then never swallow acknowledged appends.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let writer_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with((*pool.connect_options()).clone());
        tokio::spawn(run_writer(writer_pool, receiver, config));
        Self { pool, queue }
    }

    /// The pool the store reads with.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The last position handed out (committed).
    pub async fn head_position(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT last_position FROM event_log_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Like [`EventStore::read_all`], keeping only events whose type is in `event_types`
    /// (all types when empty).
    pub async fn read_all_of_types(
        &self,
        after_position: i64,
        limit: i64,
        event_types: &[String],
    ) -> Result<Vec<RecordedEvent>> {
        if event_types.is_empty() {
            return read_all_on(&self.pool, after_position, limit).await;
        }
        let sql = format!(
            "{SELECT_EVENTS} WHERE position > $1 AND event_type = ANY($3) ORDER BY position LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after_position)
            .bind(limit)
            .bind(event_types);
        fetch_events(rows, &self.pool).await
    }
}

impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        check_append(&events)?;
        let (reply, answer) = oneshot::channel();
        let pending = PendingAppend {
            stream_id: stream.clone(),
            expected,
            events,
            reply,
            enqueued_at: Instant::now(),
        };
        metrics::gauge!("fleetlog_append_queue_depth").increment(1.0);
        if self.queue.send(pending).await.is_err() {
            metrics::gauge!("fleetlog_append_queue_depth").decrement(1.0);
            return Err(EventStoreError::Unavailable);
        }
        answer.await.map_err(|_| EventStoreError::Unavailable)?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(stream.as_str())
            .bind(from_version)
            .bind(limit);
        fetch_events(rows, &self.pool).await
    }

    async fn read_all(&self, after_position: i64, limit: i64) -> Result<Vec<RecordedEvent>> {
        self.read_all_of_types(after_position, limit, &[]).await
    }
}

/// The stored events with these ids, in position order (ids not stored are left out).
pub async fn read_by_ids_on<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    event_ids: &[uuid::Uuid],
) -> Result<Vec<RecordedEvent>> {
    let sql = format!("{SELECT_EVENTS} WHERE event_id = ANY($1) ORDER BY position");
    fetch_events(sqlx::query(&sql).bind(event_ids), executor).await
}

/// Up to `limit` events after `after_position`, read through `executor` (a pool, or a
/// connection inside its transaction).
pub async fn read_all_on<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    after_position: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>> {
    let sql = format!("{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = sqlx::query(&sql).bind(after_position).bind(limit);
    fetch_events(rows, executor).await
}

/// Runs `query` and decodes each event as its row arrives, so that decoding (large JSON
/// payloads) overlaps PostgreSQL producing the rows after it.
async fn fetch_events<'e, 'q: 'e, 'c: 'e>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    executor: impl sqlx::PgExecutor<'c> + 'e,
) -> Result<Vec<RecordedEvent>> {
    let mut rows = query.fetch(executor);
    let mut events = Vec::new();
    while let Some(row) = rows.try_next().await? {
        events.push(recorded_event_from_row(&row)?);
    }
    Ok(events)
}

/// The last committed position, read through `executor`. Every append moves the head in the
/// transaction that inserts its events, and appends commit in position order, so once this
/// returns `h`, every later snapshot sees every position up to `h`
/// (docs/adr/001-commit-ordered-positions.md). Readers that filter the log use it to know how far
/// a read that found nothing has still covered the log.
pub async fn head_position_on<'c>(executor: impl sqlx::PgExecutor<'c>) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT last_position FROM event_log_head WHERE id = 1")
            .fetch_one(executor)
            .await?,
    )
}

/// Which events, and how much of each, a reader of the log asks for; lets a projector that folds a
/// few event types, or never looks at payloads, skip the rows and the bytes it would ignore.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFilter<'a> {
    /// Only events of these types; every type when `None`.
    pub event_types: Option<&'a [&'a str]>,
    /// Leave out the payload (returned as JSON `null`) and the opaque data (returned as `None`),
    /// for readers that only need an event's envelope (type, tenant, stream, position, times).
    pub skip_payloads: bool,
}

/// Up to `limit` events with `after_position < position <= up_to` (no upper bound when `up_to` is
/// `None`) that pass `filter`, in position order, read through `executor` (a pool, or a connection
/// inside its transaction). Bounding the range keeps a filtered read from scanning the whole
/// remaining log when few events match.
pub async fn read_range_on<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    after_position: i64,
    up_to: Option<i64>,
    limit: i64,
    filter: ReadFilter<'_>,
) -> Result<Vec<RecordedEvent>> {
    let select = if filter.skip_payloads {
        SELECT_EVENT_ENVELOPES
    } else {
        SELECT_EVENTS
    };
    // Only the conditions in use are in the SQL, so `position <= $n` is always an index bound
    // (a generic plan of `$n IS NULL OR position <= $n` would scan on to the end of the log).
    let mut sql = format!("{select} WHERE position > $1");
    let mut parameters = 2;
    if up_to.is_some() {
        parameters += 1;
        sql.push_str(&format!(" AND position <= ${parameters}"));
    }
    if filter.event_types.is_some() {
        parameters += 1;
        sql.push_str(&format!(" AND event_type = ANY(${parameters})"));
    }
    sql.push_str(" ORDER BY position LIMIT $2");
    let mut query = sqlx::query(&sql).bind(after_position).bind(limit);
    if let Some(up_to) = up_to {
        query = query.bind(up_to);
    }
    if let Some(types) = filter.event_types {
        query = query.bind(types);
    }
    fetch_events(query, executor).await
}

/// Rejects appends that no state of the store could accept.
fn check_append(events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(EventStoreError::InvalidAppend(
            "an append needs at least one event".into(),
        ));
    }
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if !seen.insert(event.event_id) {
            return Err(EventStoreError::InvalidAppend(format!(
                "event id {} appears twice",
                event.event_id
            )));
        }
        if event.event_type.is_empty()
            || event.schema_version == 0
            || i32::try_from(event.schema_version).is_err()
        {
            return Err(EventStoreError::InvalidAppend(
                "every event needs a type and a schema version (1 to 2^31-1)".into(),
            ));
        }
    }
    Ok(())
}

const SELECT_EVENTS: &str =
    "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
     tenant_id, payload, data, metadata, occurred_at, recorded_at FROM events";

/// [`SELECT_EVENTS`] without the payload and the opaque data (see [`ReadFilter::skip_payloads`]).
const SELECT_EVENT_ENVELOPES: &str =
    "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
     tenant_id, 'null'::jsonb AS payload, NULL::bytea AS data, metadata, occurred_at, recorded_at \
     FROM events";

/// Decodes one row of [`SELECT_EVENTS`] (or [`SELECT_EVENT_ENVELOPES`]).
pub(crate) fn recorded_event_from_row(row: &PgRow) -> Result<RecordedEvent> {
    let position: i64 = row.try_get("position")?;
    let corrupt = |reason: String| EventStoreError::CorruptRow { position, reason };
    let stream_id: String = row.try_get("stream_id")?;
    let schema_version: i32 = row.try_get("schema_version")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    Ok(RecordedEvent {
        position,
        event_id: EventId(row.try_get("event_id")?),
        stream_id: StreamId::parse(&stream_id).map_err(|e| corrupt(e.to_string()))?,
        stream_version: row.try_get("stream_version")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(e.to_string()))?,
        tenant_id: events_schema::TenantId(row.try_get("tenant_id")?),
        payload: row.try_get("payload")?,
        data: row.try_get("data")?,
        metadata: serde_json::from_value(metadata).map_err(|e| corrupt(e.to_string()))?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}
