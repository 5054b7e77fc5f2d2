//! The state rules, tested once against both backends: every scenario runs on sled and on
//! JetStream KV ([`NatsState`], a real `nats-server -js`), including a property test (the same
//! facts delivered in any order and with duplicates give the same items, alerts and outbox on
//! both). Then what only several NATS workers need: a redelivery after a crash midway changes
//! nothing, two workers applying the same events raise each alert once, and each due alert is
//! claimed by exactly one of them.
//!
//! Without `nats-server` the NATS halves print a loud SKIPPED line and pass, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where they fail.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;

use stockhook_shared::config::{Config, OneOrMany};
use stockhook_shared::envelope::EventId;
use stockhook_worker::alert::{Alert, OutboxStatus, Rule};
use stockhook_worker::catalog::{self, CatalogBatch, CatalogItem, Location, Origin};
use stockhook_worker::facts::Fact;
use stockhook_worker::state::{
    counters, Applied, ItemState, NatsState, Prepared, RuleConfig, SledState, StateBackend,
};

/// The shared nats-server harness (tests/kit): skips loudly without nats-server unless
/// STOCKHOOK_REQUIRE_NATS=1.
use stockhook_test_kit::nats::{require as require_nats, NatsServer};

async fn start(bin: &Path) -> NatsServer {
    NatsServer::start(bin)
}

/// Two workers' states on one new nats-server (returned first, to keep); `None` after the
/// running test's skip line where nats-server is not installed.
async fn two_workers() -> Option<(NatsServer, NatsState, NatsState)> {
    let server = stockhook_test_kit::nats::start_required()?;
    let (a, b) = (state(&server.url).await, state(&server.url).await);
    Some((server, a, b))
}

fn config(url: &str) -> Config {
    let mut c = Config::default();
    c.queue.backend = "nats".into();
    c.queue.nats_url = Some(OneOrMany::One(url.into()));
    c
}

async fn state(url: &str) -> NatsState {
    NatsState::connect(&config(url)).await.unwrap()
}

fn rules() -> Arc<RuleConfig> {
    Arc::new(RuleConfig {
        sku_thresholds: [("SKU-BIG".to_string(), 50)].into_iter().collect(),
        ..RuleConfig::example()
    })
}

fn ev(id: u64, facts: Vec<Fact>) -> Prepared {
    Prepared::synthetic(EventId(id), i64::MAX / 2, "shop", "shopify", "t", facts)
}

fn level(item: &str, loc: &str, n: i64, at: i64) -> Fact {
    Fact::InventoryLevel {
        item: item.into(),
        location: loc.into(),
        available: Some(n),
        at,
    }
}

fn alerts(a: &[Applied]) -> Vec<(Rule, String, Option<i64>)> {
    a.iter()
        .flat_map(|x| match x {
            Applied::Done { alerts } => alerts
                .iter()
                .map(|a| (a.rule, a.item.clone(), a.available))
                .collect(),
            Applied::AlreadyProcessed => vec![],
        })
        .collect()
}

/// A fresh state on each backend in turn: sled in a temp dir, then (when nats-server is
/// installed) JetStream KV on a fresh server. `$scenario` is an `async fn(&S)` for any
/// [`StateBackend`]: the rules are tested once and run on both.
macro_rules! on_both_backends {
    ($($name:ident => $scenario:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let sled = SledState::open(&dir.path().join("state")).unwrap();
            $scenario(&sled).await;
            if let Some(bin) = require_nats(stringify!($name)) {
                let server = start(&bin).await;
                $scenario(&state(&server.url).await).await;
            }
        }
    )+};
}

on_both_backends! {
    low_stock_fires_once_and_redelivery_changes_nothing => fires_once;
    recovery_rearms_and_late_levels_are_ignored => rearms;
    per_location_levels_sum_and_product_totals_do_not_double_count => per_location;
    sku_threshold_untracked_and_sales_via_alias_counted_once => alias_sales;
    payload_keys_dedup_and_dry_runs_write_nothing => dedup_and_dry_run;
    no_sales_fires_once_per_quiet_period => no_sales;
    combined_channels_alert_on_the_saturating_sum => combined;
    a_member_whose_sku_changed_leaves_the_old_sum => sku_change;
    same_deliveries_give_the_same_state_on_both_backends_and_in_any_order => property;
    future_times_are_clamped_old_ones_counted_absurd_quantities_left_out => implausible;
    removed_items_stop_alerting_and_come_back_when_reported_again => removals;
    cover_fires_once_on_a_level_rearms_on_restock_and_runs_on_the_schedule => cover;
    catalog_batches_name_locations_correct_levels_and_remove_what_they_miss => catalog_batches;
    the_scheduled_pass_in_dry_run_writes_nothing_and_skips_removed_items => preview_dry_run;
    hourly_event_counters_are_kept_two_days => hourly_counters;
    a_copy_kept_by_item_changes_equals_a_full_read => item_changes;
    a_write_down_adds_every_counter_it_carries => write_down_counters;
}

/// The sender writes an email's outcome and its counters (alerts sent, emails sent) in one
/// update: every counter it carries is added, a name given twice adds both deltas.
async fn write_down_counters<S: StateBackend>(s: &S) {
    let r = rules();
    apply(s, &r, vec![ev(1, vec![level("100", "loc1", 3, 2)])]).await;
    let due = s.due_alerts(10).await.unwrap();
    assert_eq!(due.len(), 1);
    s.update_alerts(
        vec![due[0].alert.id.clone()],
        |e| e.status = stockhook_worker::alert::OutboxStatus::Sent,
        vec![
            (counters::ALERTS_SENT.to_string(), 1),
            (counters::EMAILS_SENT.to_string(), 1),
            (counters::EMAILS_SENT.to_string(), 2),
        ],
    )
    .await
    .unwrap();
    assert!(s.due_alerts(10).await.unwrap().is_empty());
    let c = s.counters().await.unwrap();
    assert_eq!(c[counters::ALERTS_SENT], 1);
    assert_eq!(c[counters::EMAILS_SENT], 3);
}

/// A reader's copy of every item kept with [`StateBackend::item_changes`] (the dashboard's
/// snapshot) equals a full read after every round of changes, removals (an item adopted as
/// another's alias) and dry runs; a read with no change since reads nothing (where the backend
/// follows changes: one that reads everything returns no cursor).
async fn item_changes<S: StateBackend>(s: &S) {
    use std::collections::BTreeMap;
    use stockhook_worker::state::backend::ItemChanges;
    let r = rules();
    let mut rng = StdRng::seed_from_u64(16);
    let mut copy: BTreeMap<(String, String), ItemState> = BTreeMap::new();
    let mut cursor = None;
    let key = |st: &ItemState| (st.source.clone(), st.item.clone());
    let mut id = 0;
    // Removals and changes read as such (not as full reads), where the backend follows changes.
    let (mut removals, mut changed) = (0, 0);
    for round in 0..12 {
        let batch: Vec<Prepared> = (0..rng.gen_range(1..12))
            .map(|_| {
                id += 1;
                let item = format!("i{}", rng.gen_range(0..25));
                if rng.gen_bool(0.15) {
                    let alias = format!("i{}", rng.gen_range(0..25));
                    ev(
                        id,
                        vec![Fact::CatalogEntry {
                            item,
                            aliases: vec![alias],
                            sku: None,
                            title: Some(format!("t{id}")),
                            at: id as i64,
                        }],
                    )
                } else {
                    ev(id, vec![level(&item, "l", rng.gen_range(0..20), id as i64)])
                }
            })
            .collect();
        s.apply_batch(batch, r.clone(), 10, rng.gen_bool(0.2))
            .await
            .unwrap();
        let read = s.item_changes(cursor).await.unwrap();
        match read.changes {
            ItemChanges::All(items) => {
                copy = items.iter().map(|st| (key(st), st.clone())).collect()
            }
            ItemChanges::Changed { items, gone } => {
                assert!(cursor.is_some(), "round {round}: changes without a cursor");
                removals += gone.len();
                changed += items.len();
                for k in gone {
                    copy.remove(&k);
                }
                copy.extend(items.iter().map(|st| (key(st), st.clone())));
            }
        }
        cursor = read.cursor;
        let all: Vec<ItemState> = copy.values().cloned().collect();
        assert_eq!(all, s.items().await.unwrap(), "round {round}");
    }
    assert!(copy.len() > 5, "{}", copy.len());
    let again = s.item_changes(cursor).await.unwrap();
    if cursor.is_some() {
        assert!(
            removals > 0 && changed > 0,
            "{removals} removals, {changed} changes read"
        );
        assert!(
            matches!(&again.changes, ItemChanges::Changed { items, gone } if items.is_empty() && gone.is_empty()),
            "{:?}",
            again.changes
        );
    }
}

/// Events are counted per source and hour of arrival; housekeeping forgets hours older than
/// [`counters::HOURLY_KEEP_MS`] and keeps the rest.
/// The scheduled pass (no sales, days of cover) at `now`: what it raised, or with `dry_run`
/// what it would raise.
async fn scheduled<S: StateBackend>(
    s: &S,
    r: Arc<RuleConfig>,
    now: i64,
    dry_run: bool,
) -> Vec<Alert> {
    s.run_no_sales(r, now, dry_run).await.unwrap()
}

/// How many outbox entries carry an alert of `rule`.
async fn outbox_of<S: StateBackend>(s: &S, rule: Rule) -> usize {
    s.outbox(move |e| e.alert.rule == rule).await.unwrap().len()
}

async fn hourly_counters<S: StateBackend>(s: &S) {
    let r = rules();
    let now = stockhook_shared::queue::now_ms();
    let at = |id: u64, accepted_at: i64| Prepared {
        accepted_at,
        ..ev(id, vec![level("100", "loc1", 9, accepted_at)])
    };
    let old = now - 3 * DAY;
    apply(s, &r, vec![at(1, old), at(2, now), at(3, now)]).await;
    let hour = |t: i64| counters::source_hour("shop", t.div_euclid(counters::HOUR_MS));
    let c = s.counters().await.unwrap();
    assert_eq!((c.get(&hour(old)), c.get(&hour(now))), (Some(&1), Some(&2)));
    s.housekeeping(0).await.unwrap();
    let c = s.counters().await.unwrap();
    assert_eq!((c.get(&hour(old)), c.get(&hour(now))), (None, Some(&2)));
    assert_eq!(c[&counters::source_processed("shop")], 3);
}

const DAY: i64 = 86_400_000;

async fn apply<S: StateBackend>(s: &S, r: &Arc<RuleConfig>, events: Vec<Prepared>) -> Vec<Applied> {
    s.apply_batch(events, r.clone(), 10, false).await.unwrap()
}

async fn fires_once<S: StateBackend>(s: &S) {
    let r = rules();
    let catalog = Fact::CatalogEntry {
        item: "100".into(),
        aliases: vec!["variant:7".into()],
        sku: Some("SKU-1".into()),
        title: Some("Blue mug".into()),
        at: 1,
    };
    let a = apply(
        s,
        &r,
        vec![ev(1, vec![catalog, level("100", "loc1", 3, 2)])],
    )
    .await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "100".into(), Some(3))]);
    let due = s.due_alerts(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].alert.title.as_deref(), Some("Blue mug"));
    assert_eq!(due[0].alert.sku.as_deref(), Some("SKU-1"));
    // The same event again: nothing.
    let a = apply(s, &r, vec![ev(1, vec![level("100", "loc1", 1, 3)])]).await;
    assert_eq!(a, vec![Applied::AlreadyProcessed]);
    // A new event still below: armed off, nothing.
    let a = apply(s, &r, vec![ev(2, vec![level("100", "loc1", 2, 4)])]).await;
    assert!(alerts(&a).is_empty());
    assert_eq!(s.due_alerts(100).await.unwrap().len(), 1);
    let c = s.counters().await.unwrap();
    assert_eq!(c[counters::EVENTS_PROCESSED], 2);
    assert_eq!(c[&counters::source_processed("shop")], 2);
    assert_eq!(c[counters::ALERTS_CREATED], 1);
    // Counted in the hour the events arrived (the dashboard's events-per-hour chart).
    let hour = (i64::MAX / 2).div_euclid(counters::HOUR_MS);
    assert_eq!(c[&counters::source_hour("shop", hour)], 2);
}

async fn rearms<S: StateBackend>(s: &S) {
    let r = rules();
    let mut got = Vec::new();
    for (i, (n, at)) in [(3, 10), (9, 20), (1, 15), (2, 30)].iter().enumerate() {
        got.extend(alerts(
            &apply(s, &r, vec![ev(i as u64, vec![level("x", "l", *n, *at)])]).await,
        ));
    }
    // 3 fires; 9 re-arms; 1 at t=15 is older than 9 at t=20: ignored; 2 fires again.
    assert_eq!(
        got,
        vec![
            (Rule::LowStock, "x".into(), Some(3)),
            (Rule::LowStock, "x".into(), Some(2))
        ]
    );
    assert_eq!(s.counters().await.unwrap()[counters::LEVELS_STALE], 1);
    let ids: Vec<String> = s
        .due_alerts(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.alert.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each crossing is its own alert");
}

async fn per_location<S: StateBackend>(s: &S) {
    let r = rules();
    apply(s, &r, vec![ev(1, vec![level("x", "all", 10, 1)])]).await;
    // Newer per-location reports replace the product total; they add up.
    let a = apply(s, &r, vec![ev(2, vec![level("x", "b", 6, 2)])]).await;
    assert!(alerts(&a).is_empty(), "6 at b alone is not low");
    let a = apply(s, &r, vec![ev(3, vec![level("x", "a", -2, 2)])]).await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "x".into(), Some(4))]);
    assert_eq!(s.items().await.unwrap()[0].total(), Some(4));
    // A newer product-level total wins over the older per-location reports.
    apply(s, &r, vec![ev(4, vec![level("x", "all", 30, 3)])]).await;
    assert_eq!(s.items().await.unwrap()[0].total(), Some(30));
}

async fn alias_sales<S: StateBackend>(s: &S) {
    let r = rules();
    let sale = Fact::Sale {
        item: "variant:7".into(),
        quantity: 2,
        order: "o1".into(),
        line: "l1".into(),
        at: 50,
    };
    // Sale before the catalog knows the variant.
    apply(s, &r, vec![ev(1, vec![sale.clone()])]).await;
    let catalog = Fact::CatalogEntry {
        item: "100".into(),
        aliases: vec!["variant:7".into()],
        sku: Some("SKU-BIG".into()),
        title: None,
        at: 40,
    };
    let a = apply(
        s,
        &r,
        vec![ev(2, vec![catalog, level("100", "all", 20, 60)])],
    )
    .await;
    assert_eq!(
        alerts(&a),
        vec![(Rule::LowStock, "100".into(), Some(20))],
        "SKU-BIG threshold is 50"
    );
    // The same sale in a later event (an order status change) counts once; so does the same
    // line twice in one event.
    apply(s, &r, vec![ev(3, vec![sale.clone(), sale])]).await;
    let items = s.items().await.unwrap();
    assert_eq!(
        items.len(),
        1,
        "the orphan alias item was merged: {items:?}"
    );
    assert_eq!(items[0].units_sold, 2);
    assert_eq!(items[0].last_sale_at, Some(50));
    assert_eq!(items[0].first_seen_at, 40);
    let untracked = Fact::InventoryLevel {
        item: "200".into(),
        location: "l".into(),
        available: None,
        at: 1,
    };
    assert!(alerts(&apply(s, &r, vec![ev(4, vec![untracked])]).await).is_empty());
}

async fn dedup_and_dry_run<S: StateBackend>(s: &S) {
    let r = rules();
    let mut e1 = ev(2, vec![level("x", "l", 1, 1)]);
    e1.payload_key = Some("notif-1".into());
    let mut e2 = ev(3, vec![level("x", "l", 1, 1)]);
    e2.payload_key = Some("notif-1".into());
    let out = apply(s, &r, vec![e1, e2]).await;
    assert!(matches!(out[0], Applied::Done { .. }));
    assert!(matches!(out[1], Applied::AlreadyProcessed));
    assert_eq!(s.counters().await.unwrap()[counters::EVENTS_DUPLICATE], 1);
    // A dry run computes the alert and writes nothing.
    let before = (s.items().await.unwrap(), s.counters().await.unwrap());
    let a = s
        .apply_batch(vec![ev(9, vec![level("y", "l", 1, 1)])], r, 0, true)
        .await
        .unwrap();
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "y".into(), Some(1))]);
    assert_eq!(
        before,
        (s.items().await.unwrap(), s.counters().await.unwrap())
    );
    assert_eq!(s.due_alerts(100).await.unwrap().len(), 1);
}

async fn no_sales<S: StateBackend>(s: &S) {
    let r = rules();
    let day = 86_400_000;
    apply(s, &r, vec![ev(1, vec![level("x", "l", 10, 0)])]).await;
    assert!(scheduled(s, r.clone(), 59 * day, false).await.is_empty());
    let fired = scheduled(s, r.clone(), 61 * day, false).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule, Rule::NoSales);
    assert!(scheduled(s, r.clone(), 70 * day, false).await.is_empty());
    assert_eq!(outbox_of(s, Rule::NoSales).await, 1);
    assert_eq!(s.counters().await.unwrap()[counters::ALERTS_CREATED], 1);
}

async fn implausible<S: StateBackend>(s: &S) {
    let r = rules();
    let day = 86_400_000;
    let accepted = 1_000 * day;
    // 2099 from a wrong clock: applied at the accepted time, counted for the source.
    let mut e = ev(1, vec![level("x", "l", 50, 47_000 * day)]);
    e.accepted_at = accepted;
    apply(s, &r, vec![e]).await;
    let x = s.items().await.unwrap().remove(0);
    assert_eq!((x.first_seen_at, x.levels["l"].at), (accepted, accepted));
    // The next current report is newer: it applies and alerts.
    let mut e = ev(2, vec![level("x", "l", 1, accepted + 1)]);
    e.accepted_at = accepted + 2;
    let a = apply(s, &r, vec![e]).await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "x".into(), Some(1))]);
    // Five days before first seen (Shopify retries for 4 hours): applied, counted as old.
    let mut e = ev(3, vec![level("x", "m", 3, accepted - 5 * day)]);
    e.accepted_at = accepted + 3;
    apply(s, &r, vec![e]).await;
    // An absurd quantity is left out; the event's other fact applies.
    let mut e = ev(
        4,
        vec![level("y", "l", 5_000_000_000, 1), level("z", "l", 7, 1)],
    );
    e.accepted_at = accepted;
    apply(s, &r, vec![e]).await;
    let items = s.items().await.unwrap();
    let names: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(names, vec!["x", "z"]);
    assert_eq!(items[0].total(), Some(4));
    let c = s.counters().await.unwrap();
    assert_eq!(c[counters::FUTURE_TIMESTAMPS], 1);
    assert_eq!(c[&counters::source_future("shop")], 1);
    assert_eq!(c[counters::OLD_TIMESTAMPS], 1);
    assert_eq!(c[counters::FACTS_REFUSED], 1);
    assert_eq!(c[counters::EVENTS_PROCESSED], 4);
    let refused_event = || {
        let mut e = ev(
            4,
            vec![level("y", "l", 5_000_000_000, 1), level("z", "l", 7, 1)],
        );
        e.accepted_at = accepted;
        e
    };
    // Replayed with the limit unchanged: still refused, nothing else happens.
    let a = apply(s, &r, vec![refused_event()]).await;
    assert_eq!(a, vec![Applied::Done { alerts: vec![] }]);
    assert_eq!(s.items().await.unwrap().len(), 2);
    // Replayed after the operator raised the ceiling: the refused fact applies, once; the
    // others are not applied again.
    let mut wide = (*r).clone();
    wide.events.max_quantity = i64::MAX;
    let wide = Arc::new(wide);
    apply(s, &wide, vec![refused_event()]).await;
    let items = s.items().await.unwrap();
    assert_eq!(items[1].item, "y");
    assert_eq!(items[1].total(), Some(5_000_000_000));
    let a = apply(s, &wide, vec![refused_event()]).await;
    assert_eq!(a, vec![Applied::AlreadyProcessed]);
    assert_eq!(s.counters().await.unwrap()[counters::EVENTS_PROCESSED], 4);
}

fn cat(item: &str, at: i64) -> Fact {
    Fact::CatalogEntry {
        item: item.into(),
        aliases: vec![],
        sku: None,
        title: None,
        at,
    }
}

fn variants(items: &[&str], at: i64) -> Fact {
    Fact::ProductVariants {
        product: "P".into(),
        items: items.iter().map(|s| s.to_string()).collect(),
        at,
    }
}

async fn removals<S: StateBackend>(s: &S) {
    let r = rules();
    let day = 86_400_000;
    let removed = |items: &[ItemState], id: &str| {
        items
            .iter()
            .find(|i| i.item == id)
            .and_then(|i| i.removed.clone())
            .map(|x| (x.at, x.reason))
    };
    // A product with two variants, both stocked.
    let first = vec![cat("a", 10), level("a", "all", 40, 10), cat("b", 10)];
    let first = [
        first,
        vec![level("b", "all", 40, 10), variants(&["a", "b"], 10)],
    ]
    .concat();
    apply(s, &r, vec![ev(1, first)]).await;
    // A later update lists only a: b leaves the catalog.
    apply(s, &r, vec![ev(2, vec![cat("a", 20), variants(&["a"], 20)])]).await;
    let items = s.items().await.unwrap();
    let why = "no longer a variant of product P".to_string();
    assert_eq!(removed(&items, "b"), Some((20, why.clone())));
    assert_eq!(removed(&items, "a"), None);
    assert_eq!(s.counters().await.unwrap()[counters::CATALOG_REMOVED], 1);
    // A late older update naming both, with a low level for b: b stays removed, no alert.
    let late = vec![cat("a", 15), cat("b", 15), level("b", "all", 1, 15)];
    let a = apply(
        s,
        &r,
        vec![ev(3, [late, vec![variants(&["a", "b"], 15)]].concat())],
    )
    .await;
    assert!(alerts(&a).is_empty(), "{a:?}");
    let items = s.items().await.unwrap();
    assert_eq!(removed(&items, "b"), Some((20, why)));
    // No no-sales alert for a removed item.
    let fired = scheduled(s, r.clone(), 200 * day, false).await;
    let fired: Vec<&str> = fired.iter().map(|a| a.item.as_str()).collect();
    assert_eq!(fired, vec!["a"]);
    // The product is deleted: a leaves too.
    apply(s, &r, vec![ev(4, vec![variants(&[], 30)])]).await;
    let items = s.items().await.unwrap();
    assert_eq!(
        removed(&items, "a"),
        Some((30, "product P deleted".to_string()))
    );
    assert_eq!(s.counters().await.unwrap()[counters::CATALOG_REMOVED], 2);
    // b is reported again with a newer time: live, and it alerts.
    let a = apply(s, &r, vec![ev(5, vec![level("b", "all", 2, 40)])]).await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "b".into(), Some(2))]);
    assert_eq!(s.counters().await.unwrap()[counters::CATALOG_REMOVED], 1);
    // A removal older than the item's newest report changes nothing; a newer one applies.
    let gone = |at| Fact::Removed {
        item: "b".into(),
        reason: "listing not buyable".into(),
        at,
    };
    apply(s, &r, vec![ev(6, vec![gone(35)])]).await;
    assert_eq!(removed(&s.items().await.unwrap(), "b"), None);
    apply(s, &r, vec![ev(7, vec![gone(50)])]).await;
    let items = s.items().await.unwrap();
    assert_eq!(
        removed(&items, "b"),
        Some((50, "listing not buyable".to_string()))
    );
    assert_eq!(items.len(), 2, "history kept: {items:?}");
    let c = s.counters().await.unwrap();
    assert_eq!(c[counters::CATALOG_REMOVED], 2);
    // Their unsent alerts were cancelled: a's no-sales one, b's low-stock one.
    assert_eq!(c[counters::ALERTS_CANCELLED], 2);
    let cancelled: Vec<(Rule, String)> = s
        .outbox(|e| e.status == OutboxStatus::Cancelled)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.alert.rule, e.alert.item))
        .collect();
    assert_eq!(
        cancelled,
        vec![(Rule::LowStock, "b".into()), (Rule::NoSales, "a".into())]
    );
    assert!(s.due_alerts(i64::MAX).await.unwrap().is_empty());
}

fn combined_rules() -> Arc<RuleConfig> {
    Arc::new(RuleConfig {
        combine_channels: true,
        ..(*rules()).clone()
    })
}

fn on(source: &str, id: u64, item: &str, sku: &str, n: i64, at: i64) -> Prepared {
    Prepared {
        source: source.into(),
        ..ev(
            id,
            vec![
                Fact::CatalogEntry {
                    item: item.into(),
                    aliases: vec![],
                    sku: Some(sku.into()),
                    title: None,
                    at,
                },
                level(item, "l", n, at),
            ],
        )
    }
}

async fn combined<S: StateBackend>(s: &S) {
    let r = combined_rules();
    // Amazon low on its own (per-channel alert), Shopify full: the sum is fine.
    let a = apply(s, &r, vec![on("amazon", 1, "MUG", "MUG", 2, 1)]).await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "MUG".into(), Some(2))]);
    let a = apply(s, &r, vec![on("shopify", 2, "991", "MUG", 40, 2)]).await;
    assert!(alerts(&a).is_empty(), "2 + 40 is not low");
    // Shopify drops: the per-channel rule and the combined one both speak.
    let a = apply(s, &r, vec![on("shopify", 3, "991", "MUG", 1, 3)]).await;
    assert_eq!(
        alerts(&a),
        vec![
            (Rule::LowStock, "991".into(), Some(1)),
            (Rule::CombinedLowStock, "MUG".into(), Some(3))
        ]
    );
    let a = apply(s, &r, vec![on("shopify", 4, "991", "MUG", 0, 4)]).await;
    assert_eq!(
        alerts(&a),
        vec![(Rule::OutOfStock, "991".into(), Some(0))],
        "the combined rule already fired"
    );
    // Hostile quantities (with the plausibility ceiling lifted) saturate instead of
    // overflowing or wrapping into "low".
    let mut wide = (*r).clone();
    wide.events.max_quantity = i64::MAX;
    let r = Arc::new(wide);
    apply(s, &r, vec![on("amazon", 5, "MUG", "MUG", i64::MAX, 5)]).await;
    let a = apply(s, &r, vec![on("shopify", 6, "991", "MUG", i64::MAX, 6)]).await;
    assert!(alerts(&a).is_empty(), "{a:?}");
    let a = apply(s, &r, vec![on("amazon", 7, "MUG", "MUG", 0, 7)]).await;
    assert_eq!(alerts(&a), vec![(Rule::OutOfStock, "MUG".into(), Some(0))]);
}

async fn sku_change<S: StateBackend>(s: &S) {
    let r = combined_rules();
    apply(s, &r, vec![on("amazon", 1, "A1", "MUG", 40, 1)]).await;
    apply(s, &r, vec![on("shopify", 2, "991", "MUG", 40, 2)]).await;
    apply(s, &r, vec![on("ebay", 3, "E1", "CUP", 40, 3)]).await;
    // Shopify's item now carries CUP: it leaves MUG's sum, which is Amazon's alone (no
    // cross-channel rule for one channel), and joins CUP's.
    apply(s, &r, vec![on("shopify", 4, "991", "CUP", 40, 4)]).await;
    let a = apply(s, &r, vec![on("amazon", 5, "A1", "MUG", 1, 5)]).await;
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "A1".into(), Some(1))]);
    let a = apply(s, &r, vec![on("ebay", 6, "E1", "CUP", 1, 6)]).await;
    assert_eq!(
        alerts(&a),
        vec![(Rule::LowStock, "E1".into(), Some(1))],
        "1 + 40"
    );
    let a = apply(s, &r, vec![on("shopify", 7, "991", "CUP", 2, 7)]).await;
    assert_eq!(
        alerts(&a),
        vec![
            (Rule::LowStock, "991".into(), Some(2)),
            (Rule::CombinedLowStock, "CUP".into(), Some(3))
        ]
    );
}

/// What a run left: items, the alerts each delivery raised, the outbox, all of one source set.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<ItemState>,
    raised: Vec<Vec<String>>,
    outbox: Vec<(String, String, Option<i64>, OutboxStatus)>,
}

/// The facts of one property case: two sources sharing SKUs, catalog entries with aliases,
/// levels (per location and product-wide, some untracked, some late) and sales (some returns).
fn case_facts(rng: &mut StdRng, tag: &str) -> Vec<(String, Fact)> {
    let sources = [format!("{tag}a"), format!("{tag}b")];
    let mut facts = Vec::new();
    for src in &sources {
        for item in 0..3 {
            let sku = format!("{tag}sku{}", rng.gen_range(0..2));
            facts.push((
                src.clone(),
                Fact::CatalogEntry {
                    item: format!("i{item}"),
                    aliases: vec![format!("v{item}")],
                    sku: Some(sku),
                    title: Some(format!("t{}", rng.gen_range(0..2))),
                    at: rng.gen_range(0..100),
                },
            ));
        }
    }
    // Distinct event times, and distinct order lines: what arrives is the same in every order.
    let n = rng.gen_range(6..14);
    // Days apart (up to 39 days): the velocity's daily record is pruned to its window.
    let mut times: Vec<i64> = (0..n as i64).map(|t| 100 + 3 * t * DAY).collect();
    times.shuffle(rng);
    for (k, at) in times.into_iter().enumerate() {
        let src = sources[rng.gen_range(0..2)].clone();
        let id = rng.gen_range(0..3);
        let fact = if rng.gen_bool(0.7) {
            Fact::InventoryLevel {
                item: format!("i{id}"),
                location: ["all", "l1", "l2"][rng.gen_range(0..3)].into(),
                available: (!rng.gen_bool(0.1)).then(|| rng.gen_range(-2..12)),
                at,
            }
        } else {
            // Sales may name the alias (merged when the catalog entry comes).
            let alias = rng.gen_bool(0.5);
            Fact::Sale {
                item: format!("{}{id}", if alias { "v" } else { "i" }),
                quantity: rng.gen_range(-1..4),
                order: format!("o{k}"),
                line: "1".into(),
                at,
            }
        };
        facts.push((src, fact));
    }
    facts
}

/// One delivery sequence of a case: events of one to three facts in a random order, some
/// events delivered twice (same id), some notifications twice (same payload key, new id), in
/// batches of random size.
fn deliveries(rng: &mut StdRng, facts: &[(String, Fact)], base: u64) -> Vec<Vec<Prepared>> {
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.shuffle(rng);
    let mut events = Vec::new();
    let mut next_id = base;
    let mut i = 0;
    while i < order.len() {
        let src = &facts[order[i]].0;
        let mut group = vec![facts[order[i]].1.clone()];
        i += 1;
        while i < order.len() && facts[order[i]].0 == *src && group.len() < 3 && rng.gen_bool(0.4) {
            group.push(facts[order[i]].1.clone());
            i += 1;
        }
        let mut e = ev(next_id, group);
        e.source = src.clone();
        e.payload_key = rng.gen_bool(0.3).then(|| format!("n{next_id}"));
        next_id += 1;
        let dup_id = rng.gen_bool(0.2).then(|| copy(&e, e.id.0));
        let dup_key = (e.payload_key.is_some() && rng.gen_bool(0.5)).then(|| {
            next_id += 1;
            copy(&e, next_id - 1)
        });
        events.push(e);
        events.extend(dup_id);
        events.extend(dup_key);
    }
    // A redelivery may come much later: move some duplicates further on.
    for k in 0..events.len() {
        if rng.gen_bool(0.1) {
            let j = rng.gen_range(k..events.len());
            events.swap(k, j);
        }
    }
    let mut batches = Vec::new();
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        let n = rng.gen_range(1..5);
        batches.push(it.by_ref().take(n).collect());
    }
    batches
}

fn copy(e: &Prepared, id: u64) -> Prepared {
    Prepared {
        id: EventId(id),
        accepted_at: i64::MAX / 2,
        source: e.source.clone(),
        platform: e.platform.clone(),
        payload_key: e.payload_key.clone(),
        normalized: e.normalized.clone(),
    }
}

async fn run_case<S: StateBackend>(
    s: &S,
    r: &Arc<RuleConfig>,
    batches: Vec<Vec<Prepared>>,
    tag: &str,
) -> Outcome {
    let mut raised = Vec::new();
    for b in batches {
        for a in s.apply_batch(b, r.clone(), 10, false).await.unwrap() {
            let mut ids: Vec<String> = match a {
                Applied::Done { alerts } => alerts.into_iter().map(|a| a.id).collect(),
                Applied::AlreadyProcessed => vec!["already".into()],
            };
            ids.sort();
            raised.push(ids);
        }
    }
    let tag = tag.to_string();
    let items = s
        .items()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.source.starts_with(&tag))
        .collect();
    let t = tag.clone();
    let mut outbox: Vec<_> = s
        .outbox(move |e| e.alert.source.starts_with(&t) || e.alert.item.starts_with(&t))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.alert.id, e.alert.item, e.alert.available, e.status))
        .collect();
    outbox.sort_by(|a, b| a.0.cmp(&b.0));
    Outcome {
        items,
        raised,
        outbox,
    }
}

/// What delivery order must not change: the newest level per location, sales counted once,
/// and the velocity's daily record.
type Newest = (
    String,
    String,
    Vec<(String, Option<i64>)>,
    i64,
    Option<i64>,
    stockhook_worker::cover::Demand,
);

fn order_free(o: &Outcome, tag: &str) -> Vec<Newest> {
    o.items
        .iter()
        .map(|i| {
            (
                i.source.trim_start_matches(tag).to_string(),
                i.item.clone(),
                i.levels
                    .iter()
                    .map(|(l, v)| (l.clone(), v.available))
                    .collect(),
                i.units_sold,
                i.last_sale_at,
                i.demand.clone(),
            )
        })
        .collect()
}

/// The property: the same facts, delivered in any order and with duplicates, give the same
/// items, alerts and outbox on sled and on NATS; and every order gives the same newest levels
/// and sales. Cases: `SHTEST_STATE_CASES` (default 200), seed `SHTEST_STATE_SEED`.
async fn property<S: StateBackend>(s: &S) {
    let cases: u64 = std::env::var("SHTEST_STATE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("SHTEST_STATE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0011);
    let sled_dir = tempfile::tempdir().unwrap();
    let reference = SledState::open(&sled_dir.path().join("state")).unwrap();
    for case in 0..cases {
        let mut rng = StdRng::seed_from_u64(seed ^ case);
        // Every case in its own sources and SKUs, so one store serves all of them.
        let tag = format!("c{case}-");
        let facts = case_facts(&mut StdRng::seed_from_u64(seed ^ case), &tag);
        let r = if rng.gen_bool(0.5) {
            combined_rules()
        } else {
            rules()
        };
        let first = deliveries(&mut rng, &facts, case * 10_000);
        let replay: Vec<Vec<Prepared>> = first
            .iter()
            .map(|v| v.iter().map(|e| copy(e, e.id.0)).collect())
            .collect();
        // `s` and the sled reference get the same deliveries.
        let got = run_case(s, &r, replay, &tag).await;
        let want = run_case(&reference, &r, first, &tag).await;
        assert_eq!(
            got,
            want,
            "case {case} (seed {seed}): {} and sled disagree",
            s.describe()
        );
        // The same facts (under other source names) in another order.
        let tag2 = format!("d{case}-");
        let facts2 = case_facts(&mut StdRng::seed_from_u64(seed ^ case), &tag2);
        let second = deliveries(&mut rng, &facts2, case * 10_000 + 5_000);
        let again = run_case(&reference, &r, second, &tag2).await;
        assert_eq!(
            order_free(&got, &tag),
            order_free(&again, &tag2),
            "case {case} (seed {seed}): delivery order changed the newest levels or sales"
        );
    }
}
#[tokio::test]
async fn redelivery_after_a_crash_midway_changes_nothing() {
    let Some(bin) = require_nats("redelivery_after_a_crash_midway_changes_nothing") else {
        return;
    };
    let server = start(&bin).await;
    let s = state(&server.url).await;
    let sale = Fact::Sale {
        item: "100".into(),
        quantity: 3,
        order: "o9".into(),
        line: "1".into(),
        at: 5,
    };
    let batch = || vec![ev(7, vec![level("100", "l", 2, 1), sale.clone()])];
    let first = s.apply_batch(batch(), rules(), 0, false).await.unwrap();
    assert_eq!(
        alerts(&first),
        vec![(Rule::LowStock, "100".into(), Some(2))]
    );
    // The crash: every effect is stored but the processed mark is not (it is written last).
    let js = async_nats::jetstream::new(async_nats::connect(&server.url).await.unwrap());
    let marks = js.get_key_value("stockhook_marks").await.unwrap();
    marks.delete("p.7").await.unwrap();
    let again = s.apply_batch(batch(), rules(), 0, false).await.unwrap();
    assert_eq!(
        alerts(&again),
        alerts(&first),
        "the same alert is handed back (and not enqueued twice)"
    );
    let items = s.items().await.unwrap();
    assert_eq!(items[0].units_sold, 3, "the sale is counted once");
    assert_eq!(s.due_alerts(10).await.unwrap().len(), 1);
    assert_eq!(s.counters().await.unwrap()[counters::ALERTS_CREATED], 1);
    assert_eq!(
        s.apply_batch(batch(), rules(), 0, false).await.unwrap(),
        vec![Applied::AlreadyProcessed]
    );
}

#[tokio::test]
async fn two_workers_same_events_one_alert_and_one_claimer() {
    let Some((_server, a, b)) = two_workers().await else {
        return;
    };
    // Both workers apply the same 50 events at once (a redelivery racing the first delivery).
    let batch = || -> Vec<Prepared> {
        (0..50u64)
            .map(|i| ev(100 + i, vec![level(&format!("item{i}"), "l", 1, 1)]))
            .collect()
    };
    let (ra, rb) = tokio::join!(
        a.apply_batch(batch(), rules(), 0, false),
        b.apply_batch(batch(), rules(), 0, false)
    );
    ra.unwrap();
    rb.unwrap();
    let due = a.due_alerts(10).await.unwrap();
    assert_eq!(due.len(), 50, "one alert per item, not two");
    assert_eq!(a.counters().await.unwrap()[counters::ALERTS_CREATED], 50);
    // Both try to claim every due alert: each one goes to exactly one of them.
    let (ca, cb) = tokio::join!(
        a.claim_alerts(due.clone(), i64::MAX),
        b.claim_alerts(due.clone(), i64::MAX)
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.len() + cb.len(), 50, "{} + {}", ca.len(), cb.len());
    let mut ids: Vec<String> = ca.iter().chain(&cb).map(|e| e.alert.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    // Claimed by the other: not due for this one any more.
    assert!(b
        .claim_alerts(ca.clone(), i64::MAX)
        .await
        .unwrap()
        .is_empty());
    // Marking sent releases the claim and takes them out of the due list.
    let sent: Vec<String> = ca.iter().map(|e| e.alert.id.clone()).collect();
    a.update_alerts(
        sent,
        |e| e.status = stockhook_worker::alert::OutboxStatus::Sent,
        vec![(counters::ALERTS_SENT.to_string(), ca.len() as i64)],
    )
    .await
    .unwrap();
    let left = a
        .outbox(|e| e.status == stockhook_worker::alert::OutboxStatus::Pending)
        .await
        .unwrap();
    assert_eq!(left.len(), cb.len());
}

#[tokio::test]
async fn no_sales_fires_once_per_quiet_period_across_workers() {
    let Some((_server, a, b)) = two_workers().await else {
        return;
    };
    let day = 86_400_000;
    a.apply_batch(vec![ev(1, vec![level("x", "l", 10, 0)])], rules(), 0, false)
        .await
        .unwrap();
    assert!(scheduled(&a, rules(), 59 * day, false).await.is_empty());
    let (fa, fb) = tokio::join!(
        a.run_no_sales(rules(), 61 * day, false),
        b.run_no_sales(rules(), 61 * day, false)
    );
    let fired = fa.unwrap().len() + fb.unwrap().len();
    assert_eq!(fired, 1, "one no-sales alert between the two workers");
    assert!(scheduled(&a, rules(), 70 * day, false).await.is_empty());
    assert_eq!(outbox_of(&a, Rule::NoSales).await, 1);
}

fn sale(item: &str, n: i64, order: &str, at: i64) -> Fact {
    Fact::Sale {
        item: item.into(),
        quantity: n,
        order: order.into(),
        line: "1".into(),
        at,
    }
}

/// 20 days of an item selling 3 a day from 100, each day's sale and level as one event applied
/// at its own time: the cover rule (14 days, reorder point 42) fires once, on the level of day
/// 19 (40 left).
async fn cover<S: StateBackend>(s: &S) {
    let r = rules();
    let t0 = 20_000 * DAY;
    let mut fired = Vec::new();
    for i in 0..20 {
        let at = t0 + i * DAY + 3_600_000;
        let e = ev(
            100 + i as u64,
            vec![
                sale("c1", 3, &format!("o{i}"), at),
                level("c1", "all", 100 - 3 * (i + 1), at + 1),
            ],
        );
        let a = s
            .apply_batch(vec![e], r.clone(), at + 2, false)
            .await
            .unwrap();
        for x in alerts(&a) {
            fired.push((i, x));
        }
    }
    assert_eq!(
        fired,
        vec![(19, (Rule::Cover, "c1".to_string(), Some(40)))],
        "fires once, below the reorder point"
    );
    let now = t0 + 19 * DAY + 3_600_002;
    let out = s.outbox(|e| e.alert.rule == Rule::Cover).await.unwrap();
    assert_eq!(out.len(), 1);
    let c = out[0]
        .alert
        .cover
        .clone()
        .expect("the alert carries its cover");
    // 57 units over the 19 whole days before today: 3 a day, 40 last 13.3 days, and 14 + 7
    // days of sales less the 40 on hand is 23 to order.
    assert_eq!(c.velocity_per_day, 3.0);
    assert_eq!(c.days_of_cover, 13.3);
    assert_eq!(c.reorder_qty, 23);
    assert_eq!(c.reorder_point, 42);
    assert_eq!(c.stockout_date, now + (40.0 / 3.0 * DAY as f64) as i64);
    // The item's cover as the dashboard and preview read it.
    let items = s.items().await.unwrap();
    let item = items.iter().find(|i| i.item == "c1").unwrap();
    assert_eq!(stockhook_worker::cover::cover(item, &r, now), Some(c));
    // Lower still: already told, nothing.
    let again = ev(119, vec![level("c1", "all", 39, now + 5)]);
    let a = s
        .apply_batch(vec![again], r.clone(), now + 6, false)
        .await
        .unwrap();
    assert!(alerts(&a).is_empty(), "still below, already told: {a:?}");
    // The scheduled pass has nothing new either.
    assert!(scheduled(s, r.clone(), now + DAY / 2, false)
        .await
        .is_empty());
    // A restock above 1.25 x the reorder point re-arms; the schedule with a longer lead time
    // (30 days: reorder point about 90) then finds it short, once.
    let restock = ev(120, vec![level("c1", "all", 80, now + 10)]);
    let a = s
        .apply_batch(vec![restock], r.clone(), now + 11, false)
        .await
        .unwrap();
    assert!(alerts(&a).is_empty());
    let long = Arc::new(RuleConfig {
        cover: stockhook_worker::cover::CoverRules {
            cover_days: 30,
            ..Default::default()
        },
        ..(*r).clone()
    });
    let at = now + DAY / 2;
    let due = scheduled(s, long.clone(), at, false).await;
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].rule, Rule::Cover);
    assert_eq!(due[0].available, Some(80));
    assert_eq!(due[0].cover.as_ref().map(|c| c.cover_days), Some(30));
    assert!(scheduled(s, long, at + 1, false).await.is_empty());
    assert_eq!(outbox_of(s, Rule::Cover).await, 2);
}

/// The velocity's record is part of the item: a restarted worker (sled reopened, a new NATS
/// connection) has the same cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velocity_survives_a_restart_on_both_backends() {
    let r = rules();
    let t0 = 20_000 * DAY;
    let events = || {
        (0..10)
            .map(|i| {
                let at = t0 + i * DAY;
                ev(
                    200 + i as u64,
                    vec![
                        sale("v1", 2, &format!("r{i}"), at),
                        level("v1", "all", 500 - 2 * i, at),
                    ],
                )
            })
            .collect::<Vec<_>>()
    };
    let now = t0 + 10 * DAY;
    let cover_of = |items: Vec<ItemState>| {
        let it = items.into_iter().find(|i| i.item == "v1").unwrap();
        (stockhook_worker::cover::cover(&it, &r, now), it.demand)
    };
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let sled = SledState::open(&dir.path().join("state")).unwrap();
        sled.apply_batch(events(), r.clone(), now, false)
            .await
            .unwrap();
        sled.sync().await.unwrap();
        cover_of(sled.items().await.unwrap())
    };
    assert!(
        before.0.as_ref().is_some_and(|c| c.velocity_per_day == 2.0),
        "{before:?}"
    );
    let sled = SledState::open(&dir.path().join("state")).unwrap();
    assert_eq!(cover_of(sled.items().await.unwrap()), before);
    if let Some(bin) = require_nats("velocity_survives_a_restart_on_both_backends") {
        let server = start(&bin).await;
        {
            let s = state(&server.url).await;
            s.apply_batch(events(), r.clone(), now, false)
                .await
                .unwrap();
        }
        let s = state(&server.url).await;
        assert_eq!(cover_of(s.items().await.unwrap()), before);
    }
}

fn citem(item: &str, sku: &str, levels: Vec<(&str, Option<i64>)>) -> CatalogItem {
    CatalogItem {
        item: item.into(),
        sku: Some(sku.into()),
        title: Some(format!("Title of {sku}")),
        levels: levels
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect(),
        ..CatalogItem::default()
    }
}

fn cbatch(taken_at: i64, items: Vec<CatalogItem>) -> CatalogBatch {
    CatalogBatch {
        source: "shop".into(),
        platform: "shopify".into(),
        taken_at,
        items,
        locations: vec![Location {
            id: "77".into(),
            name: "Main warehouse".into(),
        }],
        complete: true,
        ..CatalogBatch::default()
    }
}

fn fired(a: &[Applied]) -> Vec<stockhook_worker::alert::Alert> {
    a.iter()
        .flat_map(|x| match x {
            Applied::Done { alerts } => alerts.clone(),
            Applied::AlreadyProcessed => vec![],
        })
        .collect()
}

/// A catalog batch (sync or import) through the engine: location names reach the alerts (the
/// batch's and a later bare webhook's), the same batch again changes nothing, a newer snapshot
/// level that differs is a counted correction (an older one is not), and a complete batch
/// marks the live items it does not list as removed, never deleted.
async fn catalog_batches<S: StateBackend>(s: &S) {
    let r = rules();
    let first = cbatch(
        1_000,
        vec![
            citem("100", "A", vec![("77", Some(10))]),
            citem("200", "B", vec![("77", Some(2))]),
            citem("300", "C", vec![("77", None)]),
        ],
    );
    let o1 = Origin::Sync {
        run_started_at: 1_000,
    };
    let a = catalog::apply(s, r.clone(), &first, &o1, 1_000, false)
        .await
        .unwrap();
    let got = fired(&a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].item, "200");
    assert_eq!(got[0].location_name.as_deref(), Some("Main warehouse"));
    assert_eq!(got[0].sku.as_deref(), Some("B"));
    // Untracked: catalog only, never a 0 (no out-of-stock alert, no level).
    let items = s.items().await.unwrap();
    let c = items.iter().find(|i| i.item == "300").unwrap();
    assert_eq!(c.total(), None);
    let again = catalog::apply(s, r.clone(), &first, &o1, 1_500, false)
        .await
        .unwrap();
    assert!(
        again.iter().all(|x| *x == Applied::AlreadyProcessed),
        "{again:?}"
    );

    // A bare webhook level for an item the catalog knows: the alert names it and its place.
    let a = apply(s, &r, vec![ev(1, vec![level("100", "77", 3, 2_000)])]).await;
    let got = fired(&a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].title.as_deref(), Some("Title of A"));
    assert_eq!(got[0].sku.as_deref(), Some("A"));
    assert_eq!(got[0].location_name.as_deref(), Some("Main warehouse"));

    // The next complete snapshot: A differs from the webhook's older level (a correction);
    // B and C are gone from the platform.
    let second = cbatch(3_000, vec![citem("100", "A", vec![("77", Some(4))])]);
    let o2 = Origin::Sync {
        run_started_at: 3_000,
    };
    catalog::apply(s, r.clone(), &second, &o2, 3_000, false)
        .await
        .unwrap();
    let counters = s.counters().await.unwrap();
    assert_eq!(counters.get(counters::SYNC_CORRECTIONS), Some(&1));
    assert_eq!(counters.get("source.shop.corrections"), Some(&1));
    assert_eq!(counters.get(counters::CATALOG_REMOVED), Some(&2));
    let items = s.items().await.unwrap();
    assert_eq!(items.len(), 3, "removed items are kept");
    for gone in ["200", "300"] {
        let st = items.iter().find(|i| i.item == gone).unwrap();
        assert_eq!(
            st.removed.as_ref().map(|r| r.reason.as_str()),
            Some(catalog::GONE_REASON)
        );
    }
    let a_item = items.iter().find(|i| i.item == "100").unwrap();
    assert!(a_item.removed.is_none());
    assert_eq!(a_item.total(), Some(4));

    // A webhook newer than a snapshot wins: the older snapshot is stale, not a correction.
    apply(s, &r, vec![ev(2, vec![level("100", "77", 8, 5_000)])]).await;
    let third = cbatch(4_000, vec![citem("100", "A", vec![("77", Some(1))])]);
    let o3 = Origin::Sync {
        run_started_at: 4_000,
    };
    let a = catalog::apply(s, r.clone(), &third, &o3, 4_000, false)
        .await
        .unwrap();
    assert!(fired(&a).is_empty());
    let counters = s.counters().await.unwrap();
    assert_eq!(counters.get(counters::SYNC_CORRECTIONS), Some(&1));
    let items = s.items().await.unwrap();
    assert_eq!(
        items.iter().find(|i| i.item == "100").unwrap().total(),
        Some(8)
    );
}

/// `preview --at` is the scheduled pass in dry run: the alerts it would raise, nothing written,
/// and never one for a removed item.
async fn preview_dry_run<S: StateBackend>(s: &S) {
    let r = rules();
    let day = 86_400_000;
    let mut b = cbatch(
        0,
        vec![
            citem("x", "X", vec![("77", Some(10))]),
            citem("y", "Y", vec![("77", Some(10))]),
        ],
    );
    b.complete = false;
    catalog::apply(
        s,
        r.clone(),
        &b,
        &Origin::Import { sha256: [1; 32] },
        0,
        false,
    )
    .await
    .unwrap();
    apply(
        s,
        &r,
        vec![ev(
            1,
            vec![Fact::Removed {
                item: "y".into(),
                reason: "deleted".into(),
                at: 10,
            }],
        )],
    )
    .await;
    let before = (
        s.items().await.unwrap(),
        s.counters().await.unwrap(),
        s.outbox(|_| true).await.unwrap(),
    );
    assert!(scheduled(s, r.clone(), 59 * day, true).await.is_empty());
    let preview = scheduled(s, r.clone(), 61 * day, true).await;
    assert_eq!(
        preview
            .iter()
            .map(|a| (a.rule, a.item.as_str()))
            .collect::<Vec<_>>(),
        vec![(Rule::NoSales, "x")]
    );
    assert_eq!(preview[0].location_name.as_deref(), Some("Main warehouse"));
    let after = (
        s.items().await.unwrap(),
        s.counters().await.unwrap(),
        s.outbox(|_| true).await.unwrap(),
    );
    assert_eq!(before, after, "a dry run writes nothing");
    // The real pass raises what the preview showed.
    let real = scheduled(s, r.clone(), 61 * day, false).await;
    assert_eq!(
        real.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        preview.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    );
    assert!(scheduled(s, r.clone(), 61 * day, true).await.is_empty());
}

/// Send claims between two workers: a renewed claim stays with its owner; a lapsed one is taken
/// over, and then its old owner can neither renew it nor release the new owner's claim; a
/// claim keeps the planned set already written (a later plan, from another worker's older
/// snapshot or for a later channel, does not replace it).
#[tokio::test]
async fn claims_renew_lapse_to_another_worker_and_keep_the_planned_set() {
    let Some((_server, a, b)) = two_workers().await else {
        return;
    };
    let batch: Vec<Prepared> = (0..3u64)
        .map(|i| ev(500 + i, vec![level(&format!("c{i}"), "l", 1, 1)]))
        .collect();
    a.apply_batch(batch, rules(), 0, false).await.unwrap();
    let mut due = a.due_alerts(10).await.unwrap();
    assert_eq!(due.len(), 3);
    let ids: Vec<String> = due.iter().map(|e| e.alert.id.clone()).collect();
    let set_a = vec!["set-a".to_string()];
    for e in &mut due {
        e.planned = set_a.clone().into();
    }
    let now = stockhook_shared::queue::now_ms();
    // A claims, with a 1 s life, renewed to 3 s: past the first deadline it is still A's.
    let mine = a.claim_alerts(due.clone(), now + 1_000).await.unwrap();
    assert_eq!(mine.len(), 3);
    assert!(a.renew_claims(ids.clone(), now + 3_000).await.unwrap());
    for e in a.outbox(|_| true).await.unwrap() {
        assert_eq!(e.planned, set_a, "the claim wrote A's set");
    }
    let mut later = due.clone();
    for e in &mut later {
        e.planned = vec!["set-b".to_string()].into();
    }
    // The polling interval below is not a synchronization: each loop checks its condition.
    let poll = std::time::Duration::from_millis(50);
    while stockhook_shared::queue::now_ms() < now + 1_500 {
        tokio::time::sleep(poll).await;
    }
    assert!(
        b.claim_alerts(later.clone(), now + 60_000)
            .await
            .unwrap()
            .is_empty(),
        "a renewed claim is not taken over"
    );
    // Not renewed again, A's claim lapses: B takes the entries over, with the planned set A
    // wrote, not B's.
    let taken = loop {
        let t = b.claim_alerts(later.clone(), now + 60_000).await.unwrap();
        if !t.is_empty() {
            break t;
        }
        assert!(
            stockhook_shared::queue::now_ms() < now + 15_000,
            "A's 3 s claim never lapsed"
        );
        tokio::time::sleep(poll).await;
    };
    assert!(stockhook_shared::queue::now_ms() >= now + 3_000);
    assert_eq!(taken.len(), 3);
    assert!(taken.iter().all(|e| e.planned == set_a), "{taken:?}");
    // A, back from its pause: its claims are gone, and its write-down keeps B's claim.
    assert!(!a.renew_claims(ids.clone(), now + 60_000).await.unwrap());
    a.update_alerts(ids.clone(), |_| {}, vec![]).await.unwrap();
    assert!(
        a.claim_alerts(due.clone(), now + 60_000)
            .await
            .unwrap()
            .is_empty(),
        "B's claim survived A's update"
    );
    assert!(b.renew_claims(ids.clone(), now + 60_000).await.unwrap());
}

/// A set planned and claimed by a worker that died mid-send, taken over, on both backends (one
/// rule, in the sender): where the dead worker had written one member down as emailed, the
/// email went, so the rest is written down with that Message-ID and nothing is sent; where it
/// had written nothing, the whole set goes out again, same members, with the Message-ID of the
/// planned set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_set_taken_over_keeps_its_members_and_message_id_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledState::open(&dir.path().join("state")).unwrap();
    takeover(Arc::new(sled), &dir.path().join("sled-mail")).await;
    if let Some(bin) =
        require_nats("a_planned_set_taken_over_keeps_its_members_and_message_id_on_both_backends")
    {
        let server = start(&bin).await;
        let nats = state(&server.url).await;
        takeover(Arc::new(nats), &dir.path().join("nats-mail")).await;
    }
}

async fn takeover<S: StateBackend>(s: Arc<S>, data: &Path) {
    use stockhook_worker::alert::{message_id, set_id, ChannelDelivery, EMAIL};
    let batch: Vec<Prepared> = (0..6u64)
        .map(|i| ev(700 + i, vec![level(&format!("t{i}"), "l", 1, 1)]))
        .collect();
    s.apply_batch(batch, rules(), 10, false).await.unwrap();
    let due = s
        .due_alerts(stockhook_shared::queue::now_ms())
        .await
        .unwrap();
    assert_eq!(due.len(), 6);
    // Two sets, planned and claimed by the worker that then died.
    let plan = |part: &[stockhook_worker::alert::OutboxEntry]| {
        let mut ids: Vec<String> = part.iter().map(|e| e.alert.id.clone()).collect();
        ids.sort();
        let planned: Vec<_> = part
            .iter()
            .cloned()
            .map(|mut e| {
                e.planned = ids.clone().into();
                e
            })
            .collect();
        (ids, planned)
    };
    let (went, went_entries) = plan(&due[..3]);
    let (unsent, unsent_entries) = plan(&due[3..]);
    let until = stockhook_shared::queue::now_ms() + 60_000;
    for entries in [went_entries, unsent_entries] {
        assert_eq!(s.claim_alerts(entries, until).await.unwrap().len(), 3);
    }
    // The first set's email was accepted, and one member written down, before the death.
    let went_mid = message_id(&set_id(&went));
    let mid = went_mid.clone();
    s.update_alerts(
        vec![went[0].clone()],
        move |e| {
            e.materialize(&[EMAIL.to_string()]);
            let d = e
                .channels
                .entry(EMAIL.to_string())
                .or_insert_with(|| ChannelDelivery::pending(0));
            d.status = OutboxStatus::Sent;
            d.sent_at = Some(1);
            d.delivery_id = Some(mid.clone());
            e.recompute();
        },
        vec![],
    )
    .await
    .unwrap();

    let config: Config = toml::from_str("[alerts]\nrecipients = [\"ops@example.com\"]\n").unwrap();
    let mailer = stockhook_worker::email::Mailer::from_config(&config.email, data).unwrap();
    let channels = stockhook_worker::channels::Channels::from_config(&config, mailer).unwrap();
    let policy = stockhook_worker::sender::SendPolicy::from_config(&config);
    stockhook_worker::sender::send_due(&s, &channels, &policy)
        .await
        .unwrap();

    let mail: Vec<String> = std::fs::read_dir(data.join("mail"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mail.len(), 1, "only the set that never went is sent");
    let unsent_mid = message_id(&set_id(&unsent));
    assert!(
        mail[0].contains(&format!("Message-ID: {unsent_mid}\r\n")),
        "{}",
        mail[0]
    );
    for id in &unsent {
        assert!(mail[0].contains(id.as_str()), "{id} in the resent set");
    }
    for id in &went {
        assert!(!mail[0].contains(id.as_str()), "{id} not sent again");
    }
    let outbox = s.outbox(|_| true).await.unwrap();
    assert_eq!(outbox.len(), 6);
    for e in &outbox {
        assert_eq!(e.status, OutboxStatus::Sent, "{e:?}");
        let want = if went.contains(&e.alert.id) {
            &went_mid
        } else {
            &unsent_mid
        };
        assert_eq!(e.message_id.as_ref(), Some(want), "{e:?}");
    }
}
