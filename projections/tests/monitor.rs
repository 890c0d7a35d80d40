//! The liveness monitor, the LinkFailed reactor and the JetStream publisher against a real
//! PostgreSQL and NATS, with a hand-moved clock: transitions, the grace period, pauses,
//! decommissions, restarts mid-outage and publication, each exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{
    DomainEvent, HeartbeatReceived, LivenessPolicySet, NewEvent, StreamId, SystemDecommissioned,
    SystemKind, SystemPaused, SystemRegistered, SystemResumed, TenantId,
};
use projections::alert_publisher::{AlertPublisher, AlertPublisherConfig};
use projections::clock::ManualClock;
use projections::link_failed::LinkFailedAlerts;
use projections::monitor::{LivenessMonitor, MonitorConfig, TickReport};
use projections::reactor::ReactorRunner;
use projections::{Liveness, ProjectionRunner, Registry};
use sqlx::PgPool;
use uuid::Uuid;

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

struct Fleet {
    store: PgEventStore,
    tenant: TenantId,
}

impl Fleet {
    fn new(pool: &PgPool) -> Self {
        Self {
            store: store(pool),
            tenant: TenantId::new(),
        }
    }

    async fn append<E: DomainEvent>(&self, stream: &StreamId, event: &E) {
        self.store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(self.tenant, event, Utc::now())],
            )
            .await
            .unwrap();
    }

    async fn register(&self, name: &str, kind: SystemKind) -> (Uuid, StreamId) {
        let id = Uuid::now_v7();
        let stream = match kind {
            SystemKind::System => StreamId::system(id),
            SystemKind::Gateway => StreamId::gateway(id),
        };
        let registered = SystemRegistered {
            system_id: id,
            system_key: format!("FL-{}", &id.simple().to_string()[20..32].to_uppercase()),
            name: name.into(),
            kind,
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            labels: BTreeMap::new(),
        };
        self.append(&stream, &registered).await;
        (id, stream)
    }

    async fn heartbeat(&self, stream: &StreamId) {
        let heartbeat = HeartbeatReceived {
            agent_version: None,
        };
        self.append(stream, &heartbeat).await;
    }

    /// Folds everything into the liveness and registry read models.
    async fn project(&self) {
        ProjectionRunner::new(self.store.clone(), Liveness, 100)
            .catch_up(None)
            .await
            .unwrap();
        ProjectionRunner::new(self.store.clone(), Registry, 100)
            .catch_up(None)
            .await
            .unwrap();
    }

    async fn count(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    async fn status(&self, system: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM liveness_systems WHERE system_id = $1")
            .bind(system)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    fn monitor(&self, clock: &ManualClock, grace_s: u64) -> LivenessMonitor<ManualClock> {
        let config = MonitorConfig {
            grace: Duration::from_secs(grace_s),
            projector_wait: Duration::from_millis(200),
            ..MonitorConfig::default()
        };
        // Started now (by the real clock, just after the heartbeats), whatever the test clock says.
        LivenessMonitor::new(self.store.clone(), clock.clone(), config).started_at(Utc::now())
    }
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

#[sqlx::test(migrations = "../migrations")]
async fn silent_systems_go_inactive_and_recover_once_each(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (quiet, quiet_stream) = fleet.register("db-1", SystemKind::System).await;
    let (patient, patient_stream) = fleet.register("db-2", SystemKind::System).await;
    let (never_seen, _) = fleet.register("db-3", SystemKind::System).await;
    let policy = LivenessPolicySet {
        system_id: Some(patient),
        heartbeat_timeout_minutes: 30,
    };
    fleet.append(&StreamId::tenant(fleet.tenant), &policy).await;
    fleet.heartbeat(&quiet_stream).await;
    fleet.heartbeat(&patient_stream).await;
    fleet.project().await;
    assert_eq!(fleet.status(quiet).await, "active");
    assert_eq!(fleet.status(never_seen).await, "unknown");

    let start = Utc::now();
    let clock = ManualClock::at(start);
    let monitor = fleet.monitor(&clock, 120);
    // Five minutes on: nobody is overdue.
    clock.advance(minutes(5));
    let report = monitor.tick().await.unwrap();
    assert_eq!(report.went_silent, 0);
    assert!(report.checked_silence);

    // Eleven minutes on: past the default timeout, not past the 30 minutes db-2 has.
    clock.set(start + minutes(11));
    let report = monitor.tick().await.unwrap();
    assert_eq!(
        report,
        TickReport {
            went_silent: 1,
            recovered: 0,
            checked_silence: true
        }
    );
    // Ticking again before the projector folded it appends nothing new (the same derived id).
    monitor.tick().await.unwrap();
    assert_eq!(fleet.count("SystemWentSilent").await, 1);
    fleet.project().await;
    assert_eq!(fleet.status(quiet).await, "inactive");
    assert_eq!(fleet.status(patient).await, "active");
    assert_eq!(
        fleet.status(never_seen).await,
        "unknown",
        "never seen: never silent"
    );
    assert_eq!(monitor.tick().await.unwrap().went_silent, 0);

    // It shows life again (twice before the monitor looks): one SystemRecovered, dated at the
    // first sign of life, however often the monitor ticks.
    fleet.heartbeat(&quiet_stream).await;
    fleet.project().await;
    fleet.heartbeat(&quiet_stream).await;
    fleet.project().await;
    let first_back: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM events WHERE stream_id = $1 AND event_type = 'HeartbeatReceived' \
         ORDER BY position DESC OFFSET 1 LIMIT 1",
    )
    .bind(quiet_stream.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(monitor.tick().await.unwrap().recovered, 1);
    let recovered: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'SystemRecovered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let seen_at: chrono::DateTime<Utc> =
        serde_json::from_value(recovered["seen_at"].clone()).unwrap();
    assert_eq!(seen_at, first_back);
    assert_eq!(monitor.tick().await.unwrap().recovered, 1, "not folded yet");
    assert_eq!(fleet.count("SystemRecovered").await, 1);
    fleet.project().await;
    assert_eq!(fleet.status(quiet).await, "active");
    // A minute after that heartbeat: nothing to do.
    clock.set(Utc::now() + minutes(1));
    let report = monitor.tick().await.unwrap();
    assert_eq!((report.recovered, report.went_silent), (0, 0));

    // LinkFailed: raised on the silence, resolved on the recovery, with the registry's labels.
    let alerts = ReactorRunner::new(fleet.store.clone(), LinkFailedAlerts, 10);
    alerts.catch_up().await.unwrap();
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertTriggered").await, 1);
    assert_eq!(fleet.count("AlertResolved").await, 1);
    let triggered: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'AlertTriggered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(triggered["labels"]["alertname"], "LinkFailed");
    assert_eq!(triggered["labels"]["system_id"], quiet.to_string());
    assert_eq!(triggered["labels"]["tenant_id"], fleet.tenant.to_string());
    assert_eq!(triggered["labels"]["system_name"], "db-1");
    assert_eq!(triggered["dedup_key"], format!("LinkFailed:{quiet}"));
    let streams: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT stream_id FROM events WHERE event_type IN ('AlertTriggered', 'AlertResolved')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(streams.len(), 1, "trigger and resolve are one alert");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restarted_monitor_waits_out_its_grace_period(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (system, stream) = fleet.register("edge-1", SystemKind::Gateway).await;
    fleet.heartbeat(&stream).await;
    fleet.project().await;
    // Fleetlog was down for an hour: every system looks overdue when it comes back.
    let clock = ManualClock::at(Utc::now() + minutes(60));
    let config = MonitorConfig {
        grace: Duration::from_secs(120),
        projector_wait: Duration::from_millis(200),
        ..MonitorConfig::default()
    };
    let monitor = LivenessMonitor::new(fleet.store.clone(), clock.clone(), config);
    let report = monitor.tick().await.unwrap();
    assert!(!report.checked_silence, "within the grace period");
    assert_eq!(report.went_silent, 0);
    clock.advance(minutes(1));
    assert_eq!(monitor.tick().await.unwrap().went_silent, 0);
    // Past the grace period, silence counts from the monitor's start: an agent that reports every
    // few minutes has had no full timeout to do so yet.
    clock.advance(minutes(1) + chrono::Duration::seconds(1));
    let report = monitor.tick().await.unwrap();
    assert!(report.checked_silence);
    assert_eq!(report.went_silent, 0);
    // A whole timeout after the start without a report: now it is silent.
    clock.advance(minutes(8));
    assert_eq!(monitor.tick().await.unwrap().went_silent, 1);
    fleet.project().await;
    assert_eq!(fleet.status(system).await, "inactive");
}

#[sqlx::test(migrations = "../migrations")]
async fn paused_systems_are_not_watched_and_decommissioned_ones_leave(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (paused, paused_stream) = fleet.register("lab-1", SystemKind::System).await;
    let (gone, gone_stream) = fleet.register("lab-2", SystemKind::System).await;
    fleet.heartbeat(&paused_stream).await;
    fleet.heartbeat(&gone_stream).await;
    fleet
        .append(&paused_stream, &SystemPaused { reason: None })
        .await;
    fleet
        .append(&gone_stream, &SystemDecommissioned { reason: None })
        .await;
    fleet.project().await;
    let clock = ManualClock::at(Utc::now() + minutes(60));
    let monitor = fleet.monitor(&clock, 0);
    assert_eq!(monitor.tick().await.unwrap().went_silent, 0);

    // Resumed, it is watched again from its resumption, and goes silent a timeout later.
    fleet.append(&paused_stream, &SystemResumed {}).await;
    fleet.project().await;
    let report = monitor.tick().await.unwrap();
    assert_eq!(report.went_silent, 1);
    fleet.project().await;
    assert_eq!(fleet.status(paused).await, "inactive");
    assert_eq!(
        fleet.status(gone).await,
        "active",
        "left the monitor as it was"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_monitor_restarted_mid_outage_neither_doubles_nor_loses_a_transition(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let mut streams = Vec::new();
    for n in 0..20 {
        let (_, stream) = fleet
            .register(&format!("node-{n}"), SystemKind::System)
            .await;
        fleet.heartbeat(&stream).await;
        streams.push(stream);
    }
    fleet.project().await;
    let clock = ManualClock::at(Utc::now() + minutes(15));
    let first = fleet.monitor(&clock, 0);
    assert_eq!(first.tick().await.unwrap().went_silent, 20);
    // It dies before the projector folded its appends; the next one starts and ticks.
    drop(first);
    let second = fleet.monitor(&clock, 0);
    second.tick().await.unwrap();
    assert_eq!(fleet.count("SystemWentSilent").await, 20);
    fleet.project().await;

    // Half come back; two monitors (an old one still running somewhere) both see it.
    for stream in &streams[..10] {
        fleet.heartbeat(stream).await;
    }
    fleet.project().await;
    let third = fleet.monitor(&clock, 0);
    let (a, b) = tokio::join!(second.tick(), third.tick());
    assert_eq!((a.unwrap().recovered, b.unwrap().recovered), (10, 10));
    assert_eq!(fleet.count("SystemRecovered").await, 10);
    fleet.project().await;
    let inactive: i64 =
        sqlx::query_scalar("SELECT count(*) FROM liveness_systems WHERE status = 'inactive'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(inactive, 10);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_lagging_projector_holds_silence_back(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (_, stream) = fleet.register("app-1", SystemKind::System).await;
    fleet.heartbeat(&stream).await;
    fleet.project().await;
    // A heartbeat the projector has not folded yet: the read model looks older than it is.
    fleet.heartbeat(&stream).await;
    let clock = ManualClock::at(Utc::now() + minutes(15));
    let monitor = fleet.monitor(&clock, 0);
    let report = monitor.tick().await.unwrap();
    assert!(!report.checked_silence);
    assert_eq!(report.went_silent, 0);
    fleet.project().await;
    assert_eq!(monitor.tick().await.unwrap().went_silent, 1);
}

/// The last message JetStream kept on `subject`, as JSON.
async fn last_message(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> serde_json::Value {
    let stream = jetstream.get_stream(stream).await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn transitions_are_published_to_jetstream_once_each_across_restarts(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (gateway, stream) = fleet.register("gw-7", SystemKind::Gateway).await;
    fleet.heartbeat(&stream).await;
    fleet.project().await;
    let clock = ManualClock::at(Utc::now() + minutes(15));
    let monitor = fleet.monitor(&clock, 0);
    monitor.tick().await.unwrap();
    fleet.project().await;

    let run = Uuid::now_v7().simple().to_string();
    let config = AlertPublisherConfig {
        nats_url: "nats://127.0.0.1:4222".into(),
        stream_name: format!("FLEETLOG_ALERTS_TEST_{run}"),
        subject_prefix: format!("alerttest{run}"),
    };
    let subject = config.subject(&fleet.tenant.to_string());
    let alerts = ReactorRunner::new(fleet.store.clone(), LinkFailedAlerts, 10);
    alerts.catch_up().await.unwrap();
    let publisher = AlertPublisher::connect(fleet.store.clone(), config.clone())
        .await
        .unwrap();
    publisher.catch_up().await.unwrap();
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let messages = |name: String| {
        let jetstream = jetstream.clone();
        async move {
            let mut stream = jetstream.get_stream(name).await.unwrap();
            stream.info().await.unwrap().state.messages
        }
    };
    assert_eq!(messages(config.stream_name.clone()).await, 1);
    let offline = last_message(&jetstream, &config.stream_name, &subject).await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["system_id"], gateway.to_string());
    assert_eq!(offline["kind"], "gateway");
    assert_eq!(offline["tenant_id"], fleet.tenant.to_string());

    // Recovery: published once more, as online.
    fleet.heartbeat(&stream).await;
    fleet.project().await;
    monitor.tick().await.unwrap();
    alerts.catch_up().await.unwrap();
    publisher.catch_up().await.unwrap();
    assert_eq!(messages(config.stream_name.clone()).await, 2);
    let online = last_message(&jetstream, &config.stream_name, &subject).await;
    assert_eq!(online["status"], "online");

    // A restart that replays from the start publishes nothing again.
    sqlx::query(
        "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'gw_offline_publisher'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let restarted = AlertPublisher::connect(fleet.store.clone(), config.clone())
        .await
        .unwrap();
    restarted.catch_up().await.unwrap();
    assert_eq!(messages(config.stream_name.clone()).await, 2);
    assert_eq!(fleet.count("NotificationDelivered").await, 2);
    jetstream.delete_stream(&config.stream_name).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn decommissioning_a_silent_system_resolves_its_link_failed_alert(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (_, silent_stream) = fleet.register("old-1", SystemKind::System).await;
    let (_, healthy_stream) = fleet.register("old-2", SystemKind::System).await;
    fleet.heartbeat(&silent_stream).await;
    fleet.project().await;
    let clock = ManualClock::at(Utc::now() + minutes(15));
    assert_eq!(
        fleet.monitor(&clock, 0).tick().await.unwrap().went_silent,
        1
    );
    let alerts = ReactorRunner::new(fleet.store.clone(), LinkFailedAlerts, 10);
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertTriggered").await, 1);

    // Retired: the silent one's alert resolves; the one never seen raises and resolves nothing.
    for stream in [&silent_stream, &healthy_stream] {
        fleet
            .append(stream, &SystemDecommissioned { reason: None })
            .await;
    }
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertResolved").await, 1);
    let resolved: String = sqlx::query_scalar(
        "SELECT payload->>'dedup_key' FROM events WHERE event_type = 'AlertResolved'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let triggered: String = sqlx::query_scalar(
        "SELECT payload->>'dedup_key' FROM events WHERE event_type = 'AlertTriggered'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(resolved, triggered);

    // A replay from 0 decides the same: nothing new.
    sqlx::query(
        "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'link_failed_alerts'",
    )
    .execute(&pool)
    .await
    .unwrap();
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertResolved").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_silence_that_raced_a_pause_raises_no_alert(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    let (_, stream) = fleet.register("lab-9", SystemKind::System).await;
    fleet.heartbeat(&stream).await;
    fleet.project().await;
    // The monitor read the row while it was active; the pause landed before its append.
    fleet.append(&stream, &SystemPaused { reason: None }).await;
    let silent = events_schema::SystemWentSilent {
        last_seen_at: Utc::now(),
        timeout_minutes: 10,
    };
    fleet.append(&stream, &silent).await;
    fleet.project().await;
    let alerts = ReactorRunner::new(fleet.store.clone(), LinkFailedAlerts, 1);
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertTriggered").await, 0, "paused: no alert");

    // Resumed, a later silence raises one, in a batch that starts after the resume.
    fleet.append(&stream, &SystemResumed {}).await;
    alerts.catch_up().await.unwrap();
    let silent_again = events_schema::SystemWentSilent {
        last_seen_at: Utc::now(),
        timeout_minutes: 10,
    };
    fleet.append(&stream, &silent_again).await;
    alerts.catch_up().await.unwrap();
    assert_eq!(fleet.count("AlertTriggered").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_burst_of_alerts_is_published_once_each(pool: PgPool) {
    let fleet = Fleet::new(&pool);
    for n in 0..30 {
        let (_, stream) = fleet
            .register(&format!("gw-{n}"), SystemKind::Gateway)
            .await;
        fleet.heartbeat(&stream).await;
    }
    fleet.project().await;
    let clock = ManualClock::at(Utc::now() + minutes(15));
    assert_eq!(
        fleet.monitor(&clock, 0).tick().await.unwrap().went_silent,
        30
    );
    ReactorRunner::new(fleet.store.clone(), LinkFailedAlerts, 100)
        .catch_up()
        .await
        .unwrap();

    let run = Uuid::now_v7().simple().to_string();
    let config = AlertPublisherConfig {
        nats_url: "nats://127.0.0.1:4222".into(),
        stream_name: format!("FLEETLOG_ALERTS_BURST_{run}"),
        subject_prefix: format!("alertburst{run}"),
    };
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for _ in 0..2 {
        let publisher = AlertPublisher::connect(fleet.store.clone(), config.clone())
            .await
            .unwrap();
        publisher.catch_up().await.unwrap();
        let mut stream = jetstream.get_stream(&config.stream_name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 30);
        assert_eq!(fleet.count("NotificationDelivered").await, 30);
        // A restart that replays everything publishes nothing again.
        sqlx::query(
            "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'gw_offline_publisher'",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    jetstream.delete_stream(&config.stream_name).await.unwrap();
}
