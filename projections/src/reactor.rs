//! Reactors: they turn events into new events, appended through the event store.
//!
//! A reactor follows the log like a projector, but its output is appends. Every event it appends
//! gets an id derived from (reactor name, input event id, index), so a retry, a crash between the
//! append and the checkpoint, or a replay from position 0 never records the same fact twice: the
//! store answers a re-append of a stored id with the original positions and writes nothing.
//! Reactors may read the clock (they are given `now`) and what other read models say (in
//! [`load`](Reactor::load)); projectors may do neither.
//!
//! Per batch the runner loads the reactor's context once, decides every reaction, appends them
//! all concurrently (so the event store's group commit writes them in few transactions; appends
//! to one stream stay in order) and then moves the checkpoint.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::postgres::{ReadFilter, EVENTS_CHANNEL};
use command_side::event_store::{EventStore, EventStoreError, ExpectedVersion, PgEventStore};
use events_schema::{EventId, NewEvent, RecordedEvent, StreamId};
use futures::FutureExt;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::checkpoint;
use crate::projector::FoldError;
use crate::runtime::{read_batch, record_progress, Batch, RetryPolicy, RuntimeError, IDLE_POLL};

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
    /// What the reactions to one batch depend on beyond the events themselves (for example the
    /// previous inventory of each system in the batch), loaded once per batch.
    type Context: Send + 'static;

    /// Stable name: the checkpoint key and the namespace of derived event ids.
    fn name(&self) -> &'static str;

    /// The only event types this reactor reacts to, or `None` for every type. Declaring them
    /// lets the runner read only those events (and move its checkpoint over the rest).
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether [`load`](Reactor::load) reads only what was in the log before the batch's events
    /// and never this reactor's own appends: then the runner may load a batch's context while it
    /// still reacts to the batch before (large contexts, like previous inventories, then cost no
    /// extra time).
    fn load_ahead(&self) -> bool {
        false
    }

    /// Takes back a batch's events once the runner is done with them (its reactions appended,
    /// the checkpoint moved), so a reactor may keep what it needs of them (say, documents for
    /// the next batches) without copying it during [`react`](Reactor::react). By default they
    /// are dropped.
    fn release(&self, events: Vec<RecordedEvent>) {
        drop(events);
    }

    /// Loads the context for `events` (a batch, in log order). It may read any table.
    fn load(
        &self,
        pool: &PgPool,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<Self::Context, sqlx::Error>> + Send;

    /// The events `event` causes, given the batch's context and the time now. It may update the
    /// context for the events after it in the same batch.
    fn react(
        &self,
        context: &mut Self::Context,
        event: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reaction>, FoldError>;
}

/// Runs one reactor from its checkpoint.
pub struct ReactorRunner<R: Reactor> {
    store: PgEventStore,
    reactor: Arc<R>,
    batch_size: i64,
    retry: RetryPolicy,
    linger: Duration,
}

/// A batch read ahead, with its context when the reactor loads ahead.
type ReadAhead<C> = JoinHandle<Result<(Batch, Option<C>), RuntimeError>>;

/// The result of a read started with [`ReactorRunner::read_ahead`].
async fn joined<C>(read: ReadAhead<C>) -> Result<(Batch, Option<C>), RuntimeError> {
    read.await
        .map_err(|error| RuntimeError::Unavailable(format!("reading the log failed: {error}")))?
}

/// One append a reaction asked for: target stream, expectation, event (with its derived id).
type Append = (StreamId, ExpectedVersion, NewEvent);

/// The reactions to one input event, with their derived ids already set.
struct Reactions<'e> {
    input: &'e RecordedEvent,
    appends: Vec<Append>,
}

impl<R: Reactor> ReactorRunner<R> {
    /// A runner reading `batch_size` events at a time.
    pub fn new(store: PgEventStore, reactor: R, batch_size: i64) -> Self {
        Self {
            store,
            reactor: Arc::new(reactor),
            batch_size: batch_size.max(1),
            retry: RetryPolicy::default(),
            linger: Duration::ZERO,
        }
    }

    /// After a batch that caught up with the log, wait this long before reading again (see
    /// [`crate::ProjectionRunner::with_linger`]): under a steady stream of appends the reactor
    /// then handles a few larger batches a second, not one small batch per commit, at this much
    /// extra delay. Zero (the default) reads again at once.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The reactor this runner runs.
    pub fn reactor(&self) -> &R {
        &self.reactor
    }

    /// The id of the `index`-th event caused by `input`: the same input always gives the same ids.
    pub fn derived_id(&self, input: &RecordedEvent, index: usize) -> EventId {
        let mut key = input.event_id.0.as_bytes().to_vec();
        key.extend_from_slice(&(index as u64).to_be_bytes());
        EventId::derived(self.reactor.name(), &key)
    }

    /// Starts reading the batch after `after` on a task of its own (and loading its context,
    /// for a reactor that [loads ahead](Reactor::load_ahead)): decoding a batch of large
    /// payloads then overlaps with reacting to the batch before it.
    fn read_ahead(&self, after: i64) -> ReadAhead<R::Context> {
        let (store, reactor, batch_size) = (
            self.store.clone(),
            Arc::clone(&self.reactor),
            self.batch_size,
        );
        tokio::spawn(async move {
            let filter = ReadFilter {
                event_types: reactor.event_types(),
                skip_payloads: false,
            };
            let batch = {
                let mut conn = store.pool().acquire().await?;
                read_batch(&mut conn, filter, batch_size, after, None).await?
            };
            let context = if reactor.load_ahead() && !batch.events.is_empty() {
                Some(reactor.load(store.pool(), &batch.events).await?)
            } else {
                None
            };
            Ok((batch, context))
        })
    }

    /// Reacts to every event up to the head and returns the checkpoint.
    pub async fn catch_up(&self) -> Result<i64, RuntimeError> {
        let mut position = checkpoint::ensure(self.store.pool(), self.reactor.name()).await?;
        let mut next = self.read_ahead(position);
        loop {
            let (batch, context) = joined(next).await?;
            if batch.end <= position {
                return Ok(position);
            }
            next = self.read_ahead(batch.end);
            self.process(&batch, context).await?;
            position = batch.end;
            self.reactor.release(batch.events);
        }
    }

    /// Follows the log live (woken by `NOTIFY`) until `shutdown` resolves; a batch, once
    /// started, is finished first. Database failures are logged, counted and retried.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let name = self.reactor.name();
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let mut position = checkpoint::ensure(self.store.pool(), name).await?;
        let mut ahead = None;
        tokio::pin!(shutdown);
        loop {
            if shutdown.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            let read = match ahead.take() {
                Some(read) => joined(read).await,
                None => joined(self.read_ahead(position)).await,
            };
            let (batch, mut context) = match read {
                Ok(read) => read,
                Err(error) => {
                    if !self.wait_after_failure(&error, 1, shutdown.as_mut()).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if batch.end > position {
                // Behind the log, the next batch is read while this one is reacted to (used only
                // once this one is done). Caught up, the runner lingers instead, and reads after.
                // Database failures are waited out with backoff (only the waits give way to
                // `shutdown`); the checkpoint does not move until the batch is done.
                let linger = batch.caught_up && !self.linger.is_zero();
                if !linger {
                    ahead = Some(self.read_ahead(batch.end));
                }
                let mut attempt = 0;
                // A failed attempt used the context up: the next one loads it again.
                while let Err(error) = self.process(&batch, context.take()).await {
                    attempt += 1;
                    if !self
                        .wait_after_failure(&error, attempt, shutdown.as_mut())
                        .await
                    {
                        return Ok(());
                    }
                }
                position = batch.end;
                self.reactor.release(batch.events);
                if linger {
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
            while listener.next_buffered().is_some() {}
        }
    }

    /// Logs and counts a failed batch, then waits the retry delay; false when `shutdown`
    /// resolved during the wait.
    async fn wait_after_failure<S: Future<Output = ()>>(
        &self,
        error: &RuntimeError,
        attempt: u32,
        shutdown: std::pin::Pin<&mut S>,
    ) -> bool {
        let name = self.reactor.name();
        let delay = self.retry.delay(attempt);
        metrics::counter!("fleetlog_projection_errors_total", "projector" => name).increment(1);
        tracing::error!(reactor = name, %error, retry_in_ms = delay.as_millis() as u64,
            "reaction batch failed");
        tokio::select! {
            _ = shutdown => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Reacts to a batch, then moves the checkpoint to its end. Appends come first: a crash in
    /// between only makes the next run re-append ids the store already has.
    async fn process(
        &self,
        batch: &Batch,
        preloaded: Option<R::Context>,
    ) -> Result<(), RuntimeError> {
        let name = self.reactor.name();
        let done = checkpoint::ensure(self.store.pool(), name).await?;
        // Events are in position order: the ones not yet reacted to are a suffix.
        let first_new = batch.events.partition_point(|e| e.position <= done);
        let events = &batch.events[first_new..];
        let span = tracing::info_span!(
            "reaction_batch",
            reactor = name,
            from = events.first().map(|e| e.position),
            to = batch.end,
            events = events.len()
        );
        let _entered = span.enter();
        // A context loaded ahead is for the whole batch: it serves only if none of it was done.
        let preloaded = preloaded.filter(|_| first_new == 0);
        if !events.is_empty() {
            self.react_to(events, preloaded).await?;
        }
        let mut tx = self.store.pool().begin().await?;
        if checkpoint::lock(&mut tx, name).await? < batch.end {
            checkpoint::advance(&mut tx, name, batch.end).await?;
        }
        tx.commit().await?;
        metrics::counter!("fleetlog_reactor_events_total", "reactor" => name)
            .increment(events.len() as u64);
        record_progress(&self.store, name, batch.end, events.last()).await;
        Ok(())
    }

    /// Decides and appends the reactions to `events`. An event whose reaction cannot be decided
    /// (the reactor refuses it) or cannot be appended (say, a version conflict) is parked;
    /// database failures are returned, and the whole batch is tried again later (safe: ids are
    /// derived).
    async fn react_to(
        &self,
        events: &[RecordedEvent],
        preloaded: Option<R::Context>,
    ) -> Result<(), RuntimeError> {
        let mut context = match preloaded {
            Some(context) => context,
            None => self.reactor.load(self.store.pool(), events).await?,
        };
        let now = Utc::now();
        let mut decided = Vec::with_capacity(events.len());
        for event in events {
            match self.reactor.react(&mut context, event, now) {
                Ok(reactions) => decided.push(self.with_derived_ids(event, reactions)),
                Err(error) => self.park(event, &error.to_string()).await?,
            }
        }
        // One chain of appends per target stream (in order), the chains concurrently.
        let mut chains: HashMap<&StreamId, Vec<(usize, &Append)>> = HashMap::new();
        for (input, reactions) in decided.iter().enumerate() {
            for append in &reactions.appends {
                chains.entry(&append.0).or_default().push((input, append));
            }
        }
        let store = &self.store;
        let outcomes = futures::future::join_all(chains.into_values().map(|chain| async move {
            let mut failed = Vec::new();
            // Each append is judged on its own: one that conflicts fails only its input.
            for (input, (stream, expected, event)) in chain {
                if let Err(error) = store.append(stream, *expected, vec![event.clone()]).await {
                    failed.push((input, error));
                }
            }
            failed
        }))
        .await;
        let mut parked = std::collections::HashSet::new();
        for (input, error) in outcomes.into_iter().flatten() {
            match error {
                EventStoreError::Database(error) => return Err(error.into()),
                EventStoreError::Unavailable => return Err(EventStoreError::Unavailable.into()),
                other => {
                    if parked.insert(input) {
                        self.park(decided[input].input, &other.to_string()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn with_derived_ids<'e>(
        &self,
        input: &'e RecordedEvent,
        reactions: Vec<Reaction>,
    ) -> Reactions<'e> {
        let appends = reactions
            .into_iter()
            .enumerate()
            .map(|(index, reaction)| {
                let mut event = reaction.event.with_event_id(self.derived_id(input, index));
                event.metadata.causation_id = Some(input.event_id.0);
                event.metadata.correlation_id = event
                    .metadata
                    .correlation_id
                    .or(input.metadata.correlation_id);
                event.metadata.source = Some(self.reactor.name().to_owned());
                (reaction.stream_id, reaction.expected, event)
            })
            .collect();
        Reactions { input, appends }
    }

    /// Parks `event` with `reason`, unless the checkpoint has already passed it.
    async fn park(&self, event: &RecordedEvent, reason: &str) -> Result<(), RuntimeError> {
        let name = self.reactor.name();
        tracing::warn!(reactor = name, position = event.position, %reason, "parking event");
        let mut tx = self.store.pool().begin().await?;
        if checkpoint::lock(&mut tx, name).await? < event.position {
            checkpoint::park(&mut tx, name, event, reason, 1).await?;
        }
        tx.commit().await?;
        metrics::counter!("fleetlog_projection_parked_total", "projector" => name).increment(1);
        Ok(())
    }
}
