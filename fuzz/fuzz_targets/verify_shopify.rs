//! `shopify-hmac` verification of an arbitrary request. Checks: no panic; a request that
//! verifies carries base64(HMAC-SHA256(secret, body)), recomputed here.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({"scheme": "shopify-hmac", "platform": "shopify", "secrets": [SHOPIFY_SECRET]})
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, 0) {
        let want = hmac_sha256(SHOPIFY_SECRET.as_bytes(), &[&r.body]);
        let ok = ["x-shopify-hmac-sha256", "shopify-hmac-sha256"]
            .iter()
            .filter_map(|n| first(&r.headers, n))
            .any(|v| B64.decode(v).is_ok_and(|d| d == want));
        assert!(ok, "verified without a valid HMAC of the body");
    }
});
