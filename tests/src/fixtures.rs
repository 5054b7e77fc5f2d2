//! The shared fixtures: `<repo>/../shared/fixtures/`, beside the repository (in CI too, where a
//! copy of `shared/` sits beside the clone).

use std::path::{Path, PathBuf};

/// `<repo>/../shared/fixtures`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// The bytes of `shared/fixtures/<rel>`; panics (failing the test) naming the path.
pub fn bytes(rel: &str) -> Vec<u8> {
    let path = dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

/// `shared/fixtures/<rel>` parsed as JSON.
pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&bytes(rel)).unwrap_or_else(|e| panic!("fixture {rel} is not JSON: {e}"))
}

/// The vector whose `id` is `id` in the fixture `rel` (`{"vectors": [{"id": ...}, ...]}`).
pub fn vector(rel: &str, id: &str) -> serde_json::Value {
    json(rel)["vectors"]
        .as_array()
        .unwrap_or_else(|| panic!("fixture {rel} has no `vectors` array"))
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("fixture {rel} has no vector {id:?}"))
        .clone()
}

/// The files of `shared/fixtures/<rel_dir>` ending in `.json`, sorted by name, as
/// `(file stem, bytes)`.
pub fn payloads(rel_dir: &str) -> Vec<(String, Vec<u8>)> {
    let path = dir().join(rel_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("listing fixtures {}: {e}", path.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("listing fixtures {}: {e}", path.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("fixture names are UTF-8")
                .to_string();
            let body = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (stem, body)
        })
        .collect()
}
