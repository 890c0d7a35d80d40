//! The [`Projector`] trait: how a read model is folded from the event log.

use std::future::Future;

use events_schema::RecordedEvent;
use sqlx::PgConnection;

/// Why a fold refused an event. The runtime retries, then parks the event and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FoldError(pub String);

/// A read model, folded from the log in its one global order.
///
/// The runtime gives a projector batches of events and, for each batch, in one transaction:
/// [`load`](Projector::load)s what the fold needs, [`fold`](Projector::fold)s every event into
/// in-memory changes, [`flush`](Projector::flush)es them, and moves the projector's checkpoint.
/// So each event is applied exactly once, across crashes.
///
/// Rules that keep a rebuild from position 0 identical to the live read model: `fold` is pure (no
/// clock, no network, no I/O); `load` and `flush` touch only the projector's own
/// [`tables`](Projector::tables); everything derives from the events.
pub trait Projector: Send + Sync + 'static {
    /// The changes one batch folds into before they are written.
    type Changes: Send;

    /// Stable name; the key of the projector's checkpoint and parked events.
    fn name(&self) -> &'static str;

    /// The read-model tables this projector owns (and a rebuild replaces).
    fn tables(&self) -> &'static [&'static str];

    /// Into how many partitions (by hash of stream id) the log is split for this projector. Each
    /// partition has its own checkpoint and lease, so up to this many processes share the work.
    /// Only a projector whose rows of different streams never depend on each other's order may
    /// be partitioned.
    fn partitions(&self) -> u32 {
        1
    }

    /// The event types [`fold`](Projector::fold) does anything with; `None` (the default) means
    /// every event. When declared, the runtime reads only events of these types, so a projector
    /// that cares about a few rare types does not read (and decode) the whole log; its checkpoint
    /// still moves over the events it never sees. Every type whose fold changes the read model must
    /// be listed: an event of an unlisted type is never given to `fold`, not even in a rebuild.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether `load` and `fold` look at an event's payload or opaque data. `true` by default;
    /// a projector that only needs the envelope (type, tenant, stream, position, times) returns
    /// `false`, and the runtime then leaves payloads out of its reads (`payload` is JSON `null`
    /// and `data` is `None` in the events it gets), which spares reading large reports.
    fn reads_payloads(&self) -> bool {
        true
    }

    /// Reads, in the batch's transaction, the read-model state the fold of `events` needs.
    fn load(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<Self::Changes, sqlx::Error>> + Send;

    /// Folds one event into the changes. Pure: the same changes and event give the same result.
    fn fold(&self, changes: &mut Self::Changes, event: &RecordedEvent) -> Result<(), FoldError>;

    /// Writes the changes in the batch's transaction.
    fn flush(
        &self,
        tx: &mut PgConnection,
        changes: Self::Changes,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}
