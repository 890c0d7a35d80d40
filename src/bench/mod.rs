//! `fleetlog bench ...`: benchmarks that print a figure next to a baseline measured in the same run.
//!
//! Each bench that needs a database works in a scratch database of its own (created, migrated,
//! dropped; `diff` needs none), prints a human summary to stderr, and with `--json` prints one
//! JSON object as the last line of stdout.

pub mod append;
pub mod diff;
pub mod diff_reactor;
pub mod ingest;
pub mod inventory;
pub mod liveness;
pub mod replay;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

/// Options every bench shares: the server, the scratch database, the output.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchRun {
    /// Name of the scratch database (dropped and recreated).
    #[arg(long, default_value = "fleetlog_bench")]
    pub scratch_database: String,
    /// Keep the scratch database afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Database server to run on.
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// A database that exists for one bench run.
pub struct ScratchDatabase {
    url: String,
    /// Pool on the scratch database.
    pub pool: PgPool,
    keep: bool,
}

impl ScratchDatabase {
    /// Drops any leftover of the same name, creates it afresh and migrates it.
    pub async fn create(run: &BenchRun) -> anyhow::Result<Self> {
        let (base, name, keep) = (&run.database, run.scratch_database.as_str(), run.keep);
        let options: PgConnectOptions = crate::database::connect_options(base)?.database(name);
        let mut url = url_with_database(&base.database_url, name)?;
        if Postgres::database_exists(&url).await? {
            Postgres::force_drop_database(&url)
                .await
                .context("cannot drop the old scratch database")?;
        }
        Postgres::create_database(&url)
            .await
            .context("cannot create the scratch database")?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(base.database_max_connections)
            .connect_with(options)
            .await?;
        crate::database::migrate(&pool).await?;
        Ok(Self {
            url: std::mem::take(&mut url),
            pool,
            keep,
        })
    }

    /// Closes the pool and drops the database unless asked to keep it.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if !self.keep {
            Postgres::force_drop_database(&self.url)
                .await
                .context("cannot drop the scratch database")?;
        }
        Ok(())
    }
}

fn url_with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (without_query, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let scheme_end = without_query
        .find("://")
        .context("DATABASE_URL has no scheme")?
        + 3;
    let base = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    Ok(match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    })
}

/// A progress bar on stderr (drawn only on a terminal) with rate and ETA.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scratch_url_replaces_only_the_database_name() {
        let f = super::url_with_database;
        assert_eq!(
            f("postgres://u@h:5432/fleetlog", "b").unwrap(),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            f("postgres://u@h/fleetlog?sslmode=disable", "b").unwrap(),
            "postgres://u@h/b?sslmode=disable"
        );
        assert_eq!(f("postgres://u@h", "b").unwrap(), "postgres://u@h/b");
    }
}
