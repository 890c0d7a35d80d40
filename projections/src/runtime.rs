//! [`ProjectionRunner`]: feeds one projector the log in batches, exactly once, across crashes.

use std::borrow::Cow;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use command_side::event_store::postgres::{
    head_position_on, read_range_on, ReadFilter, EVENTS_CHANNEL,
};
use command_side::event_store::{EventStore, EventStoreError, PgEventStore};
use events_schema::RecordedEvent;
use futures::FutureExt;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crate::checkpoint;
use crate::projector::Projector;

/// How often and how patiently a failing event is retried before it is parked.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before an event is parked (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles with each further attempt.
    pub base_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after `attempt` failed attempts (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why the runner stopped or could not go on for now (the database, not an event).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The database failed; the batch was not applied and will be retried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Reading the log failed.
    #[error("event store error: {0}")]
    EventStore(#[from] EventStoreError),
    /// An event could not be applied inside a caller's transaction ([`ProjectionRunner::catch_up_in`]),
    /// where it cannot be parked.
    #[error("cannot apply an event: {0}")]
    Poison(String),
    /// A service other than the database (NATS, say) could not be reached; retried later.
    #[error("{0}")]
    Unavailable(String),
}

/// What retrying a parked event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkedRetry {
    /// The event was applied and is no longer parked.
    Applied,
    /// It failed again and stays parked; the reason.
    StillFailing(String),
    /// No such parked event.
    NotParked,
}

/// A filtered batch covers at most `batch_size` times this many positions, so one read never
/// scans an unbounded stretch of events the projector ignores.
pub(crate) const SCAN_WINDOW_BATCHES: i64 = 64;

/// How long a caught-up live runner sleeps without a notification before it looks anyway (a
/// safety net for notifications lost while the listener reconnects).
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(5);

/// One read of the log: every event the projector wants in the positions `(after, end]`, in
/// order. Applying it moves the checkpoint to `end`, even past the last event (or with none), so
/// a projector that ignores most types does not read the ignored stretch again.
pub(crate) struct Batch {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) end: i64,
    /// The read reached the end of the log as it was (nothing more to read right now).
    pub(crate) caught_up: bool,
}

/// Why one attempt at a batch failed.
enum Failure {
    /// The events are the problem (a fold error or panic, or data PostgreSQL refuses):
    /// retrying the same batch the same way fails again.
    Poison(String),
    /// The database is the problem: retry later, park nothing.
    Unavailable(sqlx::Error),
}

/// Runs one projector (or one partition of a partitioned projector).
pub struct ProjectionRunner<P: Projector> {
    store: PgEventStore,
    projector: P,
    batch_size: i64,
    retry: RetryPolicy,
    partition: u32,
    partitions: u32,
    key: String,
    linger: Duration,
}

/// The checkpoint (and lease) key of one partition: the projector's name, followed by
/// `#partition` when it has more than one.
pub fn checkpoint_key(name: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        name.to_owned()
    } else {
        format!("{name}#{partition}")
    }
}

impl<P: Projector> ProjectionRunner<P> {
    /// A runner reading `batch_size` events at a time.
    pub fn new(store: PgEventStore, projector: P, batch_size: i64) -> Self {
        let key = projector.name().to_owned();
        Self {
            store,
            projector,
            batch_size: batch_size.max(1),
            retry: RetryPolicy::default(),
            partition: 0,
            partitions: 1,
            key,
            linger: Duration::ZERO,
        }
    }

    /// Runs only `partition` of the projector's partitions (streams whose
    /// [`StreamId::partition`](events_schema::StreamId::partition) is `partition`), under the
    /// partition's own checkpoint.
    pub fn for_partition(mut self, partition: u32) -> Self {
        self.partitions = self.projector.partitions().max(1);
        self.partition = partition % self.partitions;
        self.key = checkpoint_key(self.projector.name(), self.partition, self.partitions);
        self
    }

    /// The checkpoint (and lease) key this runner uses.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The events of `events` that belong to this runner's partition.
    fn owned<'e>(&self, events: &'e [RecordedEvent]) -> Cow<'e, [RecordedEvent]> {
        if self.partitions <= 1 {
            return Cow::Borrowed(events);
        }
        let mine = |e: &&RecordedEvent| e.stream_id.partition(self.partitions) == self.partition;
        Cow::Owned(events.iter().filter(mine).cloned().collect())
    }

    /// After a batch that caught up with the log, the live runner waits this long before reading
    /// again, so that under a steady stream of events it writes fewer, larger batches (each is a
    /// transaction with its own commit) at the cost of this much extra lag. A runner behind the
    /// log never waits.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The projector being run.
    pub fn projector(&self) -> &P {
        &self.projector
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Applies every event up to `until` (or the head, when `None`) and returns the checkpoint.
    pub async fn catch_up(&self, until: Option<i64>) -> Result<i64, RuntimeError> {
        let mut position = checkpoint::ensure(self.pool(), &self.key).await?;
        loop {
            if until.is_some_and(|until| until <= position) {
                return Ok(position);
            }
            let mut conn = self.pool().acquire().await?;
            let batch = self.read_batch(&mut conn, position, until).await?;
            drop(conn);
            if batch.end <= position {
                return Ok(position);
            }
            self.apply_until_done(&batch, std::pin::pin!(std::future::pending()))
                .await?;
            position = batch.end;
        }
    }

    /// Applies, inside the caller's transaction, every event after `from` (no checkpoint is read
    /// or written: the caller owns that). Returns the position covered: the last event applied,
    /// or, for a projector with declared [`event_types`](Projector::event_types), the head the
    /// transaction saw.
    pub async fn catch_up_in(&self, tx: &mut PgConnection, from: i64) -> Result<i64, RuntimeError> {
        let mut position = from;
        loop {
            let batch = self.read_batch(tx, position, None).await?;
            if batch.end <= position {
                return Ok(position);
            }
            let mine = self.owned(&batch.events);
            if !mine.is_empty() {
                match self.fold_and_flush(tx, &mine).await {
                    Ok(()) => {}
                    Err(Failure::Unavailable(error)) => return Err(error.into()),
                    Err(Failure::Poison(reason)) => return Err(RuntimeError::Poison(reason)),
                }
            }
            position = batch.end;
        }
    }

    /// The next batch after `after`, not past `until` (see [`read_batch`]).
    async fn read_batch(
        &self,
        conn: &mut PgConnection,
        after: i64,
        until: Option<i64>,
    ) -> Result<Batch, EventStoreError> {
        let filter = ReadFilter {
            event_types: self.projector.event_types(),
            skip_payloads: !self.projector.reads_payloads(),
        };
        read_batch(conn, filter, self.batch_size, after, until).await
    }

    /// Follows the log live (woken by `NOTIFY`) until `shutdown` resolves. Database failures are
    /// logged, counted and retried with backoff; they never skip an event.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RuntimeError> {
        // Listening before the first read means no commit can slip between "caught up" and
        // "waiting".
        let mut listener = PgListener::connect_with(self.pool()).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let mut position = checkpoint::ensure(self.pool(), &self.key).await?;
        tokio::pin!(shutdown);
        loop {
            // Stop between batches; reads and batches themselves are never cancelled halfway
            // (cancelling sqlx mid-`BEGIN` is not safe).
            if shutdown.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            let mut conn = self.pool().acquire().await?;
            let batch = self.read_batch(&mut conn, position, None).await?;
            drop(conn);
            if batch.end > position {
                // A batch, once started, runs to its commit: stopping mid-transaction would only
                // throw the work away. Only the waits between failed attempts give way to
                // `shutdown`.
                if !self.apply_until_done(&batch, shutdown.as_mut()).await? {
                    return Ok(());
                }
                position = batch.end;
                // Caught up with the log: wait a little, so that under a steady stream of appends
                // the next batch carries many commits rather than one.
                if batch.caught_up && !self.linger.is_zero() {
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(self.linger) => {}
                    }
                }
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                notified = listener.recv() => { notified?; }
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            // Several commits may have notified while we slept: one read serves them all.
            while listener.next_buffered().is_some() {}
        }
    }

    /// Applies a batch, waiting out database failures with backoff; false when `stop` resolved
    /// during such a wait (the batch was not applied; the checkpoint did not move).
    async fn apply_until_done<S: Future<Output = ()>>(
        &self,
        batch: &Batch,
        mut stop: std::pin::Pin<&mut S>,
    ) -> Result<bool, RuntimeError> {
        let mut attempt = 0;
        loop {
            match self.apply(batch).await {
                Ok(()) => return Ok(true),
                Err(error) => {
                    attempt += 1;
                    metrics::counter!("fleetlog_projection_errors_total", "projector" => self.key.clone())
                        .increment(1);
                    let delay = self.retry.delay(attempt);
                    tracing::error!(projector = %self.key, %error, retry_in_ms = delay.as_millis() as u64,
                        "projection batch failed");
                    tokio::select! {
                        _ = stop.as_mut() => return Ok(false),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction; if an event in it is poison, applies the batch one
    /// event at a time, retrying the poison event with backoff and then parking it, and then
    /// moves the checkpoint to the batch's end.
    async fn apply(&self, batch: &Batch) -> Result<(), sqlx::Error> {
        let events = &batch.events;
        let span = tracing::info_span!(
            "projection_batch",
            projector = %self.key,
            from = events.first().map(|e| e.position),
            to = batch.end,
            events = events.len()
        );
        async {
            match self.try_apply(events, batch.end).await {
                Ok(()) => {}
                Err(Failure::Unavailable(error)) => return Err(error),
                Err(Failure::Poison(_)) => {
                    for event in events {
                        self.apply_one_or_park(event).await?;
                    }
                    // The stretch after the last event, which the projector does not read.
                    match self.try_apply(&[], batch.end).await {
                        Ok(()) => {}
                        Err(Failure::Unavailable(error)) => return Err(error),
                        Err(Failure::Poison(reason)) => {
                            // No event is folded here, so nothing can be poison.
                            tracing::error!(projector = %self.key, %reason, "unexpected poison");
                        }
                    }
                }
            }
            self.record_progress(batch.end, events.last()).await;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn apply_one_or_park(&self, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let mut attempt = 1;
        loop {
            match self
                .try_apply(std::slice::from_ref(event), event.position)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Failure::Unavailable(error)) => return Err(error),
                Err(Failure::Poison(reason)) if attempt >= self.retry.max_attempts.max(1) => {
                    let name = self.key.as_str();
                    tracing::warn!(projector = name, position = event.position, %reason, "parking event");
                    let mut tx = self.pool().begin().await?;
                    if checkpoint::lock(&mut tx, name).await? < event.position {
                        checkpoint::park(&mut tx, name, event, &reason, attempt).await?;
                    }
                    tx.commit().await?;
                    metrics::counter!("fleetlog_projection_parked_total", "projector" => name.to_owned())
                        .increment(1);
                    return Ok(());
                }
                Err(Failure::Poison(_)) => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One transaction: lock the checkpoint, skip what it already covers, load, fold, flush,
    /// advance the checkpoint to `end`, commit. `events` must be every event the projector wants
    /// in `(checkpoint, end]`.
    async fn try_apply(&self, events: &[RecordedEvent], end: i64) -> Result<(), Failure> {
        let name = self.key.as_str();
        let mut tx = self.pool().begin().await.map_err(Failure::Unavailable)?;
        let done = checkpoint::lock(&mut tx, name)
            .await
            .map_err(Failure::Unavailable)?;
        if done >= end {
            return Ok(());
        }
        // Events come in position order: what the checkpoint covers is a prefix.
        let fresh = &events[events.partition_point(|e| e.position <= done)..];
        let mine = self.owned(fresh);
        if !mine.is_empty() {
            self.fold_and_flush(&mut tx, &mine).await?;
        }
        // The checkpoint moves past other partitions' events, and past the types the projector
        // does not read, too: they are not this runner's.
        checkpoint::advance(&mut tx, name, end)
            .await
            .map_err(Failure::Unavailable)?;
        tx.commit().await.map_err(Failure::Unavailable)?;
        metrics::counter!("fleetlog_projection_events_total", "projector" => name.to_owned())
            .increment(mine.len() as u64);
        Ok(())
    }

    /// Load, pure fold (panics caught), flush: the projector's part of a batch.
    async fn fold_and_flush(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Failure> {
        let mut changes = self.projector.load(tx, events).await.map_err(classify)?;
        for event in events {
            let folded = catch_unwind(AssertUnwindSafe(|| {
                self.projector.fold(&mut changes, event)
            }));
            let reason = match folded {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(panic) => format!("fold panicked: {}", panic_message(&panic)),
            };
            return Err(Failure::Poison(format!(
                "position {}: {reason}",
                event.position
            )));
        }
        self.projector.flush(tx, changes).await.map_err(classify)
    }

    /// Applies a parked event now (out of its original order: the checkpoint has moved past it)
    /// and unparks it. If it fails again it stays parked, with the new error and one more attempt.
    pub async fn retry_parked(&self, position: i64) -> Result<ParkedRetry, RuntimeError> {
        let name = self.key.as_str();
        let Some(event) = self
            .store
            .read_all(position - 1, 1)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.position == position)
        else {
            return Ok(ParkedRetry::NotParked);
        };
        let mut tx = self.pool().begin().await?;
        checkpoint::lock(&mut tx, name).await?; // one writer of the read model at a time
        let unparked =
            sqlx::query("DELETE FROM parked_events WHERE projector = $1 AND position = $2")
                .bind(name)
                .bind(position)
                .execute(&mut *tx)
                .await?;
        if unparked.rows_affected() == 0 {
            return Ok(ParkedRetry::NotParked);
        }
        match self
            .fold_and_flush(&mut tx, std::slice::from_ref(&event))
            .await
        {
            Ok(()) => {
                tx.commit().await?;
                Ok(ParkedRetry::Applied)
            }
            Err(Failure::Unavailable(error)) => Err(error.into()),
            Err(Failure::Poison(reason)) => {
                drop(tx); // rolls back the unparking
                checkpoint::note_failed_retry(self.pool(), name, position, &reason).await?;
                Ok(ParkedRetry::StillFailing(reason))
            }
        }
    }

    /// Updates the lag gauges after a batch that ended at `end`, whose last event was `last`.
    async fn record_progress(&self, end: i64, last: Option<&RecordedEvent>) {
        record_progress(&self.store, &self.key, end, last).await;
    }
}

/// Sets the position, lag and parked gauges of the runner with checkpoint key `name` (a
/// projector, a projector's partition or a reactor), after it reached `end`; `last` is the last
/// event it processed.
pub(crate) async fn record_progress(
    store: &PgEventStore,
    name: &str,
    end: i64,
    last: Option<&RecordedEvent>,
) {
    metrics::gauge!("fleetlog_projection_position", "projector" => name.to_owned()).set(end as f64);
    let head = store.head_position().await.ok();
    if let Some(head) = head {
        metrics::gauge!("fleetlog_projection_lag_positions", "projector" => name.to_owned())
            .set((head - end) as f64);
    }
    // A batch without events (a stretch of types the runner does not read) has no commit time to
    // measure from; when it reached the head, nothing is waiting.
    let behind = match (last, head) {
        (Some(last), _) => Some(chrono_seconds_since(last)),
        (None, Some(head)) if head <= end => Some(0.0),
        _ => None,
    };
    if let Some(behind) = behind {
        metrics::gauge!("fleetlog_projection_lag_seconds", "projector" => name.to_owned())
            .set(behind);
    }
    let parked: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE projector = $1")
            .bind(name)
            .fetch_one(store.pool())
            .await;
    if let Ok(parked) = parked {
        metrics::gauge!("fleetlog_projection_parked", "projector" => name.to_owned())
            .set(parked as f64);
    }
}

/// The next batch after `after`, not past `until`, read on `conn` (the pool's, or the caller's
/// transaction). Without declared types: up to `batch_size` events, ending at the last one. With
/// them: the events of those types in `(after, upper]`, where `upper` is the smallest of the head,
/// `until` and `after` + the scan window; when `batch_size` of them come back the batch ends at
/// the last one (more may follow), otherwise at `upper`. The head is read before the events, so
/// every position up to it is visible to the event read (positions are commit-ordered): a window
/// that ends there cannot miss an event.
pub(crate) async fn read_batch(
    conn: &mut PgConnection,
    filter: ReadFilter<'_>,
    batch_size: i64,
    after: i64,
    until: Option<i64>,
) -> Result<Batch, EventStoreError> {
    if filter.event_types.is_none() {
        let limit = until.map_or(batch_size, |until| batch_size.min(until - after));
        if limit <= 0 {
            return Ok(Batch {
                events: Vec::new(),
                end: after,
                caught_up: true,
            });
        }
        let events = read_range_on(&mut *conn, after, None, limit, filter).await?;
        let end = events.last().map_or(after, |e| e.position);
        let caught_up = (events.len() as i64) < limit;
        return Ok(Batch {
            events,
            end,
            caught_up,
        });
    }
    let head = head_position_on(&mut *conn).await?;
    let window = batch_size.saturating_mul(SCAN_WINDOW_BATCHES);
    let mut upper = head.min(after.saturating_add(window));
    if let Some(until) = until {
        upper = upper.min(until);
    }
    if upper <= after {
        return Ok(Batch {
            events: Vec::new(),
            end: after,
            caught_up: true,
        });
    }
    let events = read_range_on(&mut *conn, after, Some(upper), batch_size, filter).await?;
    let end = match events.last() {
        Some(last) if events.len() as i64 >= batch_size => last.position,
        _ => upper,
    };
    Ok(Batch {
        events,
        end,
        caught_up: end >= head,
    })
}

/// Seconds between the last applied event's commit and now (the runtime may read the clock;
/// projectors may not).
fn chrono_seconds_since(event: &RecordedEvent) -> f64 {
    let now = std::time::SystemTime::now();
    let recorded: std::time::SystemTime = event.recorded_at.into();
    now.duration_since(recorded)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Data PostgreSQL refuses (SQLSTATE classes 22 and 23) is the events' fault; anything else is
/// the database's.
fn classify(error: sqlx::Error) -> Failure {
    match &error {
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
        {
            Failure::Poison(db.message().to_owned())
        }
        _ => Failure::Unavailable(error),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }
}
