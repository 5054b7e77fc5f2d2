//! eBay adapter. eBay reaches stockhook two ways, and this module reads both:
//! * the Notification API (JSON: `metadata.topic`, `notification{notificationId, eventDate,
//!   data}`). Its only seller-side topic is `MARKETPLACE_ACCOUNT_DELETION`, which gives no facts
//!   and is NOT ignored (`ignored: false`): the worker purges the user's records, found with
//!   [`ebay_deleted_user`]. Its other topics (listing revisions and price/availability for
//!   buyers) carry no stock quantity and are ignored;
//! * legacy Trading API Platform Notifications (SOAP XML, the only eBay path for sales and
//!   quantities). The event name comes from the `SOAPAction` header (its last path segment), else
//!   the body's `NotificationEventName`. The body is the matching call's response
//!   (GetItemTransactionsResponse or GetItemResponse); elements are matched by local name, so
//!   namespace prefixes do not matter. The response's `Timestamp` is the event time.
//!   - `FixedPriceTransaction`, `AuctionCheckoutComplete`, `ItemSold`: a `Sale` per
//!     `TransactionArray.Transaction` (item = ItemID, quantity = QuantityPurchased, order =
//!     `<ItemID>-<TransactionID>`, line = TransactionID; auction transactions may all have
//!     TransactionID 0, so the order key must carry the ItemID). That is the key catalog sync
//!     gives the same sale read from Fulfillment `getOrders` (`<legacyItemId>-<lineItemId>`,
//!     `lineItemId`; eBay: "both legacyItemId and legacyTransactionId are needed to identify an
//!     order line item"), so a sale seen by both counts once. `OrderLineItemID` is not used:
//!     it is absent from some responses, and eBay's 2019 order id change names it among the ids
//!     not to parse.
//!     `ItemSold` (a GetItemResponse) usually has no transaction: it gives one `Sale` of
//!     QuantityPurchased, else 1, keyed order = ItemID, line = `ItemSold`. Subscribe to either
//!     `ItemSold` or the transaction events, not both, or a sale counts twice.
//!   - `ItemClosed`, `ItemUnsold`, and `ItemSold` of a single-quantity listing (issue 21): the
//!     listing ended, a `Removed` for ItemID after the other facts.
//!   - `ItemSuspended` (issue 21): eBay took the listing down, a `Removed` for its ItemID. eBay
//!     publishes it in the older `Notification/Event/ItemSuspended/ItemId` form (no call
//!     response): the event is then the element under `Event`, its time `Event/EventTime/EBayTime`.
//!   - `ItemListed`, `ItemRevised`, `ItemClosed`: an `InventoryLevel` at location `ebay` of
//!     `Item.Quantity - Item.SellingStatus.QuantitySold` (absent QuantitySold is 0).
//!   - Every SOAP event that carries `Item.Quantity` (sales included: without that, sales would
//!     never lower eBay stock) gives that level too, and a `CatalogEntry` (item = ItemID, sku =
//!     Item.SKU, title = Item.Title) when the item has a SKU or a title.
//!   - other events: ignored.
//!
//!   - A multi-variation listing (`Item.Variations.Variation` blocks) is tracked per variation:
//!     each is its own item `<ItemID>:<SKU>` (else `<ItemID>:<Name>=<Value>;...` from its
//!     `VariationSpecifics` when the listing does not use SKUs), with a `CatalogEntry` (sku =
//!     Variation.SKU, title = "Item.Title - Black / L") and a level of `Variation.Quantity -
//!     Variation.SellingStatus.QuantitySold`. The listing's own Quantity (their total) gives no
//!     level then. A transaction naming a `Variation` is a sale of that variation.
//!
//! Must never: expand DTD entities or fetch anything an XML body names (quick-xml does neither);
//! put element text into an error (buyer names and addresses live in these bodies).

use super::{fallback_time, missing, parse_json, parse_time};
use crate::facts::{Fact, NormalizeError, Normalized};
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::Value;
use stockhook_shared::envelope::Envelope;

const ACCOUNT_DELETION: &str = "MARKETPLACE_ACCOUNT_DELETION";

/// Normalizes an eBay notification: SOAP (legacy Platform Notifications) or Notification API JSON.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    if is_xml(&env.body) {
        soap(env)
    } else {
        json(env)
    }
}

/// The deleted user's id (`data.userId`, else `data.username`) of a MARKETPLACE_ACCOUNT_DELETION
/// notification, so the worker can purge that user's records; `None` for anything else.
pub fn ebay_deleted_user(env: &Envelope) -> Option<String> {
    if is_xml(&env.body) {
        return None;
    }
    let body: Value = serde_json::from_slice(&env.body).ok()?;
    if !json_topic(&body)?.eq_ignore_ascii_case(ACCOUNT_DELETION) {
        return None;
    }
    deleted_user_of(&body)
}

/// `notification.notificationId` of a Notification API message; `None` for SOAP (it has none).
pub fn dedup_key(env: &Envelope) -> Option<String> {
    if is_xml(&env.body) {
        return None;
    }
    let body: Value = serde_json::from_slice(&env.body).ok()?;
    body.get("notification")?
        .get("notificationId")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// True when the body's first non-blank character (after a UTF-8 BOM) is `<`.
fn is_xml(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

// --- Notification API (JSON) -----------------------------------------------------------------

fn json_topic(body: &Value) -> Option<&str> {
    body.get("metadata")?
        .get("topic")?
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// eBay's opaque, immutable `userId`: what the purge searches for and the only identifier that
/// is logged. (The `username` is customer data: never taken here, never logged.)
fn deleted_user_of(body: &Value) -> Option<String> {
    body.get("notification")?
        .get("data")?
        .get("userId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn json(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let body = parse_json(env)?;
    let topic = json_topic(&body).ok_or_else(|| {
        NormalizeError::NoTopic("no metadata.topic in the eBay notification".into())
    })?;
    if topic.eq_ignore_ascii_case(ACCOUNT_DELETION) {
        // The purge needs the user: a deletion notice without one is dead-lettered for an
        // operator to see rather than silently dropped.
        if deleted_user_of(&body).is_none() {
            return Err(missing(topic, "notification.data.userId"));
        }
        return Ok(Normalized {
            topic: topic.to_string(),
            facts: Vec::new(),
            ignored: false,
        });
    }
    Ok(Normalized {
        topic: topic.to_string(),
        facts: Vec::new(),
        ignored: true,
    })
}

// --- Platform Notifications (SOAP) -----------------------------------------------------------

/// An XML element: local name, its text (concatenated, entities resolved), its child elements.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) children: Vec<Node>,
}

impl Node {
    fn named(name: &[u8]) -> Node {
        Node {
            name: String::from_utf8_lossy(name).into_owned(),
            ..Node::default()
        }
    }

    pub(crate) fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub(crate) fn children_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first element named `name` at or below this one, depth first.
    pub(crate) fn find(&self, name: &str) -> Option<&Node> {
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            if n.name == name {
                return Some(n);
            }
            stack.extend(n.children.iter().rev());
        }
        None
    }

    /// The trimmed, non-empty text of the element at `path` below this one.
    pub(crate) fn text_at(&self, path: &[&str]) -> Option<&str> {
        let mut n = self;
        for p in path {
            n = n.child(p)?;
        }
        Some(n.text.trim()).filter(|t| !t.is_empty())
    }
}

/// Deeper than any eBay response; a bound so a hostile body cannot exhaust memory by nesting.
const MAX_DEPTH: usize = 128;

/// Whether `body` holds nothing but a byte order mark and whitespace before byte `at`.
fn only_blank_before(body: &[u8], at: impl TryInto<usize>) -> bool {
    let Ok(at) = at.try_into() else { return false };
    let before = body.get(..at).unwrap_or(body);
    let before = before.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(before);
    before.iter().all(u8::is_ascii_whitespace)
}

/// Parses the body into its document element.
pub(crate) fn parse_xml(body: &[u8]) -> Result<Node, NormalizeError> {
    let not_xml = |m: String| NormalizeError::NotXml(m);
    // The parser's error by kind only: its message quotes the document.
    let at_byte = |pos: u64, e: &dyn std::fmt::Debug| {
        not_xml(format!(
            "at byte {pos}: {}",
            stockhook_shared::redact::error_kind(e)
        ))
    };
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| not_xml(format!("not UTF-8: {e}")))?;
    // Text is kept untrimmed (trimming each event would eat the space before an entity or a
    // CDATA section); `Node::text_at` trims the whole text instead.
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = vec![Node::default()];
    // Per open element: what markup followed its text, if any. Text after that would be joined
    // to the text before into a value the document never spells (a `<Timestamp>` split by a
    // `<?pi?>`): eBay sends each element's text in one piece, so such a body is not its shape.
    let mut after_text: Vec<Option<&'static str>> = vec![None];
    fn markup(stack: &[Node], after_text: &mut [Option<&'static str>], what: &'static str) {
        if let (Some(top), Some(seen)) = (stack.last(), after_text.last_mut()) {
            if seen.is_none() && !top.text.trim().is_empty() {
                *seen = Some(what);
            }
        }
    }
    // More text where `after_text` says markup followed the element's text: refused.
    let resumed = |after_text: &[Option<&'static str>], s: &str, at: u64| match after_text
        .last()
        .copied()
        .flatten()
    {
        Some(what) if !s.trim().is_empty() => Err(not_xml(format!(
            "at byte {at}: an element's text is split by {what} (eBay sends it in one piece)"
        ))),
        _ => Ok(()),
    };
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| at_byte(reader.error_position(), &e))?;
        match event {
            // eBay declares its documents first and sends no DOCTYPE: a declaration anywhere
            // else (in an element's text, after the root opened) or a DOCTYPE (which can declare
            // entities) is not its shape, and is refused rather than parsed around. Blank lines
            // or a byte order mark before it are tolerated (a relay may add them).
            Event::Decl(_) if !only_blank_before(body, at) => {
                return Err(not_xml(format!(
                    "at byte {at}: an XML declaration that is not at the start of the document"
                )))
            }
            Event::DocType(_) => {
                return Err(not_xml(format!(
                    "at byte {at}: a DOCTYPE declaration (eBay sends none)"
                )))
            }
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(not_xml(format!("nested deeper than {MAX_DEPTH} elements")));
                }
                markup(&stack, &mut after_text, "an element");
                stack.push(Node::named(e.local_name().as_ref()));
                after_text.push(None);
            }
            Event::Empty(e) => {
                markup(&stack, &mut after_text, "an element");
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node::named(e.local_name().as_ref()));
                }
            }
            Event::End(_) => {
                let node = match stack.pop() {
                    Some(n) if !stack.is_empty() => n,
                    _ => return Err(not_xml("end tag without a start tag".into())),
                };
                after_text.pop();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Event::PI(_) => markup(&stack, &mut after_text, "a processing instruction"),
            Event::Comment(_) => markup(&stack, &mut after_text, "a comment"),
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| at_byte(reader.buffer_position(), &e))?;
                resumed(&after_text, &s, reader.buffer_position())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(c) => {
                let bytes = c.into_inner();
                let s = std::str::from_utf8(&bytes)
                    .map_err(|e| not_xml(format!("CDATA is not UTF-8: {e}")))?;
                resumed(&after_text, s, reader.buffer_position())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(s);
                }
            }
            Event::Eof => break,
            // The declaration at the start: nothing to read.
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(not_xml("document ends inside an element".into()));
    }
    stack
        .pop()
        .and_then(|root| root.children.into_iter().next())
        .ok_or_else(|| not_xml("no root element".into()))
}

/// The event name: the last path segment of the SOAPAction header
/// (`"http://developer.ebay.com/notification/ItemSold"`).
fn soap_action_event(env: &Envelope) -> Option<String> {
    let v = env.header("soapaction")?.trim().trim_matches('"').trim();
    let name = v.rsplit('/').next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn xml_int(
    node: &Node,
    path: &[&str],
    topic: &str,
    field: &str,
) -> Result<Option<i64>, NormalizeError> {
    match node.text_at(path) {
        None => Ok(None),
        Some(t) => t
            .parse::<i64>()
            .map(Some)
            .map_err(|_| super::bad(topic, field, "is not a whole number")),
    }
}

fn soap(env: &Envelope) -> Result<Normalized, NormalizeError> {
    let doc = parse_xml(&env.body)?;
    // The response element (GetItemResponse, ...) is the first child of the SOAP Body; a bare
    // response without the SOAP envelope is accepted as well.
    let response = doc
        .find("Body")
        .and_then(|b| b.children.first())
        .unwrap_or(&doc);
    let topic = soap_action_event(env)
        .or_else(|| {
            response
                .find("NotificationEventName")
                .and_then(|n| Some(n.text.trim()).filter(|t| !t.is_empty()))
                .map(str::to_string)
        })
        .or_else(|| event_element(response).map(|e| e.name.clone()))
        .ok_or_else(|| {
            let header = if env.header("soapaction").is_some() {
                "a SOAPAction header that names no event"
            } else {
                "no SOAPAction header"
            };
            NormalizeError::NoTopic(format!(
                "{header} and no NotificationEventName in the SOAP body: cannot tell which eBay \
                 event this is"
            ))
        })?;
    let at = response
        .text_at(&["Timestamp"])
        .or_else(|| response.text_at(&["Event", "EventTime", "EBayTime"]))
        .and_then(parse_time)
        .unwrap_or_else(|| fallback_time(env));
    let facts = match topic.as_str() {
        "FixedPriceTransaction" | "AuctionCheckoutComplete" | "ItemSold" => {
            let mut facts = item_facts(response, &topic, at, false)?;
            facts.extend(sales(response, &topic, at)?);
            facts.extend(single_quantity_sold(response, &topic, at)?);
            facts
        }
        "ItemListed" | "ItemRevised" => item_facts(response, &topic, at, true)?,
        "ItemClosed" | "ItemUnsold" => {
            let mut facts = item_facts(response, &topic, at, topic == "ItemClosed")?;
            facts.extend(listing_ended(response, &topic, at)?);
            facts
        }
        "ItemSuspended" => item_suspended(response, &topic, at)?,
        _ => {
            return Ok(Normalized {
                topic,
                facts: Vec::new(),
                ignored: true,
            })
        }
    };
    Ok(Normalized {
        topic,
        facts,
        ignored: false,
    })
}

/// Removal path (issue 21). `ItemClosed`, `ItemUnsold`: the listing ended, the item leaves the
/// catalog (after its last level, which stays as history).
fn listing_ended(response: &Node, topic: &str, at: i64) -> Result<Vec<Fact>, NormalizeError> {
    Ok(vec![Fact::Removed {
        item: item_id(response, topic)?,
        reason: format!("eBay listing ended ({topic})"),
        at,
    }])
}

/// The event element of the older notification form `Notification/Event/<EventName>`, which
/// carries no `NotificationEventName`.
fn event_element(response: &Node) -> Option<&Node> {
    response
        .child("Event")?
        .children
        .iter()
        .find(|c| c.name != "EventTime")
}

/// Removal path (issue 21). `ItemSuspended`: eBay took the listing down. Its ItemID is
/// `Item.ItemID` in a GetItemResponse, `Event.ItemSuspended.ItemId` in the older form.
fn item_suspended(response: &Node, topic: &str, at: i64) -> Result<Vec<Fact>, NormalizeError> {
    let item = match event_element(response) {
        Some(e) => e
            .text_at(&["ItemId"])
            .map(str::to_string)
            .ok_or_else(|| missing(topic, "Event.ItemSuspended.ItemId"))?,
        None => item_id(response, topic)?,
    };
    Ok(vec![Fact::Removed {
        item,
        reason: "eBay listing suspended (ItemSuspended)".into(),
        at,
    }])
}

/// Removal path (issue 21). `ItemSold` of a single-quantity listing (`Item.Quantity` 1): the
/// listing is over once sold.
fn single_quantity_sold(
    response: &Node,
    topic: &str,
    at: i64,
) -> Result<Vec<Fact>, NormalizeError> {
    let quantity = match response.child("Item") {
        Some(item) => xml_int(item, &["Quantity"], topic, "Item.Quantity")?,
        None => None,
    };
    if topic != "ItemSold" || quantity != Some(1) {
        return Ok(Vec::new());
    }
    Ok(vec![Fact::Removed {
        item: item_id(response, topic)?,
        reason: "eBay single-quantity listing sold".into(),
        at,
    }])
}

/// The response's `Item.ItemID`, required.
fn item_id(response: &Node, topic: &str) -> Result<String, NormalizeError> {
    response
        .text_at(&["Item", "ItemID"])
        .map(str::to_string)
        .ok_or_else(|| missing(topic, "Item.ItemID"))
}

/// The item's catalog entry and stock level. `Item.Quantity` is required when `level_required`,
/// else the level is given only when the body has it.
pub(crate) fn item_facts(
    response: &Node,
    topic: &str,
    at: i64,
    level_required: bool,
) -> Result<Vec<Fact>, NormalizeError> {
    let Some(item) = response.child("Item") else {
        return Err(missing(topic, "Item"));
    };
    let id = item_id(response, topic)?;
    let mut facts = Vec::with_capacity(2);
    let sku = item.text_at(&["SKU"]).map(str::to_string);
    let title = item.text_at(&["Title"]).map(str::to_string);
    let variations: Vec<&Node> = item
        .child("Variations")
        .map(|v| v.children_named("Variation").collect())
        .unwrap_or_default();
    if !variations.is_empty() {
        // A multi-variation listing: each variation is its own stock item; the listing's
        // Quantity is only their total, so it gives no level of its own.
        for (i, v) in variations.iter().enumerate() {
            let f = |name: &str| format!("Item.Variations.Variation[{i}].{name}");
            let key = variation_key(&id, v).ok_or_else(|| missing(topic, &f("SKU")))?;
            facts.push(Fact::CatalogEntry {
                item: key.clone(),
                aliases: Vec::new(),
                sku: v.text_at(&["SKU"]).map(str::to_string),
                title: crate::adapters::shopify::variant_title(
                    title.as_deref(),
                    variation_name(v).as_deref(),
                ),
                at,
            });
            let quantity = match xml_int(v, &["Quantity"], topic, &f("Quantity"))? {
                Some(q) => q,
                None if level_required => return Err(missing(topic, &f("Quantity"))),
                None => continue,
            };
            let sold = xml_int(
                v,
                &["SellingStatus", "QuantitySold"],
                topic,
                &f("SellingStatus.QuantitySold"),
            )?
            .unwrap_or(0);
            let available = quantity
                .checked_sub(sold)
                .ok_or_else(|| super::bad(topic, &f("Quantity"), "minus QuantitySold overflows"))?;
            facts.push(Fact::InventoryLevel {
                item: key,
                location: "ebay".into(),
                available: Some(available),
                at,
            });
        }
        return Ok(facts);
    }
    if sku.is_some() || title.is_some() {
        facts.push(Fact::CatalogEntry {
            item: id.clone(),
            aliases: Vec::new(),
            sku,
            title,
            at,
        });
    }
    let quantity = xml_int(item, &["Quantity"], topic, "Item.Quantity")?;
    let quantity = match (quantity, level_required) {
        (Some(q), _) => q,
        (None, true) => return Err(missing(topic, "Item.Quantity")),
        (None, false) => return Ok(facts),
    };
    let sold = xml_int(
        item,
        &["SellingStatus", "QuantitySold"],
        topic,
        "Item.SellingStatus.QuantitySold",
    )?
    .unwrap_or(0);
    let available = quantity
        .checked_sub(sold)
        .ok_or_else(|| super::bad(topic, "Item.Quantity", "minus QuantitySold overflows"))?;
    facts.push(Fact::InventoryLevel {
        item: id,
        location: "ebay".into(),
        available: Some(available),
        at,
    });
    Ok(facts)
}

/// The variation's values (`VariationSpecifics.NameValueList.Value`), "Black / L".
fn variation_name(v: &Node) -> Option<String> {
    let values: Vec<&str> = v
        .child("VariationSpecifics")
        .map(|s| {
            s.children_named("NameValueList")
                .flat_map(|nv| nv.children_named("Value"))
                .map(|n| n.text.trim())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    (!values.is_empty()).then(|| values.join(" / "))
}

/// A variation's item key: `<ItemID>:<SKU>`, else (a listing that does not track variations by
/// SKU) `<ItemID>:<Name>=<Value>;...` from its specifics; `None` when it has neither. The same
/// key for the `Variation` block of a listing and of a transaction.
fn variation_key(item_id: &str, v: &Node) -> Option<String> {
    if let Some(sku) = v.text_at(&["SKU"]) {
        return Some(format!("{item_id}:{sku}"));
    }
    let specifics: Vec<String> = v
        .child("VariationSpecifics")?
        .children_named("NameValueList")
        .filter_map(|nv| {
            let name = nv.text_at(&["Name"])?;
            let values: Vec<&str> = nv
                .children_named("Value")
                .map(|n| n.text.trim())
                .filter(|t| !t.is_empty())
                .collect();
            Some(format!("{name}={}", values.join(",")))
        })
        .collect();
    (!specifics.is_empty()).then(|| format!("{item_id}:{}", specifics.join(";")))
}

fn sales(response: &Node, topic: &str, at: i64) -> Result<Vec<Fact>, NormalizeError> {
    let transactions: Vec<&Node> = response
        .child("TransactionArray")
        .map(|a| a.children_named("Transaction").collect())
        .unwrap_or_default();
    if transactions.is_empty() {
        if topic == "ItemSold" {
            let item = item_id(response, topic)?;
            let quantity =
                xml_int(response, &["QuantityPurchased"], topic, "QuantityPurchased")?.unwrap_or(1);
            return Ok(vec![Fact::Sale {
                item: item.clone(),
                quantity,
                order: item,
                line: "ItemSold".into(),
                at,
            }]);
        }
        return Err(missing(topic, "TransactionArray.Transaction"));
    }
    let mut facts = Vec::with_capacity(transactions.len());
    for (i, t) in transactions.iter().enumerate() {
        let f = |name: &str| format!("TransactionArray.Transaction[{i}].{name}");
        let listing = match t.text_at(&["Item", "ItemID"]) {
            Some(id) => id.to_string(),
            None => item_id(response, topic)?,
        };
        // A sale of one variation of a multi-variation listing counts against that variation.
        let item = t
            .child("Variation")
            .and_then(|v| variation_key(&listing, v))
            .unwrap_or_else(|| listing.clone());
        let line = t
            .text_at(&["TransactionID"])
            .map(str::to_string)
            .ok_or_else(|| missing(topic, &f("TransactionID")))?;
        let quantity = match xml_int(t, &["QuantityPurchased"], topic, &f("QuantityPurchased"))? {
            Some(q) => q,
            None if topic == "ItemSold" => 1,
            None => return Err(missing(topic, &f("QuantityPurchased"))),
        };
        let order = format!("{listing}-{line}");
        if quantity == 0 {
            continue;
        }
        facts.push(Fact::Sale {
            item,
            quantity,
            order,
            line,
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

    const TS: &str = "2024-05-01T10:00:00.250Z";
    const AT: i64 = 1_714_557_600_250;

    /// A Platform Notification shaped as eBay documents it (the test kit's template), with
    /// `NotificationEventName` when `event_name` is given.
    fn soap_body(response: &str, event_name: Option<&str>, inner: &str) -> String {
        let name = event_name
            .map(|n| format!("<NotificationEventName>{n}</NotificationEventName>"))
            .unwrap_or_default();
        let inner = format!("{name}\n{inner}");
        stockhook_test_kit::ebay_soap::notification(
            response,
            "nXGFQyWyk1bzgM3N5zT9Ag==",
            TS,
            &inner,
        )
    }

    const ITEM: &str = r#"<Item>
        <ItemID>110554019341</ItemID>
        <Quantity>10</Quantity>
        <SellingStatus><QuantitySold>3</QuantitySold><ListingStatus>Active</ListingStatus></SellingStatus>
        <SKU>MUG-RED</SKU>
        <Title>Mug &amp; Saucer <![CDATA[<Red>]]></Title>
        <Seller><UserID>seller_one</UserID></Seller>
      </Item>"#;

    /// An eBay envelope without headers (the Notification API's JSON, or SOAP with no action).
    fn ebay_env(body: impl Into<Vec<u8>>) -> Envelope {
        env(Platform::Ebay, &[], body)
    }

    fn soap_env(action: Option<&str>, body: String) -> Envelope {
        let action = action.map(|a| format!("\"http://developer.ebay.com/notification/{a}\""));
        let headers: Vec<(&str, &str)> =
            action.iter().map(|a| ("soapaction", a.as_str())).collect();
        env(Platform::Ebay, &headers, body)
    }

    fn catalog_and_level(available: i64) -> Vec<Fact> {
        vec![
            entry(
                "110554019341",
                &[],
                Some("MUG-RED"),
                Some("Mug & Saucer <Red>"),
                AT,
            ),
            level("110554019341", "ebay", Some(available), AT),
        ]
    }

    /// Issue 21: eBay's published ItemSuspended sample (KB article 1337, older
    /// `Notification/Event` form) removes the listing, at its EBayTime.
    #[test]
    fn fixture_item_suspended_removes_the_listing() {
        let n = normalize(&ebay_env(data("ebay/ItemSuspended_kb1337.xml"))).unwrap();
        assert_eq!(n.topic, "ItemSuspended");
        assert!(!n.ignored);
        assert_eq!(
            n.facts,
            vec![Fact::Removed {
                item: "150310666655".into(),
                reason: "eBay listing suspended (ItemSuspended)".into(),
                at: 1_659_959_562_571,
            }]
        );
    }

    #[test]
    fn fixture_account_deletion_pretty_and_compact() {
        let Some(fx) = published("adapters::ebay::fixture_account_deletion_pretty_and_compact")
        else {
            return;
        };
        for name in [
            "ebay/marketplace_account_deletion.json",
            "ebay/marketplace_account_deletion.signed_compact.json",
        ] {
            let e = ebay_env(fx.payload(name));
            assert_eq!(
                normalize(&e).unwrap(),
                Normalized {
                    topic: "MARKETPLACE_ACCOUNT_DELETION".into(),
                    facts: vec![],
                    ignored: false
                },
                "{name}"
            );
            assert_eq!(
                ebay_deleted_user(&e).as_deref(),
                Some("ma8vp1jySJC"),
                "{name}"
            );
            assert_eq!(
                crate::adapters::payload_dedup_key(&e).as_deref(),
                Some("49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d"),
                "{name}"
            );
        }
    }

    #[test]
    fn fixture_public_key_response_is_not_a_notification() {
        let Some(fx) =
            published("adapters::ebay::fixture_public_key_response_is_not_a_notification")
        else {
            return;
        };
        let e = ebay_env(fx.payload("ebay/getPublicKey_response.json"));
        assert!(matches!(normalize(&e), Err(NormalizeError::NoTopic(_))));
        assert_eq!(ebay_deleted_user(&e), None);
        assert_eq!(dedup_key(&e), None);
    }

    #[test]
    fn deletion_needs_the_user_id_never_the_username() {
        let e = ebay_env(
            r#"{"metadata":{"topic":"MARKETPLACE_ACCOUNT_DELETION"},"notification":{"data":{"username":"u1"}}}"#,
        );
        assert_eq!(ebay_deleted_user(&e), None);
        assert!(matches!(
            normalize(&e),
            Err(NormalizeError::MissingField { .. })
        ));
        let e = ebay_env(
            r#"{"metadata":{"topic":"MARKETPLACE_ACCOUNT_DELETION"},"notification":{"data":{}}}"#,
        );
        assert_eq!(
            normalize(&e),
            Err(missing(
                "MARKETPLACE_ACCOUNT_DELETION",
                "notification.data.userId"
            ))
        );
        // Another topic's data is never taken for a deletion.
        let e = ebay_env(
            r#"{"metadata":{"topic":"PRIORITY_LISTING_REVISION"},"notification":{"data":{"userId":"x"}}}"#,
        );
        assert_eq!(ebay_deleted_user(&e), None);
    }

    #[test]
    fn other_json_topics_are_ignored() {
        let e = ebay_env(
            r#"{"metadata":{"topic":"PRIORITY_LISTING_REVISION"},"notification":{"notificationId":"n1","data":{"itemId":"1"}}}"#,
        );
        assert_eq!(
            normalize(&e).unwrap(),
            Normalized {
                topic: "PRIORITY_LISTING_REVISION".into(),
                facts: vec![],
                ignored: true
            }
        );
        assert_eq!(dedup_key(&e).as_deref(), Some("n1"));
    }

    #[test]
    fn json_errors() {
        let run = |b: &str| normalize(&ebay_env(b));
        assert!(matches!(run("{not json"), Err(NormalizeError::NotJson(_))));
        assert!(matches!(
            run(r#"{"notification":{}}"#),
            Err(NormalizeError::NoTopic(_))
        ));
    }

    /// SkuVault's recorded sandbox GetItemResponse of a three-variation listing
    /// (worker/tests/data/ebay/README.md): Item.Quantity 900 is the total of three variations of
    /// 300, with 1, 2 and 1 sold.
    fn variations_fixture() -> Vec<u8> {
        data("ebay/GetItemResponse_variations.xml")
    }

    fn variation_facts() -> Vec<Fact> {
        let at = 1_399_054_503_095; // 2014-05-02T18:15:03.095Z
        let mut out = Vec::new();
        for (sku, color, available) in [
            ("testSku501_B", "Black", 299),
            ("testSku501_W", "White", 298),
            ("testSku501_Y", "Yellow", 299),
        ] {
            let item = format!("110142400319:{sku}");
            let title = format!("levis 501 teenager Trousers - {color}");
            out.push(entry(item.clone(), &[], Some(sku), Some(&title), at));
            out.push(level(item, "ebay", Some(available), at));
        }
        out
    }

    #[test]
    fn published_variation_listing_is_tracked_per_variation_sku() {
        // Issue 13, item 3: the listing was read at its total (900 - 4), so one variation
        // running low never alerted.
        let e = soap_env(
            Some("ItemRevised"),
            String::from_utf8(variations_fixture()).unwrap(),
        );
        let n = normalize(&e).unwrap();
        assert_eq!(n.topic, "ItemRevised");
        assert_eq!(n.facts, variation_facts());
        // The same response inside the SOAP envelope eBay posts, event named in the body only.
        let text = String::from_utf8(variations_fixture()).unwrap();
        let start = text.find("<GetItemResponse").unwrap();
        let inner = &text[start..];
        let wrapped = format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>",
            inner.replacen("<Ack>", "<NotificationEventName>ItemRevised</NotificationEventName><Ack>", 1)
        );
        assert_eq!(
            normalize(&soap_env(None, wrapped)).unwrap().facts,
            variation_facts()
        );
    }

    #[test]
    fn a_variation_sale_counts_against_that_variation() {
        let inner = r#"<Item><ItemID>110142400319</ItemID><Title>levis 501 teenager Trousers</Title></Item>
            <TransactionArray><Transaction>
              <QuantityPurchased>2</QuantityPurchased><TransactionID>28</TransactionID>
              <Variation><SKU>testSku501_W</SKU><VariationSpecifics><NameValueList>
                <Name>Color</Name><Value>White</Value></NameValueList></VariationSpecifics></Variation>
            </Transaction><Transaction>
              <QuantityPurchased>1</QuantityPurchased><TransactionID>29</TransactionID>
              <Variation><VariationSpecifics><NameValueList>
                <Name>Color</Name><Value>Yellow</Value></NameValueList></VariationSpecifics></Variation>
            </Transaction></TransactionArray>"#;
        let e = soap_env(
            Some("FixedPriceTransaction"),
            soap_body("GetItemTransactionsResponse", None, inner),
        );
        let sales: Vec<(String, i64, String)> = normalize(&e)
            .unwrap()
            .facts
            .into_iter()
            .filter_map(|f| match f {
                Fact::Sale {
                    item,
                    quantity,
                    order,
                    ..
                } => Some((item, quantity, order)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sales,
            vec![
                (
                    "110142400319:testSku501_W".into(),
                    2,
                    "110142400319-28".into()
                ),
                (
                    "110142400319:Color=Yellow".into(),
                    1,
                    "110142400319-29".into()
                ),
            ]
        );
    }

    #[test]
    fn published_response_without_any_event_name_is_dead_lettered_saying_what_is_missing() {
        // Issue 13, item 4: the recorded GetItemResponse has no NotificationEventName, and no
        // SOAPAction header came with it.
        let err = normalize(&soap_env(
            None,
            String::from_utf8(variations_fixture()).unwrap(),
        ))
        .unwrap_err();
        assert!(matches!(err, NormalizeError::NoTopic(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("SOAPAction") && msg.contains("NotificationEventName"),
            "{msg}"
        );
        // A SOAPAction that names no event (eBay's bare namespace) is no event name either.
        let e = env(
            Platform::Ebay,
            &[("soapaction", "\"http://developer.ebay.com/notification/\"")],
            variations_fixture(),
        );
        let msg = normalize(&e).unwrap_err().to_string();
        assert!(
            msg.contains("SOAPAction header that names no event")
                && msg.contains("NotificationEventName"),
            "{msg}"
        );
    }

    #[test]
    fn soap_fixed_price_transaction_gives_level_and_sales() {
        let inner = format!(
            r#"{ITEM}
            <TransactionArray>
              <Transaction>
                <QuantityPurchased>2</QuantityPurchased>
                <TransactionID>1843950001</TransactionID>
                <OrderLineItemID>110554019341-1843950001</OrderLineItemID>
                <Buyer><Email>buyer@example.com</Email></Buyer>
              </Transaction>
              <Transaction>
                <QuantityPurchased>1</QuantityPurchased>
                <TransactionID>1843950002</TransactionID>
                <OrderLineItemID>04-10001-20001</OrderLineItemID>
              </Transaction>
            </TransactionArray>"#
        );
        let e = soap_env(
            Some("FixedPriceTransaction"),
            soap_body("GetItemTransactionsResponse", None, &inner),
        );
        let mut expected = catalog_and_level(7);
        expected.push(sale(
            "110554019341",
            2,
            "110554019341-1843950001",
            "1843950001",
            AT,
        ));
        expected.push(sale(
            "110554019341",
            1,
            "110554019341-1843950002",
            "1843950002",
            AT,
        ));
        assert_eq!(
            normalize(&e).unwrap(),
            Normalized {
                topic: "FixedPriceTransaction".into(),
                facts: expected,
                ignored: false
            }
        );
        assert_eq!(dedup_key(&e), None);
        assert_eq!(ebay_deleted_user(&e), None);
    }

    #[test]
    fn soap_auction_transaction_zero_is_keyed_by_item() {
        let inner = r#"<Item><ItemID>220000000001</ItemID></Item>
            <TransactionArray><Transaction>
              <QuantityPurchased>1</QuantityPurchased><TransactionID>0</TransactionID>
            </Transaction></TransactionArray>"#;
        let e = soap_env(
            None,
            soap_body(
                "GetItemTransactionsResponse",
                Some("AuctionCheckoutComplete"),
                inner,
            ),
        );
        assert_eq!(
            normalize(&e).unwrap().facts,
            vec![sale("220000000001", 1, "220000000001-0", "0", AT)]
        );
    }

    #[test]
    fn soap_item_sold_without_transaction_is_one_unit() {
        let e = soap_env(
            Some("ItemSold"),
            soap_body("GetItemResponse", Some("ItemSold"), ITEM),
        );
        let mut expected = catalog_and_level(7);
        expected.push(sale("110554019341", 1, "110554019341", "ItemSold", AT));
        assert_eq!(normalize(&e).unwrap().facts, expected);
    }

    #[test]
    fn soap_listing_ended_or_single_item_sold_leaves_the_catalog() {
        for event in ["ItemClosed", "ItemUnsold"] {
            let e = soap_env(Some(event), soap_body("GetItemResponse", None, ITEM));
            let mut expected = catalog_and_level(7);
            expected.push(Fact::Removed {
                item: "110554019341".into(),
                reason: format!("eBay listing ended ({event})"),
                at: AT,
            });
            assert_eq!(normalize(&e).unwrap().facts, expected, "{event}");
        }
        let single = ITEM
            .replace("<Quantity>10</Quantity>", "<Quantity>1</Quantity>")
            .replace(
                "<QuantitySold>3</QuantitySold>",
                "<QuantitySold>1</QuantitySold>",
            );
        let e = soap_env(
            Some("ItemSold"),
            soap_body("GetItemResponse", Some("ItemSold"), &single),
        );
        let facts = normalize(&e).unwrap().facts;
        assert_eq!(
            facts.last(),
            Some(&Fact::Removed {
                item: "110554019341".into(),
                reason: "eBay single-quantity listing sold".into(),
                at: AT,
            }),
            "{facts:?}"
        );
    }

    #[test]
    fn soap_item_revised_from_header_or_body_event_name() {
        for (action, name) in [(Some("ItemRevised"), None), (None, Some("ItemRevised"))] {
            let e = soap_env(action, soap_body("GetItemResponse", name, ITEM));
            assert_eq!(
                normalize(&e).unwrap(),
                Normalized {
                    topic: "ItemRevised".into(),
                    facts: catalog_and_level(7),
                    ignored: false
                }
            );
        }
    }

    #[test]
    fn soap_listing_without_sales_or_timestamp() {
        let body = r#"<GetItemResponse xmlns="urn:ebay:apis:eBLBaseComponents">
              <Item><ItemID>5</ItemID><Quantity>4</Quantity></Item>
            </GetItemResponse>"#;
        let e = soap_env(Some("ItemListed"), body.to_string());
        assert_eq!(
            normalize(&e).unwrap().facts,
            vec![level("5", "ebay", Some(4), RECEIVED)]
        );
    }

    #[test]
    fn soap_unknown_event_is_ignored() {
        let e = soap_env(
            Some("ItemMarkedShipped"),
            soap_body("GetItemTransactionsResponse", None, ITEM),
        );
        assert_eq!(
            normalize(&e).unwrap(),
            Normalized {
                topic: "ItemMarkedShipped".into(),
                facts: vec![],
                ignored: true
            }
        );
    }

    #[test]
    fn soap_without_event_name_is_no_topic() {
        let e = soap_env(None, soap_body("GetItemResponse", None, ITEM));
        assert!(matches!(normalize(&e), Err(NormalizeError::NoTopic(_))));
    }

    /// A fuzz finding (`worker/tests/fuzz_adapters.rs`, seed 26719297950761984, iteration 2363):
    /// a processing instruction inside `<Timestamp>`'s text joined its two halves into a time
    /// the body never spells, and the facts carried it. Text split by markup is not eBay's
    /// shape: the event is refused (dead-lettered) naming what split it.
    #[test]
    fn text_split_by_markup_is_refused() {
        for (split, what) in [
            ("<?x y?>", "a processing instruction"),
            ("<!-- z -->", "a comment"),
            ("<b/>", "an element"),
        ] {
            let ts = format!("2024-05-01T10:{split}00:00.250Z");
            let body =
                stockhook_test_kit::ebay_soap::notification("GetItemResponse", "x", &ts, ITEM);
            match normalize(&soap_env(Some("ItemListed"), body)) {
                Err(NormalizeError::NotXml(m)) => assert!(m.contains(what), "{split}: {m}"),
                other => panic!("{split}: {other:?}"),
            }
        }
        // Markup between elements, or before an element's text, splits nothing.
        let ts = format!("<!-- sent at --><?x y?>{TS}");
        let inner = format!("<!-- the listing -->{ITEM}");
        let body = stockhook_test_kit::ebay_soap::notification("GetItemResponse", "x", &ts, &inner);
        let n = normalize(&soap_env(Some("ItemListed"), body)).unwrap();
        assert_eq!(n.facts, catalog_and_level(7));
    }

    /// A DOCTYPE anywhere, or an XML declaration anywhere but at the very start, is refused as
    /// not eBay's shape rather than parsed around (a DOCTYPE can declare entities; a late
    /// declaration joins the text around it into a value the document never spells).
    #[test]
    fn doctype_and_late_xml_declarations_are_refused() {
        let good = soap_body("GetItemResponse", Some("ItemListed"), ITEM);
        assert!(
            good.starts_with("<?xml "),
            "the template declares itself first"
        );
        // At the start, after a byte order mark or blank lines or not, the declaration is eBay's.
        for body in [
            good.clone(),
            format!("\u{FEFF}{good}"),
            format!("\r\n\n  {good}"),
        ] {
            let n = normalize(&soap_env(None, body)).unwrap();
            assert_eq!(n.facts, catalog_and_level(7));
        }
        let decl = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
        let cases = [
            (
                good.replacen("?>", "?><!DOCTYPE soapenv:Envelope>", 1),
                "DOCTYPE",
            ),
            (
                good.replacen("?>", "?>\n<!DOCTYPE x [<!ENTITY e \"boom\">]>", 1),
                "DOCTYPE",
            ),
            (good.replacen("<Item>", "<Item><!DOCTYPE x>", 1), "DOCTYPE"),
            (
                good.replacen(TS, &format!("2024-05-01{decl}T10:00:00.250Z"), 1),
                "declaration",
            ),
            (
                good.replacen("<soapenv:Body>", &format!("<soapenv:Body>{decl}"), 1),
                "declaration",
            ),
            (format!("{decl}{good}"), "declaration"),
            (format!("<!-- x -->{good}"), "declaration"),
        ];
        for (body, what) in cases {
            match normalize(&soap_env(None, body.clone())) {
                Err(NormalizeError::NotXml(m)) => assert!(m.contains(what), "{m}: {body}"),
                other => panic!("{other:?}: {body}"),
            }
        }
    }

    #[test]
    fn malformed_xml_is_not_xml() {
        for body in [
            "<a><b></a>".as_bytes().to_vec(),
            b"<a><b>".to_vec(),
            b"<a>&unknown;</a>".to_vec(),
            b"<a>\xff</a>".to_vec(),
            b"<!-- only a comment -->".to_vec(),
            format!("{}{}", "<a>".repeat(200), "</a>".repeat(200)).into_bytes(),
        ] {
            let e = env(
                Platform::Ebay,
                &[("soapaction", "ItemRevised")],
                body.clone(),
            );
            assert!(
                matches!(normalize(&e), Err(NormalizeError::NotXml(_))),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn soap_required_fields_are_named() {
        let no_id = r#"<Item><Quantity>1</Quantity></Item>"#;
        let no_qty = r#"<Item><ItemID>1</ItemID></Item>"#;
        let tx = |inner: &str| {
            format!(
                "{no_qty}<TransactionArray><Transaction>{inner}</Transaction></TransactionArray>"
            )
        };
        let cases: Vec<(&str, String, &str)> = vec![
            ("ItemRevised", no_id.to_string(), "Item.ItemID"),
            ("ItemRevised", no_qty.to_string(), "Item.Quantity"),
            ("ItemListed", String::new(), "Item"),
            (
                "FixedPriceTransaction",
                no_qty.to_string(),
                "TransactionArray.Transaction",
            ),
            (
                "FixedPriceTransaction",
                tx("<TransactionID>9</TransactionID>"),
                "TransactionArray.Transaction[0].QuantityPurchased",
            ),
            (
                "AuctionCheckoutComplete",
                tx("<QuantityPurchased>1</QuantityPurchased>"),
                "TransactionArray.Transaction[0].TransactionID",
            ),
        ];
        for (event, inner, field) in cases {
            let e = soap_env(
                Some(event),
                soap_body("GetItemTransactionsResponse", None, &inner),
            );
            assert_eq!(normalize(&e), Err(missing(event, field)), "{event} {inner}");
        }
    }

    #[test]
    fn soap_non_numeric_quantity_is_a_bad_field() {
        let inner = r#"<Item><ItemID>1</ItemID><Quantity>ten</Quantity></Item>"#;
        let e = soap_env(
            Some("ItemRevised"),
            soap_body("GetItemResponse", None, inner),
        );
        assert!(matches!(
            normalize(&e),
            Err(NormalizeError::BadField { field, .. }) if field == "Item.Quantity"
        ));
    }

    #[test]
    fn xml_detection() {
        assert!(is_xml(b"  \n<?xml version=\"1.0\"?><a/>"));
        assert!(is_xml(b"\xEF\xBB\xBF<soapenv:Envelope/>"));
        assert!(!is_xml(b" {\"a\":1}"));
        assert!(!is_xml(b""));
    }
}
