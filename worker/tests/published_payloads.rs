//! Published payloads (`worker/tests/data/<platform>/`, each directory's README names the
//! source) read through the real adapter and applied to a real sled state directory: what a
//! seller's data becomes once stored, not only what the adapter returns.
//!
//! Issue 13: a refund for a sale stockhook never saw left units sold negative (item 2); FBA units
//! shared by the marketplaces of one pool were counted once per marketplace (item 6).

use std::collections::BTreeMap;
use std::sync::Arc;
use stockhook_shared::config::Platform;
use stockhook_shared::envelope::{Envelope, EventId};
use stockhook_worker::adapters;
use stockhook_worker::state::{ItemState, Prepared, RuleConfig};
use stockhook_worker::state::{SledState, StateBackend};

fn data(rel: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn rules() -> Arc<RuleConfig> {
    Arc::new(RuleConfig {
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
    })
}

/// One event as the receiver stores it, normalized by the real adapter.
fn prepared(id: u64, platform: Platform, headers: &[(&str, &str)], body: Vec<u8>) -> Prepared {
    let env = Envelope {
        id: EventId(id),
        source: "shop".into(),
        platform,
        received_at_ms: 1_700_000_000_000,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    };
    let normalized = adapters::normalize(&env).unwrap_or_else(|e| panic!("event {id}: {e}"));
    Prepared::new(&env, normalized)
}

async fn apply(state: &SledState, events: Vec<Prepared>) {
    state
        .apply_batch(events, rules(), 1_700_000_000_000, false)
        .await
        .expect("apply");
}

async fn item(state: &SledState, item: &str) -> Option<ItemState> {
    state
        .items()
        .await
        .expect("items")
        .into_iter()
        .find(|s| s.item == item)
}

#[tokio::test]
async fn a_restock_refund_for_a_sale_never_seen_leaves_units_sold_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let state = SledState::open(&dir.path().join("state")).unwrap();
    // Shopify's python API fixture: two lines restocked (`restock: true`), of an order this
    // store never reported.
    let refund = data("shopify/refund_restock_python_api.json");
    apply(
        &state,
        vec![prepared(
            1,
            Platform::Shopify,
            &[("x-shopify-topic", "refunds/create")],
            refund.clone(),
        )],
    )
    .await;
    for variant in ["variant:457924702", "variant:39072856"] {
        let units = item(&state, variant).await.map_or(0, |s| s.sold());
        assert_eq!(units, 0, "{variant}: units sold never go below zero");
    }

    // On a store that saw the sale: the same refund's lines under a new refund id adjust what
    // was sold, and are not a sale ("last sold" unchanged). Net sales are kept as recorded, so
    // their sum is the same in any delivery order; only the figure shown is floored at zero.
    let dir = tempfile::tempdir().unwrap();
    let state = SledState::open(&dir.path().join("state")).unwrap();
    let order = br#"{"id": 450789469, "created_at": "2016-06-20T10:00:00-04:00", "line_items": [
        {"id": 703073504, "variant_id": 457924702, "sku": "IPOD2008BLACK", "quantity": 3}]}"#;
    apply(
        &state,
        vec![prepared(
            2,
            Platform::Shopify,
            &[("x-shopify-topic", "orders/create")],
            order.to_vec(),
        )],
    )
    .await;
    let sold = item(&state, "variant:457924702").await.unwrap();
    assert_eq!(sold.units_sold, 3);
    let last_sale = sold.last_sale_at;
    let again = String::from_utf8(refund)
        .unwrap()
        .replacen("509562969", "509562970", 1);
    apply(
        &state,
        vec![prepared(
            3,
            Platform::Shopify,
            &[("x-shopify-topic", "refunds/create")],
            again.into_bytes(),
        )],
    )
    .await;
    let after = item(&state, "variant:457924702").await.unwrap();
    assert_eq!(after.units_sold, 2, "one unit returned of three sold");
    assert_eq!(after.last_sale_at, last_sale, "a refund is not a sale");
    assert!(
        after.levels.is_empty(),
        "the level comes from Shopify's own update"
    );
}

/// Issue 13, item 6: Amazon's published FBA notification reports one SKU's units under the US
/// (50) and Canada (40), one North American pool: the item holds 50, not 90. A later reading
/// where Canada reports more moves the count there, still once.
#[tokio::test]
async fn fba_units_shared_by_a_pool_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = SledState::open(&dir.path().join("state")).unwrap();
    let published = data("amazon/fba_inventory_availability_changes.json");
    apply(
        &state,
        vec![prepared(1, Platform::Amazon, &[], published.clone())],
    )
    .await;
    let st = item(&state, "SELLERSKU-1")
        .await
        .expect("the SKU is tracked");
    assert_eq!(st.total(), Some(50), "{:?}", st.levels);

    let later = String::from_utf8(published)
        .unwrap()
        .replace("\"Fulfillable\": 40", "\"Fulfillable\": 61")
        .replace("2020-07-13T19:42:04.284Z", "2020-07-14T08:00:00.000Z")
        .replace(
            "d0e9e693-c3ad-4373-979f-ed4ec98dd746",
            "0e1f2a3b-c3ad-4373-979f-ed4ec98dd746",
        );
    apply(
        &state,
        vec![prepared(2, Platform::Amazon, &[], later.into_bytes())],
    )
    .await;
    let st = item(&state, "SELLERSKU-1").await.unwrap();
    assert_eq!(st.total(), Some(61), "{:?}", st.levels);
}
