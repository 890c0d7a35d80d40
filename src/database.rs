//! Connecting to PostgreSQL, creating Fleetlog's database, applying migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

/// Connection options with the guards every Fleetlog session runs under.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let idle = format!("{}s", config.idle_in_transaction_timeout_s);
    Ok(PgConnectOptions::from_str(&config.database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("fleetlog")
        .options([("idle_in_transaction_session_timeout", idle.as_str())]))
}

/// Creates the database if it is missing (when the role may), then opens a pool.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let url = &config.database_url;
    if !Postgres::database_exists(url)
        .await
        .context("cannot reach PostgreSQL at DATABASE_URL")?
    {
        tracing::info!("database does not exist; creating it");
        Postgres::create_database(url)
            .await
            .context("cannot create the database")?;
    }
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(config)?)
        .await
        .context("cannot connect to the database")
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    migrations::MIGRATOR
        .run(pool)
        .await
        .context("migrations failed")?;
    tracing::info!(
        applied = migrations::MIGRATOR.iter().count(),
        "database schema is current"
    );
    Ok(())
}
