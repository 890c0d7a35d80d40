//! Reactors: they turn events into new events, appended through the event store.
//!
//! A reactor follows the log like a projector, but its output is appends. Every event it appends
//! gets an id derived from (reactor name, input event id, index), so a retry, a crash between the
//! append and the checkpoint, or a replay from position 0 never records the same fact twice: the
//! store answers a re-append of a stored id with the original positions and writes nothing.
//! Reactors may read the clock (they are given `now`); projectors never do.

use chrono::{DateTime, Utc};
use command_side::event_store::{
    EventStore, EventStoreError, EventTail, ExpectedVersion, PgEventStore,
};
use events_schema::{EventId, NewEvent, RecordedEvent, StreamId};

use crate::checkpoint;
use crate::projector::FoldError;
use crate::runtime::{RetryPolicy, RuntimeError};

/// One event a reactor wants appended.
#[derive(Debug, Clone)]
pub struct Reaction {
    /// Target stream.
    pub stream_id: StreamId,
    /// Expectation on that stream (usually `Any`).
    pub expected: ExpectedVersion,
    /// The event; its id is replaced by one derived from the input.
    pub event: NewEvent,
}

/// Decides which events an event causes.
pub trait Reactor: Send + Sync + 'static {
    /// Stable name: the checkpoint key and the namespace of derived event ids.
    fn name(&self) -> &'static str;

    /// The events `event` causes, given the time now.
    fn react(&self, event: &RecordedEvent, now: DateTime<Utc>) -> Result<Vec<Reaction>, FoldError>;
}

/// Runs one reactor from its checkpoint.
pub struct ReactorRunner<R: Reactor> {
    store: PgEventStore,
    reactor: R,
    batch_size: i64,
    retry: RetryPolicy,
}

impl<R: Reactor> ReactorRunner<R> {
    /// A runner reading `batch_size` events at a time.
    pub fn new(store: PgEventStore, reactor: R, batch_size: i64) -> Self {
        Self {
            store,
            reactor,
            batch_size: batch_size.max(1),
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The id of the `index`-th event caused by `input`: the same input always gives the same ids.
    pub fn derived_id(&self, input: &RecordedEvent, index: usize) -> EventId {
        let mut key = input.event_id.0.as_bytes().to_vec();
        key.extend_from_slice(&(index as u64).to_be_bytes());
        EventId::derived(self.reactor.name(), &key)
    }

    /// Reacts to every event up to the head and returns the checkpoint.
    pub async fn catch_up(&self) -> Result<i64, RuntimeError> {
        let mut position = checkpoint::ensure(self.store.pool(), self.reactor.name()).await?;
        loop {
            let events = self.store.read_all(position, self.batch_size).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(position);
            };
            self.process(&events).await?;
            position = last;
        }
    }

    /// Follows the log live (woken by `NOTIFY`) until `shutdown` resolves; a batch, once
    /// started, is finished first. Database failures are logged, counted and retried.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let start = checkpoint::ensure(self.store.pool(), self.reactor.name()).await?;
        let mut tail = EventTail::start(self.store.clone(), start, self.batch_size).await?;
        tokio::pin!(shutdown);
        loop {
            let events = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                events = tail.next_batch() => events?,
            };
            // Database failures are waited out with backoff (only the waits give way to
            // `shutdown`); the checkpoint does not move until the batch is done.
            let mut attempt = 0;
            while let Err(error) = self.process(&events).await {
                attempt += 1;
                let delay = self.retry.delay(attempt);
                metrics::counter!("fleetlog_projection_errors_total", "projector" => self.reactor.name())
                    .increment(1);
                tracing::error!(reactor = self.reactor.name(), %error, retry_in_ms = delay.as_millis() as u64,
                    "reaction batch failed");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Reacts to a batch, then moves the checkpoint past it. Appends come first: a crash in
    /// between only makes the next run re-append ids the store already has.
    async fn process(&self, events: &[RecordedEvent]) -> Result<(), RuntimeError> {
        let name = self.reactor.name();
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        let done = checkpoint::ensure(self.store.pool(), name).await?;
        for event in events.iter().filter(|e| e.position > done) {
            self.react_or_park(event).await?;
        }
        let mut tx = self.store.pool().begin().await?;
        if checkpoint::lock(&mut tx, name).await? < last {
            checkpoint::advance(&mut tx, name, last).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reacts to one event, retrying with backoff; a reaction that keeps failing parks the event.
    /// Database failures are returned (the checkpoint does not move; a later retry is safe).
    async fn react_or_park(&self, event: &RecordedEvent) -> Result<(), RuntimeError> {
        let name = self.reactor.name();
        let mut attempt = 1;
        loop {
            let reason = match self.reactor.react(event, Utc::now()) {
                Ok(reactions) => match self.append_all(event, reactions).await {
                    Ok(()) => return Ok(()),
                    Err(EventStoreError::Database(error)) => return Err(error.into()),
                    Err(EventStoreError::Unavailable) => {
                        return Err(EventStoreError::Unavailable.into())
                    }
                    Err(other) => other.to_string(),
                },
                Err(error) => error.to_string(),
            };
            if attempt >= self.retry.max_attempts.max(1) {
                tracing::warn!(reactor = name, position = event.position, %reason, "parking event");
                let mut tx = self.store.pool().begin().await?;
                if checkpoint::lock(&mut tx, name).await? < event.position {
                    checkpoint::park(&mut tx, name, event, &reason, attempt).await?;
                }
                tx.commit().await?;
                metrics::counter!("fleetlog_projection_parked_total", "projector" => name)
                    .increment(1);
                return Ok(());
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    async fn append_all(
        &self,
        input: &RecordedEvent,
        reactions: Vec<Reaction>,
    ) -> Result<(), EventStoreError> {
        for (index, reaction) in reactions.into_iter().enumerate() {
            let mut event = reaction.event.with_event_id(self.derived_id(input, index));
            event.metadata.causation_id = Some(input.event_id.0);
            event.metadata.correlation_id = event
                .metadata
                .correlation_id
                .or(input.metadata.correlation_id);
            event.metadata.source = Some(self.reactor.name().to_owned());
            self.store
                .append(&reaction.stream_id, reaction.expected, vec![event])
                .await?;
        }
        Ok(())
    }
}
