//! Amazon Selling Partner API notifications, as they reach an HTTPS endpoint: the bare
//! notification (`NotificationType`, `EventTime`, `Payload`, `NotificationMetadata`), the
//! EventBridge event that wraps it in `detail` (an API destination without an input transformer
//! posts the whole event), or the SQS record an EventBridge Pipe from the SP-API queue posts when
//! it has no input transformer (`eventSource: "aws:sqs"`, the notification as JSON text in
//! `body`; alone or as a batch of one). A body that is none of these is dead-lettered with an
//! error naming the three forms tried. Amazon documents some types in PascalCase and others in camelCase, so
//! every key is matched ignoring ASCII case ([`get_ci`]).
//!
//! Contract, per notification type (the topic: `NotificationType`, or EventBridge `detail-type`,
//! or `detail.NotificationType`):
//! * `FBA_INVENTORY_AVAILABILITY_CHANGES`: per marketplace, a `CatalogEntry` (item = SKU, aliases
//!   `asin:<ASIN>`, `fnsku:<FNSKU>`, title = ItemName; an entry identical to one already emitted
//!   is not repeated); and one `InventoryLevel` of `Fulfillable` units per FBA inventory *pool*,
//!   not per marketplace. The North American marketplaces (US, CA, MX: Remote Fulfillment
//!   serves them from one stock) are one pool, the European Fulfillment Network's (DE, FR, IT,
//!   ES, NL, SE, PL, BE, IE) another; any other marketplace (UK, JP, AU, ...) is a pool of its
//!   own. Marketplaces of one pool report the same units, so the pool counts once, with the
//!   largest figure among them, at `fba:<the MarketplaceId reporting it>`; its other
//!   marketplaces get a level of `None` at `fba:<MarketplaceId>` (not counted), which also
//!   clears what an earlier per-marketplace reading stored there. (A sum counted the same units
//!   two or three times and hid a low level.)
//! * `LISTINGS_ITEM_MFN_QUANTITY_CHANGE`: a `CatalogEntry` (item = sku = `Sku`) and an
//!   `InventoryLevel` at `mfn` (`mfn:<FulfillmentChannelCode>` for a seller channel other than
//!   `DEFAULT`, so two channels never overwrite each other) of `Quantity`. An `AMAZON_*` code
//!   (`AMAZON_NA`, `AMAZON_EU`, `AMAZON_JP`, ...) is Amazon's own network (FBA, see
//!   [`mfn_location`]): its units are the FBA pool's, counted from
//!   `FBA_INVENTORY_AVAILABILITY_CHANGES`, so it gives a level of `None` at
//!   `mfn:<code>` (not counted; it clears what an older version stored there).
//! * `ORDER_CHANGE`: a `Sale` per `Summary.OrderItems[]` (item = SellerSKU, order =
//!   AmazonOrderId, line = OrderItemId). Amazon sends one notification per status change; the
//!   state store dedups sales on (order, line), so an order counts once. An order whose
//!   `OrderStatus` is `Canceled` (or an item whose `OrderItemStatus` is) gives no sale; a sale
//!   already counted from an earlier status is not taken back. Pending orders count: their stock
//!   is already reserved. Time: `OrderChangeTrigger.TimeOfOrderChange`, else `EventTime`.
//! * `LISTINGS_ITEM_STATUS_CHANGE` (issue 21; the schema's enum spells it `..._CHANGED`, also
//!   read): `Status` without `BUYABLE`, or with `DELETED`, gives a `Removed` (item = `Sku`);
//!   else a `CatalogEntry`, which brings the item back when newer.
//! * `LISTINGS_ITEM_ISSUES_CHANGE` (issue 21): an `EnforcementActions` entry that makes the
//!   listing unbuyable (`LISTING_SUPPRESSED`, `CATALOG_ITEM_REMOVED`) gives a `Removed` (item =
//!   `Sku`). Other issues (search or attribute suppression, warnings) and resolved ones
//!   (`Severities: ["NONE"]`) give nothing: a resolved issue alone does not say the listing is
//!   buyable again; its next `LISTINGS_ITEM_STATUS_CHANGE` or quantity change does.
//! * any other type (`ANY_OFFER_CHANGED`, ...): ignored.
//!
//! [`dedup_key`]: `NotificationMetadata.NotificationId` (bare, inside `detail`, or inside the SQS
//! record's body), else the EventBridge event `id`, else the SQS `messageId`.
//!
//! Must never: depend on key casing; treat a cancelled order as a sale; read SKUs or quantities
//! as floats.

use super::{first_time, get_ci, int, missing, parse_json, req, req_array, text};
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

/// The forms an Amazon body is tried as, named in the error when it is none of them.
const FORMS_TRIED: &str = "matches no Amazon notification form; tried: an SP-API notification \
     (NotificationType), an EventBridge event (detail-type, detail), and an SQS record from an \
     EventBridge Pipe (eventSource aws:sqs, the notification as a JSON string in body)";

/// An SQS record as an EventBridge Pipe without an input transformer delivers it (alone, or as
/// a batch of one): the SP-API notification is the JSON text of its `body`. Returns that
/// notification; `Ok(None)` when the body is not an SQS record.
fn unwrap_sqs(body: &Value) -> Result<Option<Value>, NormalizeError> {
    let record = match body {
        Value::Array(records) => match records.as_slice() {
            [one] => one,
            [] => return Ok(None),
            more => {
                return Err(NormalizeError::NoTopic(format!(
                    "an EventBridge Pipe batch of {} SQS records; set the pipe's batch size to 1",
                    more.len()
                )))
            }
        },
        other => other,
    };
    let is_sqs = get_ci(record, "eventSource")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("aws:sqs"))
        || (get_ci(record, "receiptHandle").is_some() && get_ci(record, "messageId").is_some());
    if !is_sqs {
        return Ok(None);
    }
    match get_ci(record, "body") {
        Some(Value::String(text)) => serde_json::from_str(text).map(Some).map_err(|e| {
            NormalizeError::NotJson(format!(
                "the SQS record's body (an EventBridge Pipe delivery) is not JSON: {e}"
            ))
        }),
        // A pipe that already parsed the body.
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(super::bad(
            "SQS record",
            "body",
            format!(
                "must be the notification as JSON text, found {}",
                super::kind(other)
            ),
        )),
        None => Err(missing("SQS record", "body")),
    }
}

/// The body's notification, unwrapped from an SQS record when it is one.
fn read_body(env: &Envelope) -> Result<Value, NormalizeError> {
    let body = parse_json(env)?;
    Ok(unwrap_sqs(&body)?.unwrap_or(body))
}

/// Normalizes an SP-API notification: bare, in an EventBridge event, or in an SQS record.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let body = read_body(env)?;
    let notice = Notice::read(&body);
    let topic = notice
        .topic()
        .ok_or_else(|| NormalizeError::NoTopic(FORMS_TRIED.into()))?;
    let facts = match topic.to_ascii_uppercase().as_str() {
        "FBA_INVENTORY_AVAILABILITY_CHANGES" => fba_inventory(env, topic, &notice)?,
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE" => mfn_quantity(env, topic, &notice)?,
        "ORDER_CHANGE" => order_change(env, topic, &notice)?,
        // The schema's enum spells it `..._CHANGED`; its example and the type list `..._CHANGE`.
        "LISTINGS_ITEM_STATUS_CHANGE"
        | "LISTINGS_ITEM_STATUS_CHANGED"
        | "LISTINGS_ITEM_ISSUES_CHANGE" => listing(env, topic, &notice)?,
        _ => return Ok(super::ignored(topic)),
    };
    Ok(super::read(topic, facts))
}

/// `NotificationMetadata.NotificationId` (any casing, bare or inside `detail`), else the
/// EventBridge event `id`. `None` for a body that is not JSON or has neither.
pub fn dedup_key(env: &Envelope) -> Option<String> {
    let raw: Value = serde_json::from_slice(&env.body).ok()?;
    let sqs_message_id = match &raw {
        Value::Array(a) if a.len() == 1 => get_ci(&a[0], "messageId"),
        other => get_ci(other, "messageId"),
    }
    .and_then(Value::as_str)
    .map(|s| format!("sqs:{}", s.trim()));
    let body = match unwrap_sqs(&raw) {
        Ok(Some(inner)) => inner,
        Ok(None) => raw.clone(),
        Err(_) => return None,
    };
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
        .or(sqs_message_id)
}

fn fba_inventory(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let sku = req(text, get_ci(p, "SKU"), topic, &format!("{pp}.SKU"))?;
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
    let mut facts = Vec::with_capacity(markets.len() + 1);
    // (marketplace, Fulfillable) readings, counted once per pool by [`fba_levels`].
    let mut readings: Vec<(String, i64)> = Vec::with_capacity(markets.len());
    for (i, m) in markets.iter().enumerate() {
        let mp = format!("{pp}.{list}[{i}]");
        let marketplace = req(
            text,
            get_ci(m, "MarketplaceId"),
            topic,
            &format!("{mp}.MarketplaceId"),
        )?;
        let title = text(get_ci(m, "ItemName"), topic, &format!("{mp}.ItemName"))?;
        let fulfillable = req(
            int,
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
        readings.push((marketplace, fulfillable));
    }
    for (location, available) in fba_levels(&readings) {
        facts.push(Fact::InventoryLevel {
            item: sku.clone(),
            location,
            available,
            at,
        });
    }
    Ok(facts)
}

/// The FBA levels of one SKU from its (marketplace, fulfillable units) readings: per pool
/// ([`fba_pool`]), in the order the pools first appear, the marketplace reporting the largest
/// figure (ties: the first) at `fba:<MarketplaceId>` with that figure, as the pool's marketplaces
/// report the same units; then the pools' other marketplaces at `None`, not counted. Every
/// pool's figure comes first, so a total only ever falls to its right value, never through a
/// lower one (a false alert) on the way. Catalog sync counts FBA stock with this too.
pub(crate) fn fba_levels(readings: &[(String, i64)]) -> Vec<(String, Option<i64>)> {
    struct Pool {
        name: String,
        counted: String,
        units: i64,
        others: Vec<String>,
    }
    let mut pools: Vec<Pool> = Vec::new();
    for (m, units) in readings {
        let name = fba_pool(m);
        match pools.iter_mut().find(|p| p.name == name) {
            Some(p) if *units > p.units => {
                let was = std::mem::replace(&mut p.counted, m.clone());
                p.others.push(was);
                p.units = *units;
            }
            Some(p) => p.others.push(m.clone()),
            None => pools.push(Pool {
                name,
                counted: m.clone(),
                units: *units,
                others: Vec::new(),
            }),
        }
    }
    let mut levels: Vec<(String, Option<i64>)> = pools
        .iter()
        .map(|p| (format!("fba:{}", p.counted), Some(p.units)))
        .collect();
    for p in &pools {
        levels.extend(p.others.iter().map(|m| (format!("fba:{m}"), None)));
    }
    levels
}

/// The FBA inventory pool a marketplace sells from: `na` or `eu` for the marketplaces
/// of one fulfillment network, whose Fulfillable figures are views of the same units (North
/// America's Remote Fulfillment serves Canada and Mexico from US stock; the European
/// Fulfillment Network and Pan-European FBA serve the EU marketplaces from one stock); else
/// the MarketplaceId, a pool of its own (UK since 2021, Japan, Australia, ...). (No marketplace
/// id is two lowercase letters, so the names never collide.)
fn fba_pool(marketplace: &str) -> String {
    const NA: &[&str] = &["ATVPDKIKX0DER", "A2EUQ1WTGCTBG2", "A1AM78C64UM0Y8"];
    const EU: &[&str] = &[
        "A1PA6795UKMFR9", // Germany
        "A13V1IB3VIYZZH", // France
        "APJ6JRA9NG5V4",  // Italy
        "A1RKKUPIHCS9HS", // Spain
        "A1805IZSGTT6HS", // Netherlands
        "A2NODRKZP88ZB9", // Sweden
        "A1C3SOZRARQ6R3", // Poland
        "AMEN7PMS3EDWL",  // Belgium
        "A28R8C7NBKEWEA", // Ireland
    ];
    let id = marketplace.trim();
    if NA.iter().any(|m| m.eq_ignore_ascii_case(id)) {
        "na".into()
    } else if EU.iter().any(|m| m.eq_ignore_ascii_case(id)) {
        "eu".into()
    } else {
        id.to_string()
    }
}

fn mfn_quantity(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let sku = req(text, get_ci(p, "Sku"), topic, &format!("{pp}.Sku"))?;
    let quantity = req(int, get_ci(p, "Quantity"), topic, &format!("{pp}.Quantity"))?;
    let channel = text(
        get_ci(p, "FulfillmentChannelCode"),
        topic,
        &format!("{pp}.FulfillmentChannelCode"),
    )?;
    let (location, available) = match mfn_location(channel.as_deref().unwrap_or("DEFAULT")) {
        Some(location) => (location, Some(quantity)),
        // Fulfilled by Amazon: the FBA pool's units, already counted.
        None => (format!("mfn:{}", channel.unwrap_or_default().trim()), None),
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
            available,
            at,
        },
    ])
}

/// Where merchant-fulfilled units of a Listings `fulfillmentChannelCode` are counted: `DEFAULT`
/// (the seller's own network) at `mfn`, another seller channel at `mfn:<code>`; `None` for an
/// `AMAZON_*` code (`AMAZON_NA`, `AMAZON_EU`, `AMAZON_JP`, ...), Amazon's fulfillment network,
/// whose quantity is the FBA stock `getInventorySummaries` and `FBA_INVENTORY_AVAILABILITY_CHANGES`
/// already count (published Listings Items shapes: an FBA listing's `fulfillmentAvailability`
/// is `[{"fulfillmentChannelCode": "AMAZON_NA", "quantity": 12}]`, a merchant one's
/// `[{"fulfillmentChannelCode": "DEFAULT", "quantity": 5}]`), and for an empty code. Webhook
/// and catalog sync both place MFN stock with this.
pub(crate) fn mfn_location(channel: &str) -> Option<String> {
    let c = channel.trim();
    let upper = c.to_ascii_uppercase();
    if upper == "DEFAULT" {
        Some("mfn".into())
    } else if upper.starts_with("AMAZON") || c.is_empty() {
        None
    } else {
        Some(format!("mfn:{c}"))
    }
}

/// The enforcement actions that take a listing's buyability away (Amazon's schema:
/// `LISTING_SUPPRESSED` "takes down the current listing item's buyability";
/// `CATALOG_ITEM_REMOVED`: "all offers against it ... are non-buyable").
const UNBUYABLE_ACTIONS: [&str; 2] = ["LISTING_SUPPRESSED", "CATALOG_ITEM_REMOVED"];

/// Removal paths (issue 21), the two listings notifications (item = `Payload.Sku`):
/// * `LISTINGS_ITEM_STATUS_CHANGE` (`Payload.Status`, a list such as `["BUYABLE",
///   "DISCOVERABLE"]`): a listing that is not `BUYABLE` (closed, deleted, suppressed) leaves the
///   catalog; a buyable one is reported again (a `CatalogEntry`, which brings it back when newer
///   than its removal);
/// * `LISTINGS_ITEM_ISSUES_CHANGE` (`Payload.EnforcementActions`, optional): a `Removed` when
///   an action makes the listing unbuyable, else nothing.
fn listing(env: &Envelope, topic: &str, n: &Notice<'_>) -> Result<Vec<Fact>, NormalizeError> {
    let (p, pp) = n.payload(topic)?;
    let sku = req(text, get_ci(p, "Sku"), topic, &format!("{pp}.Sku"))?;
    let at = first_time(env, &n.times());
    let removed = |reason: String| {
        Ok(vec![Fact::Removed {
            item: sku.clone(),
            reason,
            at,
        }])
    };
    if topic.eq_ignore_ascii_case("LISTINGS_ITEM_ISSUES_CHANGE") {
        let actions = match get_ci(p, "EnforcementActions") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            a => req_array(a, topic, &format!("{pp}.EnforcementActions"))?,
        };
        let unbuyable: Vec<&str> = actions
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| UNBUYABLE_ACTIONS.iter().any(|u| a.eq_ignore_ascii_case(u)))
            .collect();
        if unbuyable.is_empty() {
            return Ok(Vec::new());
        }
        return removed(format!("listing not buyable ({})", unbuyable.join(", ")));
    }
    let status = req_array(get_ci(p, "Status"), topic, &format!("{pp}.Status"))?;
    let has = |state: &str| {
        status
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(state)))
    };
    if has("DELETED") {
        return removed("listing deleted".into());
    }
    if !has("BUYABLE") {
        return removed("listing not buyable".into());
    }
    Ok(vec![Fact::CatalogEntry {
        item: sku.clone(),
        aliases: Vec::new(),
        sku: Some(sku),
        title: None,
        at,
    }])
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
    let order = req(
        text,
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
        let line = req(text, get_ci(it, "OrderItemId"), topic, &f("OrderItemId"))?;
        let sku = req(text, get_ci(it, "SellerSKU"), topic, &f("SellerSKU"))?;
        let quantity = req(int, get_ci(it, "Quantity"), topic, &f("Quantity"))?;
        let item_status = text(get_ci(it, "OrderItemStatus"), topic, &f("OrderItemStatus"))?;
        if quantity == 0 || is_canceled(item_status.as_deref()) {
            continue;
        }
        facts.push(super::sale(sku, quantity, &order, line, at));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::{data, entry, env, level, sale, RECEIVED};
    use serde_json::json;
    use stockhook_shared::config::Platform;

    fn run(body: impl Into<Vec<u8>>) -> Result<Normalized, NormalizeError> {
        normalize(&env(Platform::Amazon, &[], body))
    }

    fn fixture_json(name: &str) -> Value {
        serde_json::from_slice(&data(&format!("amazon/{name}"))).unwrap()
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
            entry(
                "SELLERSKU-1",
                &["asin:B00001ABCD", "fnsku:X001ABCDEF"],
                Some("SELLERSKU-1"),
                Some("Product Title"),
                at,
            ),
            // US 50 and CA 40 are one North American pool: 50, not 90 (issue 13, item 6).
            level("SELLERSKU-1", "fba:ATVPDKIKX0DER", Some(50), at),
            level("SELLERSKU-1", "fba:A2EUQ1WTGCTBG2", None, at),
        ]
    }

    fn mfn_expected() -> Vec<Fact> {
        let at = 1_612_378_770_194; // 2021-02-03T18:59:30.194Z
        vec![
            entry("NLS-SHOES-03", &[], Some("NLS-SHOES-03"), None, at),
            level("NLS-SHOES-03", "mfn", Some(99), at),
        ]
    }

    fn order_expected() -> Vec<Fact> {
        // At TimeOfOrderChange, 2022-11-29T19:42:04.284Z.
        vec![sale(
            "SellerSKUID1",
            10,
            "903-8868176-2219830",
            "OIID34853450",
            1_669_750_924_284,
        )]
    }

    /// Each published notification that gives facts: file, topic, the facts it gives.
    fn published_cases() -> [(&'static str, &'static str, Vec<Fact>); 3] {
        [
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
        ]
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
        expect(
            data("amazon/fba_inventory_availability_changes.json"),
            "FBA_INVENTORY_AVAILABILITY_CHANGES",
            fba_expected(),
        );
    }

    /// Amazon's published FBA example with the marketplaces replaced: `(id, Fulfillable)`.
    fn fba_in(markets: &[(&str, i64)]) -> Vec<u8> {
        let mut v = fixture_json("fba_inventory_availability_changes.json");
        let template = v["Payload"]["FulfillmentInventoryByMarketplace"][0].clone();
        v["Payload"]["FulfillmentInventoryByMarketplace"] = markets
            .iter()
            .map(|(id, n)| {
                let mut m = template.clone();
                m["MarketplaceId"] = json!(id);
                m["FulfillmentInventory"]["Fulfillable"] = json!(n);
                m
            })
            .collect();
        serde_json::to_vec(&v).unwrap()
    }

    fn levels(body: Vec<u8>) -> Vec<(String, Option<i64>)> {
        run(body)
            .unwrap()
            .facts
            .into_iter()
            .filter_map(|f| match f {
                Fact::InventoryLevel {
                    location,
                    available,
                    ..
                } => Some((location, available)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fba_units_are_counted_once_per_pool() {
        // Pan-European FBA: DE, FR and IT sell the same 12 units; the UK has its own stock;
        // Japan is another region.
        assert_eq!(
            levels(fba_in(&[
                ("A1PA6795UKMFR9", 12),
                ("A13V1IB3VIYZZH", 12),
                ("A1F83G8C2ARO7P", 4),
                ("APJ6JRA9NG5V4", 11),
            ])),
            vec![
                ("fba:A1PA6795UKMFR9".to_string(), Some(12)),
                ("fba:A1F83G8C2ARO7P".to_string(), Some(4)),
                ("fba:A13V1IB3VIYZZH".to_string(), None),
                ("fba:APJ6JRA9NG5V4".to_string(), None),
            ]
        );
        // The largest figure wins, wherever it comes in the list.
        assert_eq!(
            levels(fba_in(&[("A2EUQ1WTGCTBG2", 7), ("ATVPDKIKX0DER", 9)])),
            vec![
                ("fba:ATVPDKIKX0DER".to_string(), Some(9)),
                ("fba:A2EUQ1WTGCTBG2".to_string(), None),
            ]
        );
        assert_eq!(
            levels(fba_in(&[("A1VC38T7YXB528", 3)])),
            vec![("fba:A1VC38T7YXB528".to_string(), Some(3))]
        );
    }

    /// An SQS record as the AWS docs show one (EventBridge Pipes, "Amazon SQS as a source";
    /// worker/tests/data/amazon/README), carrying Amazon's published notification as JSON text.
    fn sqs_record(notification: &[u8]) -> Value {
        let mut record: Value =
            serde_json::from_slice(&data("amazon/sqs_record_pipe_aws_docs.json")).unwrap();
        record["body"] = json!(std::str::from_utf8(notification).unwrap());
        record
    }

    #[test]
    fn sqs_record_from_an_event_bridge_pipe_is_unwrapped() {
        // Issue 13, item 5: without an input transformer the pipe posts the SQS record.
        for (name, topic, facts) in published_cases() {
            let record = sqs_record(&data(&format!("amazon/{name}")));
            for body in [record.clone(), json!([record.clone()])] {
                let bytes = serde_json::to_vec(&body).unwrap();
                expect(bytes.clone(), topic, facts.clone());
                // The notification's own id is the dedup key, not the SQS message id.
                let key = dedup_key(&env(Platform::Amazon, &[], bytes)).unwrap();
                assert!(!key.starts_with("sqs:"), "{name}: {key}");
            }
        }
        // A batch of two cannot be one event: the error says what to configure.
        let record = sqs_record(&data("amazon/order_change.json"));
        let err = run(serde_json::to_vec(&json!([record.clone(), record])).unwrap()).unwrap_err();
        assert!(err.to_string().contains("batch size to 1"), "{err}");
    }

    #[test]
    fn a_body_of_no_known_form_names_the_forms_tried() {
        for body in [
            r#"{"Records": [{"body": "x"}]}"#,
            r#"{"hello": "world"}"#,
            r#"[]"#,
        ] {
            let err = run(body).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, NormalizeError::NoTopic(_)), "{body}: {msg}");
            for form in ["SP-API notification", "EventBridge event", "SQS record"] {
                assert!(msg.contains(form), "{body}: {msg}");
            }
        }
        let mut record = sqs_record(b"{}");
        record["body"] = json!("not json");
        assert!(matches!(
            run(serde_json::to_vec(&record).unwrap()),
            Err(NormalizeError::NotJson(_))
        ));
    }

    #[test]
    fn fixture_listings_item_mfn_quantity_change() {
        expect(
            data("amazon/listings_item_mfn_quantity_change.json"),
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
            mfn_expected(),
        );
    }

    #[test]
    fn fixture_order_change() {
        expect(
            data("amazon/order_change.json"),
            "ORDER_CHANGE",
            order_expected(),
        );
    }

    /// Issue 21: `LISTINGS_ITEM_STATUS_CHANGE` in the shape of Amazon's published schema
    /// (selling-partner-api-models, ListingsItemStatusChangeNotification.json).
    #[test]
    fn listing_status_change_removes_unbuyable_listings() {
        let note = |status: Value| {
            json!({
                "NotificationVersion": "1.0",
                "NotificationType": "LISTINGS_ITEM_STATUS_CHANGE",
                "PayloadVersion": "1.0",
                "EventTime": "2021-02-03T18:59:30.194Z",
                "Payload": {
                    "SellerId": "A3AYAZLIQ7AX77",
                    "MarketplaceId": "ATVPDKIKX0DER",
                    "Asin": "BT6RZ7JM4H",
                    "Sku": "NLS-SHOES-03",
                    "CreatedDate": "2021-02-03T18:50:26.196Z",
                    "Status": status
                },
                "NotificationMetadata": {
                    "ApplicationId": "amzn1.sellerapps.app.f108f511-eeac-46a6-b125-bcb752069ed0",
                    "SubscriptionId": "93b098e1-c42-2f45-93a1-78910a6a8369",
                    "PublishTime": "2021-02-03T18:59:30.194Z",
                    "NotificationId": "8e009934-da2c-4f9c-9bc7-93f23b7e1f60"
                }
            })
            .to_string()
        };
        let at = 1_612_378_770_194;
        assert_eq!(
            run(note(json!(["DISCOVERABLE"]))).unwrap().facts,
            vec![Fact::Removed {
                item: "NLS-SHOES-03".into(),
                reason: "listing not buyable".into(),
                at,
            }]
        );
        assert_eq!(
            run(note(json!(["BUYABLE", "DISCOVERABLE"]))).unwrap().facts,
            vec![entry("NLS-SHOES-03", &[], Some("NLS-SHOES-03"), None, at)]
        );
    }

    /// Issue 21: `LISTINGS_ITEM_ISSUES_CHANGE`, Amazon's published example (2023-12-13 payload)
    /// with `LISTING_SUPPRESSED` and `CATALOG_ITEM_REMOVED`, removes the listing; the same
    /// notification with only search suppression, or with its issues resolved, gives nothing.
    #[test]
    fn fixture_listings_item_issues_change_removes_an_unbuyable_listing() {
        let published = fixture_json("listings_item_issues_change.json");
        let at = 1_707_159_570_194; // EventTime 2024-02-05T18:59:30.194Z
        assert_eq!(
            run(published.to_string()).unwrap().facts,
            vec![Fact::Removed {
                item: "NLS-SHOES-03".into(),
                reason: "listing not buyable (LISTING_SUPPRESSED, CATALOG_ITEM_REMOVED)".into(),
                at,
            }]
        );
        let with = |severities: Value, actions: Option<Value>| {
            let mut v = published.clone();
            v["Payload"]["Severities"] = severities;
            match actions {
                Some(a) => v["Payload"]["EnforcementActions"] = a,
                None => {
                    v["Payload"]
                        .as_object_mut()
                        .expect("payload object")
                        .remove("EnforcementActions");
                }
            }
            run(v.to_string()).unwrap()
        };
        let hidden = with(json!(["ERROR"]), Some(json!(["SEARCH_SUPPRESSED"])));
        assert_eq!(hidden.facts, vec![]);
        assert!(!hidden.ignored, "a read notification, not an unknown one");
        assert_eq!(with(json!(["NONE"]), None).facts, vec![]);
        // Through EventBridge, the same facts.
        assert_eq!(
            run(event_bridge(published.clone()).to_string())
                .unwrap()
                .facts
                .len(),
            1
        );
    }

    #[test]
    fn fixture_any_offer_changed_is_ignored() {
        let e = env(Platform::Amazon, &[], data("amazon/any_offer_changed.json"));
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
            let e = env(Platform::Amazon, &[], data(&format!("amazon/{name}")));
            assert_eq!(
                super::super::payload_dedup_key(&e).as_deref(),
                Some(id),
                "{name}"
            );
        }
    }

    #[test]
    fn camel_case_and_lower_case_keys_give_the_same_facts() {
        for (name, topic, facts) in published_cases() {
            for f in [camel as fn(&str) -> String, |k: &str| {
                k.to_ascii_lowercase()
            }] {
                let v = rekey(&fixture_json(name), &f);
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
        for (name, topic, facts) in published_cases() {
            let wrapped = event_bridge(fixture_json(name));
            expect(serde_json::to_vec(&wrapped).unwrap(), topic, facts.clone());
            // camelCase inside the wrapper too.
            let inner = rekey(&fixture_json(name), &camel);
            let mut wrapped = event_bridge(fixture_json(name));
            wrapped["detail"] = inner;
            expect(serde_json::to_vec(&wrapped).unwrap(), topic, facts);
        }
    }

    #[test]
    fn event_bridge_dedup_key_prefers_notification_id_then_event_id() {
        let wrapped = event_bridge(fixture_json("listings_item_mfn_quantity_change.json"));
        let e = env(Platform::Amazon, &[], serde_json::to_vec(&wrapped).unwrap());
        assert_eq!(
            dedup_key(&e).as_deref(),
            Some("8e009934-da2c-4f9c-9bc7-93f23b7e1f60")
        );

        let mut detail = fixture_json("listings_item_mfn_quantity_change.json");
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
                entry("S-1", &[], Some("S-1"), None, 1_714_557_600_000),
                // AMAZON_NA is Amazon's network: FBA units, not counted again as MFN.
                level("S-1", "mfn:AMAZON_NA", None, 1_714_557_600_000),
            ]
        );
    }

    #[test]
    fn canceled_orders_give_no_sale() {
        let mut v = fixture_json("order_change.json");
        v["Payload"]["OrderChangeNotification"]["Summary"]["OrderStatus"] = json!("Canceled");
        let n = run(serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((n.facts, n.ignored), (vec![], false));

        let mut v = fixture_json("order_change.json");
        v["Payload"]["OrderChangeNotification"]["Summary"]["OrderItems"][0]["OrderItemStatus"] =
            json!("Canceled");
        assert_eq!(run(serde_json::to_vec(&v).unwrap()).unwrap().facts, vec![]);
    }

    #[test]
    fn null_trigger_time_falls_back_to_event_time() {
        let mut v = fixture_json("order_change.json");
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
        // The fixture without the key the error should name (`A.B[1].C` removes `C` there).
        let remove = |name: &str, field: &str| -> Vec<u8> {
            let mut v = fixture_json(name);
            let mut steps: Vec<&str> = field
                .split('.')
                .flat_map(|s| s.split('[').map(|s| s.trim_end_matches(']')))
                .collect();
            let key = steps.pop().expect("a field");
            let mut cur = &mut v;
            for p in steps {
                cur = match p.parse::<usize>() {
                    Ok(i) => &mut cur[i],
                    Err(_) => &mut cur[p],
                };
            }
            cur.as_object_mut()
                .unwrap()
                .remove(key)
                .expect("key existed");
            serde_json::to_vec(&v).unwrap()
        };
        let mfn = "listings_item_mfn_quantity_change.json";
        let cases: [(&str, &str, &[&str]); 3] = [
            (
                "fba_inventory_availability_changes.json",
                "FBA_INVENTORY_AVAILABILITY_CHANGES",
                &[
                    "Payload",
                    "Payload.SKU",
                    "Payload.FulfillmentInventoryByMarketplace",
                    "Payload.FulfillmentInventoryByMarketplace[1].MarketplaceId",
                    "Payload.FulfillmentInventoryByMarketplace[1].FulfillmentInventory.Fulfillable",
                ],
            ),
            (
                mfn,
                "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
                &["Payload.Sku", "Payload.Quantity"],
            ),
            (
                "order_change.json",
                "ORDER_CHANGE",
                &[
                    "Payload.OrderChangeNotification",
                    "Payload.OrderChangeNotification.AmazonOrderId",
                    "Payload.OrderChangeNotification.Summary",
                    "Payload.OrderChangeNotification.Summary.OrderItems",
                    "Payload.OrderChangeNotification.Summary.OrderItems[0].SellerSKU",
                    "Payload.OrderChangeNotification.Summary.OrderItems[0].OrderItemId",
                    "Payload.OrderChangeNotification.Summary.OrderItems[0].Quantity",
                ],
            ),
        ];
        for (fixture, topic, fields) in cases {
            for field in fields {
                assert_eq!(
                    run(remove(fixture, field)),
                    Err(missing(topic, field)),
                    "{field}"
                );
            }
        }
        // Inside EventBridge the path says so.
        let mut d = fixture_json(mfn);
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
        let mut v = fixture_json("listings_item_mfn_quantity_change.json");
        v["Payload"]["Quantity"] = json!(1.5);
        assert!(matches!(
            run(serde_json::to_vec(&v).unwrap()),
            Err(NormalizeError::BadField { field, .. }) if field == "Payload.Quantity"
        ));
    }
}
