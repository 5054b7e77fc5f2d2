//! Catalog sync: pulling each source's catalog, levels and recent orders from the platform's
//! API into a [`crate::catalog::CatalogBatch`], which [`crate::catalog::apply`] brings into
//! state through the rules.
//!
//! One module per platform client (each turns the platform's pages into one batch), and
//! [`http`], the one transport and the one reading of an API's answer that they all share.

pub mod connect;
pub mod http;
pub mod lookup;
pub mod observed;
mod settings;

pub use http::{ApiClient, ApiResponse, SyncError};

// Amazon SP-API and eBay clients (issue 14), and the OAuth token refresh they share.
pub mod amazon;
pub mod ebay;
pub mod token;

/// The `User-Agent` of every sync request (SP-API asks for one naming the application).
pub const USER_AGENT: &str = concat!("stockhook/", env!("CARGO_PKG_VERSION"), " (Language=Rust)");

/// Unix ms as ISO 8601 UTC with milliseconds (`2026-12-01T02:03:04.005Z`), as the Amazon and
/// eBay APIs take times.
pub fn iso_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The batch of a sync run that read a source's whole catalog, logged with its counts (never
/// its contents). `levels_are_all_stock`: the platform's API gave every location of each item
/// ([`crate::catalog::CatalogBatch::levels_are_all_stock`]).
pub(crate) fn whole_catalog(
    source: &str,
    platform: &str,
    taken_at: i64,
    items: Vec<crate::catalog::CatalogItem>,
    sales: Vec<crate::catalog::SaleLine>,
    levels_are_all_stock: bool,
    token_refreshes: u32,
) -> crate::catalog::CatalogBatch {
    tracing::info!(
        source,
        platform,
        items = items.len(),
        sales = sales.len(),
        token_refreshes,
        "catalog read from the platform API"
    );
    crate::catalog::CatalogBatch {
        source: source.into(),
        platform: platform.into(),
        taken_at,
        items,
        locations: Vec::new(),
        sales,
        complete: true,
        levels_are_all_stock,
    }
}
pub mod runner;
pub mod shopify;
