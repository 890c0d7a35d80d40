//! [`EventTail`]: follows the event log in the global order, from any position, for ever.
//!
//! It reads in batches while there is a backlog; once caught up it sleeps on `LISTEN
//! fleetlog_events` (every commit notifies) with a slow poll as a safety net for notifications
//! lost while the listener reconnects. Positions are commit-ordered, so the tail never skips.

use std::time::Duration;

use events_schema::RecordedEvent;
use sqlx::postgres::PgListener;

use super::postgres::EVENTS_CHANNEL;
use super::{EventStore, PgEventStore, Result};

/// A live reader of the whole log.
pub struct EventTail {
    store: PgEventStore,
    listener: PgListener,
    position: i64,
    batch_size: i64,
    idle_poll: Duration,
}

impl EventTail {
    /// Starts listening, then reads from `after_position` (exclusive). Listening before the
    /// first read means no commit can slip between "caught up" and "waiting".
    pub async fn start(store: PgEventStore, after_position: i64, batch_size: i64) -> Result<Self> {
        let mut listener = PgListener::connect_with(store.pool()).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Self {
            store,
            listener,
            position: after_position,
            batch_size: batch_size.max(1),
            idle_poll: Duration::from_secs(5),
        })
    }

    /// The position of the last event returned.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The next non-empty batch of events, waiting as long as it takes.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        loop {
            let events = self.store.read_all(self.position, self.batch_size).await?;
            if let Some(last) = events.last() {
                self.position = last.position;
                return Ok(events);
            }
            tokio::select! {
                notified = self.listener.recv() => { notified?; }
                _ = tokio::time::sleep(self.idle_poll) => {}
            }
            // Several commits may have notified while we slept: one read serves them all.
            while self.listener.next_buffered().is_some() {}
        }
    }
}
