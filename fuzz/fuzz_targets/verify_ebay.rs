//! `ebay` (ECDSA P-256 / SHA-1, key by kid) with the fixtures' public key. Checks: no panic;
//! a request that verifies names the configured kid. (The stable harness,
//! receiver/tests/fuzz_schemes.rs, also re-checks each verified signature with p256.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::ebay;

/// The source this target verifies against.
fn source() -> serde_json::Value {
    serde_json::json!({"scheme": "ebay", "platform": "ebay", "public_keys": {EBAY_KID: ebay_pem()}})
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = verified(source, data, 0) {
        assert!(!r.body.is_empty());
        assert_eq!(ebay::signature_kid(&r.headers).as_deref(), Some(EBAY_KID));
    }
});
