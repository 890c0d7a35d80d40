//! `fleetlog bench liveness`: how long one tick of the liveness monitor takes over a large fleet.
//!
//! It registers N systems and gives each a heartbeat (through the event store, folded by the
//! `liveness` projector), then a second heartbeat to all but a fraction of them. A hand-set clock
//! then stands where exactly that fraction is past its timeout, and the bench times one tick that
//! finds them and appends their `SystemWentSilent`, and one tick that finds nothing more.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use events_schema::{
    HeartbeatReceived, NewEvent, StreamId, SystemKind, SystemRegistered, TenantId,
};
use futures::StreamExt;
use projections::clock::ManualClock;
use projections::monitor::{LivenessMonitor, MonitorConfig};
use projections::{Liveness, ProjectionRunner};
use serde_json::json;
use uuid::Uuid;

use super::{progress, BenchRun, ScratchDatabase};
use crate::config::AppendConfig;

/// Options of `fleetlog bench liveness`.
#[derive(Debug, Clone, Args)]
pub struct LivenessBench {
    /// Systems in the fleet.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub systems: usize,
    /// Share of them that went silent since the last tick (0..1).
    #[arg(long, default_value_t = 0.01)]
    pub silent_fraction: f64,
    /// Concurrent appenders while the fleet is set up.
    #[arg(long, short = 'c', default_value_t = 256)]
    pub concurrency: usize,
    /// Where and how the bench runs.
    #[command(flatten)]
    pub run: BenchRun,
    /// Group commit settings.
    #[command(flatten)]
    pub append: AppendConfig,
}

/// Runs the bench and prints its result.
pub async fn run(options: LivenessBench) -> anyhow::Result<()> {
    anyhow::ensure!(options.systems > 0, "--systems must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.silent_fraction),
        "--silent-fraction must be between 0 and 1"
    );
    let set_up_at = Utc::now();
    let scratch = ScratchDatabase::create(&options.run).await?;
    let store = PgEventStore::start(scratch.pool.clone(), options.append.group_commit());
    let tenant = TenantId::new();
    let systems: Vec<Uuid> = (0..options.systems).map(|_| Uuid::now_v7()).collect();
    let silent = ((options.systems as f64) * options.silent_fraction).round() as usize;

    let registering = progress(options.systems as u64, "register");
    append_each(&store, &systems, options.concurrency, &registering, |id| {
        let registered = SystemRegistered {
            system_id: id,
            system_key: format!("FL-{}", &id.simple().to_string()[20..32].to_uppercase()),
            name: format!("node-{id}"),
            kind: SystemKind::System,
            secret_hash: "bench".into(),
            labels: Default::default(),
        };
        vec![
            NewEvent::new(tenant, &registered, Utc::now()),
            heartbeat(tenant),
        ]
    })
    .await?;
    registering.finish_and_clear();
    fold(&store, "fold").await?;

    // The silent ones are the first `silent`; everyone else reports once more, later.
    let reporting = progress((options.systems - silent) as u64, "heartbeat");
    append_each(
        &store,
        &systems[silent..],
        options.concurrency,
        &reporting,
        |_| vec![heartbeat(tenant)],
    )
    .await?;
    reporting.finish_and_clear();
    fold(&store, "fold").await?;

    // The clock stands ten minutes (the default timeout) after the midpoint between the silent
    // systems' last heartbeat and the others' last heartbeat.
    let (latest_silent, earliest_active): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT max(last_seen_at) FILTER (WHERE system_id = ANY($1)), \
                    min(last_seen_at) FILTER (WHERE NOT system_id = ANY($1)) \
             FROM liveness_systems",
        )
        .bind(&systems[..silent])
        .fetch_one(&scratch.pool)
        .await?;
    let reference = match (latest_silent, earliest_active) {
        (Some(silent), Some(active)) => silent + (active - silent) / 2,
        (Some(silent), None) => silent + chrono::Duration::seconds(1),
        (None, Some(active)) => active - chrono::Duration::seconds(1),
        (None, None) => anyhow::bail!("the liveness read model is empty"),
    };
    let config = MonitorConfig {
        grace: std::time::Duration::ZERO,
        ..MonitorConfig::default()
    };
    let clock = ManualClock::at(
        reference + chrono::Duration::minutes(i64::from(config.default_timeout_minutes)),
    );
    // Started before the fleet reported (silence is measured from no earlier than the start).
    let monitor = LivenessMonitor::new(store.clone(), clock, config).started_at(set_up_at);

    let started = Instant::now();
    let report = monitor.tick().await?;
    let tick_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        report.went_silent == silent,
        "the tick found {} silent systems, expected {silent}",
        report.went_silent
    );
    fold(&store, "fold").await?;
    let started = Instant::now();
    let quiet = monitor.tick().await?;
    let quiet_tick_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        quiet.went_silent == 0,
        "a second tick found more silent systems"
    );

    eprintln!(
        "liveness: {} systems, tick with {} going silent {:.1} ms; quiet tick {:.1} ms",
        options.systems, report.went_silent, tick_ms, quiet_tick_ms
    );
    scratch.finish().await?;
    if options.run.json {
        println!(
            "{}",
            json!({
                "bench": "liveness",
                "systems": options.systems,
                "tick_ms": round(tick_ms),
                "went_silent": report.went_silent,
                "quiet_tick_ms": round(quiet_tick_ms),
            })
        );
    }
    Ok(())
}

fn heartbeat(tenant: TenantId) -> NewEvent {
    NewEvent::new(
        tenant,
        &HeartbeatReceived {
            agent_version: None,
        },
        Utc::now(),
    )
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Appends `events(id)` to each system's stream, `concurrency` appends at a time.
async fn append_each(
    store: &PgEventStore,
    systems: &[Uuid],
    concurrency: usize,
    bar: &indicatif::ProgressBar,
    events: impl Fn(Uuid) -> Vec<NewEvent>,
) -> anyhow::Result<()> {
    let mut appends = futures::stream::iter(systems.iter().map(|&id| {
        let batch = events(id);
        async move {
            store
                .append(&StreamId::system(id), ExpectedVersion::Any, batch)
                .await
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some(result) = appends.next().await {
        result.context("append failed")?;
        bar.inc(1);
    }
    Ok(())
}

/// Folds everything appended so far into the liveness read model.
async fn fold(store: &PgEventStore, what: &str) -> anyhow::Result<()> {
    let head = store.head_position().await?;
    let bar = progress(head as u64, what);
    let runner = ProjectionRunner::new(store.clone(), Liveness, 5000);
    let mut folded = 0;
    while folded < head {
        folded = runner.catch_up(Some((folded + 50_000).min(head))).await?;
        bar.set_position(folded as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
