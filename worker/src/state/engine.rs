//! The state rules, written once: what each fact of an event does to the records (catalog and
//! alias merge, stale levels, sale dedup, SKU membership, the cross-channel sum), which alerts it
//! raises and what goes to the outbox and the counters.
//!
//! The rules run against [`Store`], a handful of per-record operations that both backends
//! provide: sled inside one transaction (its futures never wait, see [`super::sled`]), JetStream
//! KV with compare-and-set and per-record guards (see [`super::nats`]). A backend decides how a
//! record is stored and how an update is made exactly once; it never decides what the update is.
//! A new rule is added here and tested once for both (`worker/tests/state.rs`).
//!
//! Order of effects for one event (the NATS backend relies on it: every step is idempotent and
//! a crash anywhere is repaired by the redelivery): dedup marks, then each fact's records, then
//! the outbox (create-only), then the processed mark, last.

use super::{counters, Applied, ItemState, LevelRec, Prepared, Removal, RuleConfig};
use crate::alert::{Alert, OutboxEntry};
use crate::facts::Fact;
use crate::plausible;
use crate::rules::{self, Arming};

/// (event id, fact index): one fact of one event; a backend that cannot make an event atomic
/// remembers per record which tokens it applied.
pub type Token = (u64, u32);

/// A create-only mark claimed by one fact, so that a second event saying the same thing is
/// not applied twice.
#[derive(Debug, Clone, Copy)]
pub enum Mark<'a> {
    /// The platform's own notification id (`payload_key`) within a source.
    Payload { source: &'a str, key: &'a str },
    /// One order line within a source.
    Sale {
        source: &'a str,
        order: &'a str,
        line: &'a str,
    },
}

/// What a rule decided for one record: the value to write (`None`: leave it as it is) and the
/// alerts the change raises.
pub struct Step<T> {
    pub next: Option<T>,
    pub alerts: Vec<Alert>,
}

/// The outcome of an update made once: the record as it is now and the alerts of the token.
/// `fresh` is false when the token had been applied before (a redelivery after a crash midway):
/// the alerts are the ones it raised then, and nothing was counted again.
pub struct Once<T> {
    pub current: Option<T>,
    pub alerts: Vec<Alert>,
    pub fresh: bool,
}

/// A (source, item) carrying a SKU.
pub type Member = (String, String);

/// The per-record operations the rules need. Every update names its [`Token`]: a backend applies
/// it at most once and hands back the same alerts when it was applied before.
#[allow(async_fn_in_trait)]
pub trait Store {
    type Error;
    /// The event's effects were all applied.
    async fn processed(&self, id: u64) -> Result<bool, Self::Error>;
    /// Marks the event applied (last). False when it already was.
    async fn mark_processed(&self, id: u64, now: i64) -> Result<bool, Self::Error>;
    /// The facts of a processed event that were refused as implausible (by index).
    async fn refused(&self, id: u64) -> Result<Vec<u32>, Self::Error>;
    /// Records them (empty: none left).
    async fn set_refused(&self, id: u64, facts: &[u32]) -> Result<(), Self::Error>;
    /// Claims `mark` for `tok`: true when `tok` holds it (now, or from before).
    async fn claim(&self, mark: Mark<'_>, tok: Token, now: i64) -> Result<bool, Self::Error>;
    async fn alias(&self, source: &str, alias: &str) -> Result<Option<String>, Self::Error>;
    async fn set_alias(&self, source: &str, alias: &str, item: &str) -> Result<(), Self::Error>;
    async fn item(&self, source: &str, item: &str) -> Result<Option<ItemState>, Self::Error>;
    async fn remove_item(&self, source: &str, item: &str) -> Result<(), Self::Error>;
    /// Updates one item once per token; `f` may run more than once (on a conflict) and must be
    /// a function of the record it is given.
    async fn update_item(
        &self,
        source: &str,
        item: &str,
        tok: Token,
        f: &mut (dyn FnMut(Option<ItemState>) -> Step<ItemState> + Send),
    ) -> Result<Once<ItemState>, Self::Error>;
    async fn members(&self, sku: &str) -> Result<Vec<Member>, Self::Error>;
    /// Changes the member set of a SKU (idempotent changes only: add if missing, remove).
    async fn update_members(
        &self,
        sku: &str,
        f: &mut (dyn FnMut(&mut Vec<Member>) + Send),
    ) -> Result<(), Self::Error>;
    /// Updates the cross-channel arming of a SKU once per token.
    async fn update_combined(
        &self,
        sku: &str,
        tok: Token,
        f: &mut (dyn FnMut(Arming) -> Step<Arming> + Send),
    ) -> Result<Once<Arming>, Self::Error>;
    /// Cancels a pending alert not yet planned into an email: true when it did.
    async fn cancel(&self, alert_id: &str) -> Result<bool, Self::Error>;
    /// Puts an entry in the outbox unless one with its alert id exists (pending or sent).
    async fn enqueue(&self, entry: OutboxEntry) -> Result<bool, Self::Error>;
    async fn count(&self, name: &str, n: i64) -> Result<(), Self::Error>;
}

/// Applies one event: every effect once per event id.
pub async fn apply_event<S: Store>(
    s: &S,
    ev: &Prepared,
    rules: &RuleConfig,
    now: i64,
) -> Result<Applied, S::Error> {
    let id = ev.id.0;
    // Times clamped, absurd quantities left out (the pipeline dead-letters the event for them).
    let checked = plausible::check(&ev.normalized.facts, ev.accepted_at, &rules.events);
    let refused_now: Vec<u32> = checked.refused.iter().map(|(i, _)| *i).collect();
    if s.processed(id).await? {
        return resume_refused(s, ev, &checked, &refused_now, rules, now).await;
    }
    if let Some(key) = &ev.payload_key {
        let mark = Mark::Payload {
            source: &ev.source,
            key,
        };
        if !s.claim(mark, (id, 0), now).await? {
            if s.mark_processed(id, now).await? {
                s.count(counters::EVENTS_DUPLICATE, 1).await?;
            }
            return Ok(Applied::AlreadyProcessed);
        }
    }
    let alerts = apply_facts(s, ev, checked.facts.iter(), rules, now).await?;
    if !refused_now.is_empty() {
        s.set_refused(id, &refused_now).await?;
    }
    if s.mark_processed(id, now).await? {
        let name = if ev.normalized.ignored {
            counters::EVENTS_IGNORED
        } else {
            counters::EVENTS_PROCESSED
        };
        s.count(name, 1).await?;
        s.count(&counters::source_processed(&ev.source), 1).await?;
        let hour = ev.accepted_at.div_euclid(counters::HOUR_MS);
        s.count(&counters::source_hour(&ev.source, hour), 1).await?;
        if checked.future_by_ms.is_some() {
            s.count(counters::FUTURE_TIMESTAMPS, 1).await?;
            s.count(&counters::source_future(&ev.source), 1).await?;
        }
        if !checked.refused.is_empty() {
            s.count(counters::FACTS_REFUSED, checked.refused.len() as i64)
                .await?;
        }
    }
    Ok(Applied::Done { alerts })
}

/// Applies facts (by index in the event) and puts the alerts they raise in the outbox.
async fn apply_facts<'a, S: Store>(
    s: &S,
    ev: &Prepared,
    facts: impl Iterator<Item = &'a (u32, Fact)>,
    rules: &RuleConfig,
    now: i64,
) -> Result<Vec<Alert>, S::Error> {
    let mut alerts = Vec::new();
    for (i, fact) in facts {
        alerts.extend(apply_fact(s, ev, (ev.id.0, *i), fact, rules, now).await?);
    }
    for a in &alerts {
        let entry = OutboxEntry::new(a.clone(), a.created_at + rules.digest_window_ms);
        if s.enqueue(entry).await? {
            s.count(counters::ALERTS_CREATED, 1).await?;
        }
    }
    Ok(alerts)
}

/// An event seen before comes again: nothing to do, unless some of its facts were refused then
/// (it was dead-lettered for them and replayed): those that pass now apply, once.
async fn resume_refused<S: Store>(
    s: &S,
    ev: &Prepared,
    checked: &plausible::Checked,
    refused_now: &[u32],
    rules: &RuleConfig,
    now: i64,
) -> Result<Applied, S::Error> {
    let before = s.refused(ev.id.0).await?;
    if before.is_empty() {
        return Ok(Applied::AlreadyProcessed);
    }
    let due = checked.facts.iter().filter(|(i, _)| before.contains(i));
    let alerts = apply_facts(s, ev, due, rules, now).await?;
    let still: Vec<u32> = before
        .into_iter()
        .filter(|i| refused_now.contains(i))
        .collect();
    s.set_refused(ev.id.0, &still).await?;
    Ok(Applied::Done { alerts })
}

async fn apply_fact<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    fact: &Fact,
    rules: &RuleConfig,
    now: i64,
) -> Result<Vec<Alert>, S::Error> {
    match fact {
        Fact::CatalogEntry {
            item,
            aliases,
            sku,
            title,
            at,
        } => {
            catalog_entry(s, ev, tok, item, aliases, sku.as_deref(), title, *at).await?;
            Ok(Vec::new())
        }
        Fact::InventoryLevel {
            item,
            location,
            available,
            at,
        } => level(s, ev, tok, item, location, *available, *at, rules, now).await,
        Fact::Removed { item, reason, at } => {
            remove(s, ev, tok, item, reason, *at).await?;
            Ok(Vec::new())
        }
        Fact::ProductVariants { product, items, at } => {
            product_variants(s, ev, tok, product, items, *at).await?;
            Ok(Vec::new())
        }
        Fact::LocationName {
            item,
            location,
            name,
            at,
        } => {
            location_name(s, ev, tok, item, location, name, *at).await?;
            Ok(Vec::new())
        }
        Fact::StockedAt {
            item,
            locations,
            at,
        } => stocked_at(s, ev, tok, item, locations, *at, rules, now).await,
        Fact::Sale {
            item,
            quantity,
            order,
            line,
            at,
        } => {
            let mark = Mark::Sale {
                source: &ev.source,
                order,
                line,
            };
            if !s.claim(mark, tok, now).await? {
                return Ok(Vec::new());
            }
            let item = resolve(s, &ev.source, item).await?;
            let mut noted = Seen::default();
            let once = s
                .update_item(&ev.source, &item, tok, &mut |cur| {
                    let mut st = seen(cur, ev, &item, *at, &mut noted);
                    st.history.record_sale(*at, *quantity);
                    let alerts = st
                        .record_sale(*quantity, *at, rules, now)
                        .into_iter()
                        .collect();
                    Step {
                        next: Some(st),
                        alerts,
                    }
                })
                .await?;
            count_seen(s, &once, &noted).await?;
            Ok(once.alerts)
        }
    }
}

/// What [`seen`] noticed about a fact's time.
#[derive(Default)]
struct Seen {
    /// Before the item's first sighting by more than the platform retries: history replayed
    /// (still applied in order, and counted).
    old: bool,
    /// After the item's removal from the catalog: the platform reports it again, it is live.
    revived: bool,
}

/// The item as held (first seen moved back to `at` if earlier; live again if `at` is after its
/// removal), or a new one first seen at `at`.
fn seen(cur: Option<ItemState>, ev: &Prepared, item: &str, at: i64, noted: &mut Seen) -> ItemState {
    *noted = Seen::default();
    match cur {
        Some(mut st) => {
            let window = plausible::retry_window_ms(&ev.platform);
            noted.old = at < st.first_seen_at.saturating_sub(window);
            st.first_seen_at = st.first_seen_at.min(at);
            if st.removed.as_ref().is_some_and(|r| at > r.at) {
                st.removed = None;
                noted.revived = true;
            }
            st
        }
        None => ItemState::new(&ev.source, &ev.platform, item, at),
    }
}

/// Counts what [`seen`] noticed, once (`revived` only when the update was written).
async fn count_seen<S: Store>(s: &S, once: &Once<ItemState>, noted: &Seen) -> Result<(), S::Error> {
    if once.fresh && noted.old {
        s.count(counters::OLD_TIMESTAMPS, 1).await?;
    }
    if once.fresh && noted.revived {
        s.count(counters::CATALOG_REMOVED, -1).await?;
    }
    Ok(())
}

/// Marks an item removed from the catalog at `at`, unless the platform reported it after that
/// (a late removal changes nothing) or it is removed already (it keeps its first removal's time
/// and reason until it is reported again).
async fn remove<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    item: &str,
    reason: &str,
    at: i64,
) -> Result<(), S::Error> {
    let item = resolve(s, &ev.source, item).await?;
    let mut newly = false;
    let once = s
        .update_item(&ev.source, &item, tok, &mut |cur| {
            newly = false;
            let keep = cur.as_ref().is_some_and(|st| {
                st.first_seen_at > at
                    || st.levels.values().any(|l| l.at > at)
                    || st.removed.is_some()
            });
            if keep {
                return Step {
                    next: None,
                    alerts: Vec::new(),
                };
            }
            let mut st = seen(cur, ev, &item, at, &mut Seen::default());
            newly = true;
            st.removed = Some(Removal {
                at,
                reason: reason.to_string(),
            });
            Step {
                next: Some(st),
                alerts: Vec::new(),
            }
        })
        .await?;
    if once.fresh && newly {
        s.count(counters::CATALOG_REMOVED, 1).await?;
    }
    // Its unsent alerts are cancelled (also when redelivered: cancelling is idempotent).
    if let Some(st) = once.current.filter(|st| st.removed.is_some()) {
        for id in st.alert_ids() {
            if s.cancel(&id).await? {
                s.count(counters::ALERTS_CANCELLED, 1).await?;
            }
        }
    }
    Ok(())
}

/// The member record of a product's variants: stored with the SKU member sets, under a key no
/// SKU has (it starts with NUL).
fn product_key(source: &str, product: &str) -> String {
    format!("\0product\0{source}\0{product}")
}

/// A product's variant list: the variants it had and no longer names are removed (all of them
/// when the list is empty: the product was deleted); the members kept are every variant ever
/// named, so a late older list cannot lose one (its removal is refused as older than the
/// variant's first sighting).
async fn product_variants<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    product: &str,
    items: &[String],
    at: i64,
) -> Result<(), S::Error> {
    let key = product_key(&ev.source, product);
    let reason = if items.is_empty() {
        format!("product {product} deleted")
    } else {
        format!("no longer a variant of product {product}")
    };
    for (_, item) in s.members(&key).await? {
        if !items.contains(&item) {
            remove(s, ev, tok, &item, &reason, at).await?;
        }
    }
    let listed: Vec<Member> = items
        .iter()
        .map(|i| (ev.source.clone(), i.clone()))
        .collect();
    s.update_members(&key, &mut |m| {
        for x in &listed {
            if !m.contains(x) {
                m.push(x.clone())
            }
        }
    })
    .await
}

/// The item a platform id refers to: itself, or the item an alias names.
async fn resolve<S: Store>(s: &S, source: &str, item: &str) -> Result<String, S::Error> {
    Ok(s.alias(source, item)
        .await?
        .unwrap_or_else(|| item.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn catalog_entry<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    item: &str,
    aliases: &[String],
    sku: Option<&str>,
    title: &Option<String>,
    at: i64,
) -> Result<(), S::Error> {
    let aliases: Vec<&String> = aliases.iter().filter(|a| *a != item).collect();
    // Sales recorded under an alias before the catalog knew it belong to the item.
    let mut orphans = Vec::new();
    for alias in &aliases {
        s.set_alias(&ev.source, alias, item).await?;
        orphans.extend(s.item(&ev.source, alias).await?);
    }
    // An item imported by SKU alone (a file without platform ids: `sku:<SKU>`) is this item
    // once the platform names it with that SKU: its record moves here whole, and its key
    // stays as an alias (so the file imported again lands here too).
    let by_sku = sku.map(|k| format!("sku:{k}")).filter(|k| k != item);
    let mut adopted = None;
    if let Some(key) = &by_sku {
        if let Some(st) = s.item(&ev.source, key).await? {
            s.set_alias(&ev.source, key, item).await?;
            adopted = Some(st);
        }
    }
    let mut old_sku = None;
    let mut noted = Seen::default();
    let once = s
        .update_item(&ev.source, item, tok, &mut |cur| {
            let cur = adopt(cur, adopted.as_ref(), item);
            let mut st = seen(cur, ev, item, at, &mut noted);
            old_sku = st.sku.clone();
            if let Some(new) = sku {
                st.sku = Some(new.to_string());
            }
            if title.is_some() {
                st.title = title.clone();
            }
            for o in &orphans {
                st.last_sale_at = st.last_sale_at.max(o.last_sale_at);
                st.units_sold = st.units_sold.saturating_add(o.units_sold);
                st.first_seen_at = st.first_seen_at.min(o.first_seen_at);
                st.demand.absorb(&o.demand);
                st.history.merge(&o.history);
            }
            Step {
                next: Some(st),
                alerts: Vec::new(),
            }
        })
        .await?;
    count_seen(s, &once, &noted).await?;
    // Idempotent follow-ups, also redone when the update was applied before.
    for o in orphans.iter().chain(&adopted) {
        s.remove_item(&ev.source, &o.item).await?;
    }
    if let (Some(o), Some(old)) = (&adopted, adopted.as_ref().and_then(|o| o.sku.as_ref())) {
        let member = (ev.source.clone(), o.item.clone());
        s.update_members(old, &mut |m| m.retain(|x| *x != member))
            .await?;
    }
    if let Some(new) = sku {
        let member = (ev.source.clone(), item.to_string());
        if let Some(old) = old_sku.filter(|o| o != new) {
            s.update_members(&old, &mut |m| m.retain(|x| *x != member))
                .await?;
        }
        s.update_members(new, &mut |m| {
            if !m.contains(&member) {
                m.push(member.clone())
            }
        })
        .await?;
    }
    Ok(())
}

/// The record an item imported by SKU alone (`from`) leaves to the platform's item `item`:
/// all of it when the item is new here; else what the item lacks (levels and location names it
/// has no newer report of, SKU and title) and the sales, merged as an orphan's are.
fn adopt(cur: Option<ItemState>, from: Option<&ItemState>, item: &str) -> Option<ItemState> {
    let Some(o) = from else { return cur };
    let Some(mut st) = cur else {
        return Some(ItemState {
            item: item.to_string(),
            ..o.clone()
        });
    };
    for (loc, l) in &o.levels {
        if st.levels.get(loc).is_none_or(|held| held.at < l.at) {
            st.levels.insert(loc.clone(), l.clone());
        }
    }
    for (loc, name) in &o.location_names {
        st.location_names
            .entry(loc.clone())
            .or_insert_with(|| name.clone());
    }
    st.sku = st.sku.or_else(|| o.sku.clone());
    st.title = st.title.or_else(|| o.title.clone());
    st.last_sale_at = st.last_sale_at.max(o.last_sale_at);
    st.units_sold = st.units_sold.saturating_add(o.units_sold);
    st.first_seen_at = st.first_seen_at.min(o.first_seen_at);
    st.demand.absorb(&o.demand);
    st.history.merge(&o.history);
    Some(st)
}

/// Names one of an item's locations (the newest name wins; an item not known yet is created,
/// as a catalog entry would).
#[allow(clippy::too_many_arguments)]
async fn location_name<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    item: &str,
    location: &str,
    name: &str,
    at: i64,
) -> Result<(), S::Error> {
    let item = resolve(s, &ev.source, item).await?;
    let mut noted = Seen::default();
    let once = s
        .update_item(&ev.source, &item, tok, &mut |cur| {
            let mut st = seen(cur, ev, &item, at, &mut noted);
            if st.location_names.get(location).map(String::as_str) == Some(name) {
                noted.revived = false;
                return Step {
                    next: None,
                    alerts: Vec::new(),
                };
            }
            st.location_names
                .insert(location.to_string(), name.to_string());
            Step {
                next: Some(st),
                alerts: Vec::new(),
            }
        })
        .await?;
    count_seen(s, &once, &noted).await
}

/// [`Fact::StockedAt`]: the item's held levels at locations the snapshot does not list, and
/// older than it, stop counting; the stock rules see the total once, after all are cleared.
/// Each cleared level is a correction, counted and logged as [`level`]'s are.
#[allow(clippy::too_many_arguments)]
async fn stocked_at<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    item: &str,
    locations: &[String],
    at: i64,
    rules: &RuleConfig,
    now: i64,
) -> Result<Vec<Alert>, S::Error> {
    let item = resolve(s, &ev.source, item).await?;
    let mut cleared: Vec<(String, i64)> = Vec::new();
    let once = s
        .update_item(&ev.source, &item, tok, &mut |cur| {
            cleared.clear();
            let Some(mut st) = cur else {
                return Step {
                    next: None,
                    alerts: Vec::new(),
                };
            };
            cleared = st.unlisted_levels(locations, at);
            if cleared.is_empty() {
                return Step {
                    next: None,
                    alerts: Vec::new(),
                };
            }
            let alerts = st.clear_levels(&cleared, at, rules, now);
            Step {
                next: Some(st),
                alerts,
            }
        })
        .await?;
    if once.fresh {
        for (location, held) in &cleared {
            // Ids and quantities only: no customer data.
            tracing::info!(
                source = %ev.source,
                item = %item,
                location = %location,
                held = held,
                "catalog snapshot no longer lists this location: its level is not counted"
            );
            s.count(counters::SYNC_CORRECTIONS, 1).await?;
            s.count(&counters::source_corrections(&ev.source), 1)
                .await?;
        }
    }
    Ok(once.alerts)
}

/// A level read from a snapshot of the platform (import, sync) rather than from a webhook.
fn is_snapshot(ev: &Prepared) -> bool {
    crate::catalog::is_snapshot_topic(&ev.normalized.topic)
}

#[allow(clippy::too_many_arguments)]
async fn level<S: Store>(
    s: &S,
    ev: &Prepared,
    tok: Token,
    item: &str,
    location: &str,
    available: Option<i64>,
    at: i64,
    rules: &RuleConfig,
    now: i64,
) -> Result<Vec<Alert>, S::Error> {
    let item = resolve(s, &ev.source, item).await?;
    let mut stale = false;
    let mut noted = Seen::default();
    // (held, new): a snapshot level that differs from the older one held (a correction).
    let mut corrected: Option<(Option<i64>, Option<i64>)> = None;
    let snapshot = is_snapshot(ev);
    let once = s
        .update_item(&ev.source, &item, tok, &mut |cur| {
            stale = cur.as_ref().is_some_and(|st| st.is_stale(location, at));
            corrected = None;
            if stale {
                // A stale level changes nothing but the velocity's record of the day (every
                // level counts there, so it is the same in any delivery order) and the history.
                seen(cur.clone(), ev, &item, at, &mut noted);
                noted.revived = false;
                // The chart's history gets it too, so it is the same whatever order the
                // reports came in.
                let next = cur.map(|mut st| {
                    st.demand.level(at, available);
                    st.history.record_level(at, location, available);
                    st
                });
                return Step {
                    next,
                    alerts: Vec::new(),
                };
            }
            let mut st = seen(cur, ev, &item, at, &mut noted);
            corrected = st
                .levels
                .get(location)
                .filter(|held| {
                    snapshot && st.removed.is_none() && held.at < at && held.available != available
                })
                .map(|held| (held.available, available));
            if st.removed.is_some() {
                // Out of the catalog: the level is kept as history and raises nothing.
                st.levels
                    .insert(location.to_string(), LevelRec { available, at });
                st.demand.level(at, available);
                st.history.record_level(at, location, available);
                return Step {
                    next: Some(st),
                    alerts: Vec::new(),
                };
            }
            let alerts = st.record_level(location, available, at, rules, now);
            Step {
                next: Some(st),
                alerts,
            }
        })
        .await?;
    if once.fresh && stale {
        s.count(counters::LEVELS_STALE, 1).await?;
    }
    if let (true, false, Some((held, new))) = (once.fresh, stale, corrected) {
        // Ids and quantities only: no customer data.
        tracing::info!(
            source = %ev.source,
            item = %item,
            location = %location,
            held = ?held,
            snapshot = ?new,
            "catalog snapshot corrected a level the webhooks left"
        );
        s.count(counters::SYNC_CORRECTIONS, 1).await?;
        s.count(&counters::source_corrections(&ev.source), 1)
            .await?;
    }
    count_seen(s, &once, &noted).await?;
    let mut alerts = once.alerts;
    let live = once.current.filter(|st| st.removed.is_none());
    let sku = live.and_then(|st| st.sku);
    if let (true, Some(sku), false) = (rules.combine_channels, sku, stale) {
        alerts.extend(combined_level(s, tok, &sku, location, at, rules, now).await?);
    }
    Ok(alerts)
}

/// The cross-channel rule: the sum over every source's item carrying `sku`, with its own arming.
/// Fires only when at least two channels carry the SKU (one alone is the per-channel rule). A
/// member whose SKU has changed since (a change interrupted midway) is not counted.
async fn combined_level<S: Store>(
    s: &S,
    tok: Token,
    sku: &str,
    location: &str,
    at: i64,
    rules: &RuleConfig,
    now: i64,
) -> Result<Vec<Alert>, S::Error> {
    let mut total: Option<i64> = None;
    let mut sources: Vec<String> = Vec::new();
    for (source, item) in s.members(sku).await? {
        let Some(st) = s.item(&source, &item).await? else {
            continue;
        };
        if st.sku.as_deref() != Some(sku) || st.removed.is_some() {
            continue;
        }
        if let Some(t) = st.total() {
            // Saturating: a hostile or broken payload's huge quantity must not overflow.
            total = Some(total.unwrap_or(0).saturating_add(t));
        }
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    if sources.len() < 2 {
        return Ok(Vec::new());
    }
    let threshold = rules.combined_threshold(sku);
    let once = s
        .update_combined(sku, tok, &mut |mut arming| {
            let fired = rules::evaluate_level(total, threshold, &mut arming);
            let alerts = fired
                .map(|_| {
                    super::combined_alert(
                        sku,
                        &sources,
                        location,
                        total,
                        threshold,
                        arming.episode,
                        at,
                        now,
                        rules,
                    )
                })
                .into_iter()
                .collect();
            Step {
                next: Some(arming),
                alerts,
            }
        })
        .await?;
    Ok(once.alerts)
}
