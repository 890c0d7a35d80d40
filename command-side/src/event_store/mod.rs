//! The event store: the one place events are appended and read back in the global order.
//!
//! - [`EventStore`]: the small trait that command handlers and reactors append through.
//! - [`plan`]: the pure part of an append batch (idempotency and expected-version checks).
//! - [`postgres`]: [`PgEventStore`], the PostgreSQL implementation: appends and reads.
//! - [`writer`]: the group-commit writer behind [`PgEventStore`]'s appends.
//! - [`tail`]: [`EventTail`], a reader that follows the log live, woken by `NOTIFY`.

pub mod plan;
pub mod postgres;
pub mod tail;
pub mod writer;

use std::fmt;
use std::future::Future;

use events_schema::{EventId, NewEvent, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};

pub use postgres::PgEventStore;
pub use tail::EventTail;
pub use writer::GroupCommitConfig;

/// What the caller believes about a stream before appending to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check: heartbeats, telemetry and other facts that do not depend on stream state.
    Any,
    /// The stream must not exist yet (registration).
    NoStream,
    /// The stream's last event must have exactly this version (0 means "empty", like `NoStream`).
    Exact(i64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    /// The event's id.
    pub event_id: EventId,
    /// Its place in the global order.
    pub position: i64,
    /// Its place in its stream.
    pub stream_version: i64,
}

/// The answer to a successful append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Every event of the append, in the order given, with its positions.
    pub events: Vec<AppendedEvent>,
    /// True when every event id was already stored: nothing was written, and the positions are
    /// those of the original append.
    pub duplicate: bool,
}

impl AppendOutcome {
    /// The stream version after this append (the version of its last event).
    pub fn stream_version(&self) -> i64 {
        self.events.last().map_or(0, |e| e.stream_version)
    }
}

/// Why an append or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream is not at the version the caller expected; nothing was written.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream_id: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 when it does not exist).
        actual: i64,
    },
    /// Some event ids of this append are already stored and others are not, or they are stored
    /// in another stream: the append is not a retry of an earlier one.
    #[error("event {event_id} is already stored, but not as part of this same append")]
    EventIdReused {
        /// The first reused id.
        event_id: EventId,
    },
    /// The append itself is malformed (empty, or an id repeated within it).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// PostgreSQL refused the content of this append (for example a `\u0000` in a JSON string).
    #[error("the event store rejected the events: {0}")]
    Rejected(String),
    /// The writer task has stopped (shutdown).
    #[error("the event store is shutting down")]
    Unavailable,
    /// A stored row could not be read back.
    #[error("stored event at position {position} is unreadable: {reason}")]
    CorruptRow {
        /// The row's position.
        position: i64,
        /// What is wrong.
        reason: String,
    },
    /// The database failed; the append may be retried with the same event ids.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The result type of event store calls.
pub type Result<T, E = EventStoreError> = std::result::Result<T, E>;

/// The event store as command handlers and reactors see it.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`. Returns only after
    /// the events are durable. Re-appending ids that are all stored is a success that writes nothing.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendOutcome>> + Send;

    /// Up to `limit` events of one stream with `stream_version >= from_version`, in stream order.
    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Up to `limit` events with `position > after_position`, in the one global order.
    fn read_all(
        &self,
        after_position: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;
}
