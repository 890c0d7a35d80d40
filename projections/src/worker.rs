//! Supervising a projector in a process that may share it with others: take its lease, run it
//! while the lease is held, hand over when the process stops, take over when another one dies.

use std::future::Future;
use std::time::Duration;

use command_side::event_store::PgEventStore;
use futures::FutureExt;
use tokio::sync::watch;

use crate::lease;
use crate::projector::Projector;
use crate::runtime::{checkpoint_key, ProjectionRunner};

/// How a supervised projector runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This process's name in the lease table (unique per process).
    pub holder: String,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
    /// Events per batch.
    pub batch_size: i64,
    /// How long a live runner waits after a small batch (see
    /// [`ProjectionRunner::with_linger`]).
    pub linger: Duration,
}

/// Supervises every partition of `make()`'s projector (see [`supervise`]) until `shutdown()`
/// resolves.
pub async fn supervise_all<P: Projector, F: Future<Output = ()> + Send>(
    store: PgEventStore,
    make: impl Fn() -> P + Send + Sync,
    options: WorkerOptions,
    shutdown: impl Fn() -> F,
) {
    let partitions = make().partitions().max(1);
    let supervisors = (0..partitions)
        .map(|partition| supervise(store.clone(), &make, partition, options.clone(), shutdown()));
    futures::future::join_all(supervisors).await;
}

/// Runs one partition of `make()`'s projector whenever this process holds that partition's
/// lease, until `shutdown` resolves. Failures are logged, counted and retried; the supervisor
/// itself only returns at shutdown.
pub async fn supervise<P: Projector>(
    store: PgEventStore,
    make: impl Fn() -> P + Send,
    partition: u32,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let projector = make();
    let key = checkpoint_key(projector.name(), partition, projector.partitions());
    let name = key.as_str();
    let pool = store.pool().clone();
    let renew_every = options.lease_ttl / 3;
    // Shared, so the runner can stop between batches on it: a runner is never cancelled from
    // outside in the middle of a transaction.
    let shutdown = shutdown.shared();
    loop {
        let held = match lease::acquire(&pool, name, &options.holder, options.lease_ttl).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(projector = name, %error, "cannot reach the lease table");
                false
            }
        };
        if !held {
            tokio::select! {
                _ = shutdown.clone() => return,
                _ = tokio::time::sleep(renew_every) => continue,
            }
        }
        tracing::info!(projector = name, holder = %options.holder, "lease taken; running");
        metrics::gauge!("fleetlog_projection_lease_held", "projector" => key.clone()).set(1.0);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let renewer = {
            let (pool, holder, ttl, key) = (
                pool.clone(),
                options.holder.clone(),
                options.lease_ttl,
                key.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(renew_every).await;
                    if !matches!(lease::acquire(&pool, &key, &holder, ttl).await, Ok(true)) {
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            })
        };
        let runner = ProjectionRunner::new(store.clone(), make(), options.batch_size)
            .for_partition(partition)
            .with_linger(options.linger);
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                let lease_lost = std::pin::pin!(async move {
                    let _ = lost_rx.wait_for(|lost| *lost).await;
                });
                futures::future::select(lease_lost, shutdown).await;
            }
        };
        let result = runner.run(stop).await;
        // The renewer must be gone before the lease is given up, or it would take it back.
        renewer.abort();
        let _ = renewer.await;
        metrics::gauge!("fleetlog_projection_lease_held", "projector" => key.clone()).set(0.0);
        if shutdown.peek().is_some() {
            let _ = lease::release(&pool, name, &options.holder).await;
            return;
        }
        match result {
            Ok(()) => tracing::warn!(projector = name, "lease lost; stepping back"),
            Err(error) => {
                tracing::error!(projector = name, %error, "projector stopped; retrying");
                metrics::counter!("fleetlog_projection_errors_total", "projector" => key.clone())
                    .increment(1);
                // Give another process the chance to take over, then try again.
                let _ = lease::release(&pool, name, &options.holder).await;
                tokio::select! {
                    _ = shutdown.clone() => return,
                    _ = tokio::time::sleep(options.lease_ttl) => {}
                }
            }
        }
    }
}
