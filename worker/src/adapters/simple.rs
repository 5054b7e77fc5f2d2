//! The "simple" platform: the two unsigned JSON forms the original Flask notes accepted, kept so a
//! user of that system (or a script of their own) can post stock levels without a platform.
//!
//! Contract: exactly two forms, recognised by their keys:
//! * product form `{"id", "title", "variants": [{"inventory_quantity", "id"?, "sku"?, "title"?}]}`
//!   gives, per variant, a `CatalogEntry` and an `InventoryLevel` at location `"all"`; the item is
//!   the variant's `id`, else `"<product id>:<index>"`; the title is "product - variant" as
//!   for Shopify; `inventory_quantity: null` is an untracked item (`available: None`);
//! * ASIN form `{"ASIN", "product_name"?, "quantity"}` (key case ignored) gives a `CatalogEntry`
//!   (item = ASIN, title = product_name) and an `InventoryLevel` at location `"all"`.
//!
//! The topic reported is `simple/product` or `simple/asin`. The event time is the payload's
//! `updated_at` if it has one, else the time the receiver accepted the event. Anything else
//! (including sales, which the Flask notes never had a form for) is a `MissingField` error that
//! names what was expected.
//!
//! Must never: invent a third form or guess which one a body meant; read ids through `f64`.

use super::{first_time, get_ci, id_text, int, missing, parse_json, req, text};
use crate::facts::{Fact, NormalizeError, Normalized};
use serde_json::Value;
use stockhook_shared::envelope::Envelope;

/// The topic name used in errors before the form is known.
const PLATFORM: &str = "simple";
const PRODUCT: &str = "simple/product";
const ASIN: &str = "simple/asin";

/// Normalizes a "simple" payload (one of the two forms above).
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let body = parse_json(env)?;
    if body.get("variants").is_some() {
        product_form(env, &body)
    } else if get_ci(&body, "ASIN").is_some() {
        asin_form(env, &body)
    } else {
        Err(missing(
            PLATFORM,
            "variants (product form) or ASIN (ASIN form)",
        ))
    }
}

fn product_form(env: &Envelope, body: &Value) -> Result<Normalized, NormalizeError> {
    let variants = super::req_array(body.get("variants"), PRODUCT, "variants")?;
    let product_id = id_text(body.get("id"), PRODUCT, "id")?;
    let product_title = text(body.get("title"), PRODUCT, "title")?;
    let at = first_time(env, &[body.get("updated_at")]);
    let mut facts = Vec::with_capacity(variants.len() * 2);
    for (i, v) in variants.iter().enumerate() {
        let item = match id_text(v.get("id"), PRODUCT, &format!("variants[{i}].id"))? {
            Some(id) => id,
            // The product id is needed only to name a variant that has no id of its own.
            None => match &product_id {
                Some(p) => format!("{p}:{i}"),
                None => {
                    return Err(missing(
                        PRODUCT,
                        &format!("variants[{i}].id (or the product's id)"),
                    ))
                }
            },
        };
        let qty_field = format!("variants[{i}].inventory_quantity");
        if v.get("inventory_quantity").is_none() {
            return Err(missing(PRODUCT, &qty_field));
        }
        let available = int(v.get("inventory_quantity"), PRODUCT, &qty_field)?;
        let sku = text(v.get("sku"), PRODUCT, &format!("variants[{i}].sku"))?;
        let variant_title = text(v.get("title"), PRODUCT, &format!("variants[{i}].title"))?;
        facts.push(Fact::CatalogEntry {
            item: item.clone(),
            aliases: Vec::new(),
            sku,
            title: super::shopify::variant_title(
                product_title.as_deref(),
                variant_title.as_deref(),
            ),
            at,
        });
        facts.push(Fact::InventoryLevel {
            item,
            location: "all".into(),
            available,
            at,
        });
    }
    Ok(Normalized {
        topic: PRODUCT.into(),
        facts,
        ignored: false,
    })
}

fn asin_form(env: &Envelope, body: &Value) -> Result<Normalized, NormalizeError> {
    let asin = req(text, get_ci(body, "ASIN"), ASIN, "ASIN")?;
    let title = text(get_ci(body, "product_name"), ASIN, "product_name")?;
    let quantity = req(int, get_ci(body, "quantity"), ASIN, "quantity")?;
    let at = first_time(env, &[body.get("updated_at")]);
    Ok(Normalized {
        topic: ASIN.into(),
        facts: vec![
            Fact::CatalogEntry {
                item: asin.clone(),
                aliases: Vec::new(),
                sku: None,
                title,
                at,
            },
            Fact::InventoryLevel {
                item: asin,
                location: "all".into(),
                available: Some(quantity),
                at,
            },
        ],
        ignored: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::{entry, env, level, RECEIVED};
    use stockhook_shared::config::Platform;

    fn run(body: &str) -> Result<Normalized, NormalizeError> {
        normalize(&env(Platform::Simple, &[], body))
    }

    #[test]
    fn product_form_gives_catalog_and_level_per_variant() {
        let n = run(r#"{"id": 18446744073709551615, "title": "Mug",
            "updated_at": "2022-01-01T00:00:00Z",
            "variants": [
              {"id": 9007199254740993, "sku": "MUG-R", "title": "Red", "inventory_quantity": 4},
              {"sku": "MUG-B", "title": "Default Title", "inventory_quantity": null},
              {"inventory_quantity": "7"}
            ]}"#)
        .unwrap();
        let at = 1_640_995_200_000;
        assert_eq!(n.topic, "simple/product");
        assert!(!n.ignored);
        assert_eq!(
            n.facts,
            vec![
                entry(
                    "9007199254740993",
                    &[],
                    Some("MUG-R"),
                    Some("Mug - Red"),
                    at
                ),
                level("9007199254740993", "all", Some(4), at),
                entry(
                    "18446744073709551615:1",
                    &[],
                    Some("MUG-B"),
                    Some("Mug"),
                    at
                ),
                level("18446744073709551615:1", "all", None, at),
                entry("18446744073709551615:2", &[], None, Some("Mug"), at),
                level("18446744073709551615:2", "all", Some(7), at),
            ]
        );
    }

    #[test]
    fn asin_form_gives_catalog_and_level() {
        for body in [
            r#"{"ASIN": "B00001ABCD", "product_name": "Lamp", "quantity": 3}"#,
            r#"{"asin": "B00001ABCD", "Product_Name": "Lamp", "Quantity": "3"}"#,
        ] {
            let n = run(body).unwrap();
            assert_eq!(n.topic, "simple/asin");
            assert_eq!(
                n.facts,
                vec![
                    entry("B00001ABCD", &[], None, Some("Lamp"), RECEIVED),
                    level("B00001ABCD", "all", Some(3), RECEIVED),
                ],
                "{body}"
            );
        }
    }

    #[test]
    fn not_json_is_not_json() {
        assert!(matches!(run("id=1&qty=2"), Err(NormalizeError::NotJson(_))));
    }

    #[test]
    fn other_shapes_name_what_was_expected() {
        for body in [r#"{"sold": 3}"#, "[]", "5", r#"{"sales": []}"#] {
            assert_eq!(
                run(body),
                Err(missing(
                    "simple",
                    "variants (product form) or ASIN (ASIN form)"
                )),
                "{body}"
            );
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        let cases = [
            (
                r#"{"ASIN": "B1", "product_name": "x"}"#,
                "simple/asin",
                "quantity",
            ),
            (r#"{"ASIN": null, "quantity": 1}"#, "simple/asin", "ASIN"),
            (
                r#"{"id": 1, "variants": null}"#,
                "simple/product",
                "variants",
            ),
            (
                r#"{"id": 1, "variants": [{"id": 2, "sku": "s"}]}"#,
                "simple/product",
                "variants[0].inventory_quantity",
            ),
            (
                r#"{"variants": [{"inventory_quantity": 1}]}"#,
                "simple/product",
                "variants[0].id (or the product's id)",
            ),
        ];
        for (body, topic, field) in cases {
            assert_eq!(run(body), Err(missing(topic, field)), "{body}");
        }
    }

    #[test]
    fn float_ids_and_quantities_are_bad_fields() {
        for (body, field) in [
            (
                r#"{"variants": [{"id": 1.5, "inventory_quantity": 1}]}"#,
                "variants[0].id",
            ),
            (
                r#"{"variants": [{"id": 1, "inventory_quantity": 1.5}]}"#,
                "variants[0].inventory_quantity",
            ),
            (r#"{"ASIN": "B1", "quantity": 2.0}"#, "quantity"),
        ] {
            assert!(
                matches!(run(body), Err(NormalizeError::BadField { field: f, .. }) if f == field),
                "{body}"
            );
        }
    }
}
