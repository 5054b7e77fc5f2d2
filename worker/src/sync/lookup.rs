//! Looking up an item the catalog does not know, just before its alert goes out: a webhook named
//! an item no sync or product webhook has described yet (a bare `inventory_levels/update`), and
//! the source has API credentials, so the email can name the product and the SKU instead of a
//! bare id.
//!
//! The wait is bounded ([`WAIT`] for all the lookups of one email); an answer (found or not
//! found) is cached for the life of the process, a timeout or an error is not (the next alert
//! tries again). With no answer in time the alert goes out with what is known. What a lookup
//! finds is also kept in the catalog (SKU, title, variant alias, location names; never a
//! level, which the rules already had from the webhook): the next alert names the item without
//! asking again, and the dashboard shows its title. It goes in as a catalog batch
//! ([`crate::catalog::apply`], [`Origin::Lookup`]) after the email's lookups are done.
//!
//! Never: delays an alert past [`WAIT`], or logs the item's title or SKU.

use super::http::ApiClient;
use crate::alert::Alert;
use crate::catalog::{self, CatalogBatch, Origin};
use crate::state::{RuleConfig, StateBackend};
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
    /// What applying a found item's catalog entry checks (event limits); it raises no alert.
    rules: Arc<RuleConfig>,
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
            rules: Arc::new(RuleConfig::from_config(c)),
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
    /// know (no SKU and no title), from the cache or the platform, within [`WAIT`]; what the
    /// platform answered is kept in `state`'s catalog.
    pub async fn enrich<S: StateBackend>(&self, alerts: &mut [Alert], state: &S) {
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut found: Vec<CatalogBatch> = Vec::new();
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
                            let k = batch.and_then(|mut b| {
                                let it = b.items.first()?;
                                let k = Known {
                                    sku: it.sku.clone(),
                                    title: it.title.clone(),
                                };
                                b.source = a.source.clone();
                                found.push(catalog_only(b));
                                Some(k)
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
        for b in found {
            let origin = Origin::Lookup {
                item: b.items.first().map(|i| i.item.clone()).unwrap_or_default(),
                at: b.taken_at,
            };
            if let Err(e) =
                catalog::apply(state, self.rules.clone(), &b, &origin, now_ms(), false).await
            {
                tracing::warn!(source = %b.source, error = %e, "unknown item looked up, but its catalog entry could not be kept");
            }
        }
    }
}

/// A looked-up item's batch without its levels: the entry and its locations' names only (the
/// webhook's level is the one the rules act on; a level read here would be a second report).
fn catalog_only(mut b: CatalogBatch) -> CatalogBatch {
    for it in &mut b.items {
        for l in &mut it.levels {
            l.1 = None;
        }
    }
    b
}
