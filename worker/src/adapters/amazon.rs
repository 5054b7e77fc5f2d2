//! Amazon Selling Partner API notifications, as they reach an HTTPS endpoint: the bare
//! notification (`NotificationType`, `EventTime`, `Payload`, `NotificationMetadata`), or the
//! EventBridge event that wraps it in `detail` (an API destination without an input transformer
//! posts the whole event). Amazon documents some types in PascalCase and others in camelCase, so
//! every key is matched ignoring ASCII case ([`get_ci`]).
//!
//! Contract, per notification type (the topic: `NotificationType`, or EventBridge `detail-type`,
//! or `detail.NotificationType`):
//! * `FBA_INVENTORY_AVAILABILITY_CHANGES`: per marketplace, a `CatalogEntry` (item = SKU, aliases
//!   `asin:<ASIN>`, `fnsku:<FNSKU>`, title = ItemName; an entry identical to one already emitted
//!   is not repeated) and an `InventoryLevel` at `fba:<MarketplaceId>` of the `Fulfillable` units.
//! * `LISTINGS_ITEM_MFN_QUANTITY_CHANGE`: a `CatalogEntry` (item = sku = `Sku`) and an
//!   `InventoryLevel` at `mfn` (`mfn:<FulfillmentChannelCode>` for a channel other than
//!   `DEFAULT`, so two channels never overwrite each other) of `Quantity`.
//! * `ORDER_CHANGE`: a `Sale` per `Summary.OrderItems[]` (item = SellerSKU, order =
//!   AmazonOrderId, line = OrderItemId). Amazon sends one notification per status change; the
//!   state store dedups sales on (order, line), so an order counts once. An order whose
//!   `OrderStatus` is `Canceled` (or an item whose `OrderItemStatus` is) gives no sale; a sale
//!   already counted from an earlier status is not taken back. Pending orders count: their stock
//!   is already reserved. Time: `OrderChangeTrigger.TimeOfOrderChange`, else `EventTime`.
//! * any other type (`ANY_OFFER_CHANGED`, ...): ignored.
//!
//! [`dedup_key`]: `NotificationMetadata.NotificationId` (bare or inside `detail`), else the
//! EventBridge event `id`.
//!
//! Must never: depend on key casing; treat a cancelled order as a sale; read SKUs or quantities
//! as floats.

use super::{first_time, get_ci, missing, parse_json, req_array, req_int, req_text, text};
use crate::facts::{Fact, NormalizeError, Normalized};
use serde_json::Value;
use stockhook_shared::envelope::Envelope;

/// The notification inside a body, bare or wrapped by EventBridge.
struct Notice<'a> {
    /// The whole body: the EventBridge event when wrapped, else the notification.
    root: &'a Value,
    /// The SP-API notification (`root`, or `root.detail`).
    note: &'a Value,
    wrapped: bool,
}

impl<'a> Notice<'a> {
    fn read(body: &'a Value) -> Notice<'a> {
        let detail = get_ci(body, "detail").filter(|d| d.is_object());
        let is_event = get_ci(body, "detail-type").is_some() || get_ci(body, "source").is_some();
        match detail {
            Some(d) if is_event => Notice {
                root: body,
                note: d,
                wrapped: true,
            },
            _ => Notice {
                root: body,
                note: body,
                wrapped: false,
            },
        }
    }

    fn topic(&self) -> Option<&'a str> {
        let s = |v: Option<&'a Value>| {
            v.and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
        };
        if self.wrapped {
            s(get_ci(self.root, "detail-type")).or_else(|| s(get_ci(self.note, "NotificationType")))
        } else {
            s(get_ci(self.note, "NotificationType"))
        }
    }

    /// The payload object and its path for error messages. Inside EventBridge, a `detail` with no
    /// `Payload` is taken to be the payload itself.
    fn payload(&self, topic: &str) -> Result<(&'a Value, &'static str), NormalizeError> {
        match get_ci(self.note, "Payload") {
            Some(p) if p.is_object() => Ok((
                p,
                if self.wrapped {
                    "detail.Payload"
                } else {
                    "Payload"
                },
            )),
            Some(Value::Null) | None if self.wrapped => Ok((self.note, "detail")),
            Some(Value::Null) | None => Err(missing(topic, "Payload")),
            Some(other) => Err(super::bad(
                topic,
                if self.wrapped {
                    "detail.Payload"
                } else {
                    "Payload"
                },
                format!("must be an object, found {}", super::kind(other)),
            )),
        }
    }

    /// Candidate times after the payload's own: `EventTime`, then the EventBridge event `time`.
    fn times(&self) -> [Option<&'a Value>; 2] {
        [
            get_ci(self.note, "EventTime"),
            if self.wrapped {
                get_ci(self.root, "time")
            } else {
                None
            },
        ]
    }
}

/// Normalizes an SP-API notification, bare or in an EventBridge event.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let body = parse_json(env)?;
    let notice = Notice::read(&body);
    let topic = notice.topic().ok_or_else(|| {
        NormalizeError::NoTopic(
            "no NotificationType (nor EventBridge detail-type) in the body".into(),
        )
    })?;
    let facts = match topic.to_ascii_uppercase().as_str() {
        "FBA_INVENTORY_AVAILABILITY_CHANGES" => fba_inventory(env, topic, &notice)?,
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE" => mfn_quantity(env, topic, &notice)?,
        "ORDER_CHANGE" => order_change(env, topic, &notice)?,
        _ => {
            return Ok(Normalized {
                topic: topic.to_string(),
                facts: Vec::new(),
                ignored: true,
            })
        }
    };
    Ok(Normalized {
        topic: topic.to_string(),
        facts,
        ignored: false,
    })
}

/// `NotificationMetadata.NotificationId` (any casing, bare or inside `detail`), else the
/// EventBridge event `id`. `None` for a body that is not JSON or has neither.
pub fn dedup_key(env: &Envelope) -> Option<String> {
    let body: Value = serde_json::from_slice(&env.body).ok()?;
    let notice = Notice::read(&body);
    let id_of = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        }
    };
    get_ci(notice.note, "NotificationMetadata")
        .and_then(|m| id_of(get_ci(m, "NotificationId")))
        .or_else(|| {
            get_ci(notice.root, "NotificationMetadata")
                .and_then(|m| id_of(get_ci(m, "NotificationId")))
        })
        .or_else(|| {
            if notice.wrapped {
                id_of(get_ci(notice.root, "id"))
            } else {
                None
            }
        })
}

fn fba_inventory(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let sku = req_text(get_ci(p, "SKU"), topic, &format!("{pp}.SKU"))?;
    let mut aliases = Vec::new();
    if let Some(asin) = text(get_ci(p, "ASIN"), topic, &format!("{pp}.ASIN"))? {
        aliases.push(format!("asin:{asin}"));
    }
    if let Some(fnsku) = text(get_ci(p, "FNSKU"), topic, &format!("{pp}.FNSKU"))? {
        aliases.push(format!("fnsku:{fnsku}"));
    }
    let list = "FulfillmentInventoryByMarketplace";
    let markets = req_array(get_ci(p, list), topic, &format!("{pp}.{list}"))?;
    let at = first_time(env, &n.times());
    let mut facts = Vec::with_capacity(markets.len() * 2);
    for (i, m) in markets.iter().enumerate() {
        let mp = format!("{pp}.{list}[{i}]");
        let marketplace = req_text(
            get_ci(m, "MarketplaceId"),
            topic,
            &format!("{mp}.MarketplaceId"),
        )?;
        let title = text(get_ci(m, "ItemName"), topic, &format!("{mp}.ItemName"))?;
        let fulfillable = req_int(
            get_ci(m, "FulfillmentInventory").and_then(|fi| get_ci(fi, "Fulfillable")),
            topic,
            &format!("{mp}.FulfillmentInventory.Fulfillable"),
        )?;
        let entry = Fact::CatalogEntry {
            item: sku.clone(),
            aliases: aliases.clone(),
            sku: Some(sku.clone()),
            title,
            at,
        };
        if !facts.contains(&entry) {
            facts.push(entry);
        }
        facts.push(Fact::InventoryLevel {
            item: sku.clone(),
            location: format!("fba:{marketplace}"),
            available: Some(fulfillable),
            at,
        });
    }
    Ok(facts)
}

fn mfn_quantity(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let sku = req_text(get_ci(p, "Sku"), topic, &format!("{pp}.Sku"))?;
    let quantity = req_int(get_ci(p, "Quantity"), topic, &format!("{pp}.Quantity"))?;
    let channel = text(
        get_ci(p, "FulfillmentChannelCode"),
        topic,
        &format!("{pp}.FulfillmentChannelCode"),
    )?;
    let location = match channel {
        Some(c) if !c.eq_ignore_ascii_case("DEFAULT") => format!("mfn:{c}"),
        _ => "mfn".to_string(),
    };
    let at = first_time(env, &n.times());
    Ok(vec![
        Fact::CatalogEntry {
            item: sku.clone(),
            aliases: Vec::new(),
            sku: Some(sku.clone()),
            title: None,
            at,
        },
        Fact::InventoryLevel {
            item: sku,
            location,
            available: Some(quantity),
            at,
        },
    ])
}

fn is_canceled(status: Option<&str>) -> bool {
    status
        .is_some_and(|s| s.eq_ignore_ascii_case("Canceled") || s.eq_ignore_ascii_case("Cancelled"))
}

fn order_change(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let op = format!("{pp}.OrderChangeNotification");
    let ocn = get_ci(p, "OrderChangeNotification")
        .filter(|v| !v.is_null())
        .ok_or_else(|| missing(topic, &op))?;
    let order = req_text(
        get_ci(ocn, "AmazonOrderId"),
        topic,
        &format!("{op}.AmazonOrderId"),
    )?;
    let summary = get_ci(ocn, "Summary")
        .filter(|v| !v.is_null())
        .ok_or_else(|| missing(topic, &format!("{op}.Summary")))?;
    let status = text(
        get_ci(summary, "OrderStatus"),
        topic,
        &format!("{op}.Summary.OrderStatus"),
    )?;
    if is_canceled(status.as_deref()) {
        return Ok(Vec::new());
    }
    let ip = format!("{op}.Summary.OrderItems");
    let items = req_array(get_ci(summary, "OrderItems"), topic, &ip)?;
    let [event_time, bridge_time] = n.times();
    let trigger_time =
        get_ci(ocn, "OrderChangeTrigger").and_then(|t| get_ci(t, "TimeOfOrderChange"));
    let at = first_time(env, &[trigger_time, event_time, bridge_time]);
    let mut facts = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let f = |name: &str| format!("{ip}[{i}].{name}");
        let line = req_text(get_ci(it, "OrderItemId"), topic, &f("OrderItemId"))?;
        let sku = req_text(get_ci(it, "SellerSKU"), topic, &f("SellerSKU"))?;
        let quantity = req_int(get_ci(it, "Quantity"), topic, &f("Quantity"))?;
        let item_status = text(get_ci(it, "OrderItemStatus"), topic, &f("OrderItemStatus"))?;
        if quantity == 0 || is_canceled(item_status.as_deref()) {
            continue;
        }
        facts.push(Fact::Sale {
            item: sku,
            quantity,
            order: order.clone(),
            line,
            at,
        });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::{env, published, Published, RECEIVED};
    use serde_json::json;
    use stockhook_shared::config::Platform;

    fn run(body: impl Into<Vec<u8>>) -> Result<Normalized, NormalizeError> {
        normalize(&env(Platform::Amazon, &[], body))
    }

    fn fixture_json(fx: &Published, name: &str) -> Value {
        serde_json::from_slice(&fx.payload(&format!("amazon/{name}"))).unwrap()
    }

    /// Recursively rewrites every object key with `f` (PascalCase to camelCase and so on).
    fn rekey(v: &Value, f: &dyn Fn(&str) -> String) -> Value {
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (f(k), rekey(v, f))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(|v| rekey(v, f)).collect()),
            other => other.clone(),
        }
    }

    fn camel(k: &str) -> String {
        let mut c = k.chars();
        match c.next() {
            Some(first) => first.to_lowercase().chain(c).collect(),
            None => String::new(),
        }
    }

    fn event_bridge(detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "0b7c9b1c-7f35-4c4f-9e6e-5d8d5b1f0a11",
            "detail-type": detail["NotificationType"].clone(),
            "source": "aws.partner/sellingpartnerapi.amazon.com/123456789012/amzn1.sellerapps.app.x",
            "account": "123456789012",
            "time": "2024-05-01T10:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail
        })
    }

    fn fba_expected() -> Vec<Fact> {
        let at = 1_594_669_324_284; // 2020-07-13T19:42:04.284Z
        vec![
            Fact::CatalogEntry {
                item: "SELLERSKU-1".into(),
                aliases: vec!["asin:B00001ABCD".into(), "fnsku:X001ABCDEF".into()],
                sku: Some("SELLERSKU-1".into()),
                title: Some("Product Title".into()),
                at,
            },
            Fact::InventoryLevel {
                item: "SELLERSKU-1".into(),
                location: "fba:ATVPDKIKX0DER".into(),
                available: Some(50),
                at,
            },
            Fact::InventoryLevel {
                item: "SELLERSKU-1".into(),
                location: "fba:A2EUQ1WTGCTBG2".into(),
                available: Some(40),
                at,
            },
        ]
    }

    fn mfn_expected() -> Vec<Fact> {
        let at = 1_612_378_770_194; // 2021-02-03T18:59:30.194Z
        vec![
            Fact::CatalogEntry {
                item: "NLS-SHOES-03".into(),
                aliases: vec![],
                sku: Some("NLS-SHOES-03".into()),
                title: None,
                at,
            },
            Fact::InventoryLevel {
                item: "NLS-SHOES-03".into(),
                location: "mfn".into(),
                available: Some(99),
                at,
            },
        ]
    }

    fn order_expected() -> Vec<Fact> {
        vec![Fact::Sale {
            item: "SellerSKUID1".into(),
            quantity: 10,
            order: "903-8868176-2219830".into(),
            line: "OIID34853450".into(),
            at: 1_669_750_924_284, // TimeOfOrderChange 2022-11-29T19:42:04.284Z
        }]
    }

    fn expect(body: Vec<u8>, topic: &str, facts: Vec<Fact>) {
        let n = run(body).unwrap();
        assert_eq!(
            n,
            Normalized {
                topic: topic.into(),
                facts,
                ignored: false
            }
        );
    }

    #[test]
    fn fixture_fba_inventory_availability_changes() {
        let Some(fx) = published("adapters::amazon::fixture_fba_inventory_availability_changes")
        else {
            return;
        };
        expect(
            fx.payload("amazon/fba_inventory_availability_changes.json"),
            "FBA_INVENTORY_AVAILABILITY_CHANGES",
            fba_expected(),
        );
    }

    #[test]
    fn fixture_listings_item_mfn_quantity_change() {
        let Some(fx) = published("adapters::amazon::fixture_listings_item_mfn_quantity_change")
        else {
            return;
        };
        expect(
            fx.payload("amazon/listings_item_mfn_quantity_change.json"),
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
            mfn_expected(),
        );
    }

    #[test]
    fn fixture_order_change() {
        let Some(fx) = published("adapters::amazon::fixture_order_change") else {
            return;
        };
        expect(
            fx.payload("amazon/order_change.json"),
            "ORDER_CHANGE",
            order_expected(),
        );
    }

    #[test]
    fn fixture_any_offer_changed_is_ignored() {
        let Some(fx) = published("adapters::amazon::fixture_any_offer_changed_is_ignored") else {
            return;
        };
        let e = env(
            Platform::Amazon,
            &[],
            fx.payload("amazon/any_offer_changed.json"),
        );
        assert_eq!(
            normalize(&e).unwrap(),
            Normalized {
                topic: "ANY_OFFER_CHANGED".into(),
                facts: vec![],
                ignored: true
            }
        );
        assert_eq!(
            dedup_key(&e).as_deref(),
            Some("d0e9e693-c3ad-4373-979f-ed4ec98dd746")
        );
    }

    #[test]
    fn fixture_dedup_keys() {
        let Some(fx) = published("adapters::amazon::fixture_dedup_keys") else {
            return;
        };
        for (name, id) in [
            (
                "fba_inventory_availability_changes.json",
                "d0e9e693-c3ad-4373-979f-ed4ec98dd746",
            ),
            (
                "listings_item_mfn_quantity_change.json",
                "8e009934-da2c-4f9c-9bc7-93f23b7e1f60",
            ),
            ("order_change.json", "d0e9e693-c3ad-4373-979f-ed4ec98dd746"),
        ] {
            let e = env(Platform::Amazon, &[], fx.payload(&format!("amazon/{name}")));
            assert_eq!(
                super::super::payload_dedup_key(&e).as_deref(),
                Some(id),
                "{name}"
            );
        }
    }

    #[test]
    fn camel_case_and_lower_case_keys_give_the_same_facts() {
        let Some(fx) =
            published("adapters::amazon::camel_case_and_lower_case_keys_give_the_same_facts")
        else {
            return;
        };
        for (name, topic, facts) in [
            (
                "fba_inventory_availability_changes.json",
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                fba_expected(),
            ),
            (
                "listings_item_mfn_quantity_change.json",
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                mfn_expected(),
            ),
            ("order_change.json", "ORDER_CHANGE", order_expected()),
        ] {
            for f in [camel as fn(&str) -> String, |k: &str| {
                k.to_ascii_lowercase()
            }] {
                let v = rekey(&fixture_json(&fx, name), &f);
                assert!(v.get("NotificationType").is_none(), "rekeyed");
                let body = serde_json::to_vec(&v).unwrap();
                expect(body.clone(), topic, facts.clone());
                assert!(
                    dedup_key(&env(Platform::Amazon, &[], body)).is_some(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn event_bridge_wrapper_gives_the_same_facts() {
        let Some(fx) = published("adapters::amazon::event_bridge_wrapper_gives_the_same_facts")
        else {
            return;
        };
        for (name, topic, facts) in [
            (
                "fba_inventory_availability_changes.json",
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                fba_expected(),
            ),
            (
                "listings_item_mfn_quantity_change.json",
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                mfn_expected(),
            ),
            ("order_change.json", "ORDER_CHANGE", order_expected()),
        ] {
            let wrapped = event_bridge(fixture_json(&fx, name));
            expect(serde_json::to_vec(&wrapped).unwrap(), topic, facts.clone());
            // camelCase inside the wrapper too.
            let inner = rekey(&fixture_json(&fx, name), &camel);
            let mut wrapped = event_bridge(fixture_json(&fx, name));
            wrapped["detail"] = inner;
            expect(serde_json::to_vec(&wrapped).unwrap(), topic, facts);
        }
    }

    #[test]
    fn event_bridge_dedup_key_prefers_notification_id_then_event_id() {
        let Some(fx) = published(
            "adapters::amazon::event_bridge_dedup_key_prefers_notification_id_then_event_id",
        ) else {
            return;
        };
        let wrapped = event_bridge(fixture_json(&fx, "listings_item_mfn_quantity_change.json"));
        let e = env(Platform::Amazon, &[], serde_json::to_vec(&wrapped).unwrap());
        assert_eq!(
            dedup_key(&e).as_deref(),
            Some("8e009934-da2c-4f9c-9bc7-93f23b7e1f60")
        );

        let mut detail = fixture_json(&fx, "listings_item_mfn_quantity_change.json");
        detail
            .as_object_mut()
            .unwrap()
            .remove("NotificationMetadata");
        let e = env(
            Platform::Amazon,
            &[],
            serde_json::to_vec(&event_bridge(detail)).unwrap(),
        );
        assert_eq!(
            dedup_key(&e).as_deref(),
            Some("0b7c9b1c-7f35-4c4f-9e6e-5d8d5b1f0a11")
        );

        let e = env(Platform::Amazon, &[], r#"{"NotificationType": "X"}"#);
        assert_eq!(dedup_key(&e), None);
        assert_eq!(dedup_key(&env(Platform::Amazon, &[], "nope")), None);
    }

    #[test]
    fn event_bridge_detail_as_bare_payload_and_event_time() {
        // A rule with an input path may deliver the payload itself as `detail`; with no EventTime
        // the event's `time` is the event time.
        let body = json!({
            "id": "e1", "detail-type": "LISTINGS_ITEM_MFN_QUANTITY_CHANGE", "source": "aws.partner/x",
            "time": "2024-05-01T10:00:00Z",
            "detail": {"SellerId": "A1", "FulfillmentChannelCode": "AMAZON_NA", "Sku": "S-1", "Quantity": 0}
        });
        let n = run(serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            n.facts,
            vec![
                Fact::CatalogEntry {
                    item: "S-1".into(),
                    aliases: vec![],
                    sku: Some("S-1".into()),
                    title: None,
                    at: 1_714_557_600_000
                },
                Fact::InventoryLevel {
                    item: "S-1".into(),
                    location: "mfn:AMAZON_NA".into(),
                    available: Some(0),
                    at: 1_714_557_600_000
                },
            ]
        );
    }

    #[test]
    fn canceled_orders_give_no_sale() {
        let Some(fx) = published("adapters::amazon::canceled_orders_give_no_sale") else {
            return;
        };
        let mut v = fixture_json(&fx, "order_change.json");
        v["Payload"]["OrderChangeNotification"]["Summary"]["OrderStatus"] = json!("Canceled");
        let n = run(serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((n.facts, n.ignored), (vec![], false));

        let mut v = fixture_json(&fx, "order_change.json");
        v["Payload"]["OrderChangeNotification"]["Summary"]["OrderItems"][0]["OrderItemStatus"] =
            json!("Canceled");
        assert_eq!(run(serde_json::to_vec(&v).unwrap()).unwrap().facts, vec![]);
    }

    #[test]
    fn null_trigger_time_falls_back_to_event_time() {
        let Some(fx) = published("adapters::amazon::null_trigger_time_falls_back_to_event_time")
        else {
            return;
        };
        let mut v = fixture_json(&fx, "order_change.json");
        v["Payload"]["OrderChangeNotification"]["OrderChangeTrigger"]["TimeOfOrderChange"] =
            Value::Null;
        let n = run(serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(n.facts[0].at(), 1_578_701_393_109); // EventTime 2020-01-11T00:09:53.109Z
        v.as_object_mut().unwrap().remove("EventTime");
        assert_eq!(
            run(serde_json::to_vec(&v).unwrap()).unwrap().facts[0].at(),
            RECEIVED
        );
    }

    #[test]
    fn unknown_types_are_ignored() {
        for t in [
            "ANY_OFFER_CHANGED",
            "REPORT_PROCESSING_FINISHED",
            "ACCOUNT_STATUS_CHANGED",
        ] {
            let n = run(format!(r#"{{"notificationType": "{t}", "payload": {{}}}}"#)).unwrap();
            assert_eq!((n.topic.as_str(), n.ignored, n.facts.len()), (t, true, 0));
        }
    }

    #[test]
    fn not_json_and_no_topic() {
        assert!(matches!(run("<xml/>"), Err(NormalizeError::NotJson(_))));
        assert!(matches!(
            run(r#"{"Payload": {}}"#),
            Err(NormalizeError::NoTopic(_))
        ));
        assert!(matches!(
            run(r#"{"NotificationType": ""}"#),
            Err(NormalizeError::NoTopic(_))
        ));
    }

    #[test]
    fn each_required_field_missing_is_named() {
        let Some(fx) = published("adapters::amazon::each_required_field_missing_is_named") else {
            return;
        };
        let remove = |name: &str, path: &[&str], key: &str| -> Vec<u8> {
            let mut v = fixture_json(&fx, name);
            let mut cur = &mut v;
            for p in path {
                cur = if let Ok(i) = p.parse::<usize>() {
                    &mut cur[i]
                } else {
                    &mut cur[*p]
                };
            }
            cur.as_object_mut()
                .unwrap()
                .remove(key)
                .expect("key existed");
            serde_json::to_vec(&v).unwrap()
        };
        let fba = "fba_inventory_availability_changes.json";
        let mfn = "listings_item_mfn_quantity_change.json";
        let oc = "order_change.json";
        let bym = ["Payload", "FulfillmentInventoryByMarketplace", "1"];
        let ocn = ["Payload", "OrderChangeNotification"];
        let item = [
            "Payload",
            "OrderChangeNotification",
            "Summary",
            "OrderItems",
            "0",
        ];
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                remove(fba, &[], "Payload"),
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                "Payload",
            ),
            (
                remove(fba, &["Payload"], "SKU"),
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                "Payload.SKU",
            ),
            (
                remove(fba, &["Payload"], "FulfillmentInventoryByMarketplace"),
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                "Payload.FulfillmentInventoryByMarketplace",
            ),
            (
                remove(fba, &bym, "MarketplaceId"),
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                "Payload.FulfillmentInventoryByMarketplace[1].MarketplaceId",
            ),
            (
                remove(
                    fba,
                    &[&bym[..], &["FulfillmentInventory"][..]].concat(),
                    "Fulfillable",
                ),
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                "Payload.FulfillmentInventoryByMarketplace[1].FulfillmentInventory.Fulfillable",
            ),
            (
                remove(mfn, &["Payload"], "Sku"),
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                "Payload.Sku",
            ),
            (
                remove(mfn, &["Payload"], "Quantity"),
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                "Payload.Quantity",
            ),
            (
                remove(oc, &["Payload"], "OrderChangeNotification"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification",
            ),
            (
                remove(oc, &ocn, "AmazonOrderId"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.AmazonOrderId",
            ),
            (
                remove(oc, &ocn, "Summary"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.Summary",
            ),
            (
                remove(oc, &[&ocn[..], &["Summary"][..]].concat(), "OrderItems"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.Summary.OrderItems",
            ),
            (
                remove(oc, &item, "SellerSKU"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.Summary.OrderItems[0].SellerSKU",
            ),
            (
                remove(oc, &item, "OrderItemId"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.Summary.OrderItems[0].OrderItemId",
            ),
            (
                remove(oc, &item, "Quantity"),
                "ORDER_CHANGE",
                "Payload.OrderChangeNotification.Summary.OrderItems[0].Quantity",
            ),
        ];
        for (body, topic, field) in cases {
            assert_eq!(run(body), Err(missing(topic, field)), "{field}");
        }
        // Inside EventBridge the path says so.
        let mut d = fixture_json(&fx, mfn);
        d["Payload"].as_object_mut().unwrap().remove("Sku");
        assert_eq!(
            run(serde_json::to_vec(&event_bridge(d)).unwrap()),
            Err(missing(
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                "detail.Payload.Sku"
            ))
        );
    }

    #[test]
    fn float_quantity_is_a_bad_field() {
        let Some(fx) = published("adapters::amazon::float_quantity_is_a_bad_field") else {
            return;
        };
        let mut v = fixture_json(&fx, "listings_item_mfn_quantity_change.json");
        v["Payload"]["Quantity"] = json!(1.5);
        assert!(matches!(
            run(serde_json::to_vec(&v).unwrap()),
            Err(NormalizeError::BadField { field, .. }) if field == "Payload.Quantity"
        ));
    }
}
