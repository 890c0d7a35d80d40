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

    /// Once caught up with the log, how long a live projector or reactor waits before reading
    /// again (milliseconds): fewer, larger transactions under steady load, at this much extra lag.
    #[arg(long, env = "PROJECTION_LINGER_MS", default_value_t = 50)]
    pub projection_linger_ms: u64,
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
            linger: Duration::from_millis(self.projection_linger_ms),
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

    /// NATS settings (liveness alerts are published when NATS_URL is set).
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Liveness monitor settings.
    #[command(flatten)]
    pub liveness: LivenessConfig,

    /// Inventory history settings.
    #[command(flatten)]
    pub inventory: InventoryConfig,
}

/// What ingest clients may send, and how their credentials are checked.
#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "API_MAX_REQUEST_SIZE", default_value_t = 10 * 1024 * 1024)]
    pub api_max_request_size: usize,

    /// How far ahead of the server's clock a report's timestamp may be (seconds).
    #[arg(long, env = "MAX_CLOCK_SKEW_S", default_value_t = 300)]
    pub max_clock_skew_s: u64,

    /// How long a verified system key and secret are remembered before argon2 runs again
    /// (seconds). Rotation, pause, resume and decommission end it at once.
    #[arg(long, env = "AUTH_CACHE_TTL_S", default_value_t = 300)]
    pub auth_cache_ttl_s: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            api_max_request_size: 10 * 1024 * 1024,
            max_clock_skew_s: 300,
            auth_cache_ttl_s: 300,
        }
    }
}

impl IngestConfig {
    /// As the write API takes it.
    pub fn limits(&self) -> command_side::http::IngestLimits {
        command_side::http::IngestLimits {
            max_request_bytes: self.api_max_request_size.max(1),
            max_clock_skew: Duration::from_secs(self.max_clock_skew_s),
        }
    }
}

/// NATS JetStream intake of gateway telemetry (off unless NATS_URL is set).
#[derive(Debug, Clone, Args)]
pub struct NatsConfig {
    /// NATS server URL, e.g. `nats://127.0.0.1:4222`; the intake runs only when it is set.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// JetStream stream that holds telemetry (created if missing).
    #[arg(
        long,
        env = "NATS_TELEMETRY_STREAM",
        default_value = "FLEETLOG_TELEMETRY"
    )]
    pub nats_telemetry_stream: String,

    /// Subject prefix: messages arrive on `{prefix}.{tenant id}.{gateway key}`.
    #[arg(
        long,
        env = "NATS_TELEMETRY_SUBJECT_PREFIX",
        default_value = "telemetry.data"
    )]
    pub nats_telemetry_subject_prefix: String,

    /// Name of the durable pull consumer.
    #[arg(
        long,
        env = "NATS_TELEMETRY_CONSUMER",
        default_value = "fleetlog-telemetry"
    )]
    pub nats_telemetry_consumer: String,

    /// JetStream stream created to keep liveness alerts, if no stream captures them yet.
    #[arg(long, env = "NATS_ALERT_STREAM", default_value = "FLEETLOG_ALERTS")]
    pub nats_alert_stream: String,

    /// Subject prefix of liveness alerts: they go to `{prefix}.{tenant id}.gw_offline`.
    #[arg(long, env = "NATS_ALERT_SUBJECT_PREFIX", default_value = "alert")]
    pub nats_alert_subject_prefix: String,
}

/// The liveness monitor.
#[derive(Debug, Clone, Args)]
pub struct LivenessConfig {
    /// Minutes without a sign of life before a system counts as silent, unless its tenant or the
    /// system itself sets another timeout.
    #[arg(long, env = "HEARTBEAT_TIMEOUT_MINUTES", default_value_t = 10)]
    pub heartbeat_timeout_minutes: u32,

    /// Seconds between two checks of the fleet.
    #[arg(long, env = "HEARTBEAT_CHECK_INTERVAL_S", default_value_t = 60)]
    pub heartbeat_check_interval_s: u64,

    /// After start, seconds during which nobody is declared silent (agents catch up after an
    /// outage of Fleetlog itself).
    #[arg(long, env = "LIVENESS_GRACE_S", default_value_t = 120)]
    pub liveness_grace_s: u64,
}

impl LivenessConfig {
    /// As the monitor takes it.
    pub fn monitor(&self) -> projections::monitor::MonitorConfig {
        projections::monitor::MonitorConfig {
            tick: Duration::from_secs(self.heartbeat_check_interval_s.max(1)),
            grace: Duration::from_secs(self.liveness_grace_s),
            default_timeout_minutes: self.heartbeat_timeout_minutes.clamp(1, 525_600) as i32,
            ..Default::default()
        }
    }
}

/// Inventory history jobs.
#[derive(Debug, Clone, Args)]
pub struct InventoryConfig {
    /// Seconds between two passes of inventory snapshot retention, which prunes the documents of
    /// old reports that retention no longer keeps (one pass also runs at start-up).
    #[arg(long, env = "INVENTORY_RETENTION_INTERVAL_S", default_value_t = 3600)]
    pub inventory_retention_interval_s: u64,
}

impl InventoryConfig {
    /// The retention schedule.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.inventory_retention_interval_s.max(1))
    }
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

    /// Ingest settings.
    #[command(flatten)]
    pub ingest: IngestConfig,

    /// JetStream intake and alert settings.
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Liveness monitor settings.
    #[command(flatten)]
    pub liveness: LivenessConfig,

    /// Inventory history settings.
    #[command(flatten)]
    pub inventory: InventoryConfig,
}
