//! `fleetlog bench append`: group-commit append throughput against raw `COPY` of the same rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::Utc;
use clap::Args;
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use events_schema::{NewEvent, StreamId, TenantId};
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;

use super::{progress, BenchRun, ScratchDatabase};
use crate::config::AppendConfig;

/// Options of `fleetlog bench append`.
#[derive(Debug, Clone, Args)]
pub struct AppendBench {
    /// Events to append (N).
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub events: usize,
    /// Concurrent appenders (C).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Streams (S); each appender owns S/C of them and appends with exact expected versions.
    #[arg(long, short = 's', default_value_t = 1024)]
    pub streams: usize,
    /// Events per append call.
    #[arg(long, default_value_t = 1)]
    pub events_per_append: usize,
    /// Where and how the bench runs.
    #[command(flatten)]
    pub run: BenchRun,
    /// Group commit settings under test.
    #[command(flatten)]
    pub append: AppendConfig,
}

/// Runs the bench and prints its result.
pub async fn run(options: AppendBench) -> anyhow::Result<()> {
    let AppendBench {
        events,
        concurrency,
        streams,
        events_per_append,
        ..
    } = options;
    ensure!(
        events > 0 && concurrency > 0 && events_per_append > 0,
        "events, concurrency and events per append must be positive"
    );
    ensure!(
        streams >= concurrency,
        "need at least one stream per appender (streams >= concurrency)"
    );
    let scratch = ScratchDatabase::create(&options.run).await?;
    let tenant = TenantId::new();
    let workloads = plan_workloads(tenant, events, concurrency, streams, events_per_append);

    eprintln!(
        "bench append: N={events} C={concurrency} S={streams} events/append={events_per_append}"
    );
    let store = PgEventStore::start(scratch.pool.clone(), options.append.group_commit());
    let (append_elapsed, latencies) = run_appenders(&store, workloads).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&scratch.pool)
        .await?;
    ensure!(
        stored as usize == events,
        "stored {stored} events, expected {events}"
    );

    let copy_elapsed = copy_baseline(&scratch.pool, events).await?;
    drop(store);
    scratch.finish().await?;

    let events_per_s = events as f64 / append_elapsed.as_secs_f64();
    let baseline_per_s = events as f64 / copy_elapsed.as_secs_f64();
    let ratio = events_per_s / baseline_per_s;
    eprintln!(
        "append: {events_per_s:.0} events/s (p50 {:.2} ms, p99 {:.2} ms per append)\nCOPY baseline: {baseline_per_s:.0} rows/s\nratio: {ratio:.3}",
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    if options.run.json {
        let line = json!({
            "bench": "append",
            "events": events,
            "concurrency": concurrency,
            "streams": streams,
            "events_per_append": events_per_append,
            "events_per_s": events_per_s.round(),
            "p50_ms": percentile_ms(&latencies, 0.50),
            "p99_ms": percentile_ms(&latencies, 0.99),
            "baseline": "copy",
            "baseline_per_s": baseline_per_s.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
        });
        println!("{line}");
    }
    Ok(())
}

/// The appends one appender makes, in order: `(stream, expected version, events)`.
type Workload = Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>;

/// Splits N events over C appenders; appender `i` owns streams `i, i + C, ...`, tracks their
/// versions and appends to them in turn with an exact expected version.
fn plan_workloads(
    tenant: TenantId,
    events: usize,
    concurrency: usize,
    streams: usize,
    per_append: usize,
) -> Vec<Workload> {
    let stream_ids: Vec<StreamId> = (0..streams)
        .map(|_| StreamId::system(uuid::Uuid::now_v7()))
        .collect();
    let mut workloads: Vec<Workload> = vec![Vec::new(); concurrency];
    let mut versions = vec![0i64; streams];
    let mut made = 0;
    let mut turn = vec![0usize; concurrency];
    while made < events {
        for (appender, workload) in workloads.iter_mut().enumerate() {
            if made >= events {
                break;
            }
            let owned = (streams - appender).div_ceil(concurrency);
            let stream = appender + (turn[appender] % owned) * concurrency;
            turn[appender] += 1;
            let count = per_append.min(events - made);
            let batch: Vec<NewEvent> = (0..count).map(|i| bench_event(tenant, made + i)).collect();
            workload.push((
                stream_ids[stream].clone(),
                ExpectedVersion::Exact(versions[stream]),
                batch,
            ));
            versions[stream] += count as i64;
            made += count;
        }
    }
    workloads
}

/// A heartbeat-like event with a payload of about 300 bytes.
fn bench_event(tenant: TenantId, n: usize) -> NewEvent {
    let payload = json!({
        "agent_version": "fleetlog-agent/2.4.1",
        "hostname": format!("node-{n:07}.rack-{:03}.dc1.example.internal", n % 997),
        "uptime_seconds": 86_400 + n as u64,
        "load": [0.42, 0.37, 0.31],
        "memory": {"total_bytes": 68_719_476_736u64, "available_bytes": 41_231_686_041u64},
        "boot_id": uuid::Uuid::new_v4(),
        "kernel": "6.1.0-28-amd64",
        "status": "ok"
    });
    NewEvent {
        event_id: events_schema::EventId::new(),
        event_type: "HeartbeatReceived".into(),
        schema_version: 1,
        tenant_id: tenant,
        payload,
        data: None,
        metadata: events_schema::Metadata {
            source: Some("bench".into()),
            ..Default::default()
        },
        occurred_at: Utc::now(),
    }
}

async fn run_appenders(
    store: &PgEventStore,
    workloads: Vec<Workload>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let total: usize = workloads
        .iter()
        .flat_map(|w| w.iter().map(|(_, _, e)| e.len()))
        .sum();
    let bar = Arc::new(progress(total as u64, "append"));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workloads.len());
    for workload in workloads {
        let store = store.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(workload.len());
            for (stream, expected, events) in workload {
                let count = events.len() as u64;
                let sent = Instant::now();
                store.append(&stream, expected, events).await?;
                latencies.push(sent.elapsed());
                bar.inc(count);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("appender panicked")??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

/// The baseline: the rows just appended, exported with `COPY TO` (not timed), then loaded with one
/// `COPY FROM` in one transaction (timed) into a table with the same columns and indexes.
pub(crate) async fn copy_baseline(pool: &PgPool, rows: usize) -> anyhow::Result<Duration> {
    const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, \
                           schema_version, tenant_id, payload, data, metadata, occurred_at, recorded_at";
    sqlx::query("CREATE TABLE bench_copy_baseline (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await?;
    let mut text = Vec::new();
    {
        let mut conn = pool.acquire().await?;
        let mut export = conn
            .copy_out_raw(&format!("COPY events ({COLUMNS}) TO STDOUT"))
            .await?;
        while let Some(chunk) = export.next().await {
            text.extend_from_slice(&chunk?);
        }
    }

    let bar = progress(rows as u64, "COPY");
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY bench_copy_baseline ({COLUMNS}) FROM STDIN"))
        .await?;
    let per_row = (text.len() / rows.max(1)).max(1);
    for chunk in text.chunks(1 << 20) {
        copy.send(chunk).await?;
        bar.inc((chunk.len() / per_row) as u64);
    }
    let copied = copy.finish().await?;
    tx.commit().await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    ensure!(
        copied as usize == rows,
        "COPY stored {copied} rows of {rows}"
    );
    Ok(elapsed)
}

pub(crate) fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    (sorted[index].as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_cover_every_event_once_with_consecutive_versions_per_stream() {
        let workloads = plan_workloads(TenantId::new(), 1000, 8, 20, 3);
        let mut per_stream: std::collections::HashMap<StreamId, i64> = Default::default();
        let mut total = 0;
        for workload in &workloads {
            for (stream, expected, events) in workload {
                let version = per_stream.entry(stream.clone()).or_default();
                assert_eq!(*expected, ExpectedVersion::Exact(*version));
                *version += events.len() as i64;
                total += events.len();
            }
        }
        assert_eq!(total, 1000);
        assert_eq!(per_stream.len(), 20);
    }

    #[test]
    fn bench_payloads_are_about_300_bytes() {
        let len = bench_event(TenantId::new(), 12345)
            .payload
            .to_string()
            .len();
        assert!((250..=350).contains(&len), "payload is {len} bytes");
    }
}
