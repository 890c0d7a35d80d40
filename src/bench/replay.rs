//! `fleetlog bench replay`: the projection runtime replaying stored events through a counting
//! projector, against the raw keyset read rate of the same rows in the same run.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::Utc;
use clap::Args;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{EventId, Metadata, NewEvent, StreamId, TenantId};
use projections::{EventTypeCounts, ProjectionRunner};
use serde_json::json;

use super::{progress, BenchRun, ScratchDatabase};

/// Options of `fleetlog bench replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayBench {
    /// Events to store and replay.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per batch, for the replay and for the raw read alike.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: i64,
    /// Where and how the bench runs.
    #[command(flatten)]
    pub run: BenchRun,
}

/// Runs the bench and prints its result.
pub async fn run(options: ReplayBench) -> anyhow::Result<()> {
    let ReplayBench {
        events, batch_size, ..
    } = options;
    ensure!(
        events > 0 && batch_size > 0,
        "events and batch size must be positive"
    );
    let scratch = ScratchDatabase::create(&options.run).await?;
    let store = PgEventStore::start(scratch.pool.clone(), GroupCommitConfig::default());
    eprintln!("bench replay: N={events} batch={batch_size}");
    seed(&store, events).await?;

    let raw_elapsed = raw_keyset_read(&store, batch_size, events).await?;
    let runner = ProjectionRunner::new(store.clone(), EventTypeCounts, batch_size);
    let bar = progress(events as u64, "replay");
    let started = Instant::now();
    let mut position = 0;
    while position < events as i64 {
        let until = (position + 50 * batch_size).min(events as i64);
        position = runner.catch_up(Some(until)).await?;
        bar.set_position(position as u64);
    }
    let replay_elapsed = started.elapsed();
    bar.finish_and_clear();
    let counted: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM event_type_counts")
        .fetch_one(&scratch.pool)
        .await?;
    ensure!(
        counted as usize == events,
        "the projector counted {counted} events of {events}"
    );
    drop(runner);
    drop(store);
    scratch.finish().await?;

    let events_per_s = events as f64 / replay_elapsed.as_secs_f64();
    let baseline_per_s = events as f64 / raw_elapsed.as_secs_f64();
    let ratio = events_per_s / baseline_per_s;
    eprintln!("replay: {events_per_s:.0} events/s\nraw keyset read: {baseline_per_s:.0} events/s\nratio: {ratio:.3}");
    if options.run.json {
        let line = json!({
            "bench": "replay",
            "events": events,
            "batch_size": batch_size,
            "events_per_s": events_per_s.round(),
            "baseline": "raw_read",
            "baseline_per_s": baseline_per_s.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
        });
        println!("{line}");
    }
    Ok(())
}

/// Appends `n` heartbeat-like events (about 300-byte payloads) over 1,000 streams and 4 tenants,
/// through the event store, 1,000 events per append from 8 appenders.
async fn seed(store: &PgEventStore, n: usize) -> anyhow::Result<()> {
    const APPENDERS: usize = 8;
    const PER_APPEND: usize = 1000;
    let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::new()).collect();
    let bar = std::sync::Arc::new(progress(n as u64, "seed"));
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let store = store.clone();
        let tenants = tenants.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let streams: Vec<StreamId> = (0..1000 / APPENDERS)
                .map(|_| StreamId::system(uuid::Uuid::now_v7()))
                .collect();
            let mut i = appender;
            let mut round = 0;
            while i < n {
                let stream = &streams[round % streams.len()];
                let mut batch = Vec::with_capacity(PER_APPEND);
                while batch.len() < PER_APPEND && i < n {
                    batch.push(seed_event(tenants[i % tenants.len()], i));
                    i += APPENDERS;
                }
                let count = batch.len() as u64;
                store.append(stream, ExpectedVersion::Any, batch).await?;
                bar.inc(count);
                round += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("seeding task panicked")??;
    }
    bar.finish_and_clear();
    Ok(())
}

fn seed_event(tenant: TenantId, n: usize) -> NewEvent {
    const TYPES: [&str; 4] = [
        "HeartbeatReceived",
        "InventoryUnchanged",
        "TelemetryReceived",
        "HeartbeatReceived",
    ];
    NewEvent {
        event_id: EventId::new(),
        event_type: TYPES[n % TYPES.len()].to_owned(),
        schema_version: 1,
        tenant_id: tenant,
        payload: json!({
            "agent_version": "fleetlog-agent/2.4.1",
            "hostname": format!("node-{n:07}.rack-{:03}.dc1.example.internal", n % 997),
            "uptime_seconds": 86_400 + n as u64,
            "load": [0.42, 0.37, 0.31],
            "memory": {"total_bytes": 68_719_476_736u64, "available_bytes": 41_231_686_041u64},
            "kernel": "6.1.0-28-amd64",
            "status": "ok"
        }),
        data: None,
        metadata: Metadata {
            source: Some("bench".into()),
            ..Default::default()
        },
        occurred_at: Utc::now(),
    }
}

/// Reads every event with the same keyset query and row decoding the runtime uses.
async fn raw_keyset_read(
    store: &PgEventStore,
    batch_size: i64,
    expected: usize,
) -> anyhow::Result<Duration> {
    let bar = progress(expected as u64, "raw read");
    let started = Instant::now();
    let (mut position, mut read) = (0, 0usize);
    loop {
        let events = store.read_all(position, batch_size).await?;
        let Some(last) = events.last() else { break };
        position = last.position;
        read += events.len();
        bar.set_position(read as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    ensure!(read == expected, "read {read} events of {expected}");
    Ok(elapsed)
}
