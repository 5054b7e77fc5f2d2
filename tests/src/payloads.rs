//! Webhook bodies the end-to-end tests build to a given size, where a published sample would
//! not do (durability at the body-size limit, leases of big bodies).

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
