//! The worker's state on JetStream KV ([`NatsState`]) against a real `nats-server -js`: the same
//! rules as the sled store's unit tests (fires once, re-arms, late levels ignored, sales through
//! aliases counted once, payload dedup, dry runs write nothing), plus what only several workers
//! need: a redelivery after a crash midway changes nothing, two workers applying the same
//! events raise each alert once, and each due alert is claimed by exactly one of them.
//!
//! Without `nats-server` the tests print a loud SKIPPED line and pass, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where they fail (`stockhook_test_kit::nats`).

use std::collections::BTreeMap;
use std::sync::Arc;
use stockhook_shared::config::{Config, OneOrMany};
use stockhook_shared::envelope::EventId;
use stockhook_test_kit::nats::{self, NatsServer};
use stockhook_worker::alert::Rule;
use stockhook_worker::facts::{Fact, Normalized};
use stockhook_worker::state::{counters, Applied, Prepared, RuleConfig};
use stockhook_worker::state_backend::StateBackend;
use stockhook_worker::state_nats::NatsState;

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
        default_threshold: 5,
        source_threshold: BTreeMap::new(),
        sku_thresholds: [("SKU-BIG".to_string(), 50)].into_iter().collect(),
        default_recipients: vec!["seller@example.com".into()],
        source_recipients: BTreeMap::new(),
        no_sales_days: 60,
        digest_window_ms: 0,
        combine_channels: false,
    })
}

fn ev(id: u64, facts: Vec<Fact>) -> Prepared {
    Prepared {
        id: EventId(id),
        source: "shop".into(),
        platform: "shopify".into(),
        payload_key: None,
        normalized: Normalized {
            topic: "t".into(),
            facts,
            ignored: false,
        },
    }
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

#[tokio::test]
async fn fires_once_rearms_ignores_late_levels_and_redelivery_changes_nothing() {
    let Some(bin) = nats::require("fires_once_rearms_ignores_late_levels") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let s = state(&server.url).await;
    let catalog = Fact::CatalogEntry {
        item: "100".into(),
        aliases: vec!["variant:7".into()],
        sku: Some("SKU-1".into()),
        title: Some("Blue mug".into()),
        at: 1,
    };
    let r = s
        .apply_batch(
            vec![ev(1, vec![catalog, level("100", "loc1", 3, 2)])],
            rules(),
            10,
            false,
        )
        .await
        .unwrap();
    assert_eq!(alerts(&r), vec![(Rule::LowStock, "100".into(), Some(3))]);
    let due = s.due_alerts(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].alert.title.as_deref(), Some("Blue mug"));
    let r = s
        .apply_batch(
            vec![ev(1, vec![level("100", "loc1", 1, 3)])],
            rules(),
            11,
            false,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![Applied::AlreadyProcessed]);
    // Still below: nothing; up to 9 re-arms; 1 at t=15 is older than 9 at t=20: ignored; 2 fires.
    let mut got = Vec::new();
    for (i, (n, at)) in [(2, 4), (9, 20), (1, 15), (2, 30)].iter().enumerate() {
        got.extend(alerts(
            &s.apply_batch(
                vec![ev(2 + i as u64, vec![level("100", "loc1", *n, *at)])],
                rules(),
                12,
                false,
            )
            .await
            .unwrap(),
        ));
    }
    assert_eq!(got, vec![(Rule::LowStock, "100".into(), Some(2))]);
    let c = s.counters().await.unwrap();
    assert_eq!(c[counters::EVENTS_PROCESSED], 5);
    assert_eq!(c[counters::LEVELS_STALE], 1);
    assert_eq!(c[counters::ALERTS_CREATED], 2);
    assert_eq!(c[&counters::source_processed("shop")], 5);
    assert_eq!(s.due_alerts(100).await.unwrap().len(), 2);
    let items = s.items().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].total(), Some(2));
}

#[tokio::test]
async fn sales_through_aliases_count_once_and_payload_keys_dedup() {
    let Some(bin) = nats::require("sales_through_aliases_count_once") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let s = state(&server.url).await;
    let sale = Fact::Sale {
        item: "variant:7".into(),
        quantity: 2,
        order: "o1".into(),
        line: "l1".into(),
        at: 50,
    };
    s.apply_batch(vec![ev(1, vec![sale.clone()])], rules(), 0, false)
        .await
        .unwrap();
    let catalog = Fact::CatalogEntry {
        item: "100".into(),
        aliases: vec!["variant:7".into()],
        sku: Some("SKU-BIG".into()),
        title: None,
        at: 40,
    };
    let a = s
        .apply_batch(
            vec![ev(2, vec![catalog, level("100", "all", 20, 60)])],
            rules(),
            0,
            false,
        )
        .await
        .unwrap();
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "100".into(), Some(20))]);
    s.apply_batch(vec![ev(3, vec![sale])], rules(), 0, false)
        .await
        .unwrap();
    let items = s.items().await.unwrap();
    assert_eq!(
        items.len(),
        1,
        "the orphan alias item was merged: {items:?}"
    );
    assert_eq!(items[0].units_sold, 2);
    assert_eq!(items[0].last_sale_at, Some(50));

    let mut e1 = ev(4, vec![level("x", "l", 1, 1)]);
    e1.payload_key = Some("notif-1".into());
    let mut e2 = ev(5, vec![level("x", "l", 1, 1)]);
    e2.payload_key = Some("notif-1".into());
    let out = s
        .apply_batch(vec![e1, e2], rules(), 0, false)
        .await
        .unwrap();
    assert!(matches!(out[0], Applied::Done { .. }));
    assert!(matches!(out[1], Applied::AlreadyProcessed));
    assert_eq!(s.counters().await.unwrap()[counters::EVENTS_DUPLICATE], 1);

    // A dry run computes the alert and writes nothing.
    let a = s
        .apply_batch(vec![ev(9, vec![level("y", "l", 1, 1)])], rules(), 0, true)
        .await
        .unwrap();
    assert_eq!(alerts(&a), vec![(Rule::LowStock, "y".into(), Some(1))]);
    assert!(!s.items().await.unwrap().iter().any(|i| i.item == "y"));
}

#[tokio::test]
async fn redelivery_after_a_crash_midway_changes_nothing() {
    let Some(bin) = nats::require("redelivery_after_a_crash_midway_changes_nothing") else {
        return;
    };
    let server = NatsServer::start(&bin);
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
    let Some(bin) = nats::require("two_workers_same_events_one_alert_and_one_claimer") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let a = state(&server.url).await;
    let b = state(&server.url).await;
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
        Some((counters::ALERTS_SENT.to_string(), ca.len() as i64)),
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
    let Some(bin) = nats::require("no_sales_fires_once_per_quiet_period_across_workers") else {
        return;
    };
    let server = NatsServer::start(&bin);
    let a = state(&server.url).await;
    let b = state(&server.url).await;
    let day = 86_400_000;
    a.apply_batch(vec![ev(1, vec![level("x", "l", 10, 0)])], rules(), 0, false)
        .await
        .unwrap();
    assert!(a.run_no_sales(rules(), 59 * day).await.unwrap().is_empty());
    let (fa, fb) = tokio::join!(
        a.run_no_sales(rules(), 61 * day),
        b.run_no_sales(rules(), 61 * day)
    );
    let fired = fa.unwrap().len() + fb.unwrap().len();
    assert_eq!(fired, 1, "one no-sales alert between the two workers");
    assert!(a.run_no_sales(rules(), 70 * day).await.unwrap().is_empty());
    assert_eq!(
        a.outbox(|e| e.alert.rule == Rule::NoSales)
            .await
            .unwrap()
            .len(),
        1
    );
}
