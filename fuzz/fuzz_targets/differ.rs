//! Fuzzes the inventory differ: the input is two JSON documents one after the other; applying
//! the diff of the first to the second must give the second, modulo ignored paths and identity
//! order. The changes are also sent through JSON, as stored in the event, and must give the
//! same document (the workspace reads floats back exactly: `serde_json/float_roundtrip`).
//!
//! Run from `fuzz/` (cargo-fuzz works on stable without a sanitizer); new inputs go to the first
//! folder, which is ignored by git, and `seeds/differ` holds the hand-written seeds:
//! `cargo fuzz run differ --sanitizer none corpus/differ seeds/differ -- -max_total_time=60`

#![no_main]

use std::sync::OnceLock;

use events_schema::InventoryChange;
use libfuzzer_sys::fuzz_target;
use projections::inventory::{apply, canonical, diff, DiffRules};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    static RULES: OnceLock<DiffRules> = OnceLock::new();
    let rules = RULES.get_or_init(DiffRules::default);
    let mut documents = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(old)), Some(Ok(new))) = (documents.next(), documents.next()) else {
        return;
    };
    assert!(
        diff(&old, &old, rules).is_empty(),
        "a document differs from itself"
    );
    let changes = diff(&old, &new, rules);
    let stored = serde_json::to_vec(&changes).expect("changes serialize");
    let decoded: Vec<InventoryChange> = serde_json::from_slice(&stored).expect("changes parse");
    let stored_applied =
        apply(&old, &decoded).expect("the stored diff applies to its own old document");
    let applied = apply(&old, &changes).expect("the diff applies to its own old document");
    assert_eq!(
        stored_applied, applied,
        "the stored diff gives another document"
    );
    assert_eq!(canonical(&applied, rules), canonical(&new, rules));
});
