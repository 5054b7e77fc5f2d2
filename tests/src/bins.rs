//! Finding the `stockhook-receiver` and `stockhook-worker` binaries, and building them when they
//! are missing or older than their sources, at most once per binary per test run.
//!
//! Why: Cargo sets `CARGO_BIN_EXE_<name>` only for tests inside the binary's own package, and
//! this crate is a separate one. The binaries live beside this test executable's `deps/`
//! directory: `<target>/<profile>/deps/receiver-<hash>` -> `<target>/<profile>/stockhook-receiver`
//! (so `CARGO_TARGET_DIR`, `--release`, custom profiles and `--target <triple>` all work).
//!
//! Each binary is built on its own (`cargo build -p <package> --bin <name>`, with the `CARGO`
//! cargo that runs the tests), so a worker that does not compile yet never fails receiver tests.
//! The freshness check compares the binary's mtime with the newest file under the package's and
//! `shared/`'s `src/`, their `Cargo.toml`s and the workspace's `Cargo.toml` and `Cargo.lock`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root: this crate's manifest directory is `<repo>/tests`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory: the workspace root")
        .to_path_buf()
}

/// `<target>/<profile>`: the directory that holds this test executable's `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("std::env::current_exe: cannot find the test binary");
    let deps = exe
        .parent()
        .expect("the test binary lives in a directory (<target>/<profile>/deps)");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
            .expect("deps/ has a parent: <target>/<profile>")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The `stockhook-receiver` binary, built first if needed.
pub fn receiver() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensure_built("stockhook-receiver", "receiver"))
}

/// The `stockhook-worker` binary, built first if needed.
pub fn worker() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensure_built("stockhook-worker", "worker"))
}

fn ensure_built(name: &str, package_dir: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let bin = profile_dir.join(name);
    let root = repo_root();
    let sources = [
        root.join(package_dir).join("src"),
        root.join(package_dir).join("Cargo.toml"),
        root.join("shared").join("src"),
        root.join("shared").join("Cargo.toml"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    let newest_source = sources.iter().filter_map(|p| newest_mtime(p)).max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let stale = match (built, newest_source) {
        (None, _) => true,
        (Some(b), Some(s)) => b < s,
        (Some(_), None) => false,
    };
    if stale {
        build(name, &profile_dir, &root);
    }
    assert!(
        bin.is_file(),
        "{} does not exist after building it: is the [[bin]] still named {name}?",
        bin.display()
    );
    bin
}

/// Runs `cargo build -p <name> --bin <name>` into the target directory this test runs from.
fn build(name: &str, profile_dir: &Path, root: &Path) {
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"));
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the profile directory has a UTF-8 name")
        .to_string();
    let above = profile_dir
        .parent()
        .expect("<target>/<profile> has a parent");
    // `<target>/<triple>/<profile>` when cross-compiling: the target root has CACHEDIR.TAG.
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above.to_path_buf(), None)
    } else {
        let triple = above
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        (
            above
                .parent()
                .expect("<target>/<triple> has a parent")
                .to_path_buf(),
            triple,
        )
    };
    let mut cmd = Command::new(&cargo);
    // Cargo gives a test process the variables it sets for the crate under test
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as ring's rerun when those
    // change, so a child cargo that inherited them would rebuild such dependencies here, and
    // again in every plain `cargo build` after it, for everyone sharing the target directory.
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(is_crate_var) {
            cmd.env_remove(&k);
        }
    }
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["-p", name, "--bin", name])
        .env("CARGO_TARGET_DIR", &target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = triple {
        cmd.args(["--target", &t]);
    }
    eprintln!("stockhook-tests: building {name}: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {} to build {name}: {e}", cargo.display()));
    assert!(
        status.success(),
        "building {name} failed ({status}): {cmd:?}"
    );
}

/// The variables Cargo sets for a crate's compilation and its tests, which a plain `cargo build`
/// from a shell does not have.
fn is_crate_var(k: &str) -> bool {
    k.starts_with("CARGO_PKG_")
        || k.starts_with("CARGO_BIN_EXE_")
        || k.starts_with("CARGO_CFG_")
        || matches!(
            k,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// The newest modification time of a file, or of any file below a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}
