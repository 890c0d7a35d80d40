//! Every reactor of Fleetlog and the jobs driven by time, in one place: what `serve` and
//! `project` run, each under its own lease (so several processes may run them; one works).

use command_side::event_store::PgEventStore;
use projections::alert_publisher::{AlertPublisher, AlertPublisherConfig, PUBLISHER_NAME};
use projections::clock::SystemClock;
use projections::inventory::retention_job::RETENTION_NAME;
use projections::inventory::{InventoryDiff, SnapshotRetention};
use projections::link_failed::LinkFailedAlerts;
use projections::monitor::{LivenessMonitor, MONITOR_NAME};
use projections::worker::{supervise_reactor, while_leased, WorkerOptions};
use projections::RuntimeError;

use crate::config::{InventoryConfig, LivenessConfig, NatsConfig};
use crate::serve::Stop;

/// Runs the inventory diff reactor, the LinkFailed reactor, the liveness monitor, inventory
/// snapshot retention and (when NATS_URL is set) the JetStream alert publisher until `stop` is
/// requested.
pub async fn run_all(
    store: PgEventStore,
    options: WorkerOptions,
    liveness: &LivenessConfig,
    inventory: &InventoryConfig,
    nats: &NatsConfig,
    stop: &Stop,
) {
    let pool = store.pool().clone();
    let link_failed = supervise_reactor(
        store.clone(),
        || LinkFailedAlerts,
        options.clone(),
        stop.requested(),
    );
    let inventory_diff = supervise_reactor(
        store.clone(),
        InventoryDiff::default,
        options.clone(),
        stop.requested(),
    );
    let monitor_config = liveness.monitor();
    let monitor = while_leased(&pool, MONITOR_NAME, &options, stop.requested(), |until| {
        // A monitor that takes over starts its own grace period.
        LivenessMonitor::new(store.clone(), SystemClock, monitor_config.clone()).run(until)
    });
    let retention_interval = inventory.retention_interval();
    let retention = while_leased(&pool, RETENTION_NAME, &options, stop.requested(), |until| {
        SnapshotRetention::new(store.clone()).run(SystemClock, retention_interval, until)
    });
    let publisher = async {
        let Some(url) = &nats.nats_url else {
            return;
        };
        let config = AlertPublisherConfig {
            nats_url: url.clone(),
            stream_name: nats.nats_alert_stream.clone(),
            subject_prefix: nats.nats_alert_subject_prefix.clone(),
        };
        tracing::info!(subjects = %config.subject("*"), "liveness alerts go to JetStream");
        while_leased(&pool, PUBLISHER_NAME, &options, stop.requested(), |until| {
            let (store, config) = (store.clone(), config.clone());
            async move {
                let publisher = AlertPublisher::connect(store, config)
                    .await
                    .map_err(|error| RuntimeError::Unavailable(error.to_string()))?;
                publisher.run(until).await
            }
        })
        .await;
    };
    futures::join!(link_failed, inventory_diff, monitor, retention, publisher);
}
