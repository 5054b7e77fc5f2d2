//! Where tests find their data, and what happens when it is not there.
//!
//! * [`data`]: the suite's own payloads, in the repository (`tests/data/`): always there, a
//!   missing file fails the test.
//! * [`shared`]: the published vectors (Shopify, Standard Webhooks, GitHub, WooCommerce, eBay,
//!   Amazon samples) in `../shared/fixtures/` beside the repository, where no copy with its
//!   source recorded is in the repository (`worker/tests/data/` holds those): a cross-check
//!   against them runs when the directory exists and otherwise skips with one loud line, unless `SHARED_FIXTURES_REQUIRED=1` (CI),
//!   where a missing directory fails the test.

use std::path::{Path, PathBuf};

/// The variable that makes the cross-checks against `../shared/fixtures` mandatory.
pub const REQUIRED_VAR: &str = "SHARED_FIXTURES_REQUIRED";

/// The repository's root (this crate is `tests/kit/`).
pub fn repo_root() -> PathBuf {
    let raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&raw).unwrap_or(raw)
}

/// The suite's own data, `<repo>/tests/data/`.
pub fn data() -> Fixtures {
    Fixtures {
        root: repo_root().join("tests/data"),
    }
}

/// `<repo>/../shared/fixtures`, whether or not it exists.
pub fn shared_dir() -> PathBuf {
    let root = repo_root();
    root.parent().unwrap_or(&root).join("shared/fixtures")
}

/// The published vectors, or `None` after a loud SKIPPED line naming `test` (a failure when
/// `SHARED_FIXTURES_REQUIRED=1`).
pub fn shared(test: &str) -> Option<Fixtures> {
    let root = shared_dir();
    if root.is_dir() {
        return Some(Fixtures { root });
    }
    crate::skip::skip(
        test,
        &format!(
            "the cross-check against the published vectors needs {} (not in a bare clone)",
            root.display()
        ),
        "put a copy of stockhook's shared/ beside the repository to run it",
        REQUIRED_VAR,
    );
    None
}

/// A vector's `headers` object (`{"Name": "value", ...}`) as `(name, value)` pairs, in order.
pub fn vector_headers(v: &serde_json::Value) -> Vec<(String, String)> {
    v["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("vector {} has no `headers` object", v["id"]))
        .iter()
        .map(|(k, h)| {
            let h = h
                .as_str()
                .unwrap_or_else(|| panic!("header {k} is not a string"));
            (k.clone(), h.to_string())
        })
        .collect()
}

/// A directory of test files, read with panics that name the path.
#[derive(Clone, Debug)]
pub struct Fixtures {
    root: PathBuf,
}

impl Fixtures {
    /// The files under `root` (no existence check: a missing file fails where it is read).
    pub fn new(root: PathBuf) -> Fixtures {
        Fixtures { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The bytes of `<root>/<rel>`.
    pub fn bytes(&self, rel: &str) -> Vec<u8> {
        let path = self.path(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
    }

    /// `<root>/<rel>` as UTF-8 text.
    pub fn text(&self, rel: &str) -> String {
        String::from_utf8(self.bytes(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    }

    /// `<root>/<rel>` parsed as JSON.
    pub fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&self.bytes(rel))
            .unwrap_or_else(|e| panic!("fixture {rel} is not JSON: {e}"))
    }

    /// The `vectors` array of the fixture `rel` (`{"vectors": [...]}`).
    pub fn vectors(&self, rel: &str) -> Vec<serde_json::Value> {
        self.json(rel)["vectors"]
            .as_array()
            .unwrap_or_else(|| panic!("fixture {rel} has no `vectors` array"))
            .clone()
    }

    /// The vector whose `id` is `id` in the fixture `rel`.
    pub fn vector(&self, rel: &str, id: &str) -> serde_json::Value {
        self.vectors(rel)
            .into_iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("fixture {rel} has no vector {id:?}"))
    }

    /// The files of `<root>/<rel_dir>` ending in `.<ext>`, sorted by name, as `(path, bytes)`.
    pub fn files(&self, rel_dir: &str, ext: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = self.path(rel_dir);
        let listing =
            |e: std::io::Error| -> ! { panic!("listing fixtures {}: {e}", dir.display()) };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| listing(e))
            .map(|e| e.unwrap_or_else(|e| listing(e)).path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let body =
                    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
                (p, body)
            })
            .collect()
    }

    /// The `.json` files of `<root>/<rel_dir>`, sorted, as `(file stem, bytes)`.
    pub fn payloads(&self, rel_dir: &str) -> Vec<(String, Vec<u8>)> {
        self.files(rel_dir, "json")
            .into_iter()
            .map(|(p, body)| {
                let stem = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("fixture names are UTF-8")
                    .to_string();
                (stem, body)
            })
            .collect()
    }
}
