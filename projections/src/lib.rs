//! Fleetlog's projections: the runtime that folds the event log into read models.
//!
//! # Layout
//!
//! - [`projector`]: the [`Projector`] trait (load, pure fold, flush) and [`FoldError`].
//! - [`runtime`]: [`ProjectionRunner`]: batches in the global order, the read-model writes and the
//!   checkpoint in one transaction (exactly once across crashes), retries with backoff, parked
//!   poison events, lag metrics.
//! - [`reactor`]: [`Reactor`](reactor::Reactor)s turn events into new events, with ids derived
//!   from their input, so a replay or a retry never records a fact twice.
//! - [`checkpoint`]: SQL of checkpoints and parked events.
//! - [`rebuild`]: rebuild into shadow tables and swap; replay as of a point into a schema.
//! - [`lease`]: at most one live process runs a projector; a dead one's lease expires.
//! - [`worker`]: [`supervise`](worker::supervise): run a projector while holding its lease.
//! - [`status`]: position, lag, parked count and lease holder of every projector.
//! - [`inventory`]: the differ of inventory reports, its rules, and snapshot retention (pure).
//! - [`event_type_counts`]: the simplest read model, events per tenant and type.
//! - [`registry`]: tenants, their API tokens, systems and gateways with credentials and status:
//!   what the ingest side authenticates against.
//! - [`liveness`]: [`Liveness`]: each system's status (unknown, active, inactive), last sign of
//!   life, lifecycle and status intervals: what the liveness monitor watches.
//! - [`monitor`]: the liveness monitor, a reactor driven by the [`clock`]: SystemWentSilent and
//!   SystemRecovered, each exactly once.
//! - [`link_failed`]: raises and resolves LinkFailed alerts on those transitions.
//! - [`alert_publisher`]: publishes those transitions to NATS JetStream, once each.
//! - [`testing`]: the determinism helper: live with restarts == rebuilt from 0, row for row.

pub mod alert_publisher;
pub mod checkpoint;
pub mod clock;
pub mod event_type_counts;
pub mod inventory;
pub mod lease;
pub mod link_failed;
pub mod liveness;
pub mod monitor;
pub mod projector;
pub mod reactor;
pub mod rebuild;
pub mod registry;
pub mod runtime;
pub mod status;
pub mod testing;
pub mod worker;

pub use event_type_counts::EventTypeCounts;
pub use liveness::Liveness;
pub use projector::{FoldError, Projector};
pub use registry::Registry;
pub use runtime::{ParkedRetry, ProjectionRunner, RetryPolicy, RuntimeError};
