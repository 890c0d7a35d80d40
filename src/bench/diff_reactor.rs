//! `fleetlog bench diff-reactor`: how many inventory reports per second the diff reactor turns
//! into `InventoryChanged` events, against reading the same reports back as the floor.
//!
//! It appends R consecutive realistic revisions (~20 KB each) of N machines through the event
//! store, then, in the same run: reads every report back in log order (the baseline: the least
//! any reactor over these events must do) and runs the diff reactor from position 0 over them.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use command_side::ingest::canonical::content_hash;
use events_schema::{InventoryReported, NewEvent, StreamId, TenantId};
use futures::StreamExt;
use projections::inventory::InventoryDiff;
use projections::reactor::ReactorRunner;
use serde_json::{json, Value};
use uuid::Uuid;

use super::inventory::realistic_revision;
use super::{progress, BenchRun, ScratchDatabase};
use crate::config::AppendConfig;

/// Options of `fleetlog bench diff-reactor`.
#[derive(Debug, Clone, Args)]
pub struct DiffReactorBench {
    /// Machines (N).
    #[arg(long, short = 'n', default_value_t = 250)]
    pub systems: usize,
    /// Reports per machine (R); the first of each is its baseline.
    #[arg(long, short = 'r', default_value_t = 9)]
    pub revisions: u32,
    /// Events the reactor reads per batch (PROJECTION_BATCH_SIZE's default).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: i64,
    /// Where and how the bench runs.
    #[command(flatten)]
    pub run: BenchRun,
    /// Group commit settings.
    #[command(flatten)]
    pub append: AppendConfig,
}

/// Runs the bench and prints its result.
pub async fn run(options: DiffReactorBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.systems > 0 && options.revisions > 1,
        "need at least one system and two revisions"
    );
    let scratch = ScratchDatabase::create(&options.run).await?;
    let store = PgEventStore::start(scratch.pool.clone(), options.append.group_commit());
    let tenant = TenantId::new();
    let reports = options.systems * options.revisions as usize;

    // Revision by revision, every machine reports (machines concurrently, each in order).
    let appending = progress(reports as u64, "append");
    let systems: Vec<(u64, StreamId)> = (0..options.systems as u64)
        .map(|seed| (seed, StreamId::system(Uuid::now_v7())))
        .collect();
    for revision in 0..options.revisions {
        let mut appends = futures::stream::iter(systems.iter().map(|(seed, stream)| {
            let store = store.clone();
            async move {
                let document = realistic_revision(*seed, revision);
                let hash = content_hash(&document);
                let event = NewEvent::from_payload::<InventoryReported>(
                    tenant,
                    InventoryReported::payload(hash, document),
                    Utc::now(),
                );
                store
                    .append(stream, ExpectedVersion::Any, vec![event])
                    .await
            }
        }))
        .buffer_unordered(32);
        while let Some(result) = appends.next().await {
            result.context("append failed")?;
            appending.inc(1);
        }
    }
    appending.finish_and_clear();

    // Baseline: read every report back, in log order, decoded.
    let started = Instant::now();
    let mut after = 0i64;
    let mut read = 0usize;
    loop {
        let rows: Vec<(i64, Value)> = sqlx::query_as(
            "SELECT position, payload FROM events \
             WHERE position > $1 AND event_type = 'InventoryReported' ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(options.batch_size)
        .fetch_all(&scratch.pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        read += rows.len();
    }
    let baseline_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(read == reports, "read {read} reports, appended {reports}");

    let reacting = progress(reports as u64, "react");
    let runner = ReactorRunner::new(store.clone(), InventoryDiff::default(), options.batch_size);
    let started = Instant::now();
    let ticker = {
        let (pool, reacting) = (scratch.pool.clone(), reacting.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let done: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events e JOIN projection_checkpoints c \
                     ON c.projector = 'inventory_diff' AND e.position <= c.position \
                     WHERE e.event_type = 'InventoryReported'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                reacting.set_position(done as u64);
            }
        })
    };
    runner.catch_up().await?;
    let react_s = started.elapsed().as_secs_f64();
    ticker.abort();
    reacting.finish_and_clear();
    let diffs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'InventoryChanged'")
            .fetch_one(&scratch.pool)
            .await?;
    let expected = options.systems * (options.revisions as usize - 1);
    anyhow::ensure!(
        diffs as usize == expected,
        "{diffs} diffs for {expected} consecutive pairs"
    );

    let reports_per_s = reports as f64 / react_s;
    let baseline_per_s = reports as f64 / baseline_s;
    eprintln!(
        "diff reactor: {reports} reports ({diffs} diffs) at {reports_per_s:.0}/s; \
         reading them back: {baseline_per_s:.0}/s"
    );
    scratch.finish().await?;
    if options.run.json {
        println!(
            "{}",
            json!({
                "bench": "diff_reactor",
                "reports": reports,
                "reports_per_s": reports_per_s.round(),
                "baseline": "read",
                "baseline_per_s": baseline_per_s.round(),
                "ratio": (reports_per_s / baseline_per_s * 1000.0).round() / 1000.0,
                "diffs": diffs,
            })
        );
    }
    Ok(())
}
