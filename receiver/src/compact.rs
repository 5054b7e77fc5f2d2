//! `stockhook-receiver compact`: sled never gives space back after a backlog drains, so this
//! copies the live records into a fresh database and swaps it in. Offline: it needs the database
//! lock, so the receiver must be stopped (the error says so if it is not).

use anyhow::Context as _;
use stockhook_shared::config::Config;
use stockhook_shared::queue::sled_store::{dir_size, SledStore};

pub fn run(config: &Config) -> anyhow::Result<()> {
    if config.backend() != stockhook_shared::config::Backend::Sled {
        anyhow::bail!(
            "compact rewrites the embedded sled queue; with backend = {:?} the queue lives in NATS JetStream, which manages its own storage",
            config.queue.backend
        );
    }
    let path = config.data_dir.join("queue");
    if !path.exists() {
        anyhow::bail!(
            "no queue database at {}: nothing to compact (is data_dir right?)",
            path.display()
        );
    }
    let before = dir_size(&path);
    let fresh = config.data_dir.join("queue.compact");
    let old = config.data_dir.join("queue.old");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)
            .with_context(|| format!("removing leftover {}", fresh.display()))?;
    }
    {
        let store = SledStore::open(&path, crate::app::store_options(config))?;
        let n = store.export_to(&fresh)?;
        println!("copied {n} records into {}", fresh.display());
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    std::fs::rename(&path, &old).with_context(|| format!("moving {} aside", path.display()))?;
    std::fs::rename(&fresh, &path)
        .with_context(|| format!("moving the compacted copy to {}", path.display()))?;
    stockhook_shared::durable::sync_dir(&config.data_dir)?;
    std::fs::remove_dir_all(&old)
        .with_context(|| format!("removing the old database {}", old.display()))?;
    let after = dir_size(&path);
    println!("compacted {}: {before} -> {after} bytes", path.display());
    Ok(())
}
