//! The roles a process runs: `fleetlog serve` (everything), `fleetlog project` (projectors,
//! reactors and the liveness monitor only).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use command_side::event_store::PgEventStore;
use metrics_exporter_prometheus::PrometheusHandle;
use projections::worker::WorkerOptions;
use tokio::sync::watch;

use command_side::intake::jetstream::{self, IntakeError, JetStreamIntakeConfig};

use crate::config::{InventoryConfig, LivenessConfig, NatsConfig, ProjectConfig, ServeConfig};
use crate::{database, http, projectors, reactors};

/// `fleetlog serve`: migrates, then serves HTTP and runs every projector (under leases, so
/// several processes can share them) until Ctrl-C or SIGTERM.
pub async fn run(config: ServeConfig, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let pool = database::connect(&config.database).await?;
    database::migrate(&pool).await?;
    let store = PgEventStore::start(pool.clone(), config.append.group_commit());
    let admin_token: Arc<str> = match config.admin_token {
        Some(token) if !token.trim().is_empty() => token.trim().into(),
        _ => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            tracing::warn!(admin_token = %token, "ADMIN_TOKEN is not set; generated one for this run");
            token.into()
        }
    };
    let listener = tokio::net::TcpListener::bind(&config.listen_address)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_address))?;
    tracing::info!(address = %listener.local_addr()?, "Fleetlog is serving");

    let stop = Stop::on_signal();
    let server = axum::serve(
        listener,
        http::app_with_liveness(
            store.clone(),
            admin_token,
            Some(metrics),
            &config.ingest,
            config.liveness.monitor().default_timeout_minutes,
        )
        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stop.requested());
    let intake = jetstream_intake(&config.nats, store.clone(), &stop);
    let workers = run_workers(
        store,
        config.projection.worker_options(),
        &config.liveness,
        &config.inventory,
        &config.nats,
        &stop,
    );
    let (served, (), intake) = tokio::join!(server, workers, intake);
    served.context("HTTP server failed")?;
    intake.context("JetStream intake failed")?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Every projector and every reactor (with the liveness monitor, snapshot retention and the
/// alert publisher), each under its lease, until `stop`: what `serve` and `project` run beside
/// their servers, and what `bench ingest` measures ingest against.
pub async fn run_workers(
    store: PgEventStore,
    options: WorkerOptions,
    liveness: &LivenessConfig,
    inventory: &InventoryConfig,
    nats: &NatsConfig,
    stop: &Stop,
) {
    futures::join!(
        projectors::run_all(store.clone(), options.clone(), stop),
        reactors::run_all(store, options, liveness, inventory, nats, stop)
    );
}

/// Runs the JetStream telemetry intake until `stop`, when NATS_URL is set.
async fn jetstream_intake(
    config: &NatsConfig,
    store: PgEventStore,
    stop: &Stop,
) -> Result<(), IntakeError> {
    let Some(url) = &config.nats_url else {
        return Ok(());
    };
    let mut intake = JetStreamIntakeConfig::new(url.clone());
    intake.stream_name = config.nats_telemetry_stream.clone();
    intake.subject_prefix = config.nats_telemetry_subject_prefix.clone();
    intake.consumer_name = config.nats_telemetry_consumer.clone();
    tracing::info!(stream = %intake.stream_name, subjects = %intake.subject_filter(), "JetStream telemetry intake on");
    let pool = store.pool().clone();
    // NATS may come up after Fleetlog: keep trying to start, without holding the rest back.
    loop {
        let run = jetstream::run(
            intake.clone(),
            store.clone(),
            pool.clone(),
            stop.requested(),
        );
        match run.await {
            Ok(()) => return Ok(()),
            Err(error @ IntakeError::InvalidConfig(_)) => {
                tracing::error!(%error, "JetStream intake is misconfigured; it stays off");
                return Err(error);
            }
            Err(error) => {
                metrics::counter!("fleetlog_jetstream_errors_total").increment(1);
                tracing::error!(%error, "JetStream intake could not start; retrying in 10 s");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

/// `fleetlog project`: runs every projector until Ctrl-C or SIGTERM, with `/metrics` on
/// METRICS_ADDRESS when it is set.
pub async fn project(config: ProjectConfig, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let pool = database::connect(&config.database).await?;
    database::migrate(&pool).await?;
    let store = PgEventStore::start(pool.clone(), config.append.group_commit());
    let options = config.projection.worker_options();
    tracing::info!(holder = %options.holder, "running projectors");
    let stop = Stop::on_signal();
    let metrics_server = async {
        let Some(address) = &config.metrics_address else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        axum::serve(listener, http::metrics_app(pool.clone(), metrics))
            .with_graceful_shutdown(stop.requested())
            .await
            .context("metrics server failed")
    };
    let workers = run_workers(
        store,
        options,
        &config.liveness,
        &config.inventory,
        &config.nats,
        &stop,
    );
    let (served, ()) = tokio::join!(metrics_server, workers);
    served?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A stop request every part of a process can wait on.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop requested by sending `true` on the returned sender (benches, tests).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (request, requested) = watch::channel(false);
        (request, Self(requested))
    }

    /// Requested on Ctrl-C or SIGTERM.
    pub fn on_signal() -> Self {
        let (request, requested) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = request.send(true);
        });
        Self(requested)
    }

    /// Resolves once a stop is requested.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut requested = self.0.clone();
        async move {
            let _ = requested.wait_for(|stop| *stop).await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}
