//! Operator commands: `fleetlog status` and `fleetlog parked list|retry|skip`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use command_side::event_store::{GroupCommitConfig, PgEventStore};
use projections::status::ProjectorStatus;
use projections::ParkedRetry;
use sqlx::PgPool;

use crate::projectors;

/// Prints every projector's position, lag, rate, parked count and lease holder. The rate is
/// measured over `sample`.
pub async fn status(pool: &PgPool, sample: Duration, json: bool) -> anyhow::Result<()> {
    let before = projections::status::all(pool).await?;
    let started = Instant::now();
    tokio::time::sleep(sample).await;
    let after = projections::status::all(pool).await?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = |now: &ProjectorStatus| {
        let then = before
            .iter()
            .find(|b| b.projector == now.projector)
            .map_or(now.position, |b| b.position);
        (now.position - then) as f64 / seconds
    };
    if json {
        let rows: Vec<serde_json::Value> = after
            .iter()
            .map(|s| {
                let mut row = serde_json::to_value(s).expect("status serializes");
                row["events_per_s"] = serde_json::json!(rate(s).round());
                row
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>10} {:>10} {:>7}  lease holder",
        "projector", "position", "head", "lag", "lag s", "events/s", "parked"
    );
    for s in &after {
        println!(
            "{:<24} {:>12} {:>12} {:>12} {:>10.1} {:>10.0} {:>7}  {}",
            s.projector,
            s.position,
            s.head,
            s.lag_positions,
            s.lag_seconds,
            rate(s),
            s.parked,
            s.lease_holder.as_deref().unwrap_or("-")
        );
    }
    if after.is_empty() {
        println!("(no projector has run yet)");
    }
    Ok(())
}

/// Prints parked events.
pub async fn parked_list(pool: &PgPool, projector: Option<&str>, json: bool) -> anyhow::Result<()> {
    let parked = projections::checkpoint::parked(pool, projector).await?;
    if json {
        println!("{}", serde_json::to_string(&parked)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>12} {:<24} {:>8}  error",
        "projector", "position", "event type", "attempts"
    );
    for p in &parked {
        println!(
            "{:<24} {:>12} {:<24} {:>8}  {}",
            p.projector, p.position, p.event_type, p.attempts, p.error
        );
    }
    if parked.is_empty() {
        println!("(no parked events)");
    }
    Ok(())
}

/// Applies a parked event now and unparks it; fails if it still fails.
pub async fn parked_retry(pool: &PgPool, projector: &str, position: i64) -> anyhow::Result<()> {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let outcome = projectors::retry_parked(&store, projector, position)
        .await
        .ok_or_else(|| unknown_projector(projector))??;
    match outcome {
        ParkedRetry::Applied => {
            println!("applied {projector} position {position}; it is no longer parked");
            Ok(())
        }
        ParkedRetry::StillFailing(error) => {
            bail!("{projector} position {position} failed again: {error}")
        }
        ParkedRetry::NotParked => bail!("{projector} has no parked event at position {position}"),
    }
}

/// Forgets a parked event (it stays unapplied).
pub async fn parked_skip(pool: &PgPool, projector: &str, position: i64) -> anyhow::Result<()> {
    if projections::checkpoint::skip(pool, projector, position).await? {
        println!("skipped {projector} position {position}");
        Ok(())
    } else {
        bail!("{projector} has no parked event at position {position}")
    }
}

/// A progress bar for a build: position against target, with events/s and ETA.
fn build_progress(what: &str) -> (indicatif::ProgressBar, impl Fn(i64, i64) + Send + Sync) {
    let bar = crate::bench::progress(0, what);
    let handle = bar.clone();
    (bar, move |position: i64, until: i64| {
        handle.set_length(until.max(0) as u64);
        handle.set_position(position.max(0) as u64);
    })
}

/// `fleetlog rebuild <projector>`.
pub async fn rebuild(pool: &PgPool, projector: &str, batch_size: i64) -> anyhow::Result<()> {
    let (bar, progress) = build_progress("rebuild");
    let started = Instant::now();
    let report = projectors::rebuild(pool, projector, batch_size, &progress)
        .await
        .ok_or_else(|| unknown_projector(projector))??;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {projector} from position 0 and swapped it in at position {} ({:.0} events/s)",
        report.swapped_at,
        report.swapped_at as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// The point in history `--until` names: a position, or an RFC 3339 time.
pub async fn resolve_until(pool: &PgPool, until: &str) -> anyhow::Result<i64> {
    if let Ok(position) = until.parse::<i64>() {
        anyhow::ensure!(position >= 0, "--until position must be 0 or more");
        return Ok(position);
    }
    let time = chrono::DateTime::parse_from_rfc3339(until)
        .with_context(|| format!("--until {until:?} is neither a position nor an RFC 3339 time"))?;
    Ok(projections::rebuild::position_at(pool, time.with_timezone(&chrono::Utc)).await?)
}

/// `fleetlog replay <projector> --until <time|position> --into <schema>`.
pub async fn replay(
    pool: &PgPool,
    projector: &str,
    until: &str,
    schema: &str,
    batch_size: i64,
) -> anyhow::Result<()> {
    let position = resolve_until(pool, until).await?;
    let (bar, progress) = build_progress("replay");
    let reached = projectors::replay(pool, projector, schema, position, batch_size, &progress)
        .await
        .ok_or_else(|| unknown_projector(projector))??;
    bar.finish_and_clear();
    println!("built {projector} as of position {reached} into schema {schema}");
    Ok(())
}

fn unknown_projector(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no projector named {name:?} (known: {})",
        projectors::NAMES.join(", ")
    )
}
