//! `fleetlog schemas`: the JSON Schema of every catalogue event, as committed in `docs/events/`.

use std::path::Path;

use anyhow::Context;

/// File name of one event's schema: `{EventType}.v{version}.json`.
pub fn file_name(event_type: &str, schema_version: u32) -> String {
    format!("{event_type}.v{schema_version}.json")
}

/// Every schema file as `(file name, contents)`, in catalogue order.
pub fn rendered() -> Vec<(String, String)> {
    events_schema::json_schemas()
        .into_iter()
        .map(|s| {
            let text = serde_json::to_string_pretty(&s.schema).expect("schemas serialize") + "\n";
            (file_name(s.event_type, s.schema_version), text)
        })
        .collect()
}

/// Writes every schema into `dir`, removing schema files no longer in the catalogue.
pub fn export(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = rendered();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".json") && !files.iter().any(|(f, _)| *f == name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(files.len())
}

/// The differences between `dir` and the catalogue: stale, missing or extra files.
pub fn stale_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let files = rendered();
    let mut stale = Vec::new();
    for (name, text) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(existing) if existing == *text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(_) => stale.push(format!("{name} is missing")),
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !files.iter().any(|(f, _)| *f == name) {
            stale.push(format!("{name} is not in the catalogue"));
        }
    }
    Ok(stale)
}

/// The OpenAPI document as committed in `docs/openapi.json` (pretty JSON, trailing newline).
pub fn rendered_openapi() -> String {
    serde_json::to_string_pretty(&crate::http::openapi()).expect("OpenAPI serializes") + "\n"
}

/// Writes the OpenAPI document to `path`.
pub fn export_openapi(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, rendered_openapi())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Whether `path` holds exactly the OpenAPI document the code describes.
pub fn openapi_is_current(path: &Path) -> anyhow::Result<bool> {
    let committed =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(committed == rendered_openapi())
}
