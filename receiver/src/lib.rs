//! stockhook-receiver: verifies each webhook's signature over the raw bytes, appends it durably to
//! the queue, and answers. The binary (`main.rs`) is a thin CLI over these modules.

pub mod access_log;
pub mod app;
pub mod app_nats;
pub mod compact;
pub mod ebay_keys;
pub mod log_batch;
pub mod metrics;
pub mod ratelimit;
pub mod refusal;
pub mod reload;
pub mod routes;
pub mod schemes;
pub mod server;
pub mod sign;
