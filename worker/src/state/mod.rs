//! The worker's state: what it knows about every item (catalog, levels, sales, alert arming),
//! the email outbox, processed event ids and counters.
//!
//! The rules (what a fact does to the records, when an alert fires) are written once, in
//! [`engine`], against the small per-record [`engine::Store`] trait. The two backends only store:
//! [`sled`] (one worker per data dir; a whole batch in one transaction) and [`nats`] (JetStream KV,
//! any number of workers; compare-and-set with per-record guards). Everything above this module
//! sees only [`StateBackend`], opened for the configured backend by [`open`].

pub mod backend;
pub mod engine;
pub mod history;
pub mod nats;
pub mod planned_sets;
pub mod recent;
pub mod sled;

pub use backend::{SledState, StateBackend};
pub use nats::NatsState;
pub use sled::StateStore;

use crate::alert::{Alert, Rule};
use crate::cover::{CoverArming, CoverRules, Demand};
use crate::facts::{Fact, Normalized};
use crate::plausible::EventLimits;
use crate::rules::{self, Arming};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stockhook_shared::config::Config;
use stockhook_shared::envelope::{Envelope, EventId};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open worker state at {path}: it is locked by another process (is stockhook-worker running? use its socket, or stop it)")]
    Locked { path: String },
    #[error("worker state storage error ({context}): {message}")]
    Storage { context: String, message: String },
    #[error("no such alert: {0}")]
    NotFound(String),
}

/// One level report, kept per location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelRec {
    pub available: Option<i64>,
    pub at: i64,
}

/// Everything known about one item of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub source: String,
    pub platform: String,
    pub item: String,
    pub sku: Option<String>,
    pub title: Option<String>,
    pub levels: BTreeMap<String, LevelRec>,
    pub first_seen_at: i64,
    pub last_sale_at: Option<i64>,
    /// Net units sold as recorded: sales add, restock refunds subtract. Kept unclamped so the
    /// sum is the same in any delivery order; read it through [`ItemState::sold`].
    pub units_sold: i64,
    pub arming: Arming,
    /// The quiet period (its start) the no-sales alert last fired for.
    pub no_sales_fired_for: Option<i64>,
    /// The last alert raised for this item: rule and when.
    pub last_alert: Option<(Rule, i64)>,
    /// The location of the newest level report.
    pub last_location: Option<String>,
    /// Out of the catalog since when and why (`None`: live).
    #[serde(default)]
    pub removed: Option<Removal>,
    /// Recent daily sales and levels: the sales velocity (issue 15, [`crate::cover`]).
    #[serde(default)]
    pub demand: Demand,
    /// The cover rule's arming.
    #[serde(default)]
    pub cover_arming: CoverArming,
    /// Location id -> the name the catalog gives it (import, sync), so alerts name the place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub location_names: BTreeMap<String, String>,
    /// Recent level reports and sales, bounded (the dashboard's chart).
    #[serde(default, skip_serializing_if = "history::History::is_empty")]
    pub history: history::History,
}

/// The part of an [`ItemState`] record a scan for live item ids decodes (serde skips the rest).
#[derive(Debug, Deserialize)]
pub(crate) struct ItemHead {
    pub source: String,
    pub item: String,
    #[serde(default)]
    pub removed: Option<Removal>,
}

/// An item's removal from its platform's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub at: i64,
    pub reason: String,
}

impl ItemState {
    pub fn new(source: &str, platform: &str, item: &str, at: i64) -> ItemState {
        ItemState {
            source: source.into(),
            platform: platform.into(),
            item: item.into(),
            sku: None,
            title: None,
            levels: BTreeMap::new(),
            first_seen_at: at,
            last_sale_at: None,
            units_sold: 0,
            arming: Arming::default(),
            no_sales_fired_for: None,
            last_alert: None,
            last_location: None,
            removed: None,
            demand: Demand::default(),
            cover_arming: CoverArming::default(),
            location_names: BTreeMap::new(),
            history: history::History::default(),
        }
    }

    /// Net units sold, never below zero: a refund for a sale stockhook never saw (made before
    /// install, or on a delivery that was lost) changes nothing (issue 13, item 2).
    pub fn sold(&self) -> i64 {
        self.units_sold.max(0)
    }

    /// The item's available total. Product-level reports (`all`) and per-location reports are
    /// never added together: whichever is newer wins. Untracked (`None`) everywhere -> `None`.
    pub fn total(&self) -> Option<i64> {
        total_of(&self.levels)
    }

    /// When its current quiet period began: the last sale, else first seen.
    pub fn quiet_since(&self) -> i64 {
        self.last_sale_at.unwrap_or(self.first_seen_at)
    }

    /// The no-sales alert for the quiet period that began at `since` (its id is the same for
    /// every run and every worker that raises it).
    pub fn no_sales_alert(&self, since: i64, rules: &RuleConfig, now: i64) -> Alert {
        Alert {
            quiet_since: Some(since),
            quiet_days: Some(rules.no_sales_days),
            ..self.alert(Rule::NoSales, since as u64, rules, now, now)
        }
    }

    /// An alert of `rule` about this item as it is now; `key` tells its occurrences apart (the
    /// arming episode, the quiet period). The rule-specific fields are left empty.
    fn alert(&self, rule: Rule, key: u64, rules: &RuleConfig, at: i64, now: i64) -> Alert {
        Alert {
            id: Alert::make_id(rule, &self.source, &self.item, key),
            rule,
            source: self.source.clone(),
            platform: self.platform.clone(),
            item: self.item.clone(),
            sku: self.sku.clone(),
            title: self.title.clone(),
            location: self.last_location.clone(),
            location_name: self
                .last_location
                .as_ref()
                .and_then(|l| self.location_names.get(l).cloned()),
            available: self.total(),
            previous: None,
            threshold: None,
            quiet_since: None,
            quiet_days: None,
            at,
            created_at: now,
            recipients: rules.recipients(&self.source),
            cover: None,
        }
    }

    /// The no-sales rule for this item at `now`: when a quiet period is due, marks it fired and
    /// returns its alert (the caller enqueues it).
    pub fn take_no_sales(&mut self, rules: &RuleConfig, now: i64) -> Option<Alert> {
        if self.removed.is_some() {
            return None;
        }
        let since = self.quiet_since();
        if !rules::no_sales_due(
            self.total(),
            since,
            now,
            rules.no_sales_days,
            self.no_sales_fired_for,
        ) {
            return None;
        }
        let alert = self.no_sales_alert(since, rules, now);
        self.no_sales_fired_for = Some(since);
        self.last_alert = Some((Rule::NoSales, now));
        Some(alert)
    }

    /// The scheduled pass for this item at `now`: the no-sales rule, then the cover rule (days
    /// pass without any event, so cover shrinks on the schedule too). The caller enqueues the
    /// alerts returned.
    pub fn take_scheduled(&mut self, rules: &RuleConfig, now: i64) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self.take_no_sales(rules, now).into_iter().collect();
        alerts.extend(self.take_cover(rules, now, now));
        alerts
    }

    /// The cover rule for this item at `now` (on a level, a sale, or the schedule): its alert
    /// when it fires (`at`: the time of the event that caused it).
    pub fn take_cover(&mut self, rules: &RuleConfig, at: i64, now: i64) -> Option<Alert> {
        if self.removed.is_some() {
            return None;
        }
        let view = crate::cover::cover(self, rules, now);
        if !crate::cover::evaluate(view.as_ref(), self.total(), &mut self.cover_arming) {
            return None;
        }
        self.last_alert = Some((Rule::Cover, at));
        Some(Alert {
            cover: view,
            ..self.alert(Rule::Cover, self.cover_arming.episode, rules, at, now)
        })
    }

    /// Records a sale fact (claimed once; `quantity` < 0: a restock refund) and evaluates the
    /// cover rule: the alert it raises, if any.
    pub fn record_sale(
        &mut self,
        quantity: i64,
        at: i64,
        rules: &RuleConfig,
        now: i64,
    ) -> Option<Alert> {
        self.units_sold = self.units_sold.saturating_add(quantity);
        if quantity > 0 {
            self.last_sale_at = Some(self.last_sale_at.map_or(at, |t| t.max(at)));
        }
        self.demand.sale(at, quantity);
        self.take_cover(rules, at, now)
    }

    /// The ids of the alerts this item may have in the outbox now: the stock rules' of its
    /// current arming episode and the no-sales one of its last quiet period.
    pub fn alert_ids(&self) -> Vec<String> {
        let episode = self.arming.episode;
        let mut ids: Vec<String> = [Rule::LowStock, Rule::OutOfStock]
            .into_iter()
            .map(|r| Alert::make_id(r, &self.source, &self.item, episode))
            .collect();
        ids.push(Alert::make_id(
            Rule::Cover,
            &self.source,
            &self.item,
            self.cover_arming.episode,
        ));
        if let Some(since) = self.no_sales_fired_for {
            ids.push(Alert::make_id(
                Rule::NoSales,
                &self.source,
                &self.item,
                since as u64,
            ));
        }
        ids
    }

    /// True when a level for `location` at `at` is older than the one held: it is ignored.
    /// The counted levels (location, units) at locations not in `listed` and older than `at`:
    /// those a complete snapshot taken at `at` no longer reports.
    pub fn unlisted_levels(&self, listed: &[String], at: i64) -> Vec<(String, i64)> {
        self.levels
            .iter()
            .filter(|(loc, rec)| rec.at < at && !listed.iter().any(|l| l == *loc))
            .filter_map(|(loc, rec)| rec.available.map(|n| (loc.clone(), n)))
            .collect()
    }

    /// Stops counting the levels at `locations` as of `at` (each kept as `None`): the stock
    /// rules and the cover rule see the new total once, after the last (every step lowers the
    /// total, so only the final one is the item's real state).
    pub fn clear_levels(
        &mut self,
        locations: &[(String, i64)],
        at: i64,
        rules: &RuleConfig,
        now: i64,
    ) -> Vec<Alert> {
        let Some(((last, _), rest)) = locations.split_last() else {
            return Vec::new();
        };
        for (location, _) in rest {
            self.levels.insert(
                location.clone(),
                LevelRec {
                    available: None,
                    at,
                },
            );
            self.history.record_level(at, location, None);
        }
        self.record_level(last, None, at, rules, now)
    }

    pub fn is_stale(&self, location: &str, at: i64) -> bool {
        self.levels.get(location).is_some_and(|prev| prev.at > at)
    }

    /// Records a (not stale) level report, in the levels and in the velocity's day, and
    /// evaluates the stock rules and the cover rule: the alerts it raises. Shared by every state
    /// backend, so the rules' effect on an item is written once. (A stale level goes to the
    /// velocity's day only: [`crate::cover::Demand::level`].)
    pub fn record_level(
        &mut self,
        location: &str,
        available: Option<i64>,
        at: i64,
        rules: &RuleConfig,
        now: i64,
    ) -> Vec<Alert> {
        let previous = self.total();
        self.demand.level(at, available);
        self.levels
            .insert(location.to_string(), LevelRec { available, at });
        self.history.record_level(at, location, available);
        self.last_location = Some(location.to_string());
        let mut alerts: Vec<Alert> = self
            .stock_alert(previous, rules, at, now)
            .into_iter()
            .collect();
        alerts.extend(self.take_cover(rules, at, now));
        alerts
    }

    /// What the stock rules make of the item's total after a level report (`previous`: its
    /// total before the report).
    fn stock_alert(
        &mut self,
        previous: Option<i64>,
        rules: &RuleConfig,
        at: i64,
        now: i64,
    ) -> Option<Alert> {
        let threshold = rules.threshold(&self.source, self.sku.as_deref());
        let total = self.total();
        let Some(rule) = rules::evaluate_level(total, threshold, &mut self.arming) else {
            crate::repeats::log_if_already_fired(
                &self.source,
                &self.item,
                total,
                threshold,
                self.last_alert,
            );
            return None;
        };
        self.last_alert = Some((rule, at));
        // `last_location` is the reported location (set above), `total()` is `total`.
        Some(Alert {
            previous,
            threshold: Some(threshold),
            ..self.alert(rule, self.arming.episode, rules, at, now)
        })
    }
}

/// The available total of these level reports: product-level reports (`all`) and per-location
/// reports are never added together, whichever is newer wins; untracked everywhere -> `None`.
pub(crate) fn total_of(levels: &BTreeMap<String, LevelRec>) -> Option<i64> {
    let all = levels.get("all");
    let per: Vec<&LevelRec> = levels
        .iter()
        .filter(|(k, _)| *k != "all")
        .map(|(_, v)| v)
        .collect();
    let per_newest = per.iter().map(|l| l.at).max();
    match (all, per_newest) {
        (Some(a), Some(p)) if a.at >= p => a.available,
        (Some(a), None) => a.available,
        (_, Some(_)) => {
            let tracked: Vec<i64> = per.iter().filter_map(|l| l.available).collect();
            // Saturating: a hostile or broken payload's huge quantity must not overflow.
            (!tracked.is_empty()).then(|| tracked.iter().fold(0i64, |a, b| a.saturating_add(*b)))
        }
        (None, None) => None,
    }
}

/// What the rules need to know per source.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub default_threshold: i64,
    pub source_threshold: BTreeMap<String, i64>,
    pub sku_thresholds: BTreeMap<String, i64>,
    pub default_recipients: Vec<String>,
    pub source_recipients: BTreeMap<String, Vec<String>>,
    pub no_sales_days: u32,
    pub digest_window_ms: i64,
    /// Also alert on the sum of `available` across sources sharing a SKU.
    pub combine_channels: bool,
    /// What an event may plausibly claim (`[events]`).
    pub events: EventLimits,
    /// The cover rule (issue 15).
    pub cover: CoverRules,
}

impl RuleConfig {
    /// The rules the tests run with: threshold 5, no-sales after 60 days, one recipient, no
    /// digest, channels apart, default event limits. Tests change a field on the result rather
    /// than writing the whole struct again.
    pub fn example() -> RuleConfig {
        RuleConfig {
            default_threshold: 5,
            source_threshold: BTreeMap::new(),
            sku_thresholds: BTreeMap::new(),
            default_recipients: vec!["seller@example.com".into()],
            source_recipients: BTreeMap::new(),
            no_sales_days: 60,
            digest_window_ms: 0,
            combine_channels: false,
            events: Default::default(),
            cover: Default::default(),
        }
    }

    pub fn from_config(c: &Config) -> RuleConfig {
        RuleConfig {
            default_threshold: c.alerts.low_stock_threshold,
            source_threshold: c
                .sources
                .iter()
                .filter_map(|s| s.low_stock_threshold.map(|t| (s.name.clone(), t)))
                .collect(),
            sku_thresholds: c.alerts.sku_thresholds.clone(),
            default_recipients: c.alerts.recipients.clone(),
            source_recipients: c
                .sources
                .iter()
                .filter(|s| !s.recipients.is_empty())
                .map(|s| (s.name.clone(), s.recipients.clone()))
                .collect(),
            no_sales_days: c.alerts.no_sales_days,
            digest_window_ms: c.alerts.digest_window.get().as_millis() as i64,
            combine_channels: c.alerts.combine_channels,
            events: EventLimits::from_config(&c.events),
            cover: CoverRules {
                cover_days: c.alerts.cover_days,
                source_cover_days: c
                    .sources
                    .iter()
                    .filter_map(|s| s.cover_days.map(|d| (s.name.clone(), d)))
                    .collect(),
                sku_cover_days: c.alerts.sku_cover_days.clone(),
                safety_days: c.alerts.safety_days,
                weekly: false,
            },
        }
    }

    pub fn threshold(&self, source: &str, sku: Option<&str>) -> i64 {
        sku.and_then(|s| self.sku_thresholds.get(s))
            .or_else(|| self.source_threshold.get(source))
            .copied()
            .unwrap_or(self.default_threshold)
    }

    /// The cross-channel threshold for a SKU: its own, else the global one.
    pub fn combined_threshold(&self, sku: &str) -> i64 {
        self.sku_thresholds
            .get(sku)
            .copied()
            .unwrap_or(self.default_threshold)
    }

    pub fn recipients(&self, source: &str) -> Vec<String> {
        self.source_recipients
            .get(source)
            .cloned()
            .unwrap_or_else(|| self.default_recipients.clone())
    }
}

/// One event ready to apply: its id, source, platform, and what the adapter read.
pub struct Prepared {
    pub id: EventId,
    /// When the receiver accepted the event (Unix ms): later event times are clamped to it.
    pub accepted_at: i64,
    pub source: String,
    pub platform: String,
    pub payload_key: Option<String>,
    pub normalized: Normalized,
}

impl Prepared {
    /// An envelope the adapter read.
    pub fn new(env: &Envelope, normalized: Normalized) -> Prepared {
        Prepared {
            id: env.id,
            accepted_at: env.received_at_ms,
            source: env.source.clone(),
            platform: env.platform.as_str().to_string(),
            payload_key: crate::adapters::payload_dedup_key(env),
            normalized,
        }
    }

    /// An event made without an envelope (a catalog sync's, a test's): no payload to
    /// deduplicate by, and `facts` under `topic`, never ignored.
    pub fn synthetic(
        id: EventId,
        accepted_at: i64,
        source: &str,
        platform: &str,
        topic: &str,
        facts: Vec<Fact>,
    ) -> Prepared {
        Prepared {
            id,
            accepted_at,
            source: source.to_string(),
            platform: platform.to_string(),
            payload_key: None,
            normalized: Normalized {
                topic: topic.to_string(),
                facts,
                ignored: false,
            },
        }
    }
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// State changed (or not), these alerts were created.
    Done { alerts: Vec<Alert> },
    /// Seen before (same event id, or the platform's notification id): nothing changed.
    AlreadyProcessed,
}

/// Counter names kept under `m/`.
pub mod counters {
    pub const EVENTS_PROCESSED: &str = "events.processed";
    pub const EVENTS_IGNORED: &str = "events.ignored";
    pub const EVENTS_DUPLICATE: &str = "events.duplicate";
    pub const LEVELS_STALE: &str = "levels.stale";
    pub const ALERTS_CREATED: &str = "alerts.created";
    pub const ALERTS_SENT: &str = "alerts.sent";
    /// Sent alerts forgotten by housekeeping (`stats` adds them to those still in the outbox).
    pub const ALERTS_SWEPT: &str = "alerts.swept";
    pub const ALERTS_FAILED: &str = "alerts.failed";
    pub const EMAILS_SENT: &str = "emails.sent";
    /// eBay MARKETPLACE_ACCOUNT_DELETION notices applied.
    pub const EBAY_ACCOUNT_DELETIONS: &str = "ebay.account_deletions";
    /// Events whose time was ahead of the accepted time beyond the tolerance (clamped).
    pub const FUTURE_TIMESTAMPS: &str = "events.future_timestamps";
    /// Facts applied whose time was before the item's first sighting minus the platform's
    /// retry window (history replayed; applied in order).
    pub const OLD_TIMESTAMPS: &str = "events.old_timestamps";
    /// Facts refused for an implausible quantity (their events are dead-lettered).
    pub const FACTS_REFUSED: &str = "facts.refused";
    /// Snapshot levels (import, sync) that corrected a different, older level held.
    pub const SYNC_CORRECTIONS: &str = "sync.corrections";
    /// Items out of the catalog now (removals minus items reported again).
    pub const CATALOG_REMOVED: &str = "catalog.removed";
    /// Pending alerts cancelled because their item left the catalog.
    pub const ALERTS_CANCELLED: &str = "alerts.cancelled";
    /// Per source: `source.<name>.future_timestamps`.
    pub fn source_future(source: &str) -> String {
        format!("source.{source}.future_timestamps")
    }
    /// Per source: `source.<name>.corrections` (see [`SYNC_CORRECTIONS`]).
    pub fn source_corrections(source: &str) -> String {
        format!("source.{source}.corrections")
    }
    /// Per source: `source.<name>.processed`.
    pub fn source_processed(source: &str) -> String {
        format!("source.{source}.processed")
    }
    /// One hour in ms: the width of [`source_hour`]'s buckets.
    pub const HOUR_MS: i64 = 3_600_000;
    /// How long the hourly counters are kept (housekeeping forgets older ones).
    pub const HOURLY_KEEP_MS: i64 = 2 * 86_400_000;
    /// Per source and clock hour (`hour` = unix ms / [`HOUR_MS`]), events processed that
    /// arrived then: `source.<name>.hour.<hour>`. The dashboard's events-per-hour chart.
    pub fn source_hour(source: &str, hour: i64) -> String {
        format!("source.{source}.hour.{hour}")
    }
    /// The hour of a [`source_hour`] counter's name (`None`: not one).
    pub fn hour_of(name: &str) -> Option<i64> {
        let rest = name.strip_prefix("source.")?;
        let (_, h) = rest.rsplit_once(".hour.")?;
        h.parse().ok()
    }
    /// Whether `name` is an hourly counter older than `cutoff` (unix ms).
    pub fn is_stale_hour(name: &str, cutoff: i64) -> bool {
        hour_of(name).is_some_and(|h| (h + 1) * HOUR_MS <= cutoff)
    }
}

/// The cross-channel alert for `sku` (shared by every state backend).
#[allow(clippy::too_many_arguments)]
pub(crate) fn combined_alert(
    sku: &str,
    sources: &[String],
    location: &str,
    total: Option<i64>,
    threshold: i64,
    episode: u64,
    at: i64,
    now: i64,
    rules: &RuleConfig,
) -> Alert {
    Alert {
        id: Alert::make_id(Rule::CombinedLowStock, "*", sku, episode),
        rule: Rule::CombinedLowStock,
        source: sources.join("+"),
        platform: "all".into(),
        item: sku.to_string(),
        sku: Some(sku.to_string()),
        title: None,
        location: Some(location.to_string()),
        location_name: None,
        available: total,
        previous: None,
        threshold: Some(threshold),
        quiet_since: None,
        quiet_days: None,
        at,
        created_at: now,
        recipients: rules.default_recipients.clone(),
        cover: None,
    }
}
