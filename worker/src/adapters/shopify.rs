//! Shopify adapter: reads the REST webhook payloads named by the `X-Shopify-Topic` header
//! (`shopify-topic` for the newer unprefixed deliveries) into facts.
//!
//! Contract, per topic:
//! * `products/create|update`: for every variant (not only the first), a `CatalogEntry`
//!   (item = `inventory_item_id`, alias `variant:<variant id>`, sku, title "product - variant"
//!   unless the variant is "Default Title"); and, when `inventory_quantity` is non-null, an
//!   `InventoryLevel` at location `"all"`, since a product payload gives the total over all
//!   locations. A variant without `inventory_item_id` is item `variant:<id>` (no alias then: it
//!   would name itself). A variant whose `inventory_management` key is present and null is
//!   untracked: no level. Newer API versions no longer send that key; its absence means "emit".
//! * `inventory_items/create|update`: a `CatalogEntry` (item = `id`, sku).
//! * `inventory_levels/update|connect`: an `InventoryLevel` (item = `inventory_item_id`, location =
//!   `location_id`, `available: null` stays `None`, i.e. untracked, not zero).
//! * `orders/create`: a `Sale` per line item. The item is `variant:<variant_id>`; a line with
//!   `variant_id: null` (a custom item, or a variant deleted since) is kept apart by its SKU
//!   (`sku:<SKU>`), else by its title (`title:<name>`), with a `CatalogEntry` carrying that SKU
//!   and title: never merged by product, since one product's lines carry different SKUs. A line
//!   with no variant, SKU or title, and a line of quantity 0, are skipped. Only `orders/create`
//!   counts: `orders/paid`, `orders/updated`, `orders/fulfilled` describe the same sale again and
//!   are ignored, else a sale would count twice. Test orders (`test: true`) count: they decrement
//!   Shopify's stock too, and they are how a merchant checks that stockhook works.
//!   `orders/cancelled` is ignored: a cancellation does not undo the sale's "last sold" time, and
//!   the restock arrives as `inventory_levels/update`.
//! * `refunds/create`: a restock refund line (`restock_type` `return`, `cancel` or
//!   `legacy_restock`, or no `restock_type` in a refund with `restock: true`, the pre-2019 form)
//!   adjusts net sales down by its quantity: a `Sale` with the negative quantity, keyed as for
//!   orders, order = `order_id`, line = `refund:<refund id>:<line_item_id>`. It never updates
//!   "last sold", and the state keeps net sales at zero or above, so a refund for a sale stockhook
//!   never saw changes nothing. No level: Shopify reports the restock itself as an
//!   `inventory_levels/update`. A `no_restock` line changes nothing (the units stay sold).
//! * removals (issue 21): `products/create|update` also give the product's variant items
//!   (`ProductVariants`, so a variant a later update no longer lists leaves the catalog);
//!   `products/delete` gives the product with no variants; `inventory_items/delete` a `Removed`;
//!   `inventory_items/update` with `"tracked": false` a `Removed` after its `CatalogEntry`;
//!   a `products/create|update` variant with `inventory_management: null` (untracked, in API
//!   versions that send the key) the same `Removed` after its `CatalogEntry`.
//! * any other topic: ignored.
//!
//! Event time: `updated_at` (products, items, levels), `created_at` then `processed_at` (orders),
//! `processed_at` then `created_at` (refunds); else `X-Shopify-Triggered-At`; else receipt time.
//!
//! Must never: read an id through `f64` (Shopify ids exceed 2^53); count an order from any topic
//! but `orders/create`; treat `available: null` as zero.

use super::{first_time, id_text, int, missing, parse_json, req, req_array, text};
use crate::facts::{Fact, NormalizeError, Normalized};
use serde_json::Value;
use stockhook_shared::envelope::Envelope;

/// Normalizes a Shopify webhook.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let topic = env
        .topic()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| NormalizeError::NoTopic("no X-Shopify-Topic header".into()))?;
    let body = parse_json(env)?;
    let facts = match topic.to_ascii_lowercase().as_str() {
        "products/create" | "products/update" => {
            let mut facts = products(env, topic, &body)?;
            facts.extend(product_variants(env, topic, &body)?);
            facts
        }
        "products/delete" => product_deleted(env, topic, &body)?,
        "inventory_items/create" | "inventory_items/update" => {
            let mut facts = inventory_item(env, topic, &body)?;
            facts.extend(untracked_item(env, topic, &body)?);
            facts
        }
        "inventory_items/delete" => inventory_item_deleted(env, topic, &body)?,
        "inventory_levels/update" | "inventory_levels/connect" => {
            inventory_level(env, topic, &body)?
        }
        "orders/create" => order(env, topic, &body)?,
        "refunds/create" => refund(env, topic, &body)?,
        _ => return Ok(super::ignored(topic)),
    };
    Ok(super::read(topic, facts))
}

/// "Product - Variant", or the product title alone for Shopify's placeholder variant title
/// "Default Title" (a product without options), or whichever of the two exists.
pub(crate) fn variant_title(product: Option<&str>, variant: Option<&str>) -> Option<String> {
    let variant = variant.filter(|v| !v.is_empty() && *v != "Default Title");
    match (product, variant) {
        (Some(p), Some(v)) => Some(format!("{p} - {v}")),
        (Some(p), None) => Some(p.to_string()),
        (None, Some(v)) => Some(v.to_string()),
        (None, None) => None,
    }
}

fn products(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let variants = req_array(body.get("variants"), topic, "variants")?;
    let product_title = text(body.get("title"), topic, "title")?;
    let at = first_time(env, &[body.get("updated_at"), body.get("created_at")]);
    let mut facts = Vec::with_capacity(variants.len() * 2);
    for (i, v) in variants.iter().enumerate() {
        let field = |name: &str| format!("variants[{i}].{name}");
        let variant_id = req(id_text, v.get("id"), topic, &field("id"))?;
        let alias = format!("variant:{variant_id}");
        let (item, aliases) = match id_text(
            v.get("inventory_item_id"),
            topic,
            &field("inventory_item_id"),
        )? {
            Some(inv) => (inv, vec![alias]),
            None => (alias, Vec::new()),
        };
        let sku = text(v.get("sku"), topic, &field("sku"))?;
        let vt = text(v.get("title"), topic, &field("title"))?;
        facts.push(Fact::CatalogEntry {
            item: item.clone(),
            aliases,
            sku,
            title: variant_title(product_title.as_deref(), vt.as_deref()),
            at,
        });
        let quantity = int(
            v.get("inventory_quantity"),
            topic,
            &field("inventory_quantity"),
        )?;
        let untracked = matches!(v.get("inventory_management"), Some(Value::Null));
        if untracked {
            facts.push(Fact::Removed {
                item,
                reason: UNTRACKED.into(),
                at,
            });
        } else if let Some(available) = quantity {
            facts.push(super::total_level(item, available, at));
        }
    }
    Ok(facts)
}

fn inventory_item(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let item = req(id_text, body.get("id"), topic, "id")?;
    let sku = text(body.get("sku"), topic, "sku")?;
    let at = first_time(env, &[body.get("updated_at"), body.get("created_at")]);
    Ok(vec![Fact::CatalogEntry {
        item,
        aliases: Vec::new(),
        sku,
        title: None,
        at,
    }])
}

/// Removal paths (issue 21). `products/create|update`: the product's variant items, so the
/// state removes those a later update no longer lists.
fn product_variants(
    env: &Envelope,
    topic: &str,
    body: &Value,
) -> Result<Vec<Fact>, NormalizeError> {
    let product = req(id_text, body.get("id"), topic, "id")?;
    let variants = req_array(body.get("variants"), topic, "variants")?;
    let mut items = Vec::with_capacity(variants.len());
    for (i, v) in variants.iter().enumerate() {
        let field = |name: &str| format!("variants[{i}].{name}");
        let variant_id = req(id_text, v.get("id"), topic, &field("id"))?;
        items.push(
            id_text(
                v.get("inventory_item_id"),
                topic,
                &field("inventory_item_id"),
            )?
            .unwrap_or_else(|| format!("variant:{variant_id}")),
        );
    }
    let at = first_time(env, &[body.get("updated_at"), body.get("created_at")]);
    Ok(vec![Fact::ProductVariants { product, items, at }])
}

/// `products/delete` (`{"id": ...}` only): every variant of the product leaves the catalog.
fn product_deleted(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let product = req(id_text, body.get("id"), topic, "id")?;
    let at = first_time(env, &[body.get("updated_at")]);
    Ok(vec![Fact::ProductVariants {
        product,
        items: Vec::new(),
        at,
    }])
}

/// `inventory_items/delete` (`{"id": ...}` only): the item leaves the catalog.
fn inventory_item_deleted(
    env: &Envelope,
    topic: &str,
    body: &Value,
) -> Result<Vec<Fact>, NormalizeError> {
    let item = req(id_text, body.get("id"), topic, "id")?;
    let at = first_time(env, &[body.get("updated_at")]);
    Ok(vec![Fact::Removed {
        item,
        reason: "inventory item deleted".into(),
        at,
    }])
}

/// Why an untracked item left the catalog.
const UNTRACKED: &str = "inventory tracking turned off";

/// `inventory_items/update` with `"tracked": false`: Shopify no longer counts its stock, so
/// stockhook stops alerting on it (tracking turned back on, with a newer time, brings it back).
fn untracked_item(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    if body.get("tracked") != Some(&Value::Bool(false)) {
        return Ok(Vec::new());
    }
    let item = req(id_text, body.get("id"), topic, "id")?;
    let at = first_time(env, &[body.get("updated_at"), body.get("created_at")]);
    Ok(vec![Fact::Removed {
        item,
        reason: UNTRACKED.into(),
        at,
    }])
}

fn inventory_level(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let item = req(
        id_text,
        body.get("inventory_item_id"),
        topic,
        "inventory_item_id",
    )?;
    let location = req(id_text, body.get("location_id"), topic, "location_id")?;
    let available = int(body.get("available"), topic, "available")?;
    let at = first_time(env, &[body.get("updated_at")]);
    Ok(vec![Fact::InventoryLevel {
        item,
        location,
        available,
        at,
    }])
}

/// The item a line item sold, and what the line says about it (its SKU and title, for the
/// catalog). Its variant when it has one; else (a custom item, or a variant deleted since) its
/// SKU (`sku:<SKU>`), else its title (`title:<title>`); `None` when the line has none of them.
/// Such lines are never merged by product: one product's lines carry different SKUs, and two SKUs
/// are never one item.
struct LineItem {
    key: String,
    sku: Option<String>,
    title: Option<String>,
}

fn line_item_key(
    li: &Value,
    topic: &str,
    prefix: &str,
) -> Result<Option<LineItem>, NormalizeError> {
    let sku = text(li.get("sku"), topic, &format!("{prefix}.sku"))?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let title = match text(li.get("name"), topic, &format!("{prefix}.name"))? {
        Some(n) => Some(n),
        None => text(li.get("title"), topic, &format!("{prefix}.title"))?,
    };
    let key =
        if let Some(v) = id_text(li.get("variant_id"), topic, &format!("{prefix}.variant_id"))? {
            format!("variant:{v}")
        } else if let Some(s) = &sku {
            format!("sku:{s}")
        } else if let Some(t) = &title {
            format!("title:{}", t.trim())
        } else {
            return Ok(None);
        };
    Ok(Some(LineItem { key, sku, title }))
}

fn order(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let order = req(id_text, body.get("id"), topic, "id")?;
    let lines = req_array(body.get("line_items"), topic, "line_items")?;
    let at = first_time(env, &[body.get("created_at"), body.get("processed_at")]);
    let mut facts = Vec::with_capacity(lines.len());
    for (i, li) in lines.iter().enumerate() {
        let prefix = format!("line_items[{i}]");
        let line = req(id_text, li.get("id"), topic, &format!("{prefix}.id"))?;
        let quantity = req(
            int,
            li.get("quantity"),
            topic,
            &format!("{prefix}.quantity"),
        )?;
        let Some(LineItem { key, sku, title }) = line_item_key(li, topic, &prefix)? else {
            continue;
        };
        if quantity == 0 {
            continue;
        }
        if !key.starts_with("variant:") {
            // No catalog entry will ever name this item: the line is all there is to know.
            facts.push(Fact::CatalogEntry {
                item: key.clone(),
                aliases: Vec::new(),
                sku,
                title,
                at,
            });
        }
        facts.push(super::sale(key, quantity, &order, line, at));
    }
    Ok(facts)
}

fn refund(env: &Envelope, topic: &str, body: &Value) -> Result<Vec<Fact>, NormalizeError> {
    let refund = req(id_text, body.get("id"), topic, "id")?;
    let order = req(id_text, body.get("order_id"), topic, "order_id")?;
    let lines = req_array(body.get("refund_line_items"), topic, "refund_line_items")?;
    let legacy_restock = body
        .get("restock")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let at = first_time(env, &[body.get("processed_at"), body.get("created_at")]);
    let mut facts = Vec::new();
    for (i, rli) in lines.iter().enumerate() {
        let prefix = format!("refund_line_items[{i}]");
        let restocked = match text(
            rli.get("restock_type"),
            topic,
            &format!("{prefix}.restock_type"),
        )? {
            Some(t) => matches!(t.as_str(), "return" | "cancel" | "legacy_restock"),
            None => legacy_restock,
        };
        if !restocked {
            continue;
        }
        let line_item_id = req(
            id_text,
            rli.get("line_item_id"),
            topic,
            &format!("{prefix}.line_item_id"),
        )?;
        let quantity = req(
            int,
            rli.get("quantity"),
            topic,
            &format!("{prefix}.quantity"),
        )?;
        let li = rli
            .get("line_item")
            .ok_or_else(|| missing(topic, &format!("{prefix}.line_item")))?;
        let Some(LineItem { key: item, .. }) =
            line_item_key(li, topic, &format!("{prefix}.line_item"))?
        else {
            continue;
        };
        if quantity == 0 {
            continue;
        }
        facts.push(Fact::Sale {
            item,
            quantity: quantity.checked_neg().ok_or_else(|| {
                super::bad(topic, &format!("{prefix}.quantity"), "is out of range")
            })?,
            order: order.clone(),
            line: format!("refund:{refund}:{line_item_id}"),
            at,
        });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::{data, entry, env, level, published, sale, RECEIVED};
    use stockhook_shared::config::Platform;

    /// 2021-12-31T19:00:00-05:00, the time in every Shopify sample.
    const SAMPLE_AT: i64 = 1_640_995_200_000;

    fn run(topic: &str, body: impl Into<Vec<u8>>) -> Result<Normalized, NormalizeError> {
        normalize(&env(Platform::Shopify, &[("x-shopify-topic", topic)], body))
    }

    fn facts(topic: &str, body: impl Into<Vec<u8>>) -> Vec<Fact> {
        let n = run(topic, body).unwrap();
        assert_eq!(n.topic, topic);
        assert!(!n.ignored);
        n.facts
    }

    /// Each published delivery that gives facts: topic, file, the facts it gives.
    fn published_cases() -> [(&'static str, &'static str, Vec<Fact>); 4] {
        let v1 = "variant:642667041472713922".to_string();
        let v2 = "variant:757650484644203962".to_string();
        let tee = |v: &str, size: &str| {
            let title = format!("Example T-Shirt - {size}");
            entry(v, &[], None, Some(&title), SAMPLE_AT)
        };
        [
            (
                "inventory_levels/update",
                "shopify/inventory_levels_update.json",
                vec![level("271878346596884015", "24826418", None, SAMPLE_AT)],
            ),
            (
                "inventory_items/update",
                "shopify/inventory_items_update.json",
                vec![entry(
                    "271878346596884015",
                    &[],
                    Some("example-sku"),
                    None,
                    SAMPLE_AT,
                )],
            ),
            (
                "products/update",
                "shopify/products_update.json",
                vec![
                    tee(&v1, "Small"),
                    level(v1.clone(), "all", Some(75), SAMPLE_AT),
                    tee(&v2, "Medium"),
                    level(v2.clone(), "all", Some(50), SAMPLE_AT),
                    Fact::ProductVariants {
                        product: "788032119674292922".into(),
                        items: vec![v1, v2],
                        at: SAMPLE_AT,
                    },
                ],
            ),
            // Every line of the sample is `no_restock` and `restock` is false.
            ("refunds/create", "shopify/refunds_create.json", vec![]),
        ]
    }

    /// Shopify's published samples, every variant of a product included.
    #[test]
    fn published_fixtures_give_their_facts() {
        let Some(fx) = published("adapters::shopify::published_fixtures_give_their_facts") else {
            return;
        };
        for (topic, file, expected) in published_cases() {
            assert_eq!(facts(topic, fx.payload(file)), expected, "{file}");
        }
    }

    #[test]
    fn published_order_lines_without_variant_stay_apart_by_sku() {
        // Issue 13, item 1: every line of Shopify's published orders/create sample has
        // `variant_id: null`; three share one product id and carry three SKUs. They were merged
        // into one item keyed by the product, and their SKUs were lost.
        let got = facts("orders/create", data("shopify/orders_create.json"));
        let mut expected = Vec::new();
        for (line, sku, title) in [
            ("487817672276298554", "SKU2006-001", "Aviator sunglasses"),
            (
                "789012345678901234",
                "LENS-PROTECT-2YR",
                "Lens Protection Plan (2 Year)",
            ),
            (
                "890123456789012345",
                "CASE-LEATHER-PREM",
                "Premium Leather Case",
            ),
            ("976318377106520349", "SKU2006-020", "Mid-century lounger"),
            ("315789986012684393", "SKU2006-035", "Coffee table"),
        ] {
            let item = format!("sku:{sku}");
            expected.push(entry(item.clone(), &[], Some(sku), Some(title), SAMPLE_AT));
            expected.push(Fact::Sale {
                item,
                quantity: 1,
                order: "820982911946154508".into(),
                line: line.into(),
                at: SAMPLE_AT,
            });
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn line_without_variant_or_sku_is_kept_apart_by_title() {
        let body = r#"{"id": 1, "line_items": [
            {"id": 2, "variant_id": null, "product_id": 7, "sku": "", "name": "Gift wrap", "quantity": 1},
            {"id": 3, "variant_id": null, "product_id": 7, "sku": null, "title": "Engraving", "quantity": 2},
            {"id": 4, "variant_id": null, "product_id": null, "sku": null, "quantity": 1}]}"#;
        let keys: Vec<(String, i64)> = facts("orders/create", body)
            .into_iter()
            .filter_map(|f| match f {
                Fact::Sale { item, quantity, .. } => Some((item, quantity)),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("title:Gift wrap".to_string(), 1),
                ("title:Engraving".to_string(), 2)
            ]
        );
    }

    #[test]
    fn fixture_orders_paid_is_ignored_so_a_sale_counts_once() {
        let Some(fx) =
            published("adapters::shopify::fixture_orders_paid_is_ignored_so_a_sale_counts_once")
        else {
            return;
        };
        // The orders/paid sample is byte-identical to orders/create.
        let n = run("orders/paid", fx.payload("shopify/orders_create.json")).unwrap();
        assert_eq!(
            n,
            Normalized {
                topic: "orders/paid".into(),
                facts: vec![],
                ignored: true
            }
        );
    }

    #[test]
    fn restocked_refund_lines_are_negative_sales() {
        let body = r#"{"id": 9007199254740993, "order_id": 18446744073709551615,
            "processed_at": "2022-01-01T00:00:00Z", "restock": false,
            "refund_line_items": [
              {"line_item_id": 11, "quantity": 2, "restock_type": "return",
               "line_item": {"variant_id": 21, "product_id": 31}},
              {"line_item_id": 12, "quantity": 1, "restock_type": "no_restock",
               "line_item": {"variant_id": 22}},
              {"line_item_id": 13, "quantity": 1, "restock_type": "cancel",
               "line_item": {"variant_id": null, "product_id": 33, "sku": "S-33"}},
              {"line_item_id": 14, "quantity": 1, "restock_type": "legacy_restock",
               "line_item": {"variant_id": null, "product_id": null}}
            ]}"#;
        let sale = |item: &str, quantity: i64, line: &str| Fact::Sale {
            item: item.into(),
            quantity,
            order: "18446744073709551615".into(),
            line: line.into(),
            at: 1_640_995_200_000,
        };
        assert_eq!(
            facts("refunds/create", body),
            vec![
                sale("variant:21", -2, "refund:9007199254740993:11"),
                sale("sku:S-33", -1, "refund:9007199254740993:13"),
            ]
        );
    }

    #[test]
    fn pre_2019_refund_restock_flag_is_honoured() {
        let body = r#"{"id": 1, "order_id": 2, "restock": true,
            "refund_line_items": [{"line_item_id": 3, "quantity": 1, "line_item": {"variant_id": 4}}]}"#;
        assert_eq!(
            facts("refunds/create", body),
            vec![sale("variant:4", -1, "2", "refund:1:3", RECEIVED)]
        );
    }

    #[test]
    fn product_variant_with_inventory_item_and_untracked_variant() {
        let body = r#"{"id": 1, "title": "Cap", "updated_at": "2022-01-01T00:00:00Z", "variants": [
            {"id": 9007199254740993, "inventory_item_id": 18446744073709551615, "sku": "CAP",
             "title": "Default Title", "inventory_quantity": 3, "inventory_management": "shopify"},
            {"id": 2, "inventory_item_id": "5", "sku": "", "title": "Blue",
             "inventory_quantity": 8, "inventory_management": null},
            {"id": 3, "inventory_item_id": 6, "title": "Green", "inventory_quantity": null}
        ]}"#;
        let at = 1_640_995_200_000;
        assert_eq!(
            facts("products/create", body),
            vec![
                entry(
                    "18446744073709551615",
                    &["variant:9007199254740993"],
                    Some("CAP"),
                    Some("Cap"),
                    at
                ),
                level("18446744073709551615", "all", Some(3), at),
                entry("5", &["variant:2"], None, Some("Cap - Blue"), at),
                Fact::Removed {
                    item: "5".into(),
                    reason: UNTRACKED.into(),
                    at,
                },
                entry("6", &["variant:3"], None, Some("Cap - Green"), at),
                Fact::ProductVariants {
                    product: "1".into(),
                    items: vec!["18446744073709551615".into(), "5".into(), "6".into()],
                    at,
                },
            ]
        );
    }

    /// Issue 21: Shopify's published `products/create` sample (API 2023-07; `products/update`
    /// carries the same Product), with tracking turned off on its second variant
    /// (`inventory_management: null`, set on a copy): that variant leaves the catalog like an
    /// `inventory_items/update` with `tracked: false`, the first keeps its level.
    #[test]
    fn published_product_with_an_untracked_variant_removes_that_variant() {
        let mut product: Value =
            serde_json::from_slice(&data("shopify/products_create_2023-07.json")).unwrap();
        let tracked = facts("products/update", product.to_string());
        assert!(
            !tracked.iter().any(|f| matches!(f, Fact::Removed { .. })),
            "{tracked:?}"
        );
        product["variants"][1]["inventory_management"] = Value::Null;
        let f = facts("products/update", product.to_string());
        let at = 1_640_995_200_000; // updated_at 2021-12-31T19:00:00-05:00
        let medium = "variant:757650484644203900";
        assert!(f.contains(&level("variant:642667041472714000", "all", Some(75), at)));
        assert!(f.contains(&Fact::Removed {
            item: medium.into(),
            reason: UNTRACKED.into(),
            at,
        }));
        assert!(
            !f.iter()
                .any(|x| matches!(x, Fact::InventoryLevel { item, .. } if item == medium)),
            "an untracked variant has no level: {f:?}"
        );
    }

    /// Issue 21: the removal paths, on the payloads Shopify publishes (`products/delete` and
    /// `inventory_items/delete` carry only the id; time: `X-Shopify-Triggered-At`, else receipt).
    #[test]
    fn removal_paths_product_deleted_item_deleted_tracking_turned_off() {
        assert_eq!(
            facts("products/delete", r#"{"id": 788032119674292922}"#),
            vec![Fact::ProductVariants {
                product: "788032119674292922".into(),
                items: vec![],
                at: RECEIVED,
            }]
        );
        assert_eq!(
            facts("inventory_items/delete", r#"{"id": 271878346596884015}"#),
            vec![Fact::Removed {
                item: "271878346596884015".into(),
                reason: "inventory item deleted".into(),
                at: RECEIVED,
            }]
        );
        let off =
            r#"{"id": 5, "sku": "S", "tracked": false, "updated_at": "2022-01-01T00:00:00Z"}"#;
        let f = facts("inventory_items/update", off);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            f[1],
            Fact::Removed {
                item: "5".into(),
                reason: UNTRACKED.into(),
                at: 1_640_995_200_000,
            }
        );
        let on = r#"{"id": 5, "sku": "S", "tracked": true, "updated_at": "2022-01-01T00:00:00Z"}"#;
        assert_eq!(facts("inventory_items/update", on).len(), 1);
        assert!(matches!(
            run("products/delete", "{}"),
            Err(NormalizeError::MissingField { field, .. }) if field == "id"
        ));
    }

    #[test]
    fn ids_above_2_pow_53_stay_exact() {
        let body = r#"{"inventory_item_id": 18446744073709551615, "location_id": 9007199254740993,
                       "available": -2, "updated_at": "2022-01-01T00:00:00Z"}"#;
        assert_eq!(
            facts("inventory_levels/update", body),
            vec![level(
                "18446744073709551615",
                "9007199254740993",
                Some(-2),
                1_640_995_200_000
            )]
        );
        let body = r#"{"id": 9007199254740993, "line_items": [
            {"id": 18446744073709551615, "variant_id": "9007199254740993", "quantity": 2}]}"#;
        assert_eq!(
            facts("orders/create", body),
            vec![sale(
                "variant:9007199254740993",
                2,
                "9007199254740993",
                "18446744073709551615",
                RECEIVED
            )]
        );
    }

    #[test]
    fn float_id_is_a_bad_field() {
        let body =
            r#"{"inventory_item_id": 271878346596884015.0, "location_id": 1, "available": 1}"#;
        assert!(matches!(
            run("inventory_levels/update", body),
            Err(NormalizeError::BadField { field, topic, .. })
                if field == "inventory_item_id" && topic == "inventory_levels/update"
        ));
    }

    #[test]
    fn connect_topic_is_a_level_too() {
        let body = r#"{"inventory_item_id": 1, "location_id": 2, "available": 0}"#;
        assert_eq!(
            facts("inventory_levels/connect", body),
            vec![level("1", "2", Some(0), RECEIVED)]
        );
    }

    #[test]
    fn event_time_falls_back_to_triggered_at_header() {
        let e = env(
            Platform::Shopify,
            &[
                ("x-shopify-topic", "inventory_items/update"),
                ("x-shopify-triggered-at", "2023-03-29T18:00:27.877041743Z"),
            ],
            r#"{"id": 1, "sku": "S"}"#,
        );
        assert_eq!(normalize(&e).unwrap().facts[0].at(), 1_680_112_827_877);
    }

    #[test]
    fn unprefixed_topic_header_is_read() {
        let e = env(
            Platform::Shopify,
            &[("shopify-topic", "inventory_items/create")],
            r#"{"id": 7}"#,
        );
        let n = normalize(&e).unwrap();
        assert_eq!(n.topic, "inventory_items/create");
        assert_eq!(n.facts.len(), 1);
    }

    #[test]
    fn unknown_and_cancelled_topics_are_ignored() {
        for topic in ["orders/cancelled", "app/uninstalled", "customers/create"] {
            let n = run(topic, "{}").unwrap();
            assert_eq!(
                n,
                Normalized {
                    topic: topic.into(),
                    facts: vec![],
                    ignored: true
                }
            );
        }
    }

    #[test]
    fn missing_topic_header_is_no_topic() {
        let e = env(Platform::Shopify, &[("x-shopify-webhook-id", "x")], "{}");
        assert!(matches!(normalize(&e), Err(NormalizeError::NoTopic(_))));
    }

    #[test]
    fn body_not_json_is_not_json() {
        assert!(matches!(
            run("products/update", "<product/>"),
            Err(NormalizeError::NotJson(_))
        ));
        assert!(matches!(
            run("orders/create", ""),
            Err(NormalizeError::NotJson(_))
        ));
    }

    #[test]
    fn each_required_field_missing_is_named() {
        let cases = [
            (
                "inventory_levels/update",
                r#"{"location_id": 1, "available": 1}"#,
                "inventory_item_id",
            ),
            (
                "inventory_levels/update",
                r#"{"inventory_item_id": 1, "available": 1}"#,
                "location_id",
            ),
            ("inventory_items/update", r#"{"sku": "x"}"#, "id"),
            ("products/update", r#"{"id": 1, "title": "x"}"#, "variants"),
            (
                "products/update",
                r#"{"id": 1, "variants": [{"id": 1}, {"sku": "x"}]}"#,
                "variants[1].id",
            ),
            ("orders/create", r#"{"id": 1}"#, "line_items"),
            ("orders/create", r#"{"line_items": []}"#, "id"),
            (
                "orders/create",
                r#"{"id": 1, "line_items": [{"variant_id": 2, "quantity": 1}]}"#,
                "line_items[0].id",
            ),
            (
                "orders/create",
                r#"{"id": 1, "line_items": [{"id": 3, "variant_id": 2}]}"#,
                "line_items[0].quantity",
            ),
            (
                "refunds/create",
                r#"{"id": 1, "order_id": 2}"#,
                "refund_line_items",
            ),
            (
                "refunds/create",
                r#"{"id": 1, "refund_line_items": []}"#,
                "order_id",
            ),
            (
                "refunds/create",
                r#"{"id": 1, "order_id": 2, "refund_line_items": [{"quantity": 1, "restock_type": "return", "line_item": {}}]}"#,
                "refund_line_items[0].line_item_id",
            ),
        ];
        for (topic, body, field) in cases {
            assert_eq!(
                run(topic, body),
                Err(missing(topic, field)),
                "{topic} {body}"
            );
        }
    }

    #[test]
    fn variant_title_rules() {
        assert_eq!(
            variant_title(Some("P"), Some("V")).as_deref(),
            Some("P - V")
        );
        assert_eq!(
            variant_title(Some("P"), Some("Default Title")).as_deref(),
            Some("P")
        );
        assert_eq!(variant_title(None, Some("V")).as_deref(), Some("V"));
        assert_eq!(variant_title(None, None), None);
    }
}
