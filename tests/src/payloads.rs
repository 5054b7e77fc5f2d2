//! Webhook bodies the end-to-end tests build to a given size, where a published sample would
//! not do (durability at the body-size limit, leases of big bodies), and the config that takes
//! them; and an event as the receiver stores it ([`envelope`]), for the worker's own tests,
//! fuzz harness and benches.

/// A low-stock `products/update` for product `n`, padded (in `body_html`) to exactly `size`.
pub fn padded_product(n: u64, size: usize) -> Vec<u8> {
    let make = |pad: usize| {
        serde_json::json!({
            "id": 7_982_298_430_000u64 + n,
            "title": format!("Durable thing {n}"),
            "body_html": "x".repeat(pad),
            "status": "active",
            "updated_at": "2024-05-14T16:41:07-04:00",
            "variants": [{
                "id": 44_112_234_980_000u64 + n,
                "product_id": 7_982_298_430_000u64 + n,
                "title": "One size",
                "sku": format!("DURABLE-{n}"),
                "inventory_management": "shopify",
                "inventory_item_id": 46_208_873_540_000u64 + n,
                "inventory_quantity": 1,
                "old_inventory_quantity": 9,
                "updated_at": "2024-05-14T16:41:07-04:00"
            }]
        })
        .to_string()
        .into_bytes()
    };
    let base = make(0).len();
    assert!(
        size >= base,
        "a body of {size} bytes is smaller than the product itself"
    );
    let body = make(size - base);
    assert_eq!(body.len(), size);
    body
}

/// A config (`stockhook.toml` in `dir`) whose receiver takes bodies up to `max_body` bytes from
/// the shopify source `shop` (signed with `secret`), alerting `inventory@example.com`.
pub fn big_body_config(dir: &crate::TestDir, max_body: usize, secret: &str) -> std::path::PathBuf {
    let cfg = dir
        .config()
        .receiver("max_body_bytes", &max_body.to_string())
        .recipients(&["inventory@example.com"])
        .source(crate::SourceSpec::shopify("shop", secret));
    dir.write_config("stockhook.toml", &cfg)
}

/// An event as the receiver stores it: `body` with `headers` (lowercase names) from `source`,
/// received at 2023-11-14T22:13:20Z.
pub fn envelope(
    id: u64,
    source: &str,
    platform: stockhook_shared::config::Platform,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> stockhook_shared::envelope::Envelope {
    stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(id),
        source: source.into(),
        platform,
        received_at_ms: 1_700_000_000_000,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    }
}
