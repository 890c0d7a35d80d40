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
        .with_context(|| {
            format!(
                "no projector named {projector:?} (known: {})",
                projectors::NAMES.join(", ")
            )
        })??;
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
