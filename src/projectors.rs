//! Every projector of Fleetlog, in one place: what `serve` and `project` run, and what the admin
//! API and `fleetlog parked retry` can find by name.

use command_side::event_store::PgEventStore;
use futures::future::BoxFuture;
use futures::FutureExt;
use projections::rebuild::{self, Progress, RebuildError, RebuildReport};
use projections::worker::{supervise_all, WorkerOptions};
use projections::{EventTypeCounts, ParkedRetry, ProjectionRunner, RuntimeError};
use query_side::admin::ProjectorRegistry;
use sqlx::PgPool;

use crate::serve::Stop;

/// Names of every projector.
pub const NAMES: &[&str] = &["event_type_counts", "registry", "liveness", "inventory"];

/// Evaluates `$body` with `$make` bound to a constructor of the projector named `$name`:
/// `Some(result)`, or `None` for an unknown name. The one place a name becomes a type.
macro_rules! with_projector {
    ($name:expr, $make:ident => $body:expr) => {
        match $name {
            "event_type_counts" => {
                let $make = || EventTypeCounts;
                Some($body)
            }
            "registry" => {
                let $make = || projections::Registry;
                Some($body)
            }
            "liveness" => {
                let $make = || projections::Liveness;
                Some($body)
            }
            "inventory" => {
                let $make = || projections::inventory::InventoryHistory;
                Some($body)
            }
            _ => None,
        }
    };
}

/// Rebuilds the named projector into shadow tables and swaps them in (see
/// [`projections::rebuild::rebuild`]).
pub async fn rebuild(
    pool: &PgPool,
    projector: &str,
    batch_size: i64,
    progress: Progress<'_>,
) -> Option<Result<RebuildReport, RebuildError>> {
    with_projector!(projector, make => rebuild::rebuild(pool, make, batch_size, progress).await)
}

/// Builds the named projector as of `until` into `schema` (see
/// [`projections::rebuild::replay_into_schema`]).
pub async fn replay(
    pool: &PgPool,
    projector: &str,
    schema: &str,
    until: i64,
    batch_size: i64,
    progress: Progress<'_>,
) -> Option<Result<i64, RebuildError>> {
    with_projector!(projector, make => rebuild::replay_into_schema(pool, make, schema, until, batch_size, progress).await)
}

/// Supervises every projector (each partition under its own lease), all concurrently, until
/// `stop` is requested.
pub async fn run_all(store: PgEventStore, options: WorkerOptions, stop: &Stop) {
    futures::join!(
        supervise_all(
            store.clone(),
            || EventTypeCounts,
            options.clone(),
            || stop.requested()
        ),
        supervise_all(
            store.clone(),
            || projections::Registry,
            options.clone(),
            || stop.requested()
        ),
        supervise_all(
            store.clone(),
            || projections::Liveness,
            options.clone(),
            || stop.requested()
        ),
        supervise_all(
            store,
            || projections::inventory::InventoryHistory,
            options,
            || stop.requested()
        ),
    );
}

/// Retries a parked event of a projector, named by its checkpoint key (`name` or
/// `name#partition`, as `fleetlog parked list` shows it); `None` for an unknown name.
pub async fn retry_parked(
    store: &PgEventStore,
    key: &str,
    position: i64,
) -> Option<Result<ParkedRetry, RuntimeError>> {
    let (name, partition) = match key.split_once('#') {
        Some((name, partition)) => (name, Some(partition.parse::<u32>().ok()?)),
        None => (key, None),
    };
    with_projector!(name, make => {
        let partitions = projections::Projector::partitions(&make());
        // `name#p` only names a partition that exists; a plain name is the whole projector.
        if partition.is_some_and(|p| partitions <= 1 || p >= partitions) {
            return None;
        }
        let runner = ProjectionRunner::new(store.clone(), make(), 1);
        let runner = match partition {
            Some(partition) => runner.for_partition(partition),
            None => runner,
        };
        runner.retry_parked(position).await
    })
}

/// The registry the admin API uses.
pub struct Registry(pub PgEventStore);

impl ProjectorRegistry for Registry {
    fn retry_parked<'a>(
        &'a self,
        projector: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Option<Result<ParkedRetry, RuntimeError>>> {
        // On its own task: a client that disconnects must not cancel it mid-transaction.
        let (store, key) = (self.0.clone(), projector.to_owned());
        async move {
            tokio::spawn(async move { retry_parked(&store, &key, position).await })
                .await
                .unwrap_or_else(|_| Some(Err(RuntimeError::Poison("the retry task failed".into()))))
        }
        .boxed()
    }
}
