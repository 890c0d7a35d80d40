//! The decisions of one append batch, as a pure function: which appends are retries of stored
//! events, which fail their expected-version check, and where every new event goes.

use std::collections::HashMap;

use events_schema::{EventId, StreamId};

use super::{AppendOutcome, AppendedEvent, EventStoreError, ExpectedVersion};

/// One append of a batch, as the planner needs it.
#[derive(Debug, Clone)]
pub struct AppendIntent<'a> {
    /// Target stream.
    pub stream_id: &'a StreamId,
    /// The caller's expectation.
    pub expected: ExpectedVersion,
    /// Ids of its events, in order.
    pub event_ids: Vec<EventId>,
}

/// An event id that is already in the store, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Stream it was stored in.
    pub stream_id: String,
    /// Its global position.
    pub position: i64,
    /// Its stream version.
    pub stream_version: i64,
}

/// A row to insert: which append and which of its events, and the positions it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRow {
    /// Index of the append in the batch.
    pub append: usize,
    /// Index of the event within that append.
    pub event: usize,
    /// Global position.
    pub position: i64,
    /// Stream version.
    pub stream_version: i64,
}

/// The outcome of planning a batch.
#[derive(Debug)]
pub struct BatchPlan {
    /// Rows to insert, in position order.
    pub rows: Vec<PlannedRow>,
    /// One answer per append, in batch order.
    pub outcomes: Vec<Result<AppendOutcome, EventStoreError>>,
    /// The head position after the batch.
    pub last_position: i64,
}

/// Plans a batch against the store's state: `head` is the last position handed out,
/// `stream_versions` the current version of each stream touched (absent = empty stream),
/// `stored` every event id of the batch that is already in the store.
pub fn plan_batch(
    head: i64,
    mut stream_versions: HashMap<String, i64>,
    mut stored: HashMap<EventId, StoredEvent>,
    appends: &[AppendIntent<'_>],
) -> BatchPlan {
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(appends.len());
    let mut position = head;
    for (append_index, append) in appends.iter().enumerate() {
        let stream = append.stream_id.as_str();
        let known: Vec<Option<&StoredEvent>> =
            append.event_ids.iter().map(|id| stored.get(id)).collect();
        if known.iter().any(Option::is_some) {
            outcomes.push(replayed_outcome(append, &known));
            continue;
        }
        let actual = stream_versions.get(stream).copied().unwrap_or(0);
        let accepted = match append.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(n) => actual == n,
        };
        if !accepted {
            outcomes.push(Err(EventStoreError::WrongExpectedVersion {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual,
            }));
            continue;
        }
        let mut events = Vec::with_capacity(append.event_ids.len());
        for (event_index, event_id) in append.event_ids.iter().enumerate() {
            position += 1;
            let stream_version = actual + 1 + event_index as i64;
            rows.push(PlannedRow {
                append: append_index,
                event: event_index,
                position,
                stream_version,
            });
            events.push(AppendedEvent {
                event_id: *event_id,
                position,
                stream_version,
            });
            stored.insert(
                *event_id,
                StoredEvent {
                    stream_id: stream.to_owned(),
                    position,
                    stream_version,
                },
            );
        }
        stream_versions.insert(stream.to_owned(), actual + append.event_ids.len() as i64);
        outcomes.push(Ok(AppendOutcome {
            events,
            duplicate: false,
        }));
    }
    BatchPlan {
        rows,
        outcomes,
        last_position: position,
    }
}

/// An append whose ids are (partly) stored already: a retry if all are stored in its stream.
fn replayed_outcome(
    append: &AppendIntent<'_>,
    known: &[Option<&StoredEvent>],
) -> Result<AppendOutcome, EventStoreError> {
    let mut events = Vec::with_capacity(known.len());
    for (event_id, stored) in append.event_ids.iter().zip(known) {
        match stored {
            Some(s) if s.stream_id == append.stream_id.as_str() => events.push(AppendedEvent {
                event_id: *event_id,
                position: s.position,
                stream_version: s.stream_version,
            }),
            _ => {
                let reused = append
                    .event_ids
                    .iter()
                    .zip(known)
                    .find(|(_, s)| s.is_some())
                    .map(|(id, _)| *id)
                    .unwrap_or(*event_id);
                return Err(EventStoreError::EventIdReused { event_id: reused });
            }
        }
    }
    Ok(AppendOutcome {
        events,
        duplicate: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::parse(name).unwrap()
    }

    fn ids(n: usize) -> Vec<EventId> {
        (0..n).map(|_| EventId::new()).collect()
    }

    #[test]
    fn appends_in_one_batch_get_consecutive_positions_and_stream_versions() {
        let (a, b) = (stream("system-a"), stream("system-b"));
        let appends = [
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Exact(3),
                event_ids: ids(2),
            },
            AppendIntent {
                stream_id: &b,
                expected: ExpectedVersion::NoStream,
                event_ids: ids(1),
            },
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Exact(5),
                event_ids: ids(1),
            },
        ];
        let versions = HashMap::from([("system-a".to_owned(), 3)]);
        let plan = plan_batch(10, versions, HashMap::new(), &appends);
        let positions: Vec<_> = plan
            .rows
            .iter()
            .map(|r| (r.position, r.stream_version))
            .collect();
        assert_eq!(positions, [(11, 4), (12, 5), (13, 1), (14, 6)]);
        assert_eq!(plan.last_position, 14);
        assert!(plan.outcomes.iter().all(Result::is_ok));
    }

    #[test]
    fn a_conflict_rejects_only_its_own_append() {
        let a = stream("system-a");
        let appends = [
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Exact(0),
                event_ids: ids(1),
            },
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Exact(0),
                event_ids: ids(1),
            },
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Any,
                event_ids: ids(1),
            },
        ];
        let plan = plan_batch(0, HashMap::new(), HashMap::new(), &appends);
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Err(EventStoreError::WrongExpectedVersion { actual: 1, .. })
        ));
        assert_eq!(plan.outcomes[2].as_ref().unwrap().stream_version(), 2);
        assert_eq!(plan.rows.len(), 2);
    }

    #[test]
    fn a_retry_of_stored_events_answers_the_original_positions_and_writes_nothing() {
        let a = stream("system-a");
        let event_ids = ids(2);
        let stored = event_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    *id,
                    StoredEvent {
                        stream_id: "system-a".into(),
                        position: 7 + i as i64,
                        stream_version: 1 + i as i64,
                    },
                )
            })
            .collect();
        let appends = [AppendIntent {
            stream_id: &a,
            expected: ExpectedVersion::NoStream,
            event_ids,
        }];
        let plan = plan_batch(9, HashMap::from([("system-a".into(), 2)]), stored, &appends);
        let outcome = plan.outcomes[0].as_ref().unwrap();
        assert!(outcome.duplicate);
        assert_eq!(outcome.events[1].position, 8);
        assert!(plan.rows.is_empty());
        assert_eq!(plan.last_position, 9);
    }

    #[test]
    fn the_same_new_id_twice_in_one_batch_is_written_once() {
        let a = stream("system-a");
        let event_ids = ids(1);
        let appends = [
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Any,
                event_ids: event_ids.clone(),
            },
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Any,
                event_ids,
            },
        ];
        let plan = plan_batch(0, HashMap::new(), HashMap::new(), &appends);
        assert_eq!(plan.rows.len(), 1);
        assert!(plan.outcomes[1].as_ref().unwrap().duplicate);
        assert_eq!(plan.outcomes[1].as_ref().unwrap().events[0].position, 1);
    }

    #[test]
    fn partly_stored_or_foreign_ids_are_reported_as_reused() {
        let (a, b) = (stream("system-a"), stream("system-b"));
        let event_ids = ids(2);
        let stored = HashMap::from([(
            event_ids[1],
            StoredEvent {
                stream_id: "system-a".into(),
                position: 1,
                stream_version: 1,
            },
        )]);
        let appends = [
            AppendIntent {
                stream_id: &a,
                expected: ExpectedVersion::Any,
                event_ids: event_ids.clone(),
            },
            AppendIntent {
                stream_id: &b,
                expected: ExpectedVersion::Any,
                event_ids: vec![event_ids[1]],
            },
        ];
        let plan = plan_batch(1, HashMap::new(), stored, &appends);
        for outcome in &plan.outcomes {
            assert!(
                matches!(outcome, Err(EventStoreError::EventIdReused { event_id }) if *event_id == event_ids[1])
            );
        }
        assert!(plan.rows.is_empty());
    }
}
