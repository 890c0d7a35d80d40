//! Inventory history: what changed between two reports of a machine, how to replay those
//! changes, how changes are classified, which snapshots to keep, and the reactor and read models
//! built on that.
//!
//! [`diff`], [`rules`] and [`retention`] are the pure core (no database, no clock); the reactor,
//! the read models and the retention job call into it. See `docs/inventory.md` for the path syntax, the default rules and
//! the retention schedule.
//!
//! - [`diff`]: [`diff::diff`] (old, new, rules → changes, in document order), [`diff::apply`]
//!   (old + changes → new) and the path syntax.
//! - [`rules`]: [`rules::DiffRules`]: identity keys, ignored paths and category/severity rules,
//!   Fleetlog's defaults merged with a tenant's; [`rules::notification_matches`].
//! - [`retention`]: which snapshots of a system to keep as they age.
//! - [`projector`]: [`InventoryHistory`], the `inventory` projector (latest report, snapshots,
//!   change timeline); [`retention_job`]: [`SnapshotRetention`], which prunes expired documents.
//! - [`reactor`]: [`InventoryDiff`], the reactor that appends `InventoryChanged` (and change
//!   notifications) for every new full report.

pub mod diff;
pub mod projector;
pub mod reactor;
pub mod retention;
pub mod retention_job;
pub mod rules;

pub use diff::{apply, canonical, diff, ApplyError};
pub use projector::InventoryHistory;
pub use reactor::InventoryDiff;
pub use retention_job::{RetentionReport, SnapshotRetention};
pub use rules::{notification_matches, DiffRules};
