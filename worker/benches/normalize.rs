//! The worker's hot pure functions and its one write: each adapter's `normalize` on the sample
//! payloads in `shared/fixtures/payloads` (plus an eBay Trading API SOAP notification and the
//! `simple` forms), the stock rule `evaluate_level`, and `StateStore::apply_batch` (one sled
//! transaction and one fdatasync per batch) on a temporary directory. Figures:
//! docs/PERFORMANCE.md.
//!
//! `cargo bench -p stockhook-worker --bench normalize`; CI runs it once as a test
//! (`cargo test --benches`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use stockhook_shared::config::{Config, Platform};
use stockhook_shared::envelope::Envelope;
use stockhook_test_kit::ebay_soap::{notification, ITEM_SOLD};
use stockhook_worker::adapters;
use stockhook_worker::rules::{evaluate_level, Arming};
use stockhook_worker::state::{Prepared, RuleConfig, StateStore};

fn fixture(rel: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/fixtures/payloads/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn envelope(id: u64, platform: Platform, headers: &[(&str, &str)], body: Vec<u8>) -> Envelope {
    stockhook_tests::payloads::envelope(id, "bench", platform, headers, body)
}

/// (name, envelope) for every adapter and every sample payload.
fn samples() -> Vec<(String, Envelope)> {
    let mut out = Vec::new();
    for (file, topic) in [
        ("inventory_levels_update", "inventory_levels/update"),
        ("inventory_items_update", "inventory_items/update"),
        ("products_update", "products/update"),
        ("orders_create", "orders/create"),
        ("refunds_create", "refunds/create"),
    ] {
        out.push((
            format!("shopify/{topic}"),
            envelope(
                1,
                Platform::Shopify,
                &[("x-shopify-topic", topic)],
                fixture(&format!("shopify/{file}.json")),
            ),
        ));
    }
    for name in [
        "order_change",
        "listings_item_mfn_quantity_change",
        "fba_inventory_availability_changes",
        "any_offer_changed",
    ] {
        out.push((
            format!("amazon/{name}"),
            envelope(
                1,
                Platform::Amazon,
                &[],
                fixture(&format!("amazon/{name}.json")),
            ),
        ));
    }
    out.push((
        "ebay/marketplace_account_deletion".into(),
        envelope(
            1,
            Platform::Ebay,
            &[],
            fixture("ebay/marketplace_account_deletion.json"),
        ),
    ));
    out.push((
        "ebay/ItemSold (SOAP)".into(),
        envelope(
            1,
            Platform::Ebay,
            &[(
                "soapaction",
                "\"http://developer.ebay.com/notification/ItemSold\"",
            )],
            notification(
                "GetItemResponse",
                "nXGFQyWyk1bzgM3N5zT9Ag==",
                "2024-05-01T10:00:00.250Z",
                ITEM_SOLD,
            )
            .into_bytes(),
        ),
    ));
    out.push((
        "simple/asin".into(),
        envelope(
            1,
            Platform::Simple,
            &[],
            br#"{"ASIN": "B00TEST123", "quantity": 3}"#.to_vec(),
        ),
    ));
    out.push((
        "simple/product".into(),
        envelope(
            1,
            Platform::Simple,
            &[],
            br#"{"id": 42, "title": "Mug", "variants": [{"id": 1, "sku": "MUG-BLUE", "inventory_quantity": 4}, {"id": 2, "sku": "MUG-RED", "inventory_quantity": 40}]}"#.to_vec(),
        ),
    ));
    out
}

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, env) in samples() {
        adapters::normalize(&env)
            .unwrap_or_else(|e| panic!("{name}: the sample must normalize: {e}"));
        group.throughput(Throughput::Bytes(env.body.len() as u64));
        group.bench_function(name, |b| b.iter(|| adapters::normalize(black_box(&env))));
    }
    group.finish();
}

fn rules(c: &mut Criterion) {
    // One item going 12 -> 0 -> 12, crossing both thresholds and re-arming.
    let levels: Vec<Option<i64>> = (0..=12).rev().chain(0..=12).map(Some).collect();
    c.bench_function("rules/evaluate_level (26 levels)", |b| {
        b.iter(|| {
            let mut arming = Arming::default();
            let mut fired = 0;
            for l in &levels {
                fired += evaluate_level(black_box(*l), 5, &mut arming).is_some() as u32;
            }
            fired
        })
    });
}

/// `apply_batch` of 256 `inventory_levels/update` events, each a fresh item below the threshold
/// (so every event writes its level, its arming and an alert to the outbox), then one fdatasync.
fn apply_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::open(&dir.path().join("state")).expect("state store opens");
    let rules = RuleConfig::from_config(&Config::default());
    let template = String::from_utf8(fixture("shopify/inventory_levels_update.json")).unwrap();
    let mut next_id = 0u64;
    let mut batch = move || -> Vec<Prepared> {
        (0..256)
            .map(|_| {
                next_id += 1;
                let body = template
                    .replace(
                        "271878346596884015",
                        &format!("{}", 7_000_000_000 + next_id),
                    )
                    .replace("\"available\": null", "\"available\": 1");
                let env = envelope(
                    next_id,
                    Platform::Shopify,
                    &[("x-shopify-topic", "inventory_levels/update")],
                    body.into_bytes(),
                );
                Prepared::new(&env, adapters::normalize(&env).expect("normalizes"))
            })
            .collect()
    };
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(256));
    group.sample_size(10);
    group.bench_function("apply_batch (256 low-stock levels, 1 fdatasync)", |b| {
        b.iter_batched(
            &mut batch,
            |events| {
                store
                    .apply_batch(&events, &rules, 1_700_000_000_000, false)
                    .expect("applies")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, normalize, rules, apply_batch);
criterion_main!(benches);
