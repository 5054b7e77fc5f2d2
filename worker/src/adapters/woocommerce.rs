//! WooCommerce adapter: reads the webhook payloads named by the `X-WC-Webhook-Topic` header. A
//! WooCommerce webhook body is the REST API v3 resource (`GET /wp-json/wc/v3/products/<id>`,
//! `.../orders/<id>`), signed base64 HMAC-SHA256 in `X-WC-Webhook-Signature` (the receiver's
//! `hmac-sha256` scheme).
//!
//! Contract, per topic:
//! * `product.created`, `product.updated`: a `CatalogEntry` (item = the product `id`, sku, title =
//!   `name`), and an `InventoryLevel` at location `all` of `stock_quantity` **only when
//!   `manage_stock` is `true`**: a product whose stock WooCommerce does not manage carries a
//!   meaningless (often null or stale) `stock_quantity`, so it gives no level. A variable product
//!   is tracked through its variations: WooCommerce fires the same topics for a variation (its
//!   payload has `type: "variation"` and its `parent_id`, or is the variations endpoint's shape
//!   with `attributes[].option`), each variation its own item keyed by its own id, titled by its
//!   name ("Ship Your Idea - Black"), else by its options ("Black / L"). A variation whose
//!   `manage_stock` is `"parent"` takes its stock from the parent product, which reports it: no
//!   level of its own.
//! * `order.created`: a `Sale` per line item (item = `variation_id` when it is not 0, else
//!   `product_id`; a line whose product was deleted, `product_id: 0`, is kept apart by its SKU,
//!   `sku:<SKU>`, else its name, `title:<name>`, with a `CatalogEntry`), order = `id`, line = the
//!   line item `id`. An order created `cancelled`, `failed`, `refunded`, `trash` or as a
//!   `checkout-draft` sold nothing. Only `order.created` counts (`order.updated` describes the
//!   same sale again).
//! * the ping WooCommerce posts when a webhook is saved (an unsigned form body `webhook_id=<n>`,
//!   no topic): acknowledged and ignored, never dead-lettered. (The receiver answers it without
//!   storing it; this is for a source whose scheme lets it through.)
//! * any other topic (`product.deleted`, `order.updated`, `customer.*`, `coupon.*`, `action.*`):
//!   ignored.
//!
//! Event time: `date_modified_gmt` (products), `date_created_gmt` (orders): UTC without an
//! offset, as WooCommerce writes them; else the time the receiver accepted the event.
//!
//! Must never: read `stock_quantity` of a product whose stock is not managed; merge two order
//! lines of different SKUs into one item.

use super::{first_time, id_text, int, parse_json, req, req_array, text};
use crate::facts::{Fact, NormalizeError, Normalized};
use serde_json::Value;
use stockhook_shared::envelope::Envelope;

/// Normalizes a WooCommerce webhook.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    if is_ping(&env.body) {
        return Ok(super::ignored("ping"));
    }
    let topic = env
        .header("x-wc-webhook-topic")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            NormalizeError::NoTopic(
                "no X-WC-Webhook-Topic header, and the body is not WooCommerce's ping".into(),
            )
        })?;
    let facts = match topic.to_ascii_lowercase().as_str() {
        "product.created" | "product.updated" => product(env, topic, &parse_json(env)?)?,
        "order.created" => order(env, topic, &parse_json(env)?)?,
        _ => return Ok(super::ignored(topic)),
    };
    Ok(super::read(topic, facts))
}

/// WooCommerce's ping on saving a webhook: the form body `webhook_id=<digits>`.
fn is_ping(body: &[u8]) -> bool {
    body.trim_ascii()
        .strip_prefix(b"webhook_id=")
        .is_some_and(|rest| !rest.is_empty() && rest.iter().all(u8::is_ascii_digit))
}

/// `manage_stock`: `true`, `false`, or (a variation) `"parent"`; absent is not managed.
#[derive(Debug, PartialEq, Eq)]
enum Managed {
    Yes,
    No,
    ByParent,
}

fn managed(v: Option<&Value>, topic: &str) -> Result<Managed, NormalizeError> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(Managed::No),
        Some(Value::Bool(true)) => Ok(Managed::Yes),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("parent") => Ok(Managed::ByParent),
        Some(other) => Err(super::bad(
            topic,
            "manage_stock",
            format!(
                "must be true, false or \"parent\", found {}",
                super::kind(other)
            ),
        )),
    }
}

/// A variation's option values (`attributes[].option`), "Black / L".
fn options(body: &Value) -> Option<String> {
    let opts: Vec<&str> = body
        .get("attributes")?
        .as_array()?
        .iter()
        .filter_map(|a| a.get("option").and_then(Value::as_str))
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    (!opts.is_empty()).then(|| opts.join(" / "))
}

fn product(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let item = req(id_text, body.get("id"), topic, "id")?;
    let sku = text(body.get("sku"), topic, "sku")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = text(body.get("name"), topic, "name")?;
    let is_variation = body.get("type").and_then(Value::as_str) == Some("variation")
        || id_text(body.get("parent_id"), topic, "parent_id")?.is_some_and(|p| p != "0");
    let title = if is_variation || name.is_none() {
        // The products endpoint names a variation "Product - Black"; the variations endpoint
        // gives only its options.
        name.or_else(|| options(body))
    } else {
        name
    };
    let at = first_time(
        env,
        &[body.get("date_modified_gmt"), body.get("date_created_gmt")],
    );
    let mut facts = vec![Fact::CatalogEntry {
        item: item.clone(),
        aliases: Vec::new(),
        sku,
        title,
        at,
    }];
    if managed(body.get("manage_stock"), topic)? == Managed::Yes {
        if let Some(available) = int(body.get("stock_quantity"), topic, "stock_quantity")? {
            facts.push(super::total_level(item, available, at));
        }
    }
    Ok(facts)
}

/// Order statuses in which an order, as created, sold nothing.
const NOT_SOLD: &[&str] = &["cancelled", "failed", "refunded", "trash", "checkout-draft"];

fn order(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let order = req(id_text, body.get("id"), topic, "id")?;
    let status = text(body.get("status"), topic, "status")?;
    if status
        .as_deref()
        .is_some_and(|s| NOT_SOLD.iter().any(|n| n.eq_ignore_ascii_case(s)))
    {
        return Ok(Vec::new());
    }
    let lines = req_array(body.get("line_items"), topic, "line_items")?;
    let at = first_time(
        env,
        &[body.get("date_created_gmt"), body.get("date_modified_gmt")],
    );
    let mut facts = Vec::with_capacity(lines.len());
    for (i, li) in lines.iter().enumerate() {
        let f = |name: &str| format!("line_items[{i}].{name}");
        let line = req(id_text, li.get("id"), topic, &f("id"))?;
        let quantity = req(int, li.get("quantity"), topic, &f("quantity"))?;
        if quantity == 0 {
            continue;
        }
        let nonzero = |v: Option<String>| v.filter(|id| id != "0");
        let variation = nonzero(id_text(li.get("variation_id"), topic, &f("variation_id"))?);
        let product = nonzero(id_text(li.get("product_id"), topic, &f("product_id"))?);
        let item = match variation.or(product) {
            Some(id) => id,
            None => {
                // The product was deleted since: keep the line apart by what it still says.
                let sku = text(li.get("sku"), topic, &f("sku"))?
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                let name = text(li.get("name"), topic, &f("name"))?;
                let key = match (&sku, &name) {
                    (Some(s), _) => format!("sku:{s}"),
                    (None, Some(n)) => format!("title:{}", n.trim()),
                    (None, None) => continue,
                };
                facts.push(Fact::CatalogEntry {
                    item: key.clone(),
                    aliases: Vec::new(),
                    sku,
                    title: name,
                    at,
                });
                key
            }
        };
        facts.push(super::sale(item, quantity, &order, line, at));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::{data, entry, env, level, RECEIVED};
    use serde_json::json;
    use stockhook_shared::config::Platform;

    fn run(topic: &str, body: impl Into<Vec<u8>>) -> Result<Normalized, NormalizeError> {
        normalize(&env(
            Platform::Woocommerce,
            &[("x-wc-webhook-topic", topic)],
            body,
        ))
    }

    fn facts(topic: &str, body: impl Into<Vec<u8>>) -> Vec<Fact> {
        let n = run(topic, body).unwrap();
        assert!(!n.ignored, "{n:?}");
        n.facts
    }

    fn published(name: &str) -> Value {
        serde_json::from_slice(&data(&format!("woocommerce/{name}"))).unwrap()
    }

    /// The docs' simple product, as a store that manages its stock sends it (see the README:
    /// `manage_stock` and `stock_quantity` set, nothing else changed).
    fn managed_simple(quantity: i64) -> Vec<u8> {
        let mut p = published("product_794_simple_docs.json");
        p["manage_stock"] = json!(true);
        p["stock_quantity"] = json!(quantity);
        serde_json::to_vec(&p).unwrap()
    }

    const AT_794: i64 = 1_490_299_274_000; // 2017-03-23T20:01:14 (GMT)

    #[test]
    fn published_products_without_managed_stock_give_no_level() {
        // Both of the docs' products have manage_stock false and stock_quantity null.
        assert_eq!(
            facts(
                "product.updated",
                data("woocommerce/product_794_simple_docs.json")
            ),
            vec![entry("794", &[], None, Some("Premium Quality"), AT_794)]
        );
        let f = facts(
            "product.created",
            data("woocommerce/product_799_variable_docs.json"),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        // An unmanaged product's quantity is never read, whatever it says.
        let mut p = published("product_794_simple_docs.json");
        p["stock_quantity"] = json!(0);
        let f = facts("product.updated", serde_json::to_vec(&p).unwrap());
        assert!(
            f.iter().all(|f| !matches!(f, Fact::InventoryLevel { .. })),
            "{f:?}"
        );
    }

    #[test]
    fn managed_stock_is_a_level() {
        assert_eq!(
            facts("product.updated", managed_simple(2))[1],
            level("794", "all", Some(2), AT_794)
        );
    }

    #[test]
    fn variations_are_tracked_each_on_its_own() {
        // The docs' variation (variations endpoint shape: options, no name), its stock managed.
        let mut v = published("variation_733_docs.json");
        v["manage_stock"] = json!(true);
        v["stock_quantity"] = json!(4);
        v["sku"] = json!("SYI-GREEN");
        let at = 1_490_241_191_000; // 2017-03-23T03:53:11
        assert_eq!(
            facts("product.updated", serde_json::to_vec(&v).unwrap()),
            vec![
                entry("733", &[], Some("SYI-GREEN"), Some("Green"), at),
                level("733", "all", Some(4), at),
            ]
        );
        // The products endpoint's shape of a variation whose parent manages the stock.
        let body = json!({"id": 732, "name": "Ship Your Idea - Black", "type": "variation",
            "parent_id": 799, "sku": "", "manage_stock": "parent", "stock_quantity": 9});
        assert_eq!(
            facts("product.updated", serde_json::to_vec(&body).unwrap()),
            vec![entry(
                "732",
                &[],
                None,
                Some("Ship Your Idea - Black"),
                RECEIVED
            )]
        );
    }

    #[test]
    fn published_order_lines_are_sales_of_the_variation_else_the_product() {
        let at = 1_490_210_882_000; // 2017-03-22T19:28:02 (GMT)
        let sale = |item: &str, quantity: i64, line: &str| Fact::Sale {
            item: item.into(),
            quantity,
            order: "727".into(),
            line: line.into(),
            at,
        };
        assert_eq!(
            facts("order.created", data("woocommerce/order_727_docs.json")),
            vec![sale("93", 2, "315"), sale("23", 1, "316")]
        );
    }

    #[test]
    fn order_of_a_deleted_product_and_unsold_statuses() {
        let mut o = published("order_727_docs.json");
        o["line_items"][0]["product_id"] = json!(0);
        o["line_items"][0]["sku"] = json!("WOO-SINGLE-1");
        let f = facts("order.created", serde_json::to_vec(&o).unwrap());
        assert!(
            matches!(&f[0], Fact::CatalogEntry { item, sku: Some(s), .. } if item == "sku:WOO-SINGLE-1" && s == "WOO-SINGLE-1"),
            "{f:?}"
        );
        assert!(matches!(&f[1], Fact::Sale { item, .. } if item == "sku:WOO-SINGLE-1"));
        for status in ["cancelled", "failed", "checkout-draft"] {
            o["status"] = json!(status);
            assert_eq!(
                facts("order.created", serde_json::to_vec(&o).unwrap()),
                vec![],
                "{status}"
            );
        }
    }

    #[test]
    fn the_ping_is_ignored_not_dead_lettered() {
        for headers in [
            vec![],
            vec![("x-wc-webhook-topic", "action.woocommerce_ping")],
        ] {
            let n = normalize(&env(Platform::Woocommerce, &headers, "webhook_id=17")).unwrap();
            assert_eq!(
                n,
                Normalized {
                    topic: "ping".into(),
                    facts: vec![],
                    ignored: true
                }
            );
        }
    }

    #[test]
    fn other_topics_ignored_and_errors_named() {
        for topic in ["product.deleted", "order.updated", "customer.created"] {
            assert!(run(topic, "{}").unwrap().ignored, "{topic}");
        }
        assert!(matches!(
            normalize(&env(Platform::Woocommerce, &[], "{}")),
            Err(NormalizeError::NoTopic(_))
        ));
        assert!(matches!(
            run("product.updated", "webhook_id=x"),
            Err(NormalizeError::NotJson(_))
        ));
        assert_eq!(
            run("product.updated", r#"{"name": "x"}"#),
            Err(super::super::missing("product.updated", "id"))
        );
        assert_eq!(
            run("order.created", r#"{"id": 1}"#),
            Err(super::super::missing("order.created", "line_items"))
        );
        assert!(matches!(
            run("product.updated", r#"{"id": 1, "manage_stock": 1}"#),
            Err(NormalizeError::BadField { .. })
        ));
    }
}
