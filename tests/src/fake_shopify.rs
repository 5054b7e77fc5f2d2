//! A fake Shopify GraphQL Admin API for the catalog sync tests and the sync benchmark: a shop of
//! locations, variants with inventory levels, and orders, answered in the published response
//! shapes (connections with `pageInfo { hasNextPage endCursor }` and `nodes`, string GIDs, an
//! InventoryLevel GID whose number is not the location id, `quantities(names:)` as
//! `[{name, quantity}]`, and the `extensions.cost.throttleStatus` block of Shopify's
//! admin-api-client README, `worker/tests/data/shopify_api/`).
//!
//! It recognises stockhook's queries by their root field (`locations`, `location {
//! inventoryLevels }`, `productVariants`, `orders`, `inventoryItem`, `webhookSubscriptions`,
//! `webhookSubscriptionCreate`) and honours `first`/`after`. The test can change the shop
//! between syncs, change the token (then every request gets Shopify's 401), and queue faults
//! answered before the next requests: an HTTP status (500, 429 with `Retry-After`) or a
//! `THROTTLED` GraphQL error. Every request is counted by root field.
//!
//! One thread per connection, HTTP/1.1 keep-alive, as `hooks.rs`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One variant of the shop.
#[derive(Debug, Clone)]
pub struct Variant {
    pub id: u64,
    pub inventory_item: u64,
    pub sku: String,
    pub title: String,
    pub product: u64,
    pub product_title: String,
    pub tracked: bool,
}

/// One order: (order id, created_at RFC 3339, lines of (line id, variant id, quantity)).
pub type Order = (u64, String, Vec<(u64, u64, i64)>);

/// A fault answered instead of the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This HTTP status, with an optional `Retry-After` (seconds).
    Status(u16, Option<u32>),
    /// HTTP 200 with a `THROTTLED` error (the bucket short of the query's cost).
    Throttled,
}

/// The shop's data and the fake's behaviour.
#[derive(Debug, Default)]
pub struct Shop {
    pub token: String,
    pub locations: Vec<(u64, String)>,
    pub variants: Vec<Variant>,
    /// (inventory item, location) -> available.
    pub levels: BTreeMap<(u64, u64), i64>,
    pub orders: Vec<Order>,
    pub faults: VecDeque<Fault>,
    /// Requests by root field (and `unauthorized`, `fault`).
    pub requests: BTreeMap<String, u64>,
    /// Registered webhook subscriptions: (id, topic, uri).
    pub webhooks: Vec<(u64, String, String)>,
    /// The input key each `webhookSubscriptionCreate` named the address with (`uri` or
    /// `callbackUrl`).
    pub create_keys: Vec<String>,
}

impl Shop {
    /// A shop of `n` variants (one product per 3 variants) stocked at every location with
    /// `stock`, and a location `Main warehouse` (id 655441491) plus `extra` more.
    pub fn generated(token: &str, n: usize, extra_locations: usize, stock: i64) -> Shop {
        let mut locations = vec![(655_441_491u64, "Main warehouse".to_string())];
        for i in 0..extra_locations {
            locations.push((700_000_000 + i as u64, format!("Store {}", i + 1)));
        }
        let mut shop = Shop {
            token: token.into(),
            locations,
            ..Shop::default()
        };
        for i in 0..n as u64 {
            let v = Variant {
                id: 39_072_856_000_000 + i,
                inventory_item: 41_160_000_000_000 + i,
                sku: format!("SKU-{i:06}"),
                title: format!("Size {}", i % 3 + 1),
                product: 6_500_000_000_000 + i / 3,
                product_title: format!("Product {}", i / 3),
                tracked: true,
            };
            for (loc, _) in &shop.locations {
                shop.levels.insert((v.inventory_item, *loc), stock);
            }
            shop.variants.push(v);
        }
        shop
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeShopify {
    pub addr: SocketAddr,
    pub shop: Arc<Mutex<Shop>>,
    stop: Arc<AtomicBool>,
}

impl FakeShopify {
    pub fn start(shop: Shop) -> FakeShopify {
        FakeShopify::bind("127.0.0.1:0", shop)
    }

    pub fn bind(addr: &str, shop: Shop) -> FakeShopify {
        let listener = TcpListener::bind(addr).expect("binding the fake Shopify");
        let addr = listener.local_addr().expect("the fake Shopify's address");
        let shop = Arc::new(Mutex::new(shop));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (shop, stop) = (shop.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let shop = shop.clone();
                    std::thread::spawn(move || serve(conn, &shop));
                }
            });
        }
        FakeShopify { addr, shop, stop }
    }

    /// `http://127.0.0.1:<port>`, for `api_base`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Shop) -> T) -> T {
        f(&mut self.shop.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn requests(&self, field: &str) -> u64 {
        self.with(|s| s.requests.get(field).copied().unwrap_or(0))
    }
}

impl Drop for FakeShopify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, shop: &Mutex<Shop>) {
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    loop {
        let Some(req) = crate::request::read_request(&mut r) else {
            return;
        };
        let path = if req.path().ends_with("/graphql.json") {
            req.path()
        } else {
            ""
        };
        let token = req.header("x-shopify-access-token");
        let (status, extra, answer) = answer(shop, path, token, &req.body);
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Error",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{extra}\r\n",
            answer.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn cost(requested: u64) -> Value {
    json!({
        "requestedQueryCost": requested,
        "actualQueryCost": requested,
        "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 1000 - requested.min(1000), "restoreRate": 1000.0}
    })
}

fn cursor(offset: usize) -> String {
    B64.encode(format!("{{\"last_id\":{offset},\"last_value\":{offset}}}"))
}

fn offset_of(after: &Value) -> usize {
    after
        .as_str()
        .and_then(|c| B64.decode(c).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["last_id"].as_u64())
        .map_or(0, |n| n as usize)
}

/// A page of the `total` nodes `all` yields, as a connection; only the page's nodes are made
/// (`node`), so a 50,000-variant shop costs the fake little per page.
fn page<T>(
    total: usize,
    all: impl Iterator<Item = T>,
    vars: &Value,
    node: impl FnMut(T) -> Value,
) -> Value {
    let first = vars["first"].as_u64().unwrap_or(50).min(250) as usize;
    let from = offset_of(&vars["after"]);
    let end = (from + first).min(total);
    let nodes: Vec<Value> = all.skip(from).take(first).map(node).collect();
    json!({
        "pageInfo": {"hasNextPage": end < total, "endCursor": if nodes.is_empty() { Value::Null } else { json!(cursor(end)) }},
        "nodes": nodes,
    })
}

/// [`page`] over a whole list of the shop.
fn page_of<T>(all: &[T], vars: &Value, node: impl FnMut(&T) -> Value) -> Value {
    page(all.len(), all.iter(), vars, node)
}

/// The number of a GID variable (`gid://shopify/Location/655441491` -> 655441491), 0 if none.
fn gid_var(v: &Value) -> u64 {
    v.as_str()
        .and_then(|g| g.rsplit('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn answer(
    shop: &Mutex<Shop>,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = shop.lock().unwrap_or_else(|p| p.into_inner());
    if path.is_empty() {
        return (404, String::new(), "{\"errors\":\"Not Found\"}".into());
    }
    if token != Some(s.token.as_str()) {
        *s.requests.entry("unauthorized".into()).or_default() += 1;
        // Shopify's answer to a wrong or revoked token.
        return (
            401,
            String::new(),
            "{\"errors\":\"[API] Invalid API key or access token (unrecognized login or wrong password)\"}".into(),
        );
    }
    if let Some(f) = s.faults.pop_front() {
        *s.requests.entry("fault".into()).or_default() += 1;
        return match f {
            Fault::Status(code, retry) => (
                code,
                retry.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default(),
                "{\"errors\":\"Internal Server Error\"}".into(),
            ),
            Fault::Throttled => (
                200,
                String::new(),
                json!({
                    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": {"cost": {"requestedQueryCost": 752, "actualQueryCost": null, "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 700, "restoreRate": 1000.0}}}
                })
                .to_string(),
            ),
        };
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let q = req["query"].as_str().unwrap_or("");
    let vars = &req["variables"];
    let (field, data, requested) = if q.contains("webhookSubscriptionCreate") {
        let topic = vars["topic"].as_str().unwrap_or("").to_string();
        let sub = &vars["webhookSubscription"];
        let uri = sub["uri"]
            .as_str()
            .or(sub["callbackUrl"].as_str())
            .unwrap_or("")
            .to_string();
        let key = if sub.get("uri").is_some() {
            "uri"
        } else {
            "callbackUrl"
        };
        s.create_keys.push(key.into());
        let id = 1_000_000 + s.webhooks.len() as u64;
        s.webhooks.push((id, topic.clone(), uri.clone()));
        (
            "webhookSubscriptionCreate",
            json!({"webhookSubscriptionCreate": {"userErrors": [], "webhookSubscription": {"id": format!("gid://shopify/WebhookSubscription/{id}"), "topic": topic, "uri": uri, "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri}}}}),
            10,
        )
    } else if q.contains("webhookSubscriptions(") {
        let all = page_of(
            &s.webhooks,
            vars,
            |(id, topic, uri)| json!({"id": format!("gid://shopify/WebhookSubscription/{id}"), "topic": topic, "uri": uri, "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri}}),
        );
        (
            "webhookSubscriptions",
            json!({"webhookSubscriptions": all}),
            12,
        )
    } else if q.contains("inventoryItem(") {
        let id = gid_var(&vars["id"]);
        let node = s.variants.iter().find(|v| v.inventory_item == id).map(|v| {
            let levels: Vec<Value> = s
                .locations
                .iter()
                .filter_map(|(l, name)| s.levels.get(&(id, *l)).map(|q| json!({"location": {"id": format!("gid://shopify/Location/{l}"), "name": name}, "quantities": [{"name": "available", "quantity": q}]})))
                .collect();
            json!({"id": format!("gid://shopify/InventoryItem/{id}"), "tracked": v.tracked, "sku": v.sku, "variant": {"id": format!("gid://shopify/ProductVariant/{}", v.id), "title": v.title, "product": {"id": format!("gid://shopify/Product/{}", v.product), "title": v.product_title}}, "inventoryLevels": {"nodes": levels}})
        });
        ("inventoryItem", json!({"inventoryItem": node}), 5)
    } else if q.contains("productVariants(") {
        let all = page_of(&s.variants, vars, |v| {
            json!({
                "id": format!("gid://shopify/ProductVariant/{}", v.id),
                "title": v.title,
                "sku": v.sku,
                "product": {"id": format!("gid://shopify/Product/{}", v.product), "title": v.product_title},
                "inventoryItem": {"id": format!("gid://shopify/InventoryItem/{}", v.inventory_item), "tracked": v.tracked},
            })
        });
        ("productVariants", json!({"productVariants": all}), 502)
    } else if q.contains("inventoryLevels(") {
        let loc = gid_var(&vars["location"]);
        let here = || s.levels.iter().filter(|((_, l), _)| *l == loc);
        let all = page(
            here().count(),
            here().enumerate(),
            vars,
            |(n, ((item, _), q))| {
                json!({
                    // The level's own number is not the location id (as in Shopify's fixtures).
                    "id": format!("gid://shopify/InventoryLevel/{}?inventory_item_id={item}", 548_380_009 + n as u64),
                    "item": {"id": format!("gid://shopify/InventoryItem/{item}")},
                    "quantities": [{"name": "available", "quantity": q}],
                })
            },
        );
        (
            "inventoryLevels",
            json!({"location": {"inventoryLevels": all}}),
            502,
        )
    } else if q.contains("locations(") {
        let all = page_of(
            &s.locations,
            vars,
            |(id, name)| json!({"id": format!("gid://shopify/Location/{id}"), "name": name}),
        );
        ("locations", json!({"locations": all}), 252)
    } else if q.contains("orders(") {
        let all = page_of(&s.orders, vars, |(id, at, lines)| {
            json!({
                "id": format!("gid://shopify/Order/{id}"),
                "createdAt": at,
                "lineItems": {"nodes": lines.iter().map(|(l, v, q)| json!({"id": format!("gid://shopify/LineItem/{l}"), "quantity": q, "sku": Value::Null, "variant": {"id": format!("gid://shopify/ProductVariant/{v}")}})).collect::<Vec<_>>()},
            })
        });
        ("orders", json!({"orders": all}), 777)
    } else {
        return (
            200,
            String::new(),
            json!({"errors": [{"message": "the fake Shopify does not know this query", "extensions": {"code": "UNKNOWN"}}]}).to_string(),
        );
    };
    *s.requests.entry(field.into()).or_default() += 1;
    (
        200,
        String::new(),
        json!({"data": data, "extensions": {"cost": cost(requested)}}).to_string(),
    )
}
