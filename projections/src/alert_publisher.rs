//! Publishes LinkFailed alerts to NATS JetStream, on `{prefix}.{tenant id}.gw_offline` (prefix
//! `alert` by default), exactly once each, across restarts.
//!
//! It follows what the LinkFailed reactor raises, so it publishes exactly when an alert fires or
//! resolves (paused and decommissioned systems raise none): `"status": "offline"` when a system
//! or gateway went silent, `"online"` when it recovered, `"decommissioned"` when a silent one was
//! decommissioned. After JetStream acknowledged a message, the publisher appends
//! `NotificationDelivered` (channel `jetstream`) to the alert's stream, with an id derived from
//! the alert event; an alert whose delivery is already stored is never published again. The
//! message carries `Nats-Msg-Id` = that same id, so a crash between JetStream's acknowledgement
//! and the append makes the retry a duplicate JetStream drops (the stream Fleetlog creates keeps a
//! 24 h duplicate window; a shorter window on an existing stream is logged as a warning). An
//! alert whose transition or system cannot be found is parked, not skipped.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use command_side::event_store::postgres::{read_by_ids_on, ReadFilter, EVENTS_CHANNEL};
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use events_schema::{
    AlertResolved, AlertTriggered, DomainEvent, EventId, NewEvent, NotificationDelivered,
    RecordedEvent, SystemRecovered, SystemWentSilent,
};
use futures::FutureExt;
use serde_json::json;
use sqlx::postgres::PgListener;

use crate::checkpoint;
use crate::link_failed::{dedup_key, registered_systems};
use crate::runtime::{read_batch, record_progress, RetryPolicy, RuntimeError, IDLE_POLL};

/// The publisher's name: checkpoint and lease key, namespace of its derived ids.
pub const PUBLISHER_NAME: &str = "gw_offline_publisher";

/// Where the publisher publishes.
#[derive(Debug, Clone)]
pub struct AlertPublisherConfig {
    /// NATS server URL (NATS_URL).
    pub nats_url: String,
    /// Stream created to keep the alerts if none captures them (NATS_ALERT_STREAM).
    pub stream_name: String,
    /// Subject prefix (NATS_ALERT_SUBJECT_PREFIX, default `alert`).
    pub subject_prefix: String,
}

impl AlertPublisherConfig {
    /// Defaults for a NATS server at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream_name: "FLEETLOG_ALERTS".into(),
            subject_prefix: "alert".into(),
        }
    }

    /// The subject of one tenant's liveness alerts.
    pub fn subject(&self, tenant: &str) -> String {
        format!("{}.{tenant}.gw_offline", self.subject_prefix)
    }
}

/// Why the publisher could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// NATS could not be reached or refused.
    #[error("NATS: {0}")]
    Nats(String),
    /// The event store or a table could not be read or written.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<sqlx::Error> for PublishError {
    fn from(error: sqlx::Error) -> Self {
        Self::Runtime(error.into())
    }
}

/// The publisher; see the module doc.
pub struct AlertPublisher {
    store: PgEventStore,
    jetstream: jetstream::Context,
    config: AlertPublisherConfig,
    batch_size: i64,
    retry: RetryPolicy,
}

/// The duplicate window of the stream Fleetlog creates.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The event types the publisher follows: LinkFailed alerts (told apart by their source).
const ALERTS: &[&str] = &[AlertTriggered::EVENT_TYPE, AlertResolved::EVENT_TYPE];

/// The `metadata.source` of what the LinkFailed reactor appends.
const LINK_FAILED_REACTOR: &str = "link_failed_alerts";

impl AlertPublisher {
    /// Connects to NATS and makes sure a stream keeps the alert subjects (creating
    /// `config.stream_name` when none does).
    pub async fn connect(
        store: PgEventStore,
        config: AlertPublisherConfig,
    ) -> Result<Self, PublishError> {
        let client = async_nats::ConnectOptions::new()
            .name("fleetlog-alert-publisher")
            .connect(config.nats_url.as_str())
            .await
            .map_err(|error| PublishError::Nats(error.to_string()))?;
        let jetstream = jetstream::new(client);
        let subjects = format!("{}.*.gw_offline", config.subject_prefix);
        let created = jetstream
            .get_or_create_stream(stream::Config {
                name: config.stream_name.clone(),
                subjects: vec![subjects.clone()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await;
        match created {
            Ok(stream) if stream.cached_info().config.duplicate_window < DUPLICATE_WINDOW => {
                tracing::warn!(stream = %config.stream_name,
                    window_s = stream.cached_info().config.duplicate_window.as_secs(),
                    "the alert stream's duplicate window is short: a crash between publishing and \
                     recording a delivery, then a restart after the window, publishes twice");
            }
            Ok(_) => {}
            // Another stream may already capture these subjects; publishing will tell.
            Err(error) => tracing::warn!(stream = %config.stream_name, %subjects, %error,
                "cannot create the alert stream; publishing to whatever captures the subjects"),
        }
        Ok(Self {
            store,
            jetstream,
            config,
            batch_size: 256,
            retry: RetryPolicy::default(),
        })
    }

    /// The id of the delivery of `alert`: the message's `Nats-Msg-Id` and the id of its
    /// `NotificationDelivered`.
    pub fn delivery_id(alert: &RecordedEvent) -> EventId {
        EventId::derived(PUBLISHER_NAME, alert.event_id.0.as_bytes())
    }

    /// Publishes every transition up to the head; returns the checkpoint.
    pub async fn catch_up(&self) -> Result<i64, PublishError> {
        let mut position = checkpoint::ensure(self.store.pool(), PUBLISHER_NAME).await?;
        loop {
            let end = self.publish_batch(position).await?;
            if end <= position {
                return Ok(position);
            }
            position = end;
        }
    }

    /// Publishes live (woken by `NOTIFY`) until `shutdown` resolves; failures are logged,
    /// counted and retried with backoff, and never skip a transition.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let mut position = checkpoint::ensure(self.store.pool(), PUBLISHER_NAME).await?;
        let mut attempt = 0;
        tokio::pin!(shutdown);
        loop {
            if shutdown.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            match self.publish_batch(position).await {
                Ok(end) if end > position => {
                    attempt = 0;
                    position = end;
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    attempt += 1;
                    let delay = self.retry.delay(attempt);
                    metrics::counter!("fleetlog_projection_errors_total", "projector" => PUBLISHER_NAME)
                        .increment(1);
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64,
                        "publishing liveness alerts failed");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                notified = listener.recv() => { notified?; }
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            while listener.next_buffered().is_some() {}
        }
    }

    /// Publishes the LinkFailed alerts after `after` (one batch) and moves the checkpoint past
    /// them; returns the new checkpoint.
    async fn publish_batch(&self, after: i64) -> Result<i64, PublishError> {
        let filter = ReadFilter {
            event_types: Some(ALERTS),
            skip_payloads: false,
        };
        let batch = {
            let mut conn = self.store.pool().acquire().await?;
            read_batch(&mut conn, filter, self.batch_size, after, None)
                .await
                .map_err(RuntimeError::from)?
        };
        if batch.end <= after {
            return Ok(after);
        }
        let span = tracing::info_span!(
            "alert_publish_batch",
            from = after,
            to = batch.end,
            events = batch.events.len()
        );
        let _entered = span.enter();
        // Only what the LinkFailed reactor raised (clients cannot set that source).
        let alerts: Vec<&RecordedEvent> = batch
            .events
            .iter()
            .filter(|e| e.metadata.source.as_deref() == Some(LINK_FAILED_REACTOR))
            .collect();
        let transitions = self.transitions_of(&alerts).await?;
        let systems = registered_systems(self.store.pool(), &transitions).await?;
        let mut ready = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let transition = alert
                .metadata
                .causation_id
                .and_then(|id| transitions.iter().find(|t| t.event_id.0 == id));
            let system =
                transition.and_then(|t| t.stream_id.system_id().and_then(|id| systems.get(&id)));
            match (transition, system) {
                (Some(transition), Some(system)) => ready.push((alert, transition, system)),
                _ => {
                    self.park(alert, "its transition or system cannot be found")
                        .await?
                }
            }
        }
        self.deliver_all(ready).await?;
        let mut tx = self.store.pool().begin().await?;
        if checkpoint::lock(&mut tx, PUBLISHER_NAME).await? < batch.end {
            checkpoint::advance(&mut tx, PUBLISHER_NAME, batch.end).await?;
        }
        tx.commit().await?;
        record_progress(&self.store, PUBLISHER_NAME, batch.end, batch.events.last()).await;
        Ok(batch.end)
    }

    /// The transitions (SystemWentSilent, SystemRecovered, SystemDecommissioned) that caused
    /// `alerts`.
    async fn transitions_of(
        &self,
        alerts: &[&RecordedEvent],
    ) -> Result<Vec<RecordedEvent>, PublishError> {
        let ids: Vec<uuid::Uuid> = alerts
            .iter()
            .filter_map(|a| a.metadata.causation_id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(read_by_ids_on(self.store.pool(), &ids)
            .await
            .map_err(RuntimeError::from)?)
    }

    /// Parks an alert that cannot be published, so it stays visible and retryable.
    async fn park(&self, alert: &RecordedEvent, reason: &str) -> Result<(), PublishError> {
        tracing::warn!(position = alert.position, %reason, "alert not published; parked");
        let mut tx = self.store.pool().begin().await?;
        if checkpoint::lock(&mut tx, PUBLISHER_NAME).await? < alert.position {
            checkpoint::park(&mut tx, PUBLISHER_NAME, alert, reason, 1).await?;
        }
        tx.commit().await?;
        metrics::counter!("fleetlog_projection_parked_total", "projector" => PUBLISHER_NAME)
            .increment(1);
        Ok(())
    }

    /// Publishes the alerts whose delivery is not stored yet, in order, without waiting for each
    /// acknowledgement before the next publish; once JetStream acknowledged them all, stores
    /// their deliveries. A failure anywhere fails the batch, which is tried again: what was
    /// published already carries the same `Nats-Msg-Id` again and JetStream drops it.
    async fn deliver_all(
        &self,
        ready: Vec<(
            &RecordedEvent,
            &RecordedEvent,
            &crate::link_failed::RegisteredSystem,
        )>,
    ) -> Result<(), PublishError> {
        let ids: Vec<uuid::Uuid> = ready.iter().map(|r| Self::delivery_id(r.0).0).collect();
        let stored: std::collections::HashSet<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM events WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(self.store.pool())
                .await?
                .into_iter()
                .collect();
        let mut published = Vec::new();
        for (alert, transition, system) in ready {
            let delivery_id = Self::delivery_id(alert);
            if stored.contains(&delivery_id.0) {
                continue;
            }
            let (subject, status, body) = self.message(alert, transition, system);
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                delivery_id.to_string().as_str(),
            );
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|error| PublishError::Nats(error.to_string()))?;
            published.push((ack, alert, delivery_id, subject, status));
        }
        let mut deliveries = Vec::with_capacity(published.len());
        for (ack, alert, delivery_id, subject, status) in published {
            ack.await
                .map_err(|error| PublishError::Nats(error.to_string()))?;
            metrics::counter!("fleetlog_alerts_published_total", "status" => status).increment(1);
            let delivered = NotificationDelivered {
                channel: "jetstream".into(),
                target: subject,
                transition: if alert.event_type == AlertTriggered::EVENT_TYPE {
                    "triggered"
                } else {
                    "resolved"
                }
                .into(),
            };
            let mut event = NewEvent::new(alert.tenant_id, &delivered, alert.recorded_at)
                .with_event_id(delivery_id);
            event.metadata.causation_id = Some(alert.event_id.0);
            event.metadata.source = Some(PUBLISHER_NAME.to_owned());
            deliveries.push((&alert.stream_id, event));
        }
        let appended =
            futures::future::join_all(deliveries.into_iter().map(|(stream, event)| {
                self.store.append(stream, ExpectedVersion::Any, vec![event])
            }))
            .await;
        for result in appended {
            result.map_err(RuntimeError::from)?;
        }
        Ok(())
    }

    /// The subject, status and body of the message about `alert`.
    fn message(
        &self,
        alert: &RecordedEvent,
        transition: &RecordedEvent,
        system: &crate::link_failed::RegisteredSystem,
    ) -> (String, &'static str, Vec<u8>) {
        let status = match transition.event_type.as_str() {
            t if t == SystemWentSilent::EVENT_TYPE => "offline",
            t if t == SystemRecovered::EVENT_TYPE => "online",
            _ => "decommissioned",
        };
        let tenant = alert.tenant_id.to_string();
        let subject = self.config.subject(&tenant);
        let payload = json!({
            "type": "gw_offline",
            "status": status,
            "tenant_id": tenant,
            "system_id": system.system_id,
            "system_key": system.system_key,
            "system_name": system.name,
            "kind": system.kind,
            "alert": {
                "name": crate::link_failed::LINK_FAILED,
                "dedup_key": dedup_key(system.system_id),
                "action": if alert.event_type == AlertTriggered::EVENT_TYPE { "trigger" } else { "resolve" },
            },
            "details": transition.payload,
            "at": transition.recorded_at,
            "event_id": transition.event_id,
        });
        (
            subject,
            status,
            serde_json::to_vec(&payload).unwrap_or_default(),
        )
    }
}
