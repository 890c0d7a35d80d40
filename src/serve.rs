//! `fleetlog serve`: every role in one process.

use std::sync::Arc;

use anyhow::Context;
use command_side::event_store::PgEventStore;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::ServeConfig;
use crate::{database, http};

/// Migrates, then serves HTTP until Ctrl-C or SIGTERM.
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
    axum::serve(listener, http::app(store, admin_token, Some(metrics)))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
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
