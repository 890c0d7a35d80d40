//! `fleetlog`: the one binary. See `fleetlog --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetlog::bench::append::AppendBench;
use fleetlog::bench::replay::ReplayBench;
use fleetlog::config::{DatabaseConfig, LogConfig, ProjectConfig, ServeConfig};
use fleetlog::{database, operate, schemas, serve, telemetry};

/// Fleetlog keeps the whole life of every machine in a fleet as an immutable event log.
#[derive(Debug, Parser)]
#[command(name = "fleetlog", version, about)]
struct Cli {
    #[command(flatten)]
    log: LogConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Fleetlog: creates the database if missing, migrates, then serves the HTTP API and
    /// runs the projectors.
    Serve(ServeConfig),
    /// Run only the projectors (several processes share them through leases).
    Project(ProjectConfig),
    /// Apply pending database migrations (creating the database if missing) and exit.
    Migrate(DatabaseConfig),
    /// Where every projector is: position, lag, events/s, parked events, lease holder.
    Status {
        /// How long to watch for the events/s figure (seconds).
        #[arg(long, default_value_t = 1.0)]
        sample_s: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Rebuild a projector from position 0 into shadow tables while the live one keeps serving,
    /// then swap them in.
    Rebuild {
        /// Projector name.
        projector: String,
        /// Events per batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Build a projector's read model as of a point in history into a schema of its own.
    Replay {
        /// Projector name.
        projector: String,
        /// The point in history: a position, or an RFC 3339 time (events recorded at or before it).
        #[arg(long)]
        until: String,
        /// The schema to build into (must not exist yet).
        #[arg(long)]
        into: String,
        /// Events per batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Events projectors could not apply: list, retry or skip them.
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Inventory history maintenance.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The JSON Schemas of the event catalogue.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// The OpenAPI description of the HTTP API.
    #[command(subcommand)]
    Openapi(OpenapiCommand),
}

#[derive(Debug, Subcommand)]
enum OpenapiCommand {
    /// Write the OpenAPI document.
    Export {
        /// Target file.
        #[arg(long, default_value = "docs/openapi.json")]
        out: PathBuf,
    },
    /// Exit non-zero when the file differs from what the code describes.
    Check {
        /// File to check.
        #[arg(long, default_value = "docs/openapi.json")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ParkedCommand {
    /// List parked events.
    List {
        /// Only this projector's.
        #[arg(long)]
        projector: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Apply a parked event now (after the projector was fixed) and unpark it.
    Retry {
        /// Projector name.
        projector: String,
        /// Position of the parked event.
        position: i64,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Forget a parked event; it stays unapplied.
    Skip {
        /// Projector name.
        projector: String,
        /// Position of the parked event.
        position: i64,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[derive(Debug, Subcommand)]
enum InventoryCommand {
    /// Run one pass of snapshot retention now: prune the documents of old inventory reports
    /// that retention no longer keeps (what the scheduled job does every
    /// INVENTORY_RETENTION_INTERVAL_S) and print what it did.
    Prune {
        /// Apply retention as of this RFC 3339 time instead of now.
        #[arg(long)]
        now: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Group-commit append throughput against raw COPY of the same rows.
    Append(AppendBench),
    /// Projection replay throughput against a raw keyset read of the same rows.
    Replay(ReplayBench),
    /// Ingest throughput and latency over HTTP against raw COPY of the same rows.
    Ingest(Box<fleetlog::bench::ingest::IngestBench>),
    /// One tick of the liveness monitor over a large fleet.
    Liveness(fleetlog::bench::liveness::LivenessBench),
    /// Inventory reports per second through the diff reactor, against reading them back.
    DiffReactor(fleetlog::bench::diff_reactor::DiffReactorBench),
    /// Inventory differ throughput against json-patch's diff on the same pairs (no database).
    Diff(fleetlog::bench::diff::DiffBench),
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
    /// Write one `{EventType}.v{N}.json` per catalogue event.
    Export {
        /// Target folder.
        #[arg(long, default_value = "docs/events")]
        out: PathBuf,
    },
    /// Exit non-zero when the folder differs from the catalogue.
    Check {
        /// Folder to check.
        #[arg(long, default_value = "docs/events")]
        dir: PathBuf,
    },
}

/// mimalloc instead of the system allocator: the ingest path allocates many small JSON values, and
/// glibc's allocator keeps argon2's 19 MiB work areas after they are freed (gigabytes of resident
/// memory after a burst of logins).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init_logging(&cli.log) {
        eprintln!("fleetlog: {error:#}");
        return ExitCode::FAILURE;
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("fleetlog: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => serve::run(config, telemetry::init_metrics()?).await,
        Command::Project(config) => serve::project(config, telemetry::init_metrics()?).await,
        Command::Status {
            sample_s,
            json,
            database,
        } => {
            let pool = database::connect(&database).await?;
            operate::status(
                &pool,
                std::time::Duration::from_secs_f64(sample_s.max(0.0)),
                json,
            )
            .await
        }
        Command::Rebuild {
            projector,
            batch_size,
            database,
        } => operate::rebuild(&database::connect(&database).await?, &projector, batch_size).await,
        Command::Replay {
            projector,
            until,
            into,
            batch_size,
            database,
        } => {
            let pool = database::connect(&database).await?;
            operate::replay(&pool, &projector, &until, &into, batch_size).await
        }
        Command::Parked(ParkedCommand::List {
            projector,
            json,
            database,
        }) => {
            operate::parked_list(
                &database::connect(&database).await?,
                projector.as_deref(),
                json,
            )
            .await
        }
        Command::Parked(ParkedCommand::Retry {
            projector,
            position,
            database,
        }) => {
            operate::parked_retry(&database::connect(&database).await?, &projector, position).await
        }
        Command::Parked(ParkedCommand::Skip {
            projector,
            position,
            database,
        }) => {
            operate::parked_skip(&database::connect(&database).await?, &projector, position).await
        }
        Command::Inventory(InventoryCommand::Prune {
            now,
            json,
            database,
        }) => inventory_prune(&database, now.as_deref(), json).await,
        Command::Migrate(config) => {
            let pool = database::connect(&config).await?;
            database::migrate(&pool).await
        }
        Command::Bench(BenchCommand::Append(options)) => {
            fleetlog::bench::append::run(options).await
        }
        Command::Bench(BenchCommand::Ingest(options)) => {
            fleetlog::bench::ingest::run(*options).await
        }
        Command::Bench(BenchCommand::Liveness(options)) => {
            fleetlog::bench::liveness::run(options).await
        }
        Command::Bench(BenchCommand::DiffReactor(options)) => {
            fleetlog::bench::diff_reactor::run(options).await
        }
        Command::Bench(BenchCommand::Replay(options)) => {
            fleetlog::bench::replay::run(options).await
        }
        Command::Bench(BenchCommand::Diff(options)) => fleetlog::bench::diff::run(options),
        Command::Schemas(SchemasCommand::Export { out }) => {
            let written = schemas::export(&out)?;
            eprintln!("wrote {written} schemas to {}", out.display());
            Ok(())
        }
        Command::Openapi(OpenapiCommand::Export { out }) => {
            schemas::export_openapi(&out)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::Openapi(OpenapiCommand::Check { file }) => {
            anyhow::ensure!(
                schemas::openapi_is_current(&file)?,
                "{} is stale; run `fleetlog openapi export`",
                file.display()
            );
            Ok(())
        }
        Command::Schemas(SchemasCommand::Check { dir }) => {
            let stale = schemas::stale_files(&dir)?;
            anyhow::ensure!(
                stale.is_empty(),
                "{} is stale ({}); run `fleetlog schemas export`",
                dir.display(),
                stale.join(", ")
            );
            Ok(())
        }
    }
}

/// `fleetlog inventory prune`: one pass of snapshot retention as of `now` (default: the clock).
async fn inventory_prune(
    database: &DatabaseConfig,
    now: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let now = match now {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--now {text:?} is not an RFC 3339 time"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let pool = database::connect(database).await?;
    let store = command_side::event_store::PgEventStore::start(
        pool.clone(),
        command_side::event_store::GroupCommitConfig::default(),
    );
    eprintln!("pruning inventory snapshots as of {}", now.to_rfc3339());
    let report = projections::inventory::SnapshotRetention::new(store)
        .run_once(now)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} systems: {} documents pruned, {} snapshots kept, {} held back{}",
            report.systems,
            report.pruned,
            report.kept,
            report.held_back,
            if report.interrupted {
                " (stopped early: a rebuild of the inventory projector runs)"
            } else {
                ""
            }
        );
    }
    pool.close().await;
    Ok(())
}
