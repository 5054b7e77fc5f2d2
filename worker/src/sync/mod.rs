//! Catalog sync: pulling each source's catalog, levels and recent orders from the platform's
//! API into a [`crate::catalog::CatalogBatch`], which [`crate::catalog::apply`] brings into
//! state through the rules.
//!
//! One module per platform client (each turns the platform's pages into one batch), and
//! [`http`], the one transport and the one reading of an API's answer that they all share.

pub mod connect;
pub mod http;
pub mod lookup;

pub use http::{ApiClient, ApiResponse, SyncError};
pub mod runner;
pub mod shopify;
