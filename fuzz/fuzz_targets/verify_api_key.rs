//! `api-key`. Checks: no panic; a request that verifies carries the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use stockhook_fuzz::*;
use stockhook_receiver::schemes::Verifier;

fn verifier() -> &'static dyn Verifier {
    static V: OnceLock<Box<dyn Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        build(serde_json::json!({"scheme": "api-key", "platform": "amazon", "secrets": [API_KEY]}))
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let r = verify(verifier(), data, 0);
    if r.result.is_ok() {
        assert_eq!(first(&r.headers, "x-api-key").as_deref(), Some(API_KEY));
    }
});
