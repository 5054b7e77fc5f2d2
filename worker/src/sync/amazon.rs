//! Amazon Selling Partner API catalog sync: one source's SKUs, their FBA and merchant-fulfilled
//! stock, and its recent order lines, as one [`CatalogBatch`].
//!
//! * FBA stock: FBA Inventory `getInventorySummaries` (`details=true`, granularity
//!   `Marketplace`) for each configured marketplace, page by page with `nextToken`; the units
//!   are `inventoryDetails.fulfillableQuantity`, as the `FBA_INVENTORY_AVAILABILITY_CHANGES`
//!   webhook's `Fulfillable`.
//! * Pooled FBA stock is counted once: marketplaces of one fulfillment network (North America's
//!   US/CA/MX, the European Fulfillment Network's Pan-European marketplaces) report views of the
//!   same units, so per SKU and pool the largest figure counts, at `fba:<the marketplace
//!   reporting it>` (ties: the first in `marketplace_ids`), and the pool's other marketplaces
//!   get no level. Exactly the webhook adapter's rule ([`crate::adapters::amazon`]), so a
//!   webhook and a sync write the same location.
//! * Merchant-fulfilled stock: Listings Items `searchListingsItems` (`includedData=summaries,
//!   fulfillmentAvailability`, with `pageToken`) per marketplace, when `seller_id` is set:
//!   `fulfillmentChannelCode` `DEFAULT` is location `mfn`, another seller channel
//!   `mfn:<code>`; `AMAZON_*` channels are FBA, already counted above
//!   ([`crate::adapters::amazon::mfn_location`], shared with the webhook adapter).
//! * The batch is complete, and each SKU's levels in it are all its Amazon stock: applied, it
//!   replaces the SKU's levels ([`crate::facts::Fact::StockedAt`]), so a level left under a key
//!   no longer reported (an old marketplace, a pool counted elsewhere now, an `AMAZON_*` channel
//!   once stored as MFN) stops counting.
//! * Sales: Orders `getOrders` (`CreatedAfter` = now − `sales_history_days`, `NextToken`), then
//!   `getOrderItems` per order; canceled orders are skipped. A line is keyed (order =
//!   AmazonOrderId, line = OrderItemId) as the `ORDER_CHANGE` webhook keys it, so a sale seen by
//!   both counts once.
//! * The item key is the seller SKU, as the webhook adapter's; aliases `asin:` and `fnsku:`.
//!
//! Throttling: every operation has a token bucket with Amazon's published default rate and
//! burst, updated from each answer's `x-amzn-RateLimit-Limit`; 429 and 5xx are retried with
//! backoff by [`ApiClient::send_retrying`]. The LWA token is refreshed as [`super::token`] says.
//!
//! Never: logs a token, a secret, a request URL's query or a body.

use super::http::{ApiClient, SyncError};
use super::settings::{required, sync_table};
use super::token::{Token, TokenSource};
use crate::adapters::amazon::{fba_levels, mfn_location};
use crate::adapters::parse_time;
use crate::catalog::{CatalogBatch, CatalogItem, SaleLine};
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use stockhook_shared::config::SourceConfig;
use stockhook_shared::secret::Secret;
use tokio::time::Instant;

/// A SKU's levels in the batch are all its Amazon stock (FBA summaries per pool, every Listings
/// fulfillment channel): applied, they replace the SKU's levels (see the module notes).
pub const LEVELS_ARE_ALL_STOCK: bool = true;

/// Login with Amazon's token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://api.amazon.com/auth/o2/token";
/// Page size asked of `searchListingsItems` (its maximum).
const LISTINGS_PAGE_SIZE: u32 = 20;

/// What one Amazon sync needs, resolved from `[sources.amazon_sync]`.
#[derive(Debug, Clone)]
pub struct AmazonConfig {
    pub source: String,
    pub lwa_client_id: String,
    pub lwa_client_secret: Secret,
    pub refresh_token: Secret,
    pub marketplace_ids: Vec<String>,
    pub seller_id: Option<String>,
    pub token_url: String,
    /// Scheme and host, no trailing slash.
    pub api_base: String,
    pub sales_history_days: u32,
    /// First wait before retrying a 429, 5xx or network error.
    pub initial_backoff: Duration,
}

impl AmazonConfig {
    /// The sync settings of `source`, or why it cannot sync.
    pub fn from_source(source: &SourceConfig) -> Result<AmazonConfig, SyncError> {
        let name = &source.name;
        let c = sync_table(name, "amazon_sync", source.amazon_sync.as_ref(), |c| {
            c.problem.as_ref()
        })?;
        let need = |v: &Option<Secret>, key: &str| required(v, name, "amazon_sync", key);
        if c.marketplace_ids.is_empty() {
            return Err(SyncError::Config(format!(
                "source {name}: amazon_sync.marketplace_ids is empty"
            )));
        }
        let api_base = match &c.api_base {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => region_endpoint(&c.marketplace_ids)
                .map_err(|m| SyncError::Config(format!("source {name}: {m}")))?
                .to_string(),
        };
        Ok(AmazonConfig {
            source: name.clone(),
            lwa_client_id: c.lwa_client_id.clone(),
            lwa_client_secret: need(&c.lwa_client_secret, "lwa_client_secret")?,
            refresh_token: need(&c.refresh_token, "refresh_token")?,
            marketplace_ids: c.marketplace_ids.clone(),
            seller_id: c.seller_id.clone().filter(|s| !s.is_empty()),
            token_url: c
                .token_url
                .clone()
                .unwrap_or_else(|| DEFAULT_TOKEN_URL.into()),
            api_base,
            sales_history_days: c.sales_history_days,
            initial_backoff: Duration::from_secs(1),
        })
    }
}

/// The SP-API endpoint of the region all `marketplaces` belong to.
fn region_endpoint(marketplaces: &[String]) -> Result<&'static str, String> {
    const NA: &[&str] = &[
        "ATVPDKIKX0DER",
        "A2EUQ1WTGCTBG2",
        "A1AM78C64UM0Y8",
        "A2Q3Y263D00KWC",
    ];
    const EU: &[&str] = &[
        "A1RKKUPIHCS9HS",
        "A1F83G8C2ARO7P",
        "A13V1IB3VIYZZH",
        "AMEN7PMS3EDWL",
        "A1805IZSGTT6HS",
        "A1PA6795UKMFR9",
        "APJ6JRA9NG5V4",
        "A2NODRKZP88ZB9",
        "AE08WJ6YKNBMC",
        "A1C3SOZRARQ6R3",
        "ARBP9OOSHTCHU",
        "A33AVAJ2PDY3EV",
        "A17E79C6D8DWNP",
        "A2VIGQ35RCS4UG",
        "A21TJRUUN4KGV",
        "A28R8C7NBKEWEA",
    ];
    const FE: &[&str] = &["A19VAU5U5O7RUS", "A39IBJ37TRP1C6", "A1VC38T7YXB528"];
    let region = |m: &str| {
        if NA.contains(&m) {
            Some("https://sellingpartnerapi-na.amazon.com")
        } else if EU.contains(&m) {
            Some("https://sellingpartnerapi-eu.amazon.com")
        } else if FE.contains(&m) {
            Some("https://sellingpartnerapi-fe.amazon.com")
        } else {
            None
        }
    };
    let mut found = None;
    for m in marketplaces {
        let r = region(m.trim()).ok_or_else(|| {
            format!("marketplace {m} is not one stockhook knows the region of: set amazon_sync.api_base")
        })?;
        match found {
            Some(f) if f != r => return Err(
                "amazon_sync.marketplace_ids span SP-API regions: configure one source per region"
                    .into(),
            ),
            _ => found = Some(r),
        }
    }
    found.ok_or_else(|| "amazon_sync.marketplace_ids is empty".into())
}

/// A token bucket for one SP-API operation.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64, burst: f64) -> Pacer {
        Pacer {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Waits until a request is within the usage plan, and takes it.
    async fn take(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.refill();
        }
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// Applies the rate the answer's `x-amzn-RateLimit-Limit` announces.
    fn observe(&mut self, headers: &http::HeaderMap) {
        let rate = headers
            .get("x-amzn-ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r > 0.0);
        if let Some(r) = rate {
            self.rate = r;
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Inventory,
    Listings,
    Orders,
    OrderItems,
}

/// One sync run: the token and the operations' buckets (published default rate, burst).
struct Session<'a> {
    cfg: &'a AmazonConfig,
    api: &'a ApiClient,
    token: Token,
    pacers: [Pacer; 4],
}

impl<'a> Session<'a> {
    fn new(cfg: &'a AmazonConfig, api: &'a ApiClient) -> Session<'a> {
        let token = Token::new(TokenSource {
            what: "Amazon LWA token",
            url: cfg.token_url.clone(),
            form: vec![
                ("client_id", Secret::new(cfg.lwa_client_id.clone())),
                ("client_secret", cfg.lwa_client_secret.clone()),
            ],
            refresh_token: cfg.refresh_token.clone(),
            basic: None,
            initial_backoff: cfg.initial_backoff,
        });
        Session {
            cfg,
            api,
            token,
            pacers: [
                Pacer::new(2.0, 2.0),
                Pacer::new(5.0, 5.0),
                Pacer::new(0.0167, 20.0),
                Pacer::new(0.5, 30.0),
            ],
        }
    }

    /// GETs `path_and_query` under the API base as JSON of type `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        op: Op,
        path_and_query: &str,
        what: &str,
    ) -> Result<T, SyncError> {
        self.pacers[op as usize].take().await;
        let url = format!("{}{path_and_query}", self.cfg.api_base);
        let make = |token: &str| {
            http::Request::get(&url)
                .header("x-amz-access-token", token)
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, super::USER_AGENT)
                .body(Full::new(Bytes::new()))
                .map_err(|_| SyncError::Config(format!("{what}: api_base is not a URL")))
        };
        let resp = self
            .token
            .send(self.api, make, what, self.cfg.initial_backoff, |_| Ok(()))
            .await?;
        self.pacers[op as usize].observe(&resp.headers);
        resp.json(what)
    }
}

/// A query value, percent-encoded (next tokens carry `+`, `/` and `=`).
fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

// --- Published response shapes (only the fields used) ---------------------------------------

#[derive(Deserialize, Default)]
struct Pagination {
    #[serde(default, rename = "nextToken")]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct SummariesPage {
    #[serde(default)]
    payload: Option<SummariesPayload>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct SummariesPayload {
    #[serde(default, rename = "inventorySummaries")]
    inventory_summaries: Vec<Summary>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    #[serde(default)]
    seller_sku: Option<String>,
    #[serde(default)]
    asin: Option<String>,
    #[serde(default)]
    fn_sku: Option<String>,
    #[serde(default)]
    product_name: Option<String>,
    #[serde(default)]
    inventory_details: Option<Details>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    #[serde(default)]
    fulfillable_quantity: Option<i64>,
}

#[derive(Deserialize)]
struct ListingsPage {
    #[serde(default)]
    items: Vec<Listing>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    sku: String,
    #[serde(default)]
    summaries: Vec<ListingSummary>,
    #[serde(default)]
    fulfillment_availability: Vec<Availability>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListingSummary {
    #[serde(default)]
    asin: Option<String>,
    #[serde(default)]
    item_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Availability {
    fulfillment_channel_code: String,
    #[serde(default)]
    quantity: Option<i64>,
}

#[derive(Deserialize)]
struct OrdersPage {
    payload: OrdersPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OrdersPayload {
    #[serde(default)]
    orders: Vec<Order>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Order {
    amazon_order_id: String,
    #[serde(default)]
    purchase_date: Option<String>,
    #[serde(default)]
    order_status: Option<String>,
}

#[derive(Deserialize)]
struct OrderItemsPage {
    payload: OrderItemsPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OrderItemsPayload {
    #[serde(default)]
    order_items: Vec<OrderItem>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OrderItem {
    order_item_id: String,
    #[serde(default, rename = "SellerSKU")]
    seller_sku: Option<String>,
    #[serde(default)]
    quantity_ordered: i64,
}

fn next(p: Option<Pagination>) -> Option<String> {
    p.and_then(|p| p.next_token)
}

/// Where a paged listing is: `base`, plus the token Amazon gave with the last page as
/// `param` (`&nextToken`, `?NextToken`, ...). The one rule for moving on: a new, non-empty token.
struct Cursor {
    base: String,
    param: &'static str,
    token: Option<String>,
}

impl Cursor {
    fn new(base: String, param: &'static str) -> Cursor {
        Cursor {
            base,
            param,
            token: None,
        }
    }

    /// The path of the page to read now.
    fn path(&self) -> String {
        match &self.token {
            Some(t) => format!("{}{}={}", self.base, self.param, q(t)),
            None => self.base.clone(),
        }
    }

    /// Moves to the page `next` names; false when there is none (or it names this one again).
    fn advance(&mut self, next: Option<String>) -> bool {
        match next.filter(|t| !t.trim().is_empty()) {
            Some(t) if Some(&t) != self.token.as_ref() => {
                self.token = Some(t);
                true
            }
            _ => false,
        }
    }
}

// --- Assembling the batch ---------------------------------------------------------------------

/// What is known of one SKU so far.
#[derive(Default)]
struct Sku {
    asin: Option<String>,
    fnsku: Option<String>,
    title: Option<String>,
    /// (marketplace, fulfillable), in `marketplace_ids` order.
    fba: Vec<(String, i64)>,
    /// (location, quantity) of merchant-fulfilled channels.
    mfn: Vec<(String, i64)>,
}

impl Sku {
    fn into_item(self, sku: String) -> CatalogItem {
        let mut aliases = Vec::new();
        if let Some(a) = &self.asin {
            aliases.push(format!("asin:{a}"));
        }
        if let Some(f) = &self.fnsku {
            aliases.push(format!("fnsku:{f}"));
        }
        let mut levels = fba_levels(&self.fba);
        for (loc, qty) in self.mfn {
            if !levels.iter().any(|(l, _)| *l == loc) {
                levels.push((loc, Some(qty)));
            }
        }
        CatalogItem {
            item: sku.clone(),
            aliases,
            sku: Some(sku),
            title: self.title,
            product: None,
            levels,
        }
    }
}

/// Reads the source's catalog, stock and recent orders from the SP-API.
pub async fn fetch(
    cfg: &AmazonConfig,
    api: &ApiClient,
    now_ms: i64,
) -> Result<CatalogBatch, SyncError> {
    let mut s = Session::new(cfg, api);
    let mut skus: BTreeMap<String, Sku> = BTreeMap::new();

    for m in &cfg.marketplace_ids {
        let base = format!(
            "/fba/inventory/v1/summaries?details=true&granularityType=Marketplace&granularityId={m}&marketplaceIds={m}",
            m = q(m)
        );
        let mut pages = Cursor::new(base, "&nextToken");
        loop {
            let path = pages.path();
            let page: SummariesPage = s
                .get(Op::Inventory, &path, "Amazon FBA inventory page")
                .await?;
            for sum in page
                .payload
                .map(|p| p.inventory_summaries)
                .unwrap_or_default()
            {
                let Some(sku) = sum.seller_sku.filter(|k| !k.is_empty()) else {
                    continue;
                };
                let e = skus.entry(sku).or_default();
                e.asin = e.asin.take().or(sum.asin.filter(|a| !a.is_empty()));
                e.fnsku = e.fnsku.take().or(sum.fn_sku.filter(|a| !a.is_empty()));
                e.title = e
                    .title
                    .take()
                    .or(sum.product_name.filter(|t| !t.is_empty()));
                if let Some(units) = sum.inventory_details.and_then(|d| d.fulfillable_quantity) {
                    e.fba.push((m.clone(), units));
                }
            }
            if !pages.advance(next(page.pagination)) {
                break;
            }
        }
    }

    if let Some(seller) = &cfg.seller_id {
        for m in &cfg.marketplace_ids {
            let base = format!(
                "/listings/2021-08-01/items/{}?marketplaceIds={}&includedData=summaries,fulfillmentAvailability&pageSize={LISTINGS_PAGE_SIZE}",
                q(seller),
                q(m)
            );
            let mut pages = Cursor::new(base, "&pageToken");
            loop {
                let path = pages.path();
                let page: ListingsPage = s.get(Op::Listings, &path, "Amazon listings page").await?;
                for l in page.items {
                    if l.sku.is_empty() {
                        continue;
                    }
                    let e = skus.entry(l.sku).or_default();
                    for sum in &l.summaries {
                        if e.asin.is_none() {
                            e.asin = sum.asin.clone().filter(|a| !a.is_empty());
                        }
                        if e.title.is_none() {
                            e.title = sum.item_name.clone().filter(|t| !t.is_empty());
                        }
                    }
                    for a in l.fulfillment_availability {
                        if let (Some(loc), Some(qty)) =
                            (mfn_location(&a.fulfillment_channel_code), a.quantity)
                        {
                            match e.mfn.iter_mut().find(|(l, _)| *l == loc) {
                                Some(slot) => slot.1 = qty,
                                None => e.mfn.push((loc, qty)),
                            }
                        }
                    }
                }
                if !pages.advance(next(page.pagination)) {
                    break;
                }
            }
        }
    }

    let sales = orders(&mut s, now_ms).await?;
    Ok(super::whole_catalog(
        &cfg.source,
        "amazon",
        now_ms,
        skus.into_iter().map(|(k, v)| v.into_item(k)).collect(),
        sales,
        LEVELS_ARE_ALL_STOCK,
        s.token.refreshes,
    ))
}

/// The order lines of the last `sales_history_days`.
async fn orders(s: &mut Session<'_>, now_ms: i64) -> Result<Vec<SaleLine>, SyncError> {
    let cfg = s.cfg;
    let after = now_ms - i64::from(cfg.sales_history_days) * 86_400_000;
    let markets = cfg
        .marketplace_ids
        .iter()
        .map(|m| q(m))
        .collect::<Vec<_>>()
        .join(",");
    let base = format!(
        "/orders/v0/orders?MarketplaceIds={markets}&CreatedAfter={}",
        q(&super::iso_time(after))
    );
    let mut sales = Vec::new();
    let mut pages = Cursor::new(base, "&NextToken");
    loop {
        let path = pages.path();
        let page: OrdersPage = s.get(Op::Orders, &path, "Amazon orders page").await?;
        for o in page.payload.orders {
            let canceled = o
                .order_status
                .as_deref()
                .is_some_and(|st| st.eq_ignore_ascii_case("Canceled"));
            if canceled {
                continue;
            }
            let at = o
                .purchase_date
                .as_deref()
                .and_then(parse_time)
                .unwrap_or(now_ms);
            let items_base = format!("/orders/v0/orders/{}/orderItems", q(&o.amazon_order_id));
            let mut item_pages = Cursor::new(items_base, "?NextToken");
            loop {
                let path = item_pages.path();
                let items: OrderItemsPage =
                    s.get(Op::OrderItems, &path, "Amazon order items").await?;
                for it in items.payload.order_items {
                    let Some(sku) = it.seller_sku.filter(|k| !k.is_empty()) else {
                        continue;
                    };
                    if it.quantity_ordered <= 0 {
                        continue;
                    }
                    sales.push(SaleLine {
                        item: sku,
                        quantity: it.quantity_ordered,
                        order: o.amazon_order_id.clone(),
                        line: it.order_item_id,
                        at,
                    });
                }
                if !item_pages.advance(items.payload.next_token) {
                    break;
                }
            }
        }
        if !pages.advance(page.payload.next_token) {
            break;
        }
    }
    Ok(sales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_fba_stock_counts_once() {
        let r = |m: &str, u| (m.to_string(), u);
        // US and CA are one North American pool, DE and FR one European, UK its own.
        let levels = fba_levels(&[
            r("ATVPDKIKX0DER", 50),
            r("A2EUQ1WTGCTBG2", 40),
            r("A1PA6795UKMFR9", 7),
            r("A13V1IB3VIYZZH", 7),
            r("A1F83G8C2ARO7P", 3),
        ]);
        assert_eq!(
            levels,
            vec![
                ("fba:ATVPDKIKX0DER".into(), Some(50)),
                ("fba:A1PA6795UKMFR9".into(), Some(7)),
                ("fba:A1F83G8C2ARO7P".into(), Some(3)),
                ("fba:A2EUQ1WTGCTBG2".into(), None),
                ("fba:A13V1IB3VIYZZH".into(), None),
            ]
        );
        let counted: i64 = levels.iter().filter_map(|(_, u)| *u).sum();
        assert_eq!(counted, 60);
    }

    #[test]
    fn regions_from_marketplaces() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            region_endpoint(&v(&["A1PA6795UKMFR9", "A1F83G8C2ARO7P"])),
            Ok("https://sellingpartnerapi-eu.amazon.com")
        );
        assert!(region_endpoint(&v(&["ATVPDKIKX0DER", "A1PA6795UKMFR9"])).is_err());
        assert!(region_endpoint(&v(&["NOPE"])).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_keeps_to_the_rate_the_answers_announce() {
        let start = Instant::now();
        let mut p = Pacer::new(0.5, 2.0);
        p.take().await;
        p.take().await;
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "the burst is free"
        );
        p.take().await;
        let waited = start.elapsed();
        assert!(
            (Duration::from_millis(1990)..Duration::from_millis(2100)).contains(&waited),
            "{waited:?}"
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-amzn-RateLimit-Limit", "10.0".parse().unwrap());
        p.observe(&h);
        let before = Instant::now();
        p.take().await;
        let waited = before.elapsed();
        assert!(
            (Duration::from_millis(90)..Duration::from_millis(110)).contains(&waited),
            "{waited:?}"
        );
        h.insert("x-amzn-RateLimit-Limit", "nonsense".parse().unwrap());
        p.observe(&h);
        assert_eq!(p.rate, 10.0);
    }

    #[test]
    fn channels() {
        assert_eq!(mfn_location("DEFAULT").as_deref(), Some("mfn"));
        assert_eq!(mfn_location("AMAZON_NA"), None);
        assert_eq!(mfn_location("SELLER_X").as_deref(), Some("mfn:SELLER_X"));
    }
}
