//! The hash of each system's latest inventory report, remembered by the process that ingests it.
//!
//! Dedup compares a report with the system's latest one. Reading that hash from the log means
//! reading the latest report's payload, which for a full report is the whole (compressed, out of
//! line) document: decompressing tens of kilobytes to compare 64 characters, on every report. The
//! version of the latest report, on the other hand, comes from a small index. So the command side
//! remembers, per system, the hash together with the stream version of the report it belongs to,
//! and uses it only while the log says that version is still the latest report: several processes
//! ingesting for one system, or a restart, cost a read, never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;

use events_schema::StreamId;

/// Systems remembered at most; past it the memory starts over (each entry is about 150 bytes).
const MAX_SYSTEMS: usize = 1_000_000;

/// Per system stream: the stream version and content hash of its latest inventory report, as far
/// as this process knows.
#[derive(Debug, Default)]
pub struct LatestInventoryHashes {
    entries: Mutex<HashMap<String, (i64, String)>>,
}

impl LatestInventoryHashes {
    /// The hash of `stream`'s report at `version`, if that is the one remembered.
    pub fn get(&self, stream: &StreamId, version: i64) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(stream.as_str())
            .filter(|(remembered, _)| *remembered == version)
            .map(|(_, hash)| hash.clone())
    }

    /// Remembers that `stream`'s report at `version` has `hash` (a later version replaces an
    /// earlier one, never the other way round).
    pub fn remember(&self, stream: &StreamId, version: i64, hash: String) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_SYSTEMS && !entries.contains_key(stream.as_str()) {
            entries.clear();
        }
        let entry = entries
            .entry(stream.as_str().to_owned())
            .or_insert((version, String::new()));
        if entry.0 <= version {
            *entry = (version, hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_given_only_for_the_version_it_was_remembered_with() {
        let hashes = LatestInventoryHashes::default();
        let stream = StreamId::system(uuid::Uuid::now_v7());
        assert_eq!(hashes.get(&stream, 3), None);
        hashes.remember(&stream, 3, "a".into());
        assert_eq!(hashes.get(&stream, 3).as_deref(), Some("a"));
        assert_eq!(hashes.get(&stream, 4), None, "a newer report is not known");
        hashes.remember(&stream, 5, "b".into());
        hashes.remember(&stream, 4, "stale".into());
        assert_eq!(hashes.get(&stream, 5).as_deref(), Some("b"));
        assert_eq!(hashes.get(&stream, 4), None);
    }
}
