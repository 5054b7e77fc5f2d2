//! `shopify-hmac` verification of an arbitrary request. Checks: no panic; a request that
//! verifies carries base64(HMAC-SHA256(secret, body)), recomputed here.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::Verifier;

fn verifier() -> &'static dyn Verifier {
    static V: OnceLock<Box<dyn Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        build(serde_json::json!({"scheme": "shopify-hmac", "platform": "shopify", "secrets": [SHOPIFY_SECRET]}))
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let r = verify(verifier(), data, 0);
    if r.result.is_ok() {
        let want = hmac_sha256(SHOPIFY_SECRET.as_bytes(), &[&r.body]);
        let ok = ["x-shopify-hmac-sha256", "shopify-hmac-sha256"]
            .iter()
            .filter_map(|n| first(&r.headers, n))
            .any(|v| B64.decode(v).is_ok_and(|d| d == want));
        assert!(ok, "verified without a valid HMAC of the body");
    }
});
