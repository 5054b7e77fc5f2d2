//! Every key's built-in default, one function each, named by serde's `default = "..."`.

use super::*;
pub fn session_ttl() -> ConfigDuration {
    ConfigDuration::secs(12 * 3600)
}
pub fn data_dir() -> PathBuf {
    PathBuf::from("./data")
}
pub fn log_level() -> String {
    "info".into()
}
pub fn listen() -> String {
    "127.0.0.1:8080".into()
}
pub fn max_body_bytes() -> usize {
    2 * 1024 * 1024
}
pub fn max_queue_bytes() -> u64 {
    4 * 1024 * 1024 * 1024
}
pub fn min_free_bytes() -> u64 {
    64 * 1024 * 1024
}
pub fn dedup_window() -> ConfigDuration {
    ConfigDuration::secs(48 * 3600)
}
pub fn header_timeout() -> ConfigDuration {
    ConfigDuration::secs(10)
}
pub fn body_timeout() -> ConfigDuration {
    ConfigDuration::secs(30)
}
pub fn max_connections() -> usize {
    1024
}
pub fn shutdown_grace() -> ConfigDuration {
    ConfigDuration::secs(10)
}
pub fn backend() -> String {
    "sled".into()
}
pub fn lease_timeout() -> ConfigDuration {
    ConfigDuration::secs(60)
}
pub fn max_attempts() -> u32 {
    10
}
pub fn retention() -> ConfigDuration {
    ConfigDuration::secs(7 * 86_400)
}
pub fn nats_replicas() -> usize {
    1
}
pub fn sled_segments() -> bool {
    true
}
pub fn batch_size() -> usize {
    256
}
pub fn low_stock_threshold() -> i64 {
    5
}
pub fn no_sales_days() -> u32 {
    60
}
pub fn cover_days() -> u32 {
    14
}
pub fn safety_days() -> u32 {
    7
}
pub fn no_sales_check() -> ConfigDuration {
    ConfigDuration::secs(86_400)
}
pub fn from() -> String {
    "stockhook@localhost".into()
}
pub fn max_backoff() -> ConfigDuration {
    ConfigDuration::secs(3600)
}
pub fn give_up_after() -> ConfigDuration {
    ConfigDuration::secs(3 * 86_400)
}
pub fn tolerance_secs() -> u64 {
    300
}
pub fn future_tolerance() -> ConfigDuration {
    ConfigDuration::secs(300)
}
pub fn max_quantity() -> i64 {
    1_000_000_000
}
pub fn min_quantity() -> i64 {
    -1_000_000_000
}
pub fn sync_interval() -> ConfigDuration {
    ConfigDuration::secs(6 * 3600)
}
pub fn shopify_api_version() -> String {
    super::SHOPIFY_API_VERSION.into()
}
/// Catalog sync (Shopify, Amazon, eBay): days of orders read for sales history.
pub fn sales_history_days() -> u32 {
    90
}
