//! Gateway telemetry from NATS JetStream, stored verbatim and acknowledged only once durable.
//!
//! Gateways publish opaque telemetry to `{prefix}.{tenant id}.{gateway key}`, for example
//! `telemetry.data.0193a000-0000-7000-8000-000000000001.FL-7K2D-Q9XM-4HTR`. [`run`] reads it
//! with a durable pull consumer and turns every message into one `TelemetryReceived` event on
//! the gateway's stream, with the payload bytes in the envelope's `data`, untouched.
//!
//! # Exactly once
//!
//! A message is acknowledged only after the append that stores it has committed, so a crash
//! between the two leaves it unacknowledged and JetStream redelivers it. The redelivery carries
//! the same event id, because the id is derived from the message rather than drawn at random:
//!
//! - with a `Nats-Msg-Id` header: from the tenant, the gateway key and that id, so the same
//!   message published twice (after JetStream's own duplicate window, or to a recreated stream)
//!   is still stored once;
//! - without: from the stream name, the stream's creation time and the stream sequence. The
//!   creation time keeps a deleted-and-recreated stream, whose sequences start again at 1, from
//!   colliding with the messages of its predecessor.
//!
//! The store treats an append of an already stored id as a successful no-op, so the redelivered
//! message is acknowledged and nothing is written twice.
//!
//! # Messages that can never be stored
//!
//! A malformed subject, an unknown tenant or gateway, a paused or decommissioned gateway, or
//! content the store rejects is terminated (`AckKind::Term`) and counted in
//! `fleetlog_jetstream_terminated_total{reason}`: JetStream stops redelivering it instead of
//! retrying it for ever. Transient failures (database, event store) are negatively acknowledged
//! with a delay and come back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use events_schema::{
    EventId, Metadata, NewEvent, StreamId, SystemKind, TelemetryReceived, TenantId,
};
use futures::{FutureExt, StreamExt};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::event_store::{EventStore, EventStoreError, ExpectedVersion};
use crate::registry::{self, SystemStatus};

/// How long one fetch waits for the first message; it bounds how late shutdown is noticed.
const FETCH_EXPIRY: Duration = Duration::from_secs(1);
/// The pause before a message that failed for a transient reason is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How long a positive gateway lookup is trusted (a pause takes at most this long to apply).
const REGISTRY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How often the consumer's backlog is published as `fleetlog_jetstream_pending`.
const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(15);
/// How long messages stay in a stream this intake creates (an existing stream is not changed).
const CREATED_STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest wait between two attempts after NATS failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Namespace of event ids derived from a `Nats-Msg-Id` header.
const MSG_ID_NAMESPACE: &str = "jetstream-msg-id";
/// Namespace of event ids derived from the stream and its sequence.
const SEQUENCE_NAMESPACE: &str = "jetstream-stream-sequence";

/// Where the telemetry intake reads from and how; built with [`JetStreamIntakeConfig::new`] and
/// adjusted field by field, so deployments only spell out what differs from the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamIntakeConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (the intake is on when `NATS_URL` is set).
    pub nats_url: String,
    /// The JetStream stream holding the telemetry; created with subjects `{subject_prefix}.>`
    /// when missing.
    pub stream_name: String,
    /// Gateways publish to `{subject_prefix}.{tenant id}.{gateway key}`.
    pub subject_prefix: String,
    /// The durable pull consumer's name: every Fleetlog instance shares it, so each message is
    /// handled by one of them.
    pub consumer_name: String,
    /// The most messages fetched, and appended concurrently, at once.
    pub batch_size: usize,
    /// How long JetStream waits for an acknowledgement before redelivering (applies when the
    /// consumer is created; an existing consumer keeps its own).
    pub ack_wait: Duration,
}

impl JetStreamIntakeConfig {
    /// The stream name used unless configured otherwise.
    pub const DEFAULT_STREAM_NAME: &'static str = "FLEETLOG_TELEMETRY";
    /// The subject prefix used unless configured otherwise.
    pub const DEFAULT_SUBJECT_PREFIX: &'static str = "telemetry.data";
    /// The durable consumer name used unless configured otherwise.
    pub const DEFAULT_CONSUMER_NAME: &'static str = "fleetlog-telemetry";
    /// The batch size used unless configured otherwise.
    pub const DEFAULT_BATCH_SIZE: usize = 256;
    /// The acknowledgement wait used unless configured otherwise.
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

    /// The defaults for everything but the server's address.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream_name: Self::DEFAULT_STREAM_NAME.to_owned(),
            subject_prefix: Self::DEFAULT_SUBJECT_PREFIX.to_owned(),
            consumer_name: Self::DEFAULT_CONSUMER_NAME.to_owned(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            ack_wait: Self::DEFAULT_ACK_WAIT,
        }
    }

    /// The subjects the stream captures and the consumer filters on: `{subject_prefix}.>`.
    pub fn subject_filter(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// Rejects settings JetStream would refuse or misread, before anything is created.
    fn validate(&self) -> Result<(), IntakeError> {
        let invalid = |reason: String| Err(IntakeError::InvalidConfig(reason));
        let bad_name = |name: &str| {
            name.is_empty()
                || name
                    .chars()
                    .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
        };
        if bad_name(&self.stream_name) {
            return invalid(format!("bad stream name {:?}", self.stream_name));
        }
        if bad_name(&self.consumer_name) {
            return invalid(format!("bad consumer name {:?}", self.consumer_name));
        }
        let prefix = &self.subject_prefix;
        if prefix.is_empty()
            || prefix.split('.').any(|token| {
                token.is_empty()
                    || token == "*"
                    || token == ">"
                    || token.contains(char::is_whitespace)
            })
        {
            return invalid(format!("bad subject prefix {prefix:?}"));
        }
        if self.batch_size == 0 {
            return invalid("the batch size must be at least 1".into());
        }
        if self.ack_wait.is_zero() {
            return invalid("the ack wait must be longer than zero".into());
        }
        Ok(())
    }
}

/// Why the intake could not start (or, for [`IntakeError::StoreUnavailable`], had to stop):
/// everything else is retried with backoff while it runs.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A setting is unusable.
    #[error("invalid JetStream intake configuration: {0}")]
    InvalidConfig(String),
    /// The NATS server could not be reached at start-up.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The server, without credentials.
        url: String,
        /// What failed.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream could neither be found nor created.
    #[error("cannot get or create the JetStream stream {stream}: {source}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// The durable consumer could neither be found nor created.
    #[error("cannot get or create the consumer {consumer} on stream {stream}: {source}")]
    Consumer {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// What failed.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    /// The event store's writer stopped, so nothing more can be stored.
    #[error("the event store stopped; telemetry can no longer be stored")]
    StoreUnavailable,
}

/// Reads gateway telemetry from JetStream into `store` until `shutdown` resolves.
///
/// Connects, gets or creates the stream (subjects `{prefix}.>`, file storage) and the durable
/// pull consumer (explicit acks), then fetches and stores batch after batch. `pool` is used to
/// look gateways up in `registry_systems`. Failures at start-up are returned; later NATS and
/// database failures are logged, counted and retried with backoff. Shutdown is honoured between
/// batches, so a batch in flight is finished and acknowledged first.
pub async fn run<S: EventStore>(
    config: JetStreamIntakeConfig,
    store: S,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IntakeError> {
    config.validate()?;
    let client = async_nats::ConnectOptions::new()
        .name("fleetlog-jetstream-intake")
        .connect(config.nats_url.as_str())
        .await
        .map_err(|source| IntakeError::Connect {
            url: without_credentials(&config.nats_url),
            source,
        })?;
    let context = jetstream::new(client);
    let mut subscription = Some(subscribe(&context, &config).await?);
    tracing::info!(
        stream = %config.stream_name,
        consumer = %config.consumer_name,
        subjects = %config.subject_filter(),
        "JetStream telemetry intake started"
    );

    let mut intake = Intake {
        registry: Registry::new(pool),
        config,
    };
    let mut shutdown = pin!(shutdown.fuse());
    let mut failures: u32 = 0;
    let mut last_pending_report: Option<Instant> = None;
    loop {
        if shutdown.as_mut().now_or_never().is_some() {
            break;
        }
        if failures > 0 {
            let delay = backoff(failures);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        let current = match subscription.take() {
            Some(current) => current,
            None => match subscribe(&context, &intake.config).await {
                Ok(fresh) => fresh,
                Err(error) => {
                    tracing::warn!(%error, "JetStream intake: cannot set up the consumer; retrying");
                    metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
                    failures = failures.saturating_add(1);
                    continue;
                }
            },
        };

        if last_pending_report.is_none_or(|at| at.elapsed() >= PENDING_REPORT_INTERVAL) {
            last_pending_report = Some(Instant::now());
            report_pending(&current.consumer).await;
        }

        let started = Instant::now();
        let (messages, fetch_error) = fetch(&current.consumer, intake.config.batch_size).await;
        let fetched = messages.len();
        if fetched > 0 {
            let span = tracing::info_span!("jetstream_batch", size = fetched);
            intake
                .process_batch(&store, &current, messages)
                .instrument(span)
                .await?;
        }
        match fetch_error {
            Some(error) => {
                // The consumer may be gone or the connection down: set up again after a pause.
                tracing::warn!(%error, "JetStream intake: fetch failed; retrying");
                metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
                failures = failures.saturating_add(1);
            }
            None => {
                failures = 0;
                subscription = Some(current);
                if fetched == 0 && started.elapsed() < FETCH_EXPIRY / 2 {
                    // The server answered at once without messages (e.g. "408 Requests
                    // Pending" from competing instances): do not spin.
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
    tracing::info!("JetStream telemetry intake stopped");
    Ok(())
}

/// The consumer, with what event ids need to know about its stream.
struct Subscription {
    consumer: PullConsumer,
    /// The stream's creation time, in nanoseconds since the Unix epoch.
    stream_created: u128,
}

/// Gets or creates the stream and the durable consumer.
async fn subscribe(
    context: &jetstream::Context,
    config: &JetStreamIntakeConfig,
) -> Result<Subscription, IntakeError> {
    let filter = config.subject_filter();
    let stream = context
        .get_or_create_stream(stream::Config {
            name: config.stream_name.clone(),
            subjects: vec![filter.clone()],
            storage: stream::StorageType::File,
            max_age: CREATED_STREAM_MAX_AGE,
            ..Default::default()
        })
        .await
        .map_err(|source| IntakeError::Stream {
            stream: config.stream_name.clone(),
            source,
        })?;
    let info = stream.cached_info();
    if !info.config.subjects.contains(&filter) {
        tracing::warn!(
            stream = %config.stream_name,
            subjects = ?info.config.subjects,
            expected = %filter,
            "the existing JetStream stream does not capture the intake's subjects"
        );
    }
    let stream_created = unix_nanos(info.created);
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &config.consumer_name,
            pull::Config {
                durable_name: Some(config.consumer_name.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                filter_subject: filter.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|source| IntakeError::Consumer {
            stream: config.stream_name.clone(),
            consumer: config.consumer_name.clone(),
            source,
        })?;
    let existing = &consumer.cached_info().config;
    if existing.ack_wait != config.ack_wait || existing.filter_subject != filter {
        tracing::warn!(
            consumer = %config.consumer_name,
            ack_wait = ?existing.ack_wait,
            filter = %existing.filter_subject,
            "the existing JetStream consumer differs from the configuration; keeping it as it is"
        );
    }
    Ok(Subscription {
        consumer,
        stream_created,
    })
}

/// One fetch: waits up to [`FETCH_EXPIRY`] for the first message, then returns what is
/// available, up to `batch_size`. An error ends the batch; the messages before it are kept.
async fn fetch(
    consumer: &PullConsumer,
    batch_size: usize,
) -> (Vec<jetstream::Message>, Option<async_nats::Error>) {
    let mut batch = match consumer
        .fetch()
        .max_messages(batch_size)
        .expires(FETCH_EXPIRY)
        .messages()
        .await
    {
        Ok(batch) => batch,
        Err(error) => return (Vec::new(), Some(error.into())),
    };
    let mut messages = Vec::with_capacity(batch_size.min(1024));
    while let Some(item) = batch.next().await {
        match item {
            Ok(message) => messages.push(message),
            Err(error) => return (messages, Some(error)),
        }
    }
    (messages, None)
}

/// Publishes the consumer's backlog as the `fleetlog_jetstream_pending` gauge.
async fn report_pending(consumer: &PullConsumer) {
    match consumer.get_info().await {
        Ok(info) => {
            metrics::gauge!("fleetlog_jetstream_pending").set(info.num_pending as f64);
            tracing::debug!(
                pending = info.num_pending,
                ack_pending = info.num_ack_pending,
                "JetStream intake backlog"
            );
        }
        Err(error) => {
            tracing::debug!(%error, "JetStream intake: cannot read the consumer's info");
        }
    }
}

/// What to do with one message.
enum Verdict {
    /// Append this event to this stream, then acknowledge.
    Store(StreamId, Box<NewEvent>),
    /// It can never be stored: terminate it, counted under this reason.
    Terminate(&'static str),
    /// A transient failure: have it redelivered after a pause.
    Retry,
}

/// The state the batch loop keeps between batches.
struct Intake {
    config: JetStreamIntakeConfig,
    registry: Registry,
}

impl Intake {
    /// Decides about every message of a batch, then stores the good ones concurrently and
    /// acknowledges (or terminates, or negatively acknowledges) each once its own fate is known.
    async fn process_batch<S: EventStore>(
        &mut self,
        store: &S,
        subscription: &Subscription,
        messages: Vec<jetstream::Message>,
    ) -> Result<(), IntakeError> {
        // Gateways are looked up once per batch, however many messages they sent.
        let mut gateways: HashMap<(Uuid, String), Result<Gateway, ()>> = HashMap::new();
        let mut work = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(verdict) = self.judge(subscription, &message, &mut gateways).await else {
                continue;
            };
            work.push((message, verdict));
        }

        let results = futures::future::join_all(
            work.into_iter()
                .map(|(message, verdict)| settle(store, message, verdict)),
        )
        .await;
        if results.into_iter().any(|ok| !ok) {
            return Err(IntakeError::StoreUnavailable);
        }
        Ok(())
    }

    /// The verdict on one message; `None` when it cannot even be acknowledged (no JetStream
    /// reply subject), which leaves it to JetStream's redelivery.
    async fn judge(
        &mut self,
        subscription: &Subscription,
        message: &jetstream::Message,
        gateways: &mut HashMap<(Uuid, String), Result<Gateway, ()>>,
    ) -> Option<Verdict> {
        let (sequence, published) = match message.info() {
            Ok(info) => (info.stream_sequence, to_chrono(info.published)),
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "JetStream message without metadata");
                metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
                return None;
            }
        };
        let Some((tenant, gateway)) =
            parse_subject(&self.config.subject_prefix, message.subject.as_str())
        else {
            return Some(Verdict::Terminate("malformed_subject"));
        };
        let key = (tenant, gateway.to_owned());
        let state = match gateways.get(&key) {
            Some(state) => *state,
            None => {
                let state = self
                    .registry
                    .resolve(tenant, gateway)
                    .await
                    .map_err(|error| {
                        tracing::warn!(%error, "JetStream intake: gateway lookup failed");
                        metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
                    });
                gateways.insert(key, state);
                state
            }
        };
        let system_id = match state {
            Err(()) => return Some(Verdict::Retry),
            Ok(Gateway::Unknown) => return Some(Verdict::Terminate("unknown_gateway")),
            Ok(Gateway::Inactive(reason)) => return Some(Verdict::Terminate(reason)),
            Ok(Gateway::Active(system_id)) => system_id,
        };

        let headers = message.headers.as_ref();
        let content_type = headers.and_then(|headers| {
            headers
                .iter()
                .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case("content-type"))
                .and_then(|(_, values)| values.first())
                .map(|value| value.as_str().to_owned())
        });
        let msg_id = headers
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|value| value.as_str())
            .filter(|id| !id.is_empty());
        let event_id = match msg_id {
            Some(id) => EventId::derived(
                MSG_ID_NAMESPACE,
                format!("{tenant}.{gateway}.{id}").as_bytes(),
            ),
            None => EventId::derived(
                SEQUENCE_NAMESPACE,
                format!(
                    "{}.{}.{sequence}",
                    self.config.stream_name, subscription.stream_created
                )
                .as_bytes(),
            ),
        };
        let data = message.payload.to_vec();
        let received = TelemetryReceived {
            content_type,
            size_bytes: data.len() as u64,
            subject: Some(message.subject.to_string()),
            jetstream_sequence: Some(sequence),
        };
        let event = NewEvent::new(
            TenantId(tenant),
            &received,
            published.unwrap_or_else(Utc::now),
        )
        .with_event_id(event_id)
        .with_data(data)
        .with_metadata(Metadata {
            source: Some("jetstream".to_owned()),
            ..Metadata::default()
        });
        Some(Verdict::Store(
            StreamId::gateway(system_id),
            Box::new(event),
        ))
    }
}

/// Carries out one verdict. False only when the event store has stopped.
async fn settle<S: EventStore>(store: &S, message: jetstream::Message, verdict: Verdict) -> bool {
    let (stream, event) = match verdict {
        Verdict::Terminate(reason) => {
            terminate(&message, reason).await;
            return true;
        }
        Verdict::Retry => {
            retry_later(&message).await;
            return true;
        }
        Verdict::Store(stream, event) => (stream, event),
    };
    let event_id = event.event_id;
    match store
        .append(&stream, ExpectedVersion::Any, vec![*event])
        .await
    {
        Ok(outcome) => {
            if outcome.duplicate {
                metrics::counter!("fleetlog_jetstream_duplicates_total").increment(1);
                tracing::debug!(%event_id, "redelivered telemetry was already stored");
            } else {
                metrics::counter!("fleetlog_jetstream_stored_total").increment(1);
            }
            if let Err(error) = message.ack().await {
                // It will be redelivered and recognised as a duplicate.
                tracing::warn!(%error, %event_id, "JetStream intake: ack failed");
                metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
            }
            true
        }
        Err(
            error @ (EventStoreError::Rejected(_)
            | EventStoreError::InvalidAppend(_)
            | EventStoreError::EventIdReused { .. }),
        ) => {
            tracing::warn!(%error, %event_id, subject = %message.subject, "telemetry refused by the event store");
            terminate(&message, "rejected").await;
            true
        }
        Err(EventStoreError::Unavailable) => {
            retry_later(&message).await;
            false
        }
        Err(error) => {
            tracing::warn!(%error, %event_id, "JetStream intake: append failed; will be redelivered");
            metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
            retry_later(&message).await;
            true
        }
    }
}

/// Stops JetStream from ever redelivering `message`, and counts why.
async fn terminate(message: &jetstream::Message, reason: &'static str) {
    tracing::debug!(subject = %message.subject, reason, "terminating JetStream message");
    metrics::counter!("fleetlog_jetstream_terminated_total", "reason" => reason).increment(1);
    if let Err(error) = message.ack_with(AckKind::Term).await {
        tracing::warn!(%error, "JetStream intake: terminating a message failed");
        metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
    }
}

/// Asks JetStream to redeliver `message` after [`RETRY_DELAY`].
async fn retry_later(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await {
        // Without the nak it still comes back, after the ack wait.
        tracing::debug!(%error, "JetStream intake: nak failed");
    }
}

/// A gateway as the registry knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gateway {
    /// Registered and active: its telemetry goes to `gateway-{id}`.
    Active(Uuid),
    /// Registered but refusing reports; the reason to count the termination under.
    Inactive(&'static str),
    /// No gateway with this key in this tenant.
    Unknown,
}

/// Gateway lookups in `registry_systems`, with active gateways cached for a short while.
struct Registry {
    pool: PgPool,
    active: HashMap<(Uuid, String), (Uuid, Instant)>,
}

impl Registry {
    fn new(pool: PgPool) -> Self {
        Self {
            pool,
            active: HashMap::new(),
        }
    }

    /// The gateway `key` of `tenant`. Only active gateways are cached, so a registration, a
    /// resumption or a correction is seen at once and a pause within [`REGISTRY_CACHE_TTL`].
    async fn resolve(&mut self, tenant: Uuid, key: &str) -> Result<Gateway, sqlx::Error> {
        let cache_key = (tenant, key.to_owned());
        if let Some((system_id, at)) = self.active.get(&cache_key) {
            if at.elapsed() < REGISTRY_CACHE_TTL {
                return Ok(Gateway::Active(*system_id));
            }
        }
        let gateway = match registry::system_by_key(&self.pool, key).await? {
            Some(found) if found.tenant_id.0 == tenant && found.kind == SystemKind::Gateway => {
                match found.status {
                    SystemStatus::Active => Gateway::Active(found.system_id),
                    SystemStatus::Paused => Gateway::Inactive("gateway_paused"),
                    SystemStatus::Decommissioned => Gateway::Inactive("gateway_decommissioned"),
                }
            }
            _ => Gateway::Unknown,
        };
        if let Gateway::Active(system_id) = gateway {
            if self.active.len() >= 10_000 {
                self.active
                    .retain(|_, (_, at)| at.elapsed() < REGISTRY_CACHE_TTL);
            }
            self.active.insert(cache_key, (system_id, Instant::now()));
        } else {
            self.active.remove(&cache_key);
        }
        Ok(gateway)
    }
}

/// Splits `{prefix}.{tenant}.{gateway}` into the tenant id and the gateway key.
fn parse_subject<'a>(prefix: &str, subject: &'a str) -> Option<(Uuid, &'a str)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (tenant, gateway) = rest.split_once('.')?;
    if gateway.is_empty() || gateway.contains('.') {
        return None;
    }
    Some((Uuid::try_parse(tenant).ok()?, gateway))
}

/// Nanoseconds since the Unix epoch (0 for earlier times), whichever date type async-nats uses.
fn unix_nanos(time: async_nats::datetime::DateTime) -> u128 {
    SystemTime::from(time)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// A JetStream time as a chrono time, when it is representable and not the zero time.
fn to_chrono(time: async_nats::datetime::DateTime) -> Option<DateTime<Utc>> {
    let since = SystemTime::from(time)
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .filter(|since| !since.is_zero())?;
    DateTime::from_timestamp(i64::try_from(since.as_secs()).ok()?, since.subsec_nanos())
}

/// The wait before the next attempt after `failures` consecutive failures.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// `url` with any `user:password@` removed, for logs and errors.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => url
            .rsplit_once('@')
            .map_or(url, |(_, host)| host)
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_split_into_tenant_and_gateway_key() {
        let tenant = Uuid::now_v7();
        let subject = format!("telemetry.data.{tenant}.FL-7K2D-Q9XM-4HTR");
        assert_eq!(
            parse_subject("telemetry.data", &subject),
            Some((tenant, "FL-7K2D-Q9XM-4HTR"))
        );
        for bad in [
            format!("telemetry.data.{tenant}"),
            format!("telemetry.data.{tenant}."),
            format!("telemetry.data.{tenant}.gw.extra"),
            "telemetry.data.not-a-uuid.gw".to_owned(),
            format!("telemetry.database.{tenant}.gw"),
            format!("other.{tenant}.gw"),
        ] {
            assert_eq!(parse_subject("telemetry.data", &bad), None, "{bad}");
        }
    }

    #[test]
    fn configurations_jetstream_would_refuse_are_rejected() {
        let good = JetStreamIntakeConfig::new("nats://127.0.0.1:4222");
        assert!(good.validate().is_ok());
        assert_eq!(good.subject_filter(), "telemetry.data.>");
        for bad in [
            JetStreamIntakeConfig {
                subject_prefix: "telemetry.>".into(),
                ..good.clone()
            },
            JetStreamIntakeConfig {
                subject_prefix: "telemetry.".into(),
                ..good.clone()
            },
            JetStreamIntakeConfig {
                stream_name: "A.B".into(),
                ..good.clone()
            },
            JetStreamIntakeConfig {
                batch_size: 0,
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            without_credentials("nats://user:secret@nats.internal:4222"),
            "nats://nats.internal:4222"
        );
        assert_eq!(without_credentials("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}
