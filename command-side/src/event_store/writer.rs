//! The group-commit writer: one task per process turns concurrent appends into few transactions.
//!
//! The writer takes whatever appends are queued (up to [`GroupCommitConfig::max_batch_events`])
//! and writes them as one batch, one transaction. Each append keeps its own expected-version check
//! and its own answer, given only after the transaction holding its events committed.
//!
//! - **Fast path** (one round trip per batch): the writer remembers the head position it last
//!   wrote and the versions of the streams it has seen. [`plan_batch`] decides every append's
//!   fate against that memory, and `fleetlog_append_batch()` writes the planned rows only if the
//!   head is still the remembered one (it moves the head in the same step, which takes the head
//!   lock and so serializes writers of every process).
//! - **Careful path**: when the head moved (another process appended), an append looks like a
//!   conflict (it may be a retry of stored events), an event id is already stored, or anything
//!   failed, the batch is planned again inside one transaction from freshly read ids and
//!   versions. If that fails as a whole (a row PostgreSQL refuses), each append is retried alone,
//!   so one bad append cannot fail the others.
//!
//! Batches are written one at a time: on two cores, overlapping batches on several connections
//! measured slower (smaller batches, more per-batch cost), so the writer does not pipeline.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events_schema::{EventId, NewEvent, StreamId};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::plan::{plan_batch, AppendIntent, BatchPlan, PlannedRow, StoredEvent};
use super::{AppendOutcome, EventStoreError, ExpectedVersion, Result};

/// How appends are coalesced into transactions.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most events written in one transaction (an append is never split).
    pub max_batch_events: usize,
    /// How long the writer may linger for more appends while its batch is smaller than the
    /// previous one; zero means it writes whatever is queued at once.
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

/// One queued append and where its answer goes.
pub(super) struct PendingAppend {
    pub(super) stream_id: StreamId,
    pub(super) expected: ExpectedVersion,
    pub(super) events: Vec<NewEvent>,
    pub(super) reply: oneshot::Sender<Result<AppendOutcome>>,
    pub(super) enqueued_at: Instant,
}

/// Runs until every sender of `queue` is gone and everything queued is written.
pub(super) async fn run_writer(
    pool: PgPool,
    mut queue: mpsc::Receiver<PendingAppend>,
    config: GroupCommitConfig,
) {
    let mut known = KnownVersions::default();
    let mut previous_batch_appends = 0;
    while let Some(first) = queue.recv().await {
        let batch = collect_batch(first, &mut queue, &config, previous_batch_appends).await;
        previous_batch_appends = batch.len();
        let span = tracing::info_span!("append_batch", appends = batch.len());
        commit_batch(&pool, &mut known, batch)
            .instrument(span)
            .await;
        // The callers just answered are runnable now; under steady load most of them append
        // again at once. Stepping aside twice lets them queue before the next batch is cut, so it
        // carries them instead of the first one back followed by a full batch behind it
        // (`bench append`, C=64, one event per append: 33-37k/s without, 40-47k/s with).
        for _ in 0..YIELDS_AFTER_BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// How often the writer steps aside after answering a batch (see [`run_writer`]).
const YIELDS_AFTER_BATCH: usize = 2;

/// Takes `first` and whatever else is queued, lingering (up to `max_wait`) only while the batch is
/// smaller than the previous one: under steady load the callers just answered are about to come
/// back, and one full batch beats a tiny one followed by a full one.
async fn collect_batch(
    first: PendingAppend,
    queue: &mut mpsc::Receiver<PendingAppend>,
    config: &GroupCommitConfig,
    previous_batch_appends: usize,
) -> Vec<PendingAppend> {
    let mut events = first.events.len();
    let mut batch = vec![first];
    let deadline = Instant::now() + config.max_wait;
    while events < config.max_batch_events {
        let next = match queue.try_recv() {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Empty)
                if !config.max_wait.is_zero() && batch.len() * 10 < previous_batch_appends * 9 =>
            {
                tokio::time::timeout_at(deadline.into(), queue.recv())
                    .await
                    .ok()
                    .flatten()
            }
            Err(_) => None,
        };
        let Some(next) = next else { break };
        events += next.events.len();
        batch.push(next);
    }
    metrics::gauge!("fleetlog_append_queue_depth").decrement(batch.len() as f64);
    batch
}

/// The writer's knowledge of stream versions as of the head it last wrote. While the head is still
/// there, nobody else has written and the versions are exact. Any surprise clears it.
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

/// Writes a batch (fast path, else careful path) and answers every caller.
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
    answer(batch, outcomes, started);
}

/// The one-round-trip path. `Ok(None)`: nothing was written, because the head moved under us or
/// an append looks like a conflict (which may be a retry the careful path recognizes).
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
        return Ok(None);
    }
    if RowArrays::new(batch, &plan.rows)
        .append(pool, head)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    for (pending, outcome) in batch.iter().zip(&plan.outcomes) {
        // A duplicate's versions are an older append's: they say nothing about the stream now.
        if let Some(outcome) = outcome.as_ref().ok().filter(|o| !o.duplicate) {
            let stream = pending.stream_id.as_str().to_owned();
            known.versions.insert(stream, outcome.stream_version());
        }
    }
    known.head = Some(plan.last_position);
    Ok(Some(plan.outcomes))
}

/// Sends every caller its answer and records the batch's metrics.
fn answer(batch: Vec<PendingAppend>, outcomes: Vec<Result<AppendOutcome>>, started: Instant) {
    let last_position = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .filter_map(|o| o.events.last().map(|e| e.position))
        .max();
    if let Some(position) = last_position {
        metrics::gauge!("fleetlog_event_log_head_position").set(position as f64);
    }
    metrics::histogram!("fleetlog_append_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("fleetlog_append_batch_appends").record(batch.len() as f64);
    tracing::debug!(
        appends = batch.len(),
        duration_us = started.elapsed().as_micros() as u64,
        "append batch done"
    );
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
/// exceptions; 23, constraint violations; 54, limits such as an oversized value) is the caller's
/// problem and retrying it cannot help; anything else is the database's.
fn classify(error: sqlx::Error) -> EventStoreError {
    let refused = |code: &str| {
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    };
    match &error {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| refused(&c)) => {
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
    if let Some(found) = RowArrays::new(batch, &rows).append(&mut *tx, head).await? {
        // Cannot happen while we hold the head lock; never answer Ok for rows not written.
        return Err(sqlx::Error::Protocol(format!(
            "the event log head moved from {head} to {found} under its lock"
        )));
    }
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

/// The columns of the planned rows, as the arrays `fleetlog_append_batch()` takes.
struct RowArrays {
    event_ids: Vec<Uuid>,
    stream_ids: Vec<String>,
    stream_versions: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    tenant_ids: Vec<Uuid>,
    payloads: Vec<String>,
    data: Vec<Option<Vec<u8>>>,
    metadata: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
}

impl RowArrays {
    fn new(batch: &[PendingAppend], rows: &[PlannedRow]) -> Self {
        let n = rows.len();
        let mut arrays = Self {
            event_ids: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            stream_versions: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            tenant_ids: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
        };
        for row in rows {
            let pending = &batch[row.append];
            let event = &pending.events[row.event];
            arrays.event_ids.push(event.event_id.0);
            arrays
                .stream_ids
                .push(pending.stream_id.as_str().to_owned());
            arrays.stream_versions.push(row.stream_version);
            arrays.event_types.push(event.event_type.clone());
            arrays.schema_versions.push(event.schema_version as i32);
            arrays.tenant_ids.push(event.tenant_id.0);
            arrays.payloads.push(event.payload.to_string());
            arrays.data.push(event.data.clone());
            arrays
                .metadata
                .push(serde_json::to_string(&event.metadata).expect("metadata serializes"));
            arrays.occurred_at.push(event.occurred_at);
        }
        arrays
    }

    /// Calls `fleetlog_append_batch`: writes the rows at positions `expected_head + 1, ...` if the
    /// head is still `expected_head`. `Ok(None)`: written; `Ok(Some(head))`: not written, the
    /// head was `head`.
    async fn append<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        expected_head: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let (written, found_head): (bool, i64) = sqlx::query_as(
            "SELECT written, found_head FROM fleetlog_append_batch($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11)",
        )
        .bind(expected_head)
        .bind(&self.event_ids)
        .bind(&self.stream_ids)
        .bind(&self.stream_versions)
        .bind(&self.event_types)
        .bind(&self.schema_versions)
        .bind(&self.tenant_ids)
        .bind(&self.payloads)
        .bind(&self.data)
        .bind(&self.metadata)
        .bind(&self.occurred_at)
        .fetch_one(executor)
        .await?;
        Ok((!written).then_some(found_head))
    }
}
