//! Shopify's catalog through the GraphQL Admin API: locations with their names, every product
//! variant (title, SKU, inventory item), the `available` quantity of every inventory level per
//! location, and the order lines of the last `sales_history_days`, as one [`CatalogBatch`].
//!
//! Item keys are the webhook adapter's ([`crate::adapters::shopify`]): the inventory item id is
//! the item, `variant:<variant id>` its alias, sales name `variant:<id>`; so a webhook and a sync
//! land on the same record. GraphQL ids are string GIDs (`gid://shopify/InventoryItem/30322695`):
//! only their last path segment is kept. An InventoryLevel's own GID carries a number that is
//! not the location id, so a level's location is always the location it was listed under.
//!
//! Paging: `pageInfo { hasNextPage endCursor }`, cursors passed back untouched. Throttling: every
//! answer's `extensions.cost.throttleStatus` is read and, when the bucket holds less than the
//! last query cost, the client waits for it to refill at `restoreRate`; a `THROTTLED` error is
//! waited out the same way and the same page asked again. HTTP 429/5xx and network errors are
//! retried by [`ApiClient::send_retrying`] (Retry-After honoured); 401/403 is
//! [`SyncError::Unauthorized`].
//!
//! Never: logs or returns the access token, and never logs product titles, SKUs or order data.

use super::http::{ApiClient, SyncError};
use crate::catalog::{CatalogBatch, CatalogItem, Location, SaleLine};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use stockhook_shared::config::ShopifyApiConfig;

/// A complete Shopify batch updates the levels it lists and leaves an item's other levels as
/// they are ([`crate::catalog::CatalogBatch::levels_are_all_stock`]).
pub const LEVELS_ARE_ALL_STOCK: bool = false;

/// Nodes per page of the big connections (Shopify's maximum `first`).
pub const PAGE: usize = 250;
/// Orders per page (each brings up to [`ORDER_LINES`] lines; the query stays under the
/// 1,000-point single-query limit).
pub const ORDERS_PAGE: usize = 25;
/// Line items read per order.
pub const ORDER_LINES: usize = 30;
/// How often a `THROTTLED` answer is waited out before the sync gives up.
const MAX_THROTTLED: u32 = 20;
/// The first wait before retrying a transient failure.
const RETRY_INITIAL: Duration = Duration::from_millis(500);

const LOCATIONS: &str = "query Locations($first: Int!, $after: String) {
  locations(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id name }
  }
}";

const LEVELS: &str = "query Levels($location: ID!, $first: Int!, $after: String) {
  location(id: $location) {
    inventoryLevels(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id item { id } quantities(names: [\"available\"]) { name quantity } }
    }
  }
}";

const VARIANTS: &str = "query Variants($first: Int!, $after: String) {
  productVariants(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id title sku product { id title } inventoryItem { id tracked } }
  }
}";

const ORDERS: &str = "query Orders($first: Int!, $after: String, $query: String, $lines: Int!) {
  orders(first: $first, after: $after, query: $query, sortKey: CREATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes { id createdAt lineItems(first: $lines) { nodes { id quantity sku variant { id } } } }
  }
}";

const ITEM: &str = "query Item($id: ID!) {
  inventoryItem(id: $id) {
    id tracked sku
    variant { id title product { id title } }
    inventoryLevels(first: 50) {
      nodes { location { id name } quantities(names: [\"available\"]) { name quantity } }
    }
  }
}";

/// The last segment of a GID (`gid://shopify/InventoryItem/30322695` -> `30322695`), without
/// any query (`...InventoryLevel/548380009?inventory_item_id=1` -> `548380009`).
pub fn gid_number(gid: &str) -> &str {
    let path = gid.split('?').next().unwrap_or(gid);
    path.rsplit('/').next().unwrap_or(path)
}

/// One GraphQL endpoint with its token and what it knows of the cost bucket.
pub struct Graphql<'a> {
    api: &'a ApiClient,
    url: String,
    token: String,
    /// Units of the bucket left after the last answer, and its refill per second.
    bucket: Option<(f64, f64)>,
    /// The cost of the last query, to wait for before the next one.
    last_cost: f64,
    /// Queries sent (pages), for the sync report.
    pub requests: u64,
}

impl<'a> Graphql<'a> {
    pub fn new(cfg: &ShopifyApiConfig, api: &'a ApiClient) -> Result<Graphql<'a>, SyncError> {
        let token = cfg
            .access_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .ok_or_else(|| {
                SyncError::Config(format!(
                    "no Shopify access token for {}: set access_token_env, access_token_file or access_token under [sources.shopify_sync]",
                    cfg.shop_domain
                ))
            })?;
        Ok(Graphql {
            api,
            url: cfg.graphql_url(),
            token,
            bucket: None,
            last_cost: 0.0,
            requests: 0,
        })
    }

    /// Sends one query; waits out the cost bucket before and `THROTTLED` after. Returns `data`.
    pub async fn query(
        &mut self,
        what: &str,
        query: &str,
        vars: Value,
    ) -> Result<Value, SyncError> {
        let body = Bytes::from(
            serde_json::to_vec(&json!({ "query": query, "variables": vars }))
                .map_err(|e| SyncError::Config(format!("encoding a query: {e}")))?,
        );
        let mut throttled = 0;
        loop {
            if let Some((available, rate)) = self.bucket {
                if available < self.last_cost && rate > 0.0 {
                    let wait = ((self.last_cost - available) / rate).clamp(0.0, 60.0);
                    tracing::debug!(
                        what,
                        wait_ms = (wait * 1000.0) as u64,
                        "waiting for Shopify's cost bucket"
                    );
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                }
            }
            let make = || {
                http::Request::post(&self.url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::ACCEPT, "application/json")
                    .header("X-Shopify-Access-Token", &self.token)
                    .body(Full::new(body.clone()))
                    .map_err(|e| SyncError::Config(format!("building the request: {e}")))
            };
            self.requests += 1;
            let resp = self.api.send_retrying(make, what, RETRY_INITIAL).await?;
            let v: Value = resp.json(what)?;
            self.read_cost(&v);
            match graphql_errors(&v) {
                None => {}
                Some(Problem::Throttled) if throttled < MAX_THROTTLED => {
                    throttled += 1;
                    // The bucket is short of the query's cost: wait at least one refill second.
                    let (available, rate) = self.bucket.unwrap_or((0.0, 50.0));
                    let need = self.last_cost.max(1.0);
                    let wait = ((need - available) / rate.max(1.0)).clamp(0.05, 60.0);
                    tracing::info!(
                        what,
                        wait_ms = (wait * 1000.0) as u64,
                        "Shopify answered THROTTLED; waiting"
                    );
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    continue;
                }
                Some(Problem::Throttled) => {
                    return Err(SyncError::Transient {
                        what: what.into(),
                        reason: format!("still THROTTLED after {MAX_THROTTLED} waits"),
                        retry_after: None,
                    })
                }
                Some(Problem::AccessDenied(m)) => {
                    return Err(SyncError::Refused {
                        what: what.into(),
                        status: 200,
                        body: format!("access denied (check the app's scopes): {m}"),
                    })
                }
                Some(Problem::Other(m)) => {
                    return Err(SyncError::Protocol {
                        what: what.into(),
                        problem: m,
                    })
                }
            }
            return v.get("data").cloned().ok_or_else(|| SyncError::Protocol {
                what: what.into(),
                problem: "no `data` in the answer".into(),
            });
        }
    }

    fn read_cost(&mut self, v: &Value) {
        let cost = &v["extensions"]["cost"];
        let requested = cost["requestedQueryCost"].as_f64();
        let actual = cost["actualQueryCost"].as_f64();
        if let Some(c) = requested.or(actual) {
            self.last_cost = c;
        }
        let t = &cost["throttleStatus"];
        if let (Some(a), Some(r)) = (t["currentlyAvailable"].as_f64(), t["restoreRate"].as_f64()) {
            self.bucket = Some((a, r));
        }
    }

    /// Every node of a connection at `path` (keys from `data`), page after page.
    pub async fn each_node(
        &mut self,
        what: &str,
        query: &str,
        vars: Value,
        path: &[&str],
        mut on_node: impl FnMut(&Value) -> Result<(), SyncError>,
    ) -> Result<(), SyncError> {
        let mut after: Option<String> = None;
        loop {
            let mut v = vars.clone();
            v["after"] = after
                .as_ref()
                .map_or(Value::Null, |a| Value::String(a.clone()));
            let data = self.query(what, query, v).await?;
            let mut conn = &data;
            for k in path {
                conn = &conn[*k];
            }
            let nodes = conn["nodes"]
                .as_array()
                .ok_or_else(|| SyncError::Protocol {
                    what: what.into(),
                    problem: format!("no {}.nodes list", path.join(".")),
                })?;
            for n in nodes {
                on_node(n)?;
            }
            let info = &conn["pageInfo"];
            match (info["hasNextPage"].as_bool(), info["endCursor"].as_str()) {
                (Some(true), Some(c)) => {
                    if after.as_deref() == Some(c) {
                        return Err(SyncError::Protocol {
                            what: what.into(),
                            problem: "the next page has the same cursor as this one".into(),
                        });
                    }
                    after = Some(c.to_string());
                }
                (Some(true), None) => {
                    return Err(SyncError::Protocol {
                        what: what.into(),
                        problem: "hasNextPage without an endCursor".into(),
                    })
                }
                _ => return Ok(()),
            }
        }
    }
}

enum Problem {
    Throttled,
    AccessDenied(String),
    Other(String),
}

/// A GraphQL `errors` list (answered with HTTP 200), sorted.
fn graphql_errors(v: &Value) -> Option<Problem> {
    let errors = v.get("errors")?;
    let list: Vec<&Value> = match errors {
        Value::Array(a) if a.is_empty() => return None,
        Value::Array(a) => a.iter().collect(),
        Value::Null => return None,
        other => vec![other],
    };
    let code = |e: &Value| e["extensions"]["code"].as_str().unwrap_or("").to_string();
    let message = |e: &Value| {
        e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
            .chars()
            .take(300)
            .collect::<String>()
    };
    if list.iter().any(|e| code(e) == "THROTTLED") {
        return Some(Problem::Throttled);
    }
    if let Some(e) = list.iter().find(|e| code(e) == "ACCESS_DENIED") {
        return Some(Problem::AccessDenied(message(e)));
    }
    Some(Problem::Other(
        list.iter()
            .map(|e| message(e))
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

fn need_str<'v>(n: &'v Value, key: &str, what: &str) -> Result<&'v str, SyncError> {
    n[key].as_str().ok_or_else(|| SyncError::Protocol {
        what: what.into(),
        problem: format!("a node without `{key}`"),
    })
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn available_of(level: &Value) -> Option<i64> {
    level["quantities"]
        .as_array()?
        .iter()
        .find(|q| q["name"].as_str() == Some("available"))
        .and_then(|q| q["quantity"].as_i64())
}

/// RFC 3339 of a Unix ms time, for Shopify's search syntax.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The whole catalog of the shop at `cfg`, as of `now_ms` (when the fetch began). `source` is
/// left empty for the caller.
pub async fn fetch(
    cfg: &ShopifyApiConfig,
    api: &ApiClient,
    now_ms: i64,
) -> Result<CatalogBatch, SyncError> {
    let mut gql = Graphql::new(cfg, api)?;
    let mut locations = Vec::new();
    gql.each_node(
        "Shopify locations page",
        LOCATIONS,
        json!({ "first": PAGE }),
        &["locations"],
        |n| {
            locations.push(Location {
                id: gid_number(need_str(n, "id", "Shopify locations page")?).to_string(),
                name: n["name"].as_str().unwrap_or_default().to_string(),
            });
            Ok(())
        },
    )
    .await?;

    // Inventory item id -> its levels, location by location.
    let mut levels: HashMap<String, Vec<(String, Option<i64>)>> = HashMap::new();
    for loc in &locations {
        let gid = format!("gid://shopify/Location/{}", loc.id);
        gql.each_node(
            "Shopify inventory levels page",
            LEVELS,
            json!({ "location": gid, "first": PAGE }),
            &["location", "inventoryLevels"],
            |n| {
                let item = n["item"]["id"]
                    .as_str()
                    .ok_or_else(|| SyncError::Protocol {
                        what: "Shopify inventory levels page".into(),
                        problem: "a level without item.id".into(),
                    })?;
                levels
                    .entry(gid_number(item).to_string())
                    .or_default()
                    .push((loc.id.clone(), available_of(n)));
                Ok(())
            },
        )
        .await?;
    }

    let mut items = Vec::new();
    gql.each_node(
        "Shopify variants page",
        VARIANTS,
        json!({ "first": PAGE }),
        &["productVariants"],
        |n| {
            let what = "Shopify variants page";
            let variant = gid_number(need_str(n, "id", what)?).to_string();
            let alias = format!("variant:{variant}");
            let inv = n["inventoryItem"]["id"].as_str().map(gid_number);
            let tracked = n["inventoryItem"]["tracked"].as_bool().unwrap_or(true);
            let (item, aliases) = match inv {
                Some(i) => (i.to_string(), vec![alias]),
                None => (alias, vec![]),
            };
            let mut lv = levels.remove(&item).unwrap_or_default();
            if !tracked {
                // Shopify does not count it: catalog only, never a 0.
                for l in &mut lv {
                    l.1 = None;
                }
            }
            lv.sort();
            items.push(CatalogItem {
                sku: opt_text(&n["sku"]),
                title: crate::adapters::shopify::variant_title(
                    n["product"]["title"].as_str(),
                    n["title"].as_str(),
                ),
                product: n["product"]["id"]
                    .as_str()
                    .map(|p| gid_number(p).to_string()),
                levels: lv,
                item,
                aliases,
            });
            Ok(())
        },
    )
    .await?;

    let since = now_ms - i64::from(cfg.sales_history_days) * 86_400_000;
    let mut sales = Vec::new();
    gql.each_node(
        "Shopify orders page",
        ORDERS,
        json!({
            "first": ORDERS_PAGE,
            "lines": ORDER_LINES,
            "query": format!("created_at:>='{}'", rfc3339(since)),
        }),
        &["orders"],
        |n| {
            let what = "Shopify orders page";
            let order = gid_number(need_str(n, "id", what)?).to_string();
            let at = n["createdAt"]
                .as_str()
                .and_then(crate::adapters::parse_time)
                .unwrap_or(now_ms);
            for li in n["lineItems"]["nodes"].as_array().into_iter().flatten() {
                let quantity = li["quantity"].as_i64().unwrap_or(0);
                let key = match (li["variant"]["id"].as_str(), opt_text(&li["sku"])) {
                    (Some(v), _) => format!("variant:{}", gid_number(v)),
                    (None, Some(sku)) => format!("sku:{sku}"),
                    (None, None) => continue,
                };
                if quantity == 0 {
                    continue;
                }
                sales.push(SaleLine {
                    item: key,
                    quantity,
                    order: order.clone(),
                    line: li["id"]
                        .as_str()
                        .map(gid_number)
                        .unwrap_or_default()
                        .to_string(),
                    at,
                });
            }
            Ok(())
        },
    )
    .await?;
    tracing::debug!(
        shop = %cfg.shop_domain,
        items = items.len(),
        locations = locations.len(),
        sales = sales.len(),
        requests = gql.requests,
        "Shopify catalog fetched"
    );
    Ok(CatalogBatch {
        source: String::new(),
        platform: "shopify".into(),
        taken_at: now_ms,
        items,
        locations,
        sales,
        complete: true,
        levels_are_all_stock: LEVELS_ARE_ALL_STOCK,
    })
}

/// One inventory item (an item no webhook or sync has named yet), as a one-item batch that is
/// not complete. `Ok(None)`: Shopify does not know it.
pub async fn lookup(
    cfg: &ShopifyApiConfig,
    api: &ApiClient,
    inventory_item: &str,
    now_ms: i64,
) -> Result<Option<CatalogBatch>, SyncError> {
    let mut gql = Graphql::new(cfg, api)?;
    let what = "Shopify inventory item";
    let data = gql
        .query(
            what,
            ITEM,
            json!({ "id": format!("gid://shopify/InventoryItem/{inventory_item}") }),
        )
        .await?;
    let n = &data["inventoryItem"];
    if n.is_null() {
        return Ok(None);
    }
    let tracked = n["tracked"].as_bool().unwrap_or(true);
    let mut locations = Vec::new();
    let mut levels = Vec::new();
    for l in n["inventoryLevels"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(loc) = l["location"]["id"].as_str().map(gid_number) else {
            continue;
        };
        locations.push(Location {
            id: loc.to_string(),
            name: l["location"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
        levels.push((loc.to_string(), available_of(l).filter(|_| tracked)));
    }
    let aliases = n["variant"]["id"]
        .as_str()
        .map(|v| vec![format!("variant:{}", gid_number(v))])
        .unwrap_or_default();
    Ok(Some(CatalogBatch {
        source: String::new(),
        platform: "shopify".into(),
        taken_at: now_ms,
        items: vec![CatalogItem {
            item: inventory_item.to_string(),
            aliases,
            sku: opt_text(&n["sku"]),
            title: crate::adapters::shopify::variant_title(
                n["variant"]["product"]["title"].as_str(),
                n["variant"]["title"].as_str(),
            ),
            product: n["variant"]["product"]["id"]
                .as_str()
                .map(|p| gid_number(p).to_string()),
            levels,
        }],
        locations,
        sales: vec![],
        complete: false,
        levels_are_all_stock: LEVELS_ARE_ALL_STOCK,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_keep_their_number_only() {
        assert_eq!(
            gid_number("gid://shopify/InventoryItem/30322695"),
            "30322695"
        );
        assert_eq!(
            gid_number("gid://shopify/InventoryLevel/548380009?inventory_item_id=808950810"),
            "548380009"
        );
        assert_eq!(gid_number("42"), "42");
    }

    #[test]
    fn published_cost_extension_is_read() {
        // Shopify/shopify-app-js admin-api-client README (worker/tests/data/shopify_api/).
        let v: Value = serde_json::from_str(include_str!(
            "../../tests/data/shopify_api/graphql_response_with_extensions_cost__admin-api-client_README.json"
        ))
        .unwrap();
        let api = ApiClient::new().unwrap();
        let cfg: ShopifyApiConfig =
            toml::from_str("shop_domain = \"a.myshopify.com\"\naccess_token = \"t\"").unwrap();
        let mut g = Graphql::new(&cfg, &api).unwrap();
        g.read_cost(&v);
        assert_eq!(g.bucket, Some((999.0, 50.0)));
        assert_eq!(g.last_cost, 1.0);
        assert!(graphql_errors(&v).is_none());
    }

    #[test]
    fn throttled_and_denied_errors_are_told_apart() {
        let t = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]});
        assert!(matches!(graphql_errors(&t), Some(Problem::Throttled)));
        let d = json!({"errors": [{"message": "Access denied for orders field.", "extensions": {"code": "ACCESS_DENIED"}}]});
        assert!(matches!(graphql_errors(&d), Some(Problem::AccessDenied(_))));
        assert!(graphql_errors(&json!({"errors": []})).is_none());
    }
}
