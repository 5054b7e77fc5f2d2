//! Looking up an item the catalog does not know, just before its alert goes out: a webhook named
//! an item no sync or product webhook has described yet (a bare `inventory_levels/update`), and
//! the source has API credentials, so the email can name the product and the SKU instead of a
//! bare id.
//!
//! The wait is bounded ([`WAIT`] for all the lookups of one email); an answer (found or not
//! found) is cached for the life of the process, a timeout or an error is not (the next alert
//! tries again). With no answer in time the alert goes out with what is known. The next catalog
//! sync brings the item into state for good.
//!
//! Never: delays an alert past [`WAIT`], or logs the item's title or SKU.

use super::http::ApiClient;
use crate::alert::Alert;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockhook_shared::config::{Config, ShopifyApiConfig, SourceApi};
use stockhook_shared::queue::now_ms;

/// The longest the lookups for one email may take together.
pub const WAIT: Duration = Duration::from_secs(5);

/// What a lookup found: the SKU and the title (location names come from the catalog; see
/// `crate::email::admin_links::location_words`).
#[derive(Debug, Clone, Default)]
struct Known {
    sku: Option<String>,
    title: Option<String>,
}

/// The sources that can be asked, and the answers so far.
pub struct Lookup {
    shopify: HashMap<String, ShopifyApiConfig>,
    api: ApiClient,
    cache: Mutex<HashMap<(String, String), Option<Known>>>,
    wait: Duration,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("sources", &self.shopify.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Lookup {
    /// `None` when no source has API credentials.
    pub fn from_config(c: &Config) -> Option<Arc<Lookup>> {
        let shopify: HashMap<String, ShopifyApiConfig> = c
            .sources
            .iter()
            .filter_map(|s| match s.api() {
                Some(SourceApi::Shopify(a)) if a.access_token.is_some() => {
                    Some((s.name.clone(), a.clone()))
                }
                _ => None,
            })
            .collect();
        if shopify.is_empty() {
            return None;
        }
        let api = ApiClient::new().ok()?;
        Some(Arc::new(Lookup {
            shopify,
            api,
            cache: Mutex::new(HashMap::new()),
            wait: WAIT,
        }))
    }

    fn cached(&self, key: &(String, String)) -> Option<Option<Known>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Fills in the SKU, title and location name of alerts whose item the catalog did not
    /// know (no SKU and no title), from the cache or the platform, within [`WAIT`].
    pub async fn enrich(&self, alerts: &mut [Alert]) {
        let deadline = tokio::time::Instant::now() + self.wait;
        for a in alerts.iter_mut() {
            if a.sku.is_some() || a.title.is_some() {
                continue;
            }
            let Some(cfg) = self.shopify.get(&a.source) else {
                continue;
            };
            if a.item.is_empty() || !a.item.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let key = (a.source.clone(), a.item.clone());
            let known = match self.cached(&key) {
                Some(k) => k,
                None => {
                    let asked = tokio::time::timeout_at(
                        deadline,
                        super::shopify::lookup(cfg, &self.api, &a.item, now_ms()),
                    )
                    .await;
                    match asked {
                        Ok(Ok(batch)) => {
                            let k = batch.and_then(|b| {
                                let it = b.items.into_iter().next()?;
                                Some(Known {
                                    sku: it.sku,
                                    title: it.title,
                                })
                            });
                            self.cache
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(key, k.clone());
                            k
                        }
                        Ok(Err(e)) => {
                            tracing::info!(source = %a.source, item = %a.item, error = %e, "unknown item: lookup failed; alert sent with what is known");
                            None
                        }
                        Err(_) => {
                            tracing::info!(source = %a.source, item = %a.item, "unknown item: no answer in time; alert sent with what is known");
                            None
                        }
                    }
                }
            };
            if let Some(k) = known {
                a.sku = k.sku;
                a.title = k.title;
            }
        }
    }
}
