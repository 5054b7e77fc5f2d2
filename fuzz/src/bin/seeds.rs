//! Writes each target's seed corpus to `corpus/<target>/seed-<n>` (beside this crate's
//! Cargo.toml), from the shared fixtures. Run once before fuzzing:
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seeds` (stable works).

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in stockhook_fuzz::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let seeds = stockhook_fuzz::seeds(target);
        for (n, s) in seeds.iter().enumerate() {
            let p = dir.join(format!("seed-{n}"));
            std::fs::write(&p, s).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
}
