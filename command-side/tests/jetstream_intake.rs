//! The JetStream telemetry intake against a real NATS JetStream server and a real PostgreSQL
//! (one database per test).
//!
//! The NATS server (`NATS_URL`, default `nats://127.0.0.1:4222`) is shared by tests running in
//! parallel, so every test uses its own stream, subject prefix and consumer, and deletes its
//! stream at the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use command_side::event_store::{
    AppendOutcome, EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore,
    Result as StoreResult,
};
use command_side::intake::jetstream::{run, JetStreamIntakeConfig};
use events_schema::{NewEvent, RecordedEvent, StreamId};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn jetstream() -> jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .expect("NATS with JetStream must be running (NATS_URL)");
    jetstream::new(client)
}

/// An intake configuration with a stream, prefix and consumer no other test uses.
fn unique_config() -> JetStreamIntakeConfig {
    let id = &Uuid::new_v4().simple().to_string()[..12];
    JetStreamIntakeConfig {
        stream_name: format!("FLTEST_{id}"),
        subject_prefix: format!("fltest.{id}.telemetry"),
        consumer_name: format!("fltest-{id}"),
        ..JetStreamIntakeConfig::new(nats_url())
    }
}

/// Deletes the test's stream from the shared server when the test ends, passed or failed.
struct DeleteStreamOnDrop(String);

impl Drop for DeleteStreamOnDrop {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Its own thread and runtime: the test's runtime may be gone or panicking.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let _ = jetstream::new(client).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

fn gateway_key() -> String {
    format!(
        "FL-{}",
        Uuid::new_v4().simple().to_string()[..12].to_uppercase()
    )
}

/// Registers a machine the way the registry projector would have.
async fn register(pool: &PgPool, tenant: Uuid, key: &str, kind: &str, status: &str) -> Uuid {
    let system_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO registry_systems (system_id, tenant_id, system_key, kind, name, secret_hash, \
         credentials_version, status, registered_at, updated_at) \
         VALUES ($1, $2, $3, $4, $3, 'not-a-hash', 1, $5, now(), now())",
    )
    .bind(system_id)
    .bind(tenant)
    .bind(key)
    .bind(kind)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    system_id
}

async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every stored telemetry event: its stream, its payload (JSON) and its bytes.
async fn telemetry(pool: &PgPool) -> Vec<(String, serde_json::Value, Vec<u8>)> {
    sqlx::query_as(
        "SELECT stream_id, payload, data FROM events \
         WHERE event_type = 'TelemetryReceived' ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Polls `check` every few milliseconds until it holds; panics after `timeout`.
async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The consumer's state as JetStream sees it, once the intake has created it.
async fn consumer_info(
    js: &jetstream::Context,
    config: &JetStreamIntakeConfig,
) -> Option<consumer::Info> {
    let stream = js.get_stream(&config.stream_name).await.ok()?;
    stream.consumer_info(&config.consumer_name).await.ok()
}

/// Waits until the consumer has nothing left: no message pending delivery, none waiting for an
/// acknowledgement, and the acknowledgement floor at `last_sequence`.
async fn wait_until_consumer_is_done(
    js: &jetstream::Context,
    config: &JetStreamIntakeConfig,
    last_sequence: u64,
    timeout: Duration,
) -> consumer::Info {
    let deadline = Instant::now() + timeout;
    loop {
        let info = consumer_info(js, config).await;
        if let Some(info) = info.as_ref().filter(|info| {
            info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= last_sequence
        }) {
            return info.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the consumer still has work: {:?}",
            info.map(|info| (
                info.num_pending,
                info.num_ack_pending,
                info.ack_floor.stream_sequence
            ))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The event store with a pause after every append has committed, which widens the window in
/// which a crash leaves stored messages unacknowledged; it also counts duplicate outcomes.
#[derive(Clone)]
struct SlowAcks {
    inner: PgEventStore,
    pause_after_commit: Duration,
    duplicates: Arc<AtomicUsize>,
}

impl SlowAcks {
    fn start(pool: &PgPool, pause_after_commit: Duration) -> Self {
        Self {
            inner: PgEventStore::start(pool.clone(), GroupCommitConfig::default()),
            pause_after_commit,
            duplicates: Arc::default(),
        }
    }
}

impl EventStore for SlowAcks {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        let outcome = self.inner.append(stream, expected, events).await?;
        if outcome.duplicate {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(self.pause_after_commit).await;
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: i64,
        limit: i64,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(&self, after_position: i64, limit: i64) -> StoreResult<Vec<RecordedEvent>> {
        self.inner.read_all(after_position, limit).await
    }
}

/// Distinct random payloads, none of them UTF-8 (each starts with 0xFF).
fn random_payloads(n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let len = rng.random_range(0..200);
            let mut payload = vec![0xFF, 0xFE];
            payload.extend_from_slice(&(i as u32).to_be_bytes());
            payload.extend((0..len).map(|_| rng.random::<u8>()));
            payload
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_message_is_stored_exactly_once_across_a_crash(pool: PgPool) {
    let js = jetstream().await;
    let config = JetStreamIntakeConfig {
        batch_size: 20,
        ack_wait: Duration::from_secs(2),
        ..unique_config()
    };
    let _cleanup = DeleteStreamOnDrop(config.stream_name.clone());
    let tenant = Uuid::now_v7();
    let key = gateway_key();
    let gateway = register(&pool, tenant, &key, "gateway", "active").await;
    let subject = format!("{}.{tenant}.{key}", config.subject_prefix);

    // The stream exists before the intake first runs, as when gateways publish during a deploy.
    js.get_or_create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.subject_filter()],
        ..Default::default()
    })
    .await
    .unwrap();
    let payloads = random_payloads(300);
    for (i, payload) in payloads.iter().enumerate() {
        let mut message = PublishMessage::build().payload(payload.clone().into());
        if i.is_multiple_of(2) {
            message = message.message_id(format!("reading-{i}"));
        }
        if i.is_multiple_of(3) {
            message = message.header("Content-Type", "application/x-fleetlog-telemetry");
        }
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, i as u64 + 1);
    }

    // First run: crash (abort) while a batch is stored but not yet acknowledged.
    let slow = SlowAcks::start(&pool, Duration::from_millis(200));
    let first = tokio::spawn(run(
        config.clone(),
        slow.clone(),
        pool.clone(),
        std::future::pending(),
    ));
    wait_until("some messages are stored", Duration::from_secs(15), || {
        let pool = pool.clone();
        async move { event_count(&pool).await >= 40 }
    })
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let stored_before_crash = event_count(&pool).await;
    assert!(
        (40..300).contains(&stored_before_crash),
        "{stored_before_crash}"
    );

    // Second run: picks up where the first left off, and gets the unacknowledged ones again.
    let store = SlowAcks::start(&pool, Duration::ZERO);
    let (stop, stopped) = oneshot::channel::<()>();
    let second = tokio::spawn(run(config.clone(), store.clone(), pool.clone(), async {
        let _ = stopped.await;
    }));
    wait_until("all 300 are stored", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move { event_count(&pool).await >= 300 }
    })
    .await;
    let info = wait_until_consumer_is_done(&js, &config, 300, Duration::from_secs(10)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the intake stops on shutdown")
        .unwrap()
        .unwrap();

    assert!(
        info.delivered.consumer_sequence > 300,
        "the crash should have left messages to redeliver"
    );
    assert!(
        store.duplicates.load(Ordering::SeqCst) > 0,
        "messages stored before the crash but not acknowledged come back as duplicates"
    );
    let stored = telemetry(&pool).await;
    assert_eq!(stored.len(), 300);
    let mut times_stored: HashMap<&[u8], usize> = HashMap::new();
    for (stream_id, payload, data) in &stored {
        assert_eq!(stream_id, &format!("gateway-{gateway}"));
        assert_eq!(payload["subject"], subject.as_str());
        assert_eq!(payload["size_bytes"], data.len());
        let sequence = payload["jetstream_sequence"].as_u64().unwrap();
        let i = (sequence - 1) as usize;
        assert_eq!(data, &payloads[i], "stream sequence {sequence}");
        let content_type = i
            .is_multiple_of(3)
            .then_some("application/x-fleetlog-telemetry");
        assert_eq!(payload["content_type"].as_str(), content_type);
        *times_stored.entry(data.as_slice()).or_default() += 1;
    }
    for payload in &payloads {
        assert_eq!(times_stored.get(payload.as_slice()), Some(&1));
    }
    let metadata_sources: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT DISTINCT metadata->'source' FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(metadata_sources, [serde_json::json!("jetstream")]);
}

#[sqlx::test(migrations = "../migrations")]
async fn messages_for_unknown_or_paused_gateways_are_terminated_not_retried(pool: PgPool) {
    let js = jetstream().await;
    // A long ack wait: a message that was neither acknowledged nor terminated would still be
    // waiting for its acknowledgement when the test looks.
    let config = unique_config();
    let _cleanup = DeleteStreamOnDrop(config.stream_name.clone());
    let tenant = Uuid::now_v7();
    let active = gateway_key();
    let paused = gateway_key();
    let decommissioned = gateway_key();
    let server = gateway_key();
    let gateway = register(&pool, tenant, &active, "gateway", "active").await;
    register(&pool, tenant, &paused, "gateway", "paused").await;
    register(&pool, tenant, &decommissioned, "gateway", "decommissioned").await;
    register(&pool, tenant, &server, "system", "active").await;

    // The intake creates the stream.
    let (stop, stopped) = oneshot::channel::<()>();
    let intake = tokio::spawn(run(
        config.clone(),
        PgEventStore::start(pool.clone(), GroupCommitConfig::default()),
        pool.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_until(
        "the intake created the stream",
        Duration::from_secs(10),
        || {
            let js = js.clone();
            let name = config.stream_name.clone();
            async move { js.get_stream(&name).await.is_ok() }
        },
    )
    .await;

    let prefix = &config.subject_prefix;
    let refused = [
        format!("{prefix}.{}.{active}", Uuid::now_v7()), // unknown tenant
        format!("{prefix}.{tenant}.{}", gateway_key()),  // unknown gateway
        format!("{prefix}.{tenant}.{paused}"),
        format!("{prefix}.{tenant}.{decommissioned}"),
        format!("{prefix}.{tenant}.{server}"), // a server, not a gateway
        format!("{prefix}.not-a-tenant.{active}"),
        format!("{prefix}.{tenant}.{active}.extra"),
        format!("{prefix}.{tenant}"),
    ];
    for subject in &refused {
        js.publish(subject.clone(), b"\xff refused".to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let good = b"\x00\xff good \x80".to_vec();
    let last = js
        .publish(format!("{prefix}.{tenant}.{active}"), good.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(last.sequence, refused.len() as u64 + 1);

    wait_until(
        "the good message is stored",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move { event_count(&pool).await >= 1 }
        },
    )
    .await;
    let info =
        wait_until_consumer_is_done(&js, &config, last.sequence, Duration::from_secs(5)).await;
    // Each message was delivered once: none was redelivered.
    assert_eq!(info.delivered.consumer_sequence, last.sequence);
    stop.send(()).unwrap();
    intake.await.unwrap().unwrap();

    let stored = telemetry(&pool).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, format!("gateway-{gateway}"));
    assert_eq!(stored[0].2, good);
    assert_eq!(event_count(&pool).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_id_republished_after_the_duplicate_window_is_stored_once(pool: PgPool) {
    let js = jetstream().await;
    let config = unique_config();
    let _cleanup = DeleteStreamOnDrop(config.stream_name.clone());
    let tenant = Uuid::now_v7();
    let key = gateway_key();
    register(&pool, tenant, &key, "gateway", "active").await;
    let subject = format!("{}.{tenant}.{key}", config.subject_prefix);

    // JetStream's own deduplication forgets a Nats-Msg-Id after one second here.
    js.get_or_create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.subject_filter()],
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = || async {
        js.send_publish(
            subject.clone(),
            PublishMessage::build()
                .payload(b"\xfe reading 1".to_vec().into())
                .message_id("reading-1"),
        )
        .await
        .unwrap()
        .await
        .unwrap()
    };
    let first = publish().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = publish().await;
    assert!(
        !again.duplicate && again.sequence == first.sequence + 1,
        "JetStream itself must have accepted the second copy: {again:?}"
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let intake = tokio::spawn(run(
        config.clone(),
        PgEventStore::start(pool.clone(), GroupCommitConfig::default()),
        pool.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_until_consumer_is_done(&js, &config, again.sequence, Duration::from_secs(10)).await;
    stop.send(()).unwrap();
    intake.await.unwrap().unwrap();

    let stored = telemetry(&pool).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].2, b"\xfe reading 1");
    assert_eq!(stored[0].1["jetstream_sequence"], first.sequence);
}
