//! Alerts: what the rules decide to tell a seller, and their life in the durable outbox.
//!
//! An alert's id is derived from (rule, source, item, arming episode), so the same crossing yields
//! the same id on every redelivery and the outbox can never hold it twice.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The built-in channel's name in routes and in [`OutboxEntry::channels`].
pub const EMAIL: &str = stockhook_shared::channels::EMAIL;

/// The id of an alert set: hex SHA-256 of its sorted, unique alert ids joined with `,`. The
/// email's Message-ID is `<first 32 hex@stockhook>`; Slack and webhooks carry the first 32.
pub fn set_digest<S: AsRef<str>>(ids: &[S]) -> String {
    let sorted: BTreeSet<&str> = ids.iter().map(AsRef::as_ref).collect();
    hex::encode(Sha256::digest(
        sorted.into_iter().collect::<Vec<_>>().join(",").as_bytes(),
    ))
}

/// The 32-hex id of an alert set, the same on every attempt and for every channel.
pub fn set_id<S: AsRef<str>>(ids: &[S]) -> String {
    set_digest(ids)[..32].to_string()
}

/// The email's Message-ID for the alert set with id `set` ([`set_id`]). The one rule, on both
/// backends: the sender derives it from the *planned* set ([`OutboxEntry::planned`], written
/// down before sending), so a resend after a crash or a takeover carries the same Message-ID.
pub fn message_id(set: &str) -> String {
    format!("<{set}@stockhook>")
}

/// The alert ids of one planned email ([`OutboxEntry::planned`]), shared: every member of a set
/// holds the same allocation, so copying a member or comparing its set with another member's
/// costs the same whatever the set's size.
///
/// Why: a set of k alerts is copied and compared with each of its k members (planning,
/// claiming, writing down), k² ids per email with a `Vec`. Once the sender fell behind (sets of
/// 200), that made each alert cost ~200 times more and it stayed behind (docs/PERFORMANCE.md,
/// section 16). Stored as a plain JSON list, as before.
#[derive(Clone, Default)]
pub struct PlannedSet(Arc<[String]>);

impl PlannedSet {
    /// Whether `self` and `other` are the same allocation (then certainly equal).
    fn same(&self, other: &PlannedSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for PlannedSet {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl From<Vec<String>> for PlannedSet {
    fn from(ids: Vec<String>) -> PlannedSet {
        PlannedSet(ids.into())
    }
}

impl PartialEq for PlannedSet {
    fn eq(&self, other: &PlannedSet) -> bool {
        self.same(other) || self.0[..] == other.0[..]
    }
}

impl Eq for PlannedSet {}

impl PartialEq<Vec<String>> for PlannedSet {
    fn eq(&self, other: &Vec<String>) -> bool {
        self.0[..] == other[..]
    }
}

impl Ord for PlannedSet {
    fn cmp(&self, other: &PlannedSet) -> std::cmp::Ordering {
        if self.same(other) {
            return std::cmp::Ordering::Equal;
        }
        self.0[..].cmp(&other.0[..])
    }
}

impl PartialOrd for PlannedSet {
    fn partial_cmp(&self, other: &PlannedSet) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for PlannedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for PlannedSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0[..].serialize(s)
    }
}

impl<'de> Deserialize<'de> for PlannedSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PlannedSet, D::Error> {
        Vec::<String>::deserialize(d).map(PlannedSet::from)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `available < threshold` (and above zero).
    LowStock,
    /// `available <= 0`.
    OutOfStock,
    /// Stock on hand and no sale for `no_sales_days`.
    NoSales,
    /// The sum across channels sharing a SKU is below the threshold (`combine_channels`).
    CombinedLowStock,
    /// Stock below the demand expected over the lead time (`cover_days`, issue 15).
    Cover,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::LowStock => "low_stock",
            Rule::OutOfStock => "out_of_stock",
            Rule::NoSales => "no_sales",
            Rule::CombinedLowStock => "combined_low_stock",
            Rule::Cover => "cover",
        }
    }
    /// How a subject line names it: "Low stock", "Out of stock", ...
    pub fn title(self) -> &'static str {
        match self {
            Rule::LowStock => "Low stock",
            Rule::OutOfStock => "Out of stock",
            Rule::NoSales => "No sales",
            Rule::CombinedLowStock => "Low stock across channels",
            Rule::Cover => "Reorder soon",
        }
    }
}

/// One alert about one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: hex of SHA-256(rule, source, item, episode), 32 characters.
    pub id: String,
    pub rule: Rule,
    pub source: String,
    pub platform: String,
    /// The platform's item id (Shopify inventory item id, Amazon seller SKU, eBay ItemID).
    pub item: String,
    pub sku: Option<String>,
    pub title: Option<String>,
    /// Where the level was reported (Shopify location id, `fba:<marketplace>`, `all`, ...).
    pub location: Option<String>,
    /// The location's name as the catalog gives it (import, sync), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_name: Option<String>,
    pub available: Option<i64>,
    /// The item's available total before the level that raised the alert (`None`: first
    /// report, or not a level alert). Defaulted so outbox entries written before it load.
    #[serde(default)]
    pub previous: Option<i64>,
    pub threshold: Option<i64>,
    /// No-sales alerts: the last sale (or first seen) and the configured quiet days.
    pub quiet_since: Option<i64>,
    pub quiet_days: Option<u32>,
    /// Unix ms of the platform event that caused it (or of the schedule run for no-sales).
    pub at: i64,
    /// Unix ms when the worker created it.
    pub created_at: i64,
    pub recipients: Vec<String>,
    /// Cover alerts: velocity, days of cover, stock-out date and reorder quantity when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<crate::cover::CoverView>,
}

impl Alert {
    pub fn make_id(rule: Rule, source: &str, item: &str, episode: u64) -> String {
        let mut h = Sha256::new();
        for part in [
            rule.as_str().as_bytes(),
            source.as_bytes(),
            item.as_bytes(),
            &episode.to_be_bytes(),
        ] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The name a seller recognises: title, else sku, else the platform id.
    pub fn display_name(&self) -> String {
        match (&self.title, &self.sku) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => format!("item {}", self.item),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Sent,
    Failed,
    /// Not sent: its item left the catalog before the email went out.
    Cancelled,
}

/// An alert in the outbox with its delivery state (persisted, so a restart resumes the schedule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub alert: Alert,
    pub status: OutboxStatus,
    pub attempts: u32,
    /// Not sent before this (digest window, then the retry schedule).
    pub next_attempt_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    pub message_id: Option<String>,
    /// The alert ids of the email this alert was planned into, written before that email is
    /// sent: after a crash mid-send, exactly that set is sent again (same Message-ID, same
    /// file), never regrouped into a different email.
    #[serde(default)]
    pub planned: PlannedSet,
    /// Delivery to each channel this alert is routed to (`email`, `[[channels]]` names), once
    /// the sender has tried it. The fields above are then their aggregate: pending while any
    /// channel is, else failed if any failed, else sent; `next_attempt_at` the earliest pending
    /// channel's; `attempts` the most any channel took; `last_error` the channels' errors.
    /// Empty on entries never tried (and on those written before channels existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, ChannelDelivery>,
}

/// One alert's delivery to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDelivery {
    pub status: OutboxStatus,
    pub attempts: u32,
    /// Not tried again before this (the channel's own backoff, or its `Retry-After`).
    pub next_attempt_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    /// The id the delivery carried: the email's Message-ID, the alert set id for Slack and
    /// webhooks (`webhook-id`).
    pub delivery_id: Option<String>,
}

impl ChannelDelivery {
    /// A channel not tried yet, due at `due_at`.
    pub fn pending(due_at: i64) -> ChannelDelivery {
        ChannelDelivery {
            status: OutboxStatus::Pending,
            attempts: 0,
            next_attempt_at: due_at,
            first_attempt_at: None,
            last_error: None,
            sent_at: None,
            delivery_id: None,
        }
    }
}

impl OutboxEntry {
    pub fn new(alert: Alert, due_at: i64) -> OutboxEntry {
        OutboxEntry {
            alert,
            status: OutboxStatus::Pending,
            attempts: 0,
            next_attempt_at: due_at,
            first_attempt_at: None,
            last_error: None,
            sent_at: None,
            message_id: None,
            planned: PlannedSet::default(),
            channels: BTreeMap::new(),
        }
    }

    /// Fills in `channels` for `route` if it is empty, carrying over the entry's own retry
    /// state (an entry from before channels existed may be mid-backoff for its email).
    pub fn materialize(&mut self, route: &[String]) {
        if !self.channels.is_empty() {
            return;
        }
        for name in route {
            let mut d = ChannelDelivery::pending(self.next_attempt_at);
            d.attempts = self.attempts;
            d.first_attempt_at = self.first_attempt_at;
            self.channels.insert(name.clone(), d);
        }
    }

    /// The channels still to deliver to and due at `now`, in name order.
    pub fn due_channels(&self, now: i64) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, d)| d.status == OutboxStatus::Pending && d.next_attempt_at <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Recomputes the aggregate fields from `channels` (see its doc). No-op when empty.
    pub fn recompute(&mut self) {
        if self.channels.is_empty() {
            return;
        }
        let ch = &self.channels;
        let pending: Vec<&ChannelDelivery> = ch
            .values()
            .filter(|d| d.status == OutboxStatus::Pending)
            .collect();
        self.status = if !pending.is_empty() {
            OutboxStatus::Pending
        } else if ch.values().any(|d| d.status == OutboxStatus::Failed) {
            OutboxStatus::Failed
        } else {
            OutboxStatus::Sent
        };
        if let Some(next) = pending.iter().map(|d| d.next_attempt_at).min() {
            self.next_attempt_at = next;
        }
        self.attempts = ch.values().map(|d| d.attempts).max().unwrap_or(0);
        self.first_attempt_at = ch.values().filter_map(|d| d.first_attempt_at).min();
        self.sent_at = match self.status {
            OutboxStatus::Sent => ch.values().filter_map(|d| d.sent_at).max(),
            _ => None,
        };
        self.message_id = ch.get(EMAIL).and_then(|d| d.delivery_id.clone());
        let errors: Vec<String> = ch
            .iter()
            .filter(|(_, d)| d.status != OutboxStatus::Sent)
            .filter_map(|(n, d)| d.last_error.as_ref().map(|e| (n, e)))
            .map(|(n, e)| {
                if ch.len() == 1 {
                    e.clone()
                } else {
                    format!("{n}: {e}")
                }
            })
            .collect();
        self.last_error = (!errors.is_empty()).then(|| errors.join("; "));
    }

    /// `failed replay`: every failed channel back to pending at `now` with a fresh schedule;
    /// channels already delivered stay delivered, so a replay never sends them again.
    pub fn replay(&mut self, now: i64) {
        self.status = OutboxStatus::Pending;
        self.attempts = 0;
        self.first_attempt_at = None;
        self.planned = PlannedSet::default();
        self.next_attempt_at = now;
        for d in self.channels.values_mut() {
            if d.status == OutboxStatus::Failed {
                *d = ChannelDelivery::pending(now);
            }
        }
        self.recompute();
    }
}

/// An alert for unit tests: `rule` on `item` of `source`, 0 available of threshold 5.
#[cfg(test)]
pub(crate) fn test_alert(rule: Rule, source: &str, item: &str) -> Alert {
    Alert {
        id: Alert::make_id(rule, source, item, 1),
        rule,
        source: source.into(),
        platform: "shopify".into(),
        item: item.into(),
        sku: None,
        title: None,
        location: None,
        location_name: None,
        available: Some(0),
        previous: Some(6),
        threshold: Some(5),
        quiet_since: None,
        quiet_days: None,
        at: 0,
        created_at: 0,
        recipients: vec![],
        cover: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_set_is_stored_as_a_list_shared_by_its_copies_and_compared_by_value() {
        let ids: Vec<String> = (0..200).map(|i| format!("{i:032x}")).collect();
        let set = PlannedSet::from(ids.clone());
        // Stored as before: a plain JSON list, and read back from one.
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, serde_json::to_string(&ids).unwrap());
        let back: PlannedSet = serde_json::from_str(&json).unwrap();
        // A copy shares the members; a set read back is another allocation, equal by value.
        let copy = set.clone();
        assert!(copy.same(&set) && !back.same(&set));
        assert_eq!(back, set);
        assert_eq!(back.cmp(&set), std::cmp::Ordering::Equal);
        assert!(set == ids);
        let other = PlannedSet::from(ids[1..].to_vec());
        assert_ne!(other, set);
        assert_eq!(set.cmp(&other), ids[..].cmp(&ids[1..]));
        // An entry without a set (older records, and fresh ones) reads as empty.
        let e: OutboxEntry = serde_json::from_value({
            let mut v =
                serde_json::to_value(OutboxEntry::new(test_alert(Rule::LowStock, "s", "1"), 0))
                    .unwrap();
            v.as_object_mut().unwrap().remove("planned");
            v
        })
        .unwrap();
        assert!(e.planned.is_empty());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Alert::make_id(Rule::LowStock, "shop", "123", 1);
        assert_eq!(a, Alert::make_id(Rule::LowStock, "shop", "123", 1));
        assert_eq!(a.len(), 32);
        assert_ne!(a, Alert::make_id(Rule::LowStock, "shop", "123", 2));
        assert_ne!(a, Alert::make_id(Rule::OutOfStock, "shop", "123", 1));
        // Length-prefixed parts: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            Alert::make_id(Rule::LowStock, "ab", "c", 1),
            Alert::make_id(Rule::LowStock, "a", "bc", 1)
        );
    }
    fn entry() -> OutboxEntry {
        OutboxEntry::new(test_alert(Rule::OutOfStock, "shop", "1"), 100)
    }

    fn route(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_entry_is_the_aggregate_of_its_channels() {
        let mut e = entry();
        e.attempts = 2;
        e.first_attempt_at = Some(50);
        e.materialize(&route(&["email", "slack"]));
        // An entry mid-backoff before channels existed keeps its schedule.
        assert_eq!(e.channels["email"].attempts, 2);
        assert_eq!(e.channels["slack"].first_attempt_at, Some(50));
        assert_eq!(e.due_channels(100), ["email", "slack"]);
        assert!(e.due_channels(99).is_empty());

        let email = e.channels.get_mut("email").unwrap();
        email.status = OutboxStatus::Sent;
        email.delivery_id = Some("<m@stockhook>".into());
        email.sent_at = Some(120);
        let slack = e.channels.get_mut("slack").unwrap();
        slack.next_attempt_at = 500;
        slack.attempts = 4;
        slack.last_error = Some("HTTP 429".into());
        e.recompute();
        assert_eq!(e.status, OutboxStatus::Pending);
        assert_eq!(e.next_attempt_at, 500, "the earliest pending channel");
        assert_eq!(e.attempts, 4);
        assert_eq!(e.sent_at, None, "not sent until every channel is");
        assert_eq!(e.message_id.as_deref(), Some("<m@stockhook>"));
        assert_eq!(e.last_error.as_deref(), Some("slack: HTTP 429"));
        assert_eq!(e.due_channels(500), ["slack"], "email is never due again");

        let slack = e.channels.get_mut("slack").unwrap();
        slack.status = OutboxStatus::Failed;
        slack.last_error = Some("HTTP 404 no_service".into());
        e.recompute();
        assert_eq!(e.status, OutboxStatus::Failed);
        assert_eq!(e.last_error.as_deref(), Some("slack: HTTP 404 no_service"));

        // A replay brings back only the failed channel.
        e.planned = vec!["x".to_string()].into();
        e.replay(900);
        assert_eq!(e.status, OutboxStatus::Pending);
        assert!(e.planned.is_empty());
        assert_eq!(e.channels["email"].status, OutboxStatus::Sent);
        assert_eq!(e.channels["slack"].attempts, 0);
        assert_eq!(e.due_channels(900), ["slack"]);
        assert_eq!(e.last_error, None);

        let slack = e.channels.get_mut("slack").unwrap();
        slack.status = OutboxStatus::Sent;
        slack.sent_at = Some(950);
        e.recompute();
        assert_eq!(e.status, OutboxStatus::Sent);
        assert_eq!(e.sent_at, Some(950));
    }

    #[test]
    fn entries_from_before_channels_read_back() {
        let mut e = entry();
        let mut v = serde_json::to_value(&e).unwrap();
        assert!(v.get("channels").is_none(), "empty maps are not written");
        v.as_object_mut().unwrap().remove("planned");
        let back: OutboxEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        e.materialize(&route(&["email"]));
        let again: OutboxEntry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn alerts_written_before_the_previous_level_was_kept_read_back() {
        let a = test_alert(Rule::LowStock, "shop", "1");
        let mut v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["previous"], 6);
        v.as_object_mut().unwrap().remove("previous");
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back.previous, None);
        assert_eq!(back.id, a.id);
    }

    #[test]
    fn set_ids_ignore_order_and_duplicates() {
        assert_eq!(set_id(&["b", "a"]), set_id(&["a", "b", "a"]));
        assert_ne!(set_id(&["a"]), set_id(&["a", "b"]));
        assert_eq!(set_id(&["a"]).len(), 32);
    }
}
