//! eBay catalog sync: one seller's listings, their stock and recent order lines as one
//! [`CatalogBatch`], keyed as the Platform Notifications adapter ([`crate::adapters::ebay`])
//! keys them, so a webhook and a sync land on the same record.
//!
//! * Listings: the Trading API `GetSellerList` (every listing ending in the next 119 days, which
//!   takes in all active fixed-price listings: Good 'Til Cancelled ones renew every 30 days),
//!   page by page (`PaginationResult.TotalNumberOfPages`, `HasMoreItems`), with
//!   `IncludeVariations`. A listing that comes back with neither a SKU nor `Variations` is read
//!   again with `GetItem`, which always returns the variations. Each listing then becomes what
//!   the adapter makes of a `GetItemResponse`: item = ItemID at location `ebay` with
//!   `Quantity − SellingStatus.QuantitySold`; a multi-variation listing one item per variation,
//!   `<ItemID>:<SKU>` (else `<ItemID>:<Name>=<Value>;…`), each with its own quantity.
//! * Inventory API items: the Sell Inventory API `getInventoryItems` (`limit`/`offset`, following
//!   `next`, which may be a relative path). Its titles fill in where a listing has none. A SKU
//!   no active listing carries (not published, or listed elsewhere) is catalog-only, keyed
//!   `sku:<SKU>`: it has no ItemID a webhook could name, and no level.
//! * Sales: the Fulfillment API `getOrders` (`filter=creationdate:[now − sales_history_days..]`,
//!   following `next`); canceled orders are skipped. A line is keyed order =
//!   `<legacyItemId>-<lineItemId>`, line = `lineItemId`, the shape of the adapter's
//!   `<ItemID>-<TransactionID>` / TransactionID keys.
//!
//! The OAuth user token is refreshed from the refresh token as [`super::token`] says; the
//! Trading API gets it in `X-EBAY-API-IAF-TOKEN`. A `next` link is followed only on the
//! configured API host, so a token is never sent elsewhere.
//!
//! Never: logs a token, a secret, a request URL's query or a body.

use super::http::{ApiClient, ApiResponse, SyncError};
use super::settings::{required, sync_table};
use super::token::{Token, TokenSource};
use crate::adapters::ebay::{item_facts, parse_xml, Node};
use crate::adapters::parse_time;
use crate::catalog::{CatalogBatch, CatalogItem, SaleLine};
use crate::facts::Fact;
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use stockhook_shared::config::SourceConfig;
use stockhook_shared::secret::Secret;

pub const DEFAULT_API_BASE: &str = "https://api.ebay.com";
/// A listing's level is one quantity at `ebay`, not all of the item's stock keyed as webhooks
/// may have keyed it: a complete batch leaves the other levels as they are.
pub const LEVELS_ARE_ALL_STOCK: bool = false;
/// The Trading API schema version asked for.
const COMPATIBILITY_LEVEL: &str = "1225";
/// Listings per `GetSellerList` page (its maximum).
const LISTINGS_PER_PAGE: u32 = 200;
/// Inventory items per page (the API's maximum).
const INVENTORY_PAGE: u32 = 200;
/// Orders per page (the API's maximum).
const ORDERS_PAGE: u32 = 200;
/// More pages than this of one listing is a loop, not a catalog.
const MAX_PAGES: u32 = 100_000;
/// Trading API error codes meaning the token was refused (invalid, expired, revoked).
const TOKEN_ERRORS: &[&str] = &["931", "932", "16110", "21916013", "21916984", "21917053"];

/// What one eBay sync needs, resolved from `[sources.ebay_sync]`.
#[derive(Debug, Clone)]
pub struct EbayConfig {
    pub source: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// Scheme and host, no trailing slash.
    pub api_base: String,
    pub token_url: String,
    pub trading_url: String,
    pub site_id: u32,
    pub sales_history_days: u32,
    /// First wait before retrying a 429, 5xx or network error.
    pub initial_backoff: Duration,
}

impl EbayConfig {
    /// The sync settings of `source`, or why it cannot sync.
    pub fn from_source(source: &SourceConfig) -> Result<EbayConfig, SyncError> {
        let name = &source.name;
        let c = sync_table(name, "ebay_sync", source.ebay_sync.as_ref(), |c| {
            c.problem.as_ref()
        })?;
        let need = |v: &Option<Secret>, key: &str| required(v, name, "ebay_sync", key);
        let api_base = c
            .api_base
            .clone()
            .unwrap_or_else(|| DEFAULT_API_BASE.into())
            .trim_end_matches('/')
            .to_string();
        Ok(EbayConfig {
            source: name.clone(),
            client_id: required(&c.client_id, name, "ebay_sync", "client_id")?,
            client_secret: need(&c.client_secret, "client_secret")?,
            refresh_token: need(&c.refresh_token, "refresh_token")?,
            token_url: c
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{api_base}/identity/v1/oauth2/token")),
            trading_url: format!("{api_base}/ws/api.dll"),
            api_base,
            site_id: c.site_id,
            sales_history_days: c.sales_history_days,
            initial_backoff: Duration::from_secs(1),
        })
    }
}

struct Session<'a> {
    cfg: &'a EbayConfig,
    api: &'a ApiClient,
    token: Token,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a EbayConfig, api: &'a ApiClient) -> Session<'a> {
        Session {
            cfg,
            api,
            token: Token::new(TokenSource {
                what: "eBay OAuth token",
                url: cfg.token_url.clone(),
                form: Vec::new(),
                refresh_token: cfg.refresh_token.clone(),
                basic: Some((cfg.client_id.clone(), cfg.client_secret.clone())),
                initial_backoff: cfg.initial_backoff,
            }),
        }
    }

    /// GETs an absolute URL (on the API host) as JSON.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &mut self,
        url: &str,
        what: &str,
    ) -> Result<T, SyncError> {
        let make = |token: &str| {
            http::Request::get(url)
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, super::USER_AGENT)
                .body(Full::new(Bytes::new()))
                .map_err(|_| SyncError::Config(format!("{what}: api_base is not a URL")))
        };
        self.token
            .send(self.api, make, what, self.cfg.initial_backoff, |_| Ok(()))
            .await?
            .json(what)
    }

    /// One Trading API call; a `Failure` answer is an error, a refused token
    /// [`SyncError::Unauthorized`].
    async fn trading(&mut self, call: &str, body: String, what: &str) -> Result<Node, SyncError> {
        let cfg = self.cfg;
        let make = |token: &str| {
            http::Request::post(&cfg.trading_url)
                .header("X-EBAY-API-CALL-NAME", call)
                .header("X-EBAY-API-SITEID", cfg.site_id.to_string())
                .header("X-EBAY-API-COMPATIBILITY-LEVEL", COMPATIBILITY_LEVEL)
                .header("X-EBAY-API-IAF-TOKEN", token)
                .header(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")
                .header(http::header::USER_AGENT, super::USER_AGENT)
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(|_| SyncError::Config(format!("{what}: api_base is not a URL")))
        };
        let check = |r: &ApiResponse| trading_ack(&r.body, what).map(|_| ());
        let resp = self
            .token
            .send(self.api, make, what, cfg.initial_backoff, check)
            .await?;
        trading_ack(&resp.body, what)
    }
}

/// Parses a Trading API answer and sorts its `Ack`.
fn trading_ack(body: &[u8], what: &str) -> Result<Node, SyncError> {
    let doc = parse_xml(body).map_err(|e| SyncError::Protocol {
        what: what.into(),
        problem: e.to_string(),
    })?;
    let ack = doc.text_at(&["Ack"]).unwrap_or("");
    if ack.eq_ignore_ascii_case("Failure") || ack.eq_ignore_ascii_case("PartialFailure") {
        let errors: Vec<&Node> = doc.children_named("Errors").collect();
        let codes: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.text_at(&["ErrorCode"]))
            .collect();
        if codes.iter().any(|c| TOKEN_ERRORS.contains(c)) {
            return Err(SyncError::Unauthorized {
                what: what.into(),
                status: 200,
            });
        }
        let message = errors
            .iter()
            .filter_map(|e| e.text_at(&["ShortMessage"]))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SyncError::Refused {
            what: what.into(),
            status: 200,
            body: format!("Ack {ack}, errors {codes:?}: {message}"),
        });
    }
    Ok(doc)
}

/// `next` resolved against the page it came from, refused unless it stays on `base`'s host.
fn next_url(base: &str, current: &str, next: &str, what: &str) -> Result<String, SyncError> {
    let bad = |problem: String| SyncError::Protocol {
        what: what.into(),
        problem,
    };
    let cur = url::Url::parse(current).map_err(|e| bad(format!("page URL: {e}")))?;
    let joined = cur
        .join(next.trim())
        .map_err(|e| bad(format!("next link: {e}")))?;
    let home = url::Url::parse(base).map_err(|e| bad(format!("api_base: {e}")))?;
    if joined.origin() != home.origin() {
        return Err(bad("next link points to another host; not followed".into()));
    }
    Ok(joined.to_string())
}

/// Where a REST listing that pages by `next` links is. The walk ends where a page has no
/// `next`, links back to a page already read, or after [`MAX_PAGES`].
struct Links<'a> {
    base: &'a str,
    url: String,
    seen: HashSet<String>,
    what: &'static str,
}

impl<'a> Links<'a> {
    fn new(base: &'a str, first: String, what: &'static str) -> Links<'a> {
        Links {
            base,
            url: first,
            seen: HashSet::new(),
            what,
        }
    }

    /// The URL of the page to read now, or `None` when the walk is over.
    fn page(&mut self) -> Option<String> {
        let fresh = self.seen.insert(self.url.clone()) && self.seen.len() as u32 <= MAX_PAGES;
        fresh.then(|| self.url.clone())
    }

    /// Moves to the page `next` links to ([`next_url`]); `Ok(false)` when there is none.
    fn follow(&mut self, next: Option<String>) -> Result<bool, SyncError> {
        match next.filter(|n| !n.trim().is_empty()) {
            Some(n) => {
                self.url = next_url(self.base, &self.url, &n, self.what)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

// --- Published response shapes (only the fields used) ---------------------------------------

#[derive(Deserialize)]
struct InventoryPage {
    #[serde(default, rename = "inventoryItems")]
    inventory_items: Vec<InventoryItem>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct InventoryItem {
    sku: String,
    #[serde(default)]
    product: Option<Product>,
}

#[derive(Deserialize)]
struct Product {
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
struct OrdersPage {
    #[serde(default)]
    orders: Vec<Order>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    #[serde(default)]
    creation_date: Option<String>,
    #[serde(default)]
    cancel_status: Option<CancelStatus>,
    #[serde(default)]
    line_items: Vec<LineItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelStatus {
    #[serde(default)]
    cancel_state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineItem {
    line_item_id: String,
    legacy_item_id: String,
    #[serde(default)]
    legacy_variation_id: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    quantity: i64,
    #[serde(default)]
    variation_aspects: Vec<Aspect>,
}

#[derive(Deserialize)]
struct Aspect {
    name: String,
    value: String,
}

/// The item a line sold: its variation (`<ItemID>:<SKU>`, else `<ItemID>:<Name>=<Value>;…`)
/// when it names one, else the listing.
fn line_item_key(l: &LineItem) -> String {
    let id = l.legacy_item_id.trim();
    if l.legacy_variation_id
        .as_deref()
        .is_some_and(|v| !v.is_empty())
    {
        if let Some(sku) = l.sku.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            return format!("{id}:{sku}");
        }
        let specifics: Vec<String> = l
            .variation_aspects
            .iter()
            .map(|a| format!("{}={}", a.name, a.value))
            .collect();
        if !specifics.is_empty() {
            return format!("{id}:{}", specifics.join(";"));
        }
    }
    id.to_string()
}

// --- Assembling the batch ---------------------------------------------------------------------

/// Catalog items from the adapter's facts of one listing, merged by item key in order.
fn add_facts(items: &mut Vec<CatalogItem>, index: &mut BTreeMap<String, usize>, facts: Vec<Fact>) {
    for f in facts {
        let key = match &f {
            Fact::CatalogEntry { item, .. } | Fact::InventoryLevel { item, .. } => item.clone(),
            _ => continue,
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            items.push(CatalogItem {
                item: key.clone(),
                ..CatalogItem::default()
            });
            items.len() - 1
        });
        let it = &mut items[i];
        match f {
            Fact::CatalogEntry {
                aliases,
                sku,
                title,
                ..
            } => {
                it.aliases = aliases;
                it.sku = sku;
                it.title = title;
            }
            Fact::InventoryLevel {
                location,
                available,
                ..
            } => it.levels.push((location, available)),
            _ => {}
        }
    }
}

fn get_seller_list_request(page: u32, now_ms: i64) -> String {
    let from = super::iso_time(now_ms);
    let to = super::iso_time(now_ms + 119 * 86_400_000);
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<GetSellerListRequest xmlns="urn:ebay:apis:eBLBaseComponents">
  <DetailLevel>ReturnAll</DetailLevel>
  <EndTimeFrom>{from}</EndTimeFrom>
  <EndTimeTo>{to}</EndTimeTo>
  <IncludeVariations>true</IncludeVariations>
  <Pagination><EntriesPerPage>{LISTINGS_PER_PAGE}</EntriesPerPage><PageNumber>{page}</PageNumber></Pagination>
</GetSellerListRequest>"#
    )
}

fn get_item_request(item_id: &str) -> String {
    // ItemIDs are digits; anything else is escaped rather than trusted into the XML.
    let id: String = item_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<GetItemRequest xmlns="urn:ebay:apis:eBLBaseComponents">
  <DetailLevel>ReturnAll</DetailLevel>
  <ItemID>{id}</ItemID>
</GetItemRequest>"#
    )
}

/// A response node holding one `Item`, the shape [`item_facts`] reads.
fn as_item_response(item: Node) -> Node {
    Node {
        name: "GetItemResponse".into(),
        text: String::new(),
        children: vec![item],
    }
}

/// Reads the seller's listings, inventory items and recent orders.
pub async fn fetch(
    cfg: &EbayConfig,
    api: &ApiClient,
    now_ms: i64,
) -> Result<CatalogBatch, SyncError> {
    let mut s = Session::new(cfg, api);

    // Inventory API items: SKU -> title.
    let mut inventory: BTreeMap<String, Option<String>> = BTreeMap::new();
    let first = format!(
        "{}/sell/inventory/v1/inventory_item?limit={INVENTORY_PAGE}&offset=0",
        cfg.api_base
    );
    let mut pages = Links::new(&cfg.api_base, first, "eBay inventory items page");
    while let Some(url) = pages.page() {
        let page: InventoryPage = s.get_json(&url, pages.what).await?;
        for it in page.inventory_items {
            let title = it.product.and_then(|p| p.title).filter(|t| !t.is_empty());
            inventory.insert(it.sku, title);
        }
        if !pages.follow(page.next)? {
            break;
        }
    }

    // Trading API listings.
    let mut items: Vec<CatalogItem> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut page = 1u32;
    loop {
        let mut doc = s
            .trading(
                "GetSellerList",
                get_seller_list_request(page, now_ms),
                "eBay GetSellerList page",
            )
            .await?;
        let total_pages: Option<u32> = doc
            .text_at(&["PaginationResult", "TotalNumberOfPages"])
            .and_then(|t| t.parse().ok());
        let more = doc
            .text_at(&["HasMoreItems"])
            .is_some_and(|t| t.eq_ignore_ascii_case("true"));
        let listings = doc
            .children
            .iter_mut()
            .find(|c| c.name == "ItemArray")
            .map(|a| std::mem::take(&mut a.children))
            .unwrap_or_default();
        for item in listings.into_iter().filter(|c| c.name == "Item") {
            let bare = item.text_at(&["SKU"]).is_none() && item.child("Variations").is_none();
            let response = match item.text_at(&["ItemID"]) {
                Some(id) if bare => {
                    let mut full = s
                        .trading("GetItem", get_item_request(id), "eBay GetItem")
                        .await?;
                    match full.children.iter().position(|c| c.name == "Item") {
                        Some(i) => as_item_response(full.children.swap_remove(i)),
                        None => as_item_response(item),
                    }
                }
                _ => as_item_response(item),
            };
            let facts = item_facts(&response, "GetSellerList", now_ms, false).map_err(|e| {
                SyncError::Protocol {
                    what: "eBay GetSellerList page".into(),
                    problem: e.to_string(),
                }
            })?;
            add_facts(&mut items, &mut index, facts);
        }
        // The page count when the answer gives one, else HasMoreItems.
        let last = match total_pages {
            Some(total) => page >= total,
            None => !more,
        };
        if last || page >= MAX_PAGES {
            break;
        }
        page += 1;
    }

    // Inventory API SKUs: titles where listings have none; unlisted SKUs catalog-only.
    let listed: HashSet<String> = items.iter().filter_map(|i| i.sku.clone()).collect();
    for it in items.iter_mut() {
        if it.title.is_none() {
            if let Some(Some(t)) = it.sku.as_ref().and_then(|k| inventory.get(k)) {
                it.title = Some(t.clone());
            }
        }
    }
    for (sku, title) in inventory {
        if !listed.contains(&sku) {
            items.push(CatalogItem {
                item: format!("sku:{sku}"),
                sku: Some(sku),
                title,
                ..CatalogItem::default()
            });
        }
    }

    let sales = orders(&mut s, now_ms).await?;
    Ok(super::whole_catalog(
        &cfg.source,
        "ebay",
        now_ms,
        items,
        sales,
        LEVELS_ARE_ALL_STOCK,
        s.token.refreshes,
    ))
}

async fn orders(s: &mut Session<'_>, now_ms: i64) -> Result<Vec<SaleLine>, SyncError> {
    let cfg = s.cfg;
    let after = now_ms - i64::from(cfg.sales_history_days) * 86_400_000;
    let filter: String = url::form_urlencoded::byte_serialize(
        format!("creationdate:[{}..]", super::iso_time(after)).as_bytes(),
    )
    .collect();
    let first = format!(
        "{}/sell/fulfillment/v1/order?filter={filter}&limit={ORDERS_PAGE}&offset=0",
        cfg.api_base
    );
    let mut pages = Links::new(&cfg.api_base, first, "eBay orders page");
    let mut sales = Vec::new();
    while let Some(url) = pages.page() {
        let page: OrdersPage = s.get_json(&url, pages.what).await?;
        for o in page.orders {
            let canceled = o
                .cancel_status
                .and_then(|c| c.cancel_state)
                .is_some_and(|st| st.eq_ignore_ascii_case("CANCELED"));
            if canceled {
                continue;
            }
            let at = o
                .creation_date
                .as_deref()
                .and_then(parse_time)
                .unwrap_or(now_ms);
            for l in o.line_items {
                if l.quantity <= 0 || l.legacy_item_id.trim().is_empty() {
                    continue;
                }
                sales.push(SaleLine {
                    item: line_item_key(&l),
                    quantity: l.quantity,
                    order: format!("{}-{}", l.legacy_item_id.trim(), l.line_item_id),
                    line: l.line_item_id,
                    at,
                });
            }
        }
        if !pages.follow(page.next)? {
            break;
        }
    }
    Ok(sales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_resolve_and_stay_home() {
        let base = "https://api.ebay.com";
        let cur = "https://api.ebay.com/sell/inventory/v1/inventory_item?limit=2&offset=0";
        assert_eq!(
            next_url(
                base,
                cur,
                "/sell/inventory/v1/inventory_item?offset=2&limit=2",
                "x"
            )
            .unwrap(),
            "https://api.ebay.com/sell/inventory/v1/inventory_item?offset=2&limit=2"
        );
        assert_eq!(
            next_url(base, cur, "inventory_item?offset=4&limit=2", "x").unwrap(),
            "https://api.ebay.com/sell/inventory/v1/inventory_item?offset=4&limit=2"
        );
        assert!(next_url(base, cur, "https://evil.example/steal", "x").is_err());
    }

    #[test]
    fn trading_failures_sort() {
        let fail = |code: &str| {
            format!("<GetSellerListResponse xmlns=\"urn:ebay:apis:eBLBaseComponents\"><Ack>Failure</Ack><Errors><ShortMessage>m</ShortMessage><ErrorCode>{code}</ErrorCode></Errors></GetSellerListResponse>")
        };
        assert!(matches!(
            trading_ack(fail("932").as_bytes(), "x"),
            Err(SyncError::Unauthorized { .. })
        ));
        assert!(matches!(
            trading_ack(fail("240").as_bytes(), "x"),
            Err(SyncError::Refused { .. })
        ));
        assert!(trading_ack(b"<R><Ack>Warning</Ack></R>", "x").is_ok());
    }

    #[test]
    fn sold_variations_are_keyed_like_the_adapter() {
        let l = |sku: Option<&str>, var: Option<&str>| LineItem {
            line_item_id: "1".into(),
            legacy_item_id: "110142400319".into(),
            legacy_variation_id: var.map(str::to_string),
            sku: sku.map(str::to_string),
            quantity: 1,
            variation_aspects: vec![Aspect {
                name: "Color".into(),
                value: "Black".into(),
            }],
        };
        assert_eq!(
            line_item_key(&l(Some("testSku501_B"), Some("4"))),
            "110142400319:testSku501_B"
        );
        assert_eq!(
            line_item_key(&l(None, Some("4"))),
            "110142400319:Color=Black"
        );
        assert_eq!(line_item_key(&l(Some("MUG"), None)), "110142400319");
    }
}
