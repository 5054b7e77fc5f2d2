//! Logging setup shared by both binaries, and the few process-wide measurements the queue takes.
//!
//! Logs go to stderr: human-readable on a terminal, JSON lines otherwise (systemd's journal) or
//! when `log_format = "json"`. The level comes from `RUST_LOG` if set, else `log_level`. Nothing
//! in stockhook logs a payload body or customer data: ids, sources, topics, sizes and errors only.

use crate::config::LogFormat;
use crate::metrics::Histogram;
use std::io::IsTerminal;
use std::sync::LazyLock;
use tracing_subscriber::EnvFilter;

/// Events per group commit (one flush + fdatasync each).
pub static COMMIT_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new(&[
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ])
});

pub fn record_group_commit(events: usize) {
    COMMIT_BATCH.observe(events as f64);
}

/// Installs the global subscriber. Call once, first thing after the config is loaded.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests starting two servers in one process) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
