//! The committed JSON Schemas in `docs/events/` must match the catalogue in code.

use std::path::Path;

#[test]
fn committed_event_schemas_match_the_catalogue() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events");
    let stale = fleetlog::schemas::stale_files(&dir).unwrap();
    assert!(
        stale.is_empty(),
        "docs/events is stale: {stale:?}; run `cargo run -- schemas export`"
    );
}

#[test]
fn every_catalogue_event_has_a_schema_file_named_by_type_and_version() {
    let names: Vec<String> = fleetlog::schemas::rendered()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names.len(), events_schema::EVENT_TYPES.len());
    assert!(names.contains(&"SystemRegistered.v2.json".to_owned()));
}

#[test]
fn committed_openapi_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    assert!(
        fleetlog::schemas::openapi_is_current(&path).unwrap(),
        "docs/openapi.json is stale; run `cargo run -- openapi export`"
    );
}

#[test]
fn the_api_docs_name_every_catalogue_event_type() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let missing: Vec<&str> = events_schema::EVENT_TYPES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !docs.contains(&format!("{name},")) && !docs.contains(&format!("{name}.")))
        .collect();
    assert!(missing.is_empty(), "docs/api.md does not list {missing:?}");
}
