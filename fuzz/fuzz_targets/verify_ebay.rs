//! `ebay` (ECDSA P-256 / SHA-1, key by kid) with the fixtures' public key. Checks: no panic;
//! a request that verifies names the configured kid. (The stable harness,
//! receiver/tests/fuzz_schemes.rs, also re-checks each verified signature with p256.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::{ebay, Verifier};

fn verifier() -> &'static dyn Verifier {
    static V: OnceLock<Box<dyn Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        build(serde_json::json!({"scheme": "ebay", "platform": "ebay", "public_keys": {EBAY_KID: ebay_pem()}}))
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let r = verify(verifier(), data, 0);
    if r.result.is_ok() {
        assert!(!r.body.is_empty());
        assert_eq!(ebay::signature_kid(&r.headers).as_deref(), Some(EBAY_KID));
    }
});
