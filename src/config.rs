//! Configuration: environment variables (listed in `.env.example`), with working local defaults.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Where the database is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of Fleetlog's database (created at start-up if missing and the role may).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fleetlog"
    )]
    pub database_url: String,

    /// Most connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Sessions idle inside a transaction longer than this are ended by PostgreSQL, so a stuck
    /// client cannot hold the event log's head lock (seconds).
    #[arg(
        long,
        env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S",
        default_value_t = 30
    )]
    pub idle_in_transaction_timeout_s: u64,
}

/// How appends are grouped into transactions.
#[derive(Debug, Clone, Args)]
pub struct AppendConfig {
    /// Most events written in one append transaction.
    #[arg(long, env = "APPEND_MAX_BATCH_EVENTS", default_value_t = 4096)]
    pub append_max_batch_events: usize,

    /// How long the writer may linger for more appends before writing a batch (microseconds;
    /// 0 = write at once, batching only what queued up during the previous commit).
    #[arg(long, env = "APPEND_MAX_WAIT_US", default_value_t = 0)]
    pub append_max_wait_us: u64,
}

impl AppendConfig {
    /// As the event store takes it.
    pub fn group_commit(&self) -> command_side::event_store::GroupCommitConfig {
        command_side::event_store::GroupCommitConfig {
            max_batch_events: self.append_max_batch_events.max(1),
            max_wait: Duration::from_micros(self.append_max_wait_us),
            ..Default::default()
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log filter: a level (`info`) or a tracing directive (`info,sqlx=warn`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The projection runtime in this process.
#[derive(Debug, Clone, Args)]
pub struct ProjectionConfig {
    /// Events per projection batch (one transaction each).
    #[arg(long, env = "PROJECTION_BATCH_SIZE", default_value_t = 1000)]
    pub projection_batch_size: i64,

    /// How long a projector lease lasts without renewal (milliseconds); another process takes
    /// over a dead one's projectors after this.
    #[arg(long, env = "PROJECTION_LEASE_TTL_MS", default_value_t = 10_000)]
    pub projection_lease_ttl_ms: u64,

    /// This process's name in the lease table (default: host name, process id, random suffix).
    #[arg(long, env = "PROJECTION_HOLDER")]
    pub projection_holder: Option<String>,
}

impl ProjectionConfig {
    /// As the projection worker takes it.
    pub fn worker_options(&self) -> projections::worker::WorkerOptions {
        let holder = self.projection_holder.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fleetlog".to_owned());
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
            format!("{host}-{}-{suffix}", std::process::id())
        });
        projections::worker::WorkerOptions {
            holder,
            lease_ttl: Duration::from_millis(self.projection_lease_ttl_ms.max(300)),
            batch_size: self.projection_batch_size.max(1),
        }
    }
}

/// The projection role on its own (`fleetlog project`).
#[derive(Debug, Clone, Args)]
pub struct ProjectConfig {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Group commit settings (for reactors' appends).
    #[command(flatten)]
    pub append: AppendConfig,

    /// Projection settings.
    #[command(flatten)]
    pub projection: ProjectionConfig,

    /// Where to serve `/metrics` and `/healthz` (off when unset).
    #[arg(long, env = "METRICS_ADDRESS")]
    pub metrics_address: Option<String>,
}

/// The HTTP server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "127.0.0.1:8080")]
    pub listen_address: String,

    /// Bearer token of the administrator. When unset, a random one is generated and logged at
    /// start-up (fine on a laptop, never in production).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Group commit settings.
    #[command(flatten)]
    pub append: AppendConfig,

    /// Projection settings.
    #[command(flatten)]
    pub projection: ProjectionConfig,
}
