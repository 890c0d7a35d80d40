//! Every projector of Fleetlog, in one place: what `serve` and `project` run, and what the admin
//! API and `fleetlog parked retry` can find by name.

use command_side::event_store::PgEventStore;
use futures::future::BoxFuture;
use futures::FutureExt;
use projections::worker::{supervise, WorkerOptions};
use projections::{EventTypeCounts, ParkedRetry, ProjectionRunner, RuntimeError};
use query_side::admin::ProjectorRegistry;

use crate::serve::Stop;

/// Names of every projector.
pub const NAMES: &[&str] = &["event_type_counts"];

/// Supervises every projector (each under its lease) until `stop` is requested.
pub async fn run_all(store: PgEventStore, options: WorkerOptions, stop: &Stop) {
    supervise(store, || EventTypeCounts, options, stop.requested()).await;
}

/// Retries a parked event with the named projector; `None` for an unknown name.
pub async fn retry_parked(
    store: &PgEventStore,
    projector: &str,
    position: i64,
) -> Option<Result<ParkedRetry, RuntimeError>> {
    match projector {
        "event_type_counts" => Some(
            ProjectionRunner::new(store.clone(), EventTypeCounts, 1)
                .retry_parked(position)
                .await,
        ),
        _ => None,
    }
}

/// The registry the admin API uses.
pub struct Registry(pub PgEventStore);

impl ProjectorRegistry for Registry {
    fn retry_parked<'a>(
        &'a self,
        projector: &'a str,
        position: i64,
    ) -> BoxFuture<'a, Option<Result<ParkedRetry, RuntimeError>>> {
        retry_parked(&self.0, projector, position).boxed()
    }
}
