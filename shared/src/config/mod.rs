//! The one configuration file both processes read, and the rules for finding and overriding it.
//!
//! Where it comes from: `--config PATH`, else `$STOCKHOOK_CONFIG`, else `./stockhook.toml`, else
//! `/etc/stockhook/stockhook.toml`; with no file at all, built-in defaults (three sources whose
//! secrets come from the environment). Then the original Flask notes' variables (`LOW_STOCK_THRESHOLD`, `EMAIL_SENDER`, ...) and finally
//! `STOCKHOOK_<SECTION>_<KEY>` variables override single keys.
//!
//! Invariant: a `Config` that [`load`] returns is valid: every source has a scheme it can verify
//! with and the secrets that scheme needs, or is marked disabled with the reason. A bad file is a
//! [`ConfigError`] that names the key, the file and line, and what would be valid.

use crate::duration::ConfigDuration;
mod sync;
pub use crate::loader::{
    load, load_for_ops, load_for_worker, load_from, load_with, ConfigError, EnvSource, Loaded, Role,
};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
pub use sync::{
    AmazonSyncConfig, EbaySyncConfig, ShopifyApiConfig, SourceApi, SyncConfig, SHOPIFY_API_VERSION,
};

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the queue (`queue/`), the worker's state (`state/`), the socket and the mail files live.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full `RUST_LOG` filter. `RUST_LOG` wins.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// `auto` (text on a terminal, JSON lines otherwise), `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub receiver: ReceiverConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// What the worker accepts as plausible in an event (times, quantities).
    #[serde(default)]
    pub events: EventsConfig,
    /// Alert channels beyond email: Slack incoming webhooks and signed webhooks.
    #[serde(default)]
    pub channels: Vec<crate::channels::ChannelConfig>,
    /// Catalog sync from the platforms' APIs: how often.
    #[serde(default)]
    pub sync: SyncConfig,
    /// The worker's web dashboard and read API (issue 16): off unless `listen` is set.
    #[serde(default)]
    pub dashboard: DashboardConfig,
}

/// `[dashboard]`: where the worker serves its pages and `/api/v1/`, who may log in, the brand.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address to serve on (`127.0.0.1:8081`); empty: no dashboard.
    #[serde(default)]
    pub listen: String,
    /// PEM certificate chain; with `tls_key`, the dashboard serves HTTPS (as the receiver does).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long a browser session lasts after logging in.
    #[serde(default = "defaults::session_ttl")]
    pub session_ttl: ConfigDuration,
    /// The default look (a scoped user's own `brand` wins).
    #[serde(default)]
    pub brand: Option<BrandConfig>,
    #[serde(default)]
    pub users: Vec<DashboardUser>,
}

/// One `[[dashboard.users]]`: a bearer token (or login token) with a role and optional sources.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardUser {
    pub name: String,
    pub role: DashboardRole,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Only these sources (an agency's client); unset: every source.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// What this user's pages carry instead of stockhook's name.
    #[serde(default)]
    pub brand: Option<BrandConfig>,
}

/// `admin` may replay, purge and resend; `viewer` only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DashboardRole {
    Admin,
    Viewer,
}

/// A white-label look: a name, an accent colour (`#rrggbb`), a logo file (PNG or SVG).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrandConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub accent: Option<String>,
    #[serde(default)]
    pub logo: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Address to listen on. Port 0 picks a free port (printed in the `ready` line).
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Largest body accepted; larger ones get 413 before they are read in full.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Disk budget for the queue database; over it, new events get 503 + Retry-After.
    #[serde(default = "defaults::max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// Refuse new events (503) when the filesystem under data_dir has less free space than this.
    #[serde(default = "defaults::min_free_bytes")]
    pub min_free_bytes: u64,
    /// How long a delivery id is remembered to answer repeats with `duplicate` (Shopify retries for 4 h).
    #[serde(default = "defaults::dedup_window")]
    pub dedup_window: ConfigDuration,
    /// A request's headers must arrive within this (slowloris guard); else 408.
    #[serde(default = "defaults::header_timeout")]
    pub header_timeout: ConfigDuration,
    /// A request's body must arrive within this; else 408.
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: ConfigDuration,
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing them.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: ConfigDuration,
    /// PEM certificate chain; with `tls_key`, the receiver serves HTTPS itself.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// A second address serving only `/metrics`, `/healthz` and `/readyz` (e.g.
    /// `127.0.0.1:9464`), so a public listener need not expose them. Unset: they stay on `listen`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// `sled` (embedded, the default) or `nats` (NATS JetStream: several receivers and workers).
    #[serde(default = "defaults::backend")]
    pub backend: String,
    /// How long a leased batch may stay unacked before it is delivered again.
    #[serde(default = "defaults::lease_timeout")]
    pub lease_timeout: ConfigDuration,
    /// Transient failures after which an event is dead-lettered.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// How long acked events are kept for re-runs before they are purged.
    #[serde(default = "defaults::retention")]
    pub retention: ConfigDuration,
    /// `backend = "nats"`: the server URL, or a list of a cluster's URLs
    /// (`nats://127.0.0.1:4222`, `tls://nats.example.com:4222`).
    #[serde(default)]
    pub nats_url: Option<OneOrMany>,
    /// `backend = "nats"`: a `.creds` file (user JWT and NKey seed) to authenticate with.
    #[serde(default)]
    pub nats_credentials: Option<PathBuf>,
    /// `backend = "nats"`: a file holding an NKey user seed (`SU...`) for servers that list the
    /// user's public key (`authorization { users = [ { nkey: "U..." } ] }`). Not with
    /// `nats_credentials`.
    #[serde(default)]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// `backend = "nats"`: a PEM CA bundle that signs the servers' certificates; setting it
    /// requires TLS.
    #[serde(default)]
    pub nats_tls_ca: Option<PathBuf>,
    /// `backend = "nats"`: a client certificate and key (PEM) for servers that verify clients.
    #[serde(default)]
    pub nats_tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub nats_tls_key: Option<PathBuf>,
    /// `backend = "nats"`: JetStream replicas of stockhook's streams and buckets: 1 on one
    /// server, 3 on a cluster (survives the loss of one node).
    #[serde(default = "defaults::nats_replicas")]
    pub nats_replicas: usize,
    /// `backend = "sled"`: event bodies in an append-only segment log beside sled (queue format
    /// 3) rather than in sled (format 1). Only for a new queue: one with `segments/` keeps them.
    #[serde(default = "defaults::sled_segments")]
    pub sled_segments: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Events leased per batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Where the worker serves its Prometheus `/metrics` (e.g. `127.0.0.1:9465`). Unset: none.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Low stock fires when `available < low_stock_threshold`.
    #[serde(default = "defaults::low_stock_threshold")]
    pub low_stock_threshold: i64,
    /// An item with stock and no sale for this many days gets a no-sales alert.
    #[serde(default = "defaults::no_sales_days")]
    pub no_sales_days: u32,
    /// How often the no-sales rule is evaluated.
    #[serde(default = "defaults::no_sales_check")]
    pub no_sales_check: ConfigDuration,
    /// Who gets alert emails unless a source names its own.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Hold alerts this long to send them as one digest (0 = as soon as they are due).
    #[serde(default)]
    pub digest_window: ConfigDuration,
    /// Per-SKU thresholds, overriding the global and per-source ones.
    #[serde(default)]
    pub sku_thresholds: BTreeMap<String, i64>,
    /// Also alert on the sum of `available` across sources that share a SKU.
    #[serde(default)]
    pub combine_channels: bool,
    /// Days of cover (issue 15): the supplier's lead time in days. The `cover` rule fires when
    /// stock falls below the demand expected over it (plus safety stock); 0 turns it off.
    #[serde(default = "defaults::cover_days")]
    pub cover_days: u32,
    /// Days of stock beyond the lead time in the suggested reorder quantity.
    #[serde(default = "defaults::safety_days")]
    pub safety_days: u32,
    /// Per-SKU lead times, overriding the global and per-source ones.
    #[serde(default)]
    pub sku_cover_days: BTreeMap<String, u32>,
    /// Where alerts go unless a source or a rule route says otherwise: `"email"` and/or
    /// `[[channels]]` names. Unset: email only.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Per rule (`low_stock`, `out_of_stock`, `no_sales`, `combined_low_stock`): its channels.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    #[serde(default = "defaults::from")]
    pub from: String,
    /// `smtp://host:25`, `smtp://host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`.
    /// Unset: emails are written as `.eml` files under `<data_dir>/mail/`.
    #[serde(default)]
    pub smtp_url: Option<Secret>,
    #[serde(default)]
    pub smtp_url_env: Option<String>,
    /// Longest wait between two send attempts.
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: ConfigDuration,
    /// Give up a transient failure after this long and mark the alert failed.
    #[serde(default = "defaults::give_up_after")]
    pub give_up_after: ConfigDuration,
    /// A PEM bundle of CA certificates trusted for the SMTP server's TLS certificate, in
    /// addition to the system roots (a private relay, a test server).
    #[serde(default)]
    pub smtp_ca_file: Option<PathBuf>,
}

/// One configured sender: its URL is `/webhooks/<name>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub platform: Platform,
    pub scheme: SchemeKind,
    /// The secrets, by value. Several during a rotation: any one verifies.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Or: the environment variable(s) holding them.
    #[serde(default)]
    pub secrets_env: Option<OneOrMany>,
    /// Or: a file holding one secret per line (`${CREDENTIALS_DIRECTORY}` is expanded).
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Header carrying the signature or key (`hmac-sha256`, `api-key`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// `hex` or `base64` (`hmac-sha256`).
    #[serde(default)]
    pub signature_encoding: Option<SignatureEncoding>,
    /// Text before the signature, e.g. `sha256=` (`hmac-sha256`).
    #[serde(default)]
    pub signature_prefix: Option<String>,
    /// Allowed clock skew for timestamped schemes (`standard-webhooks`, `ebay-legacy`).
    #[serde(default = "defaults::tolerance_secs")]
    pub tolerance_secs: u64,
    /// Required for `scheme = "none"`: accepting unsigned requests is for local testing only.
    #[serde(default)]
    pub insecure: bool,
    /// Token bucket per source; none unless set.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Alert recipients for this source, instead of `[alerts] recipients`.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Low-stock threshold for this source, instead of the global one.
    #[serde(default)]
    pub low_stock_threshold: Option<i64>,
    /// Lead time in days (`cover` rule) for this source, instead of the global one.
    #[serde(default)]
    pub cover_days: Option<u32>,
    /// eBay: the verification token given to eBay, and the exact endpoint URL registered there.
    #[serde(default)]
    pub verification_token: Option<Secret>,
    #[serde(default)]
    pub verification_token_env: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// eBay: public keys by kid (PEM), instead of fetching them.
    #[serde(default)]
    pub public_keys: BTreeMap<String, String>,
    /// eBay: the app's client credentials, to fetch public keys by kid.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// eBay: base URL of eBay's APIs for the OAuth token and the public keys (default
    /// `https://api.ebay.com`; `https://api.sandbox.ebay.com` for a sandbox keyset). Fetched keys
    /// are cached for one hour (fixed); keys under `public_keys` win and never expire.
    #[serde(default)]
    pub ebay_api_url: Option<String>,
    /// Set by [`load`] from `client_secret_env`.
    #[serde(skip)]
    pub client_secret: Option<Secret>,
    /// eBay legacy (Trading API): the keyset the signature is made from.
    #[serde(default)]
    pub dev_id: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub cert_id: Option<Secret>,
    #[serde(default)]
    pub cert_id_env: Option<String>,
    /// This source's alerts go to these channels (`"email"` and/or `[[channels]]` names).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Per rule, this source's channels (wins over `channels`).
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// The store's address, for the alert email's links into the platform's admin: Shopify's
    /// `acme-shop.myshopify.com`, WooCommerce's `https://shop.example.com`. Amazon and eBay
    /// need none.
    #[serde(default)]
    pub store_url: Option<String>,
    /// Names for this source's location ids, shown in the alert email instead of the id
    /// (`{ "655441491" = "Main warehouse" }`).
    #[serde(default)]
    pub location_names: BTreeMap<String, String>,
    /// Amazon SP-API catalog sync for this source (`[sources.amazon_sync]`, issue 14).
    #[serde(default)]
    pub amazon_sync: Option<AmazonSyncConfig>,
    /// eBay catalog sync for this source (`[sources.ebay_sync]`, issue 14).
    #[serde(default)]
    pub ebay_sync: Option<EbaySyncConfig>,
    /// Shopify: the Admin API credentials catalog sync and `connect` use (`[sources.shopify_sync]`).
    #[serde(default)]
    pub shopify_sync: Option<ShopifyApiConfig>,
    /// Set by [`load`]: why this source is switched off (its secret is unset), or `None`.
    #[serde(skip_deserializing)]
    pub disabled: Option<String>,
    /// Set by [`load`]: the line in the config file where this source starts, for error messages.
    #[serde(skip)]
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Shopify,
    Amazon,
    Ebay,
    Simple,
    Woocommerce,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Shopify => "shopify",
            Platform::Amazon => "amazon",
            Platform::Ebay => "ebay",
            Platform::Simple => "simple",
            Platform::Woocommerce => "woocommerce",
        }
    }
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "shopify" => Some(Platform::Shopify),
            "amazon" => Some(Platform::Amazon),
            "ebay" => Some(Platform::Ebay),
            "simple" => Some(Platform::Simple),
            "woocommerce" => Some(Platform::Woocommerce),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeKind {
    ShopifyHmac,
    StandardWebhooks,
    HmacSha256,
    ApiKey,
    BasicAuth,
    Ebay,
    EbayLegacy,
    None,
}

impl SchemeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeKind::ShopifyHmac => "shopify-hmac",
            SchemeKind::StandardWebhooks => "standard-webhooks",
            SchemeKind::HmacSha256 => "hmac-sha256",
            SchemeKind::ApiKey => "api-key",
            SchemeKind::BasicAuth => "basic-auth",
            SchemeKind::Ebay => "ebay",
            SchemeKind::EbayLegacy => "ebay-legacy",
            SchemeKind::None => "none",
        }
    }
}

impl fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

pub mod defaults;

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field of this section has a default")
            }
        }
    )*};
}
default_from_serde!(
    SyncConfig,
    ReceiverConfig,
    QueueConfig,
    WorkerConfig,
    AlertsConfig,
    EmailConfig,
    EventsConfig
);

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every top-level key has a default")
    }
}

/// Where the queue and the worker's state live, chosen once from `[queue] backend` by the loader
/// ([`Config::backend`]); code below matches on this type, never on the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded sled databases under `data_dir`: one receiver and one worker.
    Sled,
    /// NATS JetStream (`queue.nats_*`): any number of receivers and workers.
    Nats,
}

/// `[events]`: what the worker accepts as plausible in an event, so that one wrong timestamp or
/// quantity cannot silence an item.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// An event time later than the moment the receiver accepted the event by more than this is
    /// a wrong clock: the accepted time is used for ordering (and counted).
    #[serde(default = "defaults::future_tolerance")]
    pub future_tolerance: ConfigDuration,
    /// A quantity above this is refused (that fact only; the event is dead-lettered naming it).
    #[serde(default = "defaults::max_quantity")]
    pub max_quantity: i64,
    /// A quantity below this is refused likewise (oversold stock goes a little below zero).
    #[serde(default = "defaults::min_quantity")]
    pub min_quantity: i64,
}
