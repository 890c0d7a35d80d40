//! [`PgEventStore`]: the event store on PostgreSQL, with group commit.
//!
//! Every `append` is queued to one writer task. The writer takes whatever is queued (up to
//! [`GroupCommitConfig::max_batch_events`]) and writes it in one transaction. Every append
//! transaction, in any process, locks the single `event_log_head` row before it writes, so
//! writers commit one after another: positions are dense and commit-ordered, and a reader that
//! sees position N sees every position below it (docs/adr/001-commit-ordered-positions.md).
//!
//! - **Fast path** (one round trip): the writer remembers the head it last wrote and the stream
//!   versions as of that head. [`plan_batch`] decides every append's fate against that memory, and
//!   `fleetlog_append_batch()` writes the planned rows with one `INSERT ... SELECT FROM UNNEST`
//!   only if, under the head lock, the head is still the remembered one; it moves the head and
//!   `NOTIFY`s tailing readers in the same transaction.
//! - **Careful path**: when the head moved (another process appended), an event id was already
//!   stored (a retry), or anything failed, the batch is planned again inside one transaction from
//!   freshly read ids and versions. If that fails as a whole (a row PostgreSQL refuses), each
//!   append is retried alone, so one bad append cannot fail the others.
//!
//! Every caller gets its own answer only after the transaction holding its events committed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events_schema::{EventId, NewEvent, RecordedEvent, StreamId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::plan::{plan_batch, AppendIntent, BatchPlan, PlannedRow, StoredEvent};
use super::{AppendOutcome, EventStore, EventStoreError, ExpectedVersion, Result};

/// The `LISTEN`/`NOTIFY` channel on which every commit announces the new head position.
pub const EVENTS_CHANNEL: &str = "fleetlog_events"; // also named in fleetlog_append_batch()

/// How appends are coalesced into transactions.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most events written in one transaction (an append is never split).
    pub max_batch_events: usize,
    /// How long the writer may wait for more appends once it has some; zero means it writes
    /// whatever is queued at once (appends still coalesce while the previous batch commits).
    pub max_wait: Duration,
    /// Appends that may wait in the queue before `append` callers are made to wait.
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            max_wait: Duration::ZERO,
            queue_capacity: 16_384,
        }
    }
}

/// The PostgreSQL event store. Cheap to clone; every clone feeds the same writer task.
#[derive(Clone)]
pub struct PgEventStore {
    pool: PgPool,
    queue: mpsc::Sender<PendingAppend>,
}

struct PendingAppend {
    stream_id: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<AppendOutcome>>,
    enqueued_at: Instant,
}

impl PgEventStore {
    /// Starts the writer task on the current Tokio runtime. It stops when every clone of the
    /// store is dropped, after writing what was queued.
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(run_writer(pool.clone(), receiver, config));
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
        let rows = if event_types.is_empty() {
            sqlx::query(&format!(
                "{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT $2"
            ))
            .bind(after_position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(&format!(
                "{SELECT_EVENTS} WHERE position > $1 AND event_type = ANY($3) ORDER BY position LIMIT $2"
            ))
            .bind(after_position)
            .bind(limit)
            .bind(event_types)
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter().map(recorded_event_from_row).collect()
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
        let rows = sqlx::query(&format!(
            "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
        ))
        .bind(stream.as_str())
        .bind(from_version)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recorded_event_from_row).collect()
    }

    async fn read_all(&self, after_position: i64, limit: i64) -> Result<Vec<RecordedEvent>> {
        self.read_all_of_types(after_position, limit, &[]).await
    }
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
        if event.event_type.is_empty() || event.schema_version == 0 {
            return Err(EventStoreError::InvalidAppend(
                "every event needs a type and a schema version".into(),
            ));
        }
    }
    Ok(())
}

const SELECT_EVENTS: &str =
    "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
     tenant_id, payload, data, metadata, occurred_at, recorded_at FROM events";

/// Decodes one row of [`SELECT_EVENTS`].
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

async fn run_writer(
    pool: PgPool,
    mut queue: mpsc::Receiver<PendingAppend>,
    config: GroupCommitConfig,
) {
    let mut known = KnownVersions::default();
    let mut previous_batch_appends = 0usize;
    while let Some(first) = queue.recv().await {
        let mut batch_events = first.events.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + config.max_wait;
        // Linger only while the batch is smaller than the last one: under steady load the
        // callers just answered are about to come back, and one full batch beats a tiny one
        // followed by a full one. When load drops, `max_wait` bounds the extra latency.
        while batch_events < config.max_batch_events {
            let next = match queue.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Empty)
                    if !config.max_wait.is_zero()
                        && batch.len() * 10 < previous_batch_appends * 9 =>
                {
                    tokio::time::timeout_at(deadline.into(), queue.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            let Some(next) = next else { break };
            batch_events += next.events.len();
            batch.push(next);
        }
        previous_batch_appends = batch.len();
        metrics::gauge!("fleetlog_append_queue_depth").decrement(batch.len() as f64);
        let span =
            tracing::info_span!("append_batch", appends = batch.len(), events = batch_events);
        commit_batch(&pool, &mut known, batch)
            .instrument(span)
            .await;
    }
}

/// The writer's knowledge of stream versions as of one head position. While the head is still
/// there when the writer takes the lock, nobody else has written, and the versions are exact:
/// a batch then costs one round trip. Any surprise clears it.
#[derive(Debug, Default)]
struct KnownVersions {
    head: Option<i64>,
    versions: HashMap<String, i64>,
}

/// Bound on remembered streams; past it the memory starts over.
const MAX_KNOWN_STREAMS: usize = 1_000_000;

impl KnownVersions {
    fn forget(&mut self) {
        self.head = None;
        self.versions.clear();
    }
}

/// Writes a batch and answers every caller.
///
/// The fast path plans against [`KnownVersions`] and writes in one statement that checks the
/// head under its lock. When the head moved (another process wrote), an event id turned out to
/// be stored already, or anything failed, the careful path re-reads everything inside one
/// transaction; if that fails as a whole, each append is retried alone so one bad append cannot
/// fail the others.
async fn commit_batch(pool: &PgPool, known: &mut KnownVersions, batch: Vec<PendingAppend>) {
    let started = Instant::now();
    let outcomes = match write_fast(pool, known, &batch).await {
        Ok(Some(outcomes)) => outcomes,
        fallback => {
            if let Err(error) = fallback {
                tracing::debug!(%error, "fast append path failed; taking the careful path");
            }
            metrics::counter!("fleetlog_append_careful_batches_total").increment(1);
            known.forget();
            write_careful(pool, &batch).await
        }
    };
    let elapsed = started.elapsed();
    if let Some(head) = known.head {
        metrics::gauge!("fleetlog_event_log_head_position").set(head as f64);
    }
    metrics::histogram!("fleetlog_append_batch_duration_seconds").record(elapsed.as_secs_f64());
    metrics::histogram!("fleetlog_append_batch_appends").record(batch.len() as f64);
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        match &outcome {
            Ok(o) if !o.duplicate => {
                metrics::counter!("fleetlog_events_appended_total").increment(o.events.len() as u64)
            }
            Ok(_) => metrics::counter!("fleetlog_append_duplicates_total").increment(1),
            Err(e) => {
                metrics::counter!("fleetlog_append_errors_total", "kind" => error_kind(e))
                    .increment(1);
            }
        }
        metrics::histogram!("fleetlog_append_latency_seconds")
            .record(pending.enqueued_at.elapsed().as_secs_f64());
        // The caller may have gone away (request cancelled); its events are durable regardless.
        let _ = pending.reply.send(outcome);
    }
}

/// The one-round-trip path. `Ok(None)`: nothing was written, because the head moved under us
/// or an append looks like a conflict (which may be a retry the careful path recognizes).
async fn write_fast(
    pool: &PgPool,
    known: &mut KnownVersions,
    batch: &[PendingAppend],
) -> Result<Option<Vec<Result<AppendOutcome>>>, sqlx::Error> {
    let streams = distinct_streams(batch);
    if known.head.is_none() || streams.iter().any(|s| !known.versions.contains_key(*s)) {
        let (head, versions) = read_head_and_versions(pool, &streams).await?;
        if known.head != Some(head) || known.versions.len() > MAX_KNOWN_STREAMS {
            known.forget();
            known.head = Some(head);
        }
        known.versions.extend(versions);
    }
    let head = known.head.expect("set above");
    let versions: HashMap<String, i64> = streams
        .iter()
        .map(|s| ((*s).to_owned(), known.versions[*s]))
        .collect();
    let plan = plan_batch(head, versions, HashMap::new(), &intents(batch));
    if plan.outcomes.iter().any(Result::is_err) {
        // A conflict may be a retry of stored events, which only the careful path can tell.
        return Ok(None);
    }
    let actual_head = append_planned(pool, batch, &plan.rows, head).await?;
    if actual_head != head {
        return Ok(None);
    }
    for (pending, outcome) in batch.iter().zip(&plan.outcomes) {
        if let Ok(o) = outcome {
            known
                .versions
                .insert(pending.stream_id.as_str().to_owned(), o.stream_version());
        }
    }
    known.head = Some(plan.last_position);
    Ok(Some(plan.outcomes))
}

/// Everything re-read under the lock in one transaction; each append alone if that fails.
async fn write_careful(pool: &PgPool, batch: &[PendingAppend]) -> Vec<Result<AppendOutcome>> {
    match write_in_transaction(pool, batch).await {
        Ok(outcomes) => outcomes,
        Err(error) if batch.len() > 1 => {
            tracing::warn!(%error, "append batch failed; retrying its appends one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for pending in batch {
                let single = write_in_transaction(pool, std::slice::from_ref(pending)).await;
                outcomes.push(single.map_or_else(|e| Err(classify(e)), |mut o| o.remove(0)));
            }
            outcomes
        }
        Err(error) => vec![Err(classify(error))],
    }
}

fn error_kind(error: &EventStoreError) -> &'static str {
    match error {
        EventStoreError::WrongExpectedVersion { .. } => "wrong_expected_version",
        EventStoreError::EventIdReused { .. } => "event_id_reused",
        EventStoreError::InvalidAppend(_) => "invalid",
        EventStoreError::Rejected(_) => "rejected",
        EventStoreError::Unavailable => "unavailable",
        EventStoreError::CorruptRow { .. } => "corrupt_row",
        EventStoreError::Database(_) => "database",
    }
}

/// Maps a failure of a single append: content PostgreSQL refuses (SQLSTATE class 22, data
/// exceptions) is the caller's problem; anything else is the database's.
fn classify(error: sqlx::Error) -> EventStoreError {
    match &error {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
            EventStoreError::Rejected(db.message().to_owned())
        }
        _ => EventStoreError::Database(error),
    }
}

/// One transaction for the whole batch, every fact re-read under the head lock.
async fn write_in_transaction(
    pool: &PgPool,
    batch: &[PendingAppend],
) -> Result<Vec<Result<AppendOutcome>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let head: i64 =
        sqlx::query_scalar("SELECT last_position FROM event_log_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let event_ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.event_id.0))
        .collect();
    let stored = load_stored(&mut tx, &event_ids).await?;
    let (_, versions) = read_head_and_versions(&mut *tx, &distinct_streams(batch)).await?;
    let BatchPlan { rows, outcomes, .. } = plan_batch(head, versions, stored, &intents(batch));
    let written_at = append_planned(&mut *tx, batch, &rows, head).await?;
    debug_assert_eq!(
        written_at, head,
        "the head cannot move while we hold its lock"
    );
    tx.commit().await?;
    Ok(outcomes)
}

fn distinct_streams(batch: &[PendingAppend]) -> Vec<&str> {
    let mut seen = HashSet::with_capacity(batch.len());
    batch
        .iter()
        .map(|p| p.stream_id.as_str())
        .filter(|s| seen.insert(*s))
        .collect()
}

fn intents(batch: &[PendingAppend]) -> Vec<AppendIntent<'_>> {
    batch
        .iter()
        .map(|p| AppendIntent {
            stream_id: &p.stream_id,
            expected: p.expected,
            event_ids: p.events.iter().map(|e| e.event_id).collect(),
        })
        .collect()
}

/// The head and the versions of `streams` (0 for empty streams), from one snapshot, so they agree.
async fn read_head_and_versions<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    streams: &[&str],
) -> Result<(i64, HashMap<String, i64>), sqlx::Error> {
    let rows: Vec<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT h.last_position, s.stream_id, \
                (SELECT max(e.stream_version) FROM events e WHERE e.stream_id = s.stream_id) \
         FROM event_log_head h LEFT JOIN unnest($1::text[]) AS s(stream_id) ON true WHERE h.id = 1",
    )
    .bind(streams)
    .fetch_all(executor)
    .await?;
    let head = rows.first().map(|r| r.0).unwrap_or(0);
    let versions = rows
        .into_iter()
        .filter_map(|(_, stream, version)| Some((stream?, version.unwrap_or(0))))
        .collect();
    Ok((head, versions))
}

async fn load_stored(
    tx: &mut sqlx::PgConnection,
    event_ids: &[Uuid],
) -> Result<HashMap<EventId, StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, stream_id, position, stream_version FROM events WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                EventId(row.try_get("event_id")?),
                StoredEvent {
                    stream_id: row.try_get("stream_id")?,
                    position: row.try_get("position")?,
                    stream_version: row.try_get("stream_version")?,
                },
            ))
        })
        .collect()
}

/// Calls `fleetlog_append_batch`: writes the planned rows if the head is still `expected_head`
/// and returns the head it found.
async fn append_planned<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    batch: &[PendingAppend],
    rows: &[PlannedRow],
    expected_head: i64,
) -> Result<i64, sqlx::Error> {
    let n = rows.len();
    let mut event_ids = Vec::with_capacity(n);
    let mut stream_ids = Vec::with_capacity(n);
    let mut stream_versions = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut schema_versions = Vec::with_capacity(n);
    let mut tenant_ids = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut occurred_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        debug_assert_eq!(
            row.position,
            expected_head + 1 + i as i64,
            "rows are planned in position order"
        );
        let pending = &batch[row.append];
        let event = &pending.events[row.event];
        event_ids.push(event.event_id.0);
        stream_ids.push(pending.stream_id.as_str());
        stream_versions.push(row.stream_version);
        event_types.push(event.event_type.as_str());
        schema_versions.push(event.schema_version as i32);
        tenant_ids.push(event.tenant_id.0);
        payloads.push(event.payload.to_string());
        data.push(event.data.as_deref());
        metadata.push(serde_json::to_string(&event.metadata).expect("metadata serializes"));
        occurred_at.push(event.occurred_at);
    }
    sqlx::query_scalar(
        "SELECT fleetlog_append_batch($1, $2, $3, $4, $5, $6, $7, $8::text[]::jsonb[], $9, $10::text[]::jsonb[], $11)",
    )
    .bind(expected_head)
    .bind(&event_ids)
    .bind(&stream_ids)
    .bind(&stream_versions)
    .bind(&event_types)
    .bind(&schema_versions)
    .bind(&tenant_ids)
    .bind(&payloads)
    .bind(&data)
    .bind(&metadata)
    .bind(&occurred_at)
    .fetch_one(executor)
    .await
}
