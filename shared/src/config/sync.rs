//! What catalog sync reads from the config: `[sync]`, and each source's platform API table
//! (`[sources.shopify_sync]`, `[sources.amazon_sync]`, `[sources.ebay_sync]`) with the one
//! `match` that says which applies ([`SourceConfig::api`]).

use super::{defaults, Platform, SourceConfig};
use crate::duration::ConfigDuration;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[sources.amazon_sync]`: how `sync` reaches Amazon's Selling Partner API for this source.
/// Secrets by value, `*_env` or `*_file` (one value, the file's first non-empty line); the
/// loader resolves them into the value fields and never prints them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonSyncConfig {
    /// The LWA client identifier of the app (`amzn1.application-oa2-client.…`).
    pub lwa_client_id: String,
    #[serde(default)]
    pub lwa_client_secret: Option<Secret>,
    #[serde(default)]
    pub lwa_client_secret_env: Option<String>,
    #[serde(default)]
    pub lwa_client_secret_file: Option<PathBuf>,
    /// The seller's LWA refresh token (`Atzr|…`), from the app's authorization.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    /// The marketplaces to read, all in one SP-API region (one source per region).
    pub marketplace_ids: Vec<String>,
    /// The seller (merchant token) whose listings are read for merchant-fulfilled quantities;
    /// without it, only FBA stock and orders are read.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// The LWA token endpoint (default `https://api.amazon.com/auth/o2/token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// The SP-API endpoint (default: the region of `marketplace_ids`, e.g.
    /// `https://sellingpartnerapi-eu.amazon.com`).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Orders of this many days are read for last-sale dates and sales velocity.
    #[serde(default = "defaults::sales_history_days")]
    pub sales_history_days: u32,
    /// Set by the loader: why a secret could not be read (the sync reports it; the webhook
    /// source is not affected).
    #[serde(skip)]
    pub problem: Option<String>,
}

/// `[sources.ebay_sync]`: how `sync` reaches eBay's Sell APIs and Trading API for this source,
/// with an OAuth user token refreshed from the seller's refresh token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbaySyncConfig {
    /// The app's App ID (default: the source's `client_id`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The app's Cert ID (default: the source's `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The seller's OAuth refresh token (`v^1.1#…`), from the user consent flow.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    /// eBay's API host (default `https://api.ebay.com`; `https://api.sandbox.ebay.com` for a
    /// sandbox keyset). The token endpoint and the Trading API are found under it.
    #[serde(default)]
    pub api_base: Option<String>,
    /// The OAuth token endpoint (default `<api_base>/identity/v1/oauth2/token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// The Trading API site the listings are read through (default 0, eBay US).
    #[serde(default)]
    pub site_id: u32,
    /// Orders of this many days are read for last-sale dates and sales velocity.
    #[serde(default = "defaults::sales_history_days")]
    pub sales_history_days: u32,
    /// Set by the loader: why a secret could not be read.
    #[serde(skip)]
    pub problem: Option<String>,
}

/// `[sync]`: when `stockhook-worker run` pulls each source's catalog from its platform's API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Time between two syncs of a source (`"0s"`: never on a schedule; a source that never
    /// synced is still synced at start, and `stockhook-worker sync` runs one on demand).
    #[serde(default = "defaults::sync_interval")]
    pub interval: ConfigDuration,
}

/// The Shopify API version stockhook's queries are written against (a stable version; the
/// webhook mutation's shape follows it: `callbackUrl` before 2026-07, `uri` from 2026-07).
pub const SHOPIFY_API_VERSION: &str = "2026-10";

/// `[sources.shopify_sync]`: a Shopify source's GraphQL Admin API access, for catalog sync and
/// `connect`. Each platform with an API gets its own table of this kind on the source
/// (`[sources.amazon]`, `[sources.ebay]`), and [`SourceConfig::api`] names the one that applies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyApiConfig {
    /// The shop's permanent domain, `acme.myshopify.com`.
    pub shop_domain: String,
    /// The Admin API access token (`shpat_...`), by value ...
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// ... or the environment variable holding it ...
    #[serde(default)]
    pub access_token_env: Option<String>,
    /// ... or a file holding it (`${CREDENTIALS_DIRECTORY}` is expanded).
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// The Admin API version requested (`YYYY-MM`, a stable version).
    #[serde(default = "defaults::shopify_api_version")]
    pub api_version: String,
    /// Instead of `https://<shop_domain>`: where the API is (a local fake server in tests).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Orders of this many days back are read for last-sale dates and sales velocity.
    #[serde(default = "defaults::sales_history_days")]
    pub sales_history_days: u32,
}

impl ShopifyApiConfig {
    /// The GraphQL endpoint: `<base>/admin/api/<version>/graphql.json`.
    pub fn graphql_url(&self) -> String {
        let base = match &self.api_base {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("https://{}", self.shop_domain.trim_end_matches('/')),
        };
        format!("{base}/admin/api/{}/graphql.json", self.api_version)
    }
}

/// Which platform API a source's catalog comes from: the one `match` on it is the sync runner's.
#[derive(Debug, Clone, Copy)]
pub enum SourceApi<'a> {
    Shopify(&'a ShopifyApiConfig),
    Amazon(&'a AmazonSyncConfig),
    Ebay(&'a EbaySyncConfig),
}

impl SourceConfig {
    /// The source's API access, if it has any configured.
    pub fn api(&self) -> Option<SourceApi<'_>> {
        match self.platform {
            Platform::Shopify => self.shopify_sync.as_ref().map(SourceApi::Shopify),
            Platform::Amazon => self.amazon_sync.as_ref().map(SourceApi::Amazon),
            Platform::Ebay => self.ebay_sync.as_ref().map(SourceApi::Ebay),
            Platform::Simple | Platform::Woocommerce => None,
        }
    }
}
