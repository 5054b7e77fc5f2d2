//! What both stockhook processes share: the configuration, the event envelope, the durable queue
//! (its trait, its sled implementation, and the Unix-socket API the receiver serves and the worker
//! and ops CLI call), and telemetry setup.

pub mod channels;
pub mod cli;
pub mod config;
pub mod durable;
pub mod duration;
pub mod envelope;
pub mod lifecycle;
pub mod loader;
pub mod log_line;
pub mod memory;
pub mod metrics;
pub mod metrics_http;
pub mod process_metrics;
pub mod queue;
pub mod redact;
pub mod rpc;
pub mod sdnotify;
pub mod secret;
pub mod standard_webhooks;
pub mod telemetry;
pub mod tls;
