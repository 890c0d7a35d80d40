//! `fleetlog bench diff`: the inventory differ against `json_patch::diff` on the same pairs of
//! realistic ~20 KB inventories (consecutive revisions of one machine). No database.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Args;
use projections::inventory::{apply, canonical, diff, DiffRules};
use serde_json::{json, Value};

use super::inventory::realistic_revision;
use super::progress;

/// Options of `fleetlog bench diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffBench {
    /// Pairs of inventories (P): machine `i` at revisions `i` and `i + 1`.
    #[arg(long, short = 'p', default_value_t = 200)]
    pub pairs: usize,
    /// Seconds to time each differ for.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Throughput of one differ over the pairs: pairs per second, and the output size per pair.
struct Measured {
    docs_per_s: f64,
    items_per_pair: f64,
}

/// Runs `differ` over all pairs, again and again, for `seconds`; `differ` returns how many
/// items (changes, patch operations) it produced.
fn measure(
    what: &str,
    pairs: &[(Value, Value)],
    seconds: f64,
    mut differ: impl FnMut(&Value, &Value) -> usize,
) -> Measured {
    let budget = Duration::from_secs_f64(seconds);
    let bar = progress((seconds * 10.0).ceil() as u64, what);
    // One warm-up pass, untimed.
    for (old, new) in pairs {
        black_box(differ(old, new));
    }
    let (mut docs, mut items) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < budget {
        for (old, new) in pairs {
            items += black_box(differ(black_box(old), black_box(new))) as u64;
        }
        docs += pairs.len() as u64;
        bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Measured {
        docs_per_s: docs as f64 / elapsed.as_secs_f64(),
        items_per_pair: items as f64 / docs.max(1) as f64,
    }
}

/// Runs the bench and prints its result.
pub fn run(options: DiffBench) -> anyhow::Result<()> {
    let DiffBench {
        pairs,
        seconds,
        json,
    } = options;
    ensure!(
        pairs > 0 && seconds > 0.0,
        "pairs and seconds must be positive"
    );
    let pairs: Vec<(Value, Value)> = (0..pairs as u64)
        .map(|i| {
            let revision = i as u32;
            (
                realistic_revision(i, revision),
                realistic_revision(i, revision + 1),
            )
        })
        .collect();
    let bytes: usize = pairs
        .iter()
        .map(|(old, _)| serde_json::to_vec(old).map_or(0, |b| b.len()))
        .sum();
    let rules = DiffRules::default();
    // Check before timing that the differ is right on these pairs.
    for (old, new) in &pairs {
        let applied = apply(old, &diff(old, new, &rules))?;
        ensure!(
            canonical(&applied, &rules) == canonical(new, &rules),
            "apply(old, diff(old, new)) != new on a bench pair"
        );
    }
    eprintln!(
        "bench diff: P={} pairs of ~{} KB, {seconds} s each",
        pairs.len(),
        bytes / pairs.len() / 1024
    );

    let ours = measure("diff", &pairs, seconds, |old, new| {
        diff(old, new, &rules).len()
    });
    let baseline = measure("json-patch", &pairs, seconds, |old, new| {
        json_patch::diff(old, new).0.len()
    });
    let ratio = ours.docs_per_s / baseline.docs_per_s;
    eprintln!(
        "diff: {:.0} pairs/s ({:.1} changes per pair)\njson-patch baseline: {:.0} pairs/s ({:.1} operations per pair)\nratio: {ratio:.3}",
        ours.docs_per_s, ours.items_per_pair, baseline.docs_per_s, baseline.items_per_pair,
    );
    if json {
        // Written by hand so the fields come in the documented order (json! sorts them).
        let line = format!(
            "{{\"bench\":\"diff\",\"docs_per_s\":{},\"baseline\":\"json-patch\",\"baseline_per_s\":{},\"ratio\":{},\"pairs\":{},\"changes_per_pair\":{},\"baseline_ops_per_pair\":{}}}",
            json!(ours.docs_per_s.round() as u64),
            json!(baseline.docs_per_s.round() as u64),
            json!((ratio * 1000.0).round() / 1000.0),
            pairs.len(),
            json!((ours.items_per_pair * 10.0).round() / 10.0),
            json!((baseline.items_per_pair * 10.0).round() / 10.0),
        );
        println!("{line}");
    }
    Ok(())
}
