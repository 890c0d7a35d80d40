//! Supervising a projector (or a reactor, or any leased job) in a process that may share it with others: take its lease, run it
//! while the lease is held, hand over when the process stops, take over when another one dies.

use std::future::Future;
use std::time::Duration;

use command_side::event_store::PgEventStore;
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::lease;
use crate::projector::Projector;
use crate::reactor::{Reactor, ReactorRunner};
use crate::runtime::{checkpoint_key, ProjectionRunner, RuntimeError};

/// How a supervised projector runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This process's name in the lease table (unique per process).
    pub holder: String,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
    /// Events per batch.
    pub batch_size: i64,
    /// How long a live projector or reactor waits once caught up with the log (see
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
    let pool = store.pool().clone();
    let (batch_size, linger) = (options.batch_size, options.linger);
    while_leased(&pool, &key, &options, shutdown, |stop| {
        ProjectionRunner::new(store.clone(), make(), batch_size)
            .for_partition(partition)
            .with_linger(linger)
            .run(stop)
    })
    .await;
}

/// Runs `make()`'s reactor whenever this process holds its lease, until `shutdown` resolves
/// (see [`while_leased`]).
pub async fn supervise_reactor<R: Reactor>(
    store: PgEventStore,
    make: impl Fn() -> R + Send,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let key = make().name();
    let pool = store.pool().clone();
    let batch_size = options.batch_size;
    while_leased(&pool, key, &options, shutdown, |stop| {
        ReactorRunner::new(store.clone(), make(), batch_size)
            .with_linger(options.linger)
            .run(stop)
    })
    .await;
}

/// Runs `run(stop)` whenever this process holds the lease named `key`, until `shutdown`
/// resolves: `stop` resolves when the lease is lost or at shutdown, and `run` is expected to
/// return then (between batches: it is never cancelled from outside mid-transaction). A run that
/// fails is logged and counted; the lease is given up for a while so another process may take
/// over, then taken again. Only returns at shutdown.
pub async fn while_leased<'s, F>(
    pool: &PgPool,
    key: &str,
    options: &WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 's,
    mut run: impl FnMut(BoxFuture<'s, ()>) -> F,
) where
    F: Future<Output = Result<(), RuntimeError>>,
{
    let name = key;
    let renew_every = options.lease_ttl / 3;
    let shutdown = shutdown.boxed().shared();
    loop {
        let held = match lease::acquire(pool, name, &options.holder, options.lease_ttl).await {
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
        metrics::gauge!("fleetlog_projection_lease_held", "projector" => key.to_owned()).set(1.0);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let renewer = {
            let (pool, holder, ttl, key) = (
                pool.clone(),
                options.holder.clone(),
                options.lease_ttl,
                key.to_owned(),
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
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                let lease_lost = std::pin::pin!(async move {
                    let _ = lost_rx.wait_for(|lost| *lost).await;
                });
                futures::future::select(lease_lost, shutdown).await;
            }
        };
        let result = run(stop.boxed()).await;
        // The renewer must be gone before the lease is given up, or it would take it back.
        renewer.abort();
        let _ = renewer.await;
        metrics::gauge!("fleetlog_projection_lease_held", "projector" => key.to_owned()).set(0.0);
        if shutdown.peek().is_some() {
            let _ = lease::release(pool, name, &options.holder).await;
            return;
        }
        match result {
            Ok(()) => tracing::warn!(projector = name, "lease lost; stepping back"),
            Err(error) => {
                tracing::error!(projector = name, %error, "stopped; retrying");
                metrics::counter!("fleetlog_projection_errors_total", "projector" => key.to_owned())
                    .increment(1);
                // Give another process the chance to take over, then try again.
                let _ = lease::release(pool, name, &options.holder).await;
                tokio::select! {
                    _ = shutdown.clone() => return,
                    _ = tokio::time::sleep(options.lease_ttl) => {}
                }
            }
        }
    }
}
